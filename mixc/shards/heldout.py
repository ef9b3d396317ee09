"""The held-out split: documents kept out of training, chosen by their content.

The rule. A document is held out when

    blake2b(UTF-8 text, digest 8 bytes, person=PERSON) as a big-endian uint64  <  fraction x 2^64

so the decision is a function of the text alone: it does not depend on shard order, task count,
batch size or executor, and two documents with identical text always get the same decision. That
last property is the split's exact-duplicate decontamination: a training document whose text is
identical to a held-out one cannot exist, since it would have been held out too.

The fraction. A content hash cannot pick exactly N documents without a pass over the data, so
the policy `heldout: {documents: N, max_fraction: F}` sets

    fraction = min(F, N / estimated documents of the source)

where the estimate is exact for sample sources (the documents generated), and for file sources
the input's bytes / ESTIMATED_BYTES_PER_DOCUMENT (an overestimate of the count for typical
pretraining text, so the held-out set is rarely much larger than asked); a `format: hf` dataset,
whose size is unknown before reading, uses F. The evaluation then reads the N held-out documents
with the smallest hashes (again independent of how the build was split into tasks), or all of
them when fewer were held out.

Held-out documents are tokenized exactly like training ones (EOS appended) and written as
datatrove shards in `<source folder>/heldout/` (00000.ds, .ds.index, .ds.metadata) with two
sidecars per shard: `.ds.bytes` (uint64 per document: UTF-8 bytes of its text, for bits per
byte) and `.ds.hash` (uint64 per document: the hash above, for choosing the evaluated set).
The source manifest records them under "heldout"; its "files" (all a loader ever reads) never
list them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import MixcError
from ..store import DOCUMENT_FACTS_DTYPE, INDEX_DTYPE, token_dtype
from .writer import ShardWriter

PERSON = b"mixc.heldout/1"  # blake2b personalization: a new rule gets a new one (and new store keys)
ESTIMATED_BYTES_PER_DOCUMENT = 1024
HELDOUT = "heldout"


def content_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8, person=PERSON).digest(), "big")


def threshold(fraction: float) -> int:
    """Hashes below this are held out."""
    return min(1 << 64, int(float(fraction) * (1 << 64)))


def is_heldout(text: str, fraction: float) -> bool:
    return content_hash(text) < threshold(fraction)


def split_fraction(documents: int, max_fraction: float, estimated_documents: int | None) -> float:
    """The fraction of a source held out (see the module docstring)."""
    if documents <= 0 or max_fraction <= 0:
        return 0.0
    if not estimated_documents:
        return float(max_fraction)
    return float(min(max_fraction, documents / estimated_documents))


def estimated_documents(input_info: dict, sample_documents: int | None) -> int | None:
    """How many documents a source has, as far as it is known before reading it."""
    if "sample" in input_info:
        return sample_documents
    files = input_info.get("files")
    if files:
        size = sum(int(f.get("size") or 0) for f in files)
        return max(1, size // ESTIMATED_BYTES_PER_DOCUMENT) if size else None
    return None


class HeldoutWriter:
    """Inside a tokenize task: takes the held-out documents out of each batch and writes them."""

    def __init__(self, work: str | Path, rank: int, fraction: float, ref, shard_tokens: int):
        self.limit = threshold(fraction)
        self.folder = Path(work) / HELDOUT
        self.writer = ShardWriter(self.folder, token_size=ref.token_size, tokenizer_name=ref.name,
                                  shard_tokens=shard_tokens, prefix=f"{rank:05d}_")
        self.ref = ref
        self.bytes: list[int] = []
        self.hashes: list[int] = []

    def take(self, batch: list, tokenizer, source: str) -> list:
        """The training documents of `batch`; the held-out ones are tokenized and written here."""
        # tokenize imports this module (a cycle) and datatrove (heavy for eval, which reads held-out shards)
        from .tokenize import encode_documents, join_pieces, split_documents

        hashes = [content_hash(doc.text) for doc in batch]
        held = [i for i, h in enumerate(hashes) if h < self.limit]
        if not held:
            return batch
        docs = [batch[i] for i in held]
        texts, last = split_documents(tokenizer, docs, source)
        tokens, ends = join_pieces(*encode_documents(tokenizer, texts, self.ref.eos_id, token_dtype(self.ref.token_size)), last)
        self.writer.write(tokens, ends)
        self.bytes += [len(doc.text.encode("utf-8")) for doc in docs]
        self.hashes += [hashes[i] for i in held]
        keep = set(held)
        return [doc for i, doc in enumerate(batch) if i not in keep]

    def close(self) -> dict:
        files = self.writer.close()
        start, entries = 0, []
        for f in files:
            n = f.documents
            entry = f.to_dict()
            for suffix, values in ((".bytes", self.bytes), (".hash", self.hashes)):
                raw = np.asarray(values[start:start + n], dtype=DOCUMENT_FACTS_DTYPE).tobytes()
                (self.folder / f"{f.path}{suffix}").write_bytes(raw)
                entry[f"{suffix[1:]}_sha256"] = hashlib.sha256(raw).hexdigest()  # checked by mixc verify
            entries.append(entry)
            start += n
        return {"documents": len(self.bytes), "tokens": sum(f.tokens for f in files), "bytes": sum(self.bytes),
                "files": entries}


def clear_task(work: str | Path, rank: int) -> None:
    for path in (Path(work) / HELDOUT).glob(f"{rank:05d}_*"):
        path.unlink()


FACTS_SUFFIXES = (".bytes", ".hash")  # per document: UTF-8 bytes of the text, content hash (uint64 each)
SUFFIXES = ("", ".index", ".metadata", *FACTS_SUFFIXES)


def finalize(folder: str | Path, summaries: list[dict], policy: dict, category: str,
             max_fraction: float | None = None) -> dict:
    """Move the tasks' held-out shards to `folder/heldout/00000.ds`, ...; the manifest's "heldout" entry.

    A pure function of the task summaries, so a finalize killed halfway redoes the same renames."""
    folder = Path(folder)
    src_dir, dst_dir = folder / ".work" / HELDOUT, folder / HELDOUT
    dst_dir.mkdir(parents=True, exist_ok=True)
    files = [f for s in summaries for f in (s.get("heldout") or {}).get("files", [])]
    out = []
    for i, f in enumerate(files):
        name = f"{i:05d}.ds"
        for suffix in SUFFIXES:
            src, dst = src_dir / (f["path"] + suffix), dst_dir / (name + suffix)
            if src.exists():
                os.replace(src, dst)
            elif not dst.exists():
                raise MixcError(f"{folder}: held-out shard {f['path'] + suffix} of an interrupted build is missing; "
                                f"delete {folder} and rebuild")
        out.append(dict(f, path=f"{HELDOUT}/{name}"))
    return {"rule": f"blake2b-64({PERSON.decode()}) < fraction", "fraction": policy["fraction"],
            "max_fraction": max_fraction, "evaluate": policy["documents"], "evaluate_tokens": policy.get("tokens"), "category": category,
            "documents": sum(f["documents"] for f in out), "tokens": sum(f["tokens"] for f in out),
            "bytes": sum(int((s.get("heldout") or {}).get("bytes", 0)) for s in summaries), "files": out}


def missing_reason(manifest: dict) -> tuple[str, str] | None:
    """Why a source folder has no held-out document: (kind, explanation), or None when it has some.

    kind "off": no split was asked for (`heldout: {documents: 0}`, or a store from before splits);
    "small": the fraction, capped by max_fraction, expects less than one of its documents;
    "chance": about one or more was expected, but no document's content hash fell below the
    threshold (a content hash cannot promise a count: with n documents at fraction f, none is
    held out with probability (1 - f)^n)."""
    info = manifest.get("heldout") or {}
    if info.get("documents"):
        return None
    fraction = float(info.get("fraction") or 0)
    if fraction <= 0:
        return "off", "no held-out split (heldout documents: 0, or built before held-out splits)"
    documents = int(manifest.get("documents", 0))
    expected = fraction * documents
    cap = info.get("max_fraction")
    if expected < 1:
        capped = f"max_fraction {cap}" if cap is not None and fraction >= float(cap) else f"fraction {fraction:.4g}"
        return "small", f"too small: {capped} of its {documents:,} documents expects {expected:.2f}"
    return "chance", (f"by chance: fraction {fraction:.4g} of its {documents:,} documents expects {expected:.1f}, "
                      f"but no content hash fell below the threshold (probability {(1 - fraction) ** documents:.0%})")


def read_heldout(folder: str | Path, manifest: dict, token_size: int, documents: int | None = None,
                 tokens: int | None = None) -> list[tuple[np.ndarray, int]]:
    """The evaluated held-out documents of a source: (tokens incl. EOS, UTF-8 bytes of the text),
    the `documents` with the smallest hashes (all when None), in hash order, and of those only as
    many whole documents as fit in `tokens` (at least one)."""

    info = manifest.get("heldout") or {}
    docs = []
    for f in info.get("files", []):
        path = Path(folder) / f["path"]
        try:
            ids = np.fromfile(path, dtype=token_dtype(token_size))
            ends = np.fromfile(f"{path}.index", dtype=INDEX_DTYPE).astype(np.int64)
            sizes = np.fromfile(f"{path}.bytes", dtype=DOCUMENT_FACTS_DTYPE)
            hashes = np.fromfile(f"{path}.hash", dtype=DOCUMENT_FACTS_DTYPE)
        except OSError as exc:
            raise MixcError(f"{path}: cannot read held-out shard ({exc.strerror or exc}); run mixc verify") from None
        if not (len(ends) == len(sizes) == len(hashes) == f["documents"]) or (len(ends) and ends[-1] != len(ids)):
            raise MixcError(f"{path}: held-out shard does not match its manifest entry; run mixc verify")
        starts = np.concatenate([[0], ends[:-1]])
        docs += [(int(h), ids[s:e], int(b)) for h, s, e, b in zip(hashes, starts, ends, sizes)]
    docs.sort(key=lambda d: (d[0], d[1].tobytes()))
    if documents is not None:
        docs = docs[:documents]
    if tokens is not None and docs:
        fit = np.searchsorted(np.cumsum([len(t) for _, t, _ in docs]), tokens, side="right")
        docs = docs[:max(1, int(fit))]
    return [(t, b) for _, t, b in docs]
