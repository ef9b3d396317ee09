"""The spec pass: pydantic models of catalogs, mixes and recipes, loaded from YAML.

Every model is plain data. Loading keeps YAML positions (see `locyaml`) so that a
validation error names file:line:column and the offending key. Cross-file checks
(unknown sources, missing mixes, phase extents) also live here; arithmetic does not
(that is `plan`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from .locyaml import Located, Location, SpecError, SpecErrors, key_path, load_file

CATEGORIES = ("web", "code", "math", "reasoning")
FORMATS = ("parquet", "jsonl", "hf")
DEFAULT_LANGUAGE = "eng_Latn"

_SUFFIX = {"k": 1e3, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
# The largest token or step count mixc accepts: a quadrillion tokens is ~30x the largest
# published pretraining run, and keeps every product of counts exact in int64 and float64.
MAX_COUNT = 10**15
MAX_LR = 1e4  # far above any learning rate that trains (they are below 1); 3e4 is a typo of 3e-4, 1e3 reaches the non-finite guard


def _bounded(number: int, written: Any) -> int:
    if number > MAX_COUNT:
        if isinstance(written, float):
            shown = f"{written:g}"
        elif isinstance(written, int):  # an int of thousands of digits is not printed whole
            shown = f"{written:,}" if written < 10**30 else f"about 10^{int(written.bit_length() * math.log10(2))}"
        else:
            shown = repr(written)
        raise ValueError(f"{shown} is beyond mixc's limit of {MAX_COUNT:.0e} (a quadrillion) for a count")
    return number


def parse_count(value: Any) -> Any:
    """Accept 1000, 1e12, '8.14T', '47B', '1_000' for token and step counts (at most MAX_COUNT)."""
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, str):
        text = value.strip().replace("_", "").replace(",", "")
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kKMBGT]?)", text)
        if not m:
            raise ValueError(f"expected a count such as 1000, 2.5e9 or '8.14T', got '{value}'")
        number = float(m.group(1)) * _SUFFIX.get(m.group(2), 1)
        if not math.isfinite(number):  # '1e400' parses as infinity
            raise ValueError(f"expected a finite count, got '{value}'")
        if not m.group(2) and number != int(number):  # '8.14T' is approximate by nature; '2.5' is a mistake
            raise ValueError(f"expected a whole number, got '{value}'")
        return _bounded(round(number), value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"expected a finite count, got {value}")
        if value != int(value):
            raise ValueError(f"expected a whole number, got {value}")
        return _bounded(int(value), value)
    if isinstance(value, int):
        return _bounded(value, value)
    return value


def _check_number(value: Any) -> Any:
    """Weights and rates: real numbers only (YAML 'yes' or '0.3' strings are mistakes)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a number, got {type(value).__name__} {value!r}")
    return value


def _check_finite(value: Any) -> Any:
    """Rates, coefficients and RoPE bases: a number, and neither NaN nor infinite (either would
    pass a range check or poison the trainer, the schedule and the charts)."""
    value = _check_number(value)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {value}")
    return value


# What a count may be written as, for the JSON Schema (editors should accept '8.14T' too).
_CountText = Annotated[str, Field(pattern=r"^\s*[0-9][0-9_,]*\.?[0-9_]*([eE][+-]?[0-9]+)?\s*[kKMBGT]?\s*$")]
# The bound goes before the validator so that it constrains the parsed int (and shows in the
# schema as 'minimum'/'exclusiveMinimum').
Count = Annotated[int, Field(ge=0, le=MAX_COUNT),
                  BeforeValidator(parse_count, json_schema_input_type=Annotated[int, Field(ge=0, le=MAX_COUNT)] | _CountText)]
PositiveCount = Annotated[int, Field(gt=0, le=MAX_COUNT),
                          BeforeValidator(parse_count, json_schema_input_type=Annotated[int, Field(gt=0, le=MAX_COUNT)] | _CountText)]
Number = Annotated[float, BeforeValidator(_check_number)]  # weights: load_mix says NaN / infinite / negative
Finite = Annotated[float, BeforeValidator(_check_finite)]


@lru_cache(maxsize=1)
def _iso_tables() -> tuple[frozenset[str], frozenset[str]]:
    import pycountry  # loads its ISO tables: only when a language is checked

    languages = frozenset(lang.alpha_3 for lang in pycountry.languages)
    scripts = frozenset(s.alpha_4 for s in pycountry.scripts)
    return languages, scripts


def check_language(code: str) -> str:
    """ISO 639-3 language plus ISO 15924 script, e.g. 'fra_Latn' or 'cmn_Hani'."""
    m = re.fullmatch(r"([a-z]{3})_([A-Z][a-z]{3})", code)
    if not m:
        raise ValueError(f"language '{code}' is not ISO 639-3 plus script such as 'fra_Latn'")
    languages, scripts = _iso_tables()
    if m.group(1) not in languages:
        raise ValueError(f"unknown ISO 639-3 language code '{m.group(1)}' in '{code}'")
    if m.group(2) not in scripts:
        raise ValueError(f"unknown ISO 15924 script '{m.group(2)}' in '{code}'")
    return code


