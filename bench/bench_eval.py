"""Cost of the in-loop held-out evaluation: training with it against training without it.

By default one run per round with the trainer's held-out evaluation (the recipe's `eval_every`,
default interval, and every phase end), each evaluation timed: the figure is the median over
rounds of evaluation seconds / the rest of the run's training seconds. Steps and evaluations
interleave in one run, so a shared machine's load hits both alike. The same ratio in the
process's CPU seconds is printed beside it (less sensitive to how busy the machine is).

`--first-phase-steps N` trains a copy of the recipe cut to its first phase, stretched to N steps
(the same store serves it): a run long enough for the default interval to decide, where the
demo's 212 steps are not (its five phase ends force every evaluation it makes).

`--ab` trains the same steps twice per round instead, with the hook and without it, alternating
(the order flips every round); the figure is the median of (training seconds with) / (without) - 1.
On a loaded machine the load changes between whole runs and swamps that figure.

    .venv/bin/python bench/bench_eval.py --shards demo-out/shards [--recipe recipes/smollm3-tiny.yaml]
        [--steps 200] [--rounds 3] [--first-phase-steps 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

from mixc.train import heldout_eval
from mixc.train.loop import train


def timed_run(recipe: str, shards: str, steps: int | None, evaluate: bool, threads: int) -> tuple[float, int]:
    """(training seconds, evaluations made) of one fresh run."""
    with tempfile.TemporaryDirectory() as out:
        patch = contextlib.nullcontext() if evaluate else \
            mock.patch.object(heldout_eval.HeldoutEval, "create", classmethod(lambda cls, trainer: None))
        with patch:
            summary = train(recipe, shards, out, max_steps=steps, threads=threads, log=lambda _m: None,
                            checkpoint_every=0, keep=1)
        records = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
        return summary["train_seconds"], sum(1 for r in records if "eval" in r)


def in_run(recipe: str, shards: str, steps: int | None, threads: int) -> tuple[float, float, int, float]:
    """One run with evaluation, every evaluation timed: (training seconds without them, their
    seconds, their count, their CPU seconds / the rest of the run's CPU seconds). Steps and
    evaluations interleave, so machine load hits both alike."""
    spent: list[float] = []
    cpu: list[float] = []
    real = heldout_eval.evaluate_model

    def timed(*args, **kwargs):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    with tempfile.TemporaryDirectory() as out, mock.patch.object(heldout_eval, "evaluate_model", timed):
        c0 = time.process_time()
        summary = train(recipe, shards, out, max_steps=steps, threads=threads, log=lambda _m: None,
                        checkpoint_every=0, keep=1)
        run_cpu = time.process_time() - c0
    return summary["train_seconds"] - sum(spent), sum(spent), len(spent), sum(cpu) / (run_cpu - sum(cpu))


def first_phase_recipe(recipe: str, steps: int, folder: str) -> str:
    """The recipe cut to its first phase, `steps` long (the schedule's decay moved to its end)."""
    import yaml

    data = yaml.safe_load(Path(recipe).read_text())
    first = dict(data["phases"][0], steps=steps, mix=str((Path(recipe).parent / data["phases"][0]["mix"]).resolve()))
    data["phases"] = [first]
    schedule = data["schedule"]
    if schedule.get("type") == "wsd":
        schedule["decay_start_step"] = max(schedule.get("warmup_steps", 0) + 1, steps - schedule["decay_steps"] + 1)
    out = Path(folder) / Path(recipe).name
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return str(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smollm3-tiny.yaml")
    ap.add_argument("--shards", required=True)
    ap.add_argument("--steps", type=int, help="train this many steps of the curriculum (default: all)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ab", action="store_true", help="whole runs with and without evaluation, alternating "
                    "(needs a quiet machine: load that changes between runs swamps the figure)")
    ap.add_argument("--first-phase-steps", type=int, help="train the recipe's first phase only, stretched to this many steps")
    args = ap.parse_args()
    folder = tempfile.mkdtemp()
    if args.first_phase_steps:
        args.recipe = first_phase_recipe(args.recipe, args.first_phase_steps, folder)
        print(f"{args.recipe}: the first phase only, {args.first_phase_steps} steps", flush=True)
    if not args.ab:
        ratios, cpu_ratios = [], []
        for r in range(args.rounds):
            train_s, eval_s, n, cpu_ratio = in_run(args.recipe, args.shards, args.steps, args.threads)
            ratios.append(eval_s / train_s)
            cpu_ratios.append(cpu_ratio)
            print(f"round {r + 1}: training {train_s:.1f} s, {n} evaluation(s) {eval_s:.1f} s: "
                  f"overhead {100 * ratios[-1]:.1f}% ({100 * cpu_ratio:.1f}% in CPU seconds)", flush=True)
        print(f"held-out evaluation overhead: median {100 * statistics.median(ratios):.1f}% of training time "
              f"({100 * statistics.median(cpu_ratios):.1f}% of CPU time) over {args.rounds} round(s)", flush=True)
        return
    ratios = []
    for r in range(args.rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        times = {}
        for evaluate in order:
            times[evaluate] = timed_run(args.recipe, args.shards, args.steps, evaluate, args.threads)
        (with_s, evals), (without_s, _) = times[True], times[False]
        ratios.append(with_s / without_s - 1)
        print(f"round {r + 1}: {without_s:.1f} s without, {with_s:.1f} s with {evals} evaluation(s): "
              f"overhead {100 * ratios[-1]:+.1f}%", flush=True)
    print(f"held-out evaluation overhead: median {100 * statistics.median(ratios):+.1f}% of training time "
          f"over {args.rounds} rounds", flush=True)


if __name__ == "__main__":
    main()
