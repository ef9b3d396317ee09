"""nanotron configs in: each config becomes a run of mixc phases (see docs/nanotron.md).

- a config is one *run*: its `data_stages` are mixc phases of that run (a stage lasts from
  its `start_training_step` to the next stage's, the last one to `tokens.train_steps`);
- a config whose first data stages repeat the previous config's is a *resumed* run (how
  SmolLM3 published stage 1, 2 and 3): it replaces the earlier one; any other config starts
  a new run (SmolLM3's long-context extensions);
- global batch = sequence_length x micro_batch_size x batch_accumulation_per_replica x dp;
- a source's name is the last component of its folder (`dataset_read_path`, the local copy
  nanotron reads, when given, else `dataset_folder`), skipping storage-layout words such as
  `standard` and `tokenized`: `.../megamath-web-pro/standard/` is `megamath-web-pro`.

nanotron_config checks each value; this module checks how they fit together, with errors
located the same way, and nanotron_import writes the recipe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..locyaml import Located, SpecError, SpecErrors, key_path, load_file
from ..spec import MAX_COUNT, Optimizer, Schedule, weight_sum
from .nanotron_config import Dataset, LRScheduler, NanotronConfig, parse_config
from .nanotron_format import model_name, source_name


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

    def stage_end(self, i: int) -> int:
        return self.stages[i + 1].start_step - 1 if i + 1 < len(self.stages) else self.train_steps


class _Problems:
    """Located errors found while fitting the config's values together, raised at the end."""

    def __init__(self, located: Located):
        self.located = located
        self.errors: list[SpecError] = []

    def add(self, path: tuple, message: str) -> None:
        self.errors.append(SpecError(message, self.located.where(path), key_path(path) or None))

    def raise_any(self) -> None:
        if self.errors:
            raise SpecErrors(self.errors)


def read_config(path: str | Path, naming: str = "read-path") -> RunConfig:
    """One nanotron config; raises SpecErrors naming file, line and key for every problem."""
    located = load_file(path)
    config = parse_config(located)
    problems = _Problems(located)
    stages = [_stage(problems, i, stage.name, stage.start_training_step, stage.data.dataset, naming)
              for i, stage in enumerate(config.data_stages)]
    tokens = config.tokens
    _check_order(problems, stages, tokens.train_steps)
    batch = tokens.sequence_length * tokens.micro_batch_size * tokens.batch_accumulation_per_replica * config.parallelism.dp
    if tokens.train_steps * batch > MAX_COUNT:
        problems.add(("tokens", "train_steps"), f"{tokens.train_steps:,} steps of {batch:,} tokens exceed mixc's limit of "
                                                f"{MAX_COUNT:.0e} (a quadrillion) tokens")
    schedule = _schedule(problems, config.optimizer.learning_rate_scheduler, tokens.train_steps)
    optimizer = _optimizer(problems, config)
    problems.raise_any()
    tokenizer = next((s.data.dataset.tokenizer_name for s in config.data_stages if s.data.dataset.tokenizer_name), None)
    model, words = model_name(config.model.config.model_extra or {})
    return RunConfig(
        path=str(path), located=located, project=config.general.project, run=config.general.run, seed=config.general.seed,
        stages=stages, train_steps=tokens.train_steps, sequence_length=tokens.sequence_length, global_batch_tokens=batch,
        rope_theta=float(config.model.config.rope_theta), schedule=schedule, optimizer=optimizer,
        tokenizer=tokenizer or config.tokenizer.tokenizer_name_or_path, model=model, architecture=words,
    )


def _pairs(problems: _Problems, base: tuple, dataset: Dataset) -> list[tuple[str, float, tuple]]:
    """(folder, weight, location path) of each dataset folder of a stage."""
    folders = dataset.dataset_folder
    path = base + ("dataset_folder",)
    if isinstance(folders, str):
        return [(folders, 1.0, path)]
    if isinstance(folders, dict):  # older nanotron: {folder: weight}
        return [(k.strip(), v, path + (k,)) for k, v in folders.items()]
    weights = dataset.dataset_weights
    wpath = base + ("dataset_weights",)
    if weights is None:
        problems.add(wpath, f"missing: {len(folders)} dataset folders need weights (without them nanotron samples by "
                            "dataset size, which a config does not say)")
        return []
    if len(weights) != len(folders):
        line = problems.located.where(path).line
        problems.add(wpath, f"{len(weights)} weights for {len(folders)} dataset folders (dataset_folder at line {line}); "
                            "the lists must be the same length, in the same order")
        return []
    return [(f, w, path + (i,)) for i, (f, w) in enumerate(zip(folders, weights))]


def _read_paths(problems: _Problems, base: tuple, paths: str | list[str] | None, count: int) -> list[str | None]:
    if paths is None or not count:
        return [None] * count
    if isinstance(paths, str) and count == 1:
        return [paths]
    if not isinstance(paths, list) or len(paths) != count:
        n = len(paths) if isinstance(paths, list) else "not a list of"
        problems.add(base + ("dataset_read_path",), f"{n} read paths for {count} dataset folders; the lists must be the "
                                                     "same length, in the same order")
        return [None] * count
    return list(paths)