# ---------------------------------------------------------------------------
# Names that become paths: store folders, phase manifests, run folders. Kept to one safe,
# documented character set so that no name can climb out of `--out` or hide a folder.

NAME_CHARS = "letters, digits and . _ + - (starting with a letter or digit)"
NAME_MAX = 128
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_name(name: str) -> str:
    """A source, phase, recipe or run name: [A-Za-z0-9][A-Za-z0-9._+-]*, no '..', at most 128 chars."""
    if not isinstance(name, str):
        raise ValueError(f"expected a name, got {type(name).__name__} {name!r}")
    problem = None
    if not name:
        problem = "is empty"
    elif len(name) > NAME_MAX:
        problem = f"is {len(name)} characters long (at most {NAME_MAX})"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif ".." in name:
        problem = "contains '..'"
    elif any(ord(c) < 32 or ord(c) == 127 for c in name):
        problem = "contains a control character"
    elif not name[0].isascii() or not name[0].isalnum():
        problem = f"starts with {name[0]!r}"
    elif (bad := next((c for c in name if not _SAFE_NAME.fullmatch("a" + c)), None)) is not None:
        problem = f"contains {bad!r}"
    if problem:
        raise ValueError(f"name {name[:60]!r} {problem}; names become folder names, so they use only {NAME_CHARS}")
    return name


Name = Annotated[str, BeforeValidator(check_name),
                 Field(json_schema_extra={"pattern": f"^{_SAFE_NAME.pattern}$", "maxLength": NAME_MAX})]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Filter(Strict):
    """Optional per-source document filters applied before tokenization."""

    min_chars: Count | None = None
    max_chars: Count | None = None

    @model_validator(mode="after")
    def _range(self) -> Filter:
        if self.min_chars is not None and self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) is above max_chars ({self.max_chars}): no document would pass")
        return self


class Heldout(Strict):
    """How many documents of a source are kept out of training for evaluation (see mixc/shards/heldout.py)."""

    documents: Count = Field(64, description="documents evaluated per source (0: no held-out split)")
    max_fraction: Finite = Field(0.05, ge=0, le=0.5, description="at most this fraction of a source is held out")
    tokens: PositiveCount = Field(32768, description="at most this many held-out tokens evaluated per source "
                                  "(whole documents, at least one)")


class SourceFields(Strict):
    """What a source is and where its data lives (shared by catalog and inline entries)."""

    category: Literal["web", "code", "math", "reasoning"]
    language: str = DEFAULT_LANGUAGE
    format: Literal["parquet", "jsonl", "hf"] = "parquet"
    path: str | None = Field(None, description="local path, file://, hf://datasets/... or sample://...")
    dataset: str | None = Field(None, description="Hugging Face dataset id")
    config: str | None = None
    data_dir: str | None = None
    split: str = "train"
    text_column: str = "text"
    glob: str | None = None
    verified: bool = Field(True, description="false when the location could not be confirmed")
    tokens: Count | None = Field(None, description="approximate size in tokens, for epoch estimates")
    programming_language: str | None = None
    filter: Filter | None = None
    heldout: Heldout | None = Field(None, description="overrides the recipe's heldout policy for this source")
    note: str | None = None

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        return check_language(v)

    @model_validator(mode="after")
    def _has_location(self) -> SourceFields:
        if not self.path and not self.dataset:
            raise ValueError("a source needs a 'path' or a 'dataset' to read from")
        return self


class Source(SourceFields):
    name: Name

    @property
    def multilingual(self) -> bool:
        """Multilingual means web text in a language other than English."""
        return self.category == "web" and not self.language.startswith("eng_")

    @property
    def url(self) -> str:
        """Where a reader starts: the explicit path, else the dataset on the hub."""
        if self.path:
            return self.path
        base = f"hf://datasets/{self.dataset}"
        return f"{base}/{self.data_dir}" if self.data_dir else base


class Catalog(Strict):
    description: str | None = None
    sources: dict[Name, SourceFields]

    @field_validator("sources")
    @classmethod
    def _nonempty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a catalog needs at least one source")
        return v


# A mix entry either only reweights a catalog source, or defines it fully: every source field,
# optional, plus the weight. Checked as a whole Source once merged with the catalog (load_mix).
InlineEntry = create_model(
    "InlineEntry", __base__=Strict, weight=(Number, ...),
    **{name: (field.rebuild_annotation() | None, None) for name, field in SourceFields.model_fields.items()},
)


