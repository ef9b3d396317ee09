"""Feasible mixtures: floors and caps per source or category, epoch caps, closeness to a prior.

Every constraint is convex (a box, a band on a group's sum, a ball around the prior), so the
feasible set is convex: it is searched by projecting points onto each set in turn (alternating
projections), and a convex combination of feasible points stays feasible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import MixcError
from .mixes import members

TOL = 1e-6


@dataclass
class Constraints:
    sources: list[str]
    lo: np.ndarray
    hi: np.ndarray
    groups: list[tuple[str, np.ndarray, float, float]] = field(default_factory=list)  # name, member mask, lo, hi
    prior: np.ndarray | None = None
    max_distance: float | None = None  # total variation: half the L1 distance to the prior
    notes: dict[str, str] = field(default_factory=dict)  # why a source's cap is what it is
    anchor: np.ndarray | None = None  # a feasible point within max_distance of the prior (set by check_feasible)

    @classmethod
    def free(cls, sources: list[str]) -> Constraints:
        n = len(sources)
        return cls(list(sources), np.zeros(n), np.ones(n))

    def cap(self, j: int, value: float, why: str) -> None:
        if value < self.hi[j]:
            self.hi[j] = value
            self.notes[self.sources[j]] = why

    def check_feasible(self) -> None:
        if np.any(self.lo > self.hi + TOL):
            j = int(np.argmax(self.lo - self.hi))
            raise MixcError(f"source '{self.sources[j]}': floor {self.lo[j]:.6g} is above its cap {self.hi[j]:.6g}"
                            + (f" ({self.notes[self.sources[j]]})" if self.sources[j] in self.notes else ""))
        if self.lo.sum() > 1 + TOL:
            raise MixcError(f"the floors sum to {self.lo.sum():.6g} > 1: no mix can meet them")
        if self.hi.sum() < 1 - TOL:
            raise MixcError(f"the caps sum to {self.hi.sum():.6g} < 1: no mix can meet them (raise --max-epochs or a --max-share)")
        for name, mask, lo, hi in self.groups:
            if lo > hi + TOL:
                raise MixcError(f"'{name}': floor {lo:.6g} is above its cap {hi:.6g}")
            if self.hi[mask].sum() < lo - TOL:
                raise MixcError(f"'{name}': its sources' caps sum to {self.hi[mask].sum():.6g}, below its floor {lo:.6g}")
            if self.lo[mask].sum() > hi + TOL:
                raise MixcError(f"'{name}': its sources' floors sum to {self.lo[mask].sum():.6g}, above its cap {hi:.6g}")
        if self.prior is not None and self.max_distance is not None:
            # the feasible point nearest the prior anchors the distance constraint (the prior itself may break a cap)
            anchor = self.project(self.prior, distance=False)
            if anchor is None or tv_distance(anchor, self.prior) > self.max_distance + TOL:
                near = "" if anchor is None else f" (the nearest found is {tv_distance(anchor, self.prior):.4g} away)"
                raise MixcError(f"no mix meeting the other constraints lies within {self.max_distance:g} of the prior{near}")
            self.anchor = anchor

    def ok(self, x: np.ndarray, distance: bool = True) -> bool:
        """No violation (the fast test; `violations` says which)."""
        if abs(x.sum() - 1) > TOL or np.any(x < self.lo - TOL) or np.any(x > self.hi + TOL):
            return False
        for _name, mask, lo, hi in self.groups:
            s = x[mask].sum()
            if s < lo - TOL or s > hi + TOL:
                return False
        if distance and self.prior is not None and self.max_distance is not None:
            return tv_distance(x, self.prior) <= self.max_distance + TOL
        return True

    def violations(self, x: np.ndarray, distance: bool = True) -> list[str]:
        if self.ok(x, distance):
            return []
        out = []
        if abs(x.sum() - 1) > TOL:
            out.append(f"shares sum to {x.sum():.9g}")
        for j, name in enumerate(self.sources):
            if x[j] < self.lo[j] - TOL:
                out.append(f"{name} {x[j]:.6g} < floor {self.lo[j]:.6g}")
            if x[j] > self.hi[j] + TOL:
                out.append(f"{name} {x[j]:.6g} > cap {self.hi[j]:.6g}")
        for name, mask, lo, hi in self.groups:
            s = x[mask].sum()
            if s < lo - TOL or s > hi + TOL:
                out.append(f"{name} {s:.6g} outside [{lo:.6g}, {hi:.6g}]")
        if distance and self.prior is not None and self.max_distance is not None:
            d = tv_distance(x, self.prior)
            if d > self.max_distance + TOL:
                out.append(f"distance to prior {d:.6g} > {self.max_distance:.6g}")
        return out

    def active(self, x: np.ndarray) -> list[str]:
        """The constraints x sits on (within 1e-6), in words."""
        out = []
        for j, name in enumerate(self.sources):
            if self.lo[j] > 0 and x[j] <= self.lo[j] + TOL:
                out.append(f"{name} at its floor {self.lo[j]:.6g}")
            if self.hi[j] < 1 and x[j] >= self.hi[j] - TOL:
                why = f" ({self.notes[name]})" if name in self.notes else ""
                out.append(f"{name} at its cap {self.hi[j]:.6g}{why}")
        for name, mask, lo, hi in self.groups:
            s = x[mask].sum()
            if lo > 0 and s <= lo + TOL:
                out.append(f"{name} at its floor {lo:.6g}")
            if hi < 1 and s >= hi - TOL:
                out.append(f"{name} at its cap {hi:.6g}")
        if self.prior is not None and self.max_distance is not None and tv_distance(x, self.prior) >= self.max_distance - TOL:
            out.append(f"distance to the prior at its limit {self.max_distance:.6g}")
        return out

    def project(self, x: np.ndarray, rounds: int = 200, distance: bool = True) -> np.ndarray | None:
        """A feasible point near x (alternating projections), or None if none was reached."""
        x = project_box_simplex(x, self.lo, self.hi)
        for _ in range(rounds):
            if self.ok(x, distance=False):
                break
            for _name, mask, lo, hi in self.groups:
                s = x[mask].sum()
                if s < lo or s > hi:
                    # move the group's sum to the band, spreading the change over the group and the rest
                    target = min(max(s, lo), hi)
                    x = x.copy()
                    x[mask] += (target - s) / mask.sum()
                    x[~mask] -= (target - s) / max((~mask).sum(), 1)
            x = project_box_simplex(x, self.lo, self.hi)
        if not self.ok(x, distance=False):
            return None
        if distance and self.anchor is not None and tv_distance(x, self.prior) > self.max_distance:
            # shrink towards the anchor (feasible, close enough): the segment between them stays feasible,
            # and the distance to the prior is convex along it, so bisection finds the farthest point allowed
            lo, hi = 0.0, 1.0
            for _ in range(60):
                mid = (lo + hi) / 2
                if tv_distance(self.anchor + mid * (x - self.anchor), self.prior) <= self.max_distance:
                    lo = mid
                else:
                    hi = mid
            x = self.anchor + lo * (x - self.anchor)
        return x


def tv_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(0.5 * np.abs(np.asarray(a) - np.asarray(b)).sum())


def project_box_simplex(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The Euclidean projection of x onto {lo <= y <= hi, sum y = 1}: y = clip(x - tau, lo, hi).

    sum clip(x - tau) falls piecewise linearly in tau with breakpoints x - hi and x - lo, so tau is
    found exactly: evaluate the sum at every breakpoint, then interpolate inside the right segment."""
    taus = np.sort(np.concatenate([x - hi, x - lo]))
    sums = np.clip(x[None, :] - taus[:, None], lo, hi).sum(axis=1)  # non-increasing along taus
    k = int(np.searchsorted(-sums, -1.0, side="right")) - 1  # last breakpoint whose sum is still >= 1
    if k < 0:
        tau = taus[0]
    elif k >= len(taus) - 1 or sums[k] == sums[k + 1]:
        tau = taus[k]
    else:
        tau = taus[k] + (sums[k] - 1.0) * (taus[k + 1] - taus[k]) / (sums[k] - sums[k + 1])
    y = np.clip(x - tau, lo, hi)
    # the last 1e-15 of the sum goes to a source with room, so the shares sum to 1 exactly enough
    room = np.where(y < hi)[0] if y.sum() < 1 else np.where(y > lo)[0]
    if len(room):
        y[room[np.argmax(y[room])]] += 1 - y.sum()
    return y


