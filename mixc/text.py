"""Plain-text formatting every command shares (build progress, validate, diff, report): token
counts, percentages, the category roll-up and aligned tables."""

from __future__ import annotations

CATEGORY_ORDER = ("web", "multilingual", "code", "math", "reasoning")


def human_tokens(n: float | None) -> str:
    """1234567 -> '1.23M'; None -> '-'."""
    if n is None:
        return "-"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"


def pct(x: float) -> str:
    """0.1234 -> '12.3%'."""
    return f"{100 * x:.1f}%"


def rollup_line(categories: dict[str, float]) -> str:
    """'web 84.8% (multilingual 12.0%), code 12.5%, math 2.7%': multilingual is part of web."""
    parts = [f"web {pct(categories['web'])} (multilingual {pct(categories['multilingual'])})",
             f"code {pct(categories['code'])}", f"math {pct(categories['math'])}"]
    if categories.get("reasoning"):
        parts.append(f"reasoning {pct(categories['reasoning'])}")
    return ", ".join(parts)


def table(headers: list[str], rows: list[list[str]], align: str) -> list[str]:
    """Aligned plain-text columns; `align` is one 'l' or 'r' per column."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths]), *(fmt(r) for r in rows)]
