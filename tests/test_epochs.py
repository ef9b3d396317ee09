"""`mixc plan --shards`: demanded vs available tokens, epochs per phase and cumulative, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from loader_fixtures import MIX_ONE, MIX_TWO, RECIPE
from store_fixtures import make_store

from mixc.cli import main

# RECIPE: phase one (a 0.75, b 0.25) and two (a, b 0.25, c 0.5) of 6 steps x 512 tokens,
# then 'long' (the mix of two) of 3 steps x 512 tokens.


def _docs(n_docs: int, length: int) -> list[np.ndarray]:
    return [np.arange(1, length) for _ in range(n_docs)]  # length tokens each with the EOS


@pytest.fixture
def recipe(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    return tmp_path / "recipe.yaml"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _rows(data):
    return {(p["name"], s["name"]): s for p in data["phases"] for s in p["sources"]}


def test_an_over_repeated_source_is_flagged_with_its_phase(tmp_path, recipe):
    # b is tiny: 100 tokens against 768 demanded in phase one alone (like SmolLM3's Vietnamese).
    store = make_store(tmp_path, "loader-test", {}, {"a": _docs(100, 100), "b": _docs(1, 100), "c": _docs(40, 100)})
    result = _run("plan", recipe, "--shards", store, "--format", "json")
    assert result.exit_code == 0, result.output
    rows = _rows(json.loads(result.stdout))
    b1, b2, blong = rows[("one", "b")], rows[("two", "b")], rows[("long", "b")]
    assert (b1["demanded_tokens"], b1["available_tokens"]) == (768, 100)
    assert b1["epochs"] == pytest.approx(7.68) and b1["over_epoch_warning"]
    # Cumulative over the curriculum: the same source keeps being consumed in later phases.
    assert b2["tokens_before"] == 768
    assert b2["cumulative_epochs"] == pytest.approx((768 + 768) / 100)
    assert blong["cumulative_epochs"] == pytest.approx((768 + 768 + 384) / 100)
    # a (10,000 tokens) stays well under the threshold.
    assert rows[("two", "a")]["cumulative_epochs"] == pytest.approx((2304 + 768) / 10_000)
    assert not rows[("two", "a")]["over_epoch_warning"]
    assert "one: source 'b' is seen 7.68 epochs" in result.stderr

    table = _run("plan", recipe, "--shards", store)
    assert table.exit_code == 0
    line = next(x for x in table.stdout.splitlines() if x.strip().startswith("b ") and "7.680" in x)
    assert line.rstrip().endswith("!")
    assert "warning: one: source 'b'" in table.stdout

    # A lower threshold from the command line flags a too.
    strict = json.loads(_run("plan", recipe, "--shards", store, "--format", "json", "--epoch-warning", "0.2").stdout)
    assert _rows(strict)[("two", "a")]["over_epoch_warning"]


def test_a_positive_weight_on_an_empty_source_is_refused(tmp_path, recipe):
    store = make_store(tmp_path, "loader-test", {}, {"a": _docs(100, 100), "b": _docs(10, 100), "c": []})
    result = _run("plan", recipe, "--shards", store)
    assert result.exit_code == 1
    assert f"phase 'two': source with a positive weight but 0 tokens in {store}: 'c' (weight 0.5)" in result.stderr
    assert "phase 'long': source with a positive weight but 0 tokens" in result.stderr
    assert "phase 'one'" not in result.stderr  # phase one does not use c
    assert "Traceback" not in result.output


def test_a_source_that_is_not_built_is_refused_with_the_build_command(tmp_path, recipe):
    store = make_store(tmp_path, "loader-test", {}, {"a": _docs(100, 100), "b": _docs(10, 100)})
    result = _run("plan", recipe, "--shards", store)
    assert result.exit_code == 1
    assert f"phase 'two': source with a positive weight not built in {store}: 'c' (weight 0.5)" in result.stderr
    assert "mixc build --stage 2" in result.stderr
    # Phase one alone is servable: --stage checks (and shows) only that phase.
    one = _run("plan", recipe, "--shards", store, "--stage", "one", "--format", "json")
    assert one.exit_code == 0, one.output
    assert [p["name"] for p in json.loads(one.stdout)["phases"]] == ["one"]
    assert _run("plan", recipe, "--shards", store, "--stage", "2").exit_code == 1
    # The report refuses the same way: one rule for both commands.
    report = _run("report", recipe, "--shards", store)
    assert report.exit_code == 1 and "'c' (weight 0.5)" in report.stderr


def test_report_and_plan_print_the_same_numbers(tmp_path, recipe):
    # Two folders for a: the phase manifests name the older one, and both commands must use it.
    docs = {"a": _docs(100, 100), "b": _docs(10, 100), "c": _docs(40, 100)}
    store = make_store(tmp_path, "loader-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                                 "long": {"a": 1, "b": 1, "c": 2}}, docs)
    make_store(tmp_path, "other-recipe", {}, {"a": _docs(7, 100)})  # a newer, smaller folder of a
    plan = json.loads(_run("plan", recipe, "--shards", store, "--format", "json").stdout)
    report = json.loads(_run("report", recipe, "--shards", store, "--format", "json").stdout)
    for phase_p, phase_r in zip(plan["phases"], report["phases"]):
        by_name = {s["name"]: s for s in phase_r["sources"]}
        for s in phase_p["sources"]:
            r = by_name[s["name"]]
            assert (s["demanded_tokens"], s["available_tokens"]) == (r["tokens"], r["available_tokens"])
            assert s["cumulative_epochs"] == pytest.approx(r["cumulative_epochs"])
    assert _rows(plan)[("one", "a")]["available_tokens"] == 10_000


def test_without_shards_the_catalog_sizes_are_used(recipe):
    result = _run("plan", recipe, "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["store"] is None
    assert all(s["available_tokens"] is None for p in data["phases"] for s in p["sources"])
