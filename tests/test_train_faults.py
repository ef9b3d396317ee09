"""Training faults: non-finite steps (stop | skip | rollback), damaged checkpoints, export of
non-finite weights, MFU without a known peak.

Faults are real where a recipe can cause them (a learning rate of 1e3, a z-loss of 1e30); where
a test needs one at a chosen step, the step's gradients are poisoned with NaN after the real
backward pass (`poison`), which is what an overflow in the backward pass leaves behind.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from loader_fixtures import MIX_ONE, MIX_TWO
from store_fixtures import make_store
from test_train import RECIPE, metrics, pattern_docs, weights

from mixc.errors import MixcError
from mixc.train import checkpoint, loop
from mixc.train.loop import train


@pytest.fixture(scope="module")
def store_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "one.yaml").write_text(MIX_ONE)
    (root / "two.yaml").write_text(MIX_TWO)
    docs = {"a": pattern_docs(1, 300, 1), "b": pattern_docs(100, 200, 2), "c": pattern_docs(200, 200, 3)}
    store = make_store(root, "train-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                            "long": {"a": 1, "b": 1, "c": 2}}, docs, vocab_size=300)
    return root, store


def recipe(store_root, name: str, *, policy: str | None = None, limit: int | None = None,
           replace: tuple[str, str] | None = None) -> Path:
    text = RECIPE
    if replace:
        assert replace[0] in text
        text = text.replace(*replace)
    if policy or limit:
        block = "nonfinite:\n" + (f"  policy: {policy}\n" if policy else "") + (f"  limit: {limit}\n" if limit else "")
        text = text.replace("phases:\n", block + "phases:\n", 1)
    path = store_root[0] / f"{name}.yaml"
    path.write_text(text)
    return path


def run(store_root, recipe_path, out, **kw):
    kw.setdefault("threads", 1)
    kw.setdefault("log", lambda _m: None)
    return train(recipe_path, store_root[1], out, **kw)


@pytest.fixture
def poison(monkeypatch):
    """poison({3, 5}): the gradients of those global steps (1-based) turn NaN."""

    def arm(steps: set[int]):
        real = loop.micro_step

        def micro_step(engine, batch, *args, **kw):
            share = real(engine, batch, *args, **kw)
            if batch["step"] + 1 in steps:
                next(engine.parameters()).grad.fill_(math.nan)
            return share

        monkeypatch.setattr(loop, "micro_step", micro_step)

    return arm


def all_finite(folder: Path) -> bool:
    state, _ = checkpoint.load(folder)
    return not list(checkpoint.nonfinite_tensors({"model": state["model"], "optimizer": state["optimizer"]}))


def cli(*args):
    from click.testing import CliRunner

    from mixc.cli import main

    return CliRunner().invoke(main, [*map(str, args)])


def one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    return errors[0]


# --------------------------------------------------------------------------- non-finite steps


def test_a_high_learning_rate_never_puts_a_non_finite_tensor_in_a_checkpoint(store_root, tmp_path):
    high = recipe(store_root, "high-lr", replace=("peak_lr: 3.0e-3", "peak_lr: 1.0e3"))
    out = tmp_path / "run"
    summary = run(store_root, high, out, checkpoint_every=1, keep=20)
    skipped = [r for r in metrics(out) if r.get("skipped")]
    assert skipped, "the learning rate of 1e3 was meant to give non-finite steps"
    assert summary["skipped_steps"] == [r["step"] for r in skipped]
    assert all(r["loss"] is None or r["grad_norm"] is None for r in skipped)
    dirs = checkpoint.checkpoint_dirs(out / "checkpoints")
    assert len(dirs) == 11 and all(all_finite(d) for d in dirs)
    meta = json.loads((dirs[-1] / "meta.json").read_text())
    assert meta["skipped_steps"] == summary["skipped_steps"]


def test_skip_drops_the_batch_keeps_the_weights_and_resumes_exactly(store_root, tmp_path, poison):
    poison({3, 6})
    skip = recipe(store_root, "skip", policy="skip", limit=2)
    seen = {}

    def look(info):
        seen[info["record"]["step"]] = {k: v.clone() for k, v in info["model"].state_dict().items()}

    full = tmp_path / "full"
    summary = run(store_root, skip, full, on_step=look, max_steps=8)
    records = metrics(full)
    assert [r["step"] for r in records] == list(range(1, 9))
    assert [r["step"] for r in records if r.get("skipped")] == [3, 6] == summary["skipped_steps"]
    assert records[2]["grad_norm"] is None and math.isfinite(records[2]["loss"])
    assert "batch skipped" in records[2]["skipped"]
    assert all(torch.equal(seen[3][k], seen[2][k]) for k in seen[2])  # no update at step 3
    assert not all(torch.equal(seen[4][k], seen[3][k]) for k in seen[3])  # step 4 trains again
    assert records[3]["tokens"] == 4 * 256  # the loader moved past the dropped batch
    # Stopped at step 4 and resumed: the same steps dropped, the same weights at the end.
    part = tmp_path / "part"
    run(store_root, skip, part, max_steps=4)
    assert json.loads((checkpoint.latest(part / "checkpoints") / "meta.json").read_text())["skipped_steps"] == [3]
    run(store_root, skip, part, resume=True, max_steps=8)
    final, expected = weights(part), weights(full)
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    timing = ("tokens_per_s", "mfu", "step_time", "elapsed")
    assert [{k: v for k, v in r.items() if k not in timing} for r in metrics(part)] == \
        [{k: v for k, v in r.items() if k not in timing} for r in records]


def test_skip_stops_after_limit_consecutive_non_finite_steps(store_root, tmp_path, poison):
    poison({2, 3, 4})
    out = tmp_path / "run"
    with pytest.raises(MixcError, match=r"step 4 \(phase one\): gradient norm nan.*steps 2-4 all non-finite.*2 consecutive"):
        run(store_root, recipe(store_root, "skip2", policy="skip", limit=2), out, checkpoint_every=1)
    assert checkpoint.latest(out / "checkpoints").name == "step-000000003"  # steps 2, 3 skipped, finite


def test_rollback_returns_to_the_last_good_checkpoint_and_drops_the_batches_since(store_root, tmp_path, poison):
    poison({7})
    back = recipe(store_root, "rollback", policy="rollback", limit=1)
    seen = {}

    def look(info):
        seen[info["record"]["step"]] = {k: v.clone() for k, v in info["model"].state_dict().items()}

    full = tmp_path / "full"
    said: list[str] = []
    summary = run(store_root, back, full, on_step=look, checkpoint_every=0, log=said.append)  # checkpoints at 4, 8, 11
    assert summary["steps"] == 11 and summary["skipped_steps"] == [5, 6, 7]
    assert any("rolled back to step 4, batches 5-7 skipped" in m for m in said), said
    at_four, _ = checkpoint.load(full / "checkpoints" / "step-000000004")
    assert all(torch.equal(seen[7][k], at_four["model"][k]) for k in at_four["model"])
    records = metrics(full)
    assert [r["step"] for r in records] == list(range(1, 12))
    assert [r["step"] for r in records if r.get("skipped")] == [5, 6, 7]
    assert math.isfinite(records[4]["loss"]) and "rolled back to step 4" in records[4]["skipped"]
    assert summary["phases"][1]["steps_done"] == 1  # phase two: only step 8 counts
    meta = json.loads((full / "checkpoints" / "step-000000011" / "meta.json").read_text())
    assert meta["rollbacks"] == 1 and meta["skipped_steps"] == [5, 6, 7]
    # Killed after the rollback, before the next checkpoint: the resume rolls back the same way.
    part = tmp_path / "part"

    def killed_at_seven(info):
        if info["record"]["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(store_root, back, part, checkpoint_every=0, on_step=killed_at_seven)
    assert checkpoint.latest(part / "checkpoints").name == "step-000000004"
    run(store_root, back, part, resume=True, checkpoint_every=0)
    final, expected = weights(part), weights(full)
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [r.get("skipped") for r in metrics(part)] == [r.get("skipped") for r in records]


def test_rollback_skips_before_the_first_checkpoint_and_stops_past_its_limit(store_root, tmp_path, poison):
    poison({2, 3, 6})
    out = tmp_path / "run"
    with pytest.raises(MixcError, match=r"step 6 .*1 rollback\(s\) already, stopping"):
        run(store_root, recipe(store_root, "rollback1", policy="rollback", limit=1), out, checkpoint_every=2)
    records = metrics(out)
    assert records[1]["skipped"] == "gradient norm nan; batch skipped (no checkpoint to roll back to yet)"
    assert "rolled back to step 2, batch 3 skipped" in records[2]["skipped"]
    assert [r["step"] for r in records if r.get("skipped")] == [2, 3]


@pytest.mark.parametrize("policy", ["skip", "rollback"])
def test_a_state_gone_non_finite_is_never_checkpointed(store_root, tmp_path, policy):
    """Finite gradients can still leave a non-finite state (an optimizer moment overflowing);
    here a weight turns NaN after step 3's update."""
    poisoned = []

    def corrupt(info):
        if info["record"]["step"] == 3 and not poisoned:
            with torch.no_grad():
                next(info["model"].parameters()).view(-1)[0] = math.nan
            poisoned.append(3)

    out = tmp_path / "run"
    kw = {"checkpoint_every": 1, "max_steps": 4, "on_step": corrupt}
    if policy == "skip":
        with pytest.raises(MixcError, match=r"step 3 \(phase one\): the model or optimizer state holds non-finite values "
                                            r"in model\.embed_tokens\.weight; checkpoint not written"):
            run(store_root, recipe(store_root, "state-skip", policy="skip"), out, **kw)
        assert checkpoint.latest(out / "checkpoints").name == "step-000000002"
        return
    summary = run(store_root, recipe(store_root, "state-rollback", policy="rollback"), out, **kw)
    assert summary["skipped_steps"] == [3] and summary["steps"] == 4
    dirs = checkpoint.checkpoint_dirs(out / "checkpoints")
    assert [d.name for d in dirs] == ["step-000000002", "step-000000003", "step-000000004"]
    assert all(all_finite(d) for d in dirs)
    at_two, at_three = checkpoint.load(dirs[0])[0]["model"], checkpoint.load(dirs[1])[0]["model"]
    assert all(torch.equal(at_two[k], at_three[k]) for k in at_two)  # step 3 undone
    assert "the state holds non-finite values" in metrics(out)[2]["skipped"]


