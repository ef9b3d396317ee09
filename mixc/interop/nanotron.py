"""nanotron interop: training configs in, recipe blocks out.

`import_nanotron` reads one or more nanotron training configs (YAML) and writes a mixc
recipe plus one mix per data stage. `export_nanotron` turns a recipe into the blocks
nanotron needs for each run: `data_stages` pointing at mixc's shard folders, `tokens`, and
the learning-rate scheduler. Importing an export gives the same recipe back.

How nanotron's fields map onto mixc (see docs/nanotron.md):

- a config is one *run*: its `data_stages` are mixc phases of that run (a stage lasts from
  its `start_training_step` to the next stage's, the last one to `tokens.train_steps`);
- a config whose first data stages repeat the previous config's is a *resumed* run (how
  SmolLM3 published stage 1, 2 and 3): it replaces the earlier one; any other config starts
  a new run (SmolLM3's long-context extensions);
- global batch = sequence_length x micro_batch_size x batch_accumulation_per_replica x dp;
- a source's name is the last component of its folder (`dataset_read_path`, the local copy
  nanotron reads, when given, else `dataset_folder`), skipping storage-layout words such as
  `standard` and `tokenized`: `.../megamath-web-pro/standard/` is `megamath-web-pro`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import MixcError
from ..locyaml import Located, SpecError, SpecErrors, load_file
from ..spec import (
    CATEGORIES,
    DEFAULT_LANGUAGE,
    MAX_COUNT,
    Optimizer,
    ResolvedRecipe,
    Schedule,
    check_language,
    key_path,
    load_catalog,
    weight_sum,
)

LAYOUT_WORDS = frozenset({"standard", "tokenized"})
NAMINGS = ("read-path", "folder")

# Scripts of languages whose usual script is not Latin, for FineWeb2-style names ('fw2-rus').
SCRIPTS = {
    "cmn": "Hani", "zho": "Hani", "yue": "Hani", "jpn": "Jpan", "kor": "Hang", "rus": "Cyrl", "ukr": "Cyrl", "bul": "Cyrl",
    "srp": "Cyrl", "bel": "Cyrl", "kaz": "Cyrl", "mkd": "Cyrl", "arb": "Arab", "ara": "Arab", "fas": "Arab", "pes": "Arab",
    "urd": "Arab", "hin": "Deva", "mar": "Deva", "nep": "Deva", "ben": "Beng", "tam": "Taml", "tel": "Telu", "kan": "Knda",
    "mal": "Mlym", "guj": "Gujr", "pan": "Guru", "tha": "Thai", "ell": "Grek", "heb": "Hebr", "kat": "Geor", "hye": "Armn",
    "amh": "Ethi", "khm": "Khmr", "lao": "Laoo", "mya": "Mymr", "sin": "Sinh",
}
# Category from a source's name: the first pattern that matches wins, else web. Math goes
# first because math sets often say "code" ('megamath-text-code-block'), code before
# reasoning ('opencodereasoning' is code, as SmolLM3 counts it).
CATEGORY_PATTERNS = (
    ("math", re.compile(r"math|gsm|arithmetic|algebra|theorem|proof|numina", re.I)),
    ("code", re.compile(r"code|stack(?!.?exchange|.?overflow)|starcoder|github|jupyter|notebook|kaggle|pull.?request|commit|"
                        r"leetcode|programming|(?<![a-z])(python|javascript|typescript|java|cpp|rust|golang|php|ruby)(?![a-z])",
                        re.I)),
    ("reasoning", re.compile(r"reason|think|chain.of.thought|\bcot\b", re.I)),
)


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Entry:
    name: str
    folder: str
    read_path: str | None
    weight: float


@dataclass
class Stage:
    name: str
    start_step: int
    entries: list[Entry]
    key: str  # 'data_stages[1]', for messages


@dataclass
class RunConfig:
    """One nanotron config, reduced to what a mixc recipe holds."""

    path: str
    located: Located
    project: str | None
    run: str | None
    seed: int | None
    stages: list[Stage]
    train_steps: int
    sequence_length: int
    global_batch_tokens: int
    rope_theta: float
    schedule: Schedule
    optimizer: Optimizer
    tokenizer: str | None
    model: str
    architecture: str
    errors: list[SpecError] = field(default_factory=list)

    def stage_end(self, i: int) -> int:
        return self.stages[i + 1].start_step - 1 if i + 1 < len(self.stages) else self.train_steps


class _Reader:
    """Typed, located access to one config; problems are collected, not raised one by one."""

    def __init__(self, located: Located):
        self.located = located
        self.errors: list[SpecError] = []

    def error(self, path: tuple, message: str) -> None:
        self.errors.append(SpecError(message, self.located.where(path), key_path(path) or None))

    def get(self, path: tuple, kind: str, required: bool = True, default: Any = None) -> Any:
        node: Any = self.located.data
        for i, part in enumerate(path):
            if isinstance(node, dict) and part in node and node[part] is not None:
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
            elif isinstance(node, dict):
                if required:
                    self.error(path[:i + 1], "required key is missing")
                return default
            else:
                self.error(path[:i], f"expected a mapping, got {type(node).__name__} {node!r}"[:120])
                return default
        return self.check(path, node, kind, default)

    def check(self, path: tuple, value: Any, kind: str, default: Any = None) -> Any:
        ok = {
            "int": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
            "str": isinstance(value, str) and value.strip() != "",
            "mapping": isinstance(value, dict),
            "list": isinstance(value, list),
            "any": True,
        }[kind]
        if ok:
            return value.strip() if kind == "str" else value
        what = {"int": "a whole number", "number": "a finite number", "str": "a non-empty string", "mapping": "a mapping",
                "list": "a list"}[kind]
        self.error(path, f"expected {what}, got {type(value).__name__} {value!r}"[:160])
        return default


def source_name(path: str) -> str:
    """The last component of a folder path, skipping a trailing storage-layout word."""
    parts = [p for p in re.split(r"[/\\]+", path.strip()) if p and not p.endswith(":")]
    if not parts:
        return path.strip()
    if len(parts) > 1 and parts[-1].lower() in LAYOUT_WORDS:
        return parts[-2]
    # mixc's own store: .../sources/<source>/<12-hex key>
    if len(parts) > 2 and re.fullmatch(r"[0-9a-f]{12}", parts[-1]) and parts[-3] == "sources":
        return parts[-2]
    return parts[-1]


def _last_component(path: str) -> str:
    parts = [p for p in re.split(r"[/\\]+", path.strip()) if p]
    return parts[-1] if parts else path


def _folders(r: _Reader, base: tuple) -> list[tuple[str, float | None, tuple]] | None:
    """(folder, weight or None, location path) for each dataset of a stage."""
    dataset = r.get(base, "mapping")
    if dataset is None:
        return None
    if "dataset_folder" not in dataset:
        if "hf_dataset_or_datasets" in dataset:
            r.error(base + ("hf_dataset_or_datasets",), "a Hugging Face dataset stage is tokenized on the fly by nanotron; "
                                                         "mixc imports tokenized (Nanoset) stages, which name dataset_folder")
        else:
            r.error(base + ("dataset_folder",), "required key is missing")
        return None
    folders = dataset["dataset_folder"]
    path = base + ("dataset_folder",)
    if isinstance(folders, str):
        return [(folders.strip(), 1.0, path)]
    if isinstance(folders, dict):  # older nanotron: {folder: weight}
        return [(str(k).strip(), r.check(path + (k,), v, "number"), path + (k,)) for k, v in folders.items()]
    if not isinstance(folders, list) or not folders:
        r.error(path, f"expected a folder, a list of folders or a mapping folder: weight, got {folders!r}"[:160])
        return None
    out = []
    for i, f in enumerate(folders):
        if r.check(path + (i,), f, "str") is not None:
            out.append((f.strip(), None, path + (i,)))
    if len(out) != len(folders):
        return None
    weights = dataset.get("dataset_weights")
    wpath = base + ("dataset_weights",)
    if weights is None:
        r.error(wpath, f"missing: {len(folders)} dataset folders need weights (without them nanotron samples by dataset "
                       "size, which a config does not say)")
        return None
    if not isinstance(weights, list):
        r.error(wpath, f"expected a list of {len(folders)} weights, got {type(weights).__name__} {weights!r}"[:160])
        return None
    if len(weights) != len(folders):
        line = r.located.where(path).line
        r.error(wpath, f"{len(weights)} weights for {len(folders)} dataset folders (dataset_folder at line {line}); "
                       "the lists must be the same length, in the same order")
        return None
    checked = [r.check(wpath + (i,), w, "number") for i, w in enumerate(weights)]
    for i, w in enumerate(checked):
        if w is not None and w < 0:
            r.error(wpath + (i,), f"weight is negative ({w})")
    if any(w is None or w < 0 for w in checked):
        return None
    return [(f, w, p) for (f, _, p), w in zip(out, checked)]


def _read_paths(r: _Reader, base: tuple, count: int) -> list[str | None]:
    dataset = r.located.data
    for part in base:
        if isinstance(dataset, dict):
            dataset = dataset.get(part)
        elif isinstance(dataset, list) and isinstance(part, int) and part < len(dataset):
            dataset = dataset[part]
        else:
            dataset = None
    paths = dataset.get("dataset_read_path") if isinstance(dataset, dict) else None
    if paths is None:
        return [None] * count
    path = base + ("dataset_read_path",)
    if isinstance(paths, str) and count == 1:
        return [paths.strip()]
    if not isinstance(paths, list) or len(paths) != count:
        n = len(paths) if isinstance(paths, list) else "not a list of"
        r.error(path, f"{n} read paths for {count} dataset folders; the lists must be the same length, in the same order")
        return [None] * count
    return [r.check(path + (i,), p, "str") for i, p in enumerate(paths)]


def _stage(r: _Reader, i: int, naming: str) -> Stage | None:
    base = ("data_stages", i)
    name = r.get(base + ("name",), "str", required=False, default=f"stage-{i + 1}")
    start = r.get(base + ("start_training_step",), "int")
    if start is not None and start < 1:
        r.error(base + ("start_training_step",), f"steps count from 1, got {start}")
    folders = _folders(r, base + ("data", "dataset"))
    if folders is None or start is None:
        return None
    reads = _read_paths(r, base + ("data", "dataset"), len(folders))
    entries, seen = [], {}
    for (folder, weight, where), read in zip(folders, reads):
        name_from = read if naming == "read-path" and read else folder
        entry = Entry(source_name(name_from), folder, read, float(weight))
        if folder in seen:
            r.error(where, f"dataset folder '{folder}' is listed twice (entries {seen[folder] + 1} and {len(entries) + 1})")
        seen[folder] = len(entries)
        entries.append(entry)
    names: dict[str, int] = {}
    for k, e in enumerate(entries):  # two folders with one name: number the later ones
        names[e.name] = names.get(e.name, 0) + 1
        if names[e.name] > 1:
            entries[k] = Entry(f"{e.name}-{names[e.name]}", e.folder, e.read_path, e.weight)
    if entries and all(e.weight == 0 for e in entries):
        r.error(base + ("data", "dataset", "dataset_weights"), "all weights are zero")
    return Stage(str(name), start, entries, key_path(base))


def _schedule(r: _Reader, train_steps: int) -> Schedule | None:
    base = ("optimizer", "learning_rate_scheduler")
    lrs = r.get(base, "mapping")
    if lrs is None:
        return None
    peak = r.get(base + ("learning_rate",), "number")
    final = r.get(base + ("min_decay_lr",), "number", required=False, default=0.0)
    warm = r.get(base + ("lr_warmup_steps",), "int", required=False, default=0)
    warm_style = r.get(base + ("lr_warmup_style",), "str", required=False, default="linear")
    style = r.get(base + ("lr_decay_style",), "str", required=False, default=None)
    start = r.get(base + ("lr_decay_starting_step",), "int", required=False, default=None)
    length = r.get(base + ("lr_decay_steps",), "int", required=False, default=None)
    if peak is None or peak <= 0:
        if peak is not None:
            r.error(base + ("learning_rate",), f"expected a positive learning rate, got {peak}")
        return None
    if warm_style not in ("linear", "constant"):
        r.error(base + ("lr_warmup_style",), f"unknown warmup style '{warm_style}'; nanotron knows linear and constant")
        return None
    if warm_style == "constant":  # the peak from step 1: the same as no warmup
        warm = 0
    # nanotron's defaults (helpers.lr_scheduler_builder): decay starts after the warmup and
    # lasts the rest of the run.
    if length is None:
        length = train_steps - (warm or 0) - (start or 0)
    decay_start = warm if start is None else start
    if final == peak or (style is None and decay_start >= train_steps):
        return _model_or_error(r, Schedule, base, _SCHEDULE_KEYS, type="constant", peak_lr=peak, warmup_steps=warm)
    if style == "cosine":
        if decay_start != warm:
            r.error(base + ("lr_decay_starting_step",), f"a cosine decay from step {decay_start}, after a {warm}-step warmup, "
                                                        "has no mixc equivalent (mixc's cosine starts where the warmup ends)")
            return None
        return _model_or_error(r, Schedule, base, _SCHEDULE_KEYS, type="cosine", peak_lr=peak, warmup_steps=warm,
                               decay_steps=max(length, 1), final_lr=final)
    if style not in (None, "linear"):
        r.error(base + ("lr_decay_style",), f"unknown decay style '{style}'; nanotron knows linear and cosine")
        return None
    if decay_start < warm:
        r.error(base + ("lr_decay_starting_step",), f"the decay starts at step {decay_start}, inside the {warm}-step warmup")
        return None
    # mixc counts the first decayed step as decay_start_step; nanotron's default start (the
    # last warmup step) is one step earlier. With no style the LR drops to min_decay_lr at once.
    return _model_or_error(r, Schedule, base, _SCHEDULE_KEYS, type="wsd", peak_lr=peak, warmup_steps=warm,
                           decay_start_step=max(decay_start, warm + 1), decay_steps=0 if style is None else length,
                           final_lr=final)


def _optimizer(r: _Reader) -> Optimizer:
    opt = r.located.data.get("optimizer") if isinstance(r.located.data, dict) else None
    opt = opt if isinstance(opt, dict) else {}
    factory = opt.get("optimizer_factory") if isinstance(opt.get("optimizer_factory"), dict) else opt

    def number(d: dict, key: str, default: float) -> float:
        v = d.get(key)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default

    model = r.located.data.get("model", {}) if isinstance(r.located.data, dict) else {}
    config = model.get("model_config", {}) if isinstance(model, dict) else {}
    config = config if isinstance(config, dict) else {}
    z_loss = number(config, "z_loss_coefficient", 0.0) if config.get("z_loss_enabled") else 0.0
    factory_path = ("optimizer", "optimizer_factory") if factory is not opt else ("optimizer",)
    keys = {"beta1": factory_path + ("adam_beta1",), "beta2": factory_path + ("adam_beta2",), "eps": factory_path + ("adam_eps",),
            "weight_decay": ("optimizer", "weight_decay"), "grad_clip": ("optimizer", "clip_grad"),
            "z_loss": ("model", "model_config", "z_loss_coefficient")}
    return _model_or_error(r, Optimizer, ("optimizer",), keys, beta1=number(factory, "adam_beta1", 0.9),
                           beta2=number(factory, "adam_beta2", 0.95), eps=number(factory, "adam_eps", 1e-8),
                           weight_decay=number(opt, "weight_decay", 0.0), grad_clip=number(opt, "clip_grad", 0.0), z_loss=z_loss)


_SCHEDULE_KEYS = {field: ("optimizer", "learning_rate_scheduler", key) for field, key in (
    ("peak_lr", "learning_rate"), ("final_lr", "min_decay_lr"), ("warmup_steps", "lr_warmup_steps"),
    ("decay_start_step", "lr_decay_starting_step"), ("decay_steps", "lr_decay_steps"))}


def _model_or_error(r: _Reader, model: Any, base: tuple, keys: dict[str, tuple], **fields: Any) -> Any:
    """Build a spec model from config values; a value mixc refuses is reported at its config key."""
    try:
        return model(**fields)
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
            got = err["loc"] and err["type"] != "value_error"  # a value error says what it got
            r.error(keys.get(field, base), f"{message}, got {err['input']!r}" if got else message)
        return None


# The architectures mixc knows by name, as nanotron's model_config spells their sizes.
SMOLLM3_3B = {"num_hidden_layers": 36, "hidden_size": 2048, "intermediate_size": 11008, "num_attention_heads": 16,
              "num_key_value_heads": 4, "vocab_size": 128256}


KNOWN_MODELS = {"smollm3-3b": SMOLLM3_3B}


def _model(config: dict) -> tuple[str, str]:
    """mixc's model name for an architecture, and the architecture in words."""
    sizes = {k: config.get(k) for k in SMOLLM3_3B}
    words = ", ".join(f"{k} {v}" for k, v in sizes.items() if v is not None) or "not given"
    for name, known in KNOWN_MODELS.items():
        if sizes == known:
            return name, words
    layers, hidden = sizes["num_hidden_layers"], sizes["hidden_size"]
    return (f"nanotron-{layers}l-{hidden}h" if layers and hidden else "nanotron"), words


