"""`mixc validate`: load every spec file given (or found in a folder) and report what it holds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .locyaml import Location, SpecError, SpecErrors
from .plan import plan_mixes, plan_recipe
from .spec import ResolvedMix, detect_kind, load_catalog, load_mix, load_recipe
from .text import human_tokens, rollup_line

STRICT_TOLERANCE = 1e-6


@dataclass
class Validation:
    lines: list[str] = field(default_factory=list)  # what each valid file holds
    errors: list[SpecError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    files: int = 0

    @property
    def ok(self) -> bool:
        return not self.errors


def spec_files(paths: list[str]) -> list[Path]:
    """Files as given; folders expand to the YAML files below them, sorted."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.suffix in (".yaml", ".yml") and q.is_file())
        else:
            out.append(p)
    return out


def _mix_summary(mix: ResolvedMix) -> str:
    phase = plan_mixes([mix]).phases[0]
    mode = "relative, normalized when compiled" if mix.weights_mode == "relative" else "absolute"
    return f"mix '{mix.name}': {len(mix.entries)} sources, weight sum {mix.weight_sum:.6g} ({mode}); {rollup_line(phase.categories())}"


def _strict_sum(mix: ResolvedMix) -> SpecError | None:
    if mix.weights_mode != "relative" and not math.isclose(mix.weight_sum, 1.0, rel_tol=0, abs_tol=STRICT_TOLERANCE):
        where = next(iter(mix.positions.values()), None)
        return SpecError(
            f"weights sum to {mix.weight_sum:.9g}, not 1 +- {STRICT_TOLERANCE:g}; fix them or declare 'weights: relative'",
            where, "sources")
    return None


def validate_file(path: Path, strict: bool, result: Validation) -> None:
    kind = detect_kind(path)
    if kind == "catalog":
        sources, _ = load_catalog(path)
        unverified = sum(1 for s in sources.values() if not s.verified)
        result.lines.append(f"OK {path}: catalog, {len(sources)} sources ({unverified} with unverified locations)")
        return
    if kind == "mix":
        mix = load_mix(path)
        mixes = [mix]
        result.lines.append(f"OK {path}: {_mix_summary(mix)}")
    else:
        resolved = load_recipe(path)
        plan = plan_recipe(resolved)
        mixes = list(resolved.mixes)
        result.lines.append(f"OK {path}: recipe '{plan.name}', {len(plan.phases)} phases, {human_tokens(plan.total_tokens)} tokens")
        for phase, mix in zip(plan.phases, mixes):
            result.lines.append(f"   {phase.name}: {_mix_summary(mix)}")
        # Say which recipe: the same phase names appear in several recipes.
        result.warnings.extend(f"{path}: {w}" for w in plan.warnings)
    for mix in mixes:
        if mix.weights_mode != "relative" and not math.isclose(mix.weight_sum, 1.0, abs_tol=STRICT_TOLERANCE):
            if strict:
                result.errors.append(_strict_sum(mix))
            else:
                result.warnings.append(f"{mix.path}: weights sum to {mix.weight_sum:.9g}; 'mixc validate --strict' fails this")


def validate_paths(paths: list[str], strict: bool = False) -> Validation:
    result = Validation()
    files = spec_files(paths)
    for path in files:
        result.files += 1
        try:
            validate_file(path, strict, result)
        except SpecErrors as exc:
            result.errors.extend(exc.errors)
        except SpecError as exc:
            result.errors.append(exc)
        except (ArithmeticError, ValueError) as exc:
            # A number no check anticipated must not cost the other files their results: report
            # it against this file, as a failure, and go on.
            result.errors.append(SpecError(f"cannot evaluate this file's numbers ({type(exc).__name__}: {exc})",
                                           Location(str(path), 1, 1)))
    result.errors = _unique(result.errors)
    result.warnings = list(dict.fromkeys(result.warnings))  # a mix used by several phases warns once
    if not files:
        result.errors.append(SpecError(f"no YAML files found in {', '.join(paths)}"))
    return result


def _unique(errors: list[SpecError]) -> list[SpecError]:
    """A mix shared by several recipes is reported once, not once per recipe."""
    seen, out = set(), []
    for e in errors:
        if str(e) not in seen:
            seen.add(str(e))
            out.append(e)
    return out