def test_cli_stop_policy_is_one_line_and_exit_1(store_root, tmp_path):
    stop = recipe(store_root, "stop", policy="stop", replace=("peak_lr: 3.0e-3", "peak_lr: 1.0e3"))
    out = tmp_path / "run"
    result = cli("train", stop, "--shards", store_root[1], "--out", out, "--threads", "1", "--checkpoint-every", "1")
    line = one_error_line(result)
    assert "the update was not applied; stopping (recipe nonfinite.policy: stop)" in line
    step = int(line.split("step ")[1].split(" ")[0])
    assert f"the last good checkpoint is {out / 'checkpoints' / f'step-{step - 1:09d}'}" in line
    assert all(all_finite(d) for d in checkpoint.checkpoint_dirs(out / "checkpoints"))


def test_cli_an_absurd_z_loss_stops_on_the_infinite_gradient(store_root, tmp_path):
    huge = recipe(store_root, "zloss", replace=("  grad_clip: 1.0\n", "  grad_clip: 1.0\n  z_loss: 1.0e30\n"))
    result = cli("train", huge, "--shards", store_root[1], "--out", tmp_path / "run", "--threads", "1")
    line = one_error_line(result)
    assert "step 6 (phase two): gradient norm inf" in line and "5 consecutive skips" in line


