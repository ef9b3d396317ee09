"""The trainer: phases in order, LR and RoPE at the right steps, accumulation, exact resume, DDP.

A small store (vocabulary 300) is written with make_store; the model is the named
`smollm3-test` config (vocab 512, hidden 64, 4 layers). Documents are repeated patterns, so
the loss falls fast enough to see in a few steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from loader_fixtures import MIX_ONE, MIX_TWO  # the same two mixes the loader tests blend
from store_fixtures import make_store

from mixc.errors import MixcError
from mixc.plan import lr_at, plan_recipe
from mixc.spec import load_recipe
from mixc.train import checkpoint
from mixc.train.loop import train

RECIPE = """\
name: train-test
tokenizer: test
model: smollm3-test
global_batch_tokens: 256
seed: 11
schedule:
  type: wsd
  peak_lr: 3.0e-3
  warmup_steps: 2
  decay_start_step: 6
  decay_steps: 3
optimizer:
  grad_clip: 1.0
phases:
  - name: one
    stage: 1
    mix: one.yaml
    steps: 4
    sequence_length: 32
    rope_theta: 10000
  - name: two
    stage: 2
    mix: two.yaml
    steps: 4
    sequence_length: 32
    rope_theta: 10000
  - name: long
    run: long
    mix: two.yaml
    steps: 3
    sequence_length: 64
    rope_theta: 100000
    schedule:
      type: cosine
      peak_lr: 1.0e-3
      warmup_steps: 1
"""

def pattern_docs(base: int, n: int, seed: int) -> list[np.ndarray]:
    """Documents that repeat a short motif: easy to learn, so the loss visibly falls."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n):
        motif = base + rng.integers(0, 12, size=rng.integers(3, 6))
        docs.append(np.tile(motif, rng.integers(8, 30)))
    return docs


