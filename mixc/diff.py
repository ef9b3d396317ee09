"""What changes between two mixes (or two phases of a recipe): sources, weights, categories, languages."""

from __future__ import annotations

from typing import Any

from .plan import PhasePlan
from .text import CATEGORY_ORDER, pct, table


def _factor(before: float, after: float) -> float | None:
    return after / before if before > 0 else None


def _category_rank(row: dict[str, Any]) -> int:
    return CATEGORY_ORDER.index(row["name"]) if row["name"] in CATEGORY_ORDER else len(CATEGORY_ORDER)


def diff_phases(a: PhasePlan, b: PhasePlan) -> dict[str, Any]:
    """Shares are normalized, so a weight change is a change in the phase's actual composition."""
    sa, sb = a.shares(), b.shares()
    changed = []
    for name in [n for n in sa if n in sb]:
        if abs(sb[name] - sa[name]) > 1e-12:
            changed.append({"source": name, "before": sa[name], "after": sb[name], "delta": sb[name] - sa[name],
                            "factor": _factor(sa[name], sb[name])})
    changed.sort(key=lambda r: -abs(r["delta"]))

    def shifts(x: dict[str, float], y: dict[str, float]) -> list[dict[str, Any]]:
        keys = list(dict.fromkeys([*x, *y]))
        return [{"name": k, "before": x.get(k, 0.0), "after": y.get(k, 0.0), "delta": y.get(k, 0.0) - x.get(k, 0.0),
                 "factor": _factor(x.get(k, 0.0), y.get(k, 0.0))} for k in keys]

    return {
        "from": a.name,
        "to": b.name,
        "added": [{"source": n, "share": sb[n]} for n in sb if n not in sa],
        "removed": [{"source": n, "share": sa[n]} for n in sa if n not in sb],
        "changed": changed,
        "categories": sorted(shifts(a.categories(), b.categories()), key=_category_rank),
        "languages": sorted(shifts(a.languages(), b.languages()), key=lambda r: -abs(r["delta"])),
    }


def _factor_text(f: float | None, after: float = 1.0) -> str:
    if f is None:
        return "new" if after > 0 else "-"
    return f"x{f:.2f}"


def _points(d: float) -> str:
    return f"{100 * d:+.2f} pts"


def render_diff(d: dict[str, Any]) -> str:
    out = [f"{d['from']} -> {d['to']}", "", "categories (share of tokens):"]
    rows = [[r["name"], pct(r["before"]), pct(r["after"]), _points(r["delta"]), _factor_text(r["factor"], r["after"])] for r in d["categories"]]
    out += ["  " + line for line in table(["category", "before", "after", "change", "factor"], rows, "lrrrr")]
    if d["added"]:
        out += ["", f"added ({len(d['added'])}):"] + [f"  + {r['source']}  {100 * r['share']:.3f}%" for r in d["added"]]
    if d["removed"]:
        out += ["", f"removed ({len(d['removed'])}):"] + [f"  - {r['source']}  {100 * r['share']:.3f}%" for r in d["removed"]]
    if d["changed"]:
        out += ["", f"reweighted ({len(d['changed'])}):"]
        rows = [[r["source"], f"{100 * r['before']:.3f}%", f"{100 * r['after']:.3f}%", _points(r["delta"]), _factor_text(r["factor"], r["after"])]
                for r in d["changed"]]
        out += ["  " + line for line in table(["source", "before", "after", "change", "factor"], rows, "lrrrr")]
    moved = [r for r in d["languages"] if abs(r["delta"]) >= 5e-5]
    if moved:
        out += ["", "languages:"]
        rows = [[r["name"], pct(r["before"]), pct(r["after"]), _points(r["delta"]), _factor_text(r["factor"], r["after"])] for r in moved]
        out += ["  " + line for line in table(["language", "before", "after", "change", "factor"], rows, "lrrrr")]
    return "\n".join(out) + "\n"
