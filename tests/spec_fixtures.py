"""A small, valid spec project (catalog, mix, recipe) that tests copy and then break or extend.

Line numbers matter: the error tests assert them, so edit these texts only together with
tests/test_validate_errors.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner, Result

from mixc.cli import main

REPO = Path(__file__).resolve().parent.parent

CATALOG = """\
sources:
  web-en:
    category: web
    path: sample://web-en
    tokens: 1000000
  web-fr:
    category: web
    language: fra_Latn
    path: sample://web-fr
  code-py:
    category: code
    dataset: bigcode/the-stack
  math-a:
    category: math
    path: sample://math
"""

MIX = """\
catalog: catalog.yaml
weights: relative
sources:
  web-en: 0.6
  web-fr: 0.2
  code-py: 0.15
  math-a: 0.05
"""

# Two phases of one WSD run (steps 1-100, 101-200) and a separate 10-step cosine run.
RECIPE = """\
name: tiny
tokenizer: t
model: m
global_batch_tokens: 4096
schedule:
  type: wsd
  peak_lr: 1.0e-3
  warmup_steps: 10
  decay_start_step: 151
  decay_steps: 50
phases:
  - name: a
    stage: 1
    mix: mix.yaml
    steps: 100
    sequence_length: 256
    rope_theta: 10000
  - name: b
    stage: 2
    mix: mix.yaml
    start_step: 101
    steps: 100
    sequence_length: 256
    rope_theta: 10000
  - name: lc
    run: lc
    mix: mix.yaml
    steps: 10
    sequence_length: 1024
    rope_theta: 100000
    schedule:
      type: cosine
      peak_lr: 1.0e-4
      warmup_steps: 2
"""

BASE = {"catalog.yaml": CATALOG, "mix.yaml": MIX, "recipe.yaml": RECIPE}


def write_project(root: Path, edits: dict[str, str | bytes | tuple[str, str]] | None = None) -> Path:
    """Write the base project into `root`, then apply edits: a full text or bytes replaces a
    file; an (old, new) pair replaces the first occurrence of `old`, which must exist."""
    for name, text in BASE.items():
        (root / name).write_text(text, encoding="utf-8")
    for name, edit in (edits or {}).items():
        path = root / name
        if isinstance(edit, tuple):
            old, new = edit
            text = path.read_text(encoding="utf-8")
            assert old in text, f"fixture edit does not apply to {name}: {old!r}"
            path.write_text(text.replace(old, new, 1), encoding="utf-8")
        elif isinstance(edit, bytes):
            path.write_bytes(edit)
        else:
            path.write_text(edit, encoding="utf-8")
    return root


def run_cli(args: list[str], cwd: Path | None = None) -> Result:
    """Invoke `mixc` in-process (as the console script does), in `cwd`."""
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(main, args, catch_exceptions=True)
    finally:
        os.chdir(old)


def output_of(result: Result) -> str:
    """stdout and stderr together (click >= 8.2 keeps them apart; `output` interleaves both)."""
    return result.output
