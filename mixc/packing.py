"""Best-fit packing of whole documents into samples, its on-disk cache, and the packing report.

`concat` (the default) cuts a source's concatenated token stream into samples of
`seq_len + 1` tokens: every document that straddles a sample end loses its beginning as
context for its end. `bestfit` keeps documents whole (Ding et al. 2024, "Fewer Truncations
Improve Language Modeling"):

- a document longer than a sample (S = seq_len + 1 tokens) is split into pieces of S tokens
  and its remainder; those are the only documents cut. A full piece is a sample of its own;
- every other piece (whole documents and remainders) is placed by best-fit decreasing over a
  window of `window` pieces taken in a seeded order: within a window, longest first, each into
  the open sample with the least room that still fits it, else into a new sample;
- the rest of a sample is padding: the loader labels it -100 and gives it its own attention
  segment, so it contributes nothing to the loss and no real token attends to it.

An epoch of a packed source is every packed sample once, hence every token of every
document exactly once. The packing is a pure function of (document lengths, S, window, seed,
source name); it is computed once and cached in the store, STORE/packing/<source>/<key>.npy
(about 4 bytes a document), so ranks and later launches read it instead of redoing it. A
longer-context phase packs the same shards with its own S: nothing is re-tokenized.

Window choice: best-fit needs enough small pieces in a window to fill the gaps the long ones
leave; a window of 8192 pieces keeps padding under 1% at 4k on a log-normal length
distribution (median ~600) and costs one sorted list of open samples (bisect).
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blend import source_key
from .errors import MixcError
from .store import INDEX_DTYPE, path_part, write_atomic

FORMAT = "mixc.packing/1"
MODES = ("concat", "bestfit")
DEFAULT_WINDOW = 8192
PAD_ID = 0  # the input id of padding positions (any valid id: they are never attended to or labelled)
_BITS = 32  # an open sample is one int in the sorted list: room << _BITS | sample id


def document_layout(stream) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per document of a source stream, in storage order: (file index, offset in the file, length)."""
    files, los, lens = [], [], []
    for f, path in enumerate(stream.files):
        index = Path(str(path) + ".index")
        ends = np.fromfile(index, dtype=INDEX_DTYPE).astype(np.int64) if index.stat().st_size else np.zeros(0, np.int64)
        size = int(stream.file_starts[f + 1] - stream.file_starts[f])
        if ends.size == 0 or ends[-1] != size:  # tokens after the last indexed end form one more document
            ends = np.append(ends, size) if size else ends
        starts = np.concatenate([[0], ends[:-1]]) if ends.size else ends
        keep = ends > starts
        files.append(np.full(int(keep.sum()), f, np.int32))
        los.append(starts[keep])
        lens.append((ends - starts)[keep])
    if not files:
        return np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(files), np.concatenate(los), np.concatenate(lens)


