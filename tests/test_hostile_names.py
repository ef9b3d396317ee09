"""Names become folder names: a recipe, phase, run or source name that would climb out of the
store (or hide in it) is refused by `validate` with a located error, and `build` writes nothing,
inside --out or outside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from spec_fixtures import output_of, run_cli

CATALOG = """\
sources:
  web:
    category: web
    path: sample://web/eng_Latn/web
  math:
    category: math
    path: sample://math/eng_Latn/math
"""

MIX = """\
catalog: catalog.yaml
weights: relative
sources:
  web: 0.7
  math: 0.3
"""

RECIPE = """\
name: safe
tokenizer: sample:bpe-8192
model: m
global_batch_tokens: 512
schedule: {type: constant, peak_lr: 1.0e-3}
phases:
  - name: one
    mix: mix.yaml
    steps: 4
    sequence_length: 64
    rope_theta: 10000
"""

# (id, file, old text, new text, error line:column in that file, message)
CASES = [
    ("recipe", "recipe.yaml", "name: safe", "name: ../../../evilrecipe", (1, 1),
     "name: name '../../../evilrecipe' contains a path separator"),
    ("phase", "recipe.yaml", "  - name: one", "  - name: ../../../../evilphase", (7, 5),
     "phases[0].name: name '../../../../evilphase' contains a path separator"),
    ("run", "recipe.yaml", "    mix: mix.yaml", "    mix: mix.yaml\n    run: ../evilrun", (9, 5),
     "phases[0].run: name '../evilrun' contains a path separator"),
    ("inline-source", "mix.yaml", "  math: 0.3", "  ../../../escaped: {weight: 0.3, category: math, path: sample://math}", (5, 3),
     "name '../../../escaped' contains a path separator"),
    ("catalog-source-with-slash", "catalog.yaml", "  web:", "  HuggingFaceFW/fineweb-edu:", (2, 3),
     "name 'HuggingFaceFW/fineweb-edu' contains a path separator"),
    ("hidden-source", "catalog.yaml", "  web:", "  .web:", (2, 3), "name '.web' starts with '.'"),
    ("control-character", "catalog.yaml", "  web:", '  "web\\u0007":', (2, 3), "contains a control character"),
]


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_name_is_a_located_error_and_nothing_is_written(case, tmp_path):
    _, target, old, new, (line, column), message = case
    proj = tmp_path / "a" / "b" / "c" / "proj"  # deep enough that '../../..' still lands inside tmp_path
    proj.mkdir(parents=True)
    texts = {"catalog.yaml": CATALOG, "mix.yaml": MIX, "recipe.yaml": RECIPE}
    assert old in texts[target]
    texts[target] = texts[target].replace(old, new)
    for name, text in texts.items():
        (proj / name).write_text(text)
    before = _files(tmp_path)

    checked = run_cli(["validate", "--strict", "recipe.yaml"], cwd=proj)
    text = output_of(checked)
    assert checked.exit_code == 1, text
    assert f"{target}:{line}:{column}: error: " in text and message in text, text
    assert "Traceback" not in text

    out = proj / "out"
    built = run_cli(["build", "-q", "--sample", "--workers", "1", "--recipe", "recipe.yaml", "--out", str(out)], cwd=proj)
    text = output_of(built)
    assert built.exit_code == 1 and message in text and "Traceback" not in text, text
    # Nothing anywhere: no store begun, nothing beside it, no evil*/escaped* under the temp root.
    assert _files(tmp_path) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(("evil", "escaped"))]


def test_the_safe_project_builds(tmp_path):
    """The unbroken project is valid and builds, so the cases above fail for their names alone."""
    for name, text in {"catalog.yaml": CATALOG, "mix.yaml": MIX, "recipe.yaml": RECIPE}.items():
        (tmp_path / name).write_text(text)
    assert run_cli(["validate", "--strict", "recipe.yaml"], cwd=tmp_path).exit_code == 0
    built = run_cli(["build", "-q", "--sample", "--sample-documents", "20", "--workers", "1", "--recipe", "recipe.yaml",
                     "--out", "out"], cwd=tmp_path)
    assert built.exit_code == 0, output_of(built)
    assert (tmp_path / "out" / "phases" / "safe" / "one.json").is_file()
    assert sorted(p.name for p in (tmp_path / "out" / "sources").iterdir()) == ["math", "web"]
