"""The checkpointed training state: TrainState round-trips through state_dict()/load_state_dict(),
full and sharded (torch.distributed.checkpoint), and an FSDP2 run over 2 gloo processes saves
per-rank shards, resumes exactly, and exports.

FSDP2 (`fully_shard`) runs on CPU over gloo with torch 2.13, but `mixc train --fsdp` refuses a
CPU (dist.wrap: sharding is for GPUs), so the multi-process test swaps in a wrap that shards
the same way without the bf16 policy; everything else is the trainer's own code path.
"""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import _env, metrics, run, weights
from test_train import recipe_store as recipe_store  # a fixture

from mixc.train import checkpoint, dist
from mixc.train.export import model_from_checkpoint
from mixc.train.guard import Guard
from mixc.train.model import SmolLM3, get_config


class Position:
    """A loader's resumable part: where it is."""

    def __init__(self, at: int = 0):
        self.at, self.sought = at, None

    def state_dict(self) -> dict:
        return {"next_micro_batch": self.at}

    def load_state_dict(self, state: dict) -> None:
        self.at = state["next_micro_batch"]

    def seek_step(self, step: int) -> None:
        self.sought = step


def trained(seed: int, steps: int) -> tuple[SmolLM3, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = SmolLM3(get_config("smollm3-test"))
    optimizer = model.configure_optimizer(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
    for _ in range(steps):
        ids = torch.randint(0, 512, (2, 16))
        model(ids, labels=ids)[1].backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer


def fresh_state(sharded: bool, **kw) -> checkpoint.TrainState:
    model, optimizer = trained(seed=99, steps=0)
    return checkpoint.TrainState(model, optimizer, Position(), Guard(), dist.World(), sharded=sharded,
                                 micro_batch_size=kw.pop("micro_batch_size", 4), **kw)


def save(folder, model, optimizer, *, step: int, at: int, sharded: bool):
    """A checkpoint of this model and optimizer at `step`, the loader `at` that sample (micro-batches of 4)."""
    state = checkpoint.TrainState(model, optimizer, Position(at=at), Guard(), dist.World(), sharded=sharded,
                                  micro_batch_size=4, step=step)
    return checkpoint.save_train_state(folder, step, state, {"step": step})


def assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}.{i}")
    else:
        assert a == b, where


@pytest.mark.parametrize("sharded", [False, True], ids=["full", "sharded"])
def test_train_state_round_trips_through_a_checkpoint(tmp_path, sharded):
    model, optimizer = trained(seed=5, steps=3)
    guard = Guard(policy="skip", skipped=[2], consecutive=0, rollbacks=1)
    saved = checkpoint.TrainState(model, optimizer, Position(at=24), guard, dist.World(), sharded=sharded,
                                  micro_batch_size=4, step=6)
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    folder = checkpoint.save_train_state(tmp_path, 6, saved, {"step": 6}, keep=2)
    after = (random.random(), np.random.random(), torch.rand(3))

    state, meta = checkpoint.load(folder)
    assert ("sharded" in state) == sharded and ("model" in state) != sharded
    assert (meta.get("state_format") == "dcp") == sharded
    restored = fresh_state(sharded)
    assert not torch.equal(restored.model.embed_tokens.weight, model.embed_tokens.weight)
    restored.load_state_dict(state)
    assert_same(restored.model.state_dict(), model.state_dict())
    assert_same(restored.optimizer.state_dict(), optimizer.state_dict())
    assert (restored.step, restored.loader.at, restored.loader.sought) == (6, 24, None)
    assert restored.guard.meta() == guard.meta()
    assert (random.random(), np.random.random()) == after[:2] and torch.equal(torch.rand(3), after[2])


def test_another_micro_batch_size_seeks_the_step_instead(tmp_path):
    model, optimizer = trained(seed=5, steps=1)
    state, _ = checkpoint.load(save(tmp_path, model, optimizer, step=6, at=24, sharded=False))
    restored = fresh_state(False, micro_batch_size=2)
    restored.load_state_dict(state)
    assert (restored.loader.at, restored.loader.sought) == (0, 6)


def test_a_rollback_restores_weights_and_optimizer_but_not_the_loader_or_guard(tmp_path):
    model, optimizer = trained(seed=5, steps=2)
    state, _ = checkpoint.load(save(tmp_path, model, optimizer, step=2, at=8, sharded=True))
    later = fresh_state(True, step=5)
    later.loader.at, later.guard.rollbacks = 20, 1
    later.load_state_dict(state, parts=("model", "optimizer", "rng"))
    assert_same(later.model.state_dict(), model.state_dict())
    assert (later.step, later.loader.at, later.guard.rollbacks) == (5, 20, 1)


def test_a_sharded_checkpoint_missing_its_shards_is_named(tmp_path):
    model, optimizer = trained(seed=5, steps=1)
    folder = save(tmp_path, model, optimizer, step=1, at=0, sharded=True)
    (folder / checkpoint.SHARDED_DIR / ".metadata").unlink()
    with pytest.raises(checkpoint.MixcError, match=r"sharded is incomplete \(no \.metadata\)"):
        checkpoint.load(folder)


FSDP_ON_CPU = """\
import sys
from torch.distributed.fsdp import fully_shard
from mixc.train import dist, loop

def wrap(model, world, fsdp=False):
    # dist.wrap's FSDP2 sharding (per decoder layer, then the root), in fp32 on CPU/gloo
    for layer in model.layers:
        fully_shard(layer)
    fully_shard(model)
    return model

dist.wrap = wrap
loop.train(sys.argv[1], sys.argv[2], sys.argv[3], fsdp=True, threads=1, micro_batch_size=4, log_every=0,
           max_steps=int(sys.argv[4]) if sys.argv[4] != "-" else None, resume=sys.argv[5] == "resume")
"""


@pytest.mark.slow
def test_fsdp_run_writes_per_rank_shards_resumes_exactly_and_exports(recipe_store, tmp_path):
    recipe, store = recipe_store
    script = tmp_path / "fsdp_cpu.py"
    script.write_text(FSDP_ON_CPU)

    def torchrun(out: Path, max_steps: str, mode: str = "fresh"):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
               str(recipe), str(store), str(out), max_steps, mode]
        done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    torchrun(tmp_path / "whole", "-")
    torchrun(tmp_path / "parts", "5")
    first = checkpoint.latest(tmp_path / "parts" / "checkpoints")
    assert first.name == "step-000000005"
    # Each rank wrote its own shard file; rank 0's state.pt holds no model or optimizer.
    assert sorted(p.name for p in (first / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    state, meta = checkpoint.load(first)
    assert meta["state_format"] == "dcp" and "model" not in state and "optimizer" not in state
    assert len(state["loader"]) == 2
    torchrun(tmp_path / "parts", "-", "resume")

    # The resumed run ends with the uninterrupted run's weights, bit for bit.
    whole, _, _ = model_from_checkpoint(tmp_path / "whole")
    parts, config, meta = model_from_checkpoint(tmp_path / "parts")
    assert meta["step"] == 11 and config.rope_theta == 100000
    assert_same(parts.state_dict(), whole.state_dict())
    assert [r["loss"] for r in metrics(tmp_path / "parts")] == [r["loss"] for r in metrics(tmp_path / "whole")]

    # And it trained what one process trains on the same global batches.
    run(recipe_store, tmp_path / "one", micro_batch_size=4)
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "whole")):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    reference = weights(tmp_path / "one")
    assert max((reference[k] - v).abs().max().item() for k, v in whole.state_dict().items()) < 1e-4
