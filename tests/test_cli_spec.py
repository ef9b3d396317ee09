"""`mixc validate` and `mixc schema` on the shipped SmolLM3 specs and on small projects."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml
from spec_fixtures import REPO, run_cli, write_project

from mixc.locyaml import load_file

SHIPPED = sorted((REPO / "mixes").rglob("*.yaml")) + sorted((REPO / "recipes").glob("*.yaml"))
PHASE_MIXES = ["stage1", "stage2", "stage3", "long-context-32k", "long-context-64k"]


def test_shipped_layout():
    names = {p.relative_to(REPO).as_posix() for p in SHIPPED}
    for mix in PHASE_MIXES:
        assert f"mixes/smollm3/{mix}.yaml" in names
    assert {"mixes/smollm3/sources.yaml", "recipes/smollm3-3b.yaml", "recipes/smollm3-tiny.yaml"} <= names


def test_validate_strict_passes_on_every_shipped_file():
    result = run_cli(["validate", "--strict", "mixes", "recipes"], cwd=REPO)
    assert result.exit_code == 0, result.output
    assert "error" not in result.output
    for path in SHIPPED:
        assert f"OK {path.relative_to(REPO)}:" in result.output


@pytest.mark.parametrize("name", PHASE_MIXES)
def test_shipped_mixes_declare_relative_weights_as_published(name):
    """The weights are kept exactly as published (they need not sum to 1), so the file must say
    they are relative; validate prints the sum and the rollups."""
    path = REPO / "mixes" / "smollm3" / f"{name}.yaml"
    assert yaml.safe_load(path.read_text())["weights"] == "relative"
    result = run_cli(["validate", "--strict", str(path.relative_to(REPO))], cwd=REPO)
    assert result.exit_code == 0, result.output
    assert re.search(r"weight sum [0-9.]+ \(relative, normalized when compiled\); web [0-9.]+% \(multilingual [0-9.]+%\), "
                     r"code [0-9.]+%, math [0-9.]+%", result.output), result.output


def test_validate_stage3_prints_its_sum_and_rollups():
    """The user's own example: `mixc validate mixes/smollm3/stage3.yaml`."""
    result = run_cli(["validate", "mixes/smollm3/stage3.yaml"], cwd=REPO)
    assert result.exit_code == 0, result.output
    line = result.output.splitlines()[0]
    assert line.startswith("OK mixes/smollm3/stage3.yaml: mix 'decay': 56 sources, weight sum 1.00565")
    assert "web 63.6% (multilingual 13.1%)" in line and "math 13.1%" in line