def read_config(path: str | Path, naming: str = "read-path") -> RunConfig:
    """One nanotron config; raises SpecErrors naming file, line and key for every problem."""
    located = load_file(path)
    if not isinstance(located.data, dict):
        raise SpecErrors([SpecError("expected a nanotron config (a mapping with data_stages, tokens, optimizer)", located.where(()))])
    r = _Reader(located)
    stages_raw = r.get(("data_stages",), "list")
    if stages_raw is not None and not stages_raw:
        r.error(("data_stages",), "no data stages")
    stages = [s for i in range(len(stages_raw or [])) if (s := _stage(r, i, naming)) is not None]
    seq = r.get(("tokens", "sequence_length"), "int")
    micro = r.get(("tokens", "micro_batch_size"), "int")
    accumulation = r.get(("tokens", "batch_accumulation_per_replica"), "int", required=False, default=1)
    dp = r.get(("parallelism", "dp"), "int", required=False, default=1)
    train_steps = r.get(("tokens", "train_steps"), "int")
    rope = r.get(("model", "model_config", "rope_theta"), "number")
    for key, value in (("sequence_length", seq), ("micro_batch_size", micro), ("batch_accumulation_per_replica", accumulation),
                       ("train_steps", train_steps)):
        if value is not None and value < 1:
            r.error(("tokens", key), f"expected a positive number, got {value}")
    _check_numbers(r, dp, rope, seq, micro, accumulation, train_steps)
    for i, stage in enumerate(stages if len(stages) == len(stages_raw or []) else []):  # i: its index in data_stages
        if math.isinf(weight_sum([e.weight for e in stage.entries])):
            r.error(("data_stages", i, "data", "dataset", "dataset_weights"),
                    "weights sum beyond the largest number; scale them down")
    schedule = _schedule(r, train_steps) if train_steps else None
    if len(stages) == len(stages_raw or []) and stages and train_steps:
        if stages[0].start_step != 1:
            r.error(("data_stages", 0, "start_training_step"), f"the first data stage starts at step {stages[0].start_step}; "
                                                               "nanotron's first stage starts at step 1")
        for i in range(1, len(stages)):
            if stages[i].start_step <= stages[i - 1].start_step:
                r.error(("data_stages", i, "start_training_step"), f"step {stages[i].start_step} does not come after the "
                        f"previous stage's start ({stages[i - 1].start_step}); stages must be in training order")
        if stages[-1].start_step > train_steps:
            r.error(("data_stages", len(stages) - 1, "start_training_step"),
                    f"starts at step {stages[-1].start_step}, after the run's last step (tokens.train_steps = {train_steps})")
    optimizer = _optimizer(r)
    if r.errors:
        raise SpecErrors(r.errors)
    data = located.data
    general = data.get("general") if isinstance(data.get("general"), dict) else {}
    tokenizer = None
    for stage in data["data_stages"]:
        dataset = stage.get("data", {}).get("dataset", {})
        tokenizer = tokenizer or (dataset.get("tokenizer_name") if isinstance(dataset, dict) else None)
    section = data.get("tokenizer") if isinstance(data.get("tokenizer"), dict) else {}
    tokenizer = tokenizer or section.get("tokenizer_name_or_path")
    model_config = data["model"]["model_config"]
    model, words = _model(model_config)
    return RunConfig(
        path=str(path), located=located, project=general.get("project"), run=general.get("run"),
        seed=general.get("seed") if isinstance(general.get("seed"), int) else None, stages=stages,
        train_steps=train_steps, sequence_length=seq, global_batch_tokens=seq * micro * accumulation * dp,
        rope_theta=float(rope), schedule=schedule, optimizer=optimizer, tokenizer=tokenizer, model=model,
        architecture=words,
    )