def test_the_policy_option_is_validated(store_root, tmp_path):
    bad = recipe(store_root, "bad-policy", policy="ignore")
    result = cli("train", bad, "--shards", store_root[1], "--out", tmp_path / "run")
    assert result.exit_code == 1 and "nonfinite" in result.output and "Traceback" not in result.output


# --------------------------------------------------------------------------- damaged checkpoints


def _damage(folder: Path, how: str) -> None:
    state = folder / "state.pt"
    if how == "truncated state.pt":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif how == "empty state.pt":
        state.write_bytes(b"")
    elif how == "bad meta.json":
        (folder / "meta.json").write_text('{"step": 3, "model_con')
    elif how == "NaN weights":  # written by a mixc before the guard
        loaded = torch.load(state, weights_only=False)
        for tensor in loaded["model"].values():
            tensor.fill_(math.nan)
        torch.save(loaded, state)


@pytest.fixture(scope="module")
def three_checkpoints(store_root, tmp_path_factory):
    """A run stopped at step 3 with a checkpoint at every step, and the uninterrupted run to step 4."""
    base = tmp_path_factory.mktemp("three")
    plain = recipe(store_root, "plain")
    run(store_root, plain, base / "run", max_steps=3, checkpoint_every=1)
    run(store_root, plain, base / "four", max_steps=4, checkpoint_every=1)
    return plain, base / "run", base / "four"