def _stage(problems: _Problems, i: int, name: str | None, start: int, dataset: Dataset, naming: str) -> Stage:
    base = ("data_stages", i, "data", "dataset")
    pairs = _pairs(problems, base, dataset)
    reads = _read_paths(problems, base, dataset.dataset_read_path, len(pairs))
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for (folder, weight, where), read in zip(pairs, reads):
        name_from = read if naming == "read-path" and read else folder
        if folder in seen:
            problems.add(where, f"dataset folder '{folder}' is listed twice (entries {seen[folder] + 1} and {len(entries) + 1})")
        seen[folder] = len(entries)
        entries.append(Entry(source_name(name_from), folder, read, float(weight)))
    names: dict[str, int] = {}
    for k, e in enumerate(entries):  # two folders with one name: number the later ones
        names[e.name] = names.get(e.name, 0) + 1
        if names[e.name] > 1:
            entries[k] = Entry(f"{e.name}-{names[e.name]}", e.folder, e.read_path, e.weight)
    if entries and all(e.weight == 0 for e in entries):
        problems.add(base + ("dataset_weights",), "all weights are zero")
    elif math.isinf(weight_sum([e.weight for e in entries])):
        problems.add(base + ("dataset_weights",), "weights sum beyond the largest number; scale them down")
    return Stage(name or f"stage-{i + 1}", start, entries, key_path(("data_stages", i)))


def _check_order(problems: _Problems, stages: list[Stage], train_steps: int) -> None:
    if stages[0].start_step != 1:
        problems.add(("data_stages", 0, "start_training_step"), f"the first data stage starts at step {stages[0].start_step}; "
                                                                "nanotron's first stage starts at step 1")
    for i in range(1, len(stages)):
        if stages[i].start_step <= stages[i - 1].start_step:
            problems.add(("data_stages", i, "start_training_step"), f"step {stages[i].start_step} does not come after the "
                         f"previous stage's start ({stages[i - 1].start_step}); stages must be in training order")
    if stages[-1].start_step > train_steps:
        problems.add(("data_stages", len(stages) - 1, "start_training_step"),
                     f"starts at step {stages[-1].start_step}, after the run's last step (tokens.train_steps = {train_steps})")


_LRS = ("optimizer", "learning_rate_scheduler")
_SCHEDULE_KEYS = {field: _LRS + (key,) for field, key in (
    ("peak_lr", "learning_rate"), ("final_lr", "min_decay_lr"), ("warmup_steps", "lr_warmup_steps"),
    ("decay_start_step", "lr_decay_starting_step"), ("decay_steps", "lr_decay_steps"))}


def _schedule(problems: _Problems, lrs: LRScheduler, train_steps: int) -> Schedule | None:
    peak, final, style, start = lrs.learning_rate, lrs.min_decay_lr, lrs.lr_decay_style, lrs.lr_decay_starting_step
    warm = 0 if lrs.lr_warmup_style == "constant" else lrs.lr_warmup_steps  # the peak from step 1: no warmup
    # nanotron's defaults (helpers.lr_scheduler_builder): decay starts after the warmup and
    # lasts the rest of the run.
    length = lrs.lr_decay_steps if lrs.lr_decay_steps is not None else train_steps - warm - (start or 0)
    decay_start = warm if start is None else start
    if final == peak or (style is None and decay_start >= train_steps):
        return _spec_model(problems, Schedule, _LRS, _SCHEDULE_KEYS, type="constant", peak_lr=peak, warmup_steps=warm)
    if style == "cosine":
        if decay_start != warm:
            problems.add(_LRS + ("lr_decay_starting_step",), f"a cosine decay from step {decay_start}, after a {warm}-step "
                         "warmup, has no mixc equivalent (mixc's cosine starts where the warmup ends)")
            return None
        return _spec_model(problems, Schedule, _LRS, _SCHEDULE_KEYS, type="cosine", peak_lr=peak, warmup_steps=warm,
                           decay_steps=max(length, 1), final_lr=final)
    if decay_start < warm:
        problems.add(_LRS + ("lr_decay_starting_step",), f"the decay starts at step {decay_start}, inside the {warm}-step warmup")
        return None
    # mixc counts the first decayed step as decay_start_step; nanotron's default start (the
    # last warmup step) is one step earlier. With no style the LR drops to min_decay_lr at once.
    return _spec_model(problems, Schedule, _LRS, _SCHEDULE_KEYS, type="wsd", peak_lr=peak, warmup_steps=warm,
                       decay_start_step=max(decay_start, warm + 1), decay_steps=0 if style is None else length, final_lr=final)


def _optimizer(problems: _Problems, config: NanotronConfig) -> Optimizer | None:
    opt, model = config.optimizer, config.model.config
    factory, factory_path = (opt.optimizer_factory, ("optimizer", "optimizer_factory")) if opt.optimizer_factory is not None \
        else (opt, ("optimizer",))

    def number(value: float | None, default: float) -> float:
        return float(value) if value is not None else default

    keys = {"beta1": factory_path + ("adam_beta1",), "beta2": factory_path + ("adam_beta2",), "eps": factory_path + ("adam_eps",),
            "weight_decay": ("optimizer", "weight_decay"), "grad_clip": ("optimizer", "clip_grad"),
            "z_loss": ("model", "model_config", "z_loss_coefficient")}
    return _spec_model(problems, Optimizer, ("optimizer",), keys, beta1=number(factory.adam_beta1, 0.9),
                       beta2=number(factory.adam_beta2, 0.95), eps=number(factory.adam_eps, 1e-8),
                       weight_decay=float(opt.weight_decay), grad_clip=float(opt.clip_grad),
                       z_loss=float(model.z_loss_coefficient) if model.z_loss_enabled else 0.0)


def _spec_model(problems: _Problems, model: Any, base: tuple, keys: dict[str, tuple], **fields: Any) -> Any:
    """Build a spec model from config values; a value mixc refuses is reported at its config key."""
    try:
        return model(**fields)
    except ValidationError as exc:
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            message = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
            shown = err["loc"] and err["type"] != "value_error"  # a value error says what it got
            problems.add(keys.get(field, base), f"{message}, got {err['input']!r}" if shown else message)
        return None


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
