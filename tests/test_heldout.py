"""The held-out split: chosen by content, disjoint from training, datatrove's bytes for the rest."""

from __future__ import annotations

import json

import numpy as np
import pytest
from build_fixtures import datatrove_tokenized, texts, train_tokenizer, write_jsonl, write_project

from mixc.plan import plan_recipe
from mixc.shards import heldout
from mixc.shards.run import build
from mixc.shards.tokenize import TokenizerRef, TokenizeStep
from mixc.spec import load_recipe
from mixc.store import read_manifest, token_size_for
from mixc.streams import source_streams


@pytest.fixture(scope="module")
def tokenizer_path(tmp_path_factory):
    return train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def _ref(path):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    size = tok.get_vocab_size()
    return TokenizerRef(str(path), str(path), "fp", size, tok.token_to_id("<|endoftext|>"), token_size_for(size), "<|endoftext|>")


def _docs(folder, pattern="*.ds"):
    out = []
    for f in sorted(folder.glob(pattern)):
        tokens = np.fromfile(f, np.uint16)
        ends = np.fromfile(f"{f}.index", np.uint64).astype(np.int64)
        out += np.split(tokens, ends[:-1]) if len(ends) else []
    return out


def test_the_rule_depends_on_the_text_only():
    docs = texts(4, 2000)
    chosen = [d for d in docs if heldout.is_heldout(d, 0.1)]
    assert 120 < len(chosen) < 280  # ~10%, by a uniform hash
    assert [d for d in reversed(docs) if heldout.is_heldout(d, 0.1)] == chosen[::-1]
    assert not any(heldout.is_heldout(d, 0.0) for d in docs) and all(heldout.is_heldout(d, 1.0) for d in docs)
    assert heldout.split_fraction(64, 0.05, 10_000) == 64 / 10_000
    assert heldout.split_fraction(64, 0.05, 100) == 0.05 and heldout.split_fraction(0, 0.05, 100) == 0.0


def test_train_part_is_datatrove_bytes_and_duplicates_of_heldout_stay_out(tmp_path, tokenizer_path):
    from tokenizers import Tokenizer

    from mixc.shards.readers import StrictJsonlReader

    ref = _ref(tokenizer_path)
    docs = texts(5, 400)
    fraction = 0.1
    held = [d for d in docs if heldout.is_heldout(d, fraction)]
    assert held
    docs = docs + held[:5]  # exact duplicates of held-out documents, later in the input
    write_jsonl(tmp_path / "in" / "part.jsonl", docs)
    write_jsonl(tmp_path / "train-only" / "part.jsonl", [d for d in docs if not heldout.is_heldout(d, fraction)])
    reference = datatrove_tokenized(tmp_path / "train-only", tmp_path / "datatrove", ref.file)
    work = tmp_path / "work"
    step = TokenizeStep("s", ref, work, shard_tokens=10**9, batch_documents=64, heldout_fraction=fraction)
    for _ in step(StrictJsonlReader(str(tmp_path / "in"), source_name="s")(None, 0, 1), 0, 1):
        pass
    assert (work / "shards" / "00000_00000.ds").read_bytes() == (reference / "00000_unshuffled.ds").read_bytes()
    assert (work / "shards" / "00000_00000.ds.index").read_bytes() == (reference / "00000_unshuffled.ds.index").read_bytes()
    tok = Tokenizer.from_file(str(tokenizer_path))
    train_texts = {tok.decode(d[:-1].tolist()) for d in _docs(work / "shards")}
    held_texts = [tok.decode(d[:-1].tolist()) for d in _docs(work / "heldout")]
    assert sorted(held_texts) == sorted(held + held[:5])
    assert not train_texts & set(held_texts)  # the duplicates went with their twins, not into training
    sizes = np.fromfile(work / "heldout" / "00000_00000.ds.bytes", "<u8").tolist()
    assert sizes == [len(t.encode("utf-8")) for t in held_texts]
    marker = json.loads((work / "tasks" / "00000.json").read_text())
    assert marker["heldout"]["documents"] == len(held) + 5 and marker["documents"] == len(docs) - len(held) - 5


