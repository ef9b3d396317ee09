"""The trainer's GPU path, as far as a CPU can check it: the rank split of a step, the
mixed-precision policy, the MFU formula, meta-device construction, and bench/gpu_check.py."""

from __future__ import annotations

import contextlib

import pytest
import torch
from test_loader import curriculum as loader_curriculum  # noqa: F401  (test_loader's fixture: plan and streams of a, b, c)
from test_train import recipe_store as train_store  # noqa: F401  (test_train's fixture, as train_store)

from mixc.loader import CurriculumLoader, CurriculumStream
from mixc.train.dist import World
from mixc.train.loop import micro_step
from mixc.train.model import SmolLM3, get_config


def _step_gradient(model, plan, streams, step: int, world_size: int, micro_batch_size: int) -> dict[str, torch.Tensor]:
    """The gradient DDP would apply at `step` with `world_size` simulated ranks: each rank's
    micro-steps as the trainer runs them, summed over ranks and averaged (DDP's all-reduce)."""
    model.zero_grad(set_to_none=True)
    phase = plan.phases[CurriculumStream(plan, streams).locate(step)[0]]
    global_tokens = phase.samples_per_step * phase.sequence_length
    for rank in range(world_size):
        loader = CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size, rank, world_size)
        loader.seek_step(step)
        it = iter(loader)
        for m in range(loader.batches.micro_per_step[loader.batches.position(loader.next_index)[1]]):
            batch = next(it)
            assert (batch["step"], batch["micro"]) == (step, m)
            micro_step(model, batch, global_tokens, World(rank=rank, world_size=world_size), contextlib.nullcontext())
    return {n: p.grad / world_size for n, p in model.named_parameters()}


@pytest.mark.parametrize("step", [0, 12])  # 16 samples per step (5/5/6 over 3 ranks), 4 (1/1/2 + a padding row)
def test_three_unequal_ranks_give_the_single_rank_gradient(loader_curriculum, step):  # noqa: F811
    plan, streams = loader_curriculum
    torch.manual_seed(0)
    model = SmolLM3(get_config("smollm3-test", vocab_size=72000))
    one = _step_gradient(model, plan, streams, step, 1, 4)
    three = _step_gradient(model, plan, streams, step, 3, 1)
    for name, g in one.items():
        torch.testing.assert_close(three[name], g, rtol=1e-4, atol=1e-7, msg=name)


def test_precision_policy_is_the_same_on_one_and_many_ranks():
    from mixc.train.dist import precision_policy

    for fsdp in (False, True):
        policies = {precision_policy("cuda", fsdp, n) for n in (1, 2, 8, 192)}
        assert len(policies) == 1
        (policy,) = policies
        assert policy.compute_dtype == torch.bfloat16
        assert policy.param_dtype == torch.float32 and policy.reduce_dtype == torch.float32
    assert precision_policy("cuda", True, 1).method == "fsdp2"
    assert precision_policy("cuda", False, 1).method == "autocast"
    mp = precision_policy("cuda", True, 1).mp_policy()
    assert (mp.param_dtype, mp.reduce_dtype) == (torch.bfloat16, torch.float32)
    assert precision_policy("cpu", True, 4).compute_dtype == torch.float32


@pytest.mark.parametrize("world_size", [1, 4])
def test_fsdp_shards_with_the_bf16_policy_on_one_gpu_as_on_many(monkeypatch, world_size):
    """On one GPU --fsdp used to return the bare model and train in fp32; now every layer and
    the root get fully_shard with the same MixedPrecisionPolicy on 1 and N ranks (recorded on a
    meta-device model: there is no GPU here)."""
    import torch.distributed.fsdp as fsdp_module

    from mixc.train import dist

    calls = []
    monkeypatch.setattr(fsdp_module, "fully_shard", lambda module, mp_policy: calls.append((module, mp_policy)))
    with torch.device("meta"):
        model = SmolLM3(get_config("smollm3-test"))
    world = World(rank=0, world_size=world_size, device=torch.device("cuda", 0))
    assert dist.wrap(model, world, fsdp=True) is model
    assert [m for m, _ in calls] == [*model.layers, model]
    assert {(p.param_dtype, p.reduce_dtype) for _, p in calls} == {(torch.bfloat16, torch.float32)}


@pytest.mark.filterwarnings("ignore:CUDA is not available")
def test_autocast_is_on_for_cuda_without_fsdp_and_off_on_cpu():
    from mixc.train.dist import precision_policy

    ctx = precision_policy("cuda", False, 1).autocast("cuda")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
    assert not isinstance(precision_policy("cuda", True, 1).autocast("cuda"), torch.autocast)
    assert not isinstance(precision_policy("cpu", False, 1).autocast("cpu"), torch.autocast)


