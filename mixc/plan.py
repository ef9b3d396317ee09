"""The plan pass: a pure function from a recipe (and optional source sizes) to numbers.

Normalized weights, per-source token budgets, phase step and token boundaries, category
and language rollups, epochs per phase and cumulative, and the learning rate at any step.
`report`, `diff`, `build`, the loader and the trainer all read these numbers from here, so
the arithmetic exists once.

Conventions: steps are 1-based within a run (as nanotron counts them); token positions are
cumulative over the whole curriculum, starting at 0. A phase covers tokens
[start_token, end_token).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .spec import CATEGORIES, Recipe, ResolvedMix, ResolvedRecipe, Schedule, Source, phase_steps

DEFAULT_EPOCH_WARNING = 4.0  # Muennighoff et al. 2023: returns fade after ~4 epochs


@dataclass(frozen=True)
class SourcePlan:
    name: str
    source: Source
    weight: float  # as written in the mix
    share: float  # normalized weight
    tokens: int  # token budget in this phase: share x phase tokens
    available_tokens: int | None = None  # from manifests, else the catalog's estimate
    epochs: float | None = None  # tokens / available_tokens
    cumulative_epochs: float | None = None  # over this and all earlier phases
    tokens_before: int = 0  # tokens of this source consumed by earlier phases

    @property
    def category(self) -> str:
        return self.source.category

    @property
    def language(self) -> str:
        return self.source.language

    @property
    def multilingual(self) -> bool:
        return self.source.multilingual


@dataclass(frozen=True)
class PhasePlan:
    index: int  # 0-based position in the recipe
    name: str
    stage: int | None
    run: str
    mix_name: str
    mix_path: str
    weights_mode: str
    weight_sum: float
    steps: int
    first_step: int  # 1-based, within the run
    last_step: int
    tokens: int
    start_token: int  # cumulative over the curriculum
    end_token: int
    sequence_length: int
    rope_theta: float
    global_batch_tokens: int
    schedule: Schedule  # the schedule of this phase's run
    sources: list[SourcePlan]

    @property
    def samples_per_step(self) -> int:
        return self.global_batch_tokens // self.sequence_length

    @property
    def samples(self) -> int:
        return self.steps * self.samples_per_step

    def shares(self) -> dict[str, float]:
        return {s.name: s.share for s in self.sources}

    def categories(self) -> dict[str, float]:
        """Category rollups; multilingual is part of web and reported beside it."""
        out = dict.fromkeys(CATEGORIES, 0.0)
        for s in self.sources:
            out[s.category] += s.share
        out["multilingual"] = math.fsum(s.share for s in self.sources if s.multilingual)
        return out

    def languages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.sources:
            out[s.language] = out.get(s.language, 0.0) + s.share
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass(frozen=True)
class Plan:
    name: str
    path: str
    recipe: Recipe | None
    phases: list[PhasePlan]
    epoch_warning: float = DEFAULT_EPOCH_WARNING
    warnings: list[str] = field(default_factory=list)

    @property
    def total_tokens(self) -> int:
        return self.phases[-1].end_token if self.phases else 0

    def phase(self, key: str | int) -> PhasePlan:
        """A phase by stage number (the user's 'stage 2'), name, or 1-based position as 'phase:N'."""
        text = str(key).strip()
        if text.isdigit():
            for p in self.phases:
                if p.stage == int(text):
                    return p
            stages = sorted(p.stage for p in self.phases if p.stage is not None)
            raise KeyError(f"no phase has stage {text} (stages: {', '.join(map(str, stages)) or 'none'})")
        for p in self.phases:
            if p.name == text:
                return p
        raise KeyError(f"no phase named '{text}' (phases: {', '.join(p.name for p in self.phases)})")

    def sources(self) -> dict[str, Source]:
        """Every source of every phase, in first-use order."""
        out: dict[str, Source] = {}
        for p in self.phases:
            for s in p.sources:
                out.setdefault(s.name, s.source)
        return out

    def at_token(self, token: float) -> PhasePlan:
        """The phase training at cumulative token position `token`."""
        for p in self.phases:
            if token < p.end_token:
                return p
        return self.phases[-1]


def normalize(weights: Sequence[float]) -> list[float]:
    try:
        total = math.fsum(weights)
    except OverflowError:  # weights near the largest float: scaled by the largest, the sum is at most len(weights)
        largest = max(weights)
        weights = [w / largest for w in weights]
        total = math.fsum(weights)
    if not total > 0 or not math.isfinite(total):
        raise ValueError("weights sum to zero" if not total > 0 else "weights are not finite")
    return [w / total for w in weights]


def largest_remainder(shares: Sequence[float], total: int) -> list[int]:
    """Integer parts of shares x total that add up to total exactly (Hamilton's method).

    Budgets are integers a trainer can count; rounding each one alone would lose or invent
    tokens. Ties go to the earlier source so the result is deterministic.
    """
    raw = [s * total for s in shares]
    base = [math.floor(r) for r in raw]
    short = total - sum(base)
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - base[i]), i))
    for i in order[:short]:
        base[i] += 1
    return base


