"""`mixc verify` and `mixc inspect`: check shards against their manifests, and look inside them.

PATH is a store (it holds `sources/` or `phases/`), one source folder (it holds `manifest.json`)
or one phase manifest (`phases/<recipe>/<phase>.json`).

verify checks, per source folder: every file the manifest lists is present (.ds, .ds.index,
.ds.metadata); a .ds holds tokens x token size bytes; its index is monotone and ends at the
file's length; every token is below the vocabulary size; every document ends with EOS; the
checksums, token and document counts match the manifest; the store's tokenizer file is the one
the manifests fingerprint. The held-out shards (`heldout/`, never blended) get the same checks,
plus their document-facts files: `.ds.bytes` and `.ds.hash` hold one uint64 per document, match
their checksums, every hash lies below the split's threshold, and the byte counts add up to the
manifest's. A phase manifest must point at complete folders whose counts and
tokenizer it repeats correctly. Each token file is read once, in large chunks, hashed and
range-checked from the same buffer; indices are memory-mapped.

`full=False` is the cheap mode `mixc train` runs before step 1: everything but the O(data)
reads of the token files (their checksum, the vocabulary range, the EOS at each document end).
Sizes come from the file system; indices, metadata, manifests and the tokenizer are read whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ..errors import MixcError
from ..store import (
    DOCUMENT_FACTS_DTYPE,
    INDEX_DTYPE,
    MANIFEST,
    PHASE_FORMAT,
    TOKEN_SIZES,
    complete_source_folders,
    phase_manifest_path,
    phase_share,
    read_manifest,
    read_phase_manifest,
    token_dtype,
    token_size_for,
)
from .heldout import FACTS_SUFFIXES, HELDOUT, threshold
from .tokenizer import tokenizer_fingerprint

CHUNK_BYTES = 1 << 24  # 16 MiB reads: large enough to stream at disk speed, small in memory


@dataclass
class Problem:
    path: Path
    what: str

    def __str__(self) -> str:
        return f"{self.path}: {self.what}"


@dataclass
class VerifyResult:
    problems: list[Problem] = field(default_factory=list)
    sources: int = 0
    phases: int = 0
    files: int = 0
    tokens: int = 0
    documents: int = 0
    heldout_files: int = 0
    heldout_documents: int = 0
    incomplete: list[Path] = field(default_factory=list)  # folders without a manifest (not checked)
    tokenizers: dict[tuple, str | None] = field(default_factory=dict)  # each tokenizer file is checked once

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        text = (f"{self.sources} source folder(s), {self.phases} phase manifest(s), {self.files} file(s), "
                f"{self.tokens:,} tokens, {self.documents:,} documents")
        if self.heldout_files:
            text += f" (and {self.heldout_documents:,} held-out documents in {self.heldout_files} file(s))"
        if self.incomplete:
            text += f"; {len(self.incomplete)} unfinished folder(s) without a manifest skipped"
        return text


# --------------------------------------------------------------------------------- what is PATH


def _kind(path: Path) -> str:
    if path.is_file() and path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("format") == PHASE_FORMAT:
            return "phase"
        if path.name == MANIFEST:
            return "source"
        raise MixcError(f"{path}: not a phase manifest (expected format '{PHASE_FORMAT}')")
    if path.is_dir():
        if (path / MANIFEST).exists():
            return "source"
        if (path / "sources").is_dir() or (path / "phases").is_dir():
            return "store"
        if any(path.glob("*.ds")):
            raise MixcError(f"{path}: shards without a manifest.json: an unfinished build (run mixc build again)")
        raise MixcError(f"{path}: not a shard store, a source folder or a phase manifest")
    if path.exists():
        raise MixcError(f"{path}: not a shard store, a source folder or a phase manifest (give the folder that holds "
                        "manifest.json)")
    raise MixcError(f"{path}: no such file or folder")


def _store_of_phase(path: Path) -> Path:
    return path.parent.parent.parent  # STORE/phases/<recipe>/<phase>.json


def _store_of_source(folder: Path) -> Path:
    """STORE of STORE/sources/<source>/<key12> (a store from before names were checked may nest
    a name with '/' deeper: the nearest `sources` above the folder marks it)."""
    for parent in folder.parents:
        if parent.name == "sources":
            return parent.parent
    return folder.parent.parent.parent


# --------------------------------------------------------------------------------- verify


def verify_path(path: str | Path) -> VerifyResult:
    path = Path(path)
    kind = _kind(path)
    result = VerifyResult()
    if kind == "source":
        verify_source(path.parent if path.is_file() else path, result)
    elif kind == "phase":
        for folder in verify_phase(path, result):
            verify_source(folder, result)
    else:
        phases = sorted((path / "phases").glob("*/*.json"))
        named = [folder for phase in phases for folder in verify_phase(phase, result)]
        folders, result.incomplete = _store_folders(path, named, {f for phase in phases for f in _named_folders(phase)})
        for folder in folders:
            verify_source(folder, result)
    return result


def _named_folders(phase: Path) -> list[Path]:
    """Every folder a phase manifest names, whether or not it is there (resolved)."""
    try:
        sources = json.loads(phase.read_text(encoding="utf-8"))["sources"]
        return [(_store_of_phase(phase) / s["folder"]).resolve() for s in sources]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _store_folders(store: Path, named: list[Path], all_named: set[Path]) -> tuple[list[Path], list[Path]]:
    """(source folders to verify, unfinished folders skipped) of a whole store.

    Verified: every folder a phase manifest names, and every folder under sources/ with a
    manifest at any depth (not only sources/<name>/<key>: a store written before names were
    checked nests a name with '/' deeper). Skipped as unfinished: only folders that no phase
    manifest names and that hold no manifest at all."""
    seen, folders = set(), []
    for folder in [*named, *complete_source_folders(store),
                   *sorted(m.parent for m in (store / "sources").rglob(MANIFEST))]:
        if folder.resolve() not in seen:
            seen.add(folder.resolve())
            folders.append(folder)
    incomplete = sorted(f for f in (store / "sources").glob("*/*") if f.is_dir() and not (f / MANIFEST).exists()
                        and f.resolve() not in all_named and not any(f.rglob(MANIFEST)))
    return folders, incomplete


def verify_phase(path: Path, result: VerifyResult) -> list[Path]:
    """Check a phase manifest's folders exist, are complete and agree with it; return them."""
    result.phases += 1
    store = _store_of_phase(path)
    try:
        phase = json.loads(path.read_text(encoding="utf-8"))
        sources = phase["sources"]
        shares = [phase_share(s) for s in sources]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        result.problems.append(Problem(path, f"unreadable phase manifest ({exc})"))
        return []
    if sources and abs(sum(shares) - 1.0) > 1e-6:
        result.problems.append(Problem(path, f"shares sum to {sum(shares):.9g}, not 1"))
    folders = []
    for s in sources:
        folder = store / str(s.get("folder", ""))
        name = s.get("name", "?")
        if not folder.resolve().is_relative_to((store / "sources").resolve()):
            result.problems.append(Problem(path, f"source '{name}': folder {s.get('folder')} is outside the store's sources/"))
            continue
        if not folder.is_dir():
            result.problems.append(Problem(path, f"source '{name}': folder {s.get('folder')} does not exist"))
            continue
        try:
            m = read_manifest(folder)
        except MixcError:
            result.problems.append(Problem(path, f"source '{name}': folder {s.get('folder')} is incomplete (no valid manifest.json)"))
            continue
        for key in ("tokens", "documents"):
            if int(s.get(key, -1)) != int(m[key]):
                result.problems.append(Problem(path, f"source '{name}': {key} {s.get(key)} but the folder's manifest says {m[key]}"))
        if m.get("source") != name:
            result.problems.append(Problem(path, f"source '{name}': folder {s.get('folder')} holds source '{m.get('source')}'"))
        if phase.get("token_size") is not None and int(phase["token_size"]) != int(m["token_size"]):
            result.problems.append(Problem(path, f"source '{name}': token size {phase['token_size']}, the folder's is {m['token_size']}"))
        result.problems += [Problem(path, f"source '{name}': {what}") for what in _tokenizer_disagreement(phase, m)]
        folders.append(folder)
    return folders


