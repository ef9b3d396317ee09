"""The tiktoken fast encoder is exact or off: tokenizers built to trip it, a real one, the build's cross-check.

Every case either falls back to HF `tokenizers` or gives HF's ids (EOS appended) on every
document, checked here against a reference built in the test from the tokenizer.json alone.
"""

from __future__ import annotations

import gettext
import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from build_fixtures import write_jsonl, write_project
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

from mixc.errors import MixcError
from mixc.shards import fast_encoder as fe
from mixc.shards.fast_encoder import checked_documents, encoder_choice
from mixc.shards.run import build
from mixc.shards.tokenize import TokenizerRef, TokenizeStep
from mixc.shards.tokenizer import TokenizerSpec, resolve_tokenizer
from mixc.store import read_manifest

FIXTURES = Path(__file__).parent / "fixtures"
TRICKY = [" việc", " hợp", " nhiều", " İslam", " назва"]
SENTENCES = [
    "Công việc này rất quan trọng, chúng tôi cần hợp tác với nhiều người để hoàn thành việc đó.",
    "Nhiều người Việt Nam làm việc ở nước ngoài; hợp đồng của họ có nhiều điều khoản.",
    "İslam tarihi üzerine çalışan öğrenciler, İstanbul'daki kütüphanede ılık bir günde buluştu.",
    "Şu ağaçların gölgesinde İslam sanatı ve Türk müziği hakkında konuştuk; ığdır, çığ, öğüt.",
    "Назва цієї книги українською мовою звучить гарно; назва міста теж.",
    "Москва — столица России, а назва «Київ» пишется по-украински иначе. Ещё: ёжик, щука.",
    "The quick brown fox jumps over the lazy dog; it's what they'd done, we're sure I'll see.",
    "def main():\n    return {'a': 1, \"b\": [2, 3]}  # a comment\n\n\tprint('tabs')  \n",
    "Numbers 1234567 and 3.14159, emoji 😀👍🏽, CJK 数据训练, Arabic البيانات, Hindi डेटा.",
]


def multilingual_texts() -> list[str]:
    return SENTENCES + TRICKY + [w.strip() for w in TRICKY] + ["".join(TRICKY), "x" + "y".join(TRICKY)]


def catalog_texts(limit: int = 400) -> list[str]:
    """Translated messages from the machine's gettext catalogs (Vietnamese, Turkish, Russian, ...), if any."""
    out = []
    for lang in ("vi", "tr", "ru", "uk", "el", "ja", "zh_CN", "ar", "hi", "ko", "de", "pl"):
        for path in sorted(Path("/usr/share/locale", lang, "LC_MESSAGES").glob("*.mo"))[:3]:
            try:
                with open(path, "rb") as f:
                    catalog = gettext.GNUTranslations(f)._catalog
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            out += [m for m in catalog.values() if isinstance(m, str) and m.strip()][:limit // 12]
    return out


def stdlib_texts(files: int = 120, chars: int = 20_000) -> list[str]:
    paths = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:files]
    return [p.read_text(encoding="utf-8", errors="replace")[:chars] for p in paths]


def corpus() -> list[str]:
    return multilingual_texts() + catalog_texts() + stdlib_texts(40, 4_000)


def reference(definition: str, eos_id: int) -> Tokenizer:
    """HF tokenizers on the definition alone: EOS appended, never truncated or padded."""
    tok = Tokenizer.from_str(definition)
    tok.post_processor = TemplateProcessing(single="$A <EOS>", special_tokens=[("<EOS>", eos_id)], pair=None)
    tok.no_truncation()
    tok.no_padding()
    return tok


def byte_level(text: str) -> str:
    return "".join(piece for piece, _ in pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text))


def trained(vocab_size: int = 700, *, llama3: bool = False) -> dict:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if llama3:  # Llama 3's pre-tokenizer: its regex split, then bytes to symbols
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(fe.LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 3 + stdlib_texts(30, 3_000), trainer)
    return json.loads(tok.to_str())


def save(tmp_path: Path, definition: dict, name: str) -> TokenizerSpec:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(definition, ensure_ascii=False), encoding="utf-8")
    return resolve_tokenizer(str(path))


def ref_of(spec: TokenizerSpec, tmp_path: Path) -> TokenizerRef:
    path = tmp_path / f"store-{spec.fingerprint[:8]}.json"
    path.write_text(spec.definition, encoding="utf-8")
    return TokenizerRef(spec.name, str(path), spec.fingerprint, spec.vocab_size, spec.eos_id, spec.token_size, spec.eos_token)


