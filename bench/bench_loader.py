"""Packed samples per second (seq 4096) from memory-mapped shards: mixc's loader against
datatrove's `DatatroveFolderDataset` random access, on the same shards, in the same run.

    .venv/bin/python bench/bench_loader.py [--tokens 1e8] [--sources 4] [--samples 2000] [--rounds 5] [--bestfit]

Shards: --tokens random uint32 tokens (vocabulary 128,256, as SmolLM3) split over --sources
sources, documents of log-normal lengths (median ~600 tokens) each ending with EOS, written
through mixc's shard writer and store (datatrove's .ds/.ds.index/.ds.metadata, the source and
phase manifests), as a build writes them, in a temp dir.

mixc: a one-phase recipe blending the sources (global batch 64 x 4096), read through
`CurriculumLoader`'s micro-batches (8 samples): input_ids, labels, position_ids and cu_seqlens
as torch tensors. datatrove: one `DatatroveFolderDataset` per source (as nanotron's Nanoset
keeps), items drawn at random (source by weight, then a random sample, as Nanoset's shuffled
index reads them), input_ids and positions (from the EOS id, its fastest positions mode)
stacked into micro-batches of 8. Each round runs both sides (alternating which goes first) on
--samples samples; the ratio is mixc's samples/s over datatrove's; the median is reported.

--bestfit adds a third side: the same recipe with `packing: bestfit` (whole documents, padding
masked), its packing set-up timed (first launch, then from the store's cache), and the ratio
of its samples/s over concat's per round.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mixc.loader import CurriculumStream, MicroBatches, to_torch
from mixc.plan import plan_recipe
from mixc.shards.writer import ShardWriter
from mixc.spec import load_recipe
from mixc.store import finalize_source, token_size_for, write_phase_manifest
from mixc.streams import source_streams

SEQ = 4096
VOCAB = 128_256
EOS = 128_001
MICRO = 8
FILE_TOKENS = 10_000_000  # tokens per .ds file (documents never cross files)
KEY = "bench0000000"  # the source folders' build key


def write_source(store: Path, name: str, tokens: int, rng: np.random.Generator) -> dict:
    """One source written as a build writes it: ShardWriter's shards, then finalize_source's manifest."""
    folder = store / "sources" / name / KEY
    token_size = token_size_for(VOCAB)
    writer = ShardWriter(folder / ".work" / "shards", token_size=token_size, tokenizer_name="bench", shard_tokens=FILE_TOKENS)
    written = 0
    while written < tokens:
        n = min(FILE_TOKENS, tokens - written)  # one shard's worth: documents never cross files
        lengths = np.maximum(2, rng.lognormal(6.4, 1.0, n // 300 + 10).astype(np.int64))
        ends = np.cumsum(lengths)
        ends = ends[ends <= n]
        if ends.size == 0 or ends[-1] < n:
            ends = np.append(ends, n)
        toks = rng.integers(0, VOCAB - 1000, n, dtype=np.uint32)
        toks[ends - 1] = EOS
        writer.write(toks, ends)
        written += n
    return finalize_source(folder, [{"files": [f.to_dict() for f in writer.close()]}], {
        "source": name, "key": KEY, "tokenizer": {"name": "bench", "fingerprint": "0" * 64, "vocab_size": VOCAB,
                                                 "eos_token": "<eos>", "eos_id": EOS},
        "token_size": token_size, "input": {"location": f"bench://{name}", "fingerprint": name}, "options": {}, "seed": 0,
        "mixc_version": "bench"})


def make_store(root: Path, tokens: int, n_sources: int) -> tuple[Path, Path, list[float], list[str]]:
    rng = np.random.default_rng(0)
    store = root / "store"
    names = [f"src{i}" for i in range(n_sources)]
    weights = [float(x) for x in np.linspace(2.0, 1.0, n_sources) / np.linspace(2.0, 1.0, n_sources).sum()]
    manifests = [write_source(store, n, tokens // n_sources, rng) for n in names]
    mix = "weights: relative\nsources:\n" + "".join(f"  {n}: {{weight: {w!r}, category: web, path: bench://{n}}}\n"
                                                      for n, w in zip(names, weights))
    (root / "mix.yaml").write_text(mix)
    steps = 10_000
    (root / "recipe.yaml").write_text(
        "name: bench-loader\ntokenizer: bench\nmodel: m\n"
        f"global_batch_tokens: {SEQ * 64}\nseed: 1\n"
        "schedule: {type: constant, peak_lr: 1.0e-3}\n"
        f"phases:\n  - name: p\n    mix: mix.yaml\n    steps: {steps}\n    sequence_length: {SEQ}\n    rope_theta: 10000\n"
    )
    write_phase_manifest(store, "bench-loader", "p", {
        "stage": None, "tokenizer": manifests[0]["tokenizer"], "token_size": manifests[0]["token_size"], "sequence_length": SEQ,
        "budget_tokens": steps * SEQ * 64,
        "sources": [{"name": n, "share": w, "folder": f"sources/{n}/{KEY}", "tokens": m["tokens"],
                     "documents": m["documents"]} for n, w, m in zip(names, weights, manifests)],
    })
    return store, root / "recipe.yaml", weights, names


def run_mixc(batches: MicroBatches, start: int, samples: int) -> int:
    got = 0
    j = start
    while got < samples:
        batch = to_torch(batches[j])
        got += batch["input_ids"].shape[0]
        j += 1
    return got


def run_datatrove(datasets, weights, samples: int, rng: np.random.Generator) -> int:
    sources = rng.choice(len(datasets), size=samples, p=weights)
    got = 0
    for a in range(0, samples, MICRO):
        items = [datasets[s][int(rng.integers(0, len(datasets[s])))] for s in sources[a:a + MICRO]]
        ids = torch.stack([it["input_ids"] for it in items])
        pos = torch.stack([it["positions"] for it in items])
        got += ids.shape[0] + 0 * int(pos.shape[0])
    return got


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=float, default=1e8)
    ap.add_argument("--sources", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bestfit", action="store_true", help="also time the bestfit packing against concat")
    args = ap.parse_args()

    from datatrove.utils.dataset import DatatroveFolderDataset

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        store, recipe, weights, names = make_store(Path(tmp), int(args.tokens), args.sources)
        print(f"wrote {int(args.tokens):,} uint32 tokens in {args.sources} sources in {time.perf_counter() - t:.1f} s")
        plan = plan_recipe(load_recipe(recipe))
        stream = CurriculumStream(plan, source_streams(store, plan))
        batches = MicroBatches(stream, MICRO)
        packed = None
        if args.bestfit:
            for when in ("first launch", "cached"):
                t = time.perf_counter()
                packed = MicroBatches(CurriculumStream(plan, source_streams(store, plan), packing={"p": ("bestfit", 8192)}), MICRO)
                print(f"bestfit set-up ({when}): {time.perf_counter() - t:.2f} s for {int(args.tokens):,} tokens")
            run_mixc(packed, 0, 256)
        datasets = [DatatroveFolderDataset(str(store / "sources" / n / KEY), SEQ, token_size=token_size_for(VOCAB),
                                           return_positions=True, positions_from_eos_token_id=EOS) for n in names]
        # Warm the page cache and both code paths once.
        run_mixc(batches, 0, 256)
        run_datatrove(datasets, weights, 256, np.random.default_rng(0))

        rng = np.random.default_rng(1)
        ratios, mixc_rates, dt_rates, packed_ratios = [], [], [], []
        start = packed_start = 1000
        for r in range(args.rounds):
            sides = ["mixc", "datatrove"] if r % 2 == 0 else ["datatrove", "mixc"]
            if packed is not None:
                sides.insert(r % 3, "bestfit")
            rate = {}
            for side in sides:
                t = time.perf_counter()
                if side == "mixc":
                    n = run_mixc(batches, start, args.samples)
                    start += n // MICRO + 1
                elif side == "bestfit":
                    n = run_mixc(packed, packed_start, args.samples)
                    packed_start += n // MICRO + 1
                else:
                    n = run_datatrove(datasets, weights, args.samples, rng)
                rate[side] = n / (time.perf_counter() - t)
            mixc_rates.append(rate["mixc"])
            dt_rates.append(rate["datatrove"])
            ratios.append(rate["mixc"] / rate["datatrove"])
            print(f"round {r + 1}: mixc {rate['mixc']:,.0f} samples/s, datatrove {rate['datatrove']:,.0f} samples/s, "
                  f"ratio {ratios[-1]:.2f}")
            if packed is not None:
                packed_ratios.append(rate["bestfit"] / rate["mixc"])
                print(f"         bestfit {rate['bestfit']:,.0f} samples/s, bestfit / concat {packed_ratios[-1]:.2f}")
        print(f"\nmedian: mixc {statistics.median(mixc_rates):,.0f} samples/s ({statistics.median(mixc_rates) * SEQ / 1e6:,.1f}M tokens/s), "
              f"datatrove {statistics.median(dt_rates):,.0f} samples/s; mixc / datatrove = {statistics.median(ratios):.2f} "
              "(median of per-round ratios; target >= 2)")
        if packed_ratios:
            print(f"bestfit / concat = {statistics.median(packed_ratios):.2f} (median; range {min(packed_ratios):.2f}-"
                  f"{max(packed_ratios):.2f}; target >= 0.5)")


if __name__ == "__main__":
    main()
