"""An ablation's verdict: per variant and metric, the delta against the baseline and whether it is signal.

Rule: an effect is called when |mean delta| > 2 x the pooled seed standard deviation, where the
pooled variance is the average of the baseline's and the variant's sample variances over seeds
(n - 1 in the denominator). With one seed there is no noise estimate and no effect is called.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

NOISE_RULE = "|mean delta| > 2 x pooled seed standard deviation (sample std over seeds, baseline and variant pooled)"


def ablation_report(per_run: dict[str, dict[str, float]], designs: dict[str, str], seeds: dict[str, int]) -> dict[str, Any]:
    """per_run: run id -> metrics; designs / seeds: run id -> its design / seed."""
    by_design: dict[str, list[dict[str, float]]] = {}
    for run, metrics in per_run.items():
        by_design.setdefault(designs[run], []).append(metrics)
    if "baseline" not in by_design:
        return {"rule": NOISE_RULE, "variants": [], "problem": "no finished baseline run"}
    base = by_design["baseline"]
    metric_names = sorted({k for runs in by_design.values() for m in runs for k in m}, key=_metric_order)
    variants = []
    for design, runs in by_design.items():
        if design == "baseline":
            continue
        rows = []
        for metric in metric_names:
            b = np.array([m[metric] for m in base if metric in m])
            v = np.array([m[metric] for m in runs if metric in m])
            if not len(b) or not len(v):
                continue
            delta = float(v.mean() - b.mean())
            sd = _pooled_sd(b, v)
            called = sd is not None and abs(delta) > 2 * sd
            rows.append({"metric": metric, "baseline": float(b.mean()), "variant": float(v.mean()), "delta": delta,
                         "seed_sd": sd, "seeds": [len(b), len(v)],
                         "effect": ("worse" if delta > 0 else "better") if called else None})
        variants.append({"design": design, "metrics": rows})
    return {"rule": NOISE_RULE, "variants": variants}


ROLLUPS = ("mix", "web", "multilingual", "code", "math", "reasoning")


def _metric_order(name: str) -> tuple:
    """bpb before loss; the mix, then the categories, then the sources (alphabetical)."""
    kind, _, what = name.partition("/")
    what = what.removeprefix("category:")
    rank = ROLLUPS.index(what) if what in ROLLUPS else len(ROLLUPS)
    return ({"bpb": 0, "loss": 1}.get(kind, 2), rank, name)


def _pooled_sd(b: np.ndarray, v: np.ndarray) -> float | None:
    if len(b) < 2 or len(v) < 2:
        return None
    return math.sqrt((b.var(ddof=1) + v.var(ddof=1)) / 2)


def report_table(report: dict[str, Any]) -> str:
    lines = [f"effect rule: {report['rule']}; lower is better (losses, bits per byte)"]
    if report.get("problem"):
        lines.append(report["problem"])
    width = max([len(r["metric"]) for v in report["variants"] for r in v["metrics"]] + [6])
    for variant in report["variants"]:
        lines.append(f"\n{variant['design']}")
        lines.append(f"  {'metric':<{width}} {'baseline':>10} {'variant':>10} {'delta':>10} {'seed sd':>9}  effect")
        for r in variant["metrics"]:
            sd = "-" if r["seed_sd"] is None else f"{r['seed_sd']:.4f}"
            lines.append(f"  {r['metric']:<{width}} {r['baseline']:>10.4f} {r['variant']:>10.4f} {r['delta']:>+10.4f} {sd:>9}  {r['effect'] or '-'}")
    return "\n".join(lines)


def report_png(report: dict[str, Any], path, metrics: list[str] | None = None) -> bool:
    """One panel per metric: each variant's delta against the baseline, whiskers at 2 x the pooled seed
    standard deviation (the effect rule), called effects filled. False when matplotlib is not installed."""
    try:
        import matplotlib  # optional and heavy: only for the report's PNG
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use('Agg'): no display needed

    names = metrics or sorted({r["metric"] for v in report["variants"] for r in v["metrics"]})
    if not names or not report["variants"]:
        return False
    fig, axes = plt.subplots(len(names), 1, figsize=(7, 1.2 + 0.45 * len(report["variants"]) * len(names)), squeeze=False)
    for ax, metric in zip(axes[:, 0], names):
        rows = [(v["design"], next((r for r in v["metrics"] if r["metric"] == metric), None)) for v in report["variants"]]
        rows = [(d, r) for d, r in rows if r is not None]
        y = np.arange(len(rows))
        deltas = [r["delta"] for _, r in rows]
        errs = [2 * r["seed_sd"] if r["seed_sd"] is not None else 0 for _, r in rows]
        colors = ["#c0392b" if r["effect"] == "worse" else "#27ae60" if r["effect"] == "better" else "#bbbbbb" for _, r in rows]
        ax.barh(y, deltas, xerr=errs, color=colors, capsize=3)
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(y, [d for d, _ in rows])
        ax.set_title(f"{metric}: delta vs baseline (lower is better; whiskers 2 x seed sd)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
