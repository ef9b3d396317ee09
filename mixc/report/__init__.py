"""Renderers of a plan: terminal table, JSON, Markdown, CSV (and HTML timeline, PNG charts)."""

from __future__ import annotations

import json
from typing import Any

from ..plan import Plan
from .data import plan_data
from .html import render_html
from .png import render_png
from .text import render_csv, render_markdown, render_terminal


def render(plan: Plan, fmt: str, output: str | None = None, run: dict[str, Any] | None = None) -> str | None:
    """Text for text formats; binary formats are written to `output` and return None. `run`
    (mixc.report.curves.run_curves) puts a trained run's loss and held-out BPB on the timeline."""
    data = plan_data(plan)
    if fmt == "table":
        return render_terminal(data)
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "markdown":
        return render_markdown(data)
    if fmt == "csv":
        return render_csv(data)
    if fmt == "html":
        return render_html(plan, data, run)
    if fmt == "png":
        render_png(plan, data, output, run)
        return None
    raise ValueError(f"unknown report format {fmt}")
