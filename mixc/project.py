"""From paths on the command line to a plan: which files, which default recipe."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from .errors import MixcError
from .plan import DEFAULT_EPOCH_WARNING, Plan, epoch_warnings, plan_mixes, plan_recipe
from .spec import detect_kind, load_mix, load_recipe

DEFAULT_RECIPE = "recipes/smollm3-3b.yaml"


def default_recipe() -> Path:
    """$MIXC_RECIPE, else recipes/smollm3-3b.yaml under the current folder."""
    path = Path(os.environ.get("MIXC_RECIPE", DEFAULT_RECIPE))
    if not path.is_file():
        raise MixcError(f"no recipe given and the default {path} does not exist here; pass --recipe PATH (or set MIXC_RECIPE)")
    return path


def load_plan(
    paths: list[str] | None,
    tokens: int | None = None,
    epoch_warning: float | None = None,
    source_tokens: dict[str, int] | None = None,
) -> Plan:
    """A plan from one recipe, or from one or more mixes (each a phase of `tokens`)."""
    files = [Path(p) for p in paths] if paths else [default_recipe()]
    kinds = [detect_kind(f) for f in files]
    if "recipe" in kinds:
        if len(files) > 1:
            raise MixcError("give one recipe, or one or more mixes, not both")
        plan = plan_recipe(load_recipe(files[0]), source_tokens)
        if epoch_warning is not None:
            plan = _with_warning(plan, epoch_warning)
        return plan
    if "catalog" in kinds:
        raise MixcError(f"{files[kinds.index('catalog')]} is a source catalog; report takes a recipe or mixes")
    return plan_mixes([load_mix(f) for f in files], tokens, epoch_warning or DEFAULT_EPOCH_WARNING)


def _with_warning(plan: Plan, threshold: float) -> Plan:
    plan = replace(plan, epoch_warning=threshold, warnings=[])
    plan.warnings.extend(epoch_warnings(plan))
    return plan
