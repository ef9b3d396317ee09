"""The mix that minimizes a fitted model's prediction under constraints.

The model may be a tree ensemble (not differentiable, piecewise constant), so the search uses
only predictions: many random mixtures (Dirichlet draws around the prior, or uniform ones when
there is none, plus the prior itself and the constraint corners), each projected onto the
feasible set; then local refinement from the best few (Dirichlet steps concentrated on the
current point, projected, kept when they predict lower), with the step shrinking; last, moves of
share from one source to another (all of the room, 30%, 3%), which carry the
mix onto the bounds a smooth optimum sits on. Seeded:
the same model and constraints give the same mix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .constraints import Constraints
from .fit import Model


@dataclass
class Proposal:
    shares: np.ndarray
    predicted: float
    prior_predicted: float | None
    active: list[str]
    evaluated: int
    warning: str | None


def propose(model: Model, constraints: Constraints, *, candidates: int = 4000, refine_rounds: int = 20,
            seed: int = 0) -> Proposal:
    rng = np.random.default_rng(seed)
    n = len(constraints.sources)
    prior = constraints.prior
    center = prior if prior is not None else np.full(n, 1.0 / n)
    draws = [center]
    # concentrations from wide to narrow: far corners and the prior's neighbourhood both get searched
    for conc in (0.3 * n, 1.0 * n, 5.0 * n, 50.0 * n):
        alpha = np.maximum(center * conc, 1e-3)
        draws.extend(rng.dirichlet(alpha, size=candidates // 4))
    draws.extend(np.eye(n))
    points = _feasible(constraints, draws)
    values = model.predict(np.array(points))
    evaluated = len(points)
    best_idx = np.argsort(values, kind="mergesort")[:4]
    starts = [(points[i], float(values[i])) for i in best_idx]
    best_x, best_v = starts[0]
    for x, v in starts:
        conc = 200.0
        for _ in range(refine_rounds):
            trial = _feasible(constraints, rng.dirichlet(np.maximum(x * conc * n, 1e-3), size=32))
            if not trial:
                conc *= 2
                continue
            tv = model.predict(np.array(trial))
            evaluated += len(trial)
            i = int(np.argmin(tv))
            if tv[i] < v:
                x, v = trial[i], float(tv[i])
            else:
                conc *= 2  # no better neighbour: look closer
        if v < best_v:
            best_x, best_v = x, v
    best_x, best_v, moved = _pairwise(model, constraints, best_x, best_v)
    evaluated += moved
    prior_v = float(model.predict(prior[None, :])[0]) if prior is not None else None
    warning = None
    lo, hi = model.params.get("target_range", (None, None))
    if lo is not None and not lo - (hi - lo) <= best_v <= hi + (hi - lo):
        warning = (f"the prediction {best_v:.6g} lies far outside the fitted runs' range [{lo:.6g}, {hi:.6g}]: the model is "
                   "extrapolating; stay near the runs (--prior with --max-distance) or add runs there")
    return Proposal(best_x, best_v, prior_v, constraints.active(best_x), evaluated, warning)


def _feasible(constraints: Constraints, draws) -> list[np.ndarray]:
    out = []
    for x in draws:
        x = np.asarray(x, dtype=np.float64)
        if constraints.ok(x):  # already feasible (a pairwise move inside the bounds): no projection needed
            out.append(x)
            continue
        y = constraints.project(x)
        if y is not None and constraints.ok(y):
            out.append(y)
    return out


def _pairwise(model: Model, constraints: Constraints, x: np.ndarray, v: float, rounds: int = 10) -> tuple[np.ndarray, float, int]:
    n = len(x)
    evaluated = 0
    for _ in range(rounds):
        trials = []
        for i in range(n):
            for j in range(n):
                if i == j:
                    continue
                room = min(constraints.hi[i] - x[i], x[j] - constraints.lo[j])
                if room <= 1e-12:
                    continue
                for frac in (1.0, 0.3, 0.03):
                    y = x.copy()
                    y[i] += room * frac
                    y[j] -= room * frac
                    trials.append(y)
        trials = _feasible(constraints, trials)
        if not trials:
            break
        values = model.predict(np.array(trials))
        evaluated += len(trials)
        k = int(np.argmin(values))
        if values[k] >= v - 1e-12:
            break
        x, v = trials[k], float(values[k])
    return x, v, evaluated
