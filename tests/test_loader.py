"""The loader: samples with document boundaries, phase switches, rank split, exact resume.

Shards are written by mixc's shard writer alone (no manifests, no store), so these tests
depend on nothing but the format.
"""

from __future__ import annotations

import numpy as np
import pytest
from loader_fixtures import MIX_ONE, MIX_TWO, RECIPE

from mixc.errors import MixcError
from mixc.loader import CurriculumLoader, CurriculumStream, SourceStream, collate, positions_from_starts
from mixc.plan import plan_recipe
from mixc.shards.writer import ShardWriter
from mixc.spec import load_recipe

EOS = 0


def write_shards(folder, docs_per_file: list[list[np.ndarray]], token_size: int = 2) -> list:
    """Each file: documents end to end, each ending with EOS; index = cumulative ends."""
    files = []
    for k, docs in enumerate(docs_per_file):
        docs = [np.append(d, EOS) for d in docs]
        writer = ShardWriter(folder, token_size=token_size, tokenizer_name="test", shard_tokens=1 << 62, prefix=f"{k:05d}_")
        writer.write(np.concatenate(docs), np.cumsum([len(d) for d in docs]))
        files += [folder / f.path for f in writer.close()]
    return files


def make_source(tmp_path, name: str, n_docs: int, seed: int, files: int = 2, token_size: int = 2, base: int = 1):
    """Documents whose tokens encode (source, document, position) so reads can be checked."""
    rng = np.random.default_rng(seed)
    docs = [base + (np.arange(rng.integers(5, 120)) % 50) + 100 * (d % 300) for d in range(n_docs)]
    per_file = [docs[i::files] for i in range(files)]
    paths = write_shards(tmp_path / name, per_file, token_size)
    return SourceStream(name, paths, token_size), per_file


@pytest.fixture
def curriculum(tmp_path):
    (tmp_path / "recipe.yaml").write_text(RECIPE)
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    plan = plan_recipe(load_recipe(tmp_path / "recipe.yaml"))
    streams = {n: make_source(tmp_path / "shards", n, seed=i, n_docs=n_docs, base=1 + 20000 * i)[0]
               for i, (n, n_docs) in enumerate([("a", 400), ("b", 15), ("c", 300)])}
    return plan, streams


def all_batches(plan, streams, **kw):
    loader = CurriculumLoader(CurriculumStream(plan, streams), as_torch=False, **kw)
    return list(loader)


def test_positions_restart_at_every_document_start():
    pos = positions_from_starts(10, np.array([0, 3, 5, 8]))
    assert pos.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 0, 1]


def test_window_doc_boundaries_match_index_including_a_document_spanning_two_samples(tmp_path):
    docs = [np.arange(1, 8), np.arange(1, 20), np.arange(1, 4)]  # lengths 8, 20, 4 with EOS
    stream = SourceStream("s", write_shards(tmp_path, [docs]), 2)
    seq = 15  # samples of 16 tokens: [0,16) and [16,32)
    t0, s0 = stream.window(0, seq + 1)
    t1, s1 = stream.window(seq + 1, seq + 1)
    assert s0.tolist() == [0, 8]  # doc 2 starts at 8 and runs past the sample end
    assert s1.tolist() == [0, 12]  # its tail restarts at 0; doc 3 starts at 28 - 16
    batch = collate([_sample(t0, s0), _sample(t1, s1)])
    assert batch["position_ids"][0].tolist() == list(range(8)) + list(range(7))
    assert batch["position_ids"][1].tolist() == list(range(12)) + list(range(3))
    # cu_seqlens over the flattened batch of 2 x 15 inputs: starts at 0, 8, 15, 27, end 30.
    assert batch["cu_seqlens"].tolist() == [0, 8, 15, 27, 30]
    assert batch["max_seqlen"] == 12
    # Labels are the next token; the EOS that closes doc 1 is labelled with doc 2's first token.
    assert batch["labels"][0][7] == batch["input_ids"][0][8] == 1
    assert batch["input_ids"][0][7] == EOS


def _sample(tokens, starts):
    from mixc.loader import Sample

    return Sample(tokens, starts, 0, 0, 0)


def test_window_across_shard_files_reads_tokens_in_manifest_order(tmp_path):
    stream, per_file = make_source(tmp_path, "s", n_docs=30, seed=3, files=3)
    flat = np.concatenate([np.append(d, EOS) for docs in per_file for d in docs])
    for start in (0, 57, stream.file_starts[1] - 5, stream.file_starts[2] - 1):
        tokens, starts = stream.window(int(start), 40)
        assert tokens.tolist() == flat[start : start + 40].tolist()
        # Every document start in the window is right after an EOS (or is the window start).
        assert all(s == 0 or tokens[s - 1] == EOS for s in starts)
        eos_at = np.flatnonzero(tokens[:-1] == EOS) + 1
        assert set(eos_at.tolist()) <= set(starts.tolist())


