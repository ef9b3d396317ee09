"""Held-out evaluation: cross-entropy and bits per byte per source, per category and for the mix.

What is evaluated. Each source's held-out set (mixc/shards/heldout.py: documents kept out of
training by a content hash, the `evaluate` documents with the smallest hashes) at one sequence
length. A document's tokens t_1..t_n (t_n its EOS) are scored after a leading EOS, the context a
document has in a packed training sequence: inputs EOS, t_1..t_{n-1}, targets t_1..t_n. A
document longer than the sequence length is scored in consecutive windows of that length, each
from a fresh context. Every window is a row of its own (one document per row, padded at the end,
padding never scored), which is document masking with no need for a mask: a causal model cannot
see the padding after a position. A mixc model (evaluate_model, on a CPU or with flex attention)
instead packs several windows into a row, each starting at position 0, which the model treats as
a document boundary (attention and RoPE restart): the same figures, without scoring padding.
The batches are made once per held-out set and reused by every later evaluation.

The figures. For a source, with CE the summed natural-log cross-entropy of every scored token
(the EOS included) and B the UTF-8 bytes of the documents' texts (no byte for EOS):

    loss = CE / tokens          bpb = CE / ln 2 / B

A category (web, multilingual, code, math, reasoning) sums CE, tokens and bytes over its sources
(token-weighted loss, byte-weighted bpb) and says how many it covers ("sources") and how many of
its sources have no held-out document ("no_heldout"). "mix" is the phase's mix-weighted average
of the sources' figures (weights renormalized over the sources evaluated; "weight_covered" is the
share of the phase's weight they hold). A source with no held-out document (too small, or none
fell under the hash threshold) is listed in "no_heldout" with the reason, never silently dropped.

Distributed: the batches are made identically on every rank; rank r scores batches r, r+W, ...
and the per-source CE sums are all-reduced, so the result is the one-process result up to the
order of a floating-point sum. Every rank runs the same number of forward passes (FSDP needs it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from .errors import MixcError
from .packing import best_fit_decreasing
from .shards.heldout import missing_reason, read_heldout
from .store import phase_manifest, phase_share, read_manifest, read_phase_manifest, recipe_phase_manifests

CATEGORIES = ("web", "multilingual", "code", "math", "reasoning")
DEFAULT_BATCH_TOKENS = 8192
LOGIT_BUDGET = 1 << 26  # floats of logits per forward pass (256 MB): bounds the batch for a large vocabulary
# On a CPU, 16 MB of logits a pass: below glibc's mmap threshold, so the buffer is reused from the
# heap instead of mapped and page-faulted afresh, and it stays in cache (the demo's evaluation:
# 28-33% faster than with 256 MB passes, the same figures).
CPU_LOGIT_BUDGET = 1 << 22
CE_CHUNK_FLOATS = 1 << 22  # logits whose softmax is taken at once (16 MB): no second [B, T, V] buffer


@dataclass
class HeldoutSource:
    name: str
    category: str
    documents: list[tuple[np.ndarray, int]] = field(repr=False)  # (tokens incl. EOS, UTF-8 bytes)

    @property
    def tokens(self) -> int:
        return sum(len(t) for t, _ in self.documents)

    @property
    def bytes(self) -> int:
        return sum(b for _, b in self.documents)


@dataclass
class HeldoutSet:
    """What one evaluation reads: the sources' held-out documents and the phase's figures."""

    recipe: str
    phase: str
    sequence_length: int
    eos_id: int
    tokenizer: dict
    weights: dict[str, float]
    sources: list[HeldoutSource]
    # The recipe's sources with no held-out document: name -> {"category", "reason"} (reported, not scored).
    missing: dict[str, dict[str, str | None]] = field(default_factory=dict)
    # The forward passes of each layout, made at the first evaluation (prepared_batches); not
    # copied by dataclasses.replace, so a set with another sequence length gets its own.
    cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)


def load_heldout(store: str | Path, recipe: str, phase: str | None = None, *, sequence_length: int | None = None
                 ) -> HeldoutSet:
    """Every held-out source of a recipe's built phases; the mix weights and sequence length of `phase`
    (default: the last phase manifest by stage)."""
    store = Path(store)
    paths = recipe_phase_manifests(store, recipe)
    if not paths:
        raise MixcError(f"{store}: no phase of recipe '{recipe}' is built here")
    manifests = [read_phase_manifest(p) for p in paths]
    if phase is None:
        chosen = max(manifests, key=lambda m: (m.get("stage") or 0, m["phase"]))
    else:
        chosen = phase_manifest(store, recipe, phase)
        if chosen is None:
            raise MixcError(f"{store}: phase '{phase}' of recipe '{recipe}' is not built here")
    folders: dict[str, str] = {}
    for m in sorted(manifests, key=lambda m: (m.get("stage") or 0, m["phase"])):
        for s in m["sources"]:
            folders.setdefault(s["name"], s["folder"])
    sources, missing = [], {}
    for name, rel in folders.items():
        m = read_manifest(store / rel)
        info = m.get("heldout")
        if (reason := missing_reason(m)) is not None:
            missing[name] = {"category": (info or {}).get("category"), "reason": reason[1]}
            continue
        docs = read_heldout(store / rel, m, int(m["token_size"]), int(info.get("evaluate") or 0) or None,
                            info.get("evaluate_tokens"))
        sources.append(HeldoutSource(name, info.get("category") or "web", docs))
    if not sources:
        raise MixcError(f"{store}: no source of recipe '{recipe}' has held-out documents; rebuild with a recipe "
                        "`heldout: {documents: N}` above 0 (the default holds out 64 per source)")
    tokenizer = chosen["tokenizer"]
    return HeldoutSet(recipe, chosen["phase"], int(sequence_length or chosen["sequence_length"]), int(tokenizer["eos_id"]),
                      tokenizer, {s["name"]: phase_share(s) for s in chosen["sources"]}, sources, missing)


def has_heldout(store: str | Path, recipe: str) -> bool:
    """Whether any source a recipe's built phases name has held-out documents."""
    for path in recipe_phase_manifests(store, recipe):
        for s in read_phase_manifest(path)["sources"]:
            if (read_manifest(Path(store) / s["folder"]).get("heldout") or {}).get("documents"):
                return True
    return False


