#!/usr/bin/env python3
"""Set up a fresh machine (only python3 needed) and run the demo or the tests.

    python3 scripts/dev.py demo    # set up .venv, then run the main job
    python3 scripts/dev.py test    # set up .venv, then run the test suite

Set-up is idempotent: .venv is created once and reinstalled only when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".mixc-setup"


def run(*cmd: str, **kw) -> None:
    print("+", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def setup() -> None:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest:
        return
    if not (BIN / "python").exists():
        print(f"creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    # torch is pinned to the CPU build; install it first so nothing pulls a CUDA build.
    run(*pip, "torch==2.13.0")
    run(*pip, "-e", ".[train,dev]")
    STAMP.write_text(digest)


def demo(out: str) -> None:
    """The whole mission on 2 CPU cores: sample data -> shards -> a trained tiny SmolLM3 -> transformers."""
    mixc = str(BIN / "mixc")
    recipe = "recipes/smollm3-tiny.yaml"
    shards, run_dir = f"{out}/shards", f"{out}/run"
    started = time.monotonic()
    Path(ROOT / out).mkdir(exist_ok=True)
    run(mixc, "validate", "--strict", "mixes", "recipes")
    # Stages 1-3 and both long-context phases from mixc's offline sample data, demo tokenizer.
    run(mixc, "build", "--stage", "all", "--sample", "--sample-documents", "200", "--recipe", recipe, "--out", shards)
    # All five phases; --resume continues an interrupted demo (and a finished one is a no-op).
    run(mixc, "train", recipe, "--shards", shards, "--out", run_dir, "--resume", "--log-every", "10")
    run(mixc, "report", recipe, "--shards", shards)
    run(mixc, "eval", run_dir)  # held-out bits per byte per source and category (also in metrics.jsonl)
    # The run's timeline: its recipe's curriculum with its loss and held-out bpb over tokens.
    run(mixc, "report", run_dir, "--format", "html", "-o", f"{out}/report.html")
    run(mixc, "export", run_dir, "--format", "hf", f"{out}/hf")
    run(mixc, "generate", f"{out}/hf")
    print(f"demo done in {time.monotonic() - started:.0f} s: {out}/report.html, {run_dir}/metrics.jsonl, {out}/hf", flush=True)


def test(args: list[str]) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0")
    workers = ["-n", "2"] if "-n" not in args else []
    run(str(BIN / "python"), "-m", "pytest", "-q", *workers, *args, env=env)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test", "setup"):
        sys.exit(__doc__)
    setup()
    if sys.argv[1] == "demo":
        demo("demo-out")
    elif sys.argv[1] == "test":
        test(sys.argv[2:])


if __name__ == "__main__":
    try:
        main()
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
