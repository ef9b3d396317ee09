"""A run's measured curves on its plan's token axis: training loss per step, held-out BPB per evaluation.

The timeline's x axis is the plan's: step s of a phase ends at
    start_token + (run_step - first_step + 1) x global_batch_tokens,
the same formula the page uses to find the step under its cursor, so a point sits exactly at the
end of the step it measures. (metrics.jsonl's own "tokens" counts whole sequences per step, a
little under the global batch when the batch is not a multiple of the sequence length; placing
points by it would drift away from the plan's phase boundaries.)

Skipped steps (their update was dropped) are left out, as in the ledger and the summary, and so are
losses that are not finite. A record whose phase is not the plan's phase at that place means the
recipe changed after the run: refused, since the curves would be drawn against another curriculum.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..plan import Plan

# The page's and the report's category order; a category outside it follows, in first-seen order.
CATEGORY_ORDER = ("web", "multilingual", "code", "math", "reasoning")


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def step_end_token(plan: Plan, record: dict[str, Any], where: str) -> int:
    """The plan's token position at the end of the step of a metrics.jsonl record."""
    index, step = record.get("phase_index"), record.get("step")
    if not isinstance(index, int) or not 0 <= index < len(plan.phases):
        raise MixcError(f"{where}: step {step} has phase_index {index!r}; the recipe has {len(plan.phases)} phases "
                        "(was the recipe changed after the run?)")
    phase = plan.phases[index]
    run_step = record.get("run_step")
    if record.get("phase") != phase.name or not isinstance(run_step, int) or not phase.first_step <= run_step <= phase.last_step:
        raise MixcError(f"{where}: step {step} was trained in phase {record.get('phase')!r} at run step {run_step!r}, "
                        f"but the recipe's phase {index + 1} is {phase.name!r} (run steps {phase.first_step}-"
                        f"{phase.last_step}): the recipe was changed after the run")
    return phase.start_token + (run_step - phase.first_step + 1) * phase.global_batch_tokens


def run_curves(plan: Plan, records: list[dict[str, Any]], run: str | Path) -> dict[str, Any]:
    """Columns of the run's loss and held-out BPB, in step order, for the timeline's run panel."""
    where = str(Path(run) / "metrics.jsonl")
    by_step: dict[int, dict[str, Any]] = {}
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("step"), int):
            by_step[r["step"]] = r  # a step written twice (never in one history): the later line wins
    loss: dict[str, list] = {"step": [], "token": [], "value": []}
    evals: list[tuple[int, int, dict[str, Any]]] = []
    for step in sorted(by_step):
        r = by_step[step]
        if r.get("skipped"):
            continue
        token = step_end_token(plan, r, where)
        value = _finite(r.get("loss"))
        if value is not None:
            loss["step"].append(step)
            loss["token"].append(token)
            loss["value"].append(value)
        if isinstance(r.get("eval"), dict):
            evals.append((step, token, r["eval"]))
    seen = [c for _, _, ev in evals for c in (ev.get("categories") or {})]
    categories = [c for c in CATEGORY_ORDER if c in seen] + list(dict.fromkeys(c for c in seen if c not in CATEGORY_ORDER))
    heldout: dict[str, Any] = {"step": [e[0] for e in evals], "token": [e[1] for e in evals],
                               "mix": [_finite((ev.get("mix") or {}).get("bpb")) for _, _, ev in evals],
                               "categories": {c: [_finite(((ev.get("categories") or {}).get(c) or {}).get("bpb"))
                                                  for _, _, ev in evals] for c in categories}}
    return {"path": str(run), "steps_done": max(by_step, default=0), "total_steps": sum(p.steps for p in plan.phases),
            "loss": loss, "heldout": heldout}
