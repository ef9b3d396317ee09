"""Tokenizer resolution: sample BPE training, paths, EOS choice, datatrove token identity, uint32."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from datatrove.pipeline.tokens import DocumentTokenizer
from datatrove.utils.tokenization import PipelineStepWithTokenizer
from tokenizers import Tokenizer, models, pre_tokenizers

from mixc.cli import main
from mixc.errors import MixcError
from mixc.sample import sample_documents
from mixc.shards.fast_encoder import choose_encoder, fast_encoder
from mixc.shards.tokenizer import TokenizerSpec, resolve_tokenizer
from mixc.spec import Source

VOCAB = 1024


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizers")


@pytest.fixture(scope="module")
def spec(cache) -> TokenizerSpec:
    return resolve_tokenizer(f"sample:bpe-{VOCAB}", cache_dir=cache)


def corpus_by_category():
    cases = [("fineweb-edu", "web", "eng_Latn", None), ("fw2-rus", "web", "rus_Cyrl", None), ("fw2-cmn", "web", "cmn_Hani", None),
             ("fw2-tha", "web", "tha_Thai", None), ("stack-Rust", "code", "eng_Latn", "Rust"), ("finemath", "math", "eng_Latn", None),
             ("natural_reasoning", "reasoning", "eng_Latn", None)]
    for name, category, language, pl in cases:
        src = Source(name=name, category=category, language=language, programming_language=pl, path="sample://x")
        yield name, [d["text"] for d in sample_documents(src, seed=11, documents=8)]


def test_sample_bpe_has_the_promised_shape(spec, cache):
    assert spec.name == f"sample:bpe-{VOCAB}" and spec.vocab_size == VOCAB and spec.token_size == 2
    assert (spec.eos_token, spec.eos_id) == ("<|endoftext|>", 0)
    assert len(spec.fingerprint) == 64
    cached = list(cache.iterdir())
    assert [p.name for p in cached] == [f"sample-bpe-{VOCAB}-v1.json"]
    # resolving again reads the cache, it does not retrain
    mtime = cached[0].stat().st_mtime_ns
    assert resolve_tokenizer(f"sample:bpe-{VOCAB}", cache_dir=cache) == spec
    assert cached[0].stat().st_mtime_ns == mtime


def test_sample_bpe_training_is_deterministic_across_processes(spec, tmp_path):
    code = (f"from mixc.shards.tokenizer import resolve_tokenizer; "
            f"print(resolve_tokenizer('sample:bpe-{VOCAB}', cache_dir={str(tmp_path)!r}).fingerprint)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": "7"})
    assert out.stdout.strip() == spec.fingerprint
    assert (tmp_path / f"sample-bpe-{VOCAB}-v1.json").read_text(encoding="utf-8") == spec.definition


def test_round_trip_and_eos_on_every_category(spec):
    tokenizer = spec.load()
    plain = Tokenizer.from_str(spec.definition)
    for name, docs in corpus_by_category():
        for text, enc in zip(docs, tokenizer.encode_batch(docs)):
            assert enc.ids[-1] == spec.eos_id, name
            assert enc.ids[:-1] == plain.encode(text).ids
            assert spec.eos_id not in enc.ids[:-1]
            assert tokenizer.decode(enc.ids) == text, name
            assert max(enc.ids) < spec.vocab_size


def test_tokens_equal_datatrove_document_tokenizer(spec, tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(spec.definition, encoding="utf-8")
    ours = resolve_tokenizer(str(path))
    assert ours.fingerprint == spec.fingerprint
    docs = [t for _, texts in corpus_by_category() for t in texts]
    step = DocumentTokenizer(str(tmp_path / "out"), tokenizer_name_or_path=str(path), eos_token=ours.eos_token,
                             shuffle_documents=False)
    assert step.token_size == ours.token_size
    theirs = [e.ids for e in step.tokenizer.encode_batch(docs)]
    assert [e.ids for e in ours.load().encode_batch(docs)] == theirs
    # and end to end: datatrove's .ds file is our tokens, concatenated, as uint16
    from datatrove.data import Document

    step.run(iter(Document(text=t, id=str(i)) for i, t in enumerate(docs)))
    (ds,) = (tmp_path / "out").glob("*.ds")
    expected = np.concatenate([np.array(ids, dtype="<u2") for ids in theirs])
    assert ds.read_bytes() == expected.tobytes()


def test_relative_paths_resolve_against_the_recipe_folder(spec, tmp_path):
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text(spec.definition, encoding="utf-8")
    by_file = resolve_tokenizer("tok/tokenizer.json", base_dir=tmp_path)
    by_folder = resolve_tokenizer("./tok", base_dir=tmp_path)
    assert by_file.fingerprint == by_folder.fingerprint == spec.fingerprint


@pytest.mark.parametrize("name", ["./missing/tokenizer.json", "missing.json", "/no/such/dir/tokenizer.json"])
def test_missing_path_is_a_clear_error_before_any_hub_lookup(name, tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("hub lookup for a path"))
    with pytest.raises(MixcError, match="no such file") as err:
        resolve_tokenizer(name, base_dir=tmp_path)
    assert "missing" in str(err.value) or "/no/such/dir" in str(err.value)
    if not name.startswith("/"):
        assert str(tmp_path) in str(err.value)


def test_folder_without_tokenizer_json(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MixcError, match="has no tokenizer.json"):
        resolve_tokenizer("./empty", base_dir=tmp_path)


def test_hub_id_offline_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MixcError, match=r"could not be loaded from the Hugging Face hub \(offline\?.*sample:bpe-8192"):
        resolve_tokenizer("HuggingFaceTB/SmolLM3-3B")


def test_bad_sample_name_and_too_small_vocab(tmp_path):
    with pytest.raises(MixcError, match="sample:bpe-<vocab size>"):
        resolve_tokenizer("sample:wordpiece-100", cache_dir=tmp_path)
    with pytest.raises(MixcError, match="too small"):
        resolve_tokenizer("sample:bpe-100", cache_dir=tmp_path)


def word_level(tmp_path, words, name="tokenizer.json"):
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    path = tmp_path / name
    path.write_text(tokenizer.to_str(), encoding="utf-8")
    return path


def test_eos_choice(tmp_path):
    path = word_level(tmp_path, ["<unk>", "a", "b", "<|end_of_text|>", "</s>", "<|endoftext|>"])
    assert resolve_tokenizer(str(path)).eos_token == "<|endoftext|>"
    assert resolve_tokenizer(str(path), eos_token="</s>").eos_id == 4
    # a tokenizer_config.json beside the file names the tokenizer's own EOS
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}), encoding="utf-8")
    configured = resolve_tokenizer(str(path))
    assert (configured.eos_token, configured.eos_id) == ("</s>", 4)
    assert configured.fingerprint != resolve_tokenizer(str(path), eos_token="<|endoftext|>").fingerprint
    with pytest.raises(MixcError, match="'<eos>' is not in its vocabulary"):
        resolve_tokenizer(str(path), eos_token="<eos>")
    fallback = word_level(tmp_path, ["<unk>", "a", "<|end_of_text|>"], "llama.json")
    assert resolve_tokenizer(str(fallback)).eos_token == "<|end_of_text|>"
    none = word_level(tmp_path, ["<unk>", "a"], "noeos.json")
    with pytest.raises(MixcError, match="has no EOS token"):
        resolve_tokenizer(str(none))


def test_fingerprint_ignores_json_formatting(spec, tmp_path):
    path = tmp_path / "pretty.json"
    path.write_text(json.dumps(json.loads(spec.definition), indent=4), encoding="utf-8")
    assert resolve_tokenizer(str(path)).fingerprint == spec.fingerprint


def test_vocabulary_over_65536_uses_uint32_like_datatrove(tmp_path):
    words = ["<unk>", "<|endoftext|>"] + [f"w{i}" for i in range(70_000)]
    path = word_level(tmp_path, words)
    big = resolve_tokenizer(str(path))
    assert big.vocab_size == 70_002 and big.token_size == 4

    class Probe(PipelineStepWithTokenizer):
        def run(self, data, rank=0, world_size=1):
            yield from ()

    assert Probe(str(path), "<|endoftext|>").token_size == 4
    assert big.load().encode("w69999 w1").ids == [70_001, 3, 1]
    small = word_level(tmp_path, ["<unk>", "<|endoftext|>"] + [f"w{i}" for i in range(65_534)], "small.json")
    assert resolve_tokenizer(str(small)).token_size == 2  # 65,536 ids still fit uint16


def test_cli_trains_from_the_sample_and_from_a_local_source(tmp_path):
    runner = CliRunner()
    out = tmp_path / "tok.json"
    result = runner.invoke(main, ["tokenizer", "train", "--vocab-size", "300", "--out", str(out), "--sample"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and Tokenizer.from_file(str(out)).get_vocab_size() == 300

    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps({"body": f"hello world number {i}"}) for i in range(50)), encoding="utf-8")
    (tmp_path / "catalog.yaml").write_text(
        "sources:\n  mine: {category: web, format: jsonl, path: data.jsonl, text_column: body}\n"
        "  remote: {category: web, dataset: org/data}\n", encoding="utf-8")
    local = tmp_path / "local.json"
    result = runner.invoke(main, ["tokenizer", "train", "--vocab-size", "300", "--out", str(local), "--from-source", "mine",
                                  "--catalog", str(tmp_path / "catalog.yaml")])
    assert result.exit_code == 0, result.output
    assert "Ġworld" in Tokenizer.from_file(str(local)).get_vocab()

    result = runner.invoke(main, ["tokenizer", "train", "--vocab-size", "270", "--out", str(local), "--from-source", "remote",
                                  "--catalog", str(tmp_path / "catalog.yaml")])
    assert result.exit_code == 1 and "source 'remote' is not on local disk" in result.output
    assert "Traceback" not in result.output


def test_fast_encoder_is_token_identical_or_refused(spec, tmp_path):
    fast = fast_encoder(spec)
    assert fast is not None
    docs = [t for _, texts in corpus_by_category() for t in texts] + ["a literal <|endoftext|> inside", "", "  spaces\n\n\ttabs  "]
    assert fast.encode_batch(docs) == [e.ids for e in spec.load().encode_batch(docs)]
    assert choose_encoder(spec, cache_dir=tmp_path)[0] == "tiktoken"
    # not a byte-level BPE: no fast path
    assert fast_encoder(resolve_tokenizer(str(word_level(tmp_path, ["<unk>", "<|endoftext|>", "a"])))) is None
    # A vocabulary entry no merge builds any more: tiktoken must not emit it, whatever the text.
    definition = json.loads(spec.definition)
    first = definition["model"]["merges"].pop(0)
    merged = "".join(first.split(" ") if isinstance(first, str) else first)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(definition), encoding="utf-8")
    broken = resolve_tokenizer(str(path))
    fast = fast_encoder(broken)
    text = merged.replace("Ġ", " ") * 20
    assert fast is not None and fast.encode_batch([text]) == [broken.load().encode(text).ids]
