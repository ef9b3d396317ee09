"""Regressions from a mixture (shares per source) to a metric, and their cross-validation.

Three models, each saved as JSON and reloaded to predict:

- `loglinear`: the Data Mixing Law form of Ye et al. (2024), L = c + k * exp(sum_j t_j r_j).
  For a fixed c the form is linear in log|L - c|, so c is found by a one-dimensional search
  (golden section on the training error) around the range of L, with t and k from numpy least
  squares at each c. Shares that sum to 1 make k and a shift of every t_j the same thing; the
  fit reports the gauge sum_j t_j = 0 (k absorbs the rest).
- `quadratic`: ridge regression on r_j and every product r_i r_j, features centred, the
  intercept unpenalized, the ridge strength chosen by an inner 5-fold cross-validation.
- `lightgbm`: gradient-boosted trees (RegMix's choice), when the `lightgbm` package is installed
  (`pip install mixc[experiments]`). Hyper-parameters as RegMix's regression notebook (learning
  rate 0.01, 1000 rounds, 31 leaves) but without its early stopping on the test set; one thread
  and `deterministic` so the same data give the same model bytes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MixcError

MODELS = ("loglinear", "quadratic", "lightgbm")
FORMAT = "mixc-fit/1"


# --------------------------------------------------------------------------- statistics


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of the ranks they span (as Spearman's rho needs)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    _, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation: Pearson's on average ranks; NaN when either side is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else math.nan


def kfold_indices(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint test folds covering 0..n-1, shuffled by `seed`."""
    if k < 2 or k > n:
        raise MixcError(f"k-fold cross-validation needs 2 <= k <= runs ({n}); got k={k}")
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(fold) for fold in np.array_split(order, k)]


# --------------------------------------------------------------------------- models


@dataclass
class Model:
    kind: str
    sources: list[str]
    target: str
    params: dict[str, Any] = field(default_factory=dict)
    cv: dict[str, Any] | None = None

    def predict(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if self.kind == "loglinear":
            p = self.params
            return p["c"] + p["k"] * np.exp(X @ np.asarray(p["t"]))
        if self.kind == "quadratic":
            p = self.params
            F = (quadratic_features(X) - np.asarray(p["mean"])) / np.asarray(p["scale"])
            return p["intercept"] + F @ np.asarray(p["coef"])
        if self.kind == "lightgbm":
            booster = self.__dict__.get("_booster")
            if booster is None:
                lgb = _lightgbm()
                booster = lgb.Booster(model_str=self.params["model"])
                self.__dict__["_booster"] = booster
            return booster.predict(X, num_threads=1)
        raise MixcError(f"unknown model kind '{self.kind}' (known: {', '.join(MODELS)})")

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "model": self.kind, "target": self.target, "sources": self.sources,
                "params": self.params, "cv": self.cv}

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Model:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise MixcError(f"{where}: not a mixc fit model (expected \"format\": \"{FORMAT}\"; write one with `mixc fit -o`)")
        try:
            model = cls(data["model"], list(data["sources"]), data["target"], dict(data["params"]), data.get("cv"))
        except (KeyError, TypeError) as exc:
            raise MixcError(f"{where}: model file lacks {exc}") from None
        if model.kind not in MODELS:
            raise MixcError(f"{where}: unknown model kind '{model.kind}' (known: {', '.join(MODELS)})")
        return model


def load_model(path: str) -> Model:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise MixcError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise MixcError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from None
    return Model.from_json(data, path)


def _lightgbm():
    try:
        import lightgbm  # optional: only for --model lightgbm (mixc[experiments])
    except ImportError:
        raise MixcError("--model lightgbm needs the lightgbm package: pip install 'mixc[experiments]' (or lightgbm>=4)") from None
    return lightgbm


def quadratic_features(X: np.ndarray) -> np.ndarray:
    """r_j, then r_i r_j for i <= j (row-major upper triangle)."""
    i, j = np.triu_indices(X.shape[1])
    return np.hstack([X, X[:, i] * X[:, j]])


