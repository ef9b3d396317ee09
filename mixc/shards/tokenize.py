"""The tokenizer step: a datatrove pipeline step that turns documents into shards.

Documents are encoded in batches with Hugging Face `tokenizers` (`encode_batch_fast`, no
special tokens), the EOS id is appended with numpy, and `ShardWriter` writes the arrays. The
result is byte-identical to datatrove's DocumentTokenizer with `eos_token` set and shuffling
off: that step swaps the tokenizer's post-processor for "$A <EOS>", which is exactly "encode
without special tokens, then append EOS". Truncation and padding are switched off: a
pretraining shard must never lose the end of a document to a tokenizer.json's defaults.
Where lowering chose the fast encoder (fast_encoder.py), tiktoken encodes instead and sampled
documents of every batch are re-encoded with HF as a cross-check.

A document longer than SPLIT_CHARS is encoded in pieces of about that size, cut only where the
tokenizer provably splits anyway (see `split_document`), so the ids are those of the whole
document and a worker's memory stays bounded whatever the size of one document.

A task's output is `{rank:05d}_{k:05d}.ds` in the work folder, and `tasks/{rank:05d}.json` is
written after its last shard is closed: that file is the task's completion marker. A rerun
first deletes whatever an interrupted run of the same rank left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched
from tokenizers import Tokenizer

from ..environ import scoped_env
from ..errors import MixcError
from ..store import os_error, token_dtype, write_atomic, write_json_atomic
from . import heldout
from .fast_encoder import cross_check, load_fast_encoder
from .writer import DEFAULT_SHARD_TOKENS, ShardWriter

DEFAULT_BATCH_DOCUMENTS = 1000  # datatrove's 10,000 cost ~8 GB per worker; 1,000 was also faster
PROGRESS_EVERY_SECONDS = 0.5


@dataclass(frozen=True)
class TokenizerRef:
    """What a worker needs to load a resolved tokenizer: its definition file in the store."""

    name: str
    file: str  # absolute path of the tokenizer.json
    fingerprint: str
    vocab_size: int
    eos_id: int
    token_size: int
    eos_token: str = ""


_LOADED: dict[str, object] = {}  # per process: several tasks in one worker load the tokenizer once


def load_encoder(ref: TokenizerRef):
    """The HF tokenizer of `ref`, ready to encode documents without special tokens."""
    key = f"{ref.file}:{ref.fingerprint}"
    if key not in _LOADED:
        try:
            tokenizer = Tokenizer.from_file(ref.file)
        except Exception as exc:
            raise MixcError(f"tokenizer '{ref.name}': cannot load {ref.file}: {exc}") from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        _LOADED[key] = tokenizer
    return _LOADED[key]


def encode_documents(tokenizer, texts: list[str], eos_id: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Tokens of `texts` end to end, each document followed by EOS, and the document ends."""
    encodings = tokenizer.encode_batch_fast(texts, add_special_tokens=False)
    return _pack([e.ids for e in encodings], dtype, eos_id)


