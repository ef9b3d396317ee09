"""`mixc verify` catches each kind of damage, naming the file; `mixc inspect` shows and decodes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from store_fixtures import make_store

from mixc.cli import main
from mixc.store import write_json_atomic

VOCAB = 1000


def _docs(seed: int, n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1, VOCAB, rng.integers(3, 40)) for _ in range(n)]


@pytest.fixture
def store(tmp_path) -> Path:
    return make_store(tmp_path, "r", {"p1": {"a": 2, "b": 1}}, {"a": _docs(1, 120), "b": _docs(2, 30)}, vocab_size=VOCAB)


def _folder(store: Path, source: str) -> Path:
    return next((store / "sources" / source).iterdir())


def _verify(path):
    return CliRunner().invoke(main, ["verify", str(path)])


def _rehash(folder: Path) -> None:
    """Make the manifest's checksums match the files again, so only the deeper check can fire."""
    m = json.loads((folder / "manifest.json").read_text())
    for f in m["files"]:
        f["sha256"] = hashlib.sha256((folder / f["path"]).read_bytes()).hexdigest()
        f["index_sha256"] = hashlib.sha256((folder / (f["path"] + ".index")).read_bytes()).hexdigest()
    write_json_atomic(folder / "manifest.json", m)


def _edit_manifest(folder: Path, **changes) -> None:
    m = json.loads((folder / "manifest.json").read_text())
    m.update(changes)
    write_json_atomic(folder / "manifest.json", m)


def test_a_clean_store_passes_at_every_level(store):
    for path in (store, _folder(store, "a"), store / "phases" / "r" / "p1.json"):
        result = _verify(path)
        assert result.exit_code == 0, result.output
        assert result.stdout.startswith("ok: ")
    assert "2 source folder(s), 1 phase manifest(s), 4 file(s)" in _verify(store).stdout


def test_a_uint32_store_passes(tmp_path):
    big = 70_000
    docs = {"a": [np.array([69_999, 65_536, 5]), np.array([1])]}
    result = _verify(make_store(tmp_path, "r", {}, docs, vocab_size=big))
    assert result.exit_code == 0, result.output


def test_truncation_is_caught(store):
    ds = _folder(store, "a") / "00001.ds"
    ds.write_bytes(ds.read_bytes()[:-2])
    result = _verify(store)
    assert result.exit_code == 1
    assert f"{ds}: " in result.stderr and "bytes, expected" in result.stderr
    assert f"{ds}: sha256 does not match" in result.stderr
    assert "Traceback" not in result.output


def test_a_flipped_index_byte_is_caught(store):
    folder = _folder(store, "a")
    index = folder / "00000.ds.index"
    raw = bytearray(index.read_bytes())
    raw[8 * 5 + 2] ^= 0x10  # the 6th document end jumps by 2**20
    index.write_bytes(bytes(raw))
    result = _verify(folder)
    assert result.exit_code == 1
    assert f"{index}: sha256 does not match" in result.stderr
    # With the checksum repaired, the structure check still catches it.
    _rehash(folder)
    result = _verify(folder)
    assert result.exit_code == 1
    assert f"{index}: document ends are not increasing" in result.stderr


def test_an_out_of_vocabulary_token_is_caught(store):
    folder = _folder(store, "b")
    ds = folder / "00000.ds"
    tokens = np.fromfile(ds, dtype=np.uint16)
    tokens[1] = VOCAB + 7
    tokens.tofile(ds)
    _rehash(folder)
    result = _verify(store)
    assert result.exit_code == 1
    assert f"{ds}: 1 token(s) >= vocabulary size {VOCAB} (first at token 1: id {VOCAB + 7})" in result.stderr


def test_a_missing_file_is_caught(store):
    index = _folder(store, "a") / "00002.ds.index"
    index.unlink()
    result = _verify(store)
    assert result.exit_code == 1
    assert f"{index}: missing" in result.stderr


def test_a_manifest_count_mismatch_is_caught(store):
    folder = _folder(store, "b")
    m = json.loads((folder / "manifest.json").read_text())
    _edit_manifest(folder, tokens=m["tokens"] + 1, documents=m["documents"] - 1)
    result = _verify(store)
    assert result.exit_code == 1
    manifest = folder / "manifest.json"
    assert f"{manifest}: tokens {m['tokens'] + 1}, but its files add up to {m['tokens']}" in result.stderr
    assert f"{manifest}: documents {m['documents'] - 1}" in result.stderr
    # The phase manifest repeats the folder's counts, and now disagrees with it.
    assert f"{store / 'phases' / 'r' / 'p1.json'}: source 'b': tokens" in result.stderr