def _check_numbers(r: _Reader, dp: Any, rope: Any, seq: Any, micro: Any, accumulation: Any, train_steps: Any) -> None:
    """What the recipe will hold, checked here so that an error names the config, not the recipe
    that would have been written from it."""
    if dp is not None and dp < 1:
        r.error(("parallelism", "dp"), f"expected at least 1 data-parallel replica, got {dp}")
    if rope is not None and rope <= 0:
        r.error(("model", "model_config", "rope_theta"), f"expected a positive RoPE base, got {rope}")
    general = r.located.data.get("general")
    seed = general.get("seed") if isinstance(general, dict) else None  # a seed that is not a number is left out, as before
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**63:
        r.error(("general", "seed"), f"expected a seed in [0, 2^63), got {seed}")
    if r.errors or None in (seq, micro, accumulation, train_steps):
        return
    batch = seq * micro * accumulation * dp
    if train_steps * batch > MAX_COUNT:
        r.error(("tokens", "train_steps"), f"{train_steps:,} steps of {batch:,} tokens exceed mixc's limit of "
                                           f"{MAX_COUNT:.0e} (a quadrillion) tokens")


def _same_stage(a: Stage, b: Stage) -> bool:
    return a.start_step == b.start_step and [(e.folder, e.weight) for e in a.entries] == [(e.folder, e.weight) for e in b.entries]