@pytest.mark.parametrize("how", ["truncated state.pt", "empty state.pt", "bad meta.json", "NaN weights"])
def test_resume_and_export_fall_back_over_a_damaged_newest_checkpoint(store_root, three_checkpoints, tmp_path, how):
    plain, original, four = three_checkpoints
    out = tmp_path / "run"
    shutil.copytree(original, out)
    bad = out / "checkpoints" / "step-000000003"
    _damage(bad, how)
    # export of the damaged folder itself: one line naming it, nothing written
    result = cli("export", bad, tmp_path / "hf-bad")
    assert str(bad) in one_error_line(result) and not (tmp_path / "hf-bad").exists()
    if how != "NaN weights":
        # export of the run folder: a warning naming the damaged one, then step 2 exported
        result = cli("export", out, tmp_path / "hf")
        assert result.exit_code == 0, result.output
        assert f"warning: {bad}" in result.output and "; using step-000000002 instead" in result.output
        assert json.loads((tmp_path / "hf" / "config.json").read_text())["mixc"]["step"] == 2
    result = cli("train", plain, "--shards", store_root[1], "--out", out, "--resume", "--max-steps", "4",
                 "--threads", "1", "--checkpoint-every", "1")
    assert result.exit_code == 0, result.output
    assert f"warning: {bad}" in result.output and "moved it to bad-step-000000003; using step-000000002 instead" in result.output
    assert f"resuming from {out / 'checkpoints' / 'step-000000002'}" in result.output
    assert (out / "checkpoints" / "bad-step-000000003").is_dir()
    final, expected = weights(out), weights(four)
    assert all(torch.equal(final[k], expected[k]) for k in expected)  # as if never damaged


