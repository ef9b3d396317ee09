"""What binds a run to its recipe and its data, and what `train --resume` lets change.

A checkpoint's meta records the run's binding: the recipe as validated (every field, defaults
included), the store's tokenizer, and per phase the numbers that decide its samples (steps,
sequence length, samples per step, RoPE base) with, per source, its share, store folder key,
token count and a digest of its shard checksums. On resume the binding of the recipe and store
at hand is compared with the checkpoint's, and every recipe field follows its rule in
RESUME_RULES (the README's "Resume rules" table lists the same):

  refused  the run stops with one line naming the field (or phase and source) and both values;
  warned   the new value is applied from the first resumed step, and a warning names the field;
  applied  the new value is applied; it cannot change what is trained, so nothing is said;
  phase    refused while the phase has started (any step of it trained), warned before that.

A phase's steps (or tokens) have their own rule: a phase already finished keeps them; the phase
the checkpoint is in may change them, not below the steps it has trained (its blend does not
depend on its length, so the steps trained keep their samples); later phases are warned.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..store import phase_manifest, read_manifest

REFUSED, WARNED, APPLIED, PHASE, STEPS = "refused", "warned", "applied", "phase", "steps"

# Recipe field -> (rule, why). `phases[]` fields apply per phase; tests check every field of
# spec.Recipe has a rule here, so a new recipe field cannot be silently ignored on resume.
RESUME_RULES: dict[str, tuple[str, str]] = {
    "name": (REFUSED, "a checkpoint belongs to one recipe"),
    "description": (APPLIED, "text only"),
    "tokenizer": (REFUSED, "the token ids the model learnt; the store's tokenizer fingerprint is checked too"),
    "model": (REFUSED, "the checkpoint's weights have that model's shape"),
    "global_batch_tokens": (REFUSED, "samples per step decide which samples every trained step read"),
    "seed": (REFUSED, "the sample map and the initialization depend on it"),
    "epoch_warning": (APPLIED, "only changes the plan's warnings"),
    "mask_document_starts": (WARNED, "the loss counts other labels from the resumed step on"),
    "eval_every": (APPLIED, "when the held-out set is scored; no trained step depends on it"),
    "heldout.tokens": (APPLIED, "how much of each source's held-out set is scored"),
    "heldout.documents": (REFUSED, "which documents are held out shapes the store (its keys) and the training set"),
    "heldout.max_fraction": (REFUSED, "as heldout.documents"),
    "nonfinite.policy": (WARNED, "decides what a later non-finite step does; steps already dropped stay dropped"),
    "nonfinite.limit": (WARNED, "as nonfinite.policy"),
    "schedule.type": (WARNED, "the learning rate of every later step follows the new schedule"),
    "schedule.peak_lr": (WARNED, "as schedule.type"),
    "schedule.warmup_steps": (WARNED, "as schedule.type"),
    "schedule.decay_start_step": (WARNED, "as schedule.type"),
    "schedule.decay_steps": (WARNED, "as schedule.type"),
    "schedule.final_lr": (WARNED, "as schedule.type"),
    "optimizer.type": (REFUSED, "the optimizer state belongs to one algorithm"),
    "optimizer.beta1": (WARNED, "set on the restored optimizer (its moments are kept)"),
    "optimizer.beta2": (WARNED, "as optimizer.beta1"),
    "optimizer.eps": (WARNED, "as optimizer.beta1"),
    "optimizer.weight_decay": (WARNED, "as optimizer.beta1"),
    "optimizer.grad_clip": (WARNED, "used from the resumed step on"),
    "optimizer.z_loss": (WARNED, "used from the resumed step on"),
    "phases[].name": (PHASE, "names the phase manifest, hence the sources it blends"),
    "phases[].stage": (APPLIED, "a label (build selects phases by it)"),
    "phases[].mix": (PHASE, "the sources, their shares and their store contents are compared, not the file name"),
    "phases[].steps": (STEPS, "see the steps rule"),
    "phases[].tokens": (STEPS, "as phases[].steps (tokens decide the steps)"),
    "phases[].start_step": (APPLIED, "only a check of the plan"),
    "phases[].sequence_length": (PHASE, "the samples a step reads"),
    "phases[].rope_theta": (PHASE, "the positions the trained steps saw"),
    "phases[].run": (PHASE, "the run's step counter and schedule"),
    "phases[].packing.mode": (PHASE, "the samples a step reads (concat or whole documents)"),
    "phases[].packing.window": (PHASE, "as phases[].packing.mode"),
    "phases[].micro_batch_size": (APPLIED, "only splits a step into forward passes; the step's batch and gradient are the same"),
    "phases[].schedule.type": (WARNED, "as schedule.type, for this phase's run"),
    "phases[].schedule.peak_lr": (WARNED, "as phases[].schedule.type"),
    "phases[].schedule.warmup_steps": (WARNED, "as phases[].schedule.type"),
    "phases[].schedule.decay_start_step": (WARNED, "as phases[].schedule.type"),
    "phases[].schedule.decay_steps": (WARNED, "as phases[].schedule.type"),
    "phases[].schedule.final_lr": (WARNED, "as phases[].schedule.type"),
}


def content_digest(manifest: dict) -> str:
    """The shards of a source folder, by their manifest's checksums (no data read)."""
    files = [[f.get("path"), f.get("tokens"), f.get("documents"), f.get("sha256"), f.get("index_sha256")]
             for f in manifest.get("files", [])]
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]


