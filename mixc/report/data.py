"""A plan as plain JSON-ready data: the one structure every report format renders.

The keys are a documented, stable interface (see docs/report-json.md): add keys, never
rename or remove them. Shares are fractions of 1; tokens are integers; T = 1e12 tokens.
"""

from __future__ import annotations

import math
from typing import Any

from .. import __version__
from ..plan import PhasePlan, Plan, lr_at

SCHEMA = "mixc.report/1"


def _num(x: float | None) -> float | None:
    if x is None:
        return None
    return None if math.isinf(x) or math.isnan(x) else x


def phase_data(plan: Plan, phase: PhasePlan) -> dict[str, Any]:
    sched = phase.schedule
    data: dict[str, Any] = {
        "index": phase.index,
        "name": phase.name,
        "stage": phase.stage,
        "run": phase.run,
        "mix": phase.mix_name,
        "mix_path": phase.mix_path,
        "weights": phase.weights_mode,
        "weight_sum": phase.weight_sum,
        "steps": phase.steps,
        "first_step": phase.first_step,
        "last_step": phase.last_step,
        "tokens": phase.tokens,
        "start_token": phase.start_token,
        "end_token": phase.end_token,
        "sequence_length": phase.sequence_length,
        "rope_theta": phase.rope_theta,
        "samples_per_step": phase.samples_per_step if phase.sequence_length else None,
        "schedule": sched.model_dump(),
        "lr_first_step": float(lr_at(sched, phase.first_step)) if phase.steps else None,
        "lr_last_step": float(lr_at(sched, phase.last_step)) if phase.steps else None,
        "categories": phase.categories(),
        "languages": phase.languages(),
        "sources": [
            {
                "name": s.name,
                "category": s.category,
                "language": s.language,
                "multilingual": s.multilingual,
                "weight": s.weight,
                "share": s.share,
                "tokens": s.tokens,
                "available_tokens": s.available_tokens,
                "epochs": _num(s.epochs),
                "cumulative_epochs": _num(s.cumulative_epochs),
                "over_epoch_warning": bool(s.cumulative_epochs and s.cumulative_epochs > plan.epoch_warning),
            }
            for s in phase.sources
        ],
    }
    return data


def plan_data(plan: Plan) -> dict[str, Any]:
    recipe = plan.recipe
    return {
        "schema": SCHEMA,
        "mixc_version": __version__,
        "name": plan.name,
        "path": plan.path,
        "recipe": None
        if recipe is None
        else {
            "tokenizer": recipe.tokenizer,
            "model": recipe.model,
            "global_batch_tokens": recipe.global_batch_tokens,
            "seed": recipe.seed,
            "optimizer": recipe.optimizer.model_dump(),
        },
        "epoch_warning": plan.epoch_warning,
        "total_tokens": plan.total_tokens,
        "phases": [phase_data(plan, p) for p in plan.phases],
        "warnings": list(plan.warnings),
    }
