"""The shard writer: documents' tokens -> datatrove's tokenized format.

One shard is three files in datatrove 0.10.1's layout (the format is defined in mixc/store.py).

Shards break only between documents and hold at most `shard_tokens` tokens (a single document
longer than that gets a shard of its own). Tokens arrive as numpy arrays and leave in large
writes; checksums are computed on the way out so that nobody has to read a shard back.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..store import INDEX_DTYPE, metadata_text, token_dtype

WRITE_BUFFER_BYTES = 16 << 20  # flush to disk in blocks of this size
DEFAULT_SHARD_TOKENS = 100_000_000


@dataclass(frozen=True)
class ShardFile:
    path: str  # file name of the .ds, relative to its folder
    tokens: int
    documents: int
    sha256: str  # of the .ds
    index_sha256: str  # of the .ds.index

    def to_dict(self) -> dict:
        return asdict(self)


class _HashedFile:
    """A binary file that hashes what it writes."""

    def __init__(self, path: Path):
        self.file = open(path, "wb")  # noqa: SIM115 - closed in close()
        self.sha = hashlib.sha256()

    def write(self, data) -> None:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.file.write(view)

    def close(self) -> str:
        self.file.flush()
        os.fsync(self.file.fileno())  # a completed task's shards must survive the machine
        self.file.close()
        return self.sha.hexdigest()


class ShardWriter:
    """Writes documents into `folder/{prefix}{k:05d}.ds`, k = 0, 1, ..., breaking at document ends.

    Give `shuffle_seed` to shuffle the documents inside each shard (seeded by the seed, the
    prefix's rank and k, so the bytes are reproducible).
    """

    def __init__(
        self,
        folder: str | Path,
        *,
        token_size: int,
        tokenizer_name: str,
        shard_tokens: int = DEFAULT_SHARD_TOKENS,
        prefix: str = "",
        shuffle_seed: int | None = None,
        shuffle_stream: int = 0,
    ):
        if shard_tokens < 1:
            raise ValueError("shard_tokens must be positive")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.token_size = token_size
        self.dtype = token_dtype(token_size)
        self.tokenizer_name = tokenizer_name
        self.shard_tokens = shard_tokens
        self.prefix = prefix
        self.shuffle_seed = shuffle_seed
        self.shuffle_stream = shuffle_stream
        self.files: list[ShardFile] = []
        self._file: _HashedFile | None = None
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._ends: list[np.ndarray] = []  # document ends of the open shard, from its start
        self._tokens = 0  # tokens in the open shard

    # ------------------------------------------------------------------ writing

    def write(self, tokens: np.ndarray, ends: np.ndarray) -> None:
        """Append whole documents: `tokens` end to end, `ends` their cumulative ends in `tokens`."""
        tokens = np.asarray(tokens, dtype=self.dtype)
        ends = np.asarray(ends, dtype=np.int64)
        if len(ends) == 0:
            return
        if ends[-1] != len(tokens):
            raise ValueError("document ends do not cover the tokens")
        first_doc, offset = 0, 0
        while first_doc < len(ends):
            room = self.shard_tokens - self._tokens
            fit = int(np.searchsorted(ends[first_doc:] - offset, room, side="right"))
            if fit == 0:
                if self._tokens:
                    self._close_shard()
                    continue
                fit = 1  # a document longer than a whole shard: alone in its own shard
            last = first_doc + fit
            end = int(ends[last - 1])
            self._append(tokens[offset:end], ends[first_doc:last] - offset)
            first_doc, offset = last, end
            if self._tokens >= self.shard_tokens:
                self._close_shard()

    def close(self) -> list[ShardFile]:
        """Finish the open shard; the list of every shard written."""
        if self._tokens:
            self._close_shard()
        return self.files

    # ------------------------------------------------------------------ internals

    def _name(self) -> str:
        return f"{self.prefix}{len(self.files):05d}.ds"

    def _append(self, tokens: np.ndarray, ends: np.ndarray) -> None:
        if self._file is None:
            path = self.folder / self._name()
            if self.shuffle_seed is not None:
                path = path.with_name(path.name + ".unshuffled")
            self._file = _HashedFile(path)
        self._ends.append(ends + self._tokens)
        self._tokens += len(tokens)
        self._buffer.append(tokens)
        self._buffered += tokens.nbytes
        if self._buffered >= WRITE_BUFFER_BYTES:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._file.write(np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0])
            self._buffer, self._buffered = [], 0

    def _close_shard(self) -> None:
        self._flush()
        sha = self._file.close()
        self._file = None
        name = self._name()
        ends = np.concatenate(self._ends).astype(INDEX_DTYPE)
        if self.shuffle_seed is not None:
            sha, ends = self._shuffle(name, ends)
        index = _HashedFile(self.folder / f"{name}.index")
        index.write(ends)
        index_sha = index.close()
        (self.folder / f"{name}.metadata").write_text(metadata_text(self.tokenizer_name, self.token_size, self._tokens))
        self.files.append(ShardFile(name, self._tokens, len(ends), sha, index_sha))
        self._ends, self._tokens = [], 0

    def _shuffle(self, name: str, ends: np.ndarray) -> tuple[str, np.ndarray]:
        """Rewrite the finished shard with its documents in a seeded random order."""
        source = self.folder / f"{name}.unshuffled"
        rng = np.random.default_rng([self.shuffle_seed, self.shuffle_stream, len(self.files)])
        order = rng.permutation(len(ends))
        starts = np.concatenate([[0], ends[:-1]]).astype(np.int64)
        lengths = ends.astype(np.int64) - starts
        tokens = np.memmap(source, dtype=self.dtype, mode="r") if self._tokens else np.zeros(0, self.dtype)
        out = _HashedFile(self.folder / name)
        block, size = [], 0
        for doc in order.tolist():
            block.append(tokens[starts[doc]:starts[doc] + lengths[doc]])
            size += int(lengths[doc])
            if size * self.token_size >= WRITE_BUFFER_BYTES:
                out.write(np.concatenate(block))
                block, size = [], 0
        if block:
            out.write(np.concatenate(block))
        sha = out.close()
        del tokens
        source.unlink()
        return sha, np.cumsum(lengths[order]).astype(INDEX_DTYPE)