def _rows(heldout: HeldoutSet) -> list[tuple[int, np.ndarray]]:
    """(source index, EOS + tokens of one window plus its last target) for every window of every document."""
    rows = []
    L = heldout.sequence_length
    for i, source in enumerate(heldout.sources):
        for tokens, _ in source.documents:
            seq = np.concatenate([[heldout.eos_id], tokens.astype(np.int64)])
            for start in range(0, len(seq) - 1, L):
                rows.append((i, seq[start:start + L + 1]))
    return rows


def _packed_rows(windows: list[tuple[int, np.ndarray]], length: int) -> list[list[tuple[int, np.ndarray]]]:
    """The windows packed into rows of at most `length` inputs (a window's inputs are its tokens
    minus the last target), by the training packer's best-fit decreasing over all of them at once.
    Deterministic: ties keep window order."""
    sizes = np.array([len(seq) - 1 for _, seq in windows], dtype=np.int64)
    items, per_row = best_fit_decreasing(sizes, length, max(1, len(windows)), np.arange(len(windows)))
    bounds = np.concatenate(([0], np.cumsum(per_row))).tolist()
    return [[windows[k] for k in items[a:b].tolist()] for a, b in zip(bounds, bounds[1:])]


def _batches(rows: list, batch_tokens: int, width=lambda row: len(row[1]) - 1) -> list[list]:
    """Rows grouped longest first (little padding), at most `batch_tokens` (padded) per batch."""
    order = sorted(range(len(rows)), key=lambda k: (-width(rows[k]), k))
    batches, current = [], []
    for k in order:
        w = width(rows[current[0]]) if current else width(rows[k])
        if current and (len(current) + 1) * w > batch_tokens:
            batches.append(current)
            current = []
        current.append(k)
    if current:
        batches.append(current)
    return [[rows[k] for k in batch] for batch in batches]


@dataclass(frozen=True)
class _Batch:
    """One forward pass of an evaluation: inputs, targets (-100: not scored), the source of each
    target, and for packed rows the position of each input inside its window (None: one window
    per row, positions from 0)."""

    inputs: Any
    targets: Any
    sources: Any
    positions: Any = None