def _tokenizer_disagreement(phase: dict, manifest: dict) -> list[str]:
    """A phase blends sources of one tokenizer: the folder's manifest must record the phase's."""
    ours, theirs = phase.get("tokenizer") or {}, manifest.get("tokenizer") or {}
    return [f"tokenizer {key} {theirs.get(key)} in the folder's manifest, {ours.get(key)} in the phase manifest"
            for key in ("fingerprint", "vocab_size", "eos_id") if key in ours and theirs.get(key) != ours.get(key)]


def tokenizer_file_problem(store: Path, info: dict) -> str | None:
    """What is wrong with the store's tokenizer file a manifest records, or None (intact, or none
    recorded). The file must parse, give the recorded fingerprint (tokenizer_fingerprint of its
    JSON and EOS token) and have the recorded vocabulary size."""
    rel = info.get("file")
    if not rel:
        return None
    path = Path(store) / rel
    try:
        definition = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"tokenizer file {rel} is missing from the store"
    except (OSError, UnicodeDecodeError) as exc:
        return f"tokenizer file {rel} is unreadable ({exc})"
    try:
        fingerprint = tokenizer_fingerprint(definition, info.get("eos_token", ""))
    except ValueError as exc:
        return f"tokenizer file {rel} is not valid JSON ({exc})"
    if info.get("eos_token") is not None and info.get("fingerprint") and fingerprint != info["fingerprint"]:
        return (f"tokenizer file {rel} does not match the fingerprint the shards were built with "
                f"({info['fingerprint'][:12]}, the file gives {fingerprint[:12]}): it was changed or damaged")
    if info.get("vocab_size") is not None:
        try:
            vocab = Tokenizer.from_str(definition).get_vocab_size(with_added_tokens=True)
        except Exception as exc:  # the Rust side raises plain Exceptions on a bad definition
            return f"tokenizer file {rel} does not load ({exc})"
        if vocab != int(info["vocab_size"]):
            return f"tokenizer file {rel} has {vocab} tokens, the manifest says vocab_size {info['vocab_size']}"
    return None