def _source_plans(
    mix: ResolvedMix,
    tokens: int,
    source_tokens: Mapping[str, int] | None,
    consumed: dict[str, int],
) -> list[SourcePlan]:
    shares = normalize([w for _, w in mix.entries])
    budgets = largest_remainder(shares, tokens)
    out = []
    for (source, weight), share, budget in zip(mix.entries, shares, budgets):
        available = (source_tokens or {}).get(source.name, source.tokens)
        before = consumed.get(source.name, 0)
        epochs = cumulative = None
        if available:
            epochs = budget / available
            cumulative = (before + budget) / available
        elif available == 0 and budget > 0:
            epochs = cumulative = math.inf
        out.append(SourcePlan(source.name, source, weight, share, budget, available, epochs, cumulative, before))
        consumed[source.name] = before + budget
    return out


def plan_recipe(resolved: ResolvedRecipe, source_tokens: Mapping[str, int] | None = None) -> Plan:
    """The whole curriculum as numbers. `source_tokens` (from shard manifests) overrides the
    catalog's size estimates for epoch accounting."""
    recipe = resolved.recipe
    phases: list[PhasePlan] = []
    consumed: dict[str, int] = {}
    token = 0
    step = 0
    run = None
    schedule = recipe.schedule
    run_steps: dict[str, int] = {}
    for phase in recipe.phases:
        run_steps[phase.run] = run_steps.get(phase.run, 0) + phase_steps(recipe, phase)
    for i, (phase, mix) in enumerate(zip(recipe.phases, resolved.mixes)):
        if phase.run != run:
            step, run = 0, phase.run
            schedule = _complete(phase.schedule or recipe.schedule, run_steps[run])
        steps = phase_steps(recipe, phase)
        tokens = steps * recipe.global_batch_tokens
        phases.append(
            PhasePlan(
                index=i,
                name=phase.name,
                stage=phase.stage,
                run=phase.run,
                mix_name=mix.name,
                mix_path=mix.path,
                weights_mode=mix.weights_mode,
                weight_sum=mix.weight_sum,
                steps=steps,
                first_step=step + 1,
                last_step=step + steps,
                tokens=tokens,
                start_token=token,
                end_token=token + tokens,
                sequence_length=phase.sequence_length,
                rope_theta=phase.rope_theta,
                global_batch_tokens=recipe.global_batch_tokens,
                schedule=schedule,
                sources=_source_plans(mix, tokens, source_tokens, consumed),
            )
        )
        step += steps
        token += tokens
    plan = Plan(recipe.name, resolved.path, recipe, phases, recipe.epoch_warning)
    plan.warnings.extend(epoch_warnings(plan))
    return plan


def _complete(schedule: Schedule, run_steps: int) -> Schedule:
    """A cosine without decay_steps decays over the rest of its run: write that length in, so
    that `lr_at(phase.schedule, step)` is right wherever the plan's schedules are used."""
    if schedule.type == "cosine" and schedule.decay_steps is None:
        return schedule.model_copy(update={"decay_steps": max(run_steps - schedule.warmup_steps, 1)})
    return schedule


