"""What a spec file may say: the value types of its fields (token and step counts such as '8.14T',
finite numbers, names that become folder names, ISO language codes) and the pydantic models of
catalog, mix and recipe built from them. Each model is plain data and checks one file on its own;
loading, located errors and the checks across files are `spec`'s.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model, field_validator, model_validator

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


# ---------------------------------------------------------------------------
# The models of the three file kinds


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

    category: Literal[CATEGORIES]
    language: str = DEFAULT_LANGUAGE
    format: Literal[FORMATS] = "parquet"
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


def json_schemas() -> dict[str, Any]:
    """JSON Schema of each spec file kind, for editors and `mixc schema`."""
    return {
        "recipe": Recipe.model_json_schema(),
        "mix": Mix.model_json_schema(),
        "catalog": Catalog.model_json_schema(),
    }
