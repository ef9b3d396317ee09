"""The scrubbable curriculum timeline: one self-contained HTML file.

The page is a template (timeline.html, .css, .js beside this module) with the report data
embedded as JSON. Everything a reader sees at the cursor (phase, step, learning rate,
shares, epochs) is computed in the page's JavaScript from that JSON with the same
formulas as `mixc.plan`, so the page needs no server and no network; the browser test
checks the two agree. Phase-to-phase diff tables are static and rendered here. A run's page
(`mixc report RUN --format html`) also embeds the run's curves (mixc/report/curves.py): its
training loss and held-out BPB, drawn on the same token axis and read off at the cursor.
"""

from __future__ import annotations

import json
import re
from html import escape
from importlib import resources
from typing import Any

from ..diff import diff_phases
from ..errors import MixcError
from ..plan import Plan
from ..text import human_tokens

SLIDER_POSITIONS = 10_000  # resolution of the range input: 1/10,000 of the timeline's width
MIN_RUN_WIDTH = 0.08  # a short run (a 47B-token long-context extension) still gets 8% of the axis


def run_segments(plan: Plan) -> list[dict[str, Any]]:
    """The x axis: each run is a segment, linear in tokens inside, at least MIN_RUN_WIDTH wide.

    SmolLM3's long-context runs are under 1% of its tokens; on a purely linear axis they
    would be a few pixels wide. Widening them (and saying so on the axis) keeps them
    scrubbable, while within a run tokens stay linear.
    """
    runs: list[dict[str, Any]] = []
    for p in plan.phases:
        if not runs or runs[-1]["name"] != p.run:
            runs.append({"name": p.run, "start_token": p.start_token, "end_token": p.end_token,
                         "first_phase": p.index, "last_phase": p.index, "steps": 0})
        runs[-1]["end_token"] = p.end_token
        runs[-1]["last_phase"] = p.index
        runs[-1]["steps"] = p.last_step
    tokens = [r["end_token"] - r["start_token"] for r in runs]
    min_width = min(MIN_RUN_WIDTH, 1.0 / len(runs))
    widened: set[int] = set()  # runs held at MIN_RUN_WIDTH; the others share the rest by tokens
    while len(runs) > 1 and len(widened) < len(runs):
        rest = 1.0 - min_width * len(widened)
        scale = rest / sum(t for i, t in enumerate(tokens) if i not in widened)
        narrow = {i for i, t in enumerate(tokens) if i not in widened and t * scale < min_width}
        if not narrow:
            break
        widened |= narrow
    rest = 1.0 - min_width * len(widened)
    wide_tokens = sum(t for i, t in enumerate(tokens) if i not in widened)
    x = 0.0
    for i, run in enumerate(runs):
        run["x0"] = x
        x += min_width if i in widened else rest * tokens[i] / wide_tokens
        run["x1"] = x
    runs[-1]["x1"] = 1.0
    return runs


def timeline_payload(plan: Plan, data: dict[str, Any], run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The page's data; `run` (mixc.report.curves.run_curves) adds a trained run's loss and held-out BPB."""
    if plan.recipe is None or not plan.total_tokens:
        raise MixcError("the timeline (--format html or png) needs a recipe; for bare mixes use --format table, markdown, csv or json")
    payload = {"report": data, "runs": run_segments(plan), "slider_positions": SLIDER_POSITIONS}
    if run is not None:
        payload["run"] = run
    return payload


def _asset(name: str) -> str:
    return resources.files("mixc.report").joinpath(name).read_text(encoding="utf-8")


# In a <script> element '</script' ends it, and '<!--' followed by '<script' makes the parser
# swallow the real closing tag (the "script data double escaped" state). JSON may spell any
# character as \uXXXX, so no '<', '>' or '&' reaches the page: the text cannot change state.
_SCRIPT_SAFE = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def _json_for_script(payload: dict[str, Any]) -> str:
    return json.dumps(payload, separators=(",", ":"), allow_nan=False).translate(_SCRIPT_SAFE)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _pts(d: float) -> str:
    return f"{100 * d:+.2f} pts"


def _factor(f: float | None, after: float) -> str:
    if f is None:
        return "new" if after > 0 else "–"
    return f"×{f:.2f}"


def _diff_section(plan: Plan, i: int) -> str:
    a, b = plan.phases[i], plan.phases[i + 1]
    d = diff_phases(a, b)
    rows = "".join(
        f"<tr><td>{escape(r['name'])}</td><td>{_pct(r['before'])}</td><td>{_pct(r['after'])}</td>"
        f"<td class=\"{'up' if r['delta'] > 0 else 'down' if r['delta'] < 0 else ''}\">{_pts(r['delta'])}</td>"
        f"<td>{_factor(r['factor'], r['after'])}</td></tr>"
        for r in d["categories"]
    )
    parts = [
        f'<details class="diff" id="diff-{i + 1}" data-to-phase="{b.index}">',
        f"<summary><b>{escape(a.name)} → {escape(b.name)}</b> <span class=\"muted\">at {human_tokens(b.start_token)} tokens: "
        f"{len(d['added'])} added, {len(d['removed'])} removed, {len(d['changed'])} reweighted</span></summary>",
        '<div class="diff-body"><table class="num"><caption>categories (share of tokens)</caption>'
        "<thead><tr><th>category</th><th>before</th><th>after</th><th>change</th><th>factor</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>",
    ]
    if d["added"] or d["removed"]:
        items = "".join(f'<li class="up">+ {escape(r["source"])} <span>{_pct(r["share"])}</span></li>' for r in d["added"])
        items += "".join(f'<li class="down">− {escape(r["source"])} <span>{_pct(r["share"])}</span></li>' for r in d["removed"])
        parts.append(f'<div><h4>added and removed</h4><ul class="addrem">{items}</ul></div>')
    if d["changed"]:
        rows = "".join(
            f"<tr><td>{escape(r['source'])}</td><td>{100 * r['before']:.3f}%</td><td>{100 * r['after']:.3f}%</td>"
            f"<td class=\"{'up' if r['delta'] > 0 else 'down'}\">{_pts(r['delta'])}</td><td>{_factor(r['factor'], r['after'])}</td></tr>"
            for r in d["changed"]
        )
        parts.append('<div class="scroll"><table class="num"><caption>reweighted sources (normalized shares)</caption>'
                     "<thead><tr><th>source</th><th>before</th><th>after</th><th>change</th><th>factor</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table></div>")
    parts.append("</div></details>")
    return "".join(parts)


def render_html(plan: Plan, data: dict[str, Any], run: dict[str, Any] | None = None) -> str:
    payload = timeline_payload(plan, data, run)
    diffs = "".join(_diff_section(plan, i) for i in range(len(plan.phases) - 1)) or '<p class="muted">One phase: nothing to compare.</p>'
    values = {
        "/*MIXC_CSS*/": _asset("timeline.css"),
        "/*MIXC_JS*/": _asset("timeline.js"),
        "__MIXC_DATA__": _json_for_script(payload),
        "__MIXC_TITLE__": escape(plan.name),
        "__MIXC_VERSION__": escape(data["mixc_version"]),
        "__MIXC_DIFFS__": diffs,
    }
    # One pass, so that a placeholder-like string inside the data is never substituted.
    pattern = re.compile("|".join(re.escape(k) for k in values))
    return pattern.sub(lambda m: values[m.group(0)], _asset("timeline.html"))