def _project(root, tokenizer, heldout_policy=None):
    write_jsonl(root / "data" / "web" / "a.jsonl", texts(1, 300))
    write_jsonl(root / "data" / "web" / "b.jsonl", texts(2, 200))
    sources = {"web": {"category": "web", "format": "jsonl", "path": str(root / "data" / "web")},
               "math": {"category": "math", "path": "sample://math/eng_Latn/math"}}
    path = write_project(root, sources, {"one": {"web": 1, "math": 1}}, tokenizer=str(tokenizer))
    if heldout_policy is not None:
        import yaml

        recipe = yaml.safe_load(path.read_text())
        recipe["heldout"] = heldout_policy
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _build(recipe, store, **kw):
    return build(recipe, out=store, sample_documents=200, shard_tokens=3000, workers=1, progress=False, **kw)


def test_split_is_the_same_for_any_task_count_and_never_reaches_the_loader(tmp_path, tokenizer_path):
    from tokenizers import Tokenizer

    recipe = _project(tmp_path, tokenizer_path, {"documents": 40, "max_fraction": 0.2})
    one = _build(recipe, tmp_path / "s1", tasks=1)
    two = _build(recipe, tmp_path / "s2", tasks=2)
    tok = Tokenizer.from_file(str(tokenizer_path))
    for a, b in zip(one.sources, two.sources):
        assert a.folder == b.folder  # the task count is not part of the key
        ma, mb = read_manifest(tmp_path / "s1" / a.folder), read_manifest(tmp_path / "s2" / b.folder)
        assert ma["heldout"]["documents"] == mb["heldout"]["documents"] > 0
        ea = heldout.read_heldout(tmp_path / "s1" / a.folder, ma, 2, 40)
        eb = heldout.read_heldout(tmp_path / "s2" / b.folder, mb, 2, 40)
        assert [(t.tolist(), n) for t, n in ea] == [(t.tolist(), n) for t, n in eb]
        assert len(ea) == min(40, ma["heldout"]["documents"])
        capped = heldout.read_heldout(tmp_path / "s1" / a.folder, ma, 2, 40, tokens=len(ea[0][0]) + len(ea[1][0]))
        assert [t.tolist() for t, _ in capped] == [t.tolist() for t, _ in ea[:2]]  # whole documents within the cap
        assert len(heldout.read_heldout(tmp_path / "s1" / a.folder, ma, 2, 40, tokens=1)) == 1  # at least one
    # web: every input document is in exactly one part, and the loader's shards hold no held-out one
    web = next(s for s in one.sources if s.name == "web")
    folder = tmp_path / "s1" / web.folder
    m = read_manifest(folder)
    assert m["documents"] + m["heldout"]["documents"] == 500
    plan = plan_recipe(load_recipe(recipe))
    stream = source_streams(tmp_path / "s1", plan)["web"]
    assert all("heldout" not in f.parts for f in stream.files)
    train = {tok.decode(d[:-1].tolist()) for d in _docs(folder)}
    held = {tok.decode(t[:-1].tolist()) for t, _ in heldout.read_heldout(folder, m, 2)}
    assert not train & held and train | held == set(texts(1, 300) + texts(2, 200))
    assert all(heldout.is_heldout(t, m["options"]["heldout"]["fraction"]) for t in held)


def test_the_policy_is_part_of_the_key(tmp_path, tokenizer_path):
    recipe = _project(tmp_path / "a", tokenizer_path, {"documents": 40, "max_fraction": 0.2})
    with_split = {s.name: s.folder for s in _build(recipe, tmp_path / "store").sources}
    recipe = _project(tmp_path / "a", tokenizer_path, {"documents": 0})
    without = {s.name: s.folder for s in _build(recipe, tmp_path / "store").sources}
    assert with_split["web"] != without["web"]
    m = read_manifest(tmp_path / "store" / without["web"])
    assert "heldout" not in m and m["documents"] == 500