def _pack(ids: list[list[int]], dtype, eos_id: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ids -> one array and the document ends; `eos_id` appended unless None (already there)."""
    extra = 0 if eos_id is None else 1
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)) + extra
    ends = np.cumsum(lengths)
    tokens = np.empty(int(ends[-1]) if len(ends) else 0, dtype=dtype)
    if eos_id is not None:
        tokens[ends - 1] = eos_id
    for start, doc in zip((ends - lengths).tolist(), ids):
        tokens[start:start + len(doc)] = doc
    return tokens, ends


# --------------------------------------------------------------------------- huge documents
# Encoding a document costs ~150-200 bytes of memory per character (the tokenizer's
# pre-tokens, offsets and ids), so one 47 MB document took 8.6 GB. Documents longer than
# SPLIT_CHARS are cut into pieces of about SPLIT_CHARS characters, each encoded alone, and the
# pieces' ids joined. That gives the whole document's ids exactly when every cut falls where the
# tokenizer's pre-tokenizer puts a boundary that neither side's pre-tokens depend on. For the
# regex pre-tokenizers of byte-level BPE (GPT-2's, and Llama-3's / cl100k's), two kinds of
# positions are such boundaries:
#   - after a single "\n" between two non-space characters ("x\n|y"): every pre-token that may
#     hold a newline is a whitespace run (or punctuation+newlines), which stops at "y"; and the
#     single "\n" at the end of the left piece is the same pre-token as in the whole text;
#   - before a single " " between two letters ("a| b"): " b..." starts a pre-token in both
#     regexes (` ?\p{L}+`, `[^\r\n\p{L}\p{N}]?\p{L}+`) and no pre-token ends with a space
#     followed by a letter.
# Neither regex looks behind, and their lookahead (`\s+(?!\S)`) never reaches past those
# characters, so the pieces pre-tokenize exactly as their span of the whole text. Tokenizers are
# not all regex byte-level BPE (a SentencePiece-style "▁" prefix, a normalizer, added tokens),
# so each cut is also checked: the tokenizer's own ids of CHECK_CHARS either side of the cut
# must equal the ids of the two sides encoded apart. A document with no such cut within
# MAX_PIECE_CHARS is refused with its location rather than encoded at any memory cost.

SPLIT_CHARS = 1 << 20  # pieces of about 1M characters
MAX_PIECE_CHARS = 2 << 20  # no provable cut within this many characters: refuse the document
CHECK_CHARS = 512
ENCODE_GROUP_CHARS = 1 << 20  # characters encoded in one call (a batch of 1,000 web documents is ~5M)
_CUTS = re.compile(r"(?<=\S)\n(?=\S)|(?<=[^\W\d_]) (?=[^\W\d_])")


def _cut_is_exact(tokenizer, text: str, cut: int) -> bool:
    window = text[max(0, cut - CHECK_CHARS):cut + CHECK_CHARS]
    at = cut - max(0, cut - CHECK_CHARS)
    whole, left, right = tokenizer.encode_batch([window, window[:at], window[at:]], add_special_tokens=False)
    return whole.ids == left.ids + right.ids


def split_document(tokenizer, text: str, *, target: int | None = None, limit: int | None = None) -> list[str] | None:
    """`text` in pieces whose ids, joined, are the ids of `text`; None when some stretch of
    `limit` characters has no cut that is exact (see above). One piece when `text` is short."""
    target, limit = target or SPLIT_CHARS, limit or MAX_PIECE_CHARS
    pieces, start = [], 0
    while len(text) - start > target:
        cut = None
        for match in _CUTS.finditer(text, start + target, min(len(text), start + limit)):
            at = match.end() if match.group() == "\n" else match.start()
            if _cut_is_exact(tokenizer, text, at):
                cut = at
                break
        if cut is None:
            if len(text) - start <= limit:
                break  # the rest is small enough to encode as one piece
            return None
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def split_documents(tokenizer, docs, source: str) -> tuple[list[str], list[bool]]:
    """The texts of `docs` with the huge ones split (see split_document), and for each piece
    whether it ends its document."""
    texts, last = [], []
    for doc in docs:
        text = doc.text
        pieces = [text] if len(text) <= SPLIT_CHARS else split_document(tokenizer, text)
        if pieces is None:
            where = doc.metadata.get("mixc_location") or f"document '{doc.id}'"
            raise MixcError(f"source '{source}': {where}: a document of {len(text):,} characters with no point in "
                            f"{MAX_PIECE_CHARS:,} characters where the tokenizer provably splits (a space between two "
                            "letters, a newline between two non-spaces); encoding it whole could take ~"
                            f"{len(text) * 200 / 1e9:.1f} GB: split it in the input or drop it with filter: max_chars")
        texts += pieces
        last += [False] * (len(pieces) - 1) + [True]
    return texts, last


def char_groups(texts: list[str], budget: int | None = None) -> list[slice]:
    """Consecutive runs of `texts` of at most `budget` characters (or one text), to encode one run at a time."""
    budget = budget or ENCODE_GROUP_CHARS
    groups, start, size = [], 0, 0
    for i, text in enumerate(texts):
        if i > start and size + len(text) > budget:
            groups.append(slice(start, i))
            start, size = i, 0
        size += len(text)
    if start < len(texts):
        groups.append(slice(start, len(texts)))
    return groups


def join_pieces(tokens: np.ndarray, ends: np.ndarray, last: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    """Pieces encoded each with its EOS -> documents: drop the EOS of every piece that is not a document's last."""
    if all(last):
        return tokens, ends
    last_mask = np.asarray(last, dtype=bool)
    keep = np.ones(len(tokens), dtype=bool)
    keep[ends[~last_mask] - 1] = False
    removed_before = np.cumsum(~last_mask)  # EOS tokens dropped up to and including each piece
    return tokens[keep], (ends - removed_before)[last_mask]


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [len(tokens) for tokens, _ in parts[:-1]])
    return (np.concatenate([tokens for tokens, _ in parts]),
            np.concatenate([ends + offset for (_, ends), offset in zip(parts, offsets)]))


def task_marker(work: str | Path, rank: int) -> Path:
    return Path(work) / "tasks" / f"{rank:05d}.json"


def task_error(work: str | Path, rank: int) -> Path:
    return Path(work) / "errors" / f"{rank:05d}.txt"


def task_progress(work: str | Path, rank: int) -> Path:
    return Path(work) / "progress" / f"{rank:05d}.json"


def clear_task(work: str | Path, rank: int) -> None:
    """Delete whatever an earlier, unfinished run of this task left in the work folder."""
    work = Path(work)
    for path in (work / "shards").glob(f"{rank:05d}_*"):
        path.unlink()
    for path in (task_marker(work, rank), task_error(work, rank), task_progress(work, rank)):
        path.unlink(missing_ok=True)
    heldout.clear_task(work, rank)


