"""Epoch accounting against built shards: what each phase asks of a source, what the store holds.

`mixc plan --shards` and `mixc report --shards` both plan with `shard_plan`, so they print the
same numbers. Demanded tokens are the plan's budgets (normalized weight x phase tokens, rounded
so a phase's budgets add up to its tokens); available tokens are the source's manifest count
(the folder the recipe's phase manifest names, else the newest finished folder of that source).
Epochs are demanded / available, per phase and cumulative over the curriculum, because a source
reused in a later phase continues where the earlier phases stopped.

A positive weight on a source with no tokens (never built, or a manifest of 0 tokens) is
refused: the loader could never serve it, and it is better to learn that before a run starts.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..plan import PhasePlan, Plan
from ..project import load_plan
from ..store import source_token_counts
from ..text import human_tokens, table

SCHEMA = "mixc.epochs/1"


def shard_plan(paths: list[str] | None, store: str | Path, *, tokens: int | None = None,
               epoch_warning: float | None = None, phase: str | None = None) -> Plan:
    """The plan of a recipe (or mixes) with source sizes from a shard store's manifests.

    With `phase` (a stage number or phase name), only that phase must be servable; the
    others still count toward cumulative epochs."""
    first = load_plan(paths, tokens=tokens, epoch_warning=epoch_warning)
    recipe_name = first.recipe.name if first.recipe else None
    counts = source_token_counts(store, recipe_name)
    plan = load_plan(paths, tokens=tokens, epoch_warning=epoch_warning, source_tokens=counts)
    if plan.recipe is not None:
        phases = plan.phases
        if phase is not None:
            try:
                phases = [plan.phase(phase)]
            except KeyError as exc:
                raise MixcError(exc.args[0]) from None
        problems = unservable_sources(phases, counts, store)
        if problems:
            raise MixcError("cannot plan against the shards:\n  " + "\n  ".join(problems))
    return plan


def unservable_sources(phases: list[PhasePlan], counts: dict[str, int], store: str | Path) -> list[str]:
    """One line per phase naming its sources with a positive weight and no tokens in the store."""
    out = []
    for p in phases:
        stage = p.stage if p.stage is not None else p.name
        unbuilt = [s for s in p.sources if s.share > 0 and s.name not in counts]
        empty = [s for s in p.sources if s.share > 0 and counts.get(s.name, None) == 0]
        if unbuilt:
            names = _named(unbuilt)
            out.append(f"phase '{p.name}': {_sources(unbuilt)} with a positive weight not built in {store}: {names} "
                       f"(run `mixc build --stage {stage}`)")
        if empty:
            names = _named(empty)
            out.append(f"phase '{p.name}': {_sources(empty)} with a positive weight but 0 tokens in {store}: {names}; "
                       "give it a zero weight or fix its input")
    return out


def _named(items: list, most: int = 6) -> str:
    """The first few sources by weight, then how many more: a whole catalog is not a message."""
    heavy = sorted(items, key=lambda s: -s.weight)
    text = ", ".join(f"'{s.name}' (weight {s.weight:g})" for s in heavy[:most])
    return text + (f" and {len(heavy) - most} more" if len(heavy) > most else "")


def _sources(items: list) -> str:
    return "source" if len(items) == 1 else f"{len(items)} sources"


def _finite(x: float | None) -> float | None:
    return None if x is None or math.isinf(x) or math.isnan(x) else x


def epochs_data(plan: Plan, store: str | Path | None = None, phase: str | None = None) -> dict[str, Any]:
    """Per phase (or only `phase`) and source: demanded and available tokens, epochs in the
    phase and cumulative."""
    phases = []
    for p in ([plan.phase(phase)] if phase is not None else plan.phases):
        sources = []
        for s in sorted(p.sources, key=lambda s: -s.share):
            sources.append({
                "name": s.name,
                "share": s.share,
                "demanded_tokens": s.tokens,
                "tokens_before": s.tokens_before,
                "available_tokens": s.available_tokens,
                "epochs": _finite(s.epochs),
                "cumulative_epochs": _finite(s.cumulative_epochs),
                "over_epoch_warning": bool(s.cumulative_epochs and s.cumulative_epochs > plan.epoch_warning),
            })
        phases.append({"name": p.name, "stage": p.stage, "tokens": p.tokens, "sources": sources})
    return {"schema": SCHEMA, "name": plan.name, "store": None if store is None else str(store),
            "epoch_warning": plan.epoch_warning, "phases": phases,
            "warnings": [w for w in plan.warnings if not phase or any(w.startswith(f"{p['name']}: ") for p in phases)]}


def _epochs(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


HEADERS = ["source", "share", "demanded", "available", "epochs", "cum. epochs"]


def render_epochs(data: dict[str, Any]) -> str:
    where = f" against {data['store']}" if data["store"] else " (catalog sizes)"
    out = [f"{data['name']}: epochs per source{where}; warning above {data['epoch_warning']:g} epochs"]
    for p in data["phases"]:
        stage = f" (stage {p['stage']})" if p["stage"] is not None else ""
        out += ["", f"{p['name']}{stage}: {human_tokens(p['tokens'])} tokens"]
        rows = [[s["name"], f"{100 * s['share']:.3f}%", human_tokens(s["demanded_tokens"]), human_tokens(s["available_tokens"]),
                 _epochs(s["epochs"]), _epochs(s["cumulative_epochs"]) + (" !" if s["over_epoch_warning"] else "")]
                for s in p["sources"]]
        out += ["  " + line for line in table(HEADERS, rows, "lrrrrr")]
    if data["warnings"]:
        out += ["", *(f"warning: {w}" for w in data["warnings"])]
    return "\n".join(out) + "\n"


def render(data: dict[str, Any], fmt: str) -> str:
    return json.dumps(data, indent=2) + "\n" if fmt == "json" else render_epochs(data)
