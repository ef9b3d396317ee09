"""The shard writer and the tokenizer step: datatrove's format, byte for byte."""

from __future__ import annotations

import numpy as np
import pytest
from build_fixtures import datatrove_tokenized, texts, train_tokenizer, write_jsonl

from mixc.shards.tokenize import TokenizerRef, TokenizeStep, encode_documents, load_encoder, task_marker
from mixc.shards.writer import ShardWriter
from mixc.store import metadata_text, token_dtype, token_size_for


def _docs_arrays(lengths, eos=0, dtype=np.uint16, seed=0):
    rng = np.random.default_rng(seed)
    docs = [np.append(rng.integers(1, 300, n), eos).astype(dtype) for n in lengths]
    return docs, np.concatenate(docs), np.cumsum([len(d) for d in docs])


def _read_folder(folder, token_size=2):
    dtype = token_dtype(token_size)
    files = sorted(folder.glob("*.ds"))
    return [(np.fromfile(f, dtype), np.fromfile(f"{f}.index", np.uint64)) for f in files]


def _split_docs(tokens, ends):
    starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
    return [tokens[s:e] for s, e in zip(starts, ends.astype(np.int64))]


def test_shards_break_only_between_documents_and_respect_the_bound(tmp_path):
    docs, tokens, ends = _docs_arrays([10, 30, 5, 60, 2, 200, 7, 7, 7], seed=1)
    w = ShardWriter(tmp_path, token_size=2, tokenizer_name="t", shard_tokens=64)
    w.write(tokens[:ends[3]], ends[:4])  # documents arrive in several batches
    w.write(tokens[ends[3]:], ends[4:] - ends[3])
    files = w.close()
    read = _read_folder(tmp_path)
    assert [f.path for f in files] == [f"{k:05d}.ds" for k in range(len(files))]
    got = [d for t, e in read for d in _split_docs(t, e)]
    assert [d.tolist() for d in got] == [d.tolist() for d in docs]
    for (t, e), f in zip(read, files):
        assert e[-1] == len(t) == f.tokens and len(e) == f.documents
        assert t[-1] == 0  # a file ends on an EOS: no document spans two files
        assert len(t) <= 64 or f.documents == 1  # only a lone oversized document exceeds the bound
    assert any(f.documents == 1 and f.tokens > 64 for f in files)


def test_metadata_is_datatrove_text():
    assert metadata_text("gpt2", 2, 1234567) == "gpt2|2\n1234567\n1.23 MT"


def test_token_size_follows_the_vocabulary():
    assert token_size_for(65536) == 2 and token_size_for(65537) == 4 and token_size_for(128256) == 4


def test_seeded_shuffle_permutes_documents_within_each_shard(tmp_path):
    docs, tokens, ends = _docs_arrays([5 + i % 13 for i in range(200)], seed=2)
    out = {}
    for run in ("a", "b"):
        w = ShardWriter(tmp_path / run, token_size=2, tokenizer_name="t", shard_tokens=500, shuffle_seed=7)
        w.write(tokens, ends)
        w.close()
        out[run] = [(t.tobytes(), e.tobytes()) for t, e in _read_folder(tmp_path / run)]
    assert out["a"] == out["b"]  # reproducible
    plain = ShardWriter(tmp_path / "plain", token_size=2, tokenizer_name="t", shard_tokens=500)
    plain.write(tokens, ends)
    plain.close()
    for (t, e), (pt, pe) in zip(_read_folder(tmp_path / "a"), _read_folder(tmp_path / "plain")):
        shuffled, original = _split_docs(t, e), _split_docs(pt, pe)
        assert sorted(map(bytes, shuffled)) == sorted(map(bytes, original))
        assert [bytes(x) for x in shuffled] != [bytes(x) for x in original]
    assert not list((tmp_path / "a").glob("*.unshuffled"))


def _ref(tmp_path, vocab=400, extra=0):
    path = train_tokenizer(tmp_path / "tok" / "tokenizer.json", vocab, extra_tokens=extra)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    size = tok.get_vocab_size()
    return TokenizerRef(str(path), str(path), "fp", size, tok.token_to_id("<|endoftext|>"), token_size_for(size), "<|endoftext|>")


