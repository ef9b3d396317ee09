"""Training-step throughput: mixc's SmolLM3 against transformers' SmolLM3ForCausalLM.

Both sides get the same config (hidden 256, 4 layers, 4 heads, 2 KV heads, MLP 768, vocab
8192: ~5.2M parameters), the same weights (mixc's, exported with mixc.train.export), the same
batch (8 x 512 tokens), fp32 and 2 threads. A step is forward + loss + backward + AdamW step
+ zero_grad, each side as its library is normally used:

- mixc: `model(input_ids, position_ids, labels=..., return_logits=False)` as its trainer
  calls it (the loss is computed chunk by chunk without the [B, T, V] logits), AdamW from
  `configure_optimizer` (decay groups, fused kernel);
- transformers: `model(input_ids, position_ids=..., labels=..., use_cache=False)` with its
  default attention (sdpa) and its own shifted-label loss, `torch.optim.AdamW` with defaults.

The sides alternate within one process (the order rotates every round), so machine load hits
both alike; the figure is the median of the per-round ratios of step times. `--compile` adds a
third side, mixc with `compile_blocks()` (what `mixc train --compile` runs): its compilation
(the first steps, until every shape has compiled) is timed and printed separately, then it
takes its turn in every round like the others. `--packed`
also times batches of several documents per row (position_ids restarting at 0; transformers
then builds its document mask from them).

Peak memory is measured separately and honestly: one child process per side builds only that
side and runs a few steps; its peak resident set is
reported (VmHWM, the kernel's resident-set high-water mark of that process) along with the
RSS right after the imports, so the difference is what the model, activations and optimizer
state cost.

    .venv/bin/python bench/bench_train_step.py [--rounds 10] [--packed] [--compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch

from mixc.train.export import export_hf
from mixc.train.model import SmolLM3, get_config

CONFIG = dict(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048)
BATCH, SEQ = 8, 512
LR, BETAS, EPS, WD = 1e-3, (0.9, 0.95), 1e-8, 0.1


def status_mib(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: resident now, VmHWM: resident high-water)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_batch(packed: bool):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, CONFIG["vocab_size"], (BATCH, SEQ + 1), generator=gen)
    position_ids = torch.arange(SEQ).repeat(BATCH, 1)
    if packed:  # 3-4 documents per row at row-dependent offsets
        for row in range(BATCH):
            for start in sorted({97 + 13 * row, 230 + 7 * row, 401 - 5 * row}):
                position_ids[row, start:] -= position_ids[row, start].item()
    return tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous(), position_ids


def build(sides: list[str]):
    torch.manual_seed(0)
    ours = SmolLM3(get_config("smollm3-tiny", **CONFIG)).train()
    built = {}
    if "mixc" in sides:
        built["mixc"] = (ours, ours.configure_optimizer(LR, WD, BETAS, EPS))
    if "mixc-compiled" in sides:
        torch.manual_seed(0)
        compiled = SmolLM3(get_config("smollm3-tiny", **CONFIG)).train().compile_blocks()
        built["mixc-compiled"] = (compiled, compiled.configure_optimizer(LR, WD, BETAS, EPS))
    if "transformers" in sides:
        from transformers import AutoModelForCausalLM

        with tempfile.TemporaryDirectory() as folder:
            export_hf(ours, ours.config, folder)
            theirs = AutoModelForCausalLM.from_pretrained(folder).train()
        built["transformers"] = (theirs, torch.optim.AdamW(theirs.parameters(), lr=LR, betas=BETAS, eps=EPS, weight_decay=WD))
    return built


def step(side: str, model, optimizer, batch, packed: bool) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one training step."""
    input_ids, labels, position_ids = batch
    start, cpu_start = time.perf_counter(), time.process_time()
    if side.startswith("mixc"):
        _, loss = model(input_ids, position_ids=position_ids if packed else None, labels=labels, return_logits=False)
    else:
        # transformers shifts labels itself: pass the inputs, it predicts input_ids[t + 1] at t.
        loss = model(input_ids=input_ids, position_ids=position_ids if packed else None,
                     labels=input_ids, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start, time.process_time() - cpu_start


def check_same_function(built, batch) -> float:
    input_ids, _, position_ids = batch
    (ours, _), (theirs, _) = built["mixc"], built["transformers"]
    with torch.no_grad():
        a = ours(input_ids[:2], position_ids=position_ids[:2])[0]
        b = theirs(input_ids=input_ids[:2], position_ids=position_ids[:2], use_cache=False).logits
    return (a - b).abs().max().item()


def memory_child(side: str, steps: int, packed: bool) -> None:
    torch.set_num_threads(2)
    if side == "transformers":
        import transformers  # noqa: F401  (import cost belongs to the baseline)
    baseline = status_mib("VmRSS")
    built = build([side])
    batch = make_batch(packed)
    model, optimizer = built[side]
    for _ in range(steps):
        step(side, model, optimizer, batch, packed)
    # VmHWM, not getrusage's ru_maxrss: Linux carries the forking parent's high-water mark
    # across exec into ru_maxrss, so a child of a big parent would report the parent's peak.
    peak = status_mib("VmHWM")
    print(json.dumps({"side": side, "baseline_mib": baseline, "peak_mib": peak}))


def measure_memory(side: str, packed: bool) -> dict:
    args = [sys.executable, __file__, "--memory-child", side, "--steps", "3"] + (["--packed"] if packed else [])
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def time_sides(rounds: int, packed: bool, compile: bool) -> None:
    torch.set_num_threads(2)
    sides = ["mixc", "transformers"] + (["mixc-compiled"] if compile else [])
    built = build(sides)
    batch = make_batch(packed)
    label = "packed (3-4 documents per row)" if packed else "plain causal (no document boundaries)"
    print(f"\n== {label}: batch {BATCH} x {SEQ}, fp32, 2 threads; max |logit diff| = {check_same_function(built, batch):.2e}")
    for side in ("mixc", "transformers"):  # warm up allocators and kernels
        step(side, *built[side], batch, packed)
    if compile:  # compilation: the first two steps (forward + backward graphs), timed on their own
        took = sum(step("mixc-compiled", *built["mixc-compiled"], batch, packed)[0] for _ in range(2))
        print(f"compilation (first 2 compiled steps): {took:.1f} s")
    ratios, cpu_ratios = {s: [] for s in sides if s != "transformers"}, {s: [] for s in sides if s != "transformers"}
    times = {side: [] for side in sides}
    tokens = BATCH * SEQ
    for r in range(rounds):
        order = sides[r % len(sides):] + sides[:r % len(sides)]  # rotated: each side takes each turn
        took = {side: step(side, *built[side], batch, packed) for side in order}
        for side in took:
            times[side].append(took[side][0])
        for side in ratios:
            ratios[side].append(took["transformers"][0] / took[side][0])
            cpu_ratios[side].append(took["transformers"][1] / took[side][1])
        print(f"round {r + 1:2d}: " + "   ".join(f"{side} {tokens / took[side][0]:7.0f} tok/s" for side in sides) + "   speedup "
              + ", ".join(f"{side} {ratios[side][-1]:.2f}x" for side in ratios))
    med = {side: statistics.median(t) for side, t in times.items()}
    print("median tokens/s: " + ", ".join(f"{side} {tokens / med[side]:.0f}" for side in sides))
    for side in ratios:
        print(f"median speedup of {side} over transformers (of per-round wall-time ratios): "
              f"{statistics.median(ratios[side]):.2f}x; of CPU-time ratios: {statistics.median(cpu_ratios[side]):.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--packed", action="store_true", help="also time packed multi-document batches")
    parser.add_argument("--compile", action="store_true", help="also time mixc with compiled layers (mixc train --compile)")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--memory-child", choices=["mixc", "transformers"], help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.steps, args.packed)
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} -> 2 threads")
    time_sides(args.rounds, packed=False, compile=args.compile)
    if args.packed:
        time_sides(args.rounds, packed=True, compile=args.compile)
    if not args.no_memory:
        print("\n== peak memory: one child process per side, 3 plain steps; VmHWM (RSS high-water mark)")
        for side in ("mixc", "transformers"):
            m = measure_memory(side, packed=False)
            print(f"{side:12s}: peak {m['peak_mib']:6.0f} MiB  (after imports {m['baseline_mib']:5.0f} MiB, "
                  f"model + training {m['peak_mib'] - m['baseline_mib']:5.0f} MiB)")


if __name__ == "__main__":
    main()