def naive_tiktoken(spec: TokenizerSpec, pattern: str = fe.GPT2_SPLIT):
    """What mixc did before: tiktoken over the whole vocabulary, ranked by token id."""
    import tiktoken

    byte_of = {ch: b for b, ch in enumerate(fe.bytes_to_unicode())}
    vocab = json.loads(spec.definition)["model"]["vocab"]
    ranks = {bytes(byte_of[c] for c in t): i for t, i in vocab.items() if all(c in byte_of for c in t)}
    return tiktoken.Encoding("naive", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})


def shard_ids(tmp_path: Path, spec: TokenizerSpec, docs: list[str], fast: bool, name: str = "s") -> np.ndarray:
    """The tokens the build's tokenize step writes for `docs`."""
    from mixc.shards.readers import StrictJsonlReader

    write_jsonl(tmp_path / f"in-{name}" / "part.jsonl", docs)
    work = tmp_path / f"work-{name}"
    step = TokenizeStep(name, ref_of(spec, tmp_path), work, shard_tokens=10**9, batch_documents=64, fast=fast)
    for _ in step(StrictJsonlReader(str(tmp_path / f"in-{name}"), source_name=name)(None, 0, 1), 0, 1):
        pass
    dtype = np.uint16 if spec.token_size == 2 else np.uint32
    return np.concatenate([np.fromfile(p, dtype=dtype) for p in sorted((work / "shards").glob("*.ds"))])


def assert_exact_or_off(tmp_path: Path, spec: TokenizerSpec, docs: list[str]) -> str:
    """The build's choice for `spec`; on the fast path, HF's ids on every document, through the tokenize step too."""
    encoder, reason = fe.choose_encoder(spec, cache_dir=tmp_path / "cache")
    want = [e.ids for e in reference(spec.definition, spec.eos_id).encode_batch(docs)]
    if encoder == "tiktoken":
        assert fe.fast_encoder(spec).encode_batch(docs) == want
    else:
        assert reason
    written = shard_ids(tmp_path, spec, docs, fast=encoder == "tiktoken")
    assert written.tolist() == [t for ids in want for t in ids]
    return encoder


@pytest.mark.parametrize("ignore_merges,llama3", [(False, False), (True, False), (False, True), (True, True)])
def test_vocabulary_entries_outside_the_merges(tmp_path, ignore_merges, llama3):
    """(a) Llama 3's case: entries no merge builds. HF (ignore_merges off) never emits them."""
    definition = trained(llama3=llama3)
    assert definition["pre_tokenizer"]["type"] == ("Sequence" if llama3 else "ByteLevel")
    model = definition["model"]
    model["ignore_merges"] = ignore_merges
    for word in TRICKY:
        model["vocab"].setdefault(byte_level(word), len(model["vocab"]))
    spec = save(tmp_path, definition, f"unreachable-{ignore_merges}-{llama3}")
    hf = reference(spec.definition, spec.eos_id)
    naive = naive_tiktoken(spec, fe.LLAMA3_SPLIT if llama3 else fe.GPT2_SPLIT)
    for word in TRICKY:
        hf_ids = hf.encode(word).ids[:-1]
        if ignore_merges:
            assert len(hf_ids) == 1  # HF looks the whole word up
        else:  # the hazard is real: HF splits the word, whole-piece lookup would not
            assert len(hf_ids) > 1 and naive.encode_ordinary(word) == [model["vocab"][byte_level(word)]]
    assert assert_exact_or_off(tmp_path, spec, corpus()) == "tiktoken"


def test_ids_not_in_merges_order(tmp_path):
    """(b) merged tokens' ids reversed: tiktoken ranks follow the merges, ids are mapped back."""
    definition = trained()
    vocab = definition["model"]["vocab"]
    merged = sorted((t for t in vocab if len(t) > 1 and t != "<|endoftext|>"), key=vocab.__getitem__)
    ids = [vocab[t] for t in merged]
    for token, new_id in zip(merged, reversed(ids)):
        vocab[token] = new_id
    spec = save(tmp_path, definition, "reversed-ids")
    docs = corpus()
    want = [e.ids for e in reference(spec.definition, spec.eos_id).encode_batch(docs)]
    assert [naive_tiktoken(spec).encode_ordinary(d) + [spec.eos_id] for d in docs] != want  # ranking by id is wrong here
    assert assert_exact_or_off(tmp_path, spec, docs) == "tiktoken"
    assert fe.fast_encoder(spec).ids is not None  # the mapped path, not the ids-as-ranks one