def test_mfu_counts_6n_plus_causal_attention_per_document_by_hand():
    from mixc.train.metrics import attention_context, attention_flops_per_token, mfu

    # Two rows of 8: documents of 3 and 5 tokens, then one of 8: 3*4/2 + 5*6/2 + 8*9/2 = 6 + 15 + 36 keys.
    cu = [0, 3, 8, 16]
    assert attention_context(cu) == 57
    # L = 2 layers, d = 8: 12 * 2 * 8 * (57 / 16) = 684 FLOPs per token; 6N = 600 for N = 100.
    per_token = attention_flops_per_token(2, 8, 57 / 16)
    assert per_token == 684.0
    assert mfu(100, 1000.0, (600 + 684) * 1000 * 2, per_token) == 0.5
    assert mfu(100, 1000.0, None, per_token) is None


def test_mfu_for_the_3b_at_4k_and_64k_and_the_device_table():
    from mixc.train.metrics import attention_flops_per_token, peak_flops_of

    n = 3_075_098_624
    # Unpacked rows of length T attend (T + 1) / 2 keys on average.
    at_4k = attention_flops_per_token(36, 2048, (4096 + 1) / 2)
    assert at_4k == 12 * 36 * 2048 * 2048.5
    assert 0.09 < at_4k / (6 * n) < 0.11  # ~10% on top of 6N at 4k
    assert attention_flops_per_token(36, 2048, (65536 + 1) / 2) > 1.5 * 6 * n  # dominant at 64k
    assert peak_flops_of("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops_of("NVIDIA H100 PCIe") == 756e12
    assert peak_flops_of("NVIDIA H200") == 989e12
    assert peak_flops_of("NVIDIA A100-SXM4-80GB") == 312e12
    assert peak_flops_of("NVIDIA A10") == 125e12
    assert peak_flops_of("Some Future GPU") is None


def test_gpu_check_smoke_runs_every_stage_on_cpu(tmp_path):
    """bench/gpu_check.py --smoke: every stage runs (tiny shapes, CPU), bf16 results agree with
    fp32 within the tolerances the GPU run uses, and each line lands in $OUT/gpu_check.jsonl."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, OUT=str(tmp_path), OMP_NUM_THREADS="1", PYTHONPATH=str(root))
    done = subprocess.run([sys.executable, "bench/gpu_check.py", "--smoke"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = [json.loads(line) for line in done.stdout.splitlines()]
    assert [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()] == printed
    assert [r["stage"] for r in printed][0] == "env" and printed[-1]["stage"] == "done"
    assert not [r for r in printed if "error" in r]
    correctness = [r for r in printed if r["stage"] == "correctness" and "skipped" not in r]
    assert len(correctness) == 4 and all(r["ok"] for r in correctness)
    # varlen is flash (CUDA) only: on CPU each of its runs is recorded as skipped, with the reason
    skipped = [r for r in printed if r["stage"] != "env" and "skipped" in r and r.get("attention") == "varlen"]
    assert len(skipped) == 4 and all(r["skipped"] == "varlen: it needs a CUDA GPU (flash attention), not cpu"
                                     for r in skipped)
    assert {r["matmul"] for r in printed if "matmul" in r} == {"bfloat16", "float32"}
    for stage in ("3b-4k", "3b-32k"):
        measured = [r for r in printed if r["stage"] == stage and "skipped" not in r]
        assert measured and all(r["fits"] and r["tokens_per_s"] > 0 for r in measured)
    assert any(r["activation_checkpointing"] for r in printed if r["stage"] == "3b-32k" and "fits" in r)
    # the compiled-layers run trains too, with its compilation timed apart from its steps
    assert [r["attention"] for r in printed if r.get("compile") and r.get("fits")] == ["sdpa"]


@pytest.mark.slow
def test_three_gloo_processes_with_unequal_shares_train_as_one_process(train_store, tmp_path):  # noqa: F811
    """`torchrun --nproc_per_node=3 mixc train` on steps of 8 and 4 samples (2/3/3 and 1/1/2
    per rank, one padding micro-batch): the losses and weights of one process."""
    from test_train import torchrun_matches_one_process

    meta = torchrun_matches_one_process(train_store, tmp_path, 3, micro_batch_size=1, timeout=300)
    assert meta["world_size"] == 3 and meta["micro_batch_size"] == [1, 1, 1]
