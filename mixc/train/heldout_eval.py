"""Held-out evaluation inside the training loop (an `after_step` hook of the Trainer).

Every `eval_every` steps (the recipe's option) and at every phase end, the model is evaluated on
the store's held-out set at the current phase's sequence length and mix weights (mixc/eval.py).
The result goes into that step's record in metrics.jsonl as "eval" (categories and mix, and
"sources"), TensorBoard when installed, and the run summary's "heldout".

The default interval (`eval_every: 0`) keeps the evaluation's cost near AUTO_OVERHEAD of training:
an evaluation scores the held-out tokens forward only (about a third of a training step's work
per token), so an interval of held-out tokens / (3 x AUTO_OVERHEAD x global batch tokens) steps
costs AUTO_OVERHEAD; and no interval is shorter than a run / AUTO_MAX_EVALS, so a run whose
held-out set is small next to its batch gets at most AUTO_MAX_EVALS of them (phase ends add theirs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..eval import HeldoutSet, check_tokenizer_fingerprint, evaluate_model, has_heldout, load_heldout
from ..store import phase_manifest, phase_share
from . import checkpoint
from .export import model_from_checkpoint

AUTO_OVERHEAD = 0.03
AUTO_MAX_EVALS = 10


def auto_interval(heldout_tokens: int, global_batch_tokens: int, total_steps: int) -> int:
    by_cost = math.ceil(heldout_tokens / (3 * AUTO_OVERHEAD * global_batch_tokens))
    return max(1, by_cost, math.ceil(total_steps / AUTO_MAX_EVALS) if total_steps >= AUTO_MAX_EVALS else 1)


class HeldoutEval:
    """The hook: `trainer.after_step.append(HeldoutEval(trainer))` (no held-out data: never added)."""

    @classmethod
    def create(cls, trainer) -> HeldoutEval | None:
        """The hook, or None when no source of the store has held-out documents (a store built
        before held-out splits, or with `heldout: {documents: 0}`)."""
        return cls(trainer) if has_heldout(trainer.store, trainer.recipe.name) else None

    def __init__(self, trainer):
        self.trainer = trainer
        recipe = trainer.recipe
        self.sets: dict[int, HeldoutSet] = {}
        first = self.heldout(0)
        tokens = sum(s.tokens for s in first.sources)
        self.every = recipe.eval_every or auto_interval(tokens, recipe.global_batch_tokens, trainer.total)
        if first.missing and trainer.world.main:
            trainer.log(f"held-out: {len(first.sources)} source(s) evaluated; {len(first.missing)} have no held-out "
                        f"document and no figures: {', '.join(first.missing)} (reasons: mixc eval, or the build summary)")

    def heldout(self, phase_index: int) -> HeldoutSet:
        """The held-out set at a phase's sequence length and weights (the documents read once)."""
        if phase_index not in self.sets:
            t = self.trainer
            phase = t.plan.phases[phase_index]
            if not self.sets:
                self.sets[phase_index] = load_heldout(t.store, t.recipe.name, phase.name,
                                                      sequence_length=phase.sequence_length)
            else:
                manifest = phase_manifest(t.store, t.recipe.name, phase.name) or {"sources": []}
                self.sets[phase_index] = replace(next(iter(self.sets.values())), phase=phase.name,
                                                 sequence_length=phase.sequence_length,
                                                 weights={s["name"]: phase_share(s) for s in manifest["sources"]})
        return self.sets[phase_index]

    def __call__(self, trainer, record: dict[str, Any]) -> None:
        step, p = record["step"], record["phase_index"]
        phase_end = step == trainer.stream.step_starts[p + 1]
        if not (phase_end or step % self.every == 0 or step == trainer.end):
            return
        model = trainer.engine if trainer.fsdp else trainer.model
        with trainer.autocast:
            result = evaluate_model(model, self.heldout(p), world=trainer.world, step=step)
        record["eval"] = {k: result[k] for k in ("categories", "mix", "sources", "no_heldout")}
        if trainer.world.main:
            mix = result["mix"]["bpb"] if result["mix"] else float("nan")
            cats = ", ".join(f"{name} {c['bpb']:.3f}" for name, c in result["categories"].items())
            trainer.log(f"held-out step {step} ({record['phase']}): bpb {mix:.4f} (mix); {cats}")
            tb = getattr(trainer.metrics, "_tb", None)
            if tb is not None:
                for name, c in result["categories"].items():
                    tb.add_scalar(f"heldout/{name}_bpb", c["bpb"], step)
                if result["mix"]:
                    tb.add_scalar("heldout/mix_bpb", result["mix"]["bpb"], step)


def heldout_summary(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """summary.json's "heldout": the last evaluation, and each phase's first and last one."""
    evals = [r for r in records if r.get("eval") and not r.get("skipped")]
    if not evals:
        return None
    phases: dict[str, dict[str, Any]] = {}
    for r in evals:
        entry = phases.setdefault(r["phase"], {"first_step": r["step"], "first": _brief(r["eval"])})
        entry.update(last_step=r["step"], last=_brief(r["eval"]))
    return {"step": evals[-1]["step"], **evals[-1]["eval"], "phases": phases}


def _brief(ev: dict[str, Any]) -> dict[str, Any]:
    return {"mix_bpb": ev["mix"]["bpb"] if ev.get("mix") else None,
            "categories": {name: c["bpb"] for name, c in ev["categories"].items()}}


def eval_checkpoint(path: str | Path, *, step: int | None = None, shards: str | Path | None = None,
                    phase: str | None = None, warn: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """`mixc eval RUN [--step N]`: a run's checkpoint (its newest, or step N) on its store's held-out set.

    Here, not in mixc/eval.py: it loads a checkpoint (the train package), which sits above eval."""
    path = Path(path)
    if step is not None:
        candidates = [d for d in checkpoint.checkpoint_dirs(path / "checkpoints" if (path / "checkpoints").is_dir() else path)
                      if checkpoint.step_of(d) == step]
        if not candidates:
            raise MixcError(f"{path}: no checkpoint of step {step}")
        path = candidates[0]
    model, config, meta = model_from_checkpoint(path, warn=warn)
    store = Path(shards or meta.get("shards") or "")
    if not store.is_dir():
        raise MixcError(f"{path}: its store {store} is not there; give --shards DIR")
    heldout = load_heldout(store, meta["recipe_name"], phase or meta.get("phase"),
                           sequence_length=None if phase else meta.get("sequence_length"))
    check_tokenizer_fingerprint(heldout, meta.get("tokenizer") or {}, path)
    return evaluate_model(model, heldout, step=meta.get("step"))