def test_read_past_the_end_is_an_error_not_a_short_read(tmp_path):
    stream, _ = make_source(tmp_path, "s", n_docs=5, seed=1, files=1)
    with pytest.raises(MixcError, match="past its"):
        stream.window(stream.n_tokens - 3, 10)


def test_phase_switches_at_its_first_step_with_its_sequence_length(curriculum):
    plan, streams = curriculum
    batches = all_batches(plan, streams, micro_batch_size=4)
    per_step: dict[int, list] = {}
    for b in batches:
        per_step.setdefault(b["step"], []).append(b)
    assert sorted(per_step) == list(range(15))
    for step, bs in per_step.items():
        phase = 0 if step < 6 else 1 if step < 12 else 2
        assert {b["phase"] for b in bs} == {phase}
        seq = plan.phases[phase].sequence_length
        assert all(b["input_ids"].shape[1] == seq for b in bs)
        assert sum(len(b["input_ids"]) for b in bs) == plan.phases[phase].samples_per_step
    # Phase one has no source c; phase two draws it.
    assert not any((b["sources"] == 2).any() for b in batches if b["phase"] == 0)
    assert any((b["sources"] == 2).any() for b in batches if b["phase"] == 1)


def test_ranks_are_disjoint_and_together_equal_the_single_rank_stream(curriculum):
    plan, streams = curriculum
    single = all_batches(plan, streams, micro_batch_size=2)
    ranks = [all_batches(plan, streams, micro_batch_size=2, rank=r, world_size=2) for r in range(2)]
    for step in range(15):
        whole = np.concatenate([b["input_ids"].reshape(len(b["input_ids"]), -1) for b in single if b["step"] == step])
        parts = [np.concatenate([b["input_ids"] for b in rb if b["step"] == step]) for rb in ranks]
        assert np.array_equal(np.concatenate(parts), whole)
        rows0 = {r.tobytes() for r in parts[0]}
        assert not any(r.tobytes() in rows0 for r in parts[1]) or len(set(map(bytes, whole))) < len(whole)


def test_resume_continues_at_exactly_the_next_sample(curriculum):
    plan, streams = curriculum
    full = all_batches(plan, streams, micro_batch_size=4)
    loader = CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size=4, as_torch=False)
    it = iter(loader)
    head = [next(it) for _ in range(11)]
    state = loader.state_dict()
    resumed = CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size=4, as_torch=False)
    resumed.load_state_dict(state)
    tail = list(resumed)
    assert len(head) + len(tail) == len(full)
    for a, b in zip(head + tail, full):
        assert np.array_equal(a["input_ids"], b["input_ids"]) and a["step"] == b["step"]


def test_worker_processes_yield_the_same_batches(curriculum):
    plan, streams = curriculum
    plain = all_batches(plan, streams, micro_batch_size=4)
    workers = all_batches(plan, streams, micro_batch_size=4, num_workers=2)
    assert len(plain) == len(workers)
    for a, b in zip(plain, workers):
        assert np.array_equal(a["input_ids"], b["input_ids"])
        assert np.array_equal(a["position_ids"], b["position_ids"])


def test_the_whole_stream_is_a_pure_function_of_plan_shards_and_seed(curriculum):
    plan, streams = curriculum
    a = all_batches(plan, streams, micro_batch_size=8)
    b = all_batches(plan, streams, micro_batch_size=8)
    assert all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    other = CurriculumLoader(CurriculumStream(plan, streams, seed=99), micro_batch_size=8, as_torch=False)
    assert not all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, other))


def test_a_source_reused_in_a_later_phase_continues_where_it_stopped(curriculum):
    plan, streams = curriculum
    stream = CurriculumStream(plan, streams)
    one, two = stream.phases[0], stream.phases[1]
    used_in_one = {(s.source_sample, s.epoch) for s in one.samples_at(range(one.samples)) if s.source == 0}
    used_in_two = {(s.source_sample, s.epoch) for s in two.samples_at(range(two.samples)) if s.source == 0}
    n_a = streams["a"].n_samples(32)
    assert len(used_in_one) + len(used_in_two) <= n_a  # a has room for both phases
    assert not used_in_one & used_in_two