def split_pieces(lengths: np.ndarray, sample: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents -> pieces of at most `sample` tokens: (document, offset in it, length). A
    document of at most `sample` tokens is one piece; a longer one is cut every `sample` tokens."""
    n_pieces = np.maximum(1, -(-lengths // sample))
    doc = np.repeat(np.arange(len(lengths), dtype=np.int64), n_pieces)
    first = np.concatenate([[0], np.cumsum(n_pieces)[:-1]]).astype(np.int64)
    k = np.arange(len(doc), dtype=np.int64) - np.repeat(first, n_pieces)
    offset = k * sample
    return doc, offset, np.minimum(sample, lengths[doc] - offset)


def best_fit_decreasing(lengths: np.ndarray, capacity: int, window: int, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pack items (all <= capacity) into bins. Items are taken in `order`, `window` at a time;
    within a window, longest first (ties in `order`), each goes to the open bin with the least
    room that fits it, else to a new bin. Returns (items in bin order, items per bin); within a
    bin, items keep their placement order."""
    placed_item = np.empty(len(order), np.int64)
    placed_bin = np.empty(len(order), np.int64)
    n_bins = done = 0
    for lo in range(0, len(order), window):
        items = order[lo:lo + window]
        items = items[np.argsort(-lengths[items], kind="stable")]
        sizes = lengths[items].tolist()
        smallest = sizes[-1]
        open_bins: list[int] = []  # sorted: room << _BITS | bin, rooms >= the window's smallest item
        bins = []
        for size in sizes:
            k = bisect.bisect_left(open_bins, size << _BITS)
            if k == len(open_bins):
                b, room = n_bins, capacity - size
                n_bins += 1
            else:
                v = open_bins.pop(k)
                b, room = v & 0xFFFFFFFF, (v >> _BITS) - size
            bins.append(b)
            if room >= smallest:
                bisect.insort(open_bins, room << _BITS | b)
        placed_item[done:done + len(items)] = items
        placed_bin[done:done + len(items)] = bins
        done += len(items)
    if n_bins >= 1 << _BITS:
        raise MixcError(f"packing: {n_bins} samples in one source exceed the packer's {1 << _BITS} limit")
    by_bin = np.argsort(placed_bin, kind="stable")
    return placed_item[by_bin], np.bincount(placed_bin, minlength=n_bins).astype(np.int64)


@dataclass(frozen=True)
class PackingStats:
    documents: int
    cut_documents: int
    tokens: int
    cut_tokens: int
    samples: int
    sample_tokens: int  # samples x (seq_len + 1)
    padding: int  # padding tokens in those samples

    @property
    def cut_documents_fraction(self) -> float:
        return self.cut_documents / self.documents if self.documents else 0.0

    @property
    def cut_tokens_fraction(self) -> float:
        return self.cut_tokens / self.tokens if self.tokens else 0.0

    @property
    def padding_fraction(self) -> float:
        return self.padding / self.sample_tokens if self.sample_tokens else 0.0


def concat_stats(lengths: np.ndarray, seq_len: int) -> PackingStats:
    """What cutting the concatenated stream into samples of seq_len + 1 tokens does: a document
    is cut when a sample boundary falls inside it (the tail past the last whole sample is never read)."""
    sample = seq_len + 1
    ends = np.cumsum(lengths)
    starts = ends - lengths
    cut = (starts // sample) != ((ends - 1) // sample)
    total = int(ends[-1]) if len(ends) else 0
    n = total // sample
    return PackingStats(len(lengths), int(cut.sum()), total, int(lengths[cut].sum()), n, n * sample, 0)


class PackedSource:
    """One source packed best-fit into samples of seq_len + 1 tokens (see the module text).

    `read_into(out, i)` fills packed sample i and returns its document starts (0, every piece
    start, and the padding start when there is padding) and its count of real tokens."""

    def __init__(self, stream, seq_len: int, window: int = DEFAULT_WINDOW, seed: int = 0, cache: str | Path | None | bool = True):
        if window < 1:
            raise MixcError(f"source '{stream.name}': packing window {window} must be at least 1")
        self.stream, self.seq_len, self.window, self.seed = stream, seq_len, window, seed
        self.sample = seq_len + 1
        doc_file, doc_lo, doc_len = document_layout(stream)
        self.doc_lengths = doc_len
        doc, offset, self.piece_len = split_pieces(doc_len, self.sample)
        self.piece_file = doc_file[doc]
        self.piece_lo = doc_lo[doc] + offset
        self.key = self._key()
        self.cache_path = self._cache_path(cache)
        order, counts = self._load() if self.cache_path else (None, None)
        if order is None:
            order, counts = self._pack()
            if self.cache_path:
                self._save(order, counts)
        self.order, self.counts = order, counts
        self.sample_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        # Real tokens per sample, for epoch accounting across phases.
        self.real = np.add.reduceat(self.piece_len[order], self.sample_starts[:-1]) if len(counts) else np.zeros(0, np.int64)
        # The read path's tables in sample order: a sample is one slice of each (no fancy indexing).
        self._file, self._lo, self._len = self.piece_file[order], self.piece_lo[order], self.piece_len[order]
        ends = np.cumsum(self._len)
        self._offset = ends - self._len - np.repeat(ends[self.sample_starts[:-1]] - self._len[self.sample_starts[:-1]], counts) \
            if len(counts) else np.zeros(0, np.int64)

    @property
    def n_samples(self) -> int:
        return len(self.counts)

    @property
    def n_tokens(self) -> int:
        return int(self.doc_lengths.sum())

    def _key(self) -> str:
        files = [[p.name, int(p.stat().st_size), int(Path(str(p) + ".index").stat().st_size)] for p in self.stream.files]
        folder = self.stream.files[0].parent.name if self.stream.files else ""
        text = json.dumps([FORMAT, self.stream.name, folder, files, self.sample, self.window, self.seed])
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def _cache_path(self, cache) -> Path | None:

        if cache is False or cache is None or not self.stream.files:
            return None
        name = path_part(self.stream.name, "source")  # one path component, never a way out of the store
        if cache is True:
            # STORE/sources/<source>/<key>/NNNNN.ds -> STORE/packing/<source>/<packing key>.npy
            parents = self.stream.files[0].parents
            if len(parents) < 4 or parents[2].name != "sources":
                return None
            return parents[3] / "packing" / name / f"{self.key}.npy"
        return Path(cache) / name / f"{self.key}.npy"

    def _pack(self) -> tuple[np.ndarray, np.ndarray]:
        full = np.flatnonzero(self.piece_len == self.sample)
        rest = np.flatnonzero(self.piece_len < self.sample)
        rng = np.random.default_rng([self.seed, source_key(self.stream.name) & 0xFFFFFFFF, self.sample])
        items, counts = best_fit_decreasing(self.piece_len, self.sample, self.window, rest[rng.permutation(len(rest))])
        # A full piece is a sample by itself; they come first, then the best-fit samples.
        return np.concatenate([full, items]).astype(np.int64), np.concatenate([np.ones(len(full), np.int64), counts])

    def _load(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        try:
            data = np.load(self.cache_path, allow_pickle=False)
        except (OSError, ValueError):
            return None, None
        n_pieces, n_samples = (int(v) for v in data[:2]) if len(data) >= 2 else (-1, -1)
        if n_pieces != len(self.piece_len) or len(data) != 2 + n_pieces + n_samples:
            return None, None  # a foreign or torn file: pack again (and replace it)
        order, counts = data[2:2 + n_pieces].astype(np.int64), data[2 + n_pieces:].astype(np.int64)
        if counts.sum() != n_pieces:
            return None, None
        return order, counts

    def _save(self, order: np.ndarray, counts: np.ndarray) -> None:

        dtype = np.uint32 if max(len(order), 1) < 1 << 32 else np.uint64
        buf = io.BytesIO()
        np.save(buf, np.concatenate([[len(order), len(counts)], order, counts]).astype(dtype), allow_pickle=False)
        try:
            write_atomic(self.cache_path, buf.getvalue(), fsync=False)
        except OSError:
            pass  # a read-only store still trains: the packing is recomputed per launch

    def read_into(self, out: np.ndarray, i: int) -> tuple[np.ndarray, int]:
        if self.stream._tokens is None:
            self.stream._open()
        tokens = self.stream._tokens
        a, b = int(self.sample_starts[i]), int(self.sample_starts[i + 1])
        pos = 0
        for f, lo, n in zip(self._file[a:b].tolist(), self._lo[a:b].tolist(), self._len[a:b].tolist()):
            out[pos:pos + n] = tokens[f][lo:lo + n]
            pos += n
        if pos < len(out):
            out[pos:] = PAD_ID  # the padding segment: its own document start
            return np.append(self._offset[a:b], pos), pos
        return self._offset[a:b], pos

    def stats(self) -> PackingStats:
        cut = self.doc_lengths > self.sample
        n = self.n_samples
        return PackingStats(len(self.doc_lengths), int(cut.sum()), self.n_tokens, int(self.doc_lengths[cut].sum()), n,
                            n * self.sample, n * self.sample - int(self.real.sum()))

    def token_position(self, i: int, row_offset: int) -> int:
        """The stream position of token `row_offset` of packed sample i (for error messages)."""
        a, b = int(self.sample_starts[i]), int(self.sample_starts[i + 1])
        pos = 0
        for p in self.order[a:b].tolist():
            if row_offset < pos + int(self.piece_len[p]):
                return int(self.stream.file_starts[self.piece_file[p]] + self.piece_lo[p]) + row_offset - pos
            pos += int(self.piece_len[p])
        return -1


def phase_packing(plan, phase) -> tuple[str, int]:
    """(mode, window) of a plan's phase: the recipe's `packing` (concat for bare mixes)."""
    recipe = getattr(plan, "recipe", None)
    if recipe is None or phase.index >= len(recipe.phases):
        return "concat", DEFAULT_WINDOW
    packing = recipe.phases[phase.index].packing
    return packing.mode, packing.window