def _ridge(F: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    # Centred, not standardized: shares and their products share one scale, and dividing a rare
    # source's column by its tiny spread would let its coefficient grow and the fit extrapolate wildly.
    mean = F.mean(axis=0)
    scale = np.ones(F.shape[1])
    Z = F - mean
    n, d = Z.shape
    coef = np.linalg.solve(Z.T @ Z + lam * n * np.eye(d), Z.T @ (y - y.mean()))
    return coef, mean, scale, float(y.mean())


RIDGE_GRID = tuple(10.0 ** e for e in range(-7, 2))


def fit_quadratic(X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict[str, Any]:
    F = quadratic_features(X)
    folds = kfold_indices(len(y), min(5, len(y)), seed) if len(y) >= 4 else None
    best_lam, best_err = RIDGE_GRID[-1], math.inf
    for lam in RIDGE_GRID if folds else (1e-3,):
        err = 0.0
        for test in folds or []:
            train = np.setdiff1d(np.arange(len(y)), test)
            coef, mean, scale, icpt = _ridge(F[train], y[train], lam)
            err += float(np.sum((icpt + ((F[test] - mean) / scale) @ coef - y[test]) ** 2))
        if err < best_err:
            best_lam, best_err = lam, err
    coef, mean, scale, icpt = _ridge(F, y, best_lam)
    return {"lambda": best_lam, "intercept": icpt, "coef": coef.tolist(), "mean": mean.tolist(), "scale": scale.tolist()}


def _loglinear_at(X: np.ndarray, y: np.ndarray, c: float, sign: float, simplex: bool) -> tuple[float, np.ndarray, float]:
    """Least squares of log(sign * (y - c)) on the shares; returns (k, t, squared error in y)."""
    z = np.log(sign * (y - c))
    if simplex:
        t, *_ = np.linalg.lstsq(X, z, rcond=None)
        a = float(t.mean())
        t = t - a  # the gauge sum t = 0: k carries the common level
    else:
        A = np.hstack([np.ones((len(y), 1)), X])
        sol, *_ = np.linalg.lstsq(A, z, rcond=None)
        a, t = float(sol[0]), sol[1:]
    k = sign * math.exp(a)
    err = float(np.sum((c + k * np.exp(X @ t) - y) ** 2))
    return k, t, err


def fit_loglinear(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    simplex = bool(np.all(np.abs(X.sum(axis=1) - 1.0) < 1e-3))
    lo, hi = float(y.min()), float(y.max())
    span = max(hi - lo, 1e-12)
    best: tuple[float, float, np.ndarray, float] | None = None
    # L - c > 0 (the metric falls towards c: the usual case) or L - c < 0 (it rises towards c).
    for sign in (1.0, -1.0):
        # c in (lo - 100 span, lo) for sign +1; the search runs on the gap g = |edge - c| in log space.
        edge = lo if sign > 0 else hi

        def err_at(log_gap: float, sign=sign, edge=edge) -> float:
            c = edge - sign * span * math.exp(log_gap)
            return _loglinear_at(X, y, c, sign, simplex)[2]

        a, b = math.log(1e-4), math.log(1e2)
        grid = np.linspace(a, b, 25)
        errs = [err_at(g) for g in grid]
        i = int(np.argmin(errs))
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
        ratio = (math.sqrt(5) - 1) / 2
        for _ in range(60):  # golden section on the bracket around the best grid point
            m1, m2 = b - ratio * (b - a), a + ratio * (b - a)
            if err_at(m1) < err_at(m2):
                b = m2
            else:
                a = m1
        g = (a + b) / 2
        c = edge - sign * span * math.exp(g)
        k, t, err = _loglinear_at(X, y, c, sign, simplex)
        if best is None or err < best[3]:
            best = (c, k, t, err)
    c, k, t, _ = best
    return {"c": c, "k": k, "t": t.tolist(), "gauge": "sum t = 0" if simplex else "free intercept"}


LGB_PARAMS = {"objective": "regression", "learning_rate": 0.01, "num_leaves": 31, "seed": 42, "verbosity": -1,
              "num_threads": 1, "deterministic": True, "force_row_wise": True}
LGB_ROUNDS = 1000


def fit_lightgbm(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    lgb = _lightgbm()
    booster = lgb.train(LGB_PARAMS, lgb.Dataset(X, y, params={"verbosity": -1}), num_boost_round=LGB_ROUNDS)
    return {"model": booster.model_to_string(), "rounds": LGB_ROUNDS,
            "settings": {k: v for k, v in LGB_PARAMS.items() if k != "verbosity"}}


def fit(kind: str, X: np.ndarray, y: np.ndarray, sources: list[str], target: str, seed: int = 0) -> Model:
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(y) < 3:
        raise MixcError(f"fitting needs at least 3 runs with a value for '{target}'; got {len(y)}")
    if kind == "loglinear":
        params = fit_loglinear(X, y)
    elif kind == "quadratic":
        params = fit_quadratic(X, y, seed)
    elif kind == "lightgbm":
        params = fit_lightgbm(X, y)
    else:
        raise MixcError(f"unknown model '{kind}' (known: {', '.join(MODELS)})")
    params["target_range"] = [float(y.min()), float(y.max())]  # lets propose say when it extrapolates
    return Model(kind, list(sources), target, params)


def cross_validate(kind: str, X: np.ndarray, y: np.ndarray, k: int = 5, seed: int = 0) -> dict[str, Any]:
    """k-fold: every run predicted by a model that never saw it; Spearman and MAE over all of them."""
    predicted = np.empty(len(y))
    for test in kfold_indices(len(y), k, seed):
        train = np.setdiff1d(np.arange(len(y)), test)
        predicted[test] = fit(kind, X[train], y[train], [], "", seed).predict(X[test])
    return {"folds": k, "seed": seed, "spearman": spearman(predicted, y), "mae": float(np.mean(np.abs(predicted - y))),
            "runs": int(len(y))}


def score(predicted: np.ndarray, actual: np.ndarray) -> dict[str, Any]:
    return {"spearman": spearman(predicted, actual), "mae": float(np.mean(np.abs(predicted - actual))), "runs": int(len(actual))}
