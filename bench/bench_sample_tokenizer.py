"""Sample data generation speed, and the tiktoken fast path against HF `tokenizers`.

1. Generation: MB of text per CPU-second (time.process_time, so other processes' load on a
   shared machine does not count) for each sample category.
2. Encoding: the same documents (the sample:bpe training corpus, ~2 MB) encoded by the HF
   tokenizer (`encode_batch`, EOS post-processor) and by `fast_encoder` (tiktoken over the
   same vocabulary, token-identical, checked here on every document). One thread each
   (RAYON_NUM_THREADS=1, tiktoken num_threads=1). The sides alternate, the order flipping
   every round; the figure is the median of per-round ratios HF time / tiktoken time.

    RAYON_NUM_THREADS=1 .venv/bin/python bench/bench_sample_tokenizer.py [--rounds 7]
"""

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")

from mixc.sample import sample_documents  # noqa: E402
from mixc.shards.fast_encoder import fast_encoder  # noqa: E402
from mixc.shards.tokenizer import resolve_tokenizer, sample_corpus  # noqa: E402
from mixc.spec import Source  # noqa: E402

CATEGORIES = [("fineweb-edu", "web", "eng_Latn", None), ("fw2-cmn", "web", "cmn_Hani", None), ("fw2-rus", "web", "rus_Cyrl", None),
              ("stack-v2-Python", "code", "eng_Latn", "Python"), ("stack-edu", "code", "eng_Latn", None),
              ("finemath", "math", "eng_Latn", None), ("natural_reasoning", "reasoning", "eng_Latn", None)]


def generation() -> None:
    for name, category, language, pl in CATEGORIES:
        source = Source(name=name, category=category, language=language, programming_language=pl, path="sample://bench")
        list(sample_documents(source, seed=0, documents=5))  # lexicons and tables built once
        start = time.process_time()
        size = sum(len(d["text"].encode()) for d in sample_documents(source, seed=0, documents=1000))
        print(f"generate {name:18s} {size / (time.process_time() - start) / 1e6:6.1f} MB per CPU-second")


def encoding(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as cache:
        spec = resolve_tokenizer("sample:bpe-8192", cache_dir=cache)
    texts = list(sample_corpus())
    hf, fast = spec.load(), fast_encoder(spec)
    if fast is None:
        print("fast path: not token-identical, HF only")
        return
    assert fast.encode_batch(texts) == [e.ids for e in hf.encode_batch(texts)], "fast path differs"
    ratios = []
    for r in range(rounds):
        times = {}
        for side in (["hf", "fast"] if r % 2 == 0 else ["fast", "hf"]):
            start = time.perf_counter()
            hf.encode_batch(texts) if side == "hf" else fast.encode_batch(texts)
            times[side] = time.perf_counter() - start
        ratios.append(times["hf"] / times["fast"])
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(f"encode {len(texts)} docs ({mb:.1f} MB), token-identical; tiktoken / HF speed: median {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{x:.2f}' for x in ratios)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    generation()
    encoding(args.rounds)
