"""What `mixc fit` and `mixc propose` do, apart from parsing options (kept out of cli.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MixcError
from ..store import write_atomic
from .csvio import format_table, read_table
from .fit import Model, cross_validate, fit, load_model, score
from .mixes import load_base


def training_data(ratios: str, metrics: str, target: str) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """Runs joined on their id; runs without a value for the target are left out."""
    r, m = read_table(ratios), read_table(metrics)
    y_all = m.column(target)
    common = [run for run in r.ids if run in set(m.ids)]
    if not common:
        raise MixcError(f"{ratios} and {metrics} share no run id")
    X = r.values[r.rows_for(common)]
    y = y_all[m.rows_for(common)]
    keep = ~np.isnan(y) & ~np.isnan(X).any(axis=1)
    return [c for c, k in zip(common, keep) if k], r.columns, X[keep], y[keep]


def run_fit(ratios: str, metrics: str, target: str, kind: str, folds: int, seed: int, predict: str | None,
            predict_out: str | None, test_metrics: str | None, out: str | None) -> dict[str, Any]:
    _, sources, X, y = training_data(ratios, metrics, target)
    result: dict[str, Any] = {"model": kind, "target": target, "runs": len(y), "sources": len(sources)}
    result["cv"] = cross_validate(kind, X, y, folds, seed)
    model = fit(kind, X, y, sources, target, seed)
    model.cv = result["cv"]
    if kind == "loglinear":
        result["params"] = model.params
    elif kind == "quadratic":
        result["params"] = {"lambda": model.params["lambda"]}
    if out:
        write_atomic(out, json.dumps(model.to_json(), indent=1, sort_keys=True) + "\n")
        result["saved"] = out
    if predict:
        new = read_table(predict)
        extra = [c for c in new.columns if c not in sources]
        missing = [c for c in sources if c not in new.columns]
        if missing:
            raise MixcError(f"{predict}: the model needs column{'s' if len(missing) > 1 else ''} {', '.join(missing[:6])}"
                            f"{' ...' if len(missing) > 6 else ''} (sources it was fitted on)")
        if extra and np.any(new.select(extra) > 0):
            raise MixcError(f"{predict}: column{'s' if len(extra) > 1 else ''} {', '.join(extra[:6])} hold sources the model never saw")
        predicted = model.predict(new.select(sources))
        text = format_table("run", [f"predicted/{target}"], new.ids, [[float(v)] for v in predicted])
        if predict_out:
            write_atomic(predict_out, text)
            result["predictions"] = predict_out
        else:
            result["predictions_csv"] = text
        if test_metrics:
            actual_table = read_table(test_metrics)
            actual = actual_table.column(target)[actual_table.rows_for(new.ids)]
            result["test"] = score(predicted, actual)
    elif test_metrics:
        raise MixcError("--test-metrics needs --predict (the ratios of those runs)")
    return result


def fit_table(result: dict[str, Any]) -> str:
    cv = result["cv"]
    lines = [f"model {result['model']}  target {result['target']}  runs {result['runs']}  sources {result['sources']}",
             f"{cv['folds']}-fold cross-validation: Spearman {cv['spearman']:.4f}  MAE {cv['mae']:.4g}"]
    if "test" in result:
        t = result["test"]
        lines.append(f"held-out runs ({t['runs']}): Spearman {t['spearman']:.4f}  MAE {t['mae']:.4g}")
    if result["model"] == "loglinear":
        p = result["params"]
        lines.append(f"L = {p['c']:.6g} + {p['k']:.6g} * exp(sum t_j r_j)   ({p['gauge']})")
    if result["model"] == "quadratic":
        lines.append(f"ridge lambda {result['params']['lambda']:g} (inner 5-fold)")
    for key, label in (("saved", "model"), ("predictions", "predictions")):
        if key in result:
            lines.append(f"wrote {label} {result[key]}")
    return "\n".join(lines)


def mix_vector(path: str, sources: list[str]) -> np.ndarray:
    """A mix file's normalized shares over `sources`; a source the model never saw is refused."""
    shares = load_base(path).shares
    unknown = [s for s in shares if s not in sources]
    if unknown:
        raise MixcError(f"{path}: source{'s' if len(unknown) > 1 else ''} {', '.join(unknown[:5])} not among the model's sources")
    return np.array([shares.get(s, 0.0) for s in sources])


def finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else x


def load_fitted(path: str, target: str | None) -> Model:
    model = load_model(path)
    if target is not None and target != model.target:
        raise MixcError(f"{path} predicts '{model.target}', not '{target}'")
    return model


def proposal_result(model: Model, proposal, out: Path) -> dict[str, Any]:
    return {"target": model.target, "predicted": finite(proposal.predicted), "prior_predicted": finite(proposal.prior_predicted),
            "active": proposal.active, "evaluated": proposal.evaluated, "mix": str(out), "warning": proposal.warning,
            "shares": {s: float(v) for s, v in zip(model.sources, proposal.shares) if v > 0}}
