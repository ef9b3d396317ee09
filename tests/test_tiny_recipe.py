"""The shipped tiny recipe, end to end as the demo runs it: the loss falls across its phases."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MIXC = str(Path(sys.executable).with_name("mixc"))


@pytest.mark.slow
def test_tiny_recipe_trains_through_every_phase_with_the_loss_falling(tmp_path):
    env = dict(os.environ, MIXC_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    recipe = str(REPO / "recipes" / "smollm3-tiny.yaml")
    shards, run = tmp_path / "shards", tmp_path / "run"
    built = subprocess.run([MIXC, "build", "-q", "--stage", "all", "--sample", "--sample-documents", "60", "--recipe", recipe,
                            "--out", str(shards)], env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    trained = subprocess.run([MIXC, "train", recipe, "--shards", str(shards), "--out", str(run), "--log-every", "0",
                              "--threads", "1"], env=env, capture_output=True, text=True, timeout=900)
    assert trained.returncode == 0, trained.stderr[-3000:]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 213))
    phases = ["stable-1", "stable-2", "decay", "long-context-32k", "long-context-64k"]
    assert list(dict.fromkeys(r["phase"] for r in records)) == phases
    assert [r["sequence_length"] for r in records if r["step"] in (1, 201, 212)] == [256, 1024, 2048]
    start = statistics.mean(r["loss"] for r in records[:10])
    assert start > 7.5  # about ln(8192) = 9.0 at initialisation
    late_stable_1 = statistics.mean(r["loss"] for r in records[80:120])
    assert late_stable_1 < 0.6 * start
    for phase in phases[1:]:
        mean = statistics.mean(r["loss"] for r in records if r["phase"] == phase)
        assert mean < 0.6 * start, (phase, mean, start)
    assert records[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # each run's schedule ends at its final LR
