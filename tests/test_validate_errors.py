"""Broken spec files: every kind gives one located line `file:line:col: error: key: message`,
exit status 1 and no traceback; usage errors exit 2.

Each case starts from the valid project in spec_fixtures.py (whose line numbers are written
out there) and breaks one thing. The expected line and column are where a user has to look.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from spec_fixtures import run_cli, write_project


@dataclass
class Case:
    id: str
    target: str  # the file given to `mixc validate`
    edits: dict
    file: str  # the file the error names
    line: int
    column: int
    key: str | None
    message: str  # a regex the message must match
    args: list[str] = field(default_factory=list)


def mix(old: str, new: str) -> dict:
    return {"mix.yaml": (old, new)}


def catalog(old: str, new: str) -> dict:
    return {"catalog.yaml": (old, new)}


def recipe(old: str, new: str) -> dict:
    return {"recipe.yaml": (old, new)}


LC_SCHEDULE = "    schedule:\n      type: cosine\n      peak_lr: 1.0e-4\n      warmup_steps: 2\n"

CASES = [
    # --- malformed YAML
    Case("yaml-bad-indentation", "mix.yaml", mix("  web-fr: 0.2", "   web-fr: 0.2"),
         "mix.yaml", 5, 10, None, r"malformed YAML: mapping values are not allowed here \(check the indentation"),
    Case("yaml-unclosed-bracket", "mix.yaml", {"mix.yaml": "catalog: catalog.yaml\nsources: [web-en, web-fr\nweights: relative\n"},
         "mix.yaml", 3, 8, None, r"malformed YAML: .*the '\[' opened at line 2 is not closed"),
    Case("yaml-unclosed-brace-at-end", "mix.yaml", {"mix.yaml": "catalog: catalog.yaml\nsources: {web-en: 1\n"},
         "mix.yaml", 3, 1, None, r"malformed YAML: .*the '\{' opened at line 2 is not closed"),
    Case("yaml-tab-indent", "mix.yaml", mix("  web-fr: 0.2", "\tweb-fr: 0.2"),
         "mix.yaml", 5, 1, None, r"malformed YAML: .*'\\t'.*spaces, not tabs"),
    Case("yaml-unclosed-quote", "mix.yaml", mix("  math-a: 0.05", '  math-a: "0.05\n'),
         "mix.yaml", 9, 1, None, r"malformed YAML: .*the quote opened at line 7 is not closed"),
    Case("yaml-two-documents", "mix.yaml", mix("weights: relative\n", "weights: relative\n---\n"),
         "mix.yaml", 3, 1, None, r"malformed YAML: expected a single document"),
    Case("yaml-duplicate-key", "mix.yaml", mix("weights: relative", "weights: relative\nweights: absolute"),
         "mix.yaml", 3, 1, "weights", r"duplicate key 'weights' \(first defined at line 2\)"),
    Case("yaml-recursive-alias", "mix.yaml", {"mix.yaml": "catalog: catalog.yaml\nsources: &loop\n  web-en: *loop\n"},
         "mix.yaml", 2, 10, "sources.web-en", r"recursive YAML alias"),
    Case("yaml-non-scalar-key", "mix.yaml", mix("  math-a: 0.05", "  [math-a]: 0.05"),
         "mix.yaml", 7, 3, None, r"mapping keys must be plain scalars"),
    # --- whole-file problems
    Case("empty-file", "mix.yaml", {"mix.yaml": ""}, "mix.yaml", 1, 1, None, r"the file is empty"),
    Case("not-a-mapping", "mix.yaml", {"mix.yaml": "- web-en\n- web-fr\n"},
         "mix.yaml", 1, 1, None, r"expected a mapping at the top level, the file holds list"),
    Case("not-utf8", "mix.yaml", {"mix.yaml": b"catalog: catalog.yaml\nsources:\n  web-en: 1 # caf\xe9\n"},
         "mix.yaml", 3, 18, None, r"not UTF-8 text \(invalid byte 0xe9"),
    Case("not-a-spec", "mix.yaml", {"mix.yaml": "name: x\nweigths: {a: 1}\n"},
         "mix.yaml", 1, 1, None, r"not a mixc spec: .*found keys: name, weigths"),
    # --- mixes
    Case("duplicate-source", "mix.yaml", mix("  math-a: 0.05", "  math-a: 0.05\n  web-fr: 0.1"),
         "mix.yaml", 8, 3, "sources.web-fr", r"duplicate key 'web-fr' \(first defined at line 5\)"),
    Case("unknown-source-suggests", "mix.yaml", mix("  math-a: 0.05", "  math-b: 0.05"),
         "mix.yaml", 7, 3, "sources.math-b", r"unknown source 'math-b' \(did you mean 'math-a'\?\)"),
    Case("unknown-source-no-catalog", "mix.yaml", {"mix.yaml": "sources:\n  x:\n    weight: 1\n    path: a.parquet\n"},
         "mix.yaml", 2, 3, "sources.x", r"unknown source 'x' \(the mix names no catalog and defines no inline source\)"),
    Case("negative-weight", "mix.yaml", mix("  math-a: 0.05", "  math-a: -0.05"),
         "mix.yaml", 7, 3, "sources.math-a", r"weight is negative \(-0.05\)"),
    Case("nan-weight", "mix.yaml", mix("  math-a: 0.05", "  math-a: .nan"), "mix.yaml", 7, 3, "sources.math-a", r"weight is NaN"),
    Case("infinite-weight", "mix.yaml", mix("  math-a: 0.05", "  math-a: .inf"), "mix.yaml", 7, 3, "sources.math-a", r"weight is infinite"),
    Case("all-zero-weights", "mix.yaml", {"mix.yaml": "catalog: catalog.yaml\nsources:\n  web-en: 0\n  math-a: 0.0\n"},
         "mix.yaml", 2, 1, "sources", r"all weights are zero"),
    Case("string-weight", "mix.yaml", mix("  math-a: 0.05", '  math-a: "0.05"'),
         "mix.yaml", 7, 3, "sources.math-a", r"expected a weight \(a number\).*got str '0.05'"),
    Case("boolean-weight", "mix.yaml", mix("  math-a: 0.05", "  math-a: yes"),
         "mix.yaml", 7, 3, "sources.math-a", r"expected a weight \(a number\).*got bool True"),
    Case("string-weight-in-mapping", "mix.yaml", mix("  math-a: 0.05", "  math-a: {weight: '0.05'}"),
         "mix.yaml", 7, 12, "sources.math-a.weight", r"expected a number, got str '0.05'"),
    Case("empty-mix", "mix.yaml", {"mix.yaml": "catalog: catalog.yaml\nsources: {}\n"},
         "mix.yaml", 2, 1, "sources", r"a mix needs at least one source"),
    Case("unknown-weights-mode", "mix.yaml", mix("weights: relative", "weights: normalised"),
         "mix.yaml", 2, 1, "weights", r"unknown value 'normalised'; expected one of: relative, absolute"),
    Case("unknown-top-level-key", "mix.yaml", mix("weights: relative", "weight: relative"),
         "mix.yaml", 2, 1, "weight", r"unknown key \(did you mean 'weights'\?\)"),
    Case("missing-catalog-file", "mix.yaml", mix("catalog: catalog.yaml", "catalog: gone.yaml"),
         "mix.yaml", 1, 1, "catalog", r"catalog file 'gone.yaml' not found"),
    Case("catalog-is-a-mix", "mix.yaml", {"other.yaml": "weights: relative\nsources:\n  a: 1\n", **mix("catalog: catalog.yaml", "catalog: other.yaml")},
         "mix.yaml", 1, 1, "catalog", r"'other.yaml' is a mix, not a catalog"),
    Case("inline-source-bad-language", "mix.yaml",
         {"mix.yaml": "sources:\n  x:\n    weight: 1\n    category: web\n    path: a.parquet\n    language: fr\n"},
         "mix.yaml", 2, 3, "sources.x.language", r"language 'fr' is not ISO 639-3 plus script"),
    Case("strict-absolute-not-summing-to-1", "mix.yaml",
         {"mix.yaml": "catalog: catalog.yaml\nweights: absolute\nsources:\n  web-en: 0.6\n  math-a: 0.5\n"},
         "mix.yaml", 4, 3, "sources", r"weights sum to 1.1, not 1 \+- 1e-06; .*'weights: relative'", ["--strict"]),
    # --- catalogs
    Case("empty-catalog", "catalog.yaml", {"catalog.yaml": "sources: {}\n"},
         "catalog.yaml", 1, 1, "sources", r"is empty; a mix or a catalog needs at least one source"),
    Case("unknown-category", "catalog.yaml", catalog("category: math", "category: maths"),
         "catalog.yaml", 14, 5, "sources.math-a.category", r"unknown value 'maths' \(did you mean 'math'\?\); expected one of: web, code, math"),
    Case("unknown-language-code", "catalog.yaml", catalog("language: fra_Latn", "language: xqz_Latn"),
         "catalog.yaml", 8, 5, "sources.web-fr.language", r"unknown ISO 639-3 language code 'xqz'"),
    Case("unknown-script", "catalog.yaml", catalog("language: fra_Latn", "language: fra_Latx"),
         "catalog.yaml", 8, 5, "sources.web-fr.language", r"unknown ISO 15924 script 'Latx'"),
    Case("malformed-language", "catalog.yaml", catalog("language: fra_Latn", "language: french"),
         "catalog.yaml", 8, 5, "sources.web-fr.language", r"language 'french' is not ISO 639-3 plus script such as 'fra_Latn'"),
    Case("source-without-location", "catalog.yaml", catalog("    dataset: bigcode/the-stack\n", ""),
         "catalog.yaml", 10, 3, "sources.code-py", r"a source needs a 'path' or a 'dataset'"),
    Case("catalog-entry-not-a-mapping", "catalog.yaml", catalog("  math-a:\n    category: math\n    path: sample://math\n", "  math-a: 3\n"),
         "catalog.yaml", 13, 3, "sources.math-a", r"expected a mapping, got int 3"),
    Case("negative-source-size", "catalog.yaml", catalog("tokens: 1000000", "tokens: -5"),
         "catalog.yaml", 5, 5, "sources.web-en.tokens", r"must be greater than or equal to 0, got -5"),
    Case("broken-catalog-through-mix", "mix.yaml", catalog("category: math", "category: maths"),
         "catalog.yaml", 14, 5, "sources.math-a.category", r"unknown value 'maths'"),
    # --- recipes
    Case("missing-required-key", "recipe.yaml", recipe("    rope_theta: 100000\n", ""),
         "recipe.yaml", 25, 5, "phases[2].rope_theta", r"required key is missing"),
    Case("missing-top-level-key", "recipe.yaml", recipe("tokenizer: t\n", ""),
         "recipe.yaml", 1, 1, "tokenizer", r"required key is missing"),
    Case("unknown-phase-key", "recipe.yaml", recipe("    start_step: 101", "    start_stp: 101"),
         "recipe.yaml", 21, 5, "phases[1].start_stp", r"unknown key \(did you mean 'start_step'\?\)"),
    Case("unknown-schedule-type", "recipe.yaml", recipe("type: cosine", "type: cosin"),
         "recipe.yaml", 32, 7, "phases[2].schedule.type", r"unknown value 'cosin' \(did you mean 'cosine'\?\)"),
    Case("missing-mix-file", "recipe.yaml", recipe("    stage: 2\n    mix: mix.yaml", "    stage: 2\n    mix: gone.yaml"),
         "recipe.yaml", 20, 5, "phases[1].mix", r"mix file 'gone.yaml' not found"),
    Case("mix-is-a-catalog", "recipe.yaml", recipe("    stage: 2\n    mix: mix.yaml", "    stage: 2\n    mix: catalog.yaml"),
         "recipe.yaml", 20, 5, "phases[1].mix", r"'catalog.yaml' is a catalog, not a mix"),
    Case("broken-mix-through-recipe", "recipe.yaml", mix("  math-a: 0.05", "  math-a: -1"),
         "mix.yaml", 7, 3, "sources.math-a", r"weight is negative"),
    Case("phases-overlap", "recipe.yaml", recipe("start_step: 101", "start_step: 90"),
         "recipe.yaml", 21, 5, "phases[1].start_step", r"start_step 90 overlaps the previous phase \(expected 101\)"),
    Case("phases-leave-gap", "recipe.yaml", recipe("start_step: 101", "start_step: 120"),
         "recipe.yaml", 21, 5, "phases[1].start_step", r"start_step 120 leaves a gap after the previous phase \(expected 101\)"),
    Case("phase-without-extent", "recipe.yaml", recipe("    start_step: 101\n    steps: 100\n", "    start_step: 101\n"),
         "recipe.yaml", 18, 5, "phases[1]", r"a phase needs 'steps' or 'tokens'"),
    Case("steps-and-tokens-disagree", "recipe.yaml", recipe("    steps: 100\n    sequence", "    steps: 100\n    tokens: 409601\n    sequence"),
         "recipe.yaml", 12, 5, "phases[0]", r"steps \(100\) x global_batch_tokens \(4096\) = 409600 disagrees with tokens \(409601\)"),
    Case("sequence-length-does-not-divide-batch", "recipe.yaml", recipe("sequence_length: 1024", "sequence_length: 1000"),
         "recipe.yaml", 29, 5, "phases[2].sequence_length", r"global_batch_tokens \(4096\) is not a multiple of sequence_length \(1000\)"),
    Case("duplicate-phase-name", "recipe.yaml", recipe("  - name: b", "  - name: a"),
         "recipe.yaml", 18, 5, "phases[1].name", r"duplicate phase name 'a'"),
    Case("duplicate-stage", "recipe.yaml", recipe("    stage: 2", "    stage: 1"),
         "recipe.yaml", 19, 5, "phases[1].stage", r"stage 1 is already phase 1"),
    Case("schedule-on-later-phase-of-run", "recipe.yaml",
         recipe("    start_step: 101\n", "    start_step: 101\n    schedule:\n      type: constant\n      peak_lr: 1.0e-3\n"),
         "recipe.yaml", 22, 5, "phases[1].schedule", r"a schedule may only be given on the first phase of run 'main'"),
    Case("new-run-without-schedule", "recipe.yaml", recipe(LC_SCHEDULE, ""),
         "recipe.yaml", 25, 5, "phases[2].schedule", r"phase starts run 'lc' and needs its own schedule"),
    Case("wsd-decay-past-run-end", "recipe.yaml", recipe("decay_steps: 50", "decay_steps: 51"),
         "recipe.yaml", 10, 3, "schedule.decay_steps", r"decay ends at step 201, after the run's last step 200"),
    Case("wsd-decay-inside-warmup", "recipe.yaml", recipe("decay_start_step: 151", "decay_start_step: 5"),
         "recipe.yaml", 9, 3, "schedule.decay_start_step", r"decay_start_step \(5\) falls inside the warmup"),
    Case("wsd-without-decay", "recipe.yaml", recipe("  decay_steps: 50\n", ""),
         "recipe.yaml", 5, 1, "schedule", r"a wsd schedule needs decay_start_step and decay_steps"),
    Case("warmup-longer-than-run", "recipe.yaml", recipe("      warmup_steps: 2", "      warmup_steps: 20"),
         "recipe.yaml", 34, 7, "phases[2].schedule.warmup_steps", r"warmup_steps \(20\) exceed the run's 10 steps"),
    Case("final-lr-above-peak", "recipe.yaml", recipe("  decay_steps: 50\n", "  decay_steps: 50\n  final_lr: 0.5\n"),
         "recipe.yaml", 5, 1, "schedule", r"final_lr is above peak_lr"),
    Case("bad-count-string", "recipe.yaml", recipe("    start_step: 101\n    steps: 100\n", "    start_step: 101\n    tokens: 8.1X\n"),
         "recipe.yaml", 22, 5, "phases[1].tokens", r"expected a count such as 1000, 2.5e9 or '8.14T', got '8.1X'"),
    Case("fractional-steps", "recipe.yaml", recipe("    steps: 10\n", "    steps: 10.5\n"),
         "recipe.yaml", 28, 5, "phases[2].steps", r"expected a whole number, got 10.5"),
    Case("zero-global-batch", "recipe.yaml", recipe("global_batch_tokens: 4096", "global_batch_tokens: 0"),
         "recipe.yaml", 4, 1, "global_batch_tokens", r"must be greater than 0, got 0"),
    # --- names become folder names: one safe character set
    Case("recipe-name-climbs-out", "recipe.yaml", recipe("name: tiny", "name: ../../../evilrecipe"),
         "recipe.yaml", 1, 1, "name", r"name '../../../evilrecipe' contains a path separator; .*letters, digits and \. _ \+ -"),
    Case("phase-name-climbs-out", "recipe.yaml", recipe("  - name: b", "  - name: ../../../../evilphase"),
         "recipe.yaml", 18, 5, "phases[1].name", r"name '../../../../evilphase' contains a path separator"),
    Case("run-name-with-space", "recipe.yaml", recipe("    run: lc", "    run: long context"),
         "recipe.yaml", 26, 5, "phases[2].run", r"name 'long context' contains ' '"),
    Case("catalog-source-with-slash", "catalog.yaml", catalog("  web-en:", "  HuggingFaceFW/fineweb-edu:"),
         "catalog.yaml", 2, 3, "sources.HuggingFaceFW/fineweb-edu", r"name 'HuggingFaceFW/fineweb-edu' contains a path separator"),
    Case("catalog-source-hidden", "catalog.yaml", catalog("  math-a:", "  .math-a:"),
         "catalog.yaml", 13, 3, "sources..math-a", r"name '.math-a' starts with '.'"),
    Case("inline-source-climbs-out", "mix.yaml",
         mix("  math-a: 0.05", "  ../../../escaped: {weight: 0.05, category: math, path: sample://math}"),
         "mix.yaml", 7, 3, "sources.../../../escaped", r"name '../../../escaped' contains a path separator"),
    Case("phases-not-a-list", "recipe.yaml", {"recipe.yaml": "name: r\ntokenizer: t\nmodel: m\nglobal_batch_tokens: 8\n"
                                              "schedule: {type: constant, peak_lr: 1}\nphases: {a: 1}\n"},
         "recipe.yaml", 6, 1, "phases", r"expected a list, got dict"),
    Case("no-phases", "recipe.yaml", {"recipe.yaml": "name: r\ntokenizer: t\nmodel: m\nglobal_batch_tokens: 8\n"
                                      "schedule: {type: constant, peak_lr: 1}\nphases: []\n"},
         "recipe.yaml", 6, 1, "phases", r"a recipe needs at least one phase"),
]


def _error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if ": error: " in line]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_broken_input_gives_one_located_error(case: Case, tmp_path):
    write_project(tmp_path, case.edits)
    result = run_cli(["validate", *case.args, case.target], cwd=tmp_path)
    out = result.output
    assert result.exit_code == 1, out
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in out
    errors = _error_lines(out)
    assert len(errors) == 1, out
    key = f"{re.escape(case.key)}: " if case.key else ""
    pattern = rf"^{re.escape(case.file)}:{case.line}:{case.column}: error: {key}{case.message}"
    assert re.search(pattern, errors[0]), f"\n{errors[0]}\n does not match\n{pattern}"
    assert "1 error(s) in 1 file(s)" in out


def test_at_least_thirty_distinct_kinds():
    assert len({c.id for c in CASES}) == len(CASES) >= 30


def test_relative_mix_with_same_weights_passes_strict(tmp_path):
    """The mix that fails --strict as absolute passes once it declares its weights relative."""
    write_project(tmp_path, {"mix.yaml": "catalog: catalog.yaml\nweights: relative\nsources:\n  web-en: 0.6\n  math-a: 0.5\n"})
    result = run_cli(["validate", "--strict", "mix.yaml"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "weight sum 1.1 (relative" in result.output


def test_absolute_mix_off_by_a_little_warns_without_strict(tmp_path):
    write_project(tmp_path, {"mix.yaml": "catalog: catalog.yaml\nweights: absolute\nsources:\n  web-en: 0.6\n  math-a: 0.5\n"})
    result = run_cli(["validate", "mix.yaml"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "warning: mix.yaml: weights sum to 1.1" in result.stderr
    # The recipe uses the mix in three phases: one warning, and --strict fails it once.
    result = run_cli(["validate", "recipe.yaml"], cwd=tmp_path)
    assert result.exit_code == 0 and result.stderr.count("weights sum to 1.1") == 1
    result = run_cli(["validate", "--strict", "recipe.yaml"], cwd=tmp_path)
    assert result.exit_code == 1 and _error_lines(result.output) == [
        "mix.yaml:4:3: error: sources: weights sum to 1.1, not 1 +- 1e-06; fix them or declare 'weights: relative'"]
    # Within the strict tolerance is fine even for absolute weights.
    write_project(tmp_path, {"mix.yaml": "catalog: catalog.yaml\nweights: absolute\nsources:\n  web-en: 0.6\n  math-a: 0.4000000001\n"})
    assert run_cli(["validate", "--strict", "mix.yaml"], cwd=tmp_path).exit_code == 0


def test_errors_in_several_files_are_all_reported(tmp_path):
    write_project(tmp_path, catalog("language: fra_Latn", "language: fr"))
    (tmp_path / "inline.yaml").write_text("sources:\n  x:\n    weight: -1\n    category: web\n    path: a.parquet\n")
    result = run_cli(["validate", "catalog.yaml", "inline.yaml", "mix.yaml"], cwd=tmp_path)
    assert result.exit_code == 1
    # The catalog error is reported once although mix.yaml loads the catalog too.
    assert [e.split(": error:")[0] for e in _error_lines(result.output)] == ["catalog.yaml:8:5", "inline.yaml:2:3"]
    assert "2 error(s) in 3 file(s)" in result.output


def test_folder_with_one_bad_file(tmp_path):
    write_project(tmp_path, mix("  math-a: 0.05", "  math-a: .nan"))
    result = run_cli(["validate", str(tmp_path)], cwd=tmp_path)
    assert result.exit_code == 1
    assert f"{tmp_path}/mix.yaml:7:3: error: sources.math-a: weight is NaN" in result.output
    assert f"OK {tmp_path}/catalog.yaml" in result.output
    assert "in 3 file(s)" in result.output


def test_folder_without_yaml_is_an_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    result = run_cli(["validate", str(tmp_path)], cwd=tmp_path)
    assert result.exit_code == 1
    assert "error: no YAML files found" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "no-such-file.yaml"],
        ["validate"],
        ["validate", "--no-such-option", "mix.yaml"],
        ["report", "no-such-recipe.yaml"],
        ["report", "recipe.yaml", "--format", "xml"],
        ["report", "recipe.yaml", "--tokens", "lots"],
        ["diff", "mix.yaml"],
        ["diff", "--recipe", "no-such-recipe.yaml", "1", "2"],
        ["schema", "--kind", "phase"],
        ["no-such-command"],
    ],
    ids=lambda a: " ".join(a),
)
def test_usage_errors_exit_2(args, tmp_path):
    write_project(tmp_path)
    result = run_cli(args, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, expected",
    [
        (["report", "mix.yaml"], "mix.yaml:7:3: error: sources.math-a: weight is negative"),
        (["report", "recipe.yaml", "--format", "json"], "mix.yaml:7:3: error: sources.math-a: weight is negative"),
        (["diff", "mix.yaml", "catalog.yaml"], "error: catalog.yaml is a source catalog; report takes a recipe or mixes"),
        (["report", "catalog.yaml"], "error: catalog.yaml is a source catalog; report takes a recipe or mixes"),
        (["report", "recipe.yaml", "mix.yaml"], "error: give one recipe, or one or more mixes, not both"),
        (["diff", "--recipe", "recipe.yaml", "1", "9"], "error: no phase has stage 9 (stages: 1, 2)"),
        (["diff", "--recipe", "recipe.yaml", "a", "zz"], "error: no phase named 'zz' (phases: a, b, lc)"),
    ],
)
def test_report_and_diff_fail_cleanly(args, expected, tmp_path):
    edits = mix("  math-a: 0.05", "  math-a: -1") if "weight is negative" in expected else None
    write_project(tmp_path, edits)
    result = run_cli(args, cwd=tmp_path)
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert expected in result.output
    assert "Traceback" not in result.output


def test_console_script_prints_no_traceback(tmp_path):
    """The real entry point, in a subprocess: one located line on stderr, exit 1."""
    write_project(tmp_path, mix("  web-fr: 0.2", "\tweb-fr: 0.2"))
    mixc = Path(sys.executable).parent / "mixc"
    proc = subprocess.run([str(mixc) if mixc.exists() else "mixc", "validate", "--strict", "mix.yaml", "recipe.yaml"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.stderr.splitlines()[0].startswith("mix.yaml:5:1: error: malformed YAML")