def merge_runs(configs: list[RunConfig]) -> tuple[list[RunConfig], list[str]]:
    """Configs in order -> runs, and warnings. A config resumes the previous run when it keeps
    all of that run's data stages (same start steps, folders and weights) as its first stages,
    with the same sequence length and global batch: its stages, steps and schedule replace the
    earlier ones. Any other config starts a new run."""
    runs: list[RunConfig] = []
    warnings: list[str] = []
    for config in configs:
        prev = runs[-1] if runs else None
        if prev is None:
            runs.append(config)
            continue
        kept = len(prev.stages) <= len(config.stages) and all(_same_stage(a, b) for a, b in zip(prev.stages, config.stages))
        same_shape = (config.sequence_length, config.global_batch_tokens) == (prev.sequence_length, prev.global_batch_tokens)
        if kept and same_shape:
            runs[-1] = config
            continue
        if _same_stage(prev.stages[0], config.stages[0]) and same_shape:
            changed = [a.name for a, b in zip(prev.stages, config.stages) if not _same_stage(a, b)]
            changed += [a.name for a in prev.stages[len(config.stages):]]  # stages it dropped
            warnings.append(f"{Path(config.path).name} starts like the run of {Path(prev.path).name} but changes or drops its "
                            f"data stage '{changed[0]}': imported as a new run")
        runs.append(config)
    return runs, warnings