@pytest.fixture(scope="module")
def recipe_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    (root / "recipe.yaml").write_text(RECIPE)
    (root / "one.yaml").write_text(MIX_ONE)
    (root / "two.yaml").write_text(MIX_TWO)
    docs = {"a": pattern_docs(1, 300, 1), "b": pattern_docs(100, 200, 2), "c": pattern_docs(200, 200, 3)}
    store = make_store(root, "train-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                            "long": {"a": 1, "b": 1, "c": 2}}, docs, vocab_size=300)
    return root / "recipe.yaml", store


def run(recipe_store, out, **kw):
    recipe, store = recipe_store
    kw.setdefault("threads", 1)
    return train(recipe, store, out, log=lambda _m: None, **kw)


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def weights(out) -> dict[str, torch.Tensor]:
    state, _ = checkpoint.load(checkpoint.latest(Path(out) / "checkpoints"))
    return state["model"]


@pytest.fixture(scope="module")
def full_run(recipe_store, tmp_path_factory):
    """One uninterrupted run of the whole curriculum, recording what the model saw at each step."""
    out = tmp_path_factory.mktemp("full")
    seen = []

    def look(info):
        model, batch = info["model"], info["batch"]
        seen.append({"record": info["record"], "inv_freq": model.rotary.inv_freq.clone(), "shape": tuple(batch["input_ids"].shape),
                     "loader_phase": batch["phase"]})

    summary = run(recipe_store, out, on_step=look)
    return out, summary, seen


def test_phases_switch_at_their_first_step_with_sequence_length_rope_base_and_lr(recipe_store, full_run):
    out, summary, seen = full_run
    plan = plan_recipe(load_recipe(recipe_store[0]))
    assert [s["record"]["step"] for s in seen] == list(range(1, 12))
    expected_phase = ["one"] * 4 + ["two"] * 4 + ["long"] * 3
    assert [s["record"]["phase"] for s in seen] == expected_phase
    for s in seen:
        phase = plan.phase(s["record"]["phase"])
        assert s["loader_phase"] == phase.index
        assert s["shape"][1] == phase.sequence_length
        # The model's rotary tables were built with this phase's base.
        head_dim = 64 // 4
        expected = 1.0 / (phase.rope_theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
        assert torch.equal(s["inv_freq"], expected)
        # The LR is the run's schedule at the 1-based step within the run: 'long' restarts at 1.
        run_step = s["record"]["run_step"]
        assert run_step == phase.first_step + s["record"]["step"] - 1 - sum(p.steps for p in plan.phases[:phase.index])
        assert s["record"]["lr"] == pytest.approx(lr_at(phase.schedule, run_step), abs=0)
    assert [s["record"]["run_step"] for s in seen] == [1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3]
    assert seen[0]["record"]["lr"] == pytest.approx(1.5e-3)  # warmup 1/2 of peak
    assert seen[8]["record"]["lr"] == pytest.approx(1.0e-3)  # the long run's own warmup peak


def test_metrics_file_and_summary_describe_every_step(full_run):
    out, summary, seen = full_run
    records = metrics(out)
    assert records == [s["record"] for s in seen]
    assert [r["tokens"] for r in records] == [256 * k for k in range(1, 12)]
    for r in records:
        assert r["tokens_per_s"] > 0 and r["mfu"] is None and r["grad_norm"] > 0 and np.isfinite(r["loss"])
    assert [r["sequence_length"] for r in records] == [32] * 8 + [64] * 3
    assert [r["rope_theta"] for r in records] == [10000] * 8 + [100000] * 3
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert [p["name"] for p in summary["phases"]] == ["one", "two", "long"]
    assert summary["phases"][1]["loss_first"] == records[4]["loss"]
    assert summary["phases"][1]["loss_last"] == records[7]["loss"]
    assert summary["steps"] == 11 and summary["tokens"] == 11 * 256
    # Checkpoints at every phase end (steps 4, 8, 11), keep 3, metadata export can rebuild from.
    dirs = checkpoint.checkpoint_dirs(out / "checkpoints")
    assert [d.name for d in dirs] == ["step-000000004", "step-000000008", "step-000000011"]
    meta = json.loads((dirs[-1] / "meta.json").read_text())
    assert meta["step"] == 11 and meta["phase"] == "long" and meta["phase_complete"]
    assert meta["model_config"]["rope_theta"] == 100000 and meta["model_config"]["vocab_size"] == 512
    assert meta["recipe_name"] == "train-test" and meta["model"] == "smollm3-test"


def test_resume_from_a_checkpoint_is_bit_identical_to_an_uninterrupted_run(recipe_store, full_run, tmp_path):
    full_out, _, _ = full_run
    out = tmp_path / "run"
    run(recipe_store, out, max_steps=6)  # stops mid phase two, checkpointed at step 6
    assert checkpoint.latest(out / "checkpoints").name == "step-000000006"
    # A fresh loop resumes; the loader, optimizer and RNG state all come from the checkpoint.
    summary = run(recipe_store, out, resume=True)
    assert summary["session_steps"] == 5
    final, expected = weights(out), weights(full_out)
    assert final.keys() == expected.keys()
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(full_out)]


def test_training_over_an_existing_run_needs_resume(recipe_store, full_run):
    with pytest.raises(MixcError, match="--resume"):
        run(recipe_store, full_run[0], max_steps=1)


def test_accumulated_gradient_equals_one_big_batch(recipe_store):
    """Step 1 of phase 'one': 8 micro-batches of 1 sequence vs 1 of 8 give the same gradient."""
    from contextlib import nullcontext

    from mixc.loader import CurriculumLoader, CurriculumStream
    from mixc.streams import source_streams
    from mixc.train.dist import World
    from mixc.train.loop import micro_step
    from mixc.train.model import SmolLM3, get_config

    plan = plan_recipe(load_recipe(recipe_store[0]))
    stream = CurriculumStream(plan, source_streams(recipe_store[1], plan))
    grads, losses = [], []
    for mbs in (8, 1):
        torch.manual_seed(0)
        model = SmolLM3(get_config("smollm3-test"))
        micro = [b for b, _ in zip(CurriculumLoader(stream, mbs), range(8 // mbs))]
        assert all(b["step"] == 0 for b in micro)
        losses.append(sum(float(micro_step(model, b, 256, World(), nullcontext())) for b in micro))
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=0)


def test_training_with_accumulation_follows_the_same_losses(recipe_store, tmp_path):
    run(recipe_store, tmp_path / "big", max_steps=5, micro_batch_size=8)
    run(recipe_store, tmp_path / "small", max_steps=5, micro_batch_size=1)
    big, small = metrics(tmp_path / "big"), metrics(tmp_path / "small")
    assert len(big) == len(small) == 5
    for a, b in zip(big, small):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)


def test_loss_falls_on_repeated_patterns(full_run):
    records = metrics(full_run[0])
    first, last = records[0]["loss"], min(r["loss"] for r in records[-4:])
    assert first == pytest.approx(np.log(512), abs=0.15)  # a fresh model is close to uniform
    assert last < first - 0.5


def _env() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED="0")


def torchrun_matches_one_process(recipe_store, tmp_path, nproc: int, micro_batch_size: int, timeout: int) -> dict:
    """`torchrun --nproc_per_node=nproc mixc train` against one process with micro-batches of 4:
    the same losses at every step and the same final weights; returns the run's checkpoint meta."""
    recipe, store = recipe_store
    run(recipe_store, tmp_path / "one", micro_batch_size=4)
    out = tmp_path / f"ranks-{nproc}"
    mixc = Path(sys.executable).with_name("mixc")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(mixc), "train",
           str(recipe), "--shards", str(store), "--out", str(out), "--micro-batch-size", str(micro_batch_size),
           "--threads", "1"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{nproc} process(es) on cpu" in done.stdout
    one, many = metrics(tmp_path / "one"), metrics(out)
    assert [r["step"] for r in many] == list(range(1, 12))
    for a, b in zip(one, many):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
    w1, w2 = weights(tmp_path / "one"), weights(out)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-4
    return json.loads((checkpoint.latest(out / "checkpoints") / "meta.json").read_text())


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(recipe_store, tmp_path):
    """`torchrun --nproc_per_node=2 mixc train` (DDP over gloo): each rank trains 4 of the 8
    sequences of a step; the losses are those of one process training all 8."""
    assert torchrun_matches_one_process(recipe_store, tmp_path, 2, micro_batch_size=4, timeout=120)["world_size"] == 2


KILLABLE = """\
import sys, time
from mixc.train.loop import train
train(sys.argv[1], sys.argv[2], sys.argv[3], threads=1, checkpoint_every=1, keep=2,
      on_step=lambda info: time.sleep(0.25))
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_weights(recipe_store, full_run, tmp_path):
    recipe, store = recipe_store
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", KILLABLE, str(recipe), str(store), str(out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            newest = checkpoint.latest(out / "checkpoints")
            if newest is not None and int(newest.name.split("-")[1]) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    killed_at = int(checkpoint.latest(out / "checkpoints").name.split("-")[1])
    assert 5 <= killed_at < 11
    summary = run(recipe_store, out, resume=True)
    assert summary["session_steps"] == 11 - killed_at
    final, expected = weights(out), weights(full_run[0])
    assert all(torch.equal(final[k], expected[k]) for k in expected)
    assert [r["step"] for r in metrics(out)] == list(range(1, 12))
    assert [r["loss"] for r in metrics(out)] == [r["loss"] for r in metrics(full_run[0])]


def _cli(*args):
    from click.testing import CliRunner

    from mixc.cli import main

    return CliRunner().invoke(main, ["train", *map(str, args)])


def test_cli_trains_and_prints_the_summary(recipe_store, tmp_path):
    recipe, store = recipe_store
    result = _cli(recipe, "--shards", store, "--out", tmp_path / "run", "--max-steps", "2", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert "per rank per step, attention sdpa (auto)\n" in result.output  # --attention auto: SDPA on CPU
    assert "step  2/11 | one | loss" in result.output
    assert "step 2/11, 512 tokens" in result.output
    assert (tmp_path / "run" / "checkpoints" / "step-000000002" / "meta.json").is_file()


@pytest.mark.parametrize("problem", ["missing store", "unbuilt phase", "unknown model", "fsdp on cpu", "varlen on cpu"])
def test_cli_bad_input_is_one_line_and_exit_1(recipe_store, tmp_path, problem):
    recipe, store = recipe_store
    args = []
    if problem == "missing store":
        store, expected = tmp_path / "nowhere", "no shard store here"
    elif problem == "unbuilt phase":
        store = make_store(tmp_path, "train-test", {"one": {"a": 1, "b": 1}}, {"a": pattern_docs(1, 50, 1), "b": pattern_docs(1, 50, 2)},
                           vocab_size=300)
        expected = "phase 'two' of recipe 'train-test' is not built"
    elif problem == "fsdp on cpu":
        args, expected = ["--fsdp"], "--fsdp shards over GPUs"
    elif problem == "varlen on cpu":
        args, expected = ["--attention", "varlen"], "attention 'varlen' cannot run here: it needs a CUDA GPU"
    else:
        changed = tmp_path / "recipe.yaml"
        changed.write_text(RECIPE.replace("model: smollm3-test", "model: gpt-17"))
        for mix in ("one.yaml", "two.yaml"):
            (tmp_path / mix).write_text((recipe.parent / mix).read_text())
        recipe, expected = changed, "unknown model 'gpt-17'"
    result = _cli(recipe, "--shards", store, "--out", tmp_path / "run", *args)
    assert result.exit_code == 1
    assert expected in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    if problem == "varlen on cpu":
        assert not (tmp_path / "run").exists()  # refused before anything is written


@pytest.mark.slow
def test_generate_from_the_hf_export_of_a_trained_run(full_run, tmp_path):
    """The demo's last step: export the run, load it with transformers, continue a prompt."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from mixc.train.export import export_checkpoint
    from mixc.train.generate import generate, tokenizer_file

    vocab = {"<eos>": 0, **{f"w{i}": i for i in range(1, 300)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    export_checkpoint(full_run[0], tmp_path / "hf")
    text = generate(tmp_path / "hf", tmp_path / "tokenizer.json", "w1 w2 w3", max_new_tokens=5)
    assert text.startswith("w1 w2 w3") and len(text.split()) > 3
    assert generate(tmp_path / "hf", tmp_path / "tokenizer.json", "w1 w2 w3", max_new_tokens=5) == text  # greedy
    with pytest.raises(MixcError, match="does not name its tokenizer"):
        tokenizer_file(full_run[0])  # make_store's manifests name no tokenizer file


def test_mask_document_starts_drops_exactly_the_labels_after_eos(recipe_store, tmp_path):
    """The recipe option: labels whose input is EOS (their target opens the next document) do not count."""
    from contextlib import nullcontext

    import torch.nn.functional as F

    from mixc.loader import CurriculumLoader, CurriculumStream
    from mixc.streams import source_streams
    from mixc.train.dist import World
    from mixc.train.loop import micro_step
    from mixc.train.model import SmolLM3, document_start_loss_mask, get_config

    recipe, store = recipe_store
    masked = recipe.parent / "recipe-masked.yaml"
    masked.write_text(RECIPE.replace("seed: 11\n", "seed: 11\nmask_document_starts: true\n"))
    plan = plan_recipe(load_recipe(masked))
    batch = next(iter(CurriculumLoader(CurriculumStream(plan, source_streams(store, plan)), 8)))
    mask = document_start_loss_mask(batch["input_ids"], eos_token_id=0)
    assert mask.logical_not().sum() > 0 and torch.equal(~mask, batch["input_ids"] == 0)
    torch.manual_seed(0)
    model = SmolLM3(get_config("smollm3-test", eos_token_id=0))
    share = float(micro_step(model, batch, int(mask.sum()), World(), nullcontext(), loss_mask=mask))
    with torch.no_grad():
        logits, _ = model(batch["input_ids"], position_ids=batch["position_ids"])
        per_label = F.cross_entropy(logits.flatten(0, 1), batch["labels"].long().flatten(), reduction="none")
    assert share == pytest.approx(float(per_label[mask.flatten()].mean()), rel=1e-5)
    assert abs(share - float(per_label.mean())) > 1e-5  # the unmasked mean is another number
    # A whole run with the option: accumulation still gives the same losses, and they differ from an unmasked run.
    big = train(masked, store, tmp_path / "big", log=lambda _m: None, threads=1, max_steps=2, micro_batch_size=8)
    small = train(masked, store, tmp_path / "small", log=lambda _m: None, threads=1, max_steps=2, micro_batch_size=1)
    assert big and small
    a, b = metrics(tmp_path / "big"), metrics(tmp_path / "small")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], abs=1e-6)
    plain = run(recipe_store, tmp_path / "plain", max_steps=1, micro_batch_size=8)
    assert plain and abs(metrics(tmp_path / "plain")[0]["loss"] - a[0]["loss"]) > 1e-5


def test_metrics_keep_the_history_up_to_the_checkpoint_even_after_a_torn_line(tmp_path):
    from mixc.train.metrics import METRICS_FILE, MetricsLog

    lines = [json.dumps({"step": s, "loss": 1.0 / s}) for s in range(1, 7)]
    (tmp_path / METRICS_FILE).write_text("\n".join(lines) + '\n{"step": 7, "lo')  # killed mid-write
    log = MetricsLog(tmp_path, resume_step=4)  # the checkpoint was at step 4: steps 5-7 are trained again
    assert [r["step"] for r in log.records] == [1, 2, 3, 4]
    log.write({"step": 5, "loss": 0.3, "lr": 0.0, "grad_norm": 0.0, "tokens_per_s": 0.0, "mfu": 0.0,
               "rope_theta": 1.0, "sequence_length": 8})
    log.close()
    assert [json.loads(x)["step"] for x in (tmp_path / METRICS_FILE).read_text().splitlines()] == [1, 2, 3, 4, 5]


def test_resuming_with_an_edited_recipe_warns(recipe_store, tmp_path):
    recipe, store = recipe_store
    run(recipe_store, tmp_path / "run", max_steps=2)
    said: list[str] = []
    train(recipe, store, tmp_path / "run", resume=True, max_steps=3, threads=1, log=said.append)
    assert not [m for m in said if m.startswith("warning")]  # the same recipe: nothing to say
    edited = recipe.parent / "recipe-edited.yaml"
    edited.write_text(RECIPE.replace("peak_lr: 3.0e-3", "peak_lr: 1.0e-3"))
    said.clear()
    train(edited, store, tmp_path / "run", resume=True, max_steps=4, threads=1, log=said.append)
    warned = [m for m in said if m.startswith("warning: resuming with changed settings, applied from step 4 on")]
    assert len(warned) == 1 and "schedule.peak_lr 0.003 -> 0.001" in warned[0], said
    assert [r["step"] for r in metrics(tmp_path / "run")] == [1, 2, 3, 4]
    assert metrics(tmp_path / "run")[-1]["lr"] == pytest.approx(1.0e-3)  # step 4 is past the warmup: the new peak


def test_run_json_keeps_absolute_paths_so_reports_work_from_anywhere(recipe_store, tmp_path, monkeypatch):
    """Given relative paths, run.json still names the recipe and store absolutely: `mixc report RUN`
    and `mixc eval RUN` read them from any working directory."""
    recipe, store = recipe_store
    monkeypatch.chdir(recipe.parent)
    train(recipe.name, os.path.relpath(store), tmp_path / "run", max_steps=1, threads=1, log=lambda _m: None)
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["recipe"] == str(recipe.resolve()) and info["shards"] == str(Path(store).resolve())