def _entry(value: Any) -> Any:
    """A mix entry is a bare weight, or a mapping with 'weight' (and optional inline source fields)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"expected a weight (a number) or a mapping with 'weight', got {type(value).__name__} {value!r}")
    return {"weight": value}


class Mix(Strict):
    name: str | None = None
    description: str | None = None
    catalog: str | None = Field(None, description="catalog file, relative to this mix")
    weights: Literal["relative", "absolute"] = Field(
        "absolute", description="'relative': weights are normalized when compiled; 'absolute': they must sum to 1"
    )
    sources: dict[Name, Annotated[InlineEntry, BeforeValidator(_entry, json_schema_input_type=float | InlineEntry)]]

    @field_validator("sources")
    @classmethod
    def _nonempty(cls, v: dict) -> dict:
        if not v:
            raise ValueError("a mix needs at least one source")
        return v


class Schedule(Strict):
    """Learning-rate schedule of one optimizer run. Steps are 1-based, as nanotron counts them."""

    type: Literal["wsd", "cosine", "constant"]
    # Bounded so that a dropped minus sign ('3e4' for 3e-4) is caught, and peak x steps stays finite.
    peak_lr: Finite = Field(gt=0, le=MAX_LR)
    warmup_steps: Count = 0
    decay_start_step: PositiveCount | None = Field(None, description="wsd: first step of the decay")
    decay_steps: Count | None = Field(None, description="wsd: length of the decay")
    final_lr: Finite = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _wsd(self) -> Schedule:
        if self.type == "wsd" and (self.decay_start_step is None or self.decay_steps is None):
            raise ValueError("a wsd schedule needs decay_start_step and decay_steps")
        if self.final_lr > self.peak_lr:
            raise ValueError("final_lr is above peak_lr")
        return self


class Optimizer(Strict):
    type: Literal["adamw"] = "adamw"
    beta1: Finite = Field(0.9, ge=0, lt=1)
    beta2: Finite = Field(0.95, ge=0, lt=1)
    eps: Finite = Field(1e-8, gt=0)
    weight_decay: Finite = Field(0.1, ge=0)
    grad_clip: Finite = Field(1.0, ge=0, description="maximum gradient norm; 0 turns clipping off")
    z_loss: Finite = Field(0.0, ge=0)


class NonFinite(Strict):
    """What the trainer does with a step whose loss or gradient norm is NaN or infinite. The
    update is never applied and a non-finite state is never checkpointed, whatever the policy."""

    policy: Literal["stop", "skip", "rollback"] = Field(
        "skip", description="stop: end the run (exit 1); skip: drop the step's batch and go on; rollback: reload the "
        "last good checkpoint and drop every batch since it")
    limit: PositiveCount = Field(
        5, description="skip: consecutive skipped steps allowed; rollback: rollbacks allowed; one more stops the run")


class Packing(Strict):
    """How a phase cuts its sources into samples (mixc/packing.py): `concat` cuts the
    concatenated stream; `bestfit` keeps documents whole (best-fit decreasing over `window`
    documents, padding masked). Written `packing: bestfit` or `packing: {mode: bestfit, window: N}`."""

    mode: Literal["concat", "bestfit"] = "concat"
    window: PositiveCount = Field(8192, description="documents per best-fit window (bestfit only)")


def _bare_packing(v: Any) -> Any:
    return {"mode": v} if isinstance(v, str) else v


class Phase(Strict):
    name: Name
    stage: int | None = Field(None, ge=1, description="the user's stage number (1, 2, 3 for pretraining)")
    mix: str = Field(description="mix file, relative to the recipe")
    steps: PositiveCount | None = None
    tokens: PositiveCount | None = None
    start_step: PositiveCount | None = Field(None, description="optional check: first step of this phase")
    sequence_length: PositiveCount
    rope_theta: Finite = Field(gt=0)
    run: Name = Field("main", description="phases of one run share a step counter and a schedule")
    schedule: Schedule | None = None
    packing: Annotated[Packing, BeforeValidator(_bare_packing, json_schema_input_type=Literal["concat", "bestfit"] | Packing)] = \
        Field(Packing(), description="concat (default) or bestfit: whole documents, padding masked")
    micro_batch_size: PositiveCount | None = Field(None, description="sequences per forward pass per rank in this "
                                                   "phase (default: --micro-batch-size, else ~8192 tokens)")

    @model_validator(mode="after")
    def _extent(self) -> Phase:
        if self.steps is None and self.tokens is None:
            raise ValueError("a phase needs 'steps' or 'tokens'")
        return self


class Recipe(Strict):
    name: Name
    description: str | None = None
    tokenizer: str
    model: str
    global_batch_tokens: PositiveCount
    seed: int = Field(0, ge=0, lt=2**63)
    epoch_warning: Finite = Field(4.0, gt=0, description="warn when a source is seen more epochs than this")
    mask_document_starts: bool = Field(False, description="drop the labels whose target is a document's first token "
                                       "(Megatron's eod_mask_loss); by default they count, as in transformers")
    schedule: Schedule
    optimizer: Optimizer = Optimizer()
    nonfinite: NonFinite = NonFinite()
    heldout: Heldout = Heldout()
    eval_every: Count = Field(0, description="held-out evaluation every this many steps (0: a tenth of the run) "
                              "and at every phase end")
    phases: list[Phase]

    @field_validator("phases")
    @classmethod
    def _nonempty(cls, v: list) -> list:
        if not v:
            raise ValueError("a recipe needs at least one phase")
        return v


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


def json_schemas() -> dict[str, Any]:
    """JSON Schema of each spec file kind, for editors and `mixc schema`."""
    return {
        "recipe": Recipe.model_json_schema(),
        "mix": Mix.model_json_schema(),
        "catalog": Catalog.model_json_schema(),
    }