def test_a_small_source_wraps_into_its_next_epoch_and_every_sample_is_in_range(curriculum):
    plan, streams = curriculum
    stream = CurriculumStream(plan, streams)
    two = stream.phases[1]
    samples = [s for s in two.samples_at(range(two.samples)) if s.source == 1]
    n_b = streams["b"].n_samples(32)
    assert max(s.epoch for s in samples) >= 1  # b is small: it is read more than once
    assert all(0 <= s.source_sample < n_b for s in samples)
    for epoch in {s.epoch for s in samples}:
        seen = [s.source_sample for s in samples if s.epoch == epoch]
        assert len(seen) == len(set(seen))  # no sample twice within an epoch


def test_missing_source_shards_are_refused(curriculum):
    plan, streams = curriculum
    del streams["c"]
    with pytest.raises(MixcError, match="no shards for source"):
        CurriculumStream(plan, streams)


def test_document_starts_are_exact_and_sorted_in_every_window(tmp_path):
    stream, per_file = make_source(tmp_path, "s", n_docs=60, seed=5, files=4)
    flat = np.concatenate([np.append(d, EOS) for docs in per_file for d in docs])
    file_firsts = set(stream.file_starts[:-1].tolist())
    for start in range(0, stream.n_tokens - 50, 7):
        tokens, starts = stream.window(start, 50)
        expected = sorted({0} | {i for i in range(1, 50) if flat[start + i - 1] == EOS or start + i in file_firsts})
        assert starts.tolist() == expected


def test_a_micro_batch_equals_the_collated_samples(curriculum):
    plan, streams = curriculum
    stream = CurriculumStream(plan, streams)
    for phase in stream.phases:
        for first in range(0, phase.samples - 4, 5):
            fast = phase.batch_at(range(first, first + 4))
            slow = collate(phase.samples_at(range(first, first + 4)))
            assert fast.keys() == slow.keys()
            for key in fast:
                assert np.array_equal(fast[key], slow[key]), key
            positions = np.stack([positions_from_starts(phase.seq_len, s.doc_starts)
                                  for s in phase.samples_at(range(first, first + 4))])
            assert np.array_equal(fast["position_ids"], positions)


def test_three_ranks_share_steps_unequally_and_together_equal_one_rank(curriculum):
    """16 and 4 samples per step over 3 ranks (5/5/6, 1/1/2): every rank runs the same number
    of micro-batches, a short rank pads with a fully ignored copy, and the real rows of the
    ranks in rank order are exactly the single rank's batch."""
    plan, streams = curriculum
    single = all_batches(plan, streams, micro_batch_size=2)
    ranks = [all_batches(plan, streams, micro_batch_size=2, rank=r, world_size=3) for r in range(3)]
    assert len({len(rb) for rb in ranks}) == 1
    for step in range(15):
        whole = np.concatenate([b["input_ids"] for b in single if b["step"] == step])
        real = [b for rb in ranks for b in rb if b["step"] == step and not b["padding"]]
        assert np.array_equal(np.concatenate([b["input_ids"] for b in real]), whole)
        padding = [b for rb in ranks for b in rb if b["step"] == step and b["padding"]]
        assert all((b["labels"] == -100).all() and len(b["input_ids"]) == 1 for b in padding)
    # 4 samples over 3 ranks at 2 per micro-batch: one micro-batch each; 16 over 3: three each.
    assert [b["micro_per_step"] for b in ranks[0] if b["step"] in (0, 12)] == [3, 3, 3, 1]


def test_a_phase_with_fewer_samples_than_ranks_names_the_world_sizes_that_work(curriculum):
    plan, streams = curriculum
    with pytest.raises(MixcError, match=r"phase 'long': 4 samples per step cannot be shared by 5 ranks.*1 to 4 work"):
        CurriculumLoader(CurriculumStream(plan, streams), micro_batch_size=1, world_size=5)


def test_micro_batch_size_per_phase_recipe_over_cli_over_token_default(tmp_path):
    from mixc.loader import micro_batch_sizes

    recipe = RECIPE.replace("    sequence_length: 128", "    sequence_length: 128\n    micro_batch_size: 3")
    (tmp_path / "recipe.yaml").write_text(recipe)
    (tmp_path / "one.yaml").write_text(MIX_ONE)
    (tmp_path / "two.yaml").write_text(MIX_TWO)
    plan = plan_recipe(load_recipe(tmp_path / "recipe.yaml"))
    assert micro_batch_sizes(plan, None, tokens=256) == [8, 8, 3]
    assert micro_batch_sizes(plan, 2) == [2, 2, 3]
