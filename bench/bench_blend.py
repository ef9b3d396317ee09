"""The blend at full SmolLM3 scale, simulated from source sizes alone (no data needed).

    .venv/bin/python bench/bench_blend.py [--max-samples 1e8] [--repeats 5]

Prints, for the three pretraining phases of recipes/smollm3-3b.yaml (stable-1, stable-2,
decay: 4.72M steps x 576 = 2.7e9 samples):

- set-up of mixc's blend for the whole curriculum (the three blends, their start offsets and
  epoch accounting): seconds and peak memory (tracemalloc);
- lookups per second, vectorized (contiguous ranges of 1e6, as a loader reads, and scattered);
- the baseline: a Megatron/nanotron-style greedy materialized index (one source id and one
  rank per sample, 10 bytes; the same O(samples x sources) loop Megatron runs in C++, here
  compiled with gcc at run time), built at 1e6, 1e7 and 1e8 samples and extrapolated to the
  2.7e9-sample run; mixc looking up the same samples, alternating sides, median of ratios;
- fidelity on the 56 decay weights: the largest deviation of any source from weight x n over
  every prefix, and from weight x 576 within any global batch, for mixc, the greedy index and
  a whole-epoch shuffled index (nanotron's Nanoset).

Source sizes come from the catalog's `tokens`; sources without one get a made-up size (1.5x
what the curriculum asks of them, so under one epoch) and are listed.
"""

from __future__ import annotations

import argparse
import ctypes
import shutil
import statistics
import subprocess
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from baselines import greedy_index, shuffled_sources  # bench/ is the script's folder

from mixc.blend import Blend
from mixc.project import load_plan

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smollm3-3b.yaml"
BATCH = 576

GREEDY_C = r"""
#include <stdint.h>
#include <stdlib.h>
/* The rule of Megatron's build_blending_indices (helpers.cpp), written out: sample i goes to
   the source furthest behind weight * max(i, 1), first source on ties. One int16 source and
   one int64 rank per sample. */
void greedy(const double *w, int k, int64_t n, int16_t *source, int64_t *rank) {
    int64_t *count = calloc(k, sizeof(int64_t));
    for (int64_t i = 0; i < n; i++) {
        double at = i > 1 ? (double)i : 1.0;
        double best = -1e300; int pick = 0;
        for (int s = 0; s < k; s++) {
            double behind = w[s] * at - (double)count[s];
            if (behind > best) { best = behind; pick = s; }
        }
        source[i] = (int16_t)pick; rank[i] = count[pick]; count[pick]++;
    }
    free(count);
}
"""