@pytest.mark.parametrize("before", [None, "1"], ids=["unset", "set"])
def test_a_task_sets_its_thread_count_while_it_runs_and_puts_it_back(tmp_path, monkeypatch, before):
    """A task with `threads` sets RAYON_NUM_THREADS (read when the tokenizers thread pool
    starts) for its own run only: a build run in this process leaves the variable as it was."""
    import os

    from mixc.shards.readers import StrictJsonlReader

    if before is None:
        monkeypatch.delenv("RAYON_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("RAYON_NUM_THREADS", before)
    write_jsonl(tmp_path / "in" / "part.jsonl", texts(5, 20))
    seen = []

    def documents():
        seen.append(os.environ.get("RAYON_NUM_THREADS"))
        yield from StrictJsonlReader(str(tmp_path / "in"), source_name="s")(None, 0, 1)

    step = TokenizeStep("s", _ref(tmp_path), tmp_path / "work", shard_tokens=10**9, threads=3, fast=False)
    for _ in step(documents(), 0, 1):
        pass
    assert seen == ["3"] and os.environ.get("RAYON_NUM_THREADS") == before
    assert task_marker(tmp_path / "work", 0).exists()


@pytest.mark.parametrize("fast", [False, True], ids=["hf-tokenizers", "tiktoken"])
def test_byte_identical_to_datatrove_document_tokenizer(tmp_path, fast):
    from mixc.shards.fast_encoder import encoder_choice
    from mixc.shards.readers import StrictJsonlReader

    ref = _ref(tmp_path)
    write_jsonl(tmp_path / "in" / "part.jsonl", texts(5, 700))
    assert encoder_choice(ref, fast) == ("tiktoken" if fast else "hf")  # this byte-level BPE qualifies for tiktoken
    reference = datatrove_tokenized(tmp_path / "in", tmp_path / "datatrove", ref.file)
    work = tmp_path / "work"
    step = TokenizeStep("s", ref, work, shard_tokens=10**9, batch_documents=128, fast=fast)  # other batching, same bytes
    for _ in step(StrictJsonlReader(str(tmp_path / "in"), source_name="s")(None, 0, 1), 0, 1):
        pass
    ours = work / "shards" / "00000_00000.ds"
    theirs = reference / "00000_unshuffled.ds"
    assert ours.read_bytes() == theirs.read_bytes()
    assert (work / "shards" / "00000_00000.ds.index").read_bytes() == (reference / "00000_unshuffled.ds.index").read_bytes()
    assert (work / "shards" / "00000_00000.ds.metadata").read_text() == (reference / "00000_unshuffled.ds.metadata").read_text()
    assert task_marker(work, 0).exists()


def test_uint32_shards_with_a_vocabulary_over_65536(tmp_path):
    ref = _ref(tmp_path, extra=65600)
    assert ref.vocab_size > 65536 and ref.token_size == 4
    tokenizer = load_encoder(ref)
    big = tokenizer.token_to_id("<extra_65599>")
    assert big > 65535
    docs = ["plain text here", "with <extra_65599> a big id", "more"]
    tokens, ends = encode_documents(tokenizer, docs, ref.eos_id, np.uint32)
    w = ShardWriter(tmp_path / "out", token_size=4, tokenizer_name=ref.name, shard_tokens=1000)
    w.write(tokens, ends)
    w.close()
    t, e = _read_folder(tmp_path / "out", 4)[0]
    assert t.dtype == np.uint32 and big in t.tolist()
    assert (tmp_path / "out" / "00000.ds").stat().st_size == 4 * len(t)
    assert [d[-1] for d in _split_docs(t, e)] == [ref.eos_id] * 3
    assert (tmp_path / "out" / "00000.ds.metadata").read_text().startswith(f"{ref.name}|4\n")


@pytest.mark.parametrize("batch", [1, 3, 1000])
def test_encode_documents_appends_eos_to_every_document(tmp_path, batch):
    ref = _ref(tmp_path)
    tok = load_encoder(ref)
    docs = texts(9, 10)
    pieces = [encode_documents(tok, docs[i:i + batch], ref.eos_id, np.uint16) for i in range(0, len(docs), batch)]
    flat = np.concatenate([p[0] for p in pieces])
    expected = np.concatenate([np.array(tok.encode(d, add_special_tokens=False).ids + [ref.eos_id]) for d in docs])
    assert flat.tolist() == expected.tolist()
