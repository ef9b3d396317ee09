"""Best-fit packing against concatenation: documents cut, tokens in cut documents, padding, and
the packing set-up time, on a SmolLM3-like document length distribution.

    .venv/bin/python bench/bench_packing.py [--tokens 1e8] [--rounds 3] [--seq 2048 4096 32768 65536] [--store DIR]

Documents: log-normal lengths (median ~600 tokens, sigma 1.0, as bench_loader.py writes),
--tokens in all, in files of 10M tokens. Only the index files are written; the token files are
sparse (packing reads lengths only). Each round packs the source from scratch (no cache) at
every --seq with the default window, and times it; concat's numbers come from the same
lengths. --store DIR also reports a built store's sources (e.g. the demo's shards) at
--seq lengths up to 4096, with the padding over all of its sources.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from mixc.loader import SourceStream
from mixc.packing import DEFAULT_WINDOW, PackedSource, concat_stats
from mixc.store import complete_source_folders
from mixc.streams import folder_stream

FILE_TOKENS = 10_000_000


def write_lengths(folder: Path, tokens: int, rng: np.random.Generator) -> SourceStream:
    folder.mkdir(parents=True, exist_ok=True)
    files, written, k = [], 0, 0
    while written < tokens:
        n = min(FILE_TOKENS, tokens - written)
        lengths = np.maximum(2, rng.lognormal(np.log(600), 1.0, n // 300 + 10).astype(np.int64))
        ends = np.cumsum(lengths)
        ends = ends[ends <= n]
        if ends.size == 0 or ends[-1] < n:
            ends = np.append(ends, n)
        path = folder / f"{k:05d}.ds"
        with open(path, "wb") as f:
            f.truncate(n * 4)  # sparse: packing never reads tokens
        ends.astype("<u8").tofile(f"{path}.index")
        files.append(path)
        written += n
        k += 1
    return SourceStream("bench", files, 4)


def pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def report_row(label: str, seq: int, c, b, seconds: float | None = None) -> None:
    t = f"  set-up {seconds:.2f} s" if seconds is not None else ""
    print(f"{label:>10} {seq:>6}  concat: cut docs {pct(c.cut_documents_fraction)} cut tokens {pct(c.cut_tokens_fraction)}"
          f"  | bestfit: cut docs {pct(b.cut_documents_fraction)} cut tokens {pct(b.cut_tokens_fraction)} "
          f"padding {pct(b.padding_fraction)}{t}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=float, default=1e8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seq", type=int, nargs="+", default=[2048, 4096, 32768, 65536])
    ap.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    ap.add_argument("--store", type=Path, help="also report this shard store's sources (up to seq 4096)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        stream = write_lengths(Path(tmp) / "bench", int(args.tokens), np.random.default_rng(0))
        docs = None
        print(f"{int(args.tokens):,} tokens, log-normal lengths (median ~600), window {args.window}")
        for seq in args.seq:
            times = []
            for _ in range(args.rounds):
                t = time.perf_counter()
                packed = PackedSource(stream, seq, args.window, seed=1, cache=False)
                times.append(time.perf_counter() - t)
            docs = packed.doc_lengths
            report_row("log-normal", seq, concat_stats(docs, seq), packed.stats(), statistics.median(times))
            print(f"{'':>17} set-up median {statistics.median(times):.2f} s, range {min(times):.2f}-{max(times):.2f} s "
                  f"over {args.rounds} rounds; {len(docs):,} documents")
    if args.store:
        streams = [folder_stream(folder) for folder in complete_source_folders(args.store)]
        for seq in [s for s in args.seq if s <= 4096]:
            pad = total = bound = 0
            for s in streams:
                b = PackedSource(s, seq, args.window, seed=1, cache=False).stats()
                pad, total = pad + b.padding, total + b.sample_tokens
                bound += -(-b.tokens // (seq + 1)) * (seq + 1) - b.tokens  # whole samples can hold no less
            print(f"{'store':>10} {seq:>6}  {len(streams)} sources: bestfit padding {pct(pad / total)} of all sample tokens "
                  f"(rounding each source up to whole samples alone: {pct(bound / total)})")


if __name__ == "__main__":
    main()