def parse_assignment(text: str, option: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not sep or not name or not 0 <= share <= 1:
        raise MixcError(f"{option} {text!r}: expected NAME=SHARE with SHARE in [0, 1] (NAME a source, category or language)")
    return name, share


def build_constraints(base, sources: list[str], *, min_shares: tuple[str, ...] = (), max_shares: tuple[str, ...] = (),
                      max_epochs: float | None = None, sizes: dict[str, int] | None = None, phase_tokens: int | None = None,
                      prior: np.ndarray | None = None, max_distance: float | None = None) -> Constraints:
    """Constraints over `sources` from the command-line options; names resolved against the base mix."""
    c = Constraints.free(sources)
    index = {s: j for j, s in enumerate(sources)}
    for option, items in (("--min-share", min_shares), ("--max-share", max_shares)):
        for text in items:
            name, share = parse_assignment(text, option)
            names = members(base, name)
            unknown = [n for n in names if n not in index]
            if unknown:
                raise MixcError(f"{option} {text!r}: {', '.join(unknown)} not among the mixture's sources")
            if len(names) == 1 and name == names[0]:
                j = index[name]
                if option == "--min-share":
                    c.lo[j] = max(c.lo[j], share)
                else:
                    c.cap(j, share, f"--max-share {text}")
            else:
                mask = np.zeros(len(sources), dtype=bool)
                mask[[index[n] for n in names]] = True
                lo, hi = (share, 1.0) if option == "--min-share" else (0.0, share)
                c.groups.append((name, mask, lo, hi))
    if max_epochs is not None:
        if not phase_tokens:
            raise MixcError("--max-epochs needs the phase's token budget: give a recipe with --phase, or --tokens")
        lacking = []
        for j, s in enumerate(sources):
            size = (sizes or {}).get(s)
            if size is None:
                size = base.sources[s].tokens if s in base.sources else None
            if size is None:
                lacking.append(s)
                continue
            c.cap(j, min(1.0, max_epochs * size / phase_tokens), f"{max_epochs:g} epochs of {size} tokens")
        if lacking:
            raise MixcError(f"--max-epochs: no size known for {', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''} "
                            "(build them and pass --shards, or give 'tokens' in the catalog)")
    if prior is not None:
        c.prior = np.asarray(prior, dtype=np.float64)
        c.max_distance = max_distance
    elif max_distance is not None:
        raise MixcError("--max-distance needs --prior")
    c.check_feasible()
    return c
