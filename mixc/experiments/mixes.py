"""The mix an experiment varies (a recipe's phase, or a mix file) and writing new mixes from shares."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import MixcError
from ..locyaml import load_file
from ..plan import normalize
from ..spec import (
    ResolvedMix,
    ResolvedRecipe,
    Source,
    detect_kind,
    load_catalog,
    load_mix,
    load_recipe,
    phase_steps,
    relative_to_file,
)
from ..store import write_atomic

CATEGORIES = ("web", "code", "math", "reasoning")


@dataclass(frozen=True)
class Base:
    """The starting point: a mix, its sources (with catalog fields), and the phase it belongs to."""

    mix: ResolvedMix
    catalog: Path | None  # the catalog file the mix names, so written variants name it too
    recipe: ResolvedRecipe | None = None
    phase_index: int | None = None

    @property
    def sources(self) -> dict[str, Source]:
        return {s.name: s for s, _ in self.mix.entries}

    @property
    def shares(self) -> dict[str, float]:
        return dict(zip([s.name for s, _ in self.mix.entries], normalize([w for _, w in self.mix.entries])))

    @property
    def phase_tokens(self) -> int | None:
        if self.recipe is None:
            return None
        r = self.recipe.recipe
        return phase_steps(r, r.phases[self.phase_index]) * r.global_batch_tokens


def _catalog_of(mix_path: str) -> Path | None:
    data = load_file(mix_path).data
    name = data.get("catalog") if isinstance(data, dict) else None
    return relative_to_file(mix_path, name) if name else None


def phase_index(resolved: ResolvedRecipe, phase: str) -> int:
    """A phase by name or by stage number."""
    for i, p in enumerate(resolved.recipe.phases):
        if p.name == phase or (p.stage is not None and str(p.stage) == phase):
            return i
    names = ", ".join(p.name for p in resolved.recipe.phases)
    raise MixcError(f"{resolved.path}: no phase '{phase}' (phases: {names})")


def load_base(path: str | Path, phase: str | None = None) -> Base:
    """A recipe (with --phase) or a mix file."""
    kind = detect_kind(path)
    if kind == "recipe":
        if phase is None:
            raise MixcError(f"{path} is a recipe: say which phase's mix to vary with --phase")
        resolved = load_recipe(path)
        i = phase_index(resolved, phase)
        mix = resolved.mixes[i]
        return Base(mix, _catalog_of(mix.path), resolved, i)
    if kind == "mix":
        mix = load_mix(path)
        return Base(mix, _catalog_of(mix.path))
    raise MixcError(f"{path} is a {kind}; expected a recipe (with --phase) or a mix")


def members(base: Base, name: str, extra: dict[str, Source] | None = None) -> list[str]:
    """The sources a name stands for: a source, a category (web, code, math, reasoning) or a language."""
    sources = {**base.sources, **(extra or {})}
    if name in sources:
        return [name]
    if name in CATEGORIES:
        found = [s for s, src in sources.items() if src.category == name]
    else:
        found = [s for s, src in sources.items() if src.language == name]
    if not found:
        raise MixcError(f"'{name}' is not a source, a category ({', '.join(CATEGORIES)}) or a language of mix '{base.mix.name}' ({base.mix.path})")
    return found


def rounded_shares(shares: dict[str, float], digits: int = 10) -> dict[str, float]:
    """Shares rounded for reading, the largest absorbing the rounding so they still sum to 1 (within 1e-12)."""
    kept = {k: v for k, v in shares.items() if v > 0}
    total = math.fsum(kept.values())
    if not kept or total <= 0:
        raise MixcError("a mix needs at least one source with a positive share")
    out = {k: round(float(v) / total, digits) for k, v in kept.items()}
    out = {k: v for k, v in out.items() if v > 0}
    largest = max(out, key=out.get)
    out[largest] = round(out[largest] + (1.0 - math.fsum(out.values())), digits + 4)
    return out


def write_mix(path: str | Path, name: str, shares: dict[str, float], base: Base, description: str,
              catalog_sources: dict[str, Source] | None = None) -> Path:
    """A mix YAML (absolute weights summing to 1) that `mixc validate --strict` accepts.

    Sources the base mix takes from its catalog are named only; inline sources (and sources a
    swap brings in that the base does not list) are written with their full definition."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    known = {**base.sources, **(catalog_sources or {})}
    in_catalog = set()
    if base.catalog is not None:
        in_catalog = set(load_catalog(base.catalog)[0])
    entries: dict[str, object] = {}
    for source, share in rounded_shares(shares).items():
        if source in in_catalog:
            entries[source] = share
        else:
            fields = known[source].model_dump(exclude={"name"}, exclude_none=True, exclude_defaults=True)
            fields.setdefault("category", known[source].category)
            where = fields.get("path")
            if where and "://" not in where and not os.path.isabs(where):
                fields["path"] = os.path.abspath(where)  # anchored to the base mix; the new mix lives elsewhere
            entries[source] = {"weight": share, **fields}
    doc: dict[str, object] = {"name": name, "description": description}
    if base.catalog is not None:
        doc["catalog"] = os.path.relpath(base.catalog.resolve(), path.parent.resolve())
    doc["weights"] = "absolute"
    doc["sources"] = entries
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1000)
    write_atomic(path, text.encode())
    return path
