"""Variant mixes for ablations and random mixture designs for sweeps.

An ablation changes one data factor of a base mix (`--vary`):
  NAME=2x      scale the weight of a source, category or language by 2, then renormalize;
  NAME=0.3     set its total share to 0.3; the other sources keep their proportions in the rest;
  drop:NAME    remove it, the rest renormalized;
  swap:A=B     give A's share to B (a source of the mix or of its catalog), A removed.
A sweep draws mixtures around a prior, as RegMix does: Dirichlet draws whose concentration is
the prior's shares times a scale, several scales mixed (`regmix`), or one scale (`dirichlet`);
each draw is projected onto the constraints (epoch caps, floors, caps).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import MixcError
from ..spec import load_catalog
from .constraints import Constraints
from .mixes import Base, members


@dataclass(frozen=True)
class Variant:
    name: str
    vary: str  # the --vary text ('' for the baseline)
    shares: dict[str, float]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")


def _catalog_sources(base: Base) -> dict:
    if base.catalog is None:
        return {}
    return load_catalog(base.catalog)[0]


def apply_vary(base: Base, text: str) -> Variant:
    shares = dict(base.shares)
    if text.startswith("drop:"):
        name = text[5:]
        gone = members(base, name)
        for s in gone:
            del shares[s]
        if not shares:
            raise MixcError(f"--vary {text}: dropping '{name}' leaves no source")
        slug = f"drop-{name}"
    elif text.startswith("swap:"):
        a, sep, b = text[5:].partition("=")
        if not sep or not a or not b:
            raise MixcError(f"--vary {text}: expected swap:A=B")
        if a not in shares:
            raise MixcError(f"--vary {text}: '{a}' is not a source of mix '{base.mix.name}'")
        if b not in shares and b not in _catalog_sources(base):
            raise MixcError(f"--vary {text}: '{b}' is neither a source of mix '{base.mix.name}' nor of its catalog")
        moved = shares.pop(a)
        shares[b] = shares.get(b, 0.0) + moved
        slug = f"swap-{a}-{b}"
    else:
        name, sep, value = text.partition("=")
        if not sep or not name or not value:
            raise MixcError(f"--vary {text!r}: expected NAME=2x (scale), NAME=0.3 (set a share), drop:NAME or swap:A=B")
        group = members(base, name)
        scale = value.endswith("x")
        try:
            number = float(value[:-1] if scale else value)
        except ValueError:
            raise MixcError(f"--vary {text}: '{value}' is not a number (or a factor like 2x)") from None
        if not math.isfinite(number) or number < 0 or (not scale and number > 1):
            raise MixcError(f"--vary {text}: {'a factor must be >= 0' if scale else 'a share must be in [0, 1]'}")
        inside = math.fsum(shares[s] for s in group)
        if scale:
            for s in group:
                shares[s] *= number
            slug = f"{name}-x{value[:-1]}"
        else:
            if number < 1 and math.isclose(inside, 1.0):
                raise MixcError(f"--vary {text}: '{name}' is the whole mix; nothing else can fill the rest")
            outside = 1.0 - inside
            for s in shares:
                shares[s] = shares[s] / inside * number if s in group else shares[s] / outside * (1.0 - number)
            slug = f"{name}-{value}"
    total = math.fsum(shares.values())
    if total <= 0:
        raise MixcError(f"--vary {text}: leaves every weight at zero")
    return Variant(_slug(slug), text, {s: v / total for s, v in shares.items() if v > 0})


def variants(base: Base, varies: list[str]) -> list[Variant]:
    out = [Variant("baseline", "", base.shares)]
    for text in varies:
        v = apply_vary(base, text)
        if any(v.name == o.name for o in out):
            raise MixcError(f"--vary {text}: a variant named '{v.name}' is already asked for")
        out.append(v)
    return out


def sweep_designs(constraints: Constraints, prior: np.ndarray, runs: int, design: str, seed: int,
                  max_tries: int = 200) -> list[np.ndarray]:
    """`runs` feasible mixtures drawn around `prior` (shares over constraints.sources)."""
    if design not in ("dirichlet", "regmix"):
        raise MixcError(f"unknown design '{design}' (dirichlet or regmix)")
    rng = np.random.default_rng(seed)
    n = len(prior)
    prior = np.asarray(prior, dtype=np.float64)
    out: list[np.ndarray] = []
    tries = 0
    while len(out) < runs:
        tries += 1
        if tries > max_tries * runs:
            raise MixcError(f"only {len(out)} of {runs} designs met the constraints after {tries - 1} draws; loosen them")
        if design == "regmix":
            # RegMix mixes concentration scales so that both near-prior and sparse, far mixtures appear
            scale = float(rng.choice([0.1, 0.3, 1.0, 3.0, 10.0])) * n
        else:
            scale = float(n)
        alpha = np.maximum(prior * scale, 1e-4)
        x = rng.dirichlet(alpha)
        x[x < 1e-6] = 0.0  # a share below one in a million is no share: keeps the YAML readable
        x = x / x.sum()
        y = constraints.project(x)
        if y is None or not constraints.ok(y):
            continue
        out.append(y)
    return out