def test_a_document_not_ending_with_eos_is_caught(store):
    folder = _folder(store, "a")
    ds = folder / "00000.ds"
    tokens = np.fromfile(ds, dtype=np.uint16)
    ends = np.fromfile(str(ds) + ".index", dtype=np.uint64)
    tokens[int(ends[3]) - 1] = 5  # document 3 loses its EOS
    tokens.tofile(ds)
    _rehash(folder)
    result = _verify(folder)
    assert result.exit_code == 1
    assert f"{ds}: 1 document(s) do not end with EOS id 0 (first: document 3)" in result.stderr


def test_a_metadata_file_disagreeing_with_the_manifest_is_caught(store):
    meta = _folder(store, "a") / "00001.ds.metadata"
    size, count = meta.read_text().splitlines()[:2]
    meta.write_text(f"{size}\n{int(count) + 5}\n")
    result = _verify(store)
    assert result.exit_code == 1
    assert f"{meta}: says {int(count) + 5} tokens of 2 bytes, the manifest {count} tokens of 2 bytes" in result.stderr


def _store_tokenizer(store: Path) -> Path:
    """A real tokenizer file in the store, recorded (name, fingerprint, vocabulary, EOS) in every manifest."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from mixc.shards.tokenizer import tokenizer_fingerprint

    tok = Tokenizer(models.WordLevel({"<eos>": 0, **{f"w{i}": i for i in range(1, VOCAB)}}, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    path = store / "tokenizers" / "test.json"
    path.parent.mkdir(exist_ok=True)
    tok.save(str(path))
    info = {"name": "test", "fingerprint": tokenizer_fingerprint(path.read_text(), "<eos>"), "vocab_size": VOCAB,
            "eos_token": "<eos>", "eos_id": 0, "file": "tokenizers/test.json"}
    for manifest in [*store.glob("sources/*/*/manifest.json"), *store.glob("phases/*/*.json")]:
        m = json.loads(manifest.read_text())
        write_json_atomic(manifest, dict(m, tokenizer=info))
    return path


def test_a_changed_or_missing_tokenizer_file_is_caught(store):
    path = _store_tokenizer(store)
    assert _verify(store).exit_code == 0
    path.write_text(path.read_text().replace('"w5"', '"w5x"'))
    result = _verify(store)
    assert result.exit_code == 1
    # Reported once per source folder that records it, as a problem of its manifest.
    assert result.stderr.count("tokenizer file tokenizers/test.json does not match the fingerprint the shards were "
                               "built with") == 2, result.stderr
    path.unlink()
    assert "tokenizer file tokenizers/test.json is missing from the store" in _verify(store).stderr


def test_a_source_built_with_another_tokenizer_than_its_phase_is_caught(store):
    folder = _folder(store, "b")
    m = json.loads((folder / "manifest.json").read_text())
    _edit_manifest(folder, tokenizer={**m["tokenizer"], "fingerprint": "e" * 64})
    result = _verify(store / "phases" / "r" / "p1.json")
    assert result.exit_code == 1
    assert f"source 'b': tokenizer fingerprint {'e' * 64} in the folder's manifest, {'f' * 64} in the phase manifest" in result.stderr


def test_a_phase_pointing_at_an_unfinished_folder_is_caught(store):
    folder = _folder(store, "b")
    (folder / "manifest.json").unlink()
    phase = store / "phases" / "r" / "p1.json"
    result = _verify(phase)
    assert result.exit_code == 1
    assert f"{phase}: source 'b': folder sources/b/{folder.name} is incomplete" in result.stderr
    # A folder a phase names is checked, never skipped as unfinished; one nothing names is skipped.
    whole = _verify(store)
    assert whole.exit_code == 1 and f"source 'b': folder sources/b/{folder.name} is incomplete" in whole.stderr
    assert "skipped" not in whole.output
    (store / "sources" / "c" / "0123456789ab").mkdir(parents=True)
    assert "1 unfinished folder(s) without a manifest skipped" in _verify(store).stderr


def test_every_folder_a_phase_names_is_verified_whatever_the_source_name(tmp_path):
    """A store written before names were checked: 'HuggingFaceFW/fineweb-edu' nests one level
    deeper. Its damaged shard is found, not skipped as an unfinished folder."""
    store = make_store(tmp_path, "r", {"p1": {"HuggingFaceFW/fineweb-edu": 1, "b": 1}},
                       {"HuggingFaceFW/fineweb-edu": _docs(1, 60), "b": _docs(2, 30)}, vocab_size=VOCAB)
    clean = _verify(store)
    assert clean.exit_code == 0 and "2 source folder(s)" in clean.stdout and "skipped" not in clean.output
    ds = next((store / "sources" / "HuggingFaceFW" / "fineweb-edu").iterdir()) / "00000.ds"
    ds.write_bytes(ds.read_bytes()[:-2])
    for path in (store, store / "phases" / "r" / "p1.json"):
        result = _verify(path)
        assert result.exit_code == 1 and f"{ds}: sha256 does not match" in result.stderr and "skipped" not in result.output


def test_a_phase_naming_a_folder_outside_the_store_is_caught(store):
    phase = store / "phases" / "r" / "p1.json"
    data = json.loads(phase.read_text())
    data["sources"][1]["folder"] = "sources/../../../b"
    write_json_atomic(phase, data)
    result = _verify(store)
    assert result.exit_code == 1 and "source 'b': folder sources/../../../b is outside the store's sources/" in result.stderr


def test_a_path_that_is_not_shards_is_a_clear_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    result = _verify(tmp_path / "x.json")
    assert result.exit_code == 1 and "not a phase manifest" in result.stderr
    assert "Traceback" not in result.output


def test_inspect_shows_counts_and_a_length_histogram(store):
    result = CliRunner().invoke(main, ["inspect", str(_folder(store, "a"))])
    assert result.exit_code == 0, result.output
    total = sum(len(d) + 1 for d in _docs(1, 120))
    assert f"120 documents, {total:,} tokens in 3 file(s)" in result.stdout
    bars = [line for line in result.stdout.splitlines() if line.strip().startswith(("4 -", "8 -", "16 -", "32 -"))]
    lengths = np.array([len(d) + 1 for d in _docs(1, 120)])
    counted = sum(int(line.split()[3].replace(",", "")) for line in bars)
    assert counted == ((lengths >= 4) & (lengths < 64)).sum()
    phase = CliRunner().invoke(main, ["inspect", str(store / "phases" / "r" / "p1.json")])
    assert "phase 'p1' of recipe 'r'" in phase.stdout and "total: 2 sources, 150 documents" in phase.stdout


def test_inspect_decodes_a_document_with_the_recorded_tokenizer(store):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<eos>": 0, **{f"w{i}": i for i in range(1, VOCAB)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (store / "tokenizers").mkdir(exist_ok=True)
    tok.save(str(store / "tokenizers" / "test.json"))
    folder = _folder(store, "b")
    docs = _docs(2, 30)
    # Without a tokenizer file, the ids are printed.
    ids = CliRunner().invoke(main, ["inspect", str(folder), "--doc", "7"])
    assert ids.exit_code == 0 and ids.stdout.split() == [str(t) for t in docs[7]] + ["0"]
    m = json.loads((folder / "manifest.json").read_text())
    _edit_manifest(folder, tokenizer={**m["tokenizer"], "file": "tokenizers/test.json"})
    text = CliRunner().invoke(main, ["inspect", str(store), "--source", "b", "--doc", "7"])
    assert text.exit_code == 0, text.output
    assert text.stdout.split() == [f"w{t}" for t in docs[7]] + ["<eos>"]
    # Document 55 of a lives in its second file (50 documents a file).
    second = CliRunner().invoke(main, ["inspect", str(_folder(store, "a")), "--doc", "55"])
    assert second.stdout.split() == [str(t) for t in _docs(1, 120)[55]] + ["0"]
    out_of_range = CliRunner().invoke(main, ["inspect", str(folder), "--doc", "30"])
    assert out_of_range.exit_code == 1 and "no document 30" in out_of_range.stderr


# --------------------------------------------------------------------------- held-out shards


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """A store built by `mixc build` with a held-out split (about 18 of 300 documents)."""
    from build_fixtures import texts, train_tokenizer, write_jsonl, write_project

    from mixc.shards.run import build

    root = tmp_path_factory.mktemp("heldout-verify")
    tok = train_tokenizer(root / "tok" / "tokenizer.json")
    write_jsonl(root / "data" / "a.jsonl", texts(1, 300))
    recipe = write_project(root, {"web": {"category": "web", "format": "jsonl", "path": str(root / "data")}},
                           {"one": {"web": 1}}, tokenizer=str(tok))
    recipe.write_text(recipe.read_text() + "heldout: {documents: 20, max_fraction: 0.2}\n")
    build(recipe, out=root / "store", workers=1, progress=False)
    return root / "store"


@pytest.fixture
def held(built, tmp_path) -> tuple[Path, Path, dict]:
    """A fresh copy of the built store: (store, its source folder, the manifest's held-out record)."""
    import shutil

    store = shutil.copytree(built, tmp_path / "store")
    folder = _folder(store, "web")
    return store, folder, json.loads((folder / "manifest.json").read_text())["heldout"]


def _first_heldout(folder: Path, info: dict) -> Path:
    entry = next(f for f in info["files"] if f["documents"] > 1)
    return folder / entry["path"]


def test_a_clean_heldout_split_passes_and_is_counted(held):
    store, _, info = held
    assert info["files"] and info["documents"] > 2
    result = _verify(store)
    assert result.exit_code == 0, result.output
    assert f"(and {info['documents']} held-out documents in {len(info['files'])} file(s))" in result.stdout


def test_a_truncated_or_out_of_vocabulary_heldout_shard_is_caught(held):
    _, folder, info = held
    ds = _first_heldout(folder, info)
    original = ds.read_bytes()
    ds.write_bytes(original[:-2])
    result = _verify(folder)
    assert result.exit_code == 1
    assert f"{ds}: " in result.stderr and "bytes, expected" in result.stderr
    assert f"{ds}: sha256 does not match the manifest" in result.stderr
    tokens = np.frombuffer(original, dtype=np.uint16).copy()
    tokens[2] = 60_000  # the tokenizer has 400 ids
    tokens.tofile(ds)
    result = _verify(folder)
    assert f"{ds}: 1 token(s) >= vocabulary size 400 (first at token 2: id 60000)" in result.stderr
    assert "Traceback" not in result.output


def test_a_damaged_heldout_index_or_metadata_is_caught(held):
    _, folder, info = held
    ds = _first_heldout(folder, info)
    index = Path(f"{ds}.index")
    raw = bytearray(index.read_bytes())
    raw[2] ^= 0x10
    index.write_bytes(bytes(raw))
    meta = Path(f"{ds}.metadata")
    size, count = meta.read_text().splitlines()[:2]
    meta.write_text(f"{size}\n{int(count) + 5}\n")
    result = _verify(folder)
    assert result.exit_code == 1
    assert f"{index}: sha256 does not match the manifest" in result.stderr
    assert f"{index}: document ends are not increasing" in result.stderr
    assert f"{meta}: says {int(count) + 5} tokens of 2 bytes" in result.stderr


def test_damaged_bytes_and_hash_files_are_caught(held):
    _, folder, info = held
    ds = _first_heldout(folder, info)
    sizes, hashes = Path(f"{ds}.bytes"), Path(f"{ds}.hash")
    # A byte count changed: its checksum, and the manifest's total.
    values = np.fromfile(sizes, dtype="<u8")
    values[1] += 3
    values.tofile(sizes)
    result = _verify(folder)
    assert result.exit_code == 1
    assert f"{sizes}: sha256 does not match the manifest" in result.stderr
    assert f"{folder / 'manifest.json'}: held-out bytes {info['bytes']}, but its files add up to {info['bytes'] + 3}" \
        in result.stderr
    # A truncated one: its length, located.
    sizes.write_bytes(sizes.read_bytes()[:-4])
    docs = next(f["documents"] for f in info["files"] if folder / f["path"] == ds)
    assert f"{sizes}: {8 * docs - 4} bytes, expected {docs} documents x 8 = {8 * docs} bytes" in _verify(folder).stderr
    # A hash above the split's threshold (checksum repaired: the deeper check fires), then a missing file.
    h = np.fromfile(hashes, dtype="<u8")
    h[1] = np.uint64(2**64 - 5)
    h.tofile(hashes)
    m = json.loads((folder / "manifest.json").read_text())
    for f in m["heldout"]["files"]:
        f["hash_sha256"] = hashlib.sha256((folder / (f["path"] + ".hash")).read_bytes()).hexdigest()
    write_json_atomic(folder / "manifest.json", m)
    result = _verify(folder)
    assert f"{hashes}: 1 document hash(es) not below the split's threshold for fraction {info['fraction']} " \
           f"(first: document 1, byte offset 8: 0xfffffffffffffffb)" in result.stderr
    assert f"{hashes}: sha256" not in result.stderr
    hashes.unlink()
    assert f"{hashes}: missing" in _verify(folder).stderr


def test_an_unlisted_heldout_shard_is_caught_and_training_refuses_a_damaged_split(held):
    from mixc.errors import MixcError
    from mixc.shards.verify import check_store_for_training

    store, folder, info = held
    stray = folder / "heldout" / "00099.ds"
    stray.write_bytes(b"\0\0")
    result = _verify(store)
    assert result.exit_code == 1 and f"{stray}: held-out shard file not listed in the manifest" in result.stderr
    stray.unlink()
    Path(f"{_first_heldout(folder, info)}.bytes").write_bytes(b"\1")
    with pytest.raises(MixcError, match=r"source 'web': .*heldout/\d+\.ds\.bytes: 1 bytes, expected"):
        check_store_for_training(store, "build-test", ["one"])