def data_binding(store: str | Path, plan) -> dict[str, Any]:
    """The store side of a run's binding: its tokenizer and, per phase, what decides its samples."""
    store = Path(store)
    recipe = plan.recipe.name
    tokenizer: dict = {}
    phases = []
    first_step = 0
    for p in plan.phases:
        m = phase_manifest(store, recipe, p.name) or {}
        tokenizer = tokenizer or dict(m.get("tokenizer") or {})
        folders = {s["name"]: s["folder"] for s in m.get("sources", [])}
        sources = []
        for s in p.sources:
            entry: dict[str, Any] = {"name": s.name, "share": s.share}
            if s.name in folders:
                sm = read_manifest(store / folders[s.name])
                entry |= {"key": sm.get("key") or Path(folders[s.name]).name, "tokens": int(sm["tokens"]),
                          "content": content_digest(sm)}
            sources.append(entry)
        phases.append({"name": p.name, "run": p.run, "steps": p.steps, "first_step": first_step,
                       "sequence_length": p.sequence_length, "rope_theta": p.rope_theta,
                       "samples_per_step": p.samples_per_step, "sources": sources})
        first_step += p.steps
    return {"tokenizer": {k: tokenizer.get(k) for k in ("name", "fingerprint", "vocab_size", "eos_id")}, "phases": phases}