def _tensors(rows: list[list[tuple[int, np.ndarray]]], eos_id: int, packed: bool) -> _Batch:
    import torch  # heavy: only when a model is scored (the held-out set and the tables need no torch)

    width = max(sum(len(seq) - 1 for _, seq in row) for row in rows)
    inputs = torch.full((len(rows), width), eos_id, dtype=torch.long)
    targets = torch.full((len(rows), width), -100, dtype=torch.long)
    sources = torch.zeros((len(rows), width), dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long) if packed else None
    for j, row in enumerate(rows):
        at = 0
        for source, seq in row:
            n = len(seq) - 1
            inputs[j, at:at + n] = torch.from_numpy(seq[:-1])
            targets[j, at:at + n] = torch.from_numpy(seq[1:])
            sources[j, at:at + n] = source
            if packed:
                positions[j, at:at + n] = torch.arange(n)
            at += n
        if packed and at < width:
            positions[j, at:] = torch.arange(width - at)  # padding: a window of its own, never scored
    return _Batch(inputs, targets, sources, positions)


def prepared_batches(heldout: HeldoutSet, batch_tokens: int, packed: bool, device=None) -> list[_Batch]:
    """The evaluation's forward passes, made once per held-out set, layout and device and reused
    by every later evaluation (the held-out sequences are fixed, so are the batches)."""
    key = (heldout.sequence_length, heldout.eos_id, batch_tokens, packed, str(device))
    if key not in heldout.cache:
        windows = _rows(heldout)
        if packed:
            rows = _packed_rows(windows, heldout.sequence_length)
            groups = _batches(rows, batch_tokens, width=lambda row: sum(len(seq) - 1 for _, seq in row))
        else:
            groups = [[[window] for window in batch] for batch in _batches(windows, batch_tokens)]
        batches = [_tensors(group, heldout.eos_id, packed) for group in groups]
        if device is not None:
            batches = [_Batch(*(t if t is None else t.to(device) for t in (b.inputs, b.targets, b.sources, b.positions)))
                       for b in batches]
        heldout.cache[key] = batches
    return heldout.cache[key]


def _token_losses(logits, targets, chunk_tokens: int):
    """Cross-entropy (nats, float64) of every target position, 0 where not scored; the logits'
    softmax is taken a chunk of positions at a time, not over the whole batch at once."""
    import torch  # heavy: only when a model is scored
    import torch.nn.functional as F  # (the same)

    flat, labels = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    parts = [F.cross_entropy(flat[s:s + chunk_tokens].float(), labels[s:s + chunk_tokens], ignore_index=-100,
                             reduction="none") for s in range(0, labels.shape[0], chunk_tokens)]
    return torch.cat(parts).double()


