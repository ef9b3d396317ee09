"""The spec pass: catalogs, mixes and recipes loaded from YAML into `schema`'s models.

Loading keeps YAML positions (see `locyaml`) so that a validation error names
file:line:column and the offending key. Cross-file checks (unknown sources, missing mixes,
phase extents) also live here; arithmetic does not (that is `plan`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from .locyaml import Located, Location, SpecError, SpecErrors, key_path, load_file
from .schema import (  # noqa: F401  (re-exported: `from mixc.spec import Source, parse_count` stays the one spelling)
    CATEGORIES,
    DEFAULT_LANGUAGE,
    FORMATS,
    MAX_COUNT,
    MAX_LR,
    NAME_CHARS,
    NAME_MAX,
    Catalog,
    Count,
    Filter,
    Finite,
    Heldout,
    InlineEntry,
    Mix,
    Name,
    NonFinite,
    Number,
    Optimizer,
    Packing,
    Phase,
    PositiveCount,
    Recipe,
    Schedule,
    Source,
    SourceFields,
    Strict,
    check_language,
    check_name,
    json_schemas,
    parse_count,
)

# ---------------------------------------------------------------------------
# Loading: YAML -> models, with errors located


def _kind_of(data: Any) -> str | None:
    if not isinstance(data, dict):
        return None
    if "phases" in data:
        return "recipe"
    if "sources" not in data:
        return None
    if "catalog" in data or "weights" in data or not isinstance(data["sources"], dict):
        return "mix"
    # A mix entry has a weight (bare or as 'weight:'); a catalog entry never does. Go by the
    # majority so that one mistyped entry is reported against the right kind of file.
    values = list(data["sources"].values())
    weighted = sum(1 for v in values if not isinstance(v, dict) or "weight" in v)
    return "mix" if weighted * 2 >= len(values) and values else "catalog" if values else None


def _pydantic_errors(exc: ValidationError, located: Located) -> SpecErrors:
    errors = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # Union members add their type name to the path; drop what is not a real key.
        path: list[Any] = []
        for part in loc:
            if isinstance(part, str) and part not in _path_keys(located, tuple(path)):
                if part in ("float", "InlineEntry") or "[" in part or part.startswith("function-"):
                    continue
            path.append(part)
        key = key_path(path) or None
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            suggestion = _suggest(str(path[-1]), _allowed_keys(exc.title, path)) if path else ""
            msg = f"unknown key{suggestion}"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            allowed = re.findall(r"'([^']*)'", err.get("ctx", {}).get("expected", ""))
            suggestion = _suggest(str(err["input"]), allowed) if isinstance(err["input"], str) else ""
            msg = f"unknown value {err['input']!r}{suggestion}; expected one of: {', '.join(allowed)}"
        elif err["type"] in ("model_type", "dict_type", "model_attributes_type"):
            msg = f"expected a mapping, got {_describe(err['input'])}"
        elif err["type"] == "list_type":
            msg = f"expected a list, got {_describe(err['input'])}"
        elif err["type"] in ("string_type", "int_type", "int_parsing", "bool_type", "bool_parsing", "float_type", "float_parsing"):
            msg = f"{msg}, got {_describe(err['input'])}"
        elif err["type"] in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            msg = f"{msg.replace('Input should be', 'must be')}, got {err['input']!r}"
        msg = msg.removeprefix("Value error, ")
        errors.append(SpecError(msg, located.where(tuple(path)), key))
    return SpecErrors(_dedupe(errors))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    return f"{type(value).__name__} {value!r}"


def _path_keys(located: Located, path: tuple) -> set:
    node = located.data
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return set()
    return set(node) if isinstance(node, dict) else set()


def _allowed_keys(title: str, path: list) -> list[str]:
    for model in (Recipe, Mix, Catalog, Phase, Schedule, Optimizer, SourceFields, InlineEntry):
        if model.__name__ == title:
            break
    else:
        return []
    return _fields_along(model, path[:-1])


def _fields_along(model: Any, path: list) -> list[str]:
    nested = {
        ("Recipe", "phases"): Phase,
        ("Recipe", "schedule"): Schedule,
        ("Recipe", "optimizer"): Optimizer,
        ("Phase", "schedule"): Schedule,
        ("Catalog", "sources"): SourceFields,
        ("Mix", "sources"): InlineEntry,
        ("SourceFields", "filter"): Filter,
        ("InlineEntry", "filter"): Filter,
    }
    for part in path:
        if isinstance(part, int) or (model in (SourceFields, InlineEntry) and part not in model.model_fields):
            continue
        model = nested.get((model.__name__, part), model)
    return list(model.model_fields)


def _suggest(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _dedupe(errors: list[SpecError]) -> list[SpecError]:
    seen, out = set(), []
    for e in errors:
        key = (str(e.location), e.key, e.message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _not_a_mapping(located: Located) -> SpecError:
    if located.data is None:
        return SpecError("the file is empty; expected a recipe, mix or catalog mapping", located.where(()))
    return SpecError(f"expected a mapping at the top level, the file holds {_describe(located.data)[:60]}", located.where(()))


def _validate(model: type[BaseModel], located: Located) -> Any:
    if not isinstance(located.data, dict):
        raise SpecErrors([_not_a_mapping(located)])
    try:
        return model.model_validate(located.data)
    except ValidationError as exc:
        raise _pydantic_errors(exc, located) from None


def located_errors(exc: ValidationError, located: Located) -> SpecErrors:
    """Any model's ValidationError over data read from `located`, as file:line:column errors
    (the nanotron importer's config models report through here too)."""
    return _pydantic_errors(exc, located)


def load_catalog(path: str | Path) -> tuple[dict[str, Source], Located]:
    located = load_file(path)
    catalog = _validate(Catalog, located)
    sources = {name: Source(name=name, **_anchor_path(fields.model_dump(exclude_unset=True), path))
               for name, fields in catalog.sources.items()}
    return sources, located


def _anchor_path(fields: dict, spec_path: str | Path) -> dict:
    """A relative local `path` means relative to the file that says it, not to the cwd."""
    where = fields.get("path")
    if not where or "://" in where or os.path.isabs(where):
        return fields
    return {**fields, "path": os.path.normpath(Path(spec_path).parent / where)}


class ResolvedMix(BaseModel):
    """A mix with every entry bound to a full source definition."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    name: str
    weights_mode: str
    entries: list[tuple[Source, float]]
    positions: dict[str, Location]

    @property
    def weight_sum(self) -> float:
        return weight_sum([w for _, w in self.entries])


def weight_sum(weights: list[float]) -> float:
    """The exact sum of finite weights, or infinity when it exceeds the largest float."""
    try:
        return math.fsum(weights)
    except OverflowError:  # fsum refuses an intermediate overflow ('1e308 + 1e308')
        return math.inf


def _check_weight(name: str, weight: float, where: Location) -> SpecError | None:
    if math.isnan(weight):
        return SpecError("weight is NaN", where, f"sources.{name}")
    if math.isinf(weight):
        return SpecError("weight is infinite", where, f"sources.{name}")
    if weight < 0:
        return SpecError(f"weight is negative ({weight})", where, f"sources.{name}")
    return None


def load_mix(path: str | Path, catalog: dict[str, Source] | None = None) -> ResolvedMix:
    located = load_file(path)
    mix = _validate(Mix, located)
    errors: list[SpecError] = []
    if catalog is None and mix.catalog:
        cat_path = relative_to_file(path, mix.catalog)
        if not cat_path.is_file():
            raise SpecErrors([SpecError(f"catalog file '{mix.catalog}' not found", located.where(("catalog",)), "catalog")])
        if (kind := detect_kind(cat_path)) != "catalog":
            raise SpecErrors([SpecError(f"'{mix.catalog}' is a {kind}, not a catalog", located.where(("catalog",)), "catalog")])
        catalog, _ = load_catalog(cat_path)
    catalog = catalog or {}
    entries: list[tuple[Source, float]] = []
    positions: dict[str, Location] = {}
    for name, entry in mix.sources.items():
        where = located.where(("sources", name))
        positions[name] = where
        weight = entry.weight
        if (err := _check_weight(name, weight, where)) is not None:
            errors.append(err)
            continue
        inline = _anchor_path(entry.model_dump(exclude_unset=True, exclude={"weight"}), path)
        if name in catalog:
            fields = catalog[name].model_dump(exclude={"name"}, exclude_unset=True) | inline
        elif inline.get("category"):
            fields = inline
        else:
            hint = _suggest(name, list(catalog))
            known = "" if catalog else " (the mix names no catalog and defines no inline source)"
            errors.append(SpecError(f"unknown source '{name}'{hint}{known}", where, f"sources.{name}"))
            continue
        try:
            entries.append((Source(name=name, **fields), weight))
        except ValidationError as exc:
            for e in exc.errors():
                key = ".".join(["sources", name, *map(str, e["loc"])])
                errors.append(SpecError(e["msg"].removeprefix("Value error, "), where, key))
    if not errors and entries and all(w == 0 for _, w in entries):
        errors.append(SpecError("all weights are zero", located.where(("sources",)), "sources"))
    if not errors and math.isinf(weight_sum([w for _, w in entries])):
        errors.append(SpecError(f"weights sum beyond the largest number ({sys.float_info.max:.3g}); scale them down",
                                located.where(("sources",)), "sources"))
    if errors:
        raise SpecErrors(errors)
    name = mix.name or Path(path).stem
    return ResolvedMix(path=str(path), name=name, weights_mode=mix.weights, entries=entries, positions=positions)


class ResolvedRecipe(BaseModel):
    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: str
    recipe: Recipe
    mixes: list[ResolvedMix]  # one per phase, in order
    positions: dict[str, Location]


def load_recipe(path: str | Path) -> ResolvedRecipe:
    located = load_file(path)
    recipe: Recipe = _validate(Recipe, located)
    errors: list[SpecError] = []
    mixes: list[ResolvedMix] = []
    names: dict[str, int] = {}
    stages: dict[int, int] = {}
    for i, phase in enumerate(recipe.phases):
        where = located.where(("phases", i))
        if phase.name in names:
            errors.append(SpecError(f"duplicate phase name '{phase.name}'", located.where(("phases", i, "name")), f"phases[{i}].name"))
        names[phase.name] = i
        if phase.stage is not None:
            if phase.stage in stages:
                errors.append(SpecError(f"stage {phase.stage} is already phase {stages[phase.stage] + 1}", located.where(("phases", i, "stage")), f"phases[{i}].stage"))
            stages[phase.stage] = i
        if phase.steps and phase.tokens and phase.tokens != phase.steps * recipe.global_batch_tokens:
            errors.append(SpecError(
                f"steps ({phase.steps}) x global_batch_tokens ({recipe.global_batch_tokens}) = {phase.steps * recipe.global_batch_tokens} disagrees with tokens ({phase.tokens}); give one of them",
                where, f"phases[{i}]"))
        if recipe.global_batch_tokens % phase.sequence_length:
            errors.append(SpecError(
                f"global_batch_tokens ({recipe.global_batch_tokens}) is not a multiple of sequence_length ({phase.sequence_length})",
                located.where(("phases", i, "sequence_length")), f"phases[{i}].sequence_length"))
        mix_path = relative_to_file(path, phase.mix)
        if not mix_path.is_file():
            errors.append(SpecError(f"mix file '{phase.mix}' not found", located.where(("phases", i, "mix")), f"phases[{i}].mix"))
            continue
        try:
            if (kind := detect_kind(mix_path)) != "mix":
                errors.append(SpecError(f"'{phase.mix}' is a {kind}, not a mix", located.where(("phases", i, "mix")), f"phases[{i}].mix"))
                continue
            mixes.append(load_mix(mix_path))
        except SpecError as exc:
            errors.append(exc)
        except SpecErrors as exc:
            errors.extend(exc.errors)
    errors.extend(_check_runs(recipe, located))
    errors.extend(_check_total_tokens(recipe, located))
    if errors:
        raise SpecErrors(_dedupe(errors))  # a broken mix used by several phases is one error
    positions = {phase.name: located.where(("phases", i)) for i, phase in enumerate(recipe.phases)}
    return ResolvedRecipe(path=str(path), recipe=recipe, mixes=mixes, positions=positions)


def relative_to_file(spec_path: str | Path, ref: str) -> Path:
    """A path written in a spec file is relative to that file; 'recipes/../mixes' prints as 'mixes'."""
    return Path(os.path.normpath(Path(spec_path).parent / ref))


def phase_steps(recipe: Recipe, phase: Phase) -> int:
    """A phase's extent in optimizer steps: given, or derived from its token budget."""
    if phase.steps is not None:
        return phase.steps
    return -(-phase.tokens // recipe.global_batch_tokens)  # ceil: never train on less than asked


def _check_total_tokens(recipe: Recipe, located: Located) -> list[SpecError]:
    """Each count is bounded, but steps x global batch may not be: bound the curriculum too."""
    total = 0
    for i, phase in enumerate(recipe.phases):
        if not (phase.steps or phase.tokens):
            continue
        total += phase_steps(recipe, phase) * recipe.global_batch_tokens
        if total > MAX_COUNT:
            field = "steps" if phase.steps is not None else "tokens"
            return [SpecError(f"the curriculum reaches {total:,} tokens by this phase, beyond mixc's limit of "
                              f"{MAX_COUNT:.0e} (a quadrillion)", located.where(("phases", i, field)), f"phases[{i}].{field}")]
    return []


def _check_runs(recipe: Recipe, located: Located) -> list[SpecError]:
    """Phases of a run must tile its steps: no overlap, no gap; a new run brings its schedule."""
    errors = []
    step, run = 0, None
    for i, phase in enumerate(recipe.phases):
        new_run = phase.run != run
        if new_run:
            if run is not None and phase.run in {p.run for p in recipe.phases[:i]}:
                errors.append(SpecError(f"run '{phase.run}' resumes after another run; keep a run's phases together", located.where(("phases", i, "run")), f"phases[{i}].run"))
            if i > 0 and phase.schedule is None:
                errors.append(SpecError(f"phase starts run '{phase.run}' and needs its own schedule", located.where(("phases", i)), f"phases[{i}].schedule"))
            step, run = 0, phase.run
        elif phase.schedule is not None:
            errors.append(SpecError(f"a schedule may only be given on the first phase of run '{run}'", located.where(("phases", i, "schedule")), f"phases[{i}].schedule"))
        first = step + 1
        if phase.start_step is not None and phase.start_step != first:
            kind = "overlaps the previous phase" if phase.start_step < first else "leaves a gap after the previous phase"
            errors.append(SpecError(f"start_step {phase.start_step} {kind} (expected {first})", located.where(("phases", i, "start_step")), f"phases[{i}].start_step"))
        step += phase_steps(recipe, phase) if (phase.steps or phase.tokens) else 0
        if new_run:
            sched = phase.schedule if i > 0 else recipe.schedule
            errors.extend(_check_schedule(sched, recipe, i, located))
    return errors


def _check_schedule(sched: Schedule | None, recipe: Recipe, first_index: int, located: Located) -> list[SpecError]:
    if sched is None:
        return []
    run = recipe.phases[first_index].run
    total = sum(phase_steps(recipe, p) for p in recipe.phases if p.run == run)
    base = ("schedule",) if first_index == 0 else ("phases", first_index, "schedule")

    def error(field: str, message: str) -> SpecError:
        return SpecError(message, located.where(base + (field,)), key_path(base + (field,)))

    errors = []
    if sched.warmup_steps > total:
        errors.append(error("warmup_steps", f"warmup_steps ({sched.warmup_steps}) exceed the run's {total} steps"))
    if sched.type == "wsd":
        end = sched.decay_start_step + sched.decay_steps - 1
        if end > total:
            errors.append(error("decay_steps", f"decay ends at step {end}, after the run's last step {total}"))
        if sched.decay_start_step <= sched.warmup_steps:
            errors.append(error("decay_start_step", f"decay_start_step ({sched.decay_start_step}) falls inside the warmup"
                                                   f" ({sched.warmup_steps} steps)"))
    return errors


def detect_kind(path: str | Path) -> str:
    """'recipe', 'mix' or 'catalog', from the file's top-level keys."""
    located = load_file(path)
    if not isinstance(located.data, dict):
        raise _not_a_mapping(located)
    kind = _kind_of(located.data)
    if kind is None and isinstance(located.data.get("sources"), dict):
        raise SpecError("is empty; a mix or a catalog needs at least one source", located.where(("sources",)), "sources")
    if kind is None:
        keys = ", ".join(map(str, located.data)) or "none"
        raise SpecError(
            f"not a mixc spec: expected top-level 'phases' (recipe) or 'sources' (mix or catalog), found keys: {keys}",
            located.where(()))
    return kind
