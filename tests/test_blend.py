"""The blend's guarantees, as properties over random weights and sizes (hypothesis).

Bounds are the issue's requirements: every prefix of n samples holds each source within 1.5
samples of weight x n; every aligned global batch of B samples within 1.2 of weight x B.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.baselines import greedy_index, shuffled_index
from mixc.blend import Blend, BlendError, permutation, source_key

PREFIX_BOUND = 1.5
BATCH_BOUND = 1.2
EXHAUSTIVE = 3000  # every prefix up to this length is checked sample by sample

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Weights: 2-60 sources mixing ordinary, tiny (down to 1e-15 of the total) and zero weights.
_weight = st.one_of(st.floats(1e-3, 1.0), st.floats(1e-15, 1e-5), st.just(0.0))
weights_st = st.lists(_weight, min_size=2, max_size=60).filter(lambda w: sum(w) > 0)
batch_st = st.one_of(st.just(576), st.integers(1, 700), st.integers(1025, 3000))  # > 1024: bisection inside batches


def _normalized(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum()


def _stream_counts(blend: Blend, n: int) -> np.ndarray:
    """[n+1, sources] counts of every prefix, from the per-sample lookup itself."""
    src = blend.sources(np.arange(n))
    onehot = np.zeros((n + 1, len(blend.shares)), np.int64)
    onehot[np.arange(1, n + 1), src] = 1
    return np.cumsum(onehot, axis=0)


@SETTINGS
@given(weights=weights_st, batch=batch_st, seed=st.integers(0, 2**32))
def test_every_prefix_holds_each_source_within_its_bound(weights, batch, seed):
    w = _normalized(weights)
    blend = Blend(weights, np.full(len(w), 10_000), seed=seed, batch_size=batch)
    counts = _stream_counts(blend, EXHAUSTIVE)
    ideal = np.arange(EXHAUSTIVE + 1)[:, None] * w[None, :]
    assert np.abs(counts - ideal).max() <= PREFIX_BOUND
    # Zero-weight sources never appear.
    assert counts[-1][w == 0].sum() == 0
    # The closed-form counts agree with the lookup everywhere we looked.
    for n in (0, 1, batch, EXHAUSTIVE // 3, EXHAUSTIVE):
        n = min(n, EXHAUSTIVE)
        assert np.array_equal(blend.counts(n), counts[n])


@settings(SETTINGS, max_examples=20)
@given(weights=weights_st, batch=batch_st, points=st.lists(st.integers(0, 2**41), min_size=1, max_size=5))
def test_prefix_bound_holds_far_into_a_long_phase(weights, batch, points):
    w = _normalized(weights)
    blend = Blend(weights, np.full(len(w), 1000), batch_size=batch)
    for n in points:
        counts = blend.counts(n)
        assert counts.sum() == n
        assert np.abs(counts - w * n).max() <= PREFIX_BOUND
    # The lookup agrees with the closed form at a far position.
    n = points[0]
    src = blend.sources(np.arange(n, n + 64))
    after = blend.counts(n) + np.bincount(src, minlength=len(w))
    assert np.array_equal(after, blend.counts(n + 64))


@SETTINGS
@given(weights=weights_st, batch=batch_st, seed=st.integers(0, 2**32))
def test_every_global_batch_carries_the_mix(weights, batch, seed):
    w = _normalized(weights)
    blend = Blend(weights, np.full(len(w), 1000), seed=seed, batch_size=batch)
    n_batches = max(2, EXHAUSTIVE // batch)
    counts = _stream_counts(blend, n_batches * batch)[::batch]
    per_batch = np.diff(counts, axis=0)
    assert np.abs(per_batch - w * batch).max() <= BATCH_BOUND
    # And batches far into the phase (via the closed-form counts at their edges).
    rng = np.random.default_rng(seed)
    for b in rng.integers(0, 2**40 // batch, size=4):
        inside = blend.counts(int(b + 1) * batch) - blend.counts(int(b) * batch)
        assert np.abs(inside - w * batch).max() <= BATCH_BOUND


def test_smollm3_sized_batches_of_576_with_56_sources():
    # 56 sources with a long tail of small weights, as SmolLM3's decay mix has.
    rng = np.random.default_rng(3)
    w = _normalized(np.concatenate([rng.random(6) * 0.2, rng.random(50) * 0.004]))
    blend = Blend(w, np.full(56, 10**6), batch_size=576)
    counts = _stream_counts(blend, 576 * 40)
    assert np.abs(np.diff(counts[::576], axis=0) - w * 576).max() <= BATCH_BOUND
    assert np.abs(counts - np.arange(576 * 40 + 1)[:, None] * w).max() <= PREFIX_BOUND


@SETTINGS
@given(weights=weights_st, sizes_seed=st.integers(0, 2**32), seed=st.integers(0, 2**32), batch=batch_st)
def test_same_inputs_give_the_same_map(weights, sizes_seed, seed, batch):
    sizes = np.random.default_rng(sizes_seed).integers(1, 500, len(weights))
    idx = np.random.default_rng(seed).integers(0, 2**40, 300)
    a = Blend(weights, sizes, seed=seed, batch_size=batch).lookup(idx)
    b = Blend(list(weights), sizes.tolist(), seed=seed, batch_size=batch).lookup(idx)
    for x, y in zip(a, b):
        assert np.array_equal(x, y)


def test_another_seed_reorders_samples_but_keeps_the_interleave():
    a = Blend([0.5, 0.3, 0.2], [1000, 1000, 1000], seed=1, batch_size=16)
    b = Blend([0.5, 0.3, 0.2], [1000, 1000, 1000], seed=2, batch_size=16)
    idx = np.arange(2000)
    assert np.array_equal(a.sources(idx), b.sources(idx))
    assert not np.array_equal(a.lookup(idx)[1], b.lookup(idx)[1])


@SETTINGS
@given(size=st.integers(1, 5000), seed=st.integers(0, 2**64 - 1), name=st.text(min_size=1, max_size=12),
       epoch=st.integers(0, 10**6))
def test_each_epoch_is_a_permutation_and_epochs_differ(size, seed, name, epoch):
    key = source_key(name)
    first = permutation(seed, key, epoch, size, np.arange(size))
    assert np.array_equal(np.sort(first), np.arange(size))
    second = permutation(seed, key, epoch + 1, size, np.arange(size))
    assert np.array_equal(np.sort(second), np.arange(size))
    if size >= 20:  # two equal orders of 20+ items would be a 1 in 20! accident
        assert not np.array_equal(first, second)


@SETTINGS
@given(weights=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=8), sizes=st.lists(st.integers(1, 300), min_size=8, max_size=8),
       n=st.integers(1, 4000), seed=st.integers(0, 1000))
def test_a_small_source_wraps_into_counted_epochs_never_out_of_range(weights, sizes, n, seed):
    sizes = np.asarray(sizes[: len(weights)])
    blend = Blend(weights, sizes, seed=seed, batch_size=8)
    source, sample, epoch = blend.lookup(np.arange(n))
    assert (sample >= 0).all() and (sample < sizes[source]).all()
    report = blend.epochs(n)
    for s, r in enumerate(report):
        mine = source == s
        assert r.draws == mine.sum()
        # Epoch e of source s: draws [e*N, (e+1)*N) in stream order, each sample once.
        eps = epoch[mine]
        assert np.array_equal(eps, np.arange(mine.sum()) // sizes[s])
        for e in np.unique(eps):
            seen = sample[mine][eps == e]
            assert len(np.unique(seen)) == len(seen)
            if (eps > e).any():  # a finished epoch visited every sample
                assert len(seen) == sizes[s]
        assert r.wraps == (int(eps.max()) if mine.any() else 0)
        assert r.cumulative_epochs == pytest.approx(mine.sum() / sizes[s])


@SETTINGS
@given(weights=st.lists(st.floats(0.01, 1.0), min_size=2, max_size=6), n1=st.integers(1, 2000), n2=st.integers(1, 2000),
       seed=st.integers(0, 1000))
def test_a_later_phase_continues_where_the_earlier_stopped(weights, n1, n2, seed):
    k = len(weights)
    sizes = np.full(k, 700)
    names = [f"src{i}" for i in range(k)]
    first = Blend(weights, sizes, seed=seed, names=names, batch_size=4)
    # The later phase blends the same sources with other weights, from where phase 1 stopped.
    second = Blend(weights[::-1], sizes, seed=seed, names=names, batch_size=8, offsets=first.counts(n1))
    s1, x1, e1 = first.lookup(np.arange(n1))
    s2, x2, e2 = second.lookup(np.arange(n2))
    for s in range(k):
        seq = np.concatenate([x1[s1 == s], x2[s2 == s]])
        epochs = np.concatenate([e1[s1 == s], e2[s2 == s]])
        draws = np.arange(len(seq))
        # The two phases together read the source as one stream of per-epoch permutations...
        expected = permutation(seed, source_key(names[s]), draws // 700, 700, draws % 700) if len(seq) else seq
        assert np.array_equal(seq, expected)
        assert np.array_equal(epochs, draws // 700)
        # ...so nothing is re-read while unseen samples remain.
        head = seq[:700]
        assert len(np.unique(head)) == len(head)


@settings(SETTINGS, max_examples=15)
@given(weights=weights_st, batch=batch_st, seed=st.integers(0, 2**32))
def test_vectorized_lookup_equals_one_index_at_a_time(weights, batch, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 10**6, len(weights))
    blend = Blend(weights, sizes, seed=seed, batch_size=batch)
    # Unsorted, repeated, scattered and contiguous indices in one call, in a 2-D shape.
    idx = np.concatenate([rng.integers(0, 2**42, 8), np.arange(5000, 5009), [7, 7, 0, 9]]).reshape(3, -1)
    together = blend.lookup(idx)
    for pos in np.ndindex(idx.shape):
        alone = blend.lookup(np.array([idx[pos]]))
        for t, a in zip(together, alone):
            assert t[pos] == a[0]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(BlendError, match="'b' has share 0.5 but no samples"):
        Blend([0.5, 0.5], [10, 0], names=["a", "b"])
    with pytest.raises(BlendError, match="shares must be finite"):
        Blend([1.0, -1.0], [10, 10])
    with pytest.raises(BlendError, match="all shares are zero"):
        Blend([0.0, 0.0], [10, 10])
    with pytest.raises(BlendError, match="index outside"):
        Blend([1.0], [10]).lookup(np.array([-1]))
    # A zero-weight source may have no samples at all.
    assert Blend([1.0, 0.0], [10, 0]).counts(100).tolist() == [100, 0]


def test_greedy_and_shuffled_baselines_match_the_mix_totals():
    w = [0.6, 0.3, 0.1]
    src, rank = greedy_index(w, 1000)
    assert np.bincount(src).tolist() == [600, 300, 100]
    assert all(np.array_equal(rank[src == s], np.arange((src == s).sum())) for s in range(3))
    src, rank = shuffled_index(w, 1000, seed=0)
    assert np.bincount(src).tolist() == [600, 300, 100]


@pytest.mark.parametrize("k, batch, uniform", [(3, 7, True), (3, 7, False), (41, 576, False), (56, 576, False),
                                               (8, 576, True), (5, 2048, False)])
def test_ordering_one_batch_alone_equals_ordering_many_together(k, batch, uniform, monkeypatch):
    """A lookup inside one batch takes a scalar path, one across many batches the vectorized
    one; both must give the same order bit for bit, ties included (fresh blends: no shared cache)."""
    import mixc.blend

    scalar_calls = []
    fill_one = mixc.blend._fill_one
    monkeypatch.setattr(mixc.blend, "_fill_one", lambda *a: scalar_calls.append(1) or fill_one(*a))
    rng = np.random.default_rng(k)
    weights = [1.0 / k] * k if uniform else rng.dirichlet(np.full(k, 0.4)).tolist()
    sizes = rng.integers(1, 10**6, k).tolist()
    starts = rng.integers(0, 10**9, 6) // batch * batch
    many = Blend(weights, sizes, seed=3, batch_size=batch).lookup((starts[:, None] + np.arange(batch)).ravel())
    for b, start in enumerate(starts):
        one = Blend(weights, sizes, seed=3, batch_size=batch).lookup(start + np.arange(batch))
        for x, y in zip(many, one):
            assert np.array_equal(x[b * batch:(b + 1) * batch], y)
    assert scalar_calls or batch > 1024  # the single-batch lookups did take the scalar path