def _check_tokenizer(store: Path, info: dict, result: VerifyResult) -> str | None:
    key = (str(store), json.dumps(info, sort_keys=True))
    if key not in result.tokenizers:
        result.tokenizers[key] = tokenizer_file_problem(store, info)
    return result.tokenizers[key]


def _metadata_problem(path: Path, token_size: int, tokens: int) -> str | None:
    """The .ds.metadata datatrove readers use: '<tokenizer>|<token size>' then the token count."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        size, count = int(lines[0].rsplit("|", 1)[1]), int(lines[1])
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return "not '<tokenizer>|<token size>' and a token count"
    if size != token_size or count != tokens:
        return f"says {count} tokens of {size} bytes, the manifest {tokens} tokens of {token_size} bytes"
    return None


def _hash_and_max(path: Path, dtype: np.dtype) -> tuple[str, int, int]:
    """sha256, byte length and largest token of a token file, in one streamed pass."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK_BYTES)
    view = memoryview(buf)
    largest, nbytes = -1, 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            digest.update(view[:n])
            usable = n - n % dtype.itemsize
            if usable:
                largest = max(largest, int(np.frombuffer(buf, dtype=dtype, count=usable // dtype.itemsize).max()))
            nbytes += n
    return digest.hexdigest(), nbytes, largest


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _index_problems(ds: Path, index: Path, entry: dict, n_tokens: int, dtype: np.dtype, eos: int, full: bool) -> list[Problem]:
    """A shard's index: shape, checksum, monotone, ends at the file's length, documents end with EOS."""
    out = []
    if _file_sha256(index) != entry.get("index_sha256"):
        out.append(Problem(index, "sha256 does not match the manifest"))
    isize = index.stat().st_size
    if isize % INDEX_DTYPE.itemsize:
        out.append(Problem(index, f"{isize} bytes, not a whole number of uint64 document ends"))
        return out
    ends = np.memmap(index, dtype=INDEX_DTYPE, mode="r") if isize else np.zeros(0, INDEX_DTYPE)
    if ends.size != int(entry["documents"]):
        out.append(Problem(index, f"{ends.size} documents, the manifest says {entry['documents']}"))
    if ends.size:
        steps = np.diff(ends.astype(np.int64), prepend=0)
        if (steps <= 0).any():
            first = int(np.flatnonzero(steps <= 0)[0])
            out.append(Problem(index, f"document ends are not increasing (at document {first}: {int(ends[first])})"))
        elif int(ends[-1]) != n_tokens:
            out.append(Problem(index, f"last document ends at token {int(ends[-1])}, the file holds {n_tokens} tokens"))
        elif full:
            tokens = np.memmap(ds, dtype=dtype, mode="r", shape=(n_tokens,))
            last = tokens[ends.astype(np.int64) - 1]
            bad = np.flatnonzero(last != eos)
            if bad.size:
                out.append(Problem(ds, f"{bad.size} document(s) do not end with EOS id {eos} (first: document {bad[0]})"))
    elif n_tokens:
        out.append(Problem(index, f"no document ends, but the file holds {n_tokens} tokens"))
    return out


def verify_source(folder: Path, result: VerifyResult, *, full: bool = True) -> None:
    """Check one source folder against its manifest; `full=False` skips reading the token files."""
    result.sources += 1
    try:
        m = read_manifest(folder)
        token_size = int(m["token_size"])
        vocab = int(m["tokenizer"]["vocab_size"])
        eos = int(m["tokenizer"]["eos_id"])
        files = list(m["files"])
    except MixcError as exc:
        result.problems.append(Problem(folder / MANIFEST, str(exc).split(": ", 1)[-1]))
        return
    except (KeyError, TypeError, ValueError) as exc:
        result.problems.append(Problem(folder / MANIFEST, f"manifest lacks or garbles a field ({exc})"))
        return
    manifest = folder / MANIFEST
    problems = result.problems
    if token_size not in TOKEN_SIZES:
        problems.append(Problem(manifest, f"token size {token_size} is neither 2 nor 4"))
        return
    if token_size != token_size_for(vocab):
        problems.append(Problem(manifest, f"token size {token_size} does not fit vocabulary size {vocab}"))
    if not 0 <= eos < vocab:
        problems.append(Problem(manifest, f"EOS id {eos} is outside the vocabulary of {vocab}"))
    if (tok_problem := _check_tokenizer(_store_of_source(folder), m["tokenizer"], result)) is not None:
        problems.append(Problem(manifest, tok_problem))
    total_tokens = total_docs = 0
    listed = set()
    for entry in files:
        listed.add(Path(entry["path"]).name)
        result.files += 1
        total_tokens += int(entry["tokens"])
        total_docs += int(entry["documents"])
        problems.extend(_shard_problems(folder, entry, token_size, vocab, eos, full))
    for ds in sorted(folder.glob("*.ds")):
        if ds.name not in listed:
            problems.append(Problem(ds, "shard file not listed in the manifest"))
    if total_tokens != int(m["tokens"]):
        problems.append(Problem(manifest, f"tokens {m['tokens']}, but its files add up to {total_tokens}"))
    if total_docs != int(m["documents"]):
        problems.append(Problem(manifest, f"documents {m['documents']}, but its files add up to {total_docs}"))
    result.tokens += total_tokens
    result.documents += total_docs
    _verify_heldout(folder, m, result, token_size, vocab, eos, full)


def _shard_problems(folder: Path, entry: dict, token_size: int, vocab: int, eos: int, full: bool) -> list[Problem]:
    """One shard (.ds, .ds.index, .ds.metadata) against its manifest entry."""
    dtype = token_dtype(token_size)
    problems = []
    ds = folder / entry["path"]
    index = Path(f"{ds}.index")
    metadata = Path(f"{ds}.metadata")
    missing = [p for p in (ds, index, metadata) if not p.is_file()]
    for p in missing:
        problems.append(Problem(p, "missing"))
    if metadata not in missing and (what := _metadata_problem(metadata, token_size, int(entry["tokens"]))):
        problems.append(Problem(metadata, what))
    if ds in missing or index in missing:
        return problems
    # Tokens: size, checksum, vocabulary range.
    sha, nbytes, largest = _hash_and_max(ds, dtype) if full else (None, ds.stat().st_size, -1)
    if nbytes != int(entry["tokens"]) * token_size:
        problems.append(Problem(ds, f"{nbytes} bytes, expected {entry['tokens']} tokens x {token_size} = "
                                    f"{int(entry['tokens']) * token_size} bytes"))
    if full and sha != entry.get("sha256"):
        problems.append(Problem(ds, "sha256 does not match the manifest"))
    if largest >= vocab:
        tokens = np.memmap(ds, dtype=dtype, mode="r", shape=(nbytes // token_size,))
        bad = np.flatnonzero(tokens >= vocab)
        problems.append(Problem(ds, f"{bad.size} token(s) >= vocabulary size {vocab} (first at token {bad[0]}: id {tokens[bad[0]]})"))
    problems.extend(_index_problems(ds, index, entry, nbytes // token_size, dtype, eos, full))
    return problems


def _verify_heldout(folder: Path, m: dict, result: VerifyResult, token_size: int, vocab: int, eos: int, full: bool) -> None:
    """The held-out shards of a source folder (see heldout.py): each checked as a training shard
    is, its .bytes and .hash files against the manifest, and the "heldout" totals."""
    info = m.get("heldout")
    on_disk = sorted((folder / HELDOUT).glob("*.ds"))
    manifest = folder / MANIFEST
    if not info:
        result.problems += [Problem(ds, "held-out shard file, but the manifest records no held-out split") for ds in on_disk]
        return
    try:
        entries = list(info["files"])
        limit = threshold(float(info["fraction"]))
        recorded = {key: int(info[key]) for key in ("documents", "tokens", "bytes")}
    except (KeyError, TypeError, ValueError) as exc:
        result.problems.append(Problem(manifest, f"the \"heldout\" record lacks or garbles a field ({exc})"))
        return
    totals = {"documents": 0, "tokens": 0, "bytes": 0}
    listed, all_sizes = set(), True
    for entry in entries:
        ds = folder / entry["path"]
        listed.add(ds.resolve())
        result.heldout_files += 1
        totals["documents"] += int(entry["documents"])
        totals["tokens"] += int(entry["tokens"])
        result.problems.extend(_shard_problems(folder, entry, token_size, vocab, eos, full))
        facts = {suffix: _facts_problem(Path(f"{ds}{suffix}"), entry, suffix, result.problems)
                 for suffix in FACTS_SUFFIXES}
        all_sizes &= facts[".bytes"] is not None
        if (sizes := facts[".bytes"]) is not None:
            totals["bytes"] += int(sizes.sum(dtype=np.uint64))
            if (empty := np.flatnonzero(sizes == 0)).size:
                result.problems.append(Problem(Path(f"{ds}.bytes"), f"document {empty[0]} (byte offset {8 * empty[0]}) "
                                                                     "has 0 bytes of text"))
        if (hashes := facts[".hash"]) is not None and limit < (1 << 64):
            if (above := np.flatnonzero(hashes >= np.uint64(limit))).size:
                k = int(above[0])
                result.problems.append(Problem(Path(f"{ds}.hash"), f"{above.size} document hash(es) not below the split's "
                                                                    f"threshold for fraction {info['fraction']} (first: "
                                                                    f"document {k}, byte offset {8 * k}: {int(hashes[k]):#018x})"))
    for ds in on_disk:
        if ds.resolve() not in listed:
            result.problems.append(Problem(ds, "held-out shard file not listed in the manifest"))
    for key, total in totals.items():
        if total != recorded[key] and (key != "bytes" or all_sizes):  # unreadable .bytes: reported above
            result.problems.append(Problem(manifest, f"held-out {key} {recorded[key]}, but its files add up to {total}"))
    result.heldout_documents += totals["documents"]


def _facts_problem(path: Path, entry: dict, suffix: str, problems: list[Problem]) -> np.ndarray | None:
    """A held-out shard's .ds.bytes or .ds.hash: one uint64 per document, its recorded checksum.
    The values when intact enough to check further, else None (the problem recorded)."""
    if not path.is_file():
        problems.append(Problem(path, "missing"))
        return None
    raw = path.read_bytes()
    documents = int(entry["documents"])
    if len(raw) != documents * DOCUMENT_FACTS_DTYPE.itemsize:
        problems.append(Problem(path, f"{len(raw)} bytes, expected {documents} documents x 8 = {documents * 8} bytes"))
        return None
    key = f"{suffix[1:]}_sha256"
    if key in entry and hashlib.sha256(raw).hexdigest() != entry[key]:
        problems.append(Problem(path, "sha256 does not match the manifest"))
    return np.frombuffer(raw, dtype=DOCUMENT_FACTS_DTYPE)


def check_store_for_training(store: str | Path, recipe_name: str, phase_names: list[str], *, full: bool = False) -> None:
    """Refuse, before step 1, a store `mixc verify` would reject: the recipe's phase manifests,
    every folder they blend (cheap mode unless `full`) and the tokenizer file. MixcError with
    the first problem, naming the source and the file, as one line."""
    store = Path(store)
    result = VerifyResult()
    names: dict[Path, str] = {}
    for phase in phase_names:
        path = phase_manifest_path(store, recipe_name, phase)
        if not path.exists():
            continue  # an unbuilt phase: source_streams names the build command for it
        data = read_phase_manifest(path)  # MixcError for a garbled phase manifest
        for folder in verify_phase(path, result):
            names[folder] = folder.parent.name  # STORE/sources/<source>/<key>
        if result.problems:
            _refuse(store, None, result)
        if (tok_problem := _check_tokenizer(store, data.get("tokenizer") or {}, result)) is not None:
            result.problems.append(Problem(path, tok_problem))
            _refuse(store, None, result)
    for folder, name in names.items():
        verify_source(folder, result, full=full)
        if result.problems:
            _refuse(store, name, result)


def _refuse(store: Path, source: str | None, result: VerifyResult) -> None:
    first, more = result.problems[0], len(result.problems) - 1
    where = f"source '{source}': " if source else ""
    also = f" (and {more} more problem(s))" if more else ""
    raise MixcError(f"the shard store fails its checks: {where}{first}{also}; see `mixc verify {store}`")


# --------------------------------------------------------------------------------- inspect


def _source_folders(path: Path, source: str | None = None) -> list[Path]:
    kind = _kind(path)
    if kind == "source":
        folders = [path.parent if path.is_file() else path]
    elif kind == "phase":
        folders = [_store_of_phase(path) / s["folder"] for s in read_phase_manifest(path)["sources"]]
    else:
        folders = complete_source_folders(path)
    if source is not None:
        folders = [f for f in folders if read_manifest(f)["source"] == source]
        if not folders:
            raise MixcError(f"{path}: no finished folder of source '{source}'")
    return folders


def document_lengths(folder: Path) -> np.ndarray:
    """Token count of every document (EOS included), files in manifest order."""
    m = read_manifest(folder)
    out = []
    for entry in m["files"]:
        index = folder / f"{entry['path']}.index"
        ends = np.fromfile(index, dtype=INDEX_DTYPE).astype(np.int64) if index.exists() else np.zeros(0, np.int64)
        out.append(np.diff(ends, prepend=0))
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def histogram_text(lengths: np.ndarray, width: int = 40) -> list[str]:
    """Document lengths in powers-of-two buckets, one bar per bucket."""
    if lengths.size == 0:
        return ["(no documents)"]
    edges = 1 << np.arange(int(lengths.max()).bit_length() + 1)
    counts, _ = np.histogram(lengths, bins=np.append(edges, edges[-1] * 2))
    top = counts.max()
    lines = [f"document length (tokens): min {lengths.min():,}, median {int(np.median(lengths)):,}, "
             f"mean {lengths.mean():,.1f}, p99 {int(np.percentile(lengths, 99)):,}, max {lengths.max():,}"]
    first, last = np.flatnonzero(counts)[[0, -1]]
    for i in range(first, last + 1):
        bar = "#" * int(round(width * counts[i] / top)) if counts[i] else ""
        lines.append(f"  {edges[i]:>9,} - {2 * edges[i] - 1:<9,} {counts[i]:>10,}  {bar}")
    return lines


def inspect_path(path: str | Path, source: str | None = None) -> str:
    path = Path(path)
    folders = _source_folders(path, source)
    out = []
    if _kind(path) == "phase":
        data = read_phase_manifest(path)
        out.append(f"phase '{data['phase']}' of recipe '{data['recipe']}': budget {data.get('budget_tokens', 0):,} tokens, "
                   f"sequence length {data.get('sequence_length')}, {len(data['sources'])} sources")
        for s in sorted(data["sources"], key=lambda s: -s["share"]):
            out.append(f"  {s['name']:<28} share {s['share']:.6f}  {s['tokens']:>16,} tokens  {s['documents']:>12,} docs  {s['folder']}")
        out.append("")
    all_lengths = []
    total_tokens = total_docs = 0
    for folder in folders:
        m = read_manifest(folder)
        lengths = document_lengths(folder)
        all_lengths.append(lengths)
        total_tokens += int(m["tokens"])
        total_docs += int(m["documents"])
        tok = m["tokenizer"]
        out.append(f"{m['source']} ({folder}): {m['documents']:,} documents, {m['tokens']:,} tokens in {len(m['files'])} file(s), "
                   f"{m['token_size']}-byte tokens, tokenizer {tok['name']} (vocab {tok['vocab_size']:,}, EOS {tok['eos_id']})")
    if len(folders) == 1:
        out += histogram_text(all_lengths[0])
    elif folders:
        out += ["", f"total: {len(folders)} sources, {total_docs:,} documents, {total_tokens:,} tokens"]
        out += histogram_text(np.concatenate(all_lengths))
    return "\n".join(out) + "\n"


def document_tokens(folder: Path, n: int) -> np.ndarray:
    """Document n (0-based, over the folder's files in manifest order), EOS included."""
    m = read_manifest(folder)
    dtype = token_dtype(int(m["token_size"]))
    if not 0 <= n < int(m["documents"]):
        raise MixcError(f"{folder}: no document {n} (the source has {m['documents']:,}, numbered from 0)")
    for entry in m["files"]:
        if n < int(entry["documents"]):
            ends = np.memmap(folder / f"{entry['path']}.index", dtype=INDEX_DTYPE, mode="r")
            start = int(ends[n - 1]) if n else 0
            tokens = np.memmap(folder / entry["path"], dtype=dtype, mode="r")
            return np.array(tokens[start:int(ends[n])])
        n -= int(entry["documents"])
    raise MixcError(f"{folder}: the manifest's file list is shorter than its document count; run mixc verify")


def decode_document(path: str | Path, n: int, source: str | None = None) -> str:
    """Document n decoded with the tokenizer recorded in the manifest (token ids if there is none)."""
    path = Path(path)
    folders = _source_folders(path, source)
    if len(folders) != 1:
        names = ", ".join(sorted(read_manifest(f)["source"] for f in folders))
        raise MixcError(f"{path}: --doc needs one source; pass --source NAME (one of: {names})")
    folder = folders[0]
    ids = document_tokens(folder, n)
    tok = read_manifest(folder)["tokenizer"]
    rel = tok.get("file")
    if rel and (_store_of_source(folder) / rel).is_file():
        tokenizer = Tokenizer.from_file(str(_store_of_source(folder) / rel))
        return tokenizer.decode(ids.tolist(), skip_special_tokens=False)
    return " ".join(map(str, ids.tolist()))
