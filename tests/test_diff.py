"""`mixc diff`: what changes between two mixes or two phases of a recipe."""

from __future__ import annotations

import json
import math

import pytest
from spec_fixtures import REPO, run_cli, write_project

from mixc.diff import diff_phases
from mixc.locyaml import load_file
from mixc.plan import plan_mixes
from mixc.spec import load_mix


def _json(args: list[str], cwd=REPO) -> dict:
    result = run_cli([*args, "--format", "json"], cwd=cwd)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _row(rows: list[dict], name: str) -> dict:
    return next(r for r in rows if r["name"] == name)


def _weights(stage: str) -> dict[str, float]:
    return load_file(REPO / "mixes" / "smollm3" / f"{stage}.yaml").data["sources"]


@pytest.fixture(scope="module")
def stable_1_to_2() -> dict:
    return _json(["diff", "mixes/smollm3/stage1.yaml", "mixes/smollm3/stage2.yaml"])


def test_math_rises_about_3_4x_and_code_rises(stable_1_to_2):
    d = stable_1_to_2
    assert (d["from"], d["to"]) == ("stable-1", "stable-2")
    math_row = _row(d["categories"], "math")
    assert math_row["factor"] == pytest.approx(3.4, abs=0.05)
    assert math_row["after"] - math_row["before"] == pytest.approx(math_row["delta"])
    assert 100 * math_row["delta"] == pytest.approx(6.4, abs=0.05)
    code = _row(d["categories"], "code")
    assert code["after"] > code["before"] and code["factor"] == pytest.approx(14.3 / 12.5, abs=0.01)
    web = _row(d["categories"], "web")
    assert web["delta"] == pytest.approx(-(math_row["delta"] + code["delta"]), abs=1e-12)  # no reasoning in either
    assert [r["name"] for r in d["categories"]] == ["web", "multilingual", "code", "math", "reasoning"]


def test_added_removed_and_reweighted_sources(stable_1_to_2):
    d = stable_1_to_2
    before, after = _weights("stage1"), _weights("stage2")
    assert [r["source"] for r in d["added"]] == [n for n in after if n not in before]
    assert [r["source"] for r in d["removed"]] == [n for n in before if n not in after]
    assert "stack-edu-real-shuffled-Python" in {r["source"] for r in d["added"]}
    assert "stack-v2-Python" in {r["source"] for r in d["removed"]}
    total_after = math.fsum(after.values())
    for r in d["added"]:
        assert r["share"] == pytest.approx(after[r["source"]] / total_after, rel=1e-12)
    changed = {r["source"]: r for r in d["changed"]}
    # The hand fix the facts describe: Vietnamese web cut from 0.00325 to 0.00005.
    vie = next(n for n in changed if "vie" in n)
    assert changed[vie]["factor"] == pytest.approx((5e-05 / total_after) / 0.00325, rel=1e-9)
    assert changed[vie]["delta"] < 0
    # Sorted by the size of the change.
    deltas = [abs(r["delta"]) for r in d["changed"]]
    assert deltas == sorted(deltas, reverse=True)


def test_recipe_stages_give_the_same_diff(stable_1_to_2):
    d = _json(["diff", "--recipe", "recipes/smollm3-3b.yaml", "1", "2"])
    assert d == stable_1_to_2
    # Phases may also be named, and the default recipe is recipes/smollm3-3b.yaml.
    assert _json(["diff", "stable-1", "stable-2"]) == d


def test_decay_shifts_toward_code_and_math():
    d = _json(["diff", "--recipe", "recipes/smollm3-3b.yaml", "2", "3"])
    assert (d["from"], d["to"]) == ("stable-2", "decay")
    assert _row(d["categories"], "code")["delta"] > 0.08
    assert _row(d["categories"], "math")["delta"] > 0.03
    reasoning = _row(d["categories"], "reasoning")
    assert reasoning["before"] == 0 and reasoning["after"] > 0 and reasoning["factor"] is None


def test_table_output(stable_1_to_2):
    result = run_cli(["diff", "mixes/smollm3/stage1.yaml", "mixes/smollm3/stage2.yaml"], cwd=REPO)
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("stable-1 -> stable-2")
    math_line = next(line for line in out.splitlines() if line.split()[:1] == ["math"])
    assert math_line.split() == ["math", "2.7%", "9.1%", "+6.38", "pts", "x3.36"]
    assert f"added ({len(stable_1_to_2['added'])}):" in out and "  + finemath-4plus  2.000%" in out
    assert f"removed ({len(stable_1_to_2['removed'])}):" in out and "  - stack-v2-Python  2.500%" in out
    reasoning_line = next(line for line in out.splitlines() if line.split()[:1] == ["reasoning"])
    assert reasoning_line.split()[-1] == "-"  # absent in both: no factor, not "new"


def test_small_diff_exact_numbers(tmp_path):
    write_project(tmp_path)
    (tmp_path / "next.yaml").write_text(
        "catalog: catalog.yaml\nweights: relative\nsources:\n  web-en: 0.4\n  code-py: 0.3\n  math-a: 0.3\n")
    d = diff_phases(*plan_mixes([load_mix(tmp_path / "mix.yaml"), load_mix(tmp_path / "next.yaml")]).phases)
    assert d["added"] == [] and d["removed"] == [{"source": "web-fr", "share": pytest.approx(0.2)}]
    changed = {r["source"]: (r["before"], r["after"], r["factor"]) for r in d["changed"]}
    assert changed == {"web-en": pytest.approx((0.6, 0.4, 2 / 3)), "code-py": pytest.approx((0.15, 0.3, 2.0)),
                       "math-a": pytest.approx((0.05, 0.3, 6.0))}
    langs = {r["name"]: r for r in d["languages"]}
    assert langs["fra_Latn"]["after"] == 0 and langs["fra_Latn"]["factor"] == 0
    assert langs["eng_Latn"]["after"] == pytest.approx(1.0)
    assert _row(d["categories"], "multilingual")["delta"] == pytest.approx(-0.2)


def test_identical_mixes_have_no_changes(tmp_path):
    write_project(tmp_path)
    d = _json(["diff", "mix.yaml", "mix.yaml"], cwd=tmp_path)
    assert d["added"] == d["removed"] == d["changed"] == []
    assert all(r["delta"] == 0 for r in d["categories"] + d["languages"])