def test_validate_small_project_prints_what_each_file_holds(tmp_path):
    write_project(tmp_path)
    result = run_cli(["validate", "--strict", "."], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "OK catalog.yaml: catalog, 4 sources (0 with unverified locations)" in lines
    assert ("OK mix.yaml: mix 'mix': 4 sources, weight sum 1 (relative, normalized when compiled); "
            "web 80.0% (multilingual 20.0%), code 15.0%, math 5.0%") in lines
    assert "OK recipe.yaml: recipe 'tiny', 3 phases, 860.16K tokens" in lines
    assert sum(1 for line in lines if line.startswith("   ") and ": mix 'mix'" in line) == 3


def test_validate_quiet_prints_nothing_when_valid(tmp_path):
    write_project(tmp_path)
    result = run_cli(["validate", "-q", "recipe.yaml"], cwd=tmp_path)
    assert result.exit_code == 0 and result.output == ""


def test_unverified_locations_are_counted(tmp_path):
    write_project(tmp_path, {"catalog.yaml": ("    dataset: bigcode/the-stack\n", "    dataset: bigcode/the-stack\n    verified: false\n")})
    result = run_cli(["validate", "catalog.yaml"], cwd=tmp_path)
    assert "catalog, 4 sources (1 with unverified locations)" in result.output


def test_help_lists_the_spec_commands():
    result = run_cli(["--help"])
    assert result.exit_code == 0
    for command in ("validate", "schema", "report", "diff"):
        assert re.search(rf"^\s+{command}\s", result.output, re.M), command


# --------------------------------------------------------------------------- schema


def _schema(kind: str) -> dict:
    result = run_cli(["schema", "--kind", kind])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@pytest.mark.parametrize("kind", ["recipe", "mix", "catalog"])
def test_schema_is_valid_json_schema(kind):
    schema = _schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False


def test_schema_all_has_every_kind():
    assert set(_schema("all")) == {"recipe", "mix", "catalog"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_conform_to_the_schema(path):
    """Editors using the schema must accept what mixc accepts (bare weights, counts like '47B').
    Read as YAML 1.2 does (5e-05 is a number), like mixc and editors' YAML servers."""
    data = load_file(path).data
    kind = "recipe" if "phases" in data else "catalog" if path.name == "sources.yaml" else "mix"
    jsonschema.validate(data, _schema(kind))


def test_schema_rejects_what_validate_rejects(tmp_path):
    mix = _schema("mix")
    jsonschema.validate({"catalog": "c.yaml", "sources": {"a": 0.5, "b": {"weight": 1, "category": "web", "path": "x"}}}, mix)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sources": {"a": 0.5}, "weigths": "relative"}, mix)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"sources": {"a": {"weight": 1, "category": "maths"}}}, mix)
    recipe = _schema("recipe")
    phase = {"name": "p", "mix": "m.yaml", "tokens": "47B", "sequence_length": 4096, "rope_theta": 1e4}
    base = {"name": "r", "tokenizer": "t", "model": "m", "global_batch_tokens": 4096,
            "schedule": {"type": "cosine", "peak_lr": 1e-3}, "phases": [phase]}
    jsonschema.validate(base, recipe)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "phases": [{**phase, "tokens": "8.1X"}]}, recipe)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**base, "global_batch_tokens": 0}, recipe)


# --------------------------------------------------------------------------- CI examples for users


def _workflow_step() -> str:
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    steps = workflow["jobs"]["validate"]["steps"]
    return next(s["run"] for s in steps if "mixc validate" in s.get("run", ""))


def test_github_workflow_runs_strict_validate():
    workflow = yaml.safe_load((REPO / "examples" / "ci" / "github-actions.yml").read_text())
    assert workflow[True]["pull_request"]["paths"]  # PyYAML reads the key `on` as True
    assert "mixc validate --strict mixes recipes" in _workflow_step()


def test_github_workflow_annotates_errors_and_keeps_the_exit_status(tmp_path):
    """Run the workflow's own shell step against a broken project: the errors become
    ::error annotations and the step fails."""
    bash = shutil.which("bash")
    if bash is None or shutil.which("sed") is None or not (_venv_bin() / "mixc").exists():
        pytest.skip("needs bash, sed and the mixc console script")
    write_project(tmp_path, {"mix.yaml": ("  math-a: 0.05", "  math-a: -0.05")})
    (tmp_path / "mixes").mkdir()
    (tmp_path / "recipes").mkdir()
    for name in ("catalog.yaml", "mix.yaml"):
        (tmp_path / name).rename(tmp_path / "mixes" / name)
    env = {**os.environ, "PATH": f"{_venv_bin()}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([bash, "-c", _workflow_step()], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "::error file=mixes/mix.yaml,line=7,col=3::sources.math-a: weight is negative (-0.05)" in proc.stdout


def test_pre_commit_hook_runs_strict_validate():
    config = yaml.safe_load((REPO / "examples" / "ci" / "pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    (hook,) = repo["hooks"]
    assert repo["repo"] == "local" and hook["language"] == "system"
    assert hook["entry"].startswith("mixc validate --strict")
    assert re.search(hook["files"], "mixes/smollm3/stage1.yaml") and not re.search(hook["files"], "README.md")
    # The hook's command passes on the shipped specs (pre-commit runs it in the repository root).
    args = hook["entry"].split()[1:] + hook["args"]
    result = run_cli(args, cwd=REPO)
    assert result.exit_code == 0, result.output


def _venv_bin() -> Path:
    return Path(sys.executable).parent
