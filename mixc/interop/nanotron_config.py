"""The parts of a nanotron training config that mixc reads, as pydantic models.

Each value is checked here, and a problem is reported through spec's located errors
(`file:line:column: error: key: message`, as for a recipe). How values fit together (folders
and weights, stage order, the schedule) is checked by the reader, nanotron_read. Keys mixc does
not read are ignored (a nanotron config holds many); a key written as null counts as absent.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..locyaml import Located, SpecError, SpecErrors
from ..spec import Finite, Number, located_errors

HF_STAGE = ("a Hugging Face dataset stage is tokenized on the fly by nanotron; mixc imports tokenized (Nanoset) stages, "
            "which name dataset_folder")


def _got(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


def _kind(what: str, ok: Any) -> PlainValidator:
    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"expected {what}, got {_got(value)}"[:160])
        return value.strip() if isinstance(value, str) else value
    return PlainValidator(check)


def _not_negative(weight: float) -> float:
    if weight < 0:
        raise ValueError(f"weight is negative ({weight})")
    return weight


def _a_list(of: str) -> BeforeValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, list):
            raise ValueError(f"expected a list of {of}, got {_got(value)}"[:160])
        return value
    return BeforeValidator(check)


# Numbers are checked as in a recipe (spec's Finite and Number, the latter where the spec
# Optimizer built from them says which values it takes); whole numbers are not rounded.
Int = Annotated[int, _kind("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool))]
Text = Annotated[str, _kind("a non-empty string", lambda v: isinstance(v, str) and v.strip() != "")]
Weight = Annotated[Finite, AfterValidator(_not_negative)]

_FOLDER_LIST = TypeAdapter(list[Text])
_FOLDER_WEIGHTS = TypeAdapter(dict[str, Weight])


def _folders(value: Any) -> str | list[str] | dict[str, float]:
    """One folder, a list of them (weights in dataset_weights), or older nanotron's {folder: weight}."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, dict):
        return _FOLDER_WEIGHTS.validate_python(value)
    if isinstance(value, list) and value:
        return _FOLDER_LIST.validate_python(value)
    raise ValueError(f"expected a folder, a list of folders or a mapping folder: weight, got {value!r}"[:160])


def _read_paths(value: Any) -> str | list[str]:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return _FOLDER_LIST.validate_python(value)
    raise ValueError(f"expected a path or a list of paths, got {_got(value)}"[:160])


def _positive(what: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if value <= 0:
            raise ValueError(f"expected {what}, got {value}")
        return value
    return AfterValidator(check)


def _fail_at(loc: tuple, message: str) -> None:
    """Raise a problem found in a model's validator at a key below the model (a plain ValueError
    names only the model's own key)."""
    error = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=None)
    raise ValidationError.from_exception_data("nanotron config", [error])


class _Part(BaseModel):
    """A mapping of the config."""

    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping, got {_got(data)}"[:160])
        return {k: v for k, v in data.items() if v is not None}


class _Borrowed(_Part):
    """A section mixc only borrows names from: one that is not a mapping is left out."""

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else {}


class Dataset(_Part):
    dataset_folder: Annotated[Any, PlainValidator(_folders)]
    dataset_weights: Annotated[list[Weight], _a_list("weights")] | None = None
    dataset_read_path: Annotated[Any, PlainValidator(_read_paths)] = None
    tokenizer_name: Any = None

    @model_validator(mode="before")
    @classmethod
    def _tokenized(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("dataset_folder") is None and data.get("hf_dataset_or_datasets") is not None:
            _fail_at(("hf_dataset_or_datasets",), HF_STAGE)
        return data


class StageData(_Part):
    dataset: Dataset


class DataStage(_Part):
    name: Text | None = None
    start_training_step: Int
    data: StageData

    @field_validator("start_training_step")
    @classmethod
    def _from_one(cls, step: int) -> int:
        if step < 1:
            raise ValueError(f"steps count from 1, got {step}")
        return step


PositiveInt = Annotated[Int, _positive("a positive number")]


class Tokens(_Part):
    sequence_length: PositiveInt
    micro_batch_size: PositiveInt
    batch_accumulation_per_replica: PositiveInt = 1
    train_steps: PositiveInt


class Parallelism(_Part):
    dp: Annotated[Int, _positive("at least 1 data-parallel replica")] = 1


class ModelConfig(_Part):
    model_config = ConfigDict(extra="allow")  # the sizes (format.SIZE_KEYS) are read as written

    rope_theta: Annotated[Finite, _positive("a positive RoPE base")]
    z_loss_enabled: Any = None
    z_loss_coefficient: Number = 0.0


class ModelSection(_Part):
    config: ModelConfig = Field(alias="model_config")


class LRScheduler(_Part):
    learning_rate: Annotated[Finite, _positive("a positive learning rate")]
    min_decay_lr: Finite = 0.0
    lr_warmup_steps: Int = 0
    lr_warmup_style: Text = "linear"
    lr_decay_style: Text | None = None
    lr_decay_starting_step: Int | None = None
    lr_decay_steps: Int | None = None

    @field_validator("lr_warmup_style")
    @classmethod
    def _warmup(cls, style: str) -> str:
        if style not in ("linear", "constant"):
            raise ValueError(f"unknown warmup style '{style}'; nanotron knows linear and constant")
        return style

    @field_validator("lr_decay_style")
    @classmethod
    def _decay(cls, style: str) -> str:
        if style not in ("linear", "cosine"):
            raise ValueError(f"unknown decay style '{style}'; nanotron knows linear and cosine")
        return style


class AdamFactors(_Part):
    adam_beta1: Number | None = None
    adam_beta2: Number | None = None
    adam_eps: Number | None = None


class OptimizerSection(AdamFactors):
    """Older nanotron configs give the Adam factors here, newer ones in optimizer_factory."""

    learning_rate_scheduler: LRScheduler
    optimizer_factory: AdamFactors | None = None
    weight_decay: Number = 0.0
    clip_grad: Number = 0.0


class General(_Borrowed):
    project: Any = None
    run: Any = None
    seed: Any = None

    @field_validator("seed")
    @classmethod
    def _seed(cls, seed: Any) -> int | None:
        if not isinstance(seed, int) or isinstance(seed, bool):
            return None  # a seed that is not a whole number is left out: the recipe's default
        if not 0 <= seed < 2**63:
            raise ValueError(f"expected a seed in [0, 2^63), got {seed}")
        return seed


class TokenizerSection(_Borrowed):
    tokenizer_name_or_path: Any = None


class NanotronConfig(_Part):
    general: General = General()
    data_stages: Annotated[list[DataStage], _a_list("data stages")]
    tokens: Tokens
    parallelism: Parallelism = Parallelism()
    model: ModelSection
    optimizer: OptimizerSection
    tokenizer: TokenizerSection = TokenizerSection()

    @field_validator("data_stages")
    @classmethod
    def _some(cls, stages: list[DataStage]) -> list[DataStage]:
        if not stages:
            raise ValueError("no data stages")
        return stages


def parse_config(located: Located) -> NanotronConfig:
    """The config's values, each checked; SpecErrors name file, line and key of every bad one."""
    if not isinstance(located.data, dict):
        raise SpecErrors([SpecError("expected a nanotron config (a mapping with data_stages, tokens, optimizer)", located.where(()))])
    try:
        return NanotronConfig.model_validate(located.data)
    except ValidationError as exc:
        raise located_errors(exc, located) from None
