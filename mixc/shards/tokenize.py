"""The tokenizer step: a datatrove pipeline step that turns documents into shards.

Documents are encoded in batches with Hugging Face `tokenizers` (`encode_batch_fast`, no
special tokens), the EOS id is appended with numpy, and `ShardWriter` writes the arrays. The
result is byte-identical to datatrove's DocumentTokenizer with `eos_token` set and shuffling
off: that step swaps the tokenizer's post-processor for "$A <EOS>", which is exactly "encode
without special tokens, then append EOS". Truncation and padding are switched off: a
pretraining shard must never lose the end of a document to a tokenizer.json's defaults.
Where lowering chose the fast encoder (fast_encoder.py), tiktoken encodes instead and sampled
documents of every batch are re-encoded with HF as a cross-check.

A task's output is `{rank:05d}_{k:05d}.ds` in the work folder, and `tasks/{rank:05d}.json` is
written after its last shard is closed: that file is the task's completion marker. A rerun
first deletes whatever an interrupted run of the same rank left behind.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from datatrove.data import DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.batching import batched

from ..errors import MixcError
from .fast_encoder import cross_check, load_fast_encoder
from .store import write_atomic, write_json_atomic
from .writer import DEFAULT_SHARD_TOKENS, ShardWriter, token_dtype

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
        from tokenizers import Tokenizer

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

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if self.threads:
            # Read by the tokenizers library when its thread pool starts (first encode in this process).
            os.environ["RAYON_NUM_THREADS"] = str(self.threads)
        clear_task(self.work, rank)
        try:
            summary = self._tokenize(data or [], rank)
        except MixcError as exc:
            self._record_error(rank, str(exc))
            raise
        except Exception as exc:
            message = f"source '{self.source}': {type(exc).__name__}: {exc}"
            self._record_error(rank, message)
            raise MixcError(message) from exc
        write_json_atomic(task_marker(self.work, rank), summary)
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
        started = last_report = time.monotonic()
        for batch in batched(data, self.batch_documents):
            with self.track_time(unit="batch"):
                texts = [doc.text for doc in batch]
                if fast is not None:
                    # the thread count HF tokenizers would use: RAYON_NUM_THREADS, else every core
                    threads = self.threads or int(os.environ.get("RAYON_NUM_THREADS") or 0) or os.cpu_count() or 1
                    batch_tokens, ends = _pack(fast.encode_ids(texts, num_threads=threads), dtype, ref.eos_id)
                    cross_check(self.source, rank, batches, batch, batch_tokens, ends, tokenizer, ref.eos_id, documents)
                else:
                    batch_tokens, ends = encode_documents(tokenizer, texts, ref.eos_id, dtype)
                writer.write(batch_tokens, ends)
            documents += len(batch)
            batches += 1
            tokens += len(batch_tokens)
            self.stat_update("documents", value=len(batch))
            self.stat_update("tokens", value=len(batch_tokens))
            if time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
                last_report = time.monotonic()
                self._report(rank, documents, tokens, last_report - started, done=False)
        files = writer.close()
        self._report(rank, documents, tokens, time.monotonic() - started, done=True)
        return {"rank": rank, "documents": documents, "tokens": tokens, "files": [f.to_dict() for f in files]}

    def _report(self, rank: int, documents: int, tokens: int, seconds: float, done: bool) -> None:
        progress = {"documents": documents, "tokens": tokens, "seconds": seconds, "done": done}
        write_atomic(task_progress(self.work, rank), json.dumps(progress), fsync=False)

    def _record_error(self, rank: int, message: str) -> None:
        path = task_error(self.work, rank)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(message)