# --------------------------------------------------------------------------- guessing source fields


# The shipped SmolLM3 catalog: without --catalog, a source it knows (matched by the names its
# dataset path gives) takes its category and language from there; only unknown ones are guessed.
# Absent when mixc is installed without the repository's mixes/ folder: then everything is guessed.
SHIPPED_CATALOG = Path(__file__).resolve().parents[2] / "mixes" / "smollm3" / "sources.yaml"


@lru_cache(maxsize=1)
def _shipped_sources() -> dict[str, tuple[str, str]]:
    """name -> (category, language) of the shipped catalog's sources."""
    if not SHIPPED_CATALOG.is_file():
        return {}
    sources, _ = load_catalog(SHIPPED_CATALOG)
    return {name: (s.category, s.language) for name, s in sources.items()}


def classify(candidates: tuple[str | None, ...]) -> tuple[str, str | None]:
    """(category, language or None for English) of an inline source: the shipped catalog's entry
    for the first candidate name it knows, else guessed from the names."""
    known = _shipped_sources()
    match = next((known[n] for n in candidates if n and n in known), None)
    if match is not None:
        category, language = match
        return category, None if language == DEFAULT_LANGUAGE else language
    category = guess_category(*candidates)
    return category, guess_language(candidates[0] or "") if category == "web" else None


def guess_category(*names: str | None) -> str:
    text = " ".join(n for n in names if n)
    for category, pattern in CATEGORY_PATTERNS:
        if pattern.search(text):
            return category
    return "web"


def guess_language(name: str) -> str | None:
    """'fw2-hq-fra_Latn' -> fra_Latn; FineWeb2-style 'fw2-rus' -> rus_Cyrl; else None (English)."""
    for code in re.findall(r"(?<![A-Za-z])([a-z]{3}_[A-Z][a-z]{3})(?![A-Za-z])", name):
        try:
            return check_language(code)
        except ValueError:
            continue
    m = re.match(r"(?:fw2|fineweb-?2)(?:-hq)?[-_]([a-z]{3})$", name)
    if m:
        try:
            return check_language(f"{m.group(1)}_{SCRIPTS.get(m.group(1), 'Latn')}")
        except ValueError:
            return None
    return None


# --------------------------------------------------------------------------- writing a recipe


@dataclass
class ImportResult:
    recipe: Path
    mixes: list[Path]
    warnings: list[str]


def slug(text: str) -> str:
    """A safe mixc name (spec.check_name) from any text: a folder or stage name of a config."""
    out = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(text).strip())).strip("-._+")
    return out[:128] or "phase"


def _unique(name: str, taken: set[str]) -> str:
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}-{n}"
    taken.add(out)
    return out


def _number(x: float) -> int | float:
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else x


def _schedule_dict(s: Schedule) -> dict[str, Any]:
    out: dict[str, Any] = {"type": s.type, "peak_lr": s.peak_lr, "warmup_steps": s.warmup_steps}
    if s.type == "wsd":
        out |= {"decay_start_step": s.decay_start_step, "decay_steps": s.decay_steps}
    elif s.type == "cosine":
        out["decay_steps"] = s.decay_steps
    if s.type != "constant":
        out["final_lr"] = _number(s.final_lr)
    return out


def _dump(data: Any, header: str, flow_leaves: bool = False) -> str:
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None if flow_leaves else False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body