def test_merges_reordered(tmp_path):
    """(b) the merges list permuted against the ids: HF follows the list, so must tiktoken (or refuse)."""
    definition = trained()
    merges = definition["model"]["merges"]
    rng = np.random.default_rng(7)
    # Swap neighbouring merges where neither builds on the other, so every token stays buildable.
    for i in rng.permutation(len(merges) - 1)[:200].tolist():
        a, b = merges[i], merges[i + 1]
        if "".join(a) not in b and "".join(b) not in a:
            merges[i], merges[i + 1] = b, a
    spec = save(tmp_path, definition, "reordered-merges")
    docs = corpus()
    want = [e.ids for e in reference(spec.definition, spec.eos_id).encode_batch(docs)]
    assert [naive_tiktoken(spec).encode_ordinary(d) + [spec.eos_id] for d in docs] != want  # ranking by id is wrong here
    assert assert_exact_or_off(tmp_path, spec, docs) == "tiktoken"


def test_two_merges_for_one_token_fall_back(tmp_path):
    """HF ranks each merge; tiktoken ranks each token once: a token two merges build is refused."""
    definition = trained()
    merges, vocab = definition["model"]["merges"], definition["model"]["vocab"]
    merged = {a + b: (a, b) for a, b in merges}
    token, other = next((t, (t[:k], t[k:])) for t, pair in merged.items() for k in range(1, len(t))
                        if (t[:k], t[k:]) != pair and t[:k] in vocab and t[k:] in vocab)
    merges.append(list(other))
    spec = save(tmp_path, definition, "double")
    assert "two merges" in fe.refusal(spec)
    assert assert_exact_or_off(tmp_path, spec, multilingual_texts()) == "hf"


def test_truncation_block_and_an_added_token_never_cut_a_document(tmp_path):
    """(c) a tokenizer.json asking for max_length 512, a 5,000+ token document with an added-token literal."""
    definition = trained()
    definition["truncation"] = {"direction": "Right", "max_length": 512, "strategy": "LongestFirst", "stride": 0}
    definition["padding"] = {"strategy": {"Fixed": 600}, "direction": "Right", "pad_to_multiple_of": None,
                             "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"}
    definition["added_tokens"].append({"id": len(definition["model"]["vocab"]), "content": "<|user|>", "single_word": False,
                                       "lstrip": False, "rstrip": False, "normalized": False, "special": True})
    spec = save(tmp_path, definition, "truncating")
    long_doc = " ".join(SENTENCES * 40) + " <|user|> " + " ".join(TRICKY * 100)
    docs = [long_doc, "short <|user|> one", "no literal at all " * 600]
    want = [e.ids for e in reference(spec.definition, spec.eos_id).encode_batch(docs)]
    assert len(want[0]) > 5_000 and len(want[2]) > 512
    as_the_file_says = Tokenizer.from_str(spec.definition).encode_batch(docs)
    assert [len(e.ids) for e in as_the_file_says] == [600] * 3  # cut to 512, padded to 600
    assert [e.ids for e in spec.load().encode_batch(docs)] == want
    assert fe.fast_encoder(spec).encode_batch(docs) == want
    for fast in (False, True):  # both paths of the tokenize step
        assert shard_ids(tmp_path, spec, docs, fast, name=f"t{fast}").tolist() == [t for ids in want for t in ids]


def test_real_gpt2_tokenizer_on_real_text(tmp_path):
    """GPT-2's own vocabulary and merges (tests/fixtures, MIT): the fast path, token-identical on
    Python's standard library, gettext catalogs in many languages and the tricky words."""
    spec = resolve_tokenizer(str(FIXTURES / "gpt2-tokenizer.json"))
    assert spec.eos_token == "<|endoftext|>" and spec.eos_id == 50256 and spec.vocab_size == 50257
    docs = multilingual_texts() + catalog_texts(1200) + stdlib_texts(150, 12_000) + ["a <|endoftext|> literal"]
    encoder, reason = fe.choose_encoder(spec, cache_dir=tmp_path)
    assert encoder == "tiktoken", reason
    want = [e.ids for e in reference(spec.definition, spec.eos_id).encode_batch(docs)]
    assert fe.fast_encoder(spec).encode_batch(docs, num_threads=2) == want
    assert fe.fast_encoder(spec).encode_batch(docs[:50]) == want[:50]  # the one-thread loop too


def test_sweep_catches_a_pre_tokenizer_that_splits_differently(tmp_path):
    """The sweep is not vacuous: a fast encoder splitting pieces another way is reported."""
    import tiktoken

    spec = save(tmp_path, trained(), "sweep")
    plan, _ = fe._plan(spec)
    fast = fe._build(spec, plan)
    fast.encoding = tiktoken.Encoding("other-split", pat_str=r"\S+|\s+", mergeable_ranks=plan.ranks, special_tokens={})
    assert "vocabulary sweep" in fe.sweep(spec, fast)


def test_the_verdict_is_cached_per_fingerprint(tmp_path, monkeypatch):
    spec = save(tmp_path, trained(), "cached")
    assert fe.choose_encoder(spec, cache_dir=tmp_path)[0] == "tiktoken"
    monkeypatch.setattr(fe, "sweep", lambda *a: pytest.fail("the cached verdict was not used"))
    assert fe.choose_encoder(spec, cache_dir=tmp_path)[0] == "tiktoken"


