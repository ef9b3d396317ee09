"""Samples with document boundaries, the curriculum stream, and the torch loader.

A source's token stream is all its shards in manifest order, cut into disjoint samples of
`seq_len + 1` tokens (datatrove and nanotron cut the same way). A sample gives the model
`input_ids = t[:-1]` and `labels = t[1:]`.

Document boundaries. `position_ids` restart at 0 at the sample start and at every document
start; `cu_seqlens` lists the same boundaries for variable-length attention. Labels are the
plain next token everywhere, including across a boundary: the EOS that closes document A is
labelled with the first token of document B. We keep that label because the model must still
learn what documents begin with, and under intra-document attention the prediction cannot see
document A's text beyond the EOS position itself; the trainer decides whether to mask it
(see mixc/train/model.py). A document cut by a sample end continues in the next sample of the
same source stream, restarting at position 0.

The stream of a whole recipe is a pure function of (plan, shard manifests, seed): global step
g belongs to one phase; its `samples_per_step` samples are blend indices of that phase; the
blend maps each to (source, sample of that source); data-parallel rank r of W takes a
contiguous slice of every global batch. Nothing here holds an entry per sample.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blend import Blend
from .errors import MixcError
from .packing import PackedSource, phase_packing
from .plan import Plan
from .store import INDEX_DTYPE, TOKEN_SIZES, token_dtype


class SourceStream:
    """The memory-mapped token stream of one source: its .ds shards end to end."""

    def __init__(self, name: str, files: Sequence[str | Path], token_size: int, vocab_size: int | None = None):
        if token_size not in TOKEN_SIZES:
            raise MixcError(f"source '{name}': token size {token_size} is neither 2 nor 4 bytes")
        self.name = name
        self.files = [Path(f) for f in files]
        self.token_size = token_size
        self.vocab_size = vocab_size
        self.dtype = token_dtype(token_size)
        sizes = []
        for f in self.files:
            try:
                nbytes = f.stat().st_size
            except FileNotFoundError:
                raise MixcError(f"source '{name}': shard {f} is missing") from None
            if nbytes % token_size:
                raise MixcError(f"source '{name}': shard {f} has {nbytes} bytes, not a multiple of the token size {token_size}")
            sizes.append(nbytes // token_size)
        self.file_starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int64)
        self._tokens: list[np.ndarray] | None = None
        self._ends: list[np.ndarray] | None = None

    def __getstate__(self):
        # Worker processes reopen the maps themselves; never pickle mapped pages.
        state = dict(self.__dict__)
        state["_tokens"] = state["_ends"] = None
        return state

    @property
    def n_tokens(self) -> int:
        return int(self.file_starts[-1])

    def n_samples(self, seq_len: int) -> int:
        return self.n_tokens // (seq_len + 1)

    def _open(self) -> None:
        tokens, ends = [], []
        for f in self.files:
            # A plain ndarray view of the map: slicing it skips np.memmap's per-slice overhead.
            tokens.append(np.memmap(f, dtype=self.dtype, mode="r").view(np.ndarray) if f.stat().st_size else np.zeros(0, self.dtype))
            index = Path(str(f) + ".index")
            # The index (8 bytes a document) is read whole: a plain array, no memmap slicing cost.
            ends.append(np.fromfile(index, dtype=INDEX_DTYPE).astype(np.int64) if index.stat().st_size else np.zeros(0, np.int64))
        self._tokens, self._ends = tokens, ends
        self._starts = self.file_starts.tolist()

    def refuse_token(self, window: np.ndarray, start: int) -> None:
        """Raise the error for the first id >= the vocabulary size in `window` (tokens from `start`)."""
        col = int(np.flatnonzero(window >= self.vocab_size)[0])
        position = start + col
        f = bisect.bisect_right(self.file_starts.tolist(), position) - 1
        raise MixcError(f"source '{self.name}': shard {self.files[f]} holds token id {int(window[col])} at token "
                        f"{position - int(self.file_starts[f])}, outside the vocabulary of {self.vocab_size}: the shard is "
                        "damaged; run mixc verify")

    def window(self, start: int, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens [start, start+length) as int64, and the offsets in the window where a document starts."""
        out = np.empty(length, dtype=np.int64)
        return out, self.read_into(out, start)

    def read_into(self, out: np.ndarray, start: int) -> np.ndarray:
        """Fill `out` with tokens [start, start+len(out)); return the offsets in it where a
        document starts (always 0, the sample start). The loader's hot path: a few numpy calls
        per file the window touches, no scan of a file's index."""
        if self._tokens is None:
            self._open()
        length = len(out)
        if start < 0 or start + length > self.n_tokens:
            raise MixcError(f"source '{self.name}': read [{start}, {start + length}) past its {self.n_tokens} tokens")
        bounds = self._starts
        f = bisect.bisect_right(bounds, start) - 1
        pos, stop = start, start + length
        if stop <= bounds[f + 1]:  # the usual case: the window lies in one file
            lo = start - bounds[f]
            out[:] = self._tokens[f][lo:lo + length]
            ends = self._ends[f]
            # Ends are integers: "after lo" is "at or after lo + 1", so one search finds both.
            i, j = ends.searchsorted((lo + 1, lo + length)).tolist()
            return np.concatenate([_ZERO, ends[i:j] - lo])
        starts = [np.zeros(1, np.int64)]
        while pos < stop:
            base = bounds[f]
            lo, hi = pos - base, min(stop, bounds[f + 1]) - base
            out[pos - start : pos - start + hi - lo] = self._tokens[f][lo:hi]
            # Documents starting inside (lo, hi) begin right after a document end in that
            # range (binary search in the file's index); a file's first token starts one too.
            if lo == 0 and pos > start:
                starts.append(np.array([pos - start], np.int64))
            ends = self._ends[f]
            inside = ends[np.searchsorted(ends, lo, side="right"):np.searchsorted(ends, hi, side="left")]
            if inside.size:
                starts.append(inside + (pos - start - lo))
            pos = base + hi
            f += 1
        return np.concatenate(starts) if len(starts) > 1 else starts[0]