def import_nanotron(paths: list[str | Path], out_dir: str | Path, catalog: str | Path | None = None,
                    name: str | None = None, naming: str = "read-path", model: str | None = None) -> ImportResult:
    """Write DIR/recipe.yaml and DIR/mixes/<phase>.yaml from nanotron configs, in run order."""
    if naming not in NAMINGS:
        raise MixcError(f"unknown naming '{naming}'; expected one of: {', '.join(NAMINGS)}")
    if not paths:
        raise MixcError("give at least one nanotron config")
    configs, errors = [], []
    for p in paths:
        try:
            configs.append(read_config(p, naming))
        except SpecErrors as exc:
            errors.extend(exc.errors)
        except SpecError as exc:
            errors.append(exc)
    if errors:
        raise SpecErrors(errors)
    runs, warnings = merge_runs(configs)
    first = runs[0]
    for run in runs[1:]:
        if run.global_batch_tokens != first.global_batch_tokens:
            raise SpecErrors([SpecError(
                f"global batch of {run.global_batch_tokens:,} tokens (sequence x micro batch x accumulation x dp) differs from "
                f"{first.global_batch_tokens:,} in {Path(first.path).name}; a mixc recipe has one global batch",
                run.located.where(("tokens",)), "tokens")])
    for run in runs[1:]:
        if run.tokenizer and first.tokenizer and run.tokenizer != first.tokenizer:
            warnings.append(f"{Path(run.path).name}: tokenizer '{run.tokenizer}' differs from '{first.tokenizer}'; "
                            "the recipe keeps the first (check they share a vocabulary)")

    catalog_names: set[str] = set()
    catalog_ref = None
    out = Path(out_dir)
    pending: dict[Path, str] = {}  # written only once all of it is known to validate
    if catalog is not None:
        sources, _ = load_catalog(catalog)
        catalog_names = set(sources)
        catalog_ref = os.path.relpath(Path(catalog).resolve(), (out / "mixes").resolve())

    recipe_name = name or slug(first.project or Path(first.path).stem)
    run_names: set[str] = set()
    phase_names: set[str] = set()
    phases, mix_files = [], []
    for r_index, run in enumerate(runs):
        # general.run names the run (a mixc export writes the run's name there).
        run_name = _unique(slug(run.run) if run.run else "main" if r_index == 0 else slug(Path(run.path).stem), run_names)
        for i, stage in enumerate(run.stages):
            phase_name = _unique(slug(stage.name), phase_names)
            steps = run.stage_end(i) - stage.start_step + 1
            mix_path = out / "mixes" / f"{phase_name}.yaml"
            mix_files.append(mix_path)
            pending[mix_path] = _mix_text(run, stage, i, phase_name, catalog_ref, catalog_names, naming, warnings)
            phase: dict[str, Any] = {"name": phase_name}
            if r_index == 0:
                phase["stage"] = i + 1
            phase["mix"] = f"mixes/{phase_name}.yaml"
            if i > 0:
                phase["start_step"] = stage.start_step
            phase |= {"steps": steps, "sequence_length": run.sequence_length, "rope_theta": _number(run.rope_theta)}
            if r_index > 0:
                phase["run"] = run_name
                if i == 0:
                    phase["schedule"] = _schedule_dict(run.schedule)
            phases.append(phase)
        if r_index == 0 and run_name != "main":
            for phase in phases:
                phase["run"] = run_name

    recipe: dict[str, Any] = {
        "name": recipe_name,
        "description": f"imported from nanotron: {', '.join(Path(c.path).name for c in configs)}",
        "tokenizer": first.tokenizer or "unknown",
        "model": model or first.model,
        "global_batch_tokens": first.global_batch_tokens,
        "seed": first.seed if first.seed is not None else 0,
        "schedule": _schedule_dict(first.schedule),
        "optimizer": {k: _number(v) if isinstance(v, float) else v for k, v in first.optimizer.model_dump().items()},
        "phases": phases,
    }
    header = (f"Imported by `mixc import nanotron` from {', '.join(Path(c.path).name for c in configs)}.\n"
              f"Runs: {', '.join(f'{Path(r.path).name} ({r.train_steps:,} steps)' for r in runs)}.\n"
              f"Global batch: sequence x micro batch x accumulation x dp = {first.global_batch_tokens:,} tokens.\n"
              f"Architecture in the config: {first.architecture}.")
    recipe_path = out / "recipe.yaml"
    pending[recipe_path] = _dump(recipe, header)
    _write_checked(pending, recipe_path)
    return ImportResult(recipe_path, mix_files, warnings)


def _mix_text(run: RunConfig, stage: Stage, index: int, phase_name: str, catalog_ref: str | None, catalog_names: set[str],
              naming: str, warnings: list[str]) -> str:
    sources: dict[str, Any] = {}
    inline = []
    for e in stage.entries:
        # A catalog may spell a source after the other path, or keep a layout word as its name.
        candidates = (e.name, source_name(e.folder if naming == "read-path" else (e.read_path or e.folder)),
                      *(_last_component(p) for p in (e.read_path, e.folder) if p))
        name = next((n for n in candidates if n in catalog_names), None)
        if name is not None and name not in sources:
            sources[name] = _number(e.weight)
            continue
        name = slug(e.name)
        name = name if name not in sources else f"{name}-{len(sources)}"
        inline.append(name)
        names = (e.name, source_name(e.read_path) if e.read_path else None, source_name(e.folder))
        category, language = classify((*names, *candidates[1:]))
        entry: dict[str, Any] = {"weight": _number(e.weight), "category": category}
        if language:
            entry["language"] = language
        entry |= {"path": e.folder, "verified": False}
        sources[name] = entry
    if catalog_ref and inline:
        warnings.append(f"{phase_name}: {len(inline)} source(s) not in the catalog, defined inline: {', '.join(inline[:8])}"
                        + (" ..." if len(inline) > 8 else ""))
    mix: dict[str, Any] = {"name": phase_name}
    if catalog_ref:
        mix["catalog"] = catalog_ref
    mix |= {"weights": "relative", "sources": sources}
    end = run.stage_end(index)
    header = (f"Data stage '{stage.name}' of {Path(run.path).name} ({stage.key}): steps {stage.start_step:,}-{end:,}, "
              f"{len(stage.entries)} datasets.\n"
              "Weights as written in the config (nanotron normalizes them; so does mixc, as they are relative).")
    if inline:
        header += ("\nInline sources: category and language from the shipped SmolLM3 catalog where it knows the folder's name,"
                   "\nelse guessed from the name; path = the nanotron dataset folder (already tokenized).\n"
                   "Point path or dataset at the raw text (or give --catalog) before `mixc build`.")
    return _dump(mix, header, flow_leaves=True)