def test_refusals_name_their_reason(tmp_path):
    base = trained()
    cases = {
        "normalizer": dict(base, normalizer={"type": "NFC"}),
        "dropout": dict(base, model=dict(base["model"], dropout=0.1)),
        "pre-tokenizer": dict(base, pre_tokenizer={"type": "Whitespace"}),
        "byte symbols": dict(base, model=dict(base["model"], vocab={k: v for k, v in base["model"]["vocab"].items() if k != "Ā"},
                                              merges=[m for m in base["model"]["merges"] if "Ā" not in "".join(m)])),
    }
    for words, definition in cases.items():
        spec = save(tmp_path, definition, words.replace(" ", "-"))
        reason = fe.refusal(spec)
        assert reason and words.split()[-1] in reason
        assert fe.choose_encoder(spec, cache_dir=tmp_path)[0] == "hf"


# --------------------------------------------------------------------------- the build


def _project(root: Path, tokenizer: Path, docs: list[str]) -> Path:
    write_jsonl(root / "data" / "web" / "a.jsonl", docs)
    return write_project(root, {"web": {"category": "web", "format": "jsonl", "path": str(root / "data" / "web")}},
                         {"one": {"web": 1}}, tokenizer=str(tokenizer))


def test_a_mismatch_in_the_middle_of_a_source_stops_it(tmp_path, monkeypatch):
    """One wrong id in one document of the third batch: the build fails naming it, and writes no manifest."""
    docs = (SENTENCES * 120)[:1000]
    recipe = _project(tmp_path, FIXTURES / "gpt2-tokenizer.json", docs)
    batch, size = 2, 300
    victim = batch * size + checked_documents(0, batch, size)[0]
    real = fe.FastEncoder.encode_ids

    def corrupting(self, texts, num_threads=1):
        out = real(self, texts, num_threads)
        if texts and texts[0] == docs[batch * size]:  # this batch
            i = victim - batch * size
            out[i] = list(out[i])
            out[i][len(out[i]) // 2] += 1
        return out

    monkeypatch.setattr(fe.FastEncoder, "encode_ids", corrupting)
    store = tmp_path / "store"
    with pytest.raises(MixcError) as error:
        build(recipe, out=store, workers=1, progress=False, batch_documents=size)
    message = str(error.value)
    assert "source 'web'" in message and f"'a-{victim}'" in message and "a.jsonl" in message
    assert "--no-fast-encoder" in message
    assert not list(store.glob("sources/web/*/manifest.json"))
    monkeypatch.setattr(fe.FastEncoder, "encode_ids", real)
    assert build(recipe, out=store, workers=1, progress=False, batch_documents=size).sources[0].documents == len(docs)


def test_cross_check_covers_every_batch_deterministically():
    assert checked_documents(3, 5, 1000) == checked_documents(3, 5, 1000)
    for batch in range(20):
        picked = checked_documents(0, batch, 1000)
        assert 1 <= len(picked) <= 1000 // fe.CROSS_CHECK_EVERY + 1 and all(0 <= i < 1000 for i in picked)
        assert checked_documents(0, batch, 3)  # even a small batch has one
    assert len({checked_documents(0, b, 1000)[0] for b in range(20)}) > 1  # not always the first document


def test_the_encoder_is_in_the_key_and_the_manifest(tmp_path):
    recipe = _project(tmp_path, FIXTURES / "gpt2-tokenizer.json", SENTENCES * 20)
    store = tmp_path / "store"
    fast = build(recipe, out=store, workers=1, progress=False)
    slow = build(recipe, out=store, workers=1, progress=False, fast_encoder=False)
    assert fast.sources[0].folder != slow.sources[0].folder and not slow.sources[0].reused
    assert read_manifest(store / fast.sources[0].folder)["options"]["encoder"] == "tiktoken"
    assert read_manifest(store / slow.sources[0].folder)["options"]["encoder"] == "hf"
    assert encoder_choice(ref_of(resolve_tokenizer(str(FIXTURES / "gpt2-tokenizer.json")), tmp_path), False) == "hf"
    shards = [(store / s.folder / "00000.ds").read_bytes() for s in (fast.sources[0], slow.sources[0])]
    assert shards[0] == shards[1]


def test_a_refused_tokenizer_builds_with_hf_and_says_why(tmp_path, caplog):
    spec = save(tmp_path, dict(trained(), normalizer={"type": "NFC"}), "nfc")
    with caplog.at_level("WARNING", logger="mixc.shards"):
        assert encoder_choice(ref_of(spec, tmp_path), True) == "hf"
    assert "not the fast encoder" in caplog.text and "normalizer" in caplog.text