def test_a_run_folder_whose_newest_checkpoint_is_nan_is_not_exported(store_root, three_checkpoints, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(three_checkpoints[1], out)
    _damage(out / "checkpoints" / "step-000000003", "NaN weights")
    line = one_error_line(cli("export", out, tmp_path / "hf"))
    assert "weight tensors hold NaN or infinite values" in line and "step-000000003" in line
    assert not (tmp_path / "hf").exists()


def test_resume_with_nothing_usable_is_one_line(store_root, three_checkpoints, tmp_path):
    plain, original, _ = three_checkpoints
    out = tmp_path / "run"
    shutil.copytree(original, out)
    for folder in checkpoint.checkpoint_dirs(out / "checkpoints"):
        _damage(folder, "empty state.pt")
    for _ in range(2):  # nothing is set aside: a second try fails the same way, never starts over
        result = cli("train", plain, "--shards", store_root[1], "--out", out, "--resume", "--threads", "1")
        assert "no usable checkpoint" in one_error_line(result)
    assert len(checkpoint.checkpoint_dirs(out / "checkpoints")) == 3


def test_keep_never_deletes_the_last_good_checkpoint(store_root, three_checkpoints, tmp_path):
    # In the store: a damaged folder with a higher step must not push the new one out.
    model = {"w": torch.ones(2)}
    root = tmp_path / "ckpts"
    for step in (2, 5):
        checkpoint.save(root, step, {"model": model}, {"step": step}, keep=3)
    _damage(root / "step-000000005", "empty state.pt")
    written = checkpoint.save(root, 3, {"model": model}, {"step": 3}, keep=1)
    assert written.is_dir() and checkpoint.load(written)[1]["step"] == 3
    # Through the trainer: resume over a damaged newest with --keep 1, then resume again.
    plain, original, _ = three_checkpoints
    out = tmp_path / "run"
    shutil.copytree(original, out)
    _damage(out / "checkpoints" / "step-000000003", "truncated state.pt")
    run(store_root, plain, out, resume=True, max_steps=3, keep=1)
    assert [d.name for d in checkpoint.checkpoint_dirs(out / "checkpoints")] == ["step-000000003"]
    assert all_finite(out / "checkpoints" / "step-000000003")
    assert run(store_root, plain, out, resume=True, max_steps=4, keep=1)["steps"] == 4


# --------------------------------------------------------------------------- export and MFU


def test_export_refuses_non_finite_weights_and_writes_nothing(tmp_path):
    from mixc.train.model import SmolLM3, get_config

    torch.manual_seed(0)
    model = SmolLM3(get_config("smollm3-test"))
    state = {"model": model.state_dict(), "step": 1}
    with torch.no_grad():
        model.layers[1].mlp.down_proj.weight[0, 0] = math.inf
    folder = checkpoint.save(tmp_path / "run", 1, state, {"step": 1, "model_config": model.config.to_dict()})
    line = one_error_line(cli("export", folder, tmp_path / "hf"))
    assert f"{folder}: 1 of " in line and "layers.1.mlp.down_proj.weight" in line and "nothing exported" in line
    assert not (tmp_path / "hf").exists()
    # Finite in float32, but beyond float16's range: refused for --dtype float16 only.
    with torch.no_grad():
        model.layers[1].mlp.down_proj.weight[0, 0] = 1e6
    folder = checkpoint.save(tmp_path / "run2", 1, state, {"step": 1, "model_config": model.config.to_dict()})
    assert "do not fit float16" in one_error_line(cli("export", folder, tmp_path / "hf16", "--dtype", "float16"))
    assert not (tmp_path / "hf16").exists()
    assert cli("export", folder, tmp_path / "hf32").exit_code == 0


def test_no_mfu_on_cpu_without_a_peak_and_mfu_with_one(store_root, tmp_path):
    from mixc.train.metrics import default_peak_flops

    assert default_peak_flops(torch.device("cpu")) is None
    plain = recipe(store_root, "plain-mfu")
    result = cli("train", plain, "--shards", store_root[1], "--out", tmp_path / "cpu", "--max-steps", "2", "--threads", "1")
    assert result.exit_code == 0 and "step  2/11 | one | loss" in result.output and "MFU" not in result.output
    assert [r["mfu"] for r in metrics(tmp_path / "cpu")] == [None, None]
    result = cli("train", plain, "--shards", store_root[1], "--out", tmp_path / "given", "--max-steps", "2",
                 "--threads", "1", "--peak-tflops", "1000")
    assert result.exit_code == 0 and "MFU 0.0%" in result.output
    assert all(0 < r["mfu"] < 1 for r in metrics(tmp_path / "given"))
    assert cli("train", plain, "--shards", store_root[1], "--out", tmp_path / "x", "--peak-tflops", "0").exit_code == 2