class TokenizeStep(PipelineStep):
    """Encode this task's documents and write them as shards into `work/shards`."""

    name = "mixc tokenize"
    type = "🔢 - TOKENIZER"

    def __init__(
        self,
        source: str,
        tokenizer: TokenizerRef,
        work: str | Path,
        *,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        batch_documents: int = DEFAULT_BATCH_DOCUMENTS,
        shuffle_seed: int | None = None,
        threads: int | None = None,
        fast: bool = True,
        heldout_fraction: float = 0.0,
    ):
        super().__init__()
        self.source = source
        self.tokenizer = tokenizer
        self.work = str(work)
        self.shard_tokens = shard_tokens
        self.batch_documents = batch_documents
        self.shuffle_seed = shuffle_seed
        self.threads = threads
        self.fast = fast  # tiktoken, as lowering chose (encoder_choice): exact for this tokenizer
        self.heldout_fraction = heldout_fraction  # documents kept out of training (see heldout.py)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        # Read by the tokenizers library when its thread pool starts (first encode in this process).
        with scoped_env("RAYON_NUM_THREADS", str(self.threads) if self.threads else None):
            yield from self._run(data, rank)

    def _run(self, data: DocumentsPipeline, rank: int) -> DocumentsPipeline:
        clear_task(self.work, rank)
        try:
            summary = self._tokenize(data or [], rank)
            summary["dropped"] = sum(step.dropped_documents for step in getattr(self, "counters", ()))
            write_json_atomic(task_marker(self.work, rank), summary)
        except MixcError as exc:
            self._record_error(rank, str(exc))
            raise
        except OSError as exc:  # a full disk, a folder that cannot be written
            message = f"source '{self.source}': {os_error(exc, self.work)}"
            self._record_error(rank, message)
            raise MixcError(message) from None
        except MemoryError:
            message = f"source '{self.source}': out of memory while tokenizing (task {rank}); run fewer --workers"
            self._record_error(rank, message)
            raise MixcError(message) from None
        except Exception as exc:
            message = f"source '{self.source}': {type(exc).__name__}: {exc}"
            self._record_error(rank, message)
            raise MixcError(message) from exc
        return
        yield  # a generator, as datatrove expects of a step

    def _tokenize(self, data: DocumentsPipeline, rank: int) -> dict:
        ref = self.tokenizer
        tokenizer = load_encoder(ref)
        dtype = token_dtype(ref.token_size)
        writer = ShardWriter(
            Path(self.work) / "shards", token_size=ref.token_size, tokenizer_name=ref.name,
            shard_tokens=self.shard_tokens, prefix=f"{rank:05d}_", shuffle_seed=self.shuffle_seed, shuffle_stream=rank,
        )
        documents = tokens = batches = 0
        fast = load_fast_encoder(ref) if self.fast else None
        held = heldout.HeldoutWriter(self.work, rank, self.heldout_fraction, ref, self.shard_tokens) \
            if self.heldout_fraction > 0 else None
        started = last_report = time.monotonic()
        for batch in batched(data, self.batch_documents):
            if held is not None and not (batch := held.take(list(batch), tokenizer, self.source)):
                continue
            with self.track_time(unit="batch"):
                texts, last = split_documents(tokenizer, batch, self.source)
                parts = []
                for group in char_groups(texts):  # bounded memory: a few million characters at a time
                    if fast is not None:
                        # the thread count HF tokenizers would use: RAYON_NUM_THREADS, else every core
                        threads = self.threads or int(os.environ.get("RAYON_NUM_THREADS") or 0) or os.cpu_count() or 1
                        parts.append(_pack(fast.encode_ids(texts[group], num_threads=threads), dtype, ref.eos_id))
                    else:
                        parts.append(encode_documents(tokenizer, texts[group], ref.eos_id, dtype))
                batch_tokens, ends = join_pieces(*_concat(parts), last)
                del texts, parts
                if fast is not None:  # sampled documents re-encoded by HF (huge ones are skipped: memory)
                    cross_check(self.source, rank, batches, batch, batch_tokens, ends, tokenizer, ref.eos_id, documents,
                                max_chars=SPLIT_CHARS)
                writer.write(batch_tokens, ends)
            documents += len(ends)
            batches += 1
            tokens += len(batch_tokens)
            self.stat_update("documents", value=len(batch))
            self.stat_update("tokens", value=len(batch_tokens))
            if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = time.monotonic()
                self._report(rank, documents, tokens, last_report - started, done=False)
        files = writer.close()
        self._report(rank, documents, tokens, time.monotonic() - started, done=True)
        summary = {"rank": rank, "documents": documents, "tokens": tokens, "files": [f.to_dict() for f in files]}
        if held is not None:
            summary["heldout"] = held.close()
        return summary

    def _report(self, rank: int, documents: int, tokens: int, seconds: float, done: bool) -> None:
        progress = {"documents": documents, "tokens": tokens, "seconds": seconds, "done": done}
        write_atomic(task_progress(self.work, rank), json.dumps(progress), fsync=False)

    def _record_error(self, rank: int, message: str) -> None:
        """Best effort: on a full disk the error itself cannot be written; the task's exception
        then carries the message to the build."""
        path = task_error(self.work, rank)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, message, fsync=False)