def _write_checked(pending: dict[Path, str], recipe_path: Path) -> None:
    """Write the recipe and its mixes, validate them as `mixc validate` would, and on failure put
    back what was there before: an import that fails leaves nothing behind."""
    from ..plan import plan_recipe
    from ..spec import load_recipe

    before = {path: path.read_bytes() if path.is_file() else None for path in pending}
    made = {d for path in pending for d in (path.parent, *path.parent.parents) if not d.exists()}
    for path, text in pending.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    try:
        plan_recipe(load_recipe(recipe_path))
    except (SpecError, SpecErrors) as exc:  # a bug in the importer: read_config checks what it writes
        for path, old in before.items():
            if old is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(old)
        for folder in sorted(made, key=lambda d: len(d.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise MixcError(f"the imported recipe does not validate (nothing was written):\n{exc}") from None


# --------------------------------------------------------------------------- export


def _lr_scheduler(s: Schedule, train_steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"learning_rate": s.peak_lr, "lr_warmup_steps": s.warmup_steps, "lr_warmup_style": "linear"}
    if s.type == "wsd":
        out |= {"lr_decay_style": "linear", "lr_decay_starting_step": s.decay_start_step, "lr_decay_steps": s.decay_steps,
                "min_decay_lr": _number(s.final_lr)}
    elif s.type == "cosine":
        out |= {"lr_decay_style": "cosine", "lr_decay_starting_step": s.warmup_steps, "lr_decay_steps": s.decay_steps,
                "min_decay_lr": _number(s.final_lr)}
    else:  # constant: the decay never starts, and would go nowhere
        out |= {"lr_decay_style": "linear", "lr_decay_starting_step": train_steps + 1, "lr_decay_steps": 0,
                "min_decay_lr": s.peak_lr}
    return out


def shard_folder(shards: str, source: str, built: dict[str, str] | None = None) -> str:
    """A source's shard folder: the one the store's phase manifests name, else `<shards>/<source>`."""
    if built and source in built:
        return f"{shards.rstrip('/')}/{built[source]}"
    return f"{shards.rstrip('/')}/{source}"


def _built_folders(shards: str, recipe_name: str) -> dict[str, str]:
    """Source -> folder (relative to the store) from the phase manifests of a built store, if any."""
    from pathlib import Path

    from ..shards.store import PHASE_FORMAT, _read_json

    folders: dict[str, str] = {}
    for path in sorted((Path(shards) / "phases" / recipe_name).glob("*.json")):
        for s in _read_json(path, "phase manifest", PHASE_FORMAT)["sources"]:
            folders.setdefault(s["name"], s["folder"])
    return folders


def _built_vocab_size(shards: str, recipe_name: str) -> int | None:
    from pathlib import Path

    from ..shards.store import PHASE_FORMAT, _read_json

    for path in sorted((Path(shards) / "phases" / recipe_name).glob("*.json")):
        return int(_read_json(path, "phase manifest", PHASE_FORMAT)["tokenizer"]["vocab_size"])
    return None


# A byte-level tokenizer's alphabet: no tokenizer that can encode arbitrary text has fewer ids.
MIN_VOCAB_SIZE = 256
MAX_VOCAB_SIZE = 2**32  # nanotron stores ids in at most 4 bytes


def _check_vocab_size(vocab_size: int, built_vocab: int | None, shards: str) -> None:
    """--vocab-size becomes the model's embedding rows and the shards' bytes per id: it must cover
    every id the tokenizer can emit, and agree with the bytes the shards were written with."""
    from ..shards.writer import token_size_for

    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise MixcError(f"--vocab-size {vocab_size}: expected between {MIN_VOCAB_SIZE} (a byte-level alphabet) "
                        f"and {MAX_VOCAB_SIZE:,} (4-byte token ids)")
    if built_vocab is None:
        return
    if vocab_size < built_vocab:
        raise MixcError(f"--vocab-size {vocab_size:,} is smaller than the {built_vocab:,} ids of the tokenizer the shards in "
                        f"{shards} were built with; the model needs a row for every id (omit --vocab-size to use the store's)")
    if token_size_for(vocab_size) != token_size_for(built_vocab):
        raise MixcError(f"--vocab-size {vocab_size:,} means {token_size_for(vocab_size)}-byte token ids, but the shards in "
                        f"{shards} hold {token_size_for(built_vocab)}-byte ids (tokenizer of {built_vocab:,} ids); "
                        "nanotron would misread them")


def export_nanotron(resolved: ResolvedRecipe, shards: str = "shards", dp: int = 1, micro_batch_size: int = 1,
                    vocab_size: int | None = None, run: str | None = None) -> dict[str, dict[str, Any]]:
    """Per run of the recipe, the nanotron config blocks that describe its data and schedule."""
    from ..plan import plan_recipe, run_schedule

    plan = plan_recipe(resolved)
    recipe = resolved.recipe
    built = _built_folders(shards, recipe.name)
    built_vocab = _built_vocab_size(shards, recipe.name) if built else None
    if vocab_size is None:
        vocab_size = built_vocab
    else:
        _check_vocab_size(vocab_size, built_vocab, shards)
    runs: dict[str, list] = {}
    for p in plan.phases:
        runs.setdefault(p.run, []).append(p)
    if run is not None and run not in runs:
        raise MixcError(f"no run named '{run}' (runs: {', '.join(runs)})")
    out = {}
    for name, phases in runs.items():
        if run is not None and name != run:
            continue
        first = phases[0]
        for p in phases[1:]:
            for attr, label in (("sequence_length", "sequence_length"), ("rope_theta", "rope_theta")):
                if getattr(p, attr) != getattr(first, attr):
                    raise MixcError(f"run '{name}': phases '{first.name}' and '{p.name}' differ in {label}; a nanotron config "
                                    "has one per run (give the later phase its own run)")
        for p in phases:
            if recipe.phases[p.index].packing.mode != "concat":
                raise MixcError(f"run '{name}': phase '{p.name}' packs documents best-fit (packing: "
                                f"{recipe.phases[p.index].packing.mode}); nanotron's Nanoset cuts the concatenated stream, so "
                                "the config would train other samples: export with packing: concat (or another --run)")
        samples = recipe.global_batch_tokens // first.sequence_length
        if samples % (dp * micro_batch_size):
            raise MixcError(f"run '{name}': {samples} sequences per step do not split into dp {dp} x micro batch "
                            f"{micro_batch_size}; choose values whose product divides {samples} (export runs one by one with --run to give each its own)")
        train_steps = phases[-1].last_step
        dataset_extra: dict[str, Any] = {"tokenizer_name": recipe.tokenizer}
        if vocab_size:
            dataset_extra |= {"vocab_size": vocab_size, "token_size_in_bytes": 2 if vocab_size <= 65536 else 4}
        stages = []
        for p in phases:
            stages.append({
                "name": p.name,
                "start_training_step": p.first_step,
                "data": {
                    "dataset": {
                        "dataset_folder": [shard_folder(shards, s.name, built) for s in p.sources],
                        "dataset_weights": [s.weight for s in p.sources],
                        **dataset_extra,
                    },
                    "seed": recipe.seed,
                },
            })
        opt = recipe.optimizer
        model_config: dict[str, Any] = dict(KNOWN_MODELS.get(recipe.model, {}))
        model_config |= {"rope_theta": first.rope_theta, "max_position_embeddings": first.sequence_length}
        if vocab_size:
            model_config["vocab_size"] = vocab_size
        if opt.z_loss:
            model_config |= {"z_loss_enabled": True, "z_loss_coefficient": opt.z_loss}
        out[name] = {
            "general": {"project": recipe.name, "run": name, "seed": recipe.seed},
            "data_stages": stages,
            "tokens": {"sequence_length": first.sequence_length, "micro_batch_size": micro_batch_size,
                       "batch_accumulation_per_replica": samples // (dp * micro_batch_size), "train_steps": train_steps},
            "parallelism": {"dp": dp},
            "optimizer": {
                "clip_grad": opt.grad_clip,
                "weight_decay": opt.weight_decay,
                "learning_rate_scheduler": _lr_scheduler(run_schedule(plan, first), train_steps),
                "optimizer_factory": {"name": "adamW", "adam_beta1": opt.beta1, "adam_beta2": opt.beta2, "adam_eps": opt.eps},
            },
            "model": {"model_config": model_config},
            "tokenizer": {"tokenizer_name_or_path": recipe.tokenizer, "tokenizer_max_length": first.sequence_length},
        }
    return out


def export_text(resolved: ResolvedRecipe, run_name: str, config: dict[str, Any]) -> str:
    recipe = resolved.recipe
    header = (f"nanotron blocks for run '{run_name}' of mixc recipe '{recipe.name}' ({resolved.path}), written by `mixc export nanotron`.\n"
              "Merge them into a full nanotron config (model architecture, the rest of parallelism, checkpoints, logging).\n"
              f"Global batch {recipe.global_batch_tokens:,} tokens = sequence_length x micro_batch_size x "
              "batch_accumulation_per_replica x dp: change dp and micro batch together (mixc export --dp/--micro-batch-size).\n"
              "dataset_folder: one folder of datatrove shards per source, as `mixc build` writes them; weights as in the mixes\n"
              "(nanotron normalizes them).")
    return _dump(config, header)


def write_export(resolved: ResolvedRecipe, configs: dict[str, dict[str, Any]], output: str | None) -> list[Path] | str:
    """One run: OUTPUT is the file. Several runs: OUTPUT is a folder of <run>.yaml, in run order.
    Without OUTPUT: the YAML text (runs as separate documents)."""
    texts = {name: export_text(resolved, name, config) for name, config in configs.items()}
    if output is None:
        return "---\n".join(texts.values())
    target = Path(output)
    if len(texts) == 1 and not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(next(iter(texts.values())), encoding="utf-8")
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, text) in enumerate(texts.items(), start=1):
        path = target / f"{i:02d}-{slug(name)}.yaml"  # numbered: a shell glob lists them in run order
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


__all__ = ["CATEGORIES", "ImportResult", "export_nanotron", "import_nanotron", "read_config", "source_name", "write_export"]