def run_binding(recipe, data: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint's meta records under "binding"."""
    return {"recipe": recipe.model_dump(mode="json"), **data}


def plan_digest(plan, data: dict[str, Any] | None = None) -> str:
    """A digest of what decides a run's data and schedule: the plan's numbers and, with `data`
    (data_binding), each source's store key, size and shard checksums."""
    stored = {}
    for phase in (data or {}).get("phases", []):
        for s in phase["sources"]:
            stored[(phase["name"], s["name"])] = [s.get("key"), s.get("tokens"), s.get("content")]
    numbers = [[p.name, p.run, p.steps, p.sequence_length, p.rope_theta, p.global_batch_tokens,
                p.schedule.model_dump(mode="json"),
                [[s.name, s.share, *stored.get((p.name, s.name), [])] for s in p.sources]] for p in plan.phases]
    if data:
        numbers.append((data.get("tokenizer") or {}).get("fingerprint"))
    return hashlib.sha256(json.dumps(numbers, sort_keys=True).encode()).hexdigest()[:16]


def check_resume(old: dict[str, Any], new: dict[str, Any], start_step: int, where: str | Path) -> list[str]:
    """Apply the resume rules to a checkpoint's binding `old` and the present one `new`.

    Raises MixcError (one line, the first refused change with both values); returns the
    warnings (one line each) for the changes that are applied."""
    refused: list[str] = []
    warned: list[str] = []
    old_tok, new_tok = old.get("tokenizer") or {}, new.get("tokenizer") or {}
    if old_tok.get("fingerprint") != new_tok.get("fingerprint"):
        refused.append(f"the shard store's tokenizer changed: {_tok(old_tok)} when the checkpoint was written, "
                       f"{_tok(new_tok)} now; resume on the store the run was trained on")
    for path, (a, b) in _changes(old["recipe"], new["recipe"]).items():
        rule = RESUME_RULES.get(_generic(path), (REFUSED, ""))[0]
        if path.startswith("phases["):
            continue  # phases are compared phase by phase below
        if rule == REFUSED:
            refused.append(f"recipe field '{path}' changed from {_show(a)} to {_show(b)}; resuming with a new "
                           f"{path} is refused ({RESUME_RULES.get(path, ('', 'it decides the run'))[1]})")
        elif rule == WARNED:
            warned.append(f"{path} {_show(a)} -> {_show(b)}")
    _check_phases(old, new, start_step, refused, warned)
    if refused:
        more = f" (and {len(refused) - 1} more refused change(s))" if len(refused) > 1 else ""
        raise MixcError(f"cannot resume from {where}: {refused[0]}{more}")
    if warned:
        return [f"warning: resuming with changed settings, applied from step {start_step + 1} on: " + "; ".join(warned)]
    return []


def _check_phases(old: dict, new: dict, start_step: int, refused: list[str], warned: list[str]) -> None:
    old_phases, new_phases = old["phases"], new["phases"]
    old_recipe, new_recipe = old["recipe"].get("phases", []), new["recipe"].get("phases", [])
    n_started = sum(p["first_step"] < start_step for p in old_phases)
    for i, was in enumerate(old_phases):
        now = new_phases[i] if i < len(new_phases) else None
        label = f"phase '{was['name']}'"
        if now is None:
            (refused if i < n_started else warned).append(f"{label} was removed")
            continue
        diffs = _phase_diffs(was, now)
        steps = f"steps {was['steps']} -> {now['steps']}" if was["steps"] != now["steps"] else None
        trained = start_step - was["first_step"]
        if i < n_started:
            if steps and i < n_started - 1:
                refused.append(f"{label} is finished and changed: {steps}")
            elif steps and now["steps"] < trained:
                refused.append(f"{label} has trained {trained} steps and now has only {now['steps']}")
            elif steps:
                warned.append(f"{label} {steps}")
            if diffs:
                refused.append(f"{label} has started (the checkpoint is at step {start_step}) and changed: {diffs[0]}")
        elif diffs or steps:
            warned.append(f"{label} (not started) changed: {(diffs or [steps])[0]}")
        if i < len(old_recipe) and i < len(new_recipe):
            for path, (a, b) in _changes(old_recipe[i].get("schedule") or {}, new_recipe[i].get("schedule") or {}).items():
                warned.append(f"{label} schedule.{path} {_show(a)} -> {_show(b)}")
    added = [p["name"] for p in new_phases[len(old_phases):]]
    if added:
        warned.append(f"phase(s) {', '.join(added)} added")


def _phase_diffs(was: dict, now: dict) -> list[str]:
    """What changed in a phase's samples, one phrase each (steps apart: they have their own rule)."""
    diffs = [f"{key} {_show(was[key])} -> {_show(now[key])}"
             for key in ("name", "run", "sequence_length", "rope_theta", "samples_per_step") if was[key] != now[key]]
    before = {s["name"]: s for s in was["sources"]}
    after = {s["name"]: s for s in now["sources"]}
    for name in sorted(before.keys() - after.keys()):
        diffs.append(f"source '{name}' left its mix")
    for name in sorted(after.keys() - before.keys()):
        diffs.append(f"source '{name}' joined its mix")
    for name in sorted(before.keys() & after.keys()):
        a, b = before[name], after[name]
        if not math.isclose(a["share"], b["share"], rel_tol=1e-12, abs_tol=1e-15):
            diffs.append(f"source '{name}' share {a['share']:.6g} -> {b['share']:.6g}")
        elif a.get("key") != b.get("key"):
            diffs.append(f"source '{name}' store folder key {a.get('key')} -> {b.get('key')} (the source was rebuilt "
                         "from other input or with other options)")
        elif a.get("tokens") != b.get("tokens") or a.get("content") != b.get("content"):
            diffs.append(f"source '{name}' contents changed under the same key {a.get('key')} ({a.get('tokens')} -> "
                         f"{b.get('tokens')} tokens, shard checksums {a.get('content')} -> {b.get('content')})")
    return diffs


def _changes(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Leaf paths ('optimizer.beta1', 'phases[2].steps') whose values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: dict[str, tuple[Any, Any]] = {}
        for key in sorted(a.keys() | b.keys()):
            out |= _changes(a.get(key), b.get(key), f"{prefix}.{key}" if prefix else key)
        return out
    if isinstance(a, list) and isinstance(b, list) and prefix == "phases":
        out = {}
        for i in range(max(len(a), len(b))):
            out |= _changes(a[i] if i < len(a) else None, b[i] if i < len(b) else None, f"{prefix}[{i}]")
        return out
    return {} if a == b else {prefix: (a, b)}


def _generic(path: str) -> str:
    head, _, rest = path.partition("]")
    return f"phases[]{rest}" if path.startswith("phases[") else head


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value)


def _tok(info: dict) -> str:
    return f"'{info.get('name')}' (fingerprint {str(info.get('fingerprint'))[:12]})"


def resume_warnings(meta: dict[str, Any], recipe, plan, data: dict[str, Any], where: str | Path) -> list[str]:
    """check_resume for a checkpoint's meta; a checkpoint older than the binding gets the old
    model check and a digest warning (its data cannot be compared)."""
    start_step = int(meta.get("step", 0))
    if "binding" in meta:
        return check_resume(meta["binding"], run_binding(recipe, data), start_step, where)
    if meta.get("model") not in (None, recipe.model):
        raise MixcError(f"cannot resume from {where}: it trained model '{meta['model']}', the recipe names '{recipe.model}'")
    lines = [f"warning: {where} records no data binding (written by an older mixc); the store cannot be checked against it"]
    if meta.get("plan_digest") not in (None, plan_digest(plan)):
        lines.append("warning: the recipe or its mixes changed since the checkpoint was written; the run continues with "
                     "the new numbers from here on")
    return lines


OPTIMIZER_SETTINGS = ("betas", "eps", "weight_decay")


def optimizer_settings(optimizer) -> list[dict[str, Any]]:
    """The recipe's settings of a freshly built optimizer, per parameter group."""
    return [{k: g[k] for k in OPTIMIZER_SETTINGS if k in g} for g in optimizer.param_groups]


def restore_settings(optimizer, settings: list[dict[str, Any]]) -> None:
    """load_state_dict brings back the checkpoint's betas, eps and weight decay with the moments;
    the recipe's settings win (a changed one was announced by check_resume)."""
    if len(settings) != len(optimizer.param_groups):
        raise MixcError(f"the checkpoint's optimizer has {len(optimizer.param_groups)} parameter groups, the model "
                        f"builds {len(settings)}")
    for group, wanted in zip(optimizer.param_groups, settings):
        group.update(wanted)