def plan_mixes(mixes: Sequence[ResolvedMix], tokens: int | None = None, epoch_warning: float = DEFAULT_EPOCH_WARNING) -> Plan:
    """Mixes without a recipe: each a phase of `tokens` (shares only when no budget is given)."""
    phases = []
    consumed: dict[str, int] = {}
    budget = tokens or 0
    for i, mix in enumerate(mixes):
        phases.append(
            PhasePlan(
                index=i, name=mix.name, stage=None, run="main", mix_name=mix.name, mix_path=mix.path,
                weights_mode=mix.weights_mode, weight_sum=mix.weight_sum, steps=0, first_step=0, last_step=0,
                tokens=budget, start_token=i * budget, end_token=(i + 1) * budget, sequence_length=0,
                rope_theta=0.0, global_batch_tokens=0,
                schedule=Schedule(type="constant", peak_lr=1.0),
                sources=_source_plans(mix, budget, None if tokens else {}, consumed),
            )
        )
    plan = Plan(", ".join(m.name for m in mixes), mixes[0].path if mixes else "", None, phases, epoch_warning)
    if tokens:
        plan.warnings.extend(epoch_warnings(plan))
    return plan


def epoch_warnings(plan: Plan) -> list[str]:
    out = []
    for p in plan.phases:
        for s in p.sources:
            if s.cumulative_epochs is not None and s.cumulative_epochs > plan.epoch_warning:
                out.append(
                    f"{p.name}: source '{s.name}' is seen {s.cumulative_epochs:.2f} epochs by the end of this phase "
                    f"(> {plan.epoch_warning:g}); consider lowering its weight"
                )
    return out


def lr_at(schedule: Schedule, step: int | np.ndarray) -> float | np.ndarray:
    """Learning rate at a 1-based step of a run.

    Linear warmup reaches peak at step `warmup_steps`. WSD then holds the peak until
    `decay_start_step` and decays linearly so that the last decay step
    (decay_start_step + decay_steps - 1) trains at `final_lr`. Cosine decays from the end of
    warmup to `final_lr` at step warmup_steps + decay_steps; a recipe's cosine may leave
    decay_steps out (meaning: the rest of the run), which `plan_recipe` fills in, so pass the
    plan's `phase.schedule` (completed once, by `_complete`) rather than the raw recipe schedule.
    """
    if schedule.type == "cosine" and schedule.decay_steps is None:
        raise ValueError("a cosine schedule without decay_steps has no length; use the plan's phase.schedule")
    s = np.asarray(step, dtype=np.float64)
    peak, final = schedule.peak_lr, schedule.final_lr
    warm = schedule.warmup_steps
    lr = np.full_like(s, peak)
    if warm > 0:
        lr = np.where(s <= warm, peak * np.clip(s, 0, None) / warm, lr)
    if schedule.type == "wsd":
        start, length = schedule.decay_start_step, schedule.decay_steps
        frac = np.clip((s - start + 1) / max(length, 1), 0.0, 1.0)
        lr = np.where(s >= start, peak + (final - peak) * frac, lr)
    elif schedule.type == "cosine":
        length = max(schedule.decay_steps or 1, 1)
        frac = np.clip((s - warm) / length, 0.0, 1.0)
        cos = final + (peak - final) * 0.5 * (1 + np.cos(np.pi * frac))
        lr = np.where(s > warm, cos, lr)
    return float(lr) if np.ndim(lr) == 0 else lr


def lr_at_token(plan: Plan, token: float) -> float:
    """The learning rate in force at cumulative token position `token`."""
    phase = plan.at_token(token)
    step = phase.first_step + int((token - phase.start_token) // phase.global_batch_tokens)
    return float(lr_at(phase.schedule, min(step, phase.last_step)))


def epochs_at_token(plan: Plan, token: float) -> dict[str, float]:
    """Each source's cumulative epochs at token position `token` (sources of known size only),
    over the phases begun by then and the phase training at `token` (its sources at the start
    of that phase, so token 0 lists the first phase's sources at 0 epochs)."""
    out: dict[str, float] = {}
    for p in plan.phases:
        if token < p.start_token:
            break
        frac = min(1.0, (token - p.start_token) / p.tokens) if p.tokens else 0.0
        for s in p.sources:
            if s.available_tokens:
                out[s.name] = (s.tokens_before + frac * s.tokens) / s.available_tokens
    return out
