"""Build throughput: mixc against raw `encode_batch`, against datatrove, and 2 workers against 1.

Corpus: mixc's sample data for four sources (English web, French web, Python code, math),
written once as jsonl (>= --mb MB, cached in --cache). Tokenizer: the demo sample:bpe-8192
for every side. Threads: one per worker everywhere (RAYON_NUM_THREADS=1; tiktoken 1 thread).

Each round measures, in an order that rotates every round:
  raw       HF `Tokenizer.encode_batch` (EOS post-processor, batches of 1,000) over the
            documents already in memory: the floor of any tokenizer-bound build
  mixc-1    `mixc build` end to end, 1 worker (reads jsonl, encodes, writes shards, manifests)
  datatrove JsonlReader + DocumentTokenizer (shuffle off, batch 1,000), 1 worker per source
  mixc-2    `mixc build`, 2 workers x 2 tasks per source
and prints per-round ratios and their medians (throughput ratio = inverse time ratio).
mixc uses its tiktoken fast path where that is exact for the tokenizer (the demo BPE qualifies;
its build also re-encodes one document in 256 with HF as a cross-check); pass --no-fast to
measure the HF path.

    .venv/bin/python bench/bench_build.py [--mb 110] [--rounds 3] [--no-fast]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ["RAYON_NUM_THREADS"] = "1"

from mixc.sample import sample_documents  # noqa: E402
from mixc.shards.tokenizer import resolve_tokenizer  # noqa: E402
from mixc.spec import Source  # noqa: E402

SOURCES = [("web-eng", "web", "eng_Latn", None), ("web-fra", "web", "fra_Latn", None),
           ("code-py", "code", "eng_Latn", "Python"), ("math", "math", "eng_Latn", None)]


def make_corpus(root: Path, megabytes: int) -> list[Path]:
    """jsonl files of sample documents, about megabytes/len(SOURCES) MB per source."""
    folders = []
    for name, category, language, pl in SOURCES:
        folder = root / "data" / name
        folders.append(folder)
        done = folder / "done"
        if done.exists():
            continue
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        source = Source(name=name, category=category, language=language, programming_language=pl, path="sample://bench")
        target, size, part, index = megabytes * 1e6 / len(SOURCES), 0, 0, 0
        while size < target:
            with open(folder / f"part-{part:03d}.jsonl", "w", encoding="utf-8") as f:
                for doc in sample_documents(source, seed=part, documents=2000):
                    line = json.dumps({"id": f"{name}-{index}", "text": doc["text"]}, ensure_ascii=False)
                    f.write(line + "\n")
                    size += len(line.encode())
                    index += 1
            part += 1
        done.write_text(str(size))
    return folders


def write_recipe(root: Path, folders: list[Path]) -> Path:
    import yaml

    catalog = {"sources": {f.name: {"category": "web", "format": "jsonl", "path": str(f)} for f in folders}}
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    (root / "mix.yaml").write_text(yaml.safe_dump({"catalog": "catalog.yaml", "sources": {f.name: 1 / len(folders) for f in folders}}))
    recipe = {"name": "bench", "tokenizer": "sample:bpe-8192", "model": "m", "global_batch_tokens": 4096, "seed": 0,
              "schedule": {"type": "constant", "peak_lr": 1e-3},
              "phases": [{"name": "all", "stage": 1, "mix": "mix.yaml", "steps": 10, "sequence_length": 256, "rope_theta": 1e4}]}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def load_texts(folders: list[Path]) -> list[str]:
    texts = []
    for folder in folders:
        for path in sorted(folder.glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                texts.extend(json.loads(line)["text"] for line in f)
    return texts


def run_raw(tokenizer, texts: list[str]) -> float:
    start = time.perf_counter()
    for i in range(0, len(texts), 1000):
        tokenizer.encode_batch(texts[i:i + 1000])
    return time.perf_counter() - start


def run_mixc(recipe: Path, out: Path, workers: int, fast: bool) -> float:
    from mixc.shards.run import build

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    build(recipe, stage="1", out=out, workers=workers, tasks=workers, progress=False, fast_encoder=fast)
    return time.perf_counter() - start


def run_datatrove(folders: list[Path], tokenizer_file: str, eos: str, out: Path) -> float:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer
    from datatrove.utils.logging import logger

    shutil.rmtree(out, ignore_errors=True)
    logger.remove()
    start = time.perf_counter()
    for folder in folders:
        with contextlib.redirect_stderr(io.StringIO()):  # datatrove's per-task log lines
            LocalPipelineExecutor([
                JsonlReader(str(folder), glob_pattern="*.jsonl"),
                DocumentTokenizer(str(out / folder.name), tokenizer_name_or_path=tokenizer_file, eos_token=eos,
                                  shuffle_documents=False, batch_size=1000),
            ], tasks=1, workers=1, logging_dir=str(out / "logs" / folder.name)).run()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=110, help="jsonl size to generate (text alone is ~90%%)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "mixc-bench-build"))
    ap.add_argument("--no-fast", action="store_true")
    args = ap.parse_args()
    root = Path(args.cache)
    folders = make_corpus(root, args.mb)
    recipe = write_recipe(root, folders)
    texts = load_texts(folders)
    megabytes = sum(len(t.encode()) for t in texts) / 1e6
    spec = resolve_tokenizer("sample:bpe-8192")
    tok_file = root / "tokenizer.json"
    tok_file.write_text(spec.definition)
    hf = spec.load()
    print(f"corpus: {len(texts):,} documents, {megabytes:.1f} MB; tokenizer {spec.name}; RAYON_NUM_THREADS=1; "
          f"mixc fast encoder {'off' if args.no_fast else 'on (where exact)'}")
    sides = {
        "raw": lambda: run_raw(hf, texts),
        "mixc-1": lambda: run_mixc(recipe, root / "out-mixc1", 1, not args.no_fast),
        "datatrove": lambda: run_datatrove(folders, str(tok_file), spec.eos_token, root / "out-datatrove"),
        "mixc-2": lambda: run_mixc(recipe, root / "out-mixc2", 2, not args.no_fast),
    }
    names = list(sides)
    ratios = {"mixc-1 / raw encode_batch": [], "mixc-1 / datatrove": [], "mixc 2 workers / 1 worker": []}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        times = {name: sides[name]() for name in order}
        ratios["mixc-1 / raw encode_batch"].append(times["raw"] / times["mixc-1"])
        ratios["mixc-1 / datatrove"].append(times["datatrove"] / times["mixc-1"])
        ratios["mixc 2 workers / 1 worker"].append(times["mixc-1"] / times["mixc-2"])
        print(f"round {r + 1}: " + ", ".join(f"{n} {times[n]:.1f}s ({megabytes / times[n]:.2f} MB/s)" for n in order))
    print("throughput ratios (median of per-round ratios; target):")
    for (name, values), target in zip(ratios.items(), (0.95, 1.2, 1.7)):
        print(f"  {name:28s} {statistics.median(values):5.2f}  (rounds: {', '.join(f'{v:.2f}' for v in values)}; target >= {target})")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak RSS of a worker process (mixc-2 workers, datatrove executors): {peak:.0f} MB")


if __name__ == "__main__":
    main()
