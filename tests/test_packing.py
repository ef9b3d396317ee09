"""Best-fit packing: whole documents, padding masked, cached, resumable, reported."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from loader_fixtures import MIX_ONE, MIX_TWO, RECIPE

from mixc.errors import MixcError
from mixc.loader import IGNORE_INDEX, CurriculumLoader, CurriculumStream, SourceStream, collate
from mixc.packing import PackedSource, best_fit_decreasing, concat_stats
from mixc.plan import plan_recipe
from mixc.spec import load_recipe


def write_docs(folder, lengths_per_file: list[list[int]], first_id: int = 1) -> tuple[list, list[np.ndarray]]:
    """Shards whose every token is a distinct id (token k of the source is first_id + k), so
    where each token lands can be checked exactly."""
    folder.mkdir(parents=True, exist_ok=True)
    files, docs, next_id = [], [], first_id
    for k, lengths in enumerate(lengths_per_file):
        toks = np.arange(next_id, next_id + sum(lengths), dtype=np.uint32)
        next_id += sum(lengths)
        ends = np.cumsum(lengths)
        docs += np.split(toks, ends[:-1]) if lengths else []
        path = folder / f"{k:05d}.ds"
        toks.tofile(path)
        ends.astype("<u8").tofile(f"{path}.index")
        files.append(path)
    return files, docs


def packed_rows(packed: PackedSource) -> list[tuple[np.ndarray, np.ndarray, int]]:
    rows = []
    for i in range(packed.n_samples):
        out = np.empty(packed.sample, np.int64)
        starts, real = packed.read_into(out, i)
        rows.append((out, starts, real))
    return rows


lengths_st = st.lists(st.lists(st.integers(1, 90), min_size=1, max_size=25), min_size=1, max_size=3)


@settings(max_examples=60, deadline=None)
@given(lengths=lengths_st, seq_len=st.integers(1, 64), window=st.integers(1, 40), seed=st.integers(0, 5))
def test_every_token_once_whole_documents_and_only_long_ones_cut(tmp_path_factory, lengths, seq_len, window, seed):
    files, docs = write_docs(tmp_path_factory.mktemp("s"), lengths)
    packed = PackedSource(SourceStream("s", files, 4), seq_len, window, seed, cache=False)
    rows = packed_rows(packed)
    real = np.concatenate([row[:n] for row, _, n in rows])
    # Every token of every document exactly once per epoch (ids are distinct, from 1).
    assert np.array_equal(np.sort(real), np.concatenate(docs))
    pieces = {}
    for row, starts, n in rows:
        assert n <= packed.sample and (row[n:] == 0).all()  # the rest is padding
        bounds = [s for s in starts.tolist() if s < n] + [n]
        assert bounds[0] == 0 and (n == packed.sample or starts[-1] == n)  # padding starts a segment
        for a, b in zip(bounds, bounds[1:]):
            piece = row[a:b]
            # A segment is one contiguous stretch of one document.
            doc = next(i for i, d in enumerate(docs) if d[0] <= piece[0] <= d[-1])
            assert piece[-1] <= docs[doc][-1] and np.array_equal(piece, np.arange(piece[0], piece[0] + len(piece)))
            pieces.setdefault(doc, []).append(piece)
    for doc, parts in pieces.items():
        if len(docs[doc]) <= packed.sample:
            assert len(parts) == 1  # only documents longer than a sample are split
        else:
            assert all(len(p) == packed.sample for p in sorted(parts, key=lambda p: p[0])[:-1])


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 50), min_size=1, max_size=200), window=st.integers(1, 64))
def test_best_fit_never_overfills_and_places_every_item_once(sizes, window):
    lengths = np.array(sizes, np.int64)
    items, counts = best_fit_decreasing(lengths, 50, window, np.arange(len(sizes)))
    assert sorted(items.tolist()) == list(range(len(sizes)))
    fill = np.add.reduceat(lengths[items], np.concatenate([[0], np.cumsum(counts)[:-1]]))
    assert (fill <= 50).all() and counts.min() >= 1
    # Windows are packed apart. No window leaves two bins that one could hold (best fit would
    # have used the first), so each window needs fewer than twice the bins it must have.
    for i in range(0, len(sizes), window):
        in_window = np.isin(items, np.arange(i, i + window))
        per_bin = np.add.reduceat(np.where(in_window, lengths[items], 0), np.concatenate([[0], np.cumsum(counts)[:-1]]))
        used = np.sort(per_bin[per_bin > 0])
        assert len(used) < 2 or used[0] + used[1] > 50


def test_bestfit_padding_is_small_and_concat_cuts_more(tmp_path):
    rng = np.random.default_rng(0)
    lengths = np.maximum(2, rng.lognormal(np.log(600), 1.0, 4000).astype(int)).tolist()
    files, _ = write_docs(tmp_path, [lengths[:2000], lengths[2000:]])
    packed = PackedSource(SourceStream("s", files, 4), 4096, cache=False)
    stats = packed.stats()
    concat = concat_stats(packed.doc_lengths, 4096)
    assert stats.padding_fraction < 0.02
    assert stats.cut_documents == int((np.array(lengths) > 4097).sum())
    assert concat.cut_documents_fraction > 2 * stats.cut_documents_fraction


def test_packing_is_deterministic_cached_in_the_store_and_a_torn_cache_is_replaced(tmp_path):
    store = tmp_path / "store"
    files, _ = write_docs(store / "sources" / "web" / "k0", [[30, 7, 12, 50, 3, 9] * 20])
    stream = SourceStream("web", files, 4)
    a = PackedSource(stream, 63, window=16, seed=3)
    cached = list((store / "packing" / "web").glob("*.npy"))
    assert [p.name for p in cached] == [f"{a.key}.npy"]
    b = PackedSource(stream, 63, window=16, seed=3)
    assert np.array_equal(a.order, b.order) and np.array_equal(a.counts, b.counts)
    cached[0].write_bytes(cached[0].read_bytes()[:-8])  # torn
    c = PackedSource(stream, 63, window=16, seed=3)
    assert np.array_equal(a.order, c.order) and np.load(cached[0]).size == 2 + len(a.order) + len(a.counts)
    other = PackedSource(stream, 63, window=16, seed=4)
    assert other.key != a.key and not np.array_equal(other.order, a.order)
    # A longer context packs the same shards with its own key: nothing else changes.
    longer = PackedSource(stream, 255, window=16, seed=3)
    assert longer.key != a.key and longer.n_tokens == a.n_tokens


# ----------------------------------------------------------------------- through the loader


def packed_recipe(tmp_path, phases: str = "all") -> tuple:
    text = RECIPE
    if phases == "all":
        text = text.replace("    rope_theta: 10000\n", "    rope_theta: 10000\n    packing: {mode: bestfit, window: 64}\n")
    text = text.replace("    rope_theta: 100000\n", "    rope_theta: 100000\n    packing: bestfit\n")
    (tmp_path / "recipe.yaml").write_text(text)
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    plan = plan_recipe(load_recipe(tmp_path / "recipe.yaml"))
    rng = np.random.default_rng(1)
    streams = {}
    for i, (name, n_docs) in enumerate([("a", 400), ("b", 15), ("c", 300)]):
        lengths = rng.integers(2, 160, n_docs).tolist()
        files, _ = write_docs(tmp_path / "store" / "sources" / name / "k", [lengths[::2], lengths[1::2]], 1 + 100_000 * i)
        streams[name] = SourceStream(name, files, 4, vocab_size=1_000_000)
    return plan, streams


def batches(plan, streams, **kw):
    return list(CurriculumLoader(CurriculumStream(plan, streams), as_torch=False, **kw))


def test_the_recipe_option_selects_bestfit_per_phase_and_concat_stays_the_default(tmp_path):
    plan, streams = packed_recipe(tmp_path, phases="long")
    stream = CurriculumStream(plan, streams)
    assert [type(p).__name__ for p in stream.phases] == ["PhaseStream", "PhaseStream", "PackedPhaseStream"]
    assert [p.packing.mode for p in plan.recipe.phases] == ["concat", "concat", "bestfit"]
    # The concat phases read exactly what a recipe without the option reads.
    (tmp_path / "plain.yaml").write_text(RECIPE)
    plain = CurriculumStream(plan_recipe(load_recipe(tmp_path / "plain.yaml")), streams)
    for p in range(2):
        a, b = stream.phases[p].batch_at(range(0, 16)), plain.phases[p].batch_at(range(0, 16))
        assert all(np.array_equal(a[k], b[k]) for k in ("input_ids", "labels", "position_ids", "cu_seqlens"))


def test_padding_is_labelled_ignore_and_is_its_own_attention_segment(tmp_path):
    plan, streams = packed_recipe(tmp_path)
    phase = CurriculumStream(plan, streams).phases[2]
    samples = phase.samples_at(range(0, 32))
    batch = collate(samples)
    assert np.array_equal(batch["labels"], phase.batch_at(range(0, 32))["labels"])
    padded = 0
    for row, s in enumerate(samples):
        real = s.real
        labels, positions = batch["labels"][row], batch["position_ids"][row]
        assert (labels[real - 1:] == IGNORE_INDEX).all() and (labels[:real - 1] != IGNORE_INDEX).all()
        if real < len(s.tokens) - 1:
            padded += 1
            assert positions[real] == 0 and (np.diff(positions[real:]) == 1).all()
    assert padded > 0
    cu = batch["cu_seqlens"]
    L = phase.seq_len
    for row, s in enumerate(samples):
        if s.real <= L:
            assert row * L + s.real in cu.tolist()


def test_padding_never_contributes_to_the_loss_or_to_real_tokens_logits(tmp_path):
    from mixc.loader import to_torch
    from mixc.train.model import SmolLM3, get_config

    plan, streams = packed_recipe(tmp_path)
    for s in streams.values():
        s.vocab_size = None
    phase = CurriculumStream(plan, streams).phases[2]
    samples = phase.samples_at(range(0, 4))
    small = [s.__class__(s.tokens % 500, s.doc_starts, s.source, s.source_sample, s.epoch, s.real) for s in samples]
    torch.manual_seed(0)
    model = SmolLM3(get_config("smollm3-test")).eval()
    batch = to_torch(collate(small))
    real = torch.tensor([s.real for s in small])
    pad = torch.arange(phase.seq_len)[None, :] >= real[:, None]
    assert pad.any()
    logits, loss = model(batch["input_ids"], position_ids=batch["position_ids"], labels=batch["labels"])
    noisy = batch["input_ids"].masked_fill(pad, 7)
    logits2, loss2 = model(noisy, position_ids=batch["position_ids"], labels=batch["labels"])
    assert torch.equal(loss, loss2)
    assert torch.allclose(logits[~pad], logits2[~pad], atol=1e-6)
    _, chunked = model(noisy, position_ids=batch["position_ids"], labels=batch["labels"], return_logits=False)
    assert torch.allclose(chunked, loss, atol=1e-5)


def test_bestfit_resume_is_identical_and_ranks_split_every_step_disjointly(tmp_path):
    plan, streams = packed_recipe(tmp_path)
    full = batches(plan, streams, micro_batch_size=4)
    loader = CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size=4, as_torch=False)
    it = iter(loader)
    head = [next(it) for _ in range(13)]
    state = json.loads(json.dumps(loader.state_dict()))  # as a checkpoint file keeps it
    assert state["packing"]
    resumed = CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size=4, as_torch=False)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full):
        for key in ("input_ids", "labels", "position_ids", "cu_seqlens"):
            assert np.array_equal(a[key], b[key])
    ranks = [batches(plan, streams, micro_batch_size=4, rank=r, world_size=2) for r in range(2)]
    single = batches(plan, streams, micro_batch_size=8)
    for step in range(plan.phases[-1].steps + 12):
        whole = np.concatenate([b["input_ids"] for b in single if b["step"] == step])
        parts = [np.concatenate([b["input_ids"] for b in rb if b["step"] == step]) for rb in ranks]
        assert np.array_equal(np.concatenate(parts), whole)


def test_a_packed_epoch_reads_every_document_token_once(tmp_path):
    plan, streams = packed_recipe(tmp_path)
    phase = CurriculumStream(plan, streams).phases[2]
    b = phase.names.index("b")
    n = phase.packed[b].n_samples
    draws = np.flatnonzero(phase.blend.sources(np.arange(0, 4000)) == b)
    src, idx, epoch = phase.blend.lookup(draws)
    whole = epoch == epoch.min() + 1  # an epoch drawn from its start to its end
    assert whole.sum() == n and sorted(idx[whole].tolist()) == list(range(n))
    real = np.concatenate([s.tokens[:s.real] for s in phase.samples_at(draws[whole])])
    expected = np.concatenate([np.fromfile(f, np.uint32) for f in streams["b"].files]).astype(np.int64)
    assert np.array_equal(np.sort(real), expected)


def test_a_state_from_another_packing_is_refused(tmp_path):
    plan, streams = packed_recipe(tmp_path)
    loader = CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size=4, as_torch=False)
    state = loader.state_dict()
    concat = CurriculumLoader(CurriculumStream(plan, streams, packing={p.name: ("concat", 1) for p in plan.phases}),
                              micro_batch_size=4, as_torch=False)
    with pytest.raises(MixcError, match="packing"):
        concat.load_state_dict(state)
    assert "packing" not in concat.state_dict()


def test_a_bad_packing_option_is_a_located_error(tmp_path):
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    (tmp_path / "r.yaml").write_text(RECIPE.replace("    rope_theta: 100000\n", "    rope_theta: 100000\n    packing: firstfit\n"))
    with pytest.raises(MixcError) as err:
        load_recipe(tmp_path / "r.yaml")
    assert "r.yaml:" in str(err.value) and "packing" in str(err.value)


# ----------------------------------------------------------------------- the report


def test_plan_reports_cut_and_padding_fractions_for_both_modes(tmp_path):
    from click.testing import CliRunner
    from store_fixtures import make_store

    from mixc.cli import main

    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    rng = np.random.default_rng(2)
    docs = {n: [np.arange(1, int(k)) for k in rng.lognormal(np.log(40), 1.0, 300).astype(int) + 2] for n in "abc"}
    store = make_store(tmp_path, "loader-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                                 "long": {"a": 1, "b": 1, "c": 2}}, docs)
    out = {}
    for mode in ("concat", "bestfit"):
        run = CliRunner().invoke(main, ["plan", str(tmp_path / "recipe.yaml"), "--shards", str(store), "--packing", mode,
                                        "--format", "json"])
        assert run.exit_code == 0, run.output
        out[mode] = json.loads(run.output)["packing"]
    for phases in out.values():
        assert [p["phase"] for p in phases] == ["one", "two", "long"]
        for p in phases:
            for key in ("cut_documents_fraction", "cut_tokens_fraction", "padding_fraction"):
                assert 0 <= p[key] <= 1
            assert {s["source"] for s in p["sources"]} <= set("abc")
    assert all(p["padding_fraction"] == 0 for p in out["concat"])
    for p, c in zip(out["bestfit"], out["concat"]):
        assert p["cut_documents_fraction"] < c["cut_documents_fraction"]
        assert 0 < p["padding_fraction"] < 0.2
    # bestfit cuts exactly the documents longer than a sample
    long_docs = sum(int((np.array([len(d) + 1 for d in docs[n]]) > 129).sum()) for n in "abc")
    total = sum(len(docs[n]) for n in "abc")
    assert sum(s["cut_documents"] for s in out["bestfit"][2]["sources"]) == long_docs and long_docs < total
    table = CliRunner().invoke(main, ["plan", str(tmp_path / "recipe.yaml"), "--shards", str(store), "--packing", "bestfit"])
    assert table.exit_code == 0 and "padding" in table.output and "bestfit" in table.output


def test_report_json_carries_the_packing_and_nanotron_export_refuses_a_bestfit_phase(tmp_path):
    from click.testing import CliRunner
    from store_fixtures import make_store

    from mixc.cli import main

    plan, _ = packed_recipe(tmp_path, phases="long")
    rng = np.random.default_rng(3)
    docs = {n: [np.arange(1, int(k)) for k in rng.integers(3, 200, 200)] for n in "abc"}
    store = make_store(tmp_path / "s", "loader-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                                       "long": {"a": 1, "b": 1, "c": 2}}, docs)
    run = CliRunner().invoke(main, ["report", str(tmp_path / "recipe.yaml"), "--shards", str(store), "--format", "json"])
    assert run.exit_code == 0, run.output
    packing = json.loads(run.output)["packing"]
    assert [(p["phase"], p["mode"]) for p in packing] == [("one", "concat"), ("two", "concat"), ("long", "bestfit")]
    exported = CliRunner().invoke(main, ["export", "nanotron", str(tmp_path / "recipe.yaml")])
    assert exported.exit_code == 1 and "phase 'long' packs documents best-fit" in exported.output
    assert CliRunner().invoke(main, ["export", "nanotron", str(tmp_path / "recipe.yaml"), "--run", "main"]).exit_code == 0


def test_worker_processes_yield_the_same_packed_batches(tmp_path):
    plan, streams = packed_recipe(tmp_path)
    plain = batches(plan, streams, micro_batch_size=8)
    workers = batches(plan, streams, micro_batch_size=8, num_workers=2)
    assert len(plain) == len(workers)
    for a, b in zip(plain, workers):
        assert np.array_equal(a["input_ids"], b["input_ids"]) and np.array_equal(a["labels"], b["labels"])


def test_a_packed_phase_trains_the_same_whatever_the_micro_batch_split(tmp_path):
    """The loss is the mean over real labels of the whole global batch: padding is not counted,
    so 8 micro-batches of 1 sample and 1 of 8 give the same losses and gradient norms."""
    from store_fixtures import make_store

    from mixc.train.loop import train

    plan_text = RECIPE.replace("    rope_theta: 10000\n", "    rope_theta: 10000\n    packing: {mode: bestfit, window: 64}\n")
    (tmp_path / "recipe.yaml").write_text(plan_text.replace("model: m\n", "model: smollm3-test\n"))
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    rng = np.random.default_rng(5)
    # Documents of very different lengths: samples carry very different amounts of padding.
    docs = {n: [np.arange(1, int(k)) % 250 + 1 for k in rng.lognormal(np.log(12), 1.0, 300).astype(int) + 2] for n in "abc"}
    store = make_store(tmp_path, "loader-test", {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2},
                                                 "long": {"a": 1, "b": 1, "c": 2}}, docs, vocab_size=300)
    records = {}
    for mbs in (8, 1):
        out = tmp_path / f"run-{mbs}"
        train(tmp_path / "recipe.yaml", store, out, max_steps=3, micro_batch_size=mbs, threads=1, log=lambda _m: None)
        records[mbs] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records[8]) == len(records[1]) == 3
    for a, b in zip(records[8], records[1]):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