def compile_greedy(workdir: Path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        return None
    src, lib = workdir / "greedy.c", workdir / "greedy.so"
    src.write_text(GREEDY_C)
    subprocess.run([cc, "-O2", "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    fn = ctypes.CDLL(str(lib)).greedy
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    return fn


def greedy_build(fn, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.ascontiguousarray(w, dtype=np.float64)
    source, rank = np.empty(n, np.int16), np.empty(n, np.int64)
    fn(w.ctypes.data, len(w), n, source.ctypes.data, rank.ctypes.data)
    return source, rank


def curriculum():
    """(phase plans of the main run, samples per source, the names of made-up sizes)."""
    plan = load_plan([str(RECIPE)])
    phases = [p for p in plan.phases if p.run == plan.phases[0].run]
    demand: dict[str, int] = {}
    for p in phases:
        for s in p.sources:
            demand[s.name] = demand.get(s.name, 0) + s.tokens
    sizes, made_up = {}, []
    for p in phases:
        for s in p.sources:
            if s.name in sizes:
                continue
            tokens = s.source.tokens
            if not tokens:
                tokens = max(int(1.5 * demand[s.name]), 10**9)
                made_up.append(s.name)
            sizes[s.name] = tokens // (p.sequence_length + 1)
    return phases, sizes, made_up


def setup_blends(phases, sizes, seed=1234):
    """What a loader does at start-up: one blend per phase, offsets from the phases before."""
    consumed: dict[str, int] = {}
    blends, epochs = [], []
    for p in phases:
        names = [s.name for s in p.sources]
        blend = Blend([s.share for s in p.sources], [sizes[n] for n in names], seed=seed,
                      offsets=[consumed.get(n, 0) for n in names], names=names, batch_size=p.samples_per_step)
        for e in blend.epochs(p.samples):
            consumed[e.name] = e.offset + e.draws
        blends.append(blend)
        epochs.append(blend.epochs(p.samples))
    return blends, epochs


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def fidelity(source_chunks, w: np.ndarray, batch: int = BATCH) -> tuple[float, float]:
    """Largest |count_s(n) - w_s n| over every prefix n, and |count_s(batch) - w_s B| over every
    aligned batch, streamed over chunks (whole batches) of the source sequence."""
    k = len(w)
    count = np.zeros(k, np.int64)
    start = 0
    prefix = per_batch = 0.0
    for src in source_chunks:
        src = np.asarray(src, np.int64)
        order = np.argsort(src, kind="stable")
        bounds = np.searchsorted(src[order], np.arange(k + 1))
        for s in range(k):
            pos = order[bounds[s]:bounds[s + 1]]  # ascending positions of source s in the chunk
            j = np.arange(pos.size)
            # Just after each of its samples a source is furthest ahead; just before, furthest behind.
            ahead = count[s] + j + 1 - w[s] * (start + pos + 1)
            behind = count[s] + j - w[s] * (start + pos)
            end = count[s] + pos.size - w[s] * (start + src.size)
            prefix = max(prefix, float(np.abs(ahead).max(initial=0)), float(np.abs(behind).max(initial=0)), abs(end))
            count[s] += pos.size
        nb = src.size // batch
        per = np.bincount((np.arange(nb * batch) // batch) * k + src[: nb * batch], minlength=nb * k).reshape(nb, k)
        per_batch = max(per_batch, float(np.abs(per - w * batch).max()))
        start += src.size
    return prefix, per_batch


def blend_chunks(blend: Blend, n: int, chunk: int = BATCH * 2000):
    for a in range(0, n, chunk):
        yield blend.sources(np.arange(a, min(n, a + chunk)))


def array_chunks(array: np.ndarray, n: int, chunk: int = BATCH * 2000):
    for a in range(0, n, chunk):
        yield array[a:min(n, a + chunk)]


def mixc_sources(blend: Blend, n: int) -> None:
    for _ in blend_chunks(blend, n, 10**6):
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-samples", type=float, default=1e8, help="largest greedy index / fidelity run")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    max_n = int(args.max_samples)

    phases, sizes, made_up = curriculum()
    total = sum(p.samples for p in phases)
    print(f"SmolLM3 pretraining: {', '.join(f'{p.name} {p.samples:,}' for p in phases)} samples "
          f"= {total:,} ({sum(p.steps for p in phases):,} steps x {BATCH})")
    print(f"{len(sizes)} sources; {len(made_up)} without a catalog size got a made-up one: {', '.join(made_up)}")

    # ---- set-up: time and peak memory for the whole curriculum
    setup_blends(phases, sizes)  # warm imports and caches
    times = [timed(setup_blends, phases, sizes)[0] for _ in range(args.repeats)]
    tracemalloc.start()
    blends, epochs = setup_blends(phases, sizes)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"\nmixc set-up, 3 phases: median {statistics.median(times) * 1e3:.1f} ms, peak memory {peak / 2**20:.2f} MiB "
          f"(targets: < 1 s, < 200 MB)")
    worst = max((e for es in epochs for e in es), key=lambda e: e.cumulative_epochs)
    print(f"  most repeated source at the end of {phases[-1].name}: {worst.name} {worst.cumulative_epochs:.2f} epochs")

    # ---- lookups per second
    stable1 = blends[0]
    rng = np.random.default_rng(0)
    contiguous, contiguous_cpu, scattered = [], [], []
    for _ in range(args.repeats):
        a = int(rng.integers(0, phases[0].samples - 10**6))
        cpu = time.process_time()
        dt, _ = timed(stable1.lookup, np.arange(a, a + 10**6))
        contiguous.append(10**6 / dt)
        contiguous_cpu.append(10**6 / (time.process_time() - cpu))
        idx = rng.integers(0, phases[0].samples, 10**4)
        dt, _ = timed(stable1.lookup, idx)
        scattered.append(10**4 / dt)
    print(f"\nmixc lookups (source, sample, epoch), stable-1: contiguous 1e6 at a time {statistics.median(contiguous):,.0f}/s "
          f"wall, {statistics.median(contiguous_cpu):,.0f}/s of CPU time (target >= 1e6/s); "
          f"scattered 1e4 random indices {statistics.median(scattered):,.0f}/s (each costs its whole batch)")

    # ---- the greedy materialized index vs mixc, same samples
    decay = phases[-1]
    w_decay = np.array([s.share for s in decay.sources])
    w1 = np.array([s.share for s in phases[0].sources])
    with tempfile.TemporaryDirectory() as tmp:
        greedy = compile_greedy(Path(tmp))
        if greedy is None:
            print("\nno C compiler: greedy baseline skipped")
            return
        # The C port must be the rule it claims to be: equal to the Python reference.
        for check in (w1, w_decay):
            c_src, c_rank = greedy_build(greedy, check, 20_000)
            py_src, py_rank = greedy_index(check, 20_000)
            if not (np.array_equal(c_src, py_src) and np.array_equal(c_rank, py_rank)):
                raise SystemExit("the C greedy index differs from baselines.greedy_index")
        print("\ngreedy index (C) vs mixc lookup of the same samples (stable-1 weights):")
        print(f"  {'samples':>12} {'greedy s':>9} {'greedy bytes':>13} {'mixc s':>8} {'greedy/mixc (median)':>21}")
        per_sample = None
        for n in (10**6, 10**7, 10**8):
            if n > max_n:
                break
            reps = args.repeats if n <= 10**6 else 1
            ratios, g_times, m_times = [], [], []
            for r in range(reps):  # alternate sides
                sides = [("g", greedy_build, (greedy, w1, n)), ("m", mixc_sources, (stable1, n))]
                if r % 2:
                    sides.reverse()
                got = {}
                for name, fn, fn_args in sides:
                    got[name] = timed(fn, *fn_args)[0]
                g_times.append(got["g"])
                m_times.append(got["m"])
                ratios.append(got["g"] / got["m"])
            g, m = statistics.median(g_times), statistics.median(m_times)
            per_sample = g / n
            print(f"  {n:>12,} {g:>9.2f} {10 * n:>13,} {m:>8.2f} {statistics.median(ratios):>21.2f}")
        run = total
        print(f"  extrapolated to the {run:,}-sample run: greedy {per_sample * run:,.0f} s and {10 * run / 1e9:.1f} GB on every rank "
              f"at every launch; mixc set-up {statistics.median(times) * 1e3:.1f} ms, {peak / 2**20:.2f} MiB")

        # ---- fidelity on the 56 decay weights
        print(f"\nfidelity, decay weights ({len(w_decay)} sources), batch {BATCH}: largest deviation from weight x n "
              "(targets: prefix <= 1.5, batch <= 1.2)")
        print(f"  {'samples':>12} {'mixc prefix':>12} {'mixc batch':>11} {'greedy prefix':>14} {'greedy batch':>13} "
              f"{'shuffled prefix':>16} {'shuffled batch':>15}")
        decay_blend = blends[-1]
        for n in (10**6, 10**7, 10**8):
            if n > max_n:
                break
            n = n // BATCH * BATCH
            mixc = fidelity(blend_chunks(decay_blend, n), w_decay)
            g_src, g_rank = greedy_build(greedy, w_decay, n)
            del g_rank
            gfid = fidelity(array_chunks(g_src, n), w_decay)
            del g_src
            shuffled = shuffled_sources(w_decay, n, seed=0)
            sfid = fidelity(array_chunks(shuffled, n), w_decay)
            del shuffled
            print(f"  {n:>12,} {mixc[0]:>12.3f} {mixc[1]:>11.3f} {gfid[0]:>14.3f} {gfid[1]:>13.3f} {sfid[0]:>16.1f} {sfid[1]:>15.1f}")


if __name__ == "__main__":
    main()