_ZERO = np.zeros(1, np.int64)


@dataclass(frozen=True)
class Sample:
    tokens: np.ndarray  # seq_len + 1 token ids
    doc_starts: np.ndarray  # offsets where a document starts (always includes 0)
    source: int
    source_sample: int
    epoch: int
    real: int | None = None  # packed samples: real tokens before the padding (None: no padding)


def positions_from_starts(length: int, doc_starts: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting at every document start."""
    pos = np.arange(length, dtype=np.int64)
    starts = doc_starts[doc_starts < length]
    seg = np.searchsorted(starts, pos, side="right") - 1
    return pos - starts[seg]


class PhaseStream:
    """One phase: the blend over its sources' streams at the phase's sequence length."""

    def __init__(self, name: str, seq_len: int, samples: int, names: list[str], weights: list[float],
                 streams: list[SourceStream], seed: int, offsets: Sequence[int] | None = None, batch_size: int = 1):
        self.name, self.seq_len, self.samples = name, seq_len, samples
        self.names, self.streams = names, streams
        sizes = [s.n_samples(seq_len) for s in streams]
        for n, w, size in zip(names, weights, sizes):
            if w > 0 and size == 0:
                raise MixcError(f"phase '{name}': source '{n}' has a positive weight but fewer than {seq_len + 1} tokens")
        self.blend = Blend(weights, sizes, seed, offsets=offsets, names=names, batch_size=batch_size)
        self._vocab = np.array([s.vocab_size or np.iinfo(np.int64).max for s in streams], dtype=np.int64)

    def samples_at(self, indices: range | np.ndarray) -> list[Sample]:
        """Blend indices -> samples; one vectorized blend lookup for the whole batch."""
        src, idx, epoch = self.blend.lookup(np.asarray(indices, dtype=np.int64))
        tokens, starts = self._read(src, idx)
        return [Sample(t, st, s, i, e) for t, st, s, i, e in zip(tokens, starts, src.tolist(), idx.tolist(), epoch.tolist())]

    def batch_at(self, indices: range | np.ndarray) -> dict:
        """Blend indices -> a collated micro-batch (what `collate(samples_at(...))` gives, with
        one token buffer for the whole batch)."""
        src, idx, _ = self.blend.lookup(np.asarray(indices, dtype=np.int64))
        tokens, starts = self._read(src, idx)
        return batch_from(tokens, starts, src)

    def _read(self, src: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        length = self.seq_len + 1
        tokens = np.empty((len(src), length), dtype=np.int64)
        starts = [self.streams[s].read_into(tokens[row], i * length)
                  for row, (s, i) in enumerate(zip(src.tolist(), idx.tolist()))]
        # A damaged shard (a flipped byte) can hold an id the model has no embedding for; the
        # start-up checks do not read token files, so every batch is range-checked here (one max).
        over = np.flatnonzero(tokens.max(axis=1) >= self._vocab[src])
        if over.size:
            row = int(over[0])
            self.streams[int(src[row])].refuse_token(tokens[row], int(idx[row]) * length)
        return tokens, starts

    def consumed(self) -> np.ndarray:
        """How many samples of each source this phase draws, for the phases after it."""
        return np.asarray(self.blend.counts(self.samples), dtype=np.int64)


def collate(samples: Sequence[Sample]) -> dict:
    """A micro-batch: input_ids, labels, position_ids [B, L] and cu_seqlens over the flattened batch."""
    real = None if all(s.real is None for s in samples) else \
        np.array([len(s.tokens) if s.real is None else s.real for s in samples], np.int64)
    return batch_from(np.stack([s.tokens for s in samples]), [s.doc_starts for s in samples],
                      np.array([s.source for s in samples], dtype=np.int32), real)


def batch_from(tokens: np.ndarray, doc_starts: Sequence[np.ndarray], sources: np.ndarray,
               real: np.ndarray | None = None) -> dict:
    """input_ids, labels, position_ids [B, L] and cu_seqlens from [B, L+1] tokens and each
    sample's sorted document starts (each includes 0). With `real` (packed samples: real tokens
    per row, the rest padding that starts a segment of its own), every label whose target is
    padding is -100: padding never counts in the loss."""
    rows, length = tokens.shape[0], tokens.shape[1] - 1
    # Every document start (and sample start) in the flattened [B*L] batch starts a sequence;
    # a position is its distance to the latest one.
    starts = np.concatenate(doc_starts)
    flat = starts + np.repeat(np.arange(0, rows * length, length, dtype=np.int64), [len(s) for s in doc_starts])
    flat = flat[starts < length]  # a document starting at the last token has no position here
    cu = np.append(flat, rows * length)
    positions = (np.arange(rows * length, dtype=np.int64) - np.repeat(flat, np.diff(cu))).reshape(rows, length)
    labels = tokens[:, 1:]
    if real is not None and (real <= length).any():
        # labels[j] is token j + 1: padding from position real - 1 on.
        labels = labels.copy()
        for row in np.flatnonzero(real <= length).tolist():
            labels[row, real[row] - 1:] = IGNORE_INDEX
    return {
        "input_ids": tokens[:, :-1],
        "labels": labels,
        "position_ids": positions,
        "cu_seqlens": cu.astype(np.int32),
        "max_seqlen": int(np.diff(cu).max()),
        "sources": np.asarray(sources, dtype=np.int32),
    }


IGNORE_INDEX = -100  # a label never counted in the loss (padding); mixc/train/model.py reads it from here


class PackedPhaseStream(PhaseStream):
    """A `bestfit` phase: each source packed into samples of whole documents (mixc/packing.py),
    blended exactly as a concat phase blends its sources' samples."""

    def __init__(self, name: str, seq_len: int, samples: int, names: list[str], weights: list[float],
                 streams: list[SourceStream], seed: int, window: int, offset_tokens: Sequence[int] | None = None,
                 batch_size: int = 1):
        self.name, self.seq_len, self.samples = name, seq_len, samples
        self.names, self.streams = names, streams
        # Sources without weight are never read: not packed either.
        self.packed = [PackedSource(s, seq_len, window, seed) if w > 0 else None for s, w in zip(streams, weights)]
        sizes = [p.n_samples if p else 0 for p in self.packed]
        for n, w, size in zip(names, weights, sizes):
            if w > 0 and size == 0:
                raise MixcError(f"phase '{name}': source '{n}' has a positive weight but no documents")
        # Continue where earlier phases stopped: their real tokens, as a fraction of this packing.
        offsets = [-(-int(t) * size // max(1, p.n_tokens)) if p else 0
                   for t, size, p in zip(offset_tokens or [0] * len(names), sizes, self.packed)]
        self.blend = Blend(weights, sizes, seed, offsets=offsets, names=names, batch_size=batch_size)
        self._vocab = np.array([s.vocab_size or np.iinfo(np.int64).max for s in streams], dtype=np.int64)

    def samples_at(self, indices: range | np.ndarray) -> list[Sample]:
        src, idx, epoch = self.blend.lookup(np.asarray(indices, dtype=np.int64))
        tokens, starts, real = self._read_packed(src, idx)
        return [Sample(t, st, s, i, e, r) for t, st, s, i, e, r
                in zip(tokens, starts, src.tolist(), idx.tolist(), epoch.tolist(), real.tolist())]

    def batch_at(self, indices: range | np.ndarray) -> dict:
        src, idx, _ = self.blend.lookup(np.asarray(indices, dtype=np.int64))
        tokens, starts, real = self._read_packed(src, idx)
        return batch_from(tokens, starts, src, real)

    def _read_packed(self, src: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
        tokens = np.empty((len(src), self.seq_len + 1), dtype=np.int64)
        starts, real = [], np.empty(len(src), np.int64)
        for row, (s, i) in enumerate(zip(src.tolist(), idx.tolist())):
            st, real[row] = self.packed[s].read_into(tokens[row], i)
            starts.append(st)
        over = np.flatnonzero(tokens.max(axis=1) >= self._vocab[src])
        if over.size:
            row = int(over[0])
            packed = self.packed[int(src[row])]
            col = int(np.flatnonzero(tokens[row] >= self._vocab[src[row]])[0])
            position = packed.token_position(int(idx[row]), col)
            packed.stream.refuse_token(tokens[row, col:col + 1], position)
        return tokens, starts, real

    def consumed_tokens(self) -> list[int]:
        """Real tokens of each source this phase draws (whole epochs exactly, a partial one by its mean)."""
        out = []
        for c, p in zip(self.consumed().tolist(), self.packed):
            out.append(0 if p is None else int(c) * p.n_tokens // max(1, p.n_samples))
        return out

    def packing_state(self) -> list:
        return [self.name, "bestfit", [[n, p.key if p else None] for n, p in zip(self.names, self.packed)]]


class CurriculumStream:
    """Every global step of a recipe, as blend indices into per-phase streams."""

    def __init__(self, plan: Plan, source_streams: dict[str, SourceStream], seed: int | None = None,
                 packing: dict[str, tuple[str, int]] | None = None):
        """`packing` overrides the recipe's per phase: phase name -> (mode, window)."""
        packing = packing or {}
        self.plan = plan
        self.seed = plan.recipe.seed if seed is None and plan.recipe else (seed or 0)
        missing = sorted({s.name for p in plan.phases for s in p.sources if s.share > 0} - set(source_streams))
        if missing:
            raise MixcError(f"no shards for source(s) {', '.join(missing)}; build them first (mixc build)")
        self.step_starts = np.cumsum([0] + [p.steps for p in plan.phases]).tolist()
        self.phases: list[PhaseStream] = []
        consumed_tokens: dict[str, int] = {}
        for p in plan.phases:
            names = [s.name for s in p.sources]
            streams = [source_streams[n] for n in names]
            # Continue each source where earlier phases stopped (in samples of this phase's length).
            offsets = [-(-consumed_tokens.get(n, 0) // (p.sequence_length + 1)) for n in names]
            # One seed for every phase: a source keeps its per-epoch order across phases, so
            # continuing at an offset really skips what earlier phases read.
            mode, window = packing.get(p.name) or phase_packing(plan, p)
            if mode == "bestfit":
                phase = PackedPhaseStream(p.name, p.sequence_length, p.samples, names, [s.share for s in p.sources],
                                          streams, self.seed, window, [consumed_tokens.get(n, 0) for n in names],
                                          batch_size=p.samples_per_step)
                used = phase.consumed_tokens()
            else:
                phase = PhaseStream(p.name, p.sequence_length, p.samples, names, [s.share for s in p.sources], streams,
                                    self.seed, offsets, batch_size=p.samples_per_step)
                used = [int(c) * (p.sequence_length + 1) for c in phase.consumed()]
            for n, c in zip(names, used):
                consumed_tokens[n] = consumed_tokens.get(n, 0) + c
            self.phases.append(phase)

    @property
    def total_steps(self) -> int:
        return self.step_starts[-1]

    def packing_state(self) -> list | None:
        """The packed phases and each source's packing key (None when every phase concatenates)."""
        packed = [p.packing_state() for p in self.phases if isinstance(p, PackedPhaseStream)]
        return packed or None

    def locate(self, step: int) -> tuple[int, int]:
        """Global 0-based step -> (phase index, 0-based step within the phase)."""
        if not 0 <= step < self.total_steps:
            raise IndexError(f"step {step} outside the curriculum's {self.total_steps} steps")
        p = bisect.bisect_right(self.step_starts, step) - 1
        return p, step - self.step_starts[p]

    def rank_indices(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[int, range]:
        """The phase and blend indices rank `rank` trains on at global step `step`."""
        p, local = self.locate(step)
        phase = self.plan.phases[p]
        check_split(phase.name, phase.samples_per_step, world_size)
        first, stop = rank_share(phase.samples_per_step, rank, world_size)
        base = local * phase.samples_per_step
        return p, range(base + first, base + stop)


def rank_share(samples_per_step: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank `rank`'s contiguous slice [first, stop) of a step's samples. When the world size
    does not divide the samples, the first ranks take one sample fewer; the loss is normalised
    by the global batch's token count (mixc/train/loop.py), so unequal shares still sum to the
    global batch's exact mean-loss gradient."""
    return samples_per_step * rank // world_size, samples_per_step * (rank + 1) // world_size


def check_split(phase: str, samples_per_step: int, world_size: int) -> None:
    """A phase with fewer samples per step than ranks cannot give every rank a sample."""
    if world_size > samples_per_step:
        raise MixcError(f"phase '{phase}': {samples_per_step} samples per step cannot be shared by {world_size} ranks "
                        f"(a rank would have none); world sizes 1 to {samples_per_step} work for this phase (context "
                        "parallelism, which splits one sample over ranks, is not implemented)")


def micro_batch_sizes(plan: Plan, requested: int | None = None, tokens: int = 8192) -> list[int]:
    """Sequences per forward pass for each phase: the recipe phase's `micro_batch_size`, else
    `requested` (the CLI's --micro-batch-size), else as many sequences as fit in `tokens`
    (at least one), so a long-context phase does not inherit a short phase's micro-batch."""
    phases = plan.recipe.phases if plan.recipe is not None else [None] * len(plan.phases)
    out = []
    for p, spec in zip(plan.phases, phases):
        own = getattr(spec, "micro_batch_size", None)
        out.append(own or requested or max(1, tokens // p.sequence_length))
    return out


class MicroBatches:
    """Map-style view: item j -> the j-th micro-batch of one rank, from a given start step.

    Used by torch's DataLoader so worker processes build batches in order; the loader's
    position (step, micro) is all the state a resumed run needs.

    Per phase, every rank runs the same number of micro-batches per step (FSDP gathers
    weights in every forward, so all ranks must make the same calls): enough for the largest
    rank share at the phase's micro-batch size, the share spread evenly over them. A rank whose
    share is one sample smaller may be left with an empty micro-batch; it runs its first sample
    again with every label ignored (-100, `padding` set), which adds exactly nothing to the loss
    and the gradient.
    """

    def __init__(self, stream: CurriculumStream, micro_batch_size: int | Sequence[int], rank: int = 0,
                 world_size: int = 1):
        self.stream, self.rank, self.world = stream, rank, world_size
        phases = stream.plan.phases
        sizes = [micro_batch_size] * len(phases) if isinstance(micro_batch_size, int) else list(micro_batch_size)
        if len(sizes) != len(phases) or min(sizes) < 1:
            raise MixcError(f"micro-batch sizes {sizes} do not give one positive size per phase ({len(phases)})")
        self.mbs = sizes
        self.micro_per_step, self.micro_sizes = [], []
        for p, size in zip(phases, sizes):
            check_split(p.name, p.samples_per_step, world_size)
            largest = -(-p.samples_per_step // world_size)
            n = -(-largest // size)
            self.micro_per_step.append(n)
            self.micro_sizes.append(-(-largest // n))  # the largest micro-batch any rank runs
        self.micro_starts = np.cumsum([0] + [m * p.steps for m, p in zip(self.micro_per_step, phases)]).tolist()

    def __len__(self) -> int:
        return self.micro_starts[-1]

    def position(self, j: int) -> tuple[int, int, int]:
        """Micro-batch j -> (global step, phase index, micro index within the step)."""
        p = bisect.bisect_right(self.micro_starts, j) - 1
        local = j - self.micro_starts[p]
        step_in_phase, micro = divmod(local, self.micro_per_step[p])
        return self.stream.step_starts[p] + step_in_phase, p, micro

    def first_of_step(self, step: int) -> int:
        p, local = self.stream.locate(step)
        return self.micro_starts[p] + local * self.micro_per_step[p]

    def micro_indices(self, step: int, micro: int) -> tuple[int, range]:
        """The phase and the blend indices of this rank's micro-batch `micro` of `step` (maybe empty)."""
        p, indices = self.stream.rank_indices(step, self.rank, self.world)
        n, share = self.micro_per_step[p], len(indices)
        # Ceil bounds: the even spread leaves any empty micro-batch at the end of the step.
        return p, indices[-(-share * micro // n) : -(-share * (micro + 1) // n)]

    def __getitem__(self, j: int) -> dict:
        step, p, micro = self.position(j)
        _, indices = self.micro_indices(step, micro)
        phase = self.stream.phases[p]
        padding = len(indices) == 0
        if padding:
            _, share = self.stream.rank_indices(step, self.rank, self.world)
            indices = share[:1]
        batch = phase.batch_at(indices)
        if padding:
            batch["labels"] = np.full_like(batch["labels"], IGNORE_LABEL)
        batch.update(step=step, phase=p, micro=micro, micro_per_step=self.micro_per_step[p], padding=padding)
        return batch


IGNORE_LABEL = -100  # the label cross-entropy skips (mixc/train/model.py IGNORE_INDEX)


class CurriculumLoader:
    """Batches for one rank, in curriculum order, with exact resume.

    Each item is a micro-batch dict (numpy arrays; `as_torch` converts). `state_dict()` is
    the index of the next micro-batch; loading it continues at exactly the next sample.
    """

    def __init__(self, stream: CurriculumStream, micro_batch_size: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, as_torch: bool = True):
        self.batches = MicroBatches(stream, micro_batch_size, rank, world_size)
        self.num_workers, self.as_torch = num_workers, as_torch
        self.next_index = 0

    def state_dict(self) -> dict:
        state = {"next_micro_batch": self.next_index, "rank": self.batches.rank, "world_size": self.batches.world}
        packing = self.batches.stream.packing_state()
        if packing:
            state["packing"] = packing
        return state

    def load_state_dict(self, state: dict) -> None:
        if (state.get("rank"), state.get("world_size")) != (self.batches.rank, self.batches.world):
            raise MixcError("loader state comes from a different rank layout; resume with the same world size")
        ours = self.batches.stream.packing_state()
        if _plain(state.get("packing")) != _plain(ours):
            raise MixcError(f"loader state was packed as {state.get('packing') or 'concat'}, this run packs "
                            f"{ours or 'concat'}; resume with the packing the run was trained with")
        self.next_index = int(state["next_micro_batch"])

    def seek_step(self, step: int) -> None:
        """Start at the first micro-batch of global 0-based step `step`."""
        self.next_index = self.batches.first_of_step(step)

    def __len__(self) -> int:
        return len(self.batches) - self.next_index

    def __iter__(self) -> Iterator[dict]:
        start = self.next_index
        indices = range(start, len(self.batches))
        if self.num_workers > 0:
            import torch  # heavy: the loader is torch-free unless it runs worker processes

            it = iter(torch.utils.data.DataLoader(self.batches, batch_size=None, sampler=indices,
                                                  num_workers=self.num_workers, collate_fn=_identity,
                                                  persistent_workers=False, prefetch_factor=4))
        else:
            it = (self.batches[j] for j in indices)
        try:
            for j, batch in zip(indices, it):
                self.next_index = j + 1
                yield to_torch(batch) if self.as_torch else batch
        except MixcError as exc:
            # A worker's MixcError comes back with the worker's traceback in its text: keep the one line.
            raise MixcError(_worker_error_line(str(exc))) from None


def _worker_error_line(message: str) -> str:
    """The original message of an error torch re-raised from a DataLoader worker."""
    if "Original Traceback" not in message:
        return message
    last = [line for line in message.splitlines() if line.strip()][-1]
    return re.sub(r"^[\w.]+: ", "", last)


def _plain(value):
    """Lists for tuples, as a state that went through a checkpoint file has them."""
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def _identity(x):
    return x


def to_torch(batch: dict) -> dict:
    import torch  # heavy: only when batches are asked for as tensors

    out = dict(batch)
    for key in ("input_ids", "labels", "position_ids", "sources"):
        # No copy: input_ids and labels stay two strided views of one token buffer.
        out[key] = torch.from_numpy(np.asarray(batch[key], dtype=np.int64))
    out["cu_seqlens"] = torch.from_numpy(batch["cu_seqlens"])
    return out
