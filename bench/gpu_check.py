"""One short GPU run that answers "does the trainer's GPU path work, and how fast".

    python bench/gpu_check.py            # on a GPU machine, from the repo root (< 8 minutes on an H100/H200)
    python bench/gpu_check.py --smoke    # every stage on CPU with tiny shapes (tests/test_gpu_path.py)

Prints one JSON line per result and appends it to $OUT/gpu_check.jsonl (OUT defaults to the
current directory) as it goes, so a run cut short still leaves what it measured. Stages, each
time-boxed, each recording its own error instead of stopping the run:

  env          torch, CUDA, device name and memory, the peak FLOP/s assumed for MFU, and
               measured matmul rates (bf16, fp32/TF32);
  correctness  a tiny config on the device (bf16: autocast, and FSDP2 on one rank) against the
               CPU in fp32, unpacked and packed rows, SDPA, flex and varlen attention: loss
               relative error and the worst gradient cosine, checked against bf16 tolerances;
  3b-4k        the 3B at sequence 4096 under FSDP2 on one rank in bf16: tokens/s, MFU, peak
               memory; unpacked (SDPA) and packed rows (varlen, flex, and SDPA's dense mask),
               then packed with the default attention and compiled layers (`train --compile`;
               its first step, the compilation, is recorded apart);
  3b-32k       the 3B at 32768 with activation checkpointing: fits or not, tokens/s.

varlen (torch's flash varlen kernel) runs on CUDA sm80+ only: elsewhere its runs are recorded
as skipped, with the reason.

Every step is the trainer's own (mixc.train.loop.micro_step, gradient clipping, fused AdamW),
on random tokens: the data path is not what is measured here (bench/bench_loader.py is).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from mixc.loader import batch_from, to_torch  # noqa: E402
from mixc.memory import GPU_MEMORY, ModelShape, estimate  # noqa: E402
from mixc.train import dist  # noqa: E402
from mixc.train.loop import micro_step  # noqa: E402
from mixc.train.metrics import attention_context, attention_flops_per_token, mfu, peak_flops_of  # noqa: E402
from mixc.train.model import SmolLM3, get_config, resolve_attention, varlen_unavailable  # noqa: E402

TOTAL_BUDGET_S = 450  # the whole run stays under 8 minutes with compile time to spare
BF16_LOSS_RTOL = 2e-2
BF16_GRAD_COSINE = 0.99
NO_CPU_FLEX_BACKWARD = "flex_attention has no backward on CPU; forward checked only"


class Reporter:
    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "gpu_check.jsonl"
        self.started = time.perf_counter()

    def emit(self, record: dict) -> dict:
        record = {"elapsed_s": round(time.perf_counter() - self.started, 2), **record}
        line = json.dumps(record, default=str)
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        return record

    def left(self) -> float:
        return TOTAL_BUDGET_S - (time.perf_counter() - self.started)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(rng: np.random.Generator, rows: int, seq: int, vocab: int, packed: bool, mean_doc: int = 600) -> dict:
    """Random tokens; packed rows hold documents of exponential lengths (mean `mean_doc`)."""
    tokens = rng.integers(1, vocab, size=(rows, seq + 1), dtype=np.int64)
    starts = []
    for _ in range(rows):
        if packed:
            lengths = np.maximum(1, rng.exponential(mean_doc, size=seq // 8 + 2).astype(np.int64))
            cuts = np.concatenate([[0], np.cumsum(lengths)])
            starts.append(cuts[cuts < seq + 1])
        else:
            starts.append(np.zeros(1, np.int64))
    return to_torch(batch_from(tokens, starts, np.zeros(rows, np.int32)))


def stage_env(rep: Reporter, device: torch.device, smoke: bool) -> None:
    info = {"stage": "env", "torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "cuda": torch.version.cuda, "threads": torch.get_num_threads()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                    peak_flops=peak_flops_of(props.name), flex_attention_compiled=True,
                    varlen=varlen_unavailable(device, torch.bfloat16, 128) or "available",
                    auto_attention=resolve_attention("auto", device, torch.bfloat16, 128))
    rep.emit(info)
    n = 256 if smoke else 8192
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        _sync(device)
        reps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < (0.2 if smoke else 3.0) or reps < 3:
            a @ b
            reps += 1
            if device.type == "cuda" and reps % 10 == 0:
                _sync(device)
        _sync(device)
        seconds = time.perf_counter() - t0
        rep.emit({"stage": "env", "matmul": str(dtype).replace("torch.", ""), "n": n,
                  "tflops": round(2 * n**3 * reps / seconds / 1e12, 3),
                  "tf32": torch.backends.cuda.matmul.allow_tf32 if dtype == torch.float32 else None})


def _loss_and_grads(model, engine, batch, world, autocast) -> tuple[float, dict[str, torch.Tensor] | None]:
    if model.attention == "flex" and world.device.type == "cpu":
        with torch.no_grad(), autocast:
            _, loss = engine(batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"],
                             return_logits=False)
        return float(loss), None
    model.zero_grad(set_to_none=True)
    share = micro_step(engine, batch, batch["input_ids"].numel(), world, autocast)
    grads = {}
    for name, p in model.named_parameters():
        g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
        grads[name] = g.detach().float().cpu()
    return float(share), grads


def stage_correctness(rep: Reporter, device: torch.device, world: dist.World, smoke: bool) -> None:
    config = get_config("smollm3-test")
    rng = np.random.default_rng(0)
    cpu = dist.World()
    fsdp_options = (False, True) if device.type == "cuda" else (False,)
    for packed in (False, True):
        batch = random_batch(rng, 2, 128 if smoke else 512, config.vocab_size, packed, mean_doc=40 if smoke else 120)
        reference = SmolLM3.build(config, "cpu", seed=7)
        ref_loss, ref_grads = _loss_and_grads(reference, reference, batch, cpu, torch.autocast("cpu", enabled=False))
        for attention in ("sdpa", "flex", "varlen"):
            for fsdp in fsdp_options:
                name = {"stage": "correctness", "packed": packed, "attention": attention, "fsdp": fsdp}
                unavailable = attention == "varlen" and varlen_unavailable(device, torch.bfloat16, config.head_dim)
                if unavailable:
                    rep.emit({**name, "skipped": f"varlen: {unavailable}"})
                    continue
                try:
                    model = SmolLM3.build(config, device, seed=7, attention=attention)
                    engine = dist.wrap(model, world, fsdp) if fsdp else model
                    # bf16 as the trainer computes on a GPU; the smoke run takes CPU autocast bf16.
                    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if not fsdp else
                                dist.precision_policy(device.type, True, 1).autocast(device.type))
                    loss, grads = _loss_and_grads(model, engine, batch, world if fsdp else dist.World(device=device), autocast)
                    rel = abs(loss - ref_loss) / abs(ref_loss)
                    record = {**name, "loss": loss, "loss_cpu_fp32": ref_loss, "loss_rel_err": rel}
                    if grads is None:
                        rep.emit({**record, "gradients": NO_CPU_FLEX_BACKWARD, "ok": rel < BF16_LOSS_RTOL})
                        continue
                    cosines = {k: float(torch.nn.functional.cosine_similarity(grads[k].flatten(), ref_grads[k].flatten(), dim=0))
                               for k in ref_grads}
                    worst = min(cosines, key=cosines.get)
                    rep.emit({**record, "worst_grad_cosine": cosines[worst], "worst_param": worst,
                              "ok": rel < BF16_LOSS_RTOL and cosines[worst] > BF16_GRAD_COSINE})
                except Exception as exc:  # a stage reports its failure and the run goes on
                    rep.emit({**name, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000]})


def throughput(rep: Reporter, label: dict, config, device: torch.device, world: dist.World, *, seq: int, micro: int,
               packed: bool, attention: str, checkpointing: bool, fsdp: bool, budget_s: float, peak: float | None,
               max_steps: int, compile: bool = False) -> dict:
    rng = np.random.default_rng(1)
    record = {**label, "sequence_length": seq, "micro_batch_size": micro, "packed": packed, "attention": attention,
              "activation_checkpointing": checkpointing, "fsdp": fsdp, "compile": compile}
    model = optimizer = None
    if attention == "flex" and device.type == "cpu":
        return rep.emit({**record, "skipped": NO_CPU_FLEX_BACKWARD})
    unavailable = attention == "varlen" and varlen_unavailable(device, torch.bfloat16, config.head_dim)
    if unavailable:
        return rep.emit({**record, "skipped": f"varlen: {unavailable}"})
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        model = SmolLM3.build(config, device, seed=0, attention=attention, activation_checkpointing=checkpointing)
        if compile:
            model.compile_blocks()
        engine = dist.wrap(model, world, fsdp) if fsdp else model
        optimizer = model.configure_optimizer(lr=1e-5, weight_decay=0.1)
        autocast = dist.precision_policy(device.type, fsdp, world.world_size).autocast(device.type)
        batch = random_batch(rng, micro, seq, config.vocab_size, packed)
        context = attention_context(batch["cu_seqlens"]) / batch["input_ids"].numel()

        def step() -> None:
            micro_step(engine, batch, batch["input_ids"].numel(), world, autocast)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        t0 = time.perf_counter()
        step()  # compile, allocator warm-up
        _sync(device)
        record["first_step_s"] = round(time.perf_counter() - t0, 3)
        steps, t0 = 0, time.perf_counter()
        while steps < max_steps and (steps < 2 or time.perf_counter() - t0 < budget_s):
            step()
            _sync(device)
            steps += 1
        seconds = time.perf_counter() - t0
        tps = steps * micro * seq / seconds
        params = model.num_parameters()
        record.update(fits=True, steps=steps, step_s=round(seconds / steps, 4), tokens_per_s=round(tps, 1),
                      mean_attention_context=round(context, 1),
                      mfu=mfu(params, tps, peak, attention_flops_per_token(config.num_hidden_layers, config.hidden_size, context)))
        if device.type == "cuda":
            record["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
        est = estimate(ModelShape.of(config), seq, micro, world.world_size, fsdp=fsdp,
                       activation_checkpointing=checkpointing, compute_bytes=2 if device.type == "cuda" else 4)
        record["estimated_bytes"] = est.total
    except torch.OutOfMemoryError as exc:
        record.update(fits=False, error=f"out of memory: {str(exc)[:300]}")
    except Exception as exc:
        record.update(error=f"{type(exc).__name__}: {exc}"[:2000])
    finally:
        model = optimizer = None  # free the device memory before the next run
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rep.emit(record)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every stage on CPU with tiny shapes")
    parser.add_argument("--out", default=os.environ.get("OUT", "."), help="folder for gpu_check.jsonl (default: $OUT or .)")
    parser.add_argument("--peak-tflops", type=float, help="peak TFLOP/s for MFU (default: the device table)")
    args = parser.parse_args(argv)
    rep = Reporter(Path(args.out))
    smoke = args.smoke
    if not smoke and not torch.cuda.is_available():
        rep.emit({"stage": "env", "error": "no CUDA device; run with --smoke to exercise the stages on CPU"})
        return 1
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    world = dist.World(device=device)
    if not smoke:
        world = dist.setup("cuda", fsdp=True)  # a one-process group: FSDP2 on one GPU, as the trainer does
    peak = args.peak_tflops * 1e12 if args.peak_tflops else (None if smoke else peak_flops_of(torch.cuda.get_device_name(device)))
    try:
        for name, run in (("env", lambda: stage_env(rep, device, smoke)),
                          ("correctness", lambda: stage_correctness(rep, device, world, smoke))):
            try:
                run()
            except Exception as exc:
                rep.emit({"stage": name, "error": f"{type(exc).__name__}: {exc}"[:2000]})
        big = get_config("smollm3-test") if smoke else get_config("smollm3-3b")
        fsdp = not smoke
        seq_short, seq_long = (128, 512) if smoke else (4096, 32768)
        max_steps = 2 if smoke else 20
        device_bytes = GPU_MEMORY["h100"] if smoke else torch.cuda.get_device_properties(device).total_memory
        # The largest micro-batch (up to 4) the estimate says fits at 4k without checkpointing;
        # with it when none does (the whole 3B state, 16 bytes a parameter, is on this one GPU).
        shape = ModelShape.of(big)
        fitting = [(m, ckpt) for ckpt in (False, True) for m in (4, 2, 1)
                   if estimate(shape, seq_short, m, 1, fsdp=fsdp, activation_checkpointing=ckpt).fits(device_bytes)]
        micro, ckpt_short = fitting[0] if fitting else (1, True)
        auto = resolve_attention("auto", device, torch.bfloat16, big.head_dim)
        runs = [("3b-4k", seq_short, micro, False, "sdpa", ckpt_short), ("3b-4k", seq_short, micro, True, "varlen", ckpt_short),
                ("3b-4k", seq_short, micro, True, "flex", ckpt_short), ("3b-4k", seq_short, micro, True, "sdpa", ckpt_short),
                ("3b-4k", seq_short, micro, True, auto, ckpt_short, True),
                ("3b-32k", seq_long, 1, True, "varlen", True), ("3b-32k", seq_long, 1, True, "flex", True),
                ("3b-32k", seq_long, 1, False, "sdpa", True)]
        for i, (stage, seq, mbs, packed, attention, ckpt, *compiled) in enumerate(runs):
            compile = bool(compiled)
            if rep.left() < 20:
                rep.emit({"stage": stage, "skipped": "time budget spent", "sequence_length": seq, "packed": packed})
                continue
            budget = 0.1 if smoke else min(40.0, rep.left() / (len(runs) - i) / 2)
            label = {"stage": stage, "model": "smollm3-test" if smoke else "smollm3-3b"}
            result = throughput(rep, label, big, device, world, seq=seq, micro=mbs, packed=packed, attention=attention,
                                checkpointing=ckpt, fsdp=fsdp, budget_s=budget, peak=peak, max_steps=max_steps,
                                compile=compile)
            if result.get("fits") is False and not ckpt and rep.left() > 60:
                # Out of memory without checkpointing: the same run with it says what does fit.
                throughput(rep, label, big, device, world, seq=seq, micro=mbs, packed=packed, attention=attention,
                           checkpointing=True, fsdp=fsdp, budget_s=budget, peak=peak, max_steps=max_steps, compile=compile)
    finally:
        dist.teardown(world)
    rep.emit({"stage": "done", "total_s": round(time.perf_counter() - rep.started, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
