"""Materialized blend baselines (one entry per sample), for bench/bench_blend.py and the tests.

Not library code: mixc's blend (mixc/blend.py) never materializes an index. These are the
schemes it is measured against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def greedy_index(weights: Sequence[float], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Megatron's greedy interleave (nanotron's too): sample i goes to the source with the
    largest w * max(i, 1) - count, first on ties. Returns (source int16, rank int64), 10 bytes a sample.

    The reference for the C port bench_blend.py times: a loop per sample in Python is too slow
    for the benchmark's sizes."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    source = np.empty(n, np.int16)
    rank = np.empty(n, np.int64)
    count = np.zeros(len(w))
    buf = np.empty(len(w))
    for i in range(n):
        np.multiply(w, max(i, 1), out=buf)
        buf -= count
        s = int(buf.argmax())
        source[i] = s
        rank[i] = count[s]
        count[s] += 1
    return source, rank


def shuffled_sources(weights: Sequence[float], n: int, seed: int = 0) -> np.ndarray:
    """Nanoset-like: each source's share of n (largest remainder, first source on ties), the whole
    sequence of source ids shuffled."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    share = np.floor(w * n).astype(np.int64)
    share[np.argsort(-(w * n - share), kind="stable")[: n - share.sum()]] += 1
    source = np.repeat(np.arange(len(w), dtype=np.int16), share)
    np.random.default_rng(seed).shuffle(source)
    return source


def shuffled_index(weights: Sequence[float], n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """shuffled_sources with each sample's rank among its source's samples: (source int16, rank int64)."""
    source = shuffled_sources(weights, n, seed)
    rank = np.empty(n, np.int64)
    for s in range(len(weights)):
        at = np.flatnonzero(source == s)
        rank[at] = np.arange(at.size)
    return source, rank