def evaluate(score: Callable, heldout: HeldoutSet, *, world=None, device=None, vocab_size: int | None = None,
             batch_tokens: int = DEFAULT_BATCH_TOKENS, step: int | None = None, packed: bool = False) -> dict[str, Any]:
    """The evaluation of the model behind `score` on `heldout`: `score(input_ids [B, T])` -> logits
    [B, T, V]; with `packed`, several windows share a row and `score(input_ids, position_ids)`
    must keep each window to itself (positions restart at 0 at each window's start)."""
    import torch  # heavy: only when a model is scored
    import torch.distributed as dist  # (the same)

    if vocab_size:
        budget = CPU_LOGIT_BUDGET if device is None or str(device) == "cpu" else LOGIT_BUDGET
        batch_tokens = max(heldout.sequence_length, min(batch_tokens, budget // vocab_size))
    rank, size = (world.rank, world.world_size) if world is not None and world.distributed else (0, 1)
    batches = prepared_batches(heldout, batch_tokens, packed, device)
    ce = torch.zeros(len(heldout.sources), dtype=torch.float64, device=device)
    rounds = -(-len(batches) // size)
    # no_grad, not inference_mode: an FSDP2 engine unshards its parameters inside this forward, and
    # buffers made under inference_mode would be unusable by the next training step's autograd.
    with torch.no_grad():
        for r in range(rounds):
            k = r * size + rank
            batch = batches[k] if k < len(batches) else batches[-1]  # a pass whose result is dropped: same count per rank
            logits = score(batch.inputs) if batch.positions is None else score(batch.inputs, batch.positions)
            losses = _token_losses(logits, batch.targets, max(1, CE_CHUNK_FLOATS // logits.shape[-1]))
            if k < len(batches):
                ce.index_add_(0, batch.sources.reshape(-1), losses)
    if size > 1:
        dist.all_reduce(ce, op=dist.ReduceOp.SUM)
    return summarize(heldout, ce.cpu().tolist(), step=step)


def summarize(heldout: HeldoutSet, ce: list[float], step: int | None = None) -> dict[str, Any]:
    """The report of summed cross-entropies per source (see the module docstring)."""
    sources, categories = {}, {}
    for source, total in zip(heldout.sources, ce):
        tokens, nbytes = source.tokens, source.bytes
        sources[source.name] = {"category": source.category, "loss": total / tokens, "bpb": total / math.log(2) / nbytes,
                                "tokens": tokens, "bytes": nbytes, "documents": len(source.documents)}
        c = categories.setdefault(source.category, {"ce": 0.0, "tokens": 0, "bytes": 0, "sources": 0})
        c["ce"] += total
        c["tokens"] += tokens
        c["bytes"] += nbytes
        c["sources"] += 1
    uncovered: dict[str, int] = {}
    for entry in heldout.missing.values():
        uncovered[entry.get("category") or ""] = uncovered.get(entry.get("category") or "", 0) + 1
    cats = {name: {"loss": c["ce"] / c["tokens"], "bpb": c["ce"] / math.log(2) / c["bytes"], "tokens": c["tokens"],
                   "bytes": c["bytes"], "sources": c["sources"], "no_heldout": uncovered.get(name, 0)}
            for name in CATEGORIES if (c := categories.get(name))}
    weighted = {n: w for n, w in heldout.weights.items() if n in sources and w > 0}
    total_weight = sum(weighted.values())
    phase_weight = sum(w for w in heldout.weights.values() if w > 0)
    mix = ({"loss": sum(w * sources[n]["loss"] for n, w in weighted.items()) / total_weight,
            "bpb": sum(w * sources[n]["bpb"] for n, w in weighted.items()) / total_weight,
            "weight_covered": total_weight / phase_weight} if total_weight else None)
    return {"step": step, "recipe": heldout.recipe, "phase": heldout.phase, "sequence_length": heldout.sequence_length,
            "sources": sources, "categories": cats, "mix": mix, "no_heldout": dict(heldout.missing)}


def mixc_scorer(model) -> Callable:
    """`score` for a mixc SmolLM3 (or its DDP/FSDP wrapper), packed rows: the model restarts
    positions and attention at every position 0, as for training's packed documents."""
    def score(input_ids, position_ids=None):
        logits, _ = model(input_ids, position_ids=position_ids)
        return logits
    return score


def evaluate_model(model, heldout: HeldoutSet, *, world=None, step: int | None = None,
                   batch_tokens: int = DEFAULT_BATCH_TOKENS) -> dict[str, Any]:
    """Evaluate a mixc model in eval mode (its training mode restored after)."""
    inner = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    try:
        device = next(inner.parameters()).device
        # Packed rows attend per window: on a CPU one causal call per window, with flex a block
        # mask; a GPU's plain SDPA would need a [T, T] mask per row (4 GiB at 64k), so it pads.
        packed = device.type == "cpu" or getattr(inner, "attention", None) == "flex"
        return evaluate(mixc_scorer(model), heldout, world=world, device=device, step=step,
                        vocab_size=getattr(getattr(inner, "config", None), "vocab_size", None), batch_tokens=batch_tokens,
                        packed=packed)
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------- `mixc eval`


def check_tokenizer_fingerprint(heldout: HeldoutSet, tokenizer: dict, where) -> None:
    if tokenizer.get("fingerprint") and tokenizer["fingerprint"] != heldout.tokenizer.get("fingerprint"):
        raise MixcError(f"{where}: trained with tokenizer '{tokenizer.get('name')}', the store's held-out shards use "
                        f"'{heldout.tokenizer.get('name')}' (another vocabulary): the figures would mean nothing")


def _check_hf_tokenizer(model_dir: Path, store: Path, heldout: HeldoutSet) -> None:
    """The HF model's tokenizer must encode as the store's: same vocabulary, same ids on a probe."""
    theirs = model_dir / "tokenizer.json"
    if not theirs.is_file():
        raise MixcError(f"{model_dir}: no tokenizer.json, so it cannot be checked against the store's tokenizer; refusing")
    ours = Tokenizer.from_file(str(store / heldout.tokenizer["file"]))
    other = Tokenizer.from_file(str(theirs))
    probe = "Held-out text, naïve café 数据 ✓\n\tdef f(x): return x**2 + 3.14159  # 42"
    if (ours.get_vocab(with_added_tokens=True) != other.get_vocab(with_added_tokens=True)
            or ours.encode(probe, add_special_tokens=False).ids != other.encode(probe, add_special_tokens=False).ids):
        raise MixcError(f"{model_dir}: its tokenizer does not match the store's '{heldout.tokenizer.get('name')}' "
                        "(vocabulary or encoding differs); refusing to evaluate")


def eval_hf(model_dir: str | Path, shards: str | Path, *, recipe: str | None = None, phase: str | None = None,
            sequence_length: int | None = None) -> dict[str, Any]:
    """`mixc eval HF_MODEL_DIR --shards DIR`: any transformers causal LM with the store's tokenizer."""
    import torch  # heavy: only when a model is scored

    model_dir, store = Path(model_dir), Path(shards)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise MixcError(f"{model_dir}: not a checkpoint or run folder, nor a Hugging Face model folder (no config.json)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    mixc_info = config.get("mixc") or {}
    if recipe is None:
        names = sorted(p.name for p in (store / "phases").iterdir() if p.is_dir()) if (store / "phases").is_dir() else []
        if len(names) != 1:
            raise MixcError(f"{store}: holds phases of {len(names)} recipes ({', '.join(names) or 'none'}); give --recipe NAME")
        recipe = names[0]
    heldout = load_heldout(store, recipe, phase or mixc_info.get("phase"),
                           sequence_length=sequence_length or mixc_info.get("trained_sequence_length"))
    _check_hf_tokenizer(model_dir, store, heldout)
    try:
        from transformers import AutoModelForCausalLM  # heavy, and only for a Hugging Face model

        model = AutoModelForCausalLM.from_pretrained(str(model_dir), torch_dtype=torch.float32)
    except Exception as exc:
        raise MixcError(f"{model_dir}: transformers cannot load this model ({type(exc).__name__}: {exc})") from None
    model.eval()

    def score(input_ids):
        return model(input_ids=input_ids, use_cache=False).logits

    return evaluate(score, heldout, device=torch.device("cpu"), vocab_size=model.config.vocab_size,
                    step=mixc_info.get("step"))


def format_table(result: dict[str, Any]) -> str:
    lines = [f"held-out evaluation: recipe {result['recipe']}, phase {result['phase']}, step {result['step']}, "
             f"sequence length {result['sequence_length']}",
             f"{'source':<24} {'category':<13} {'docs':>5} {'tokens':>9} {'bytes':>10} {'loss':>8} {'bpb':>8}"]
    for name, s in result["sources"].items():
        lines.append(f"{name:<24} {s['category']:<13} {s['documents']:>5} {s['tokens']:>9} {s['bytes']:>10} "
                     f"{s['loss']:>8.4f} {s['bpb']:>8.4f}")
    for name, entry in (result.get("no_heldout") or {}).items():
        lines.append(f"{name:<24} {entry.get('category') or '?':<13} no held-out: {entry['reason']}")
    for name, c in result["categories"].items():
        covers = f"  {c['sources']} source(s)" + (f", {c['no_heldout']} without held-out" if c.get("no_heldout") else "") \
            if "sources" in c else ""
        lines.append(f"{'[' + name + ']':<24} {'':<13} {'':>5} {c['tokens']:>9} {c['bytes']:>10} {c['loss']:>8.4f} "
                     f"{c['bpb']:>8.4f}{covers}")
    if result.get("mix"):
        mix = result["mix"]
        covered = f"  {mix['weight_covered']:.1%} of the phase's weight" if mix.get("weight_covered", 1) < 1 else ""
        lines.append(f"{'[mix of ' + result['phase'] + ']':<63} {mix['loss']:>8.4f} {mix['bpb']:>8.4f}{covered}")
    return "\n".join(lines)
