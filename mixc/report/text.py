"""Terminal, Markdown and CSV renderings of the report data (see `data.py`)."""

from __future__ import annotations

import csv
import io
from typing import Any

from ..text import human_tokens, pct, rollup_line, table


def _epochs(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _source_rows(phase: dict[str, Any]) -> list[list[str]]:
    rows = []
    for s in sorted(phase["sources"], key=lambda s: -s["share"]):
        flag = " !" if s["over_epoch_warning"] else ""
        rows.append([
            s["name"], s["category"], s["language"], f"{s['weight']:g}", f"{100 * s['share']:.3f}%",
            human_tokens(s["tokens"]), human_tokens(s["available_tokens"]), _epochs(s["epochs"]), _epochs(s["cumulative_epochs"]) + flag,
        ])
    return rows


SOURCE_HEADERS = ["source", "category", "language", "weight", "share", "tokens", "size", "epochs", "cum. epochs"]


def _phase_header(phase: dict[str, Any]) -> str:
    stage = f" (stage {phase['stage']})" if phase["stage"] is not None else ""
    if not phase["steps"]:
        return f"{phase['name']}: {len(phase['sources'])} sources, weight sum {phase['weight_sum']:.5f} ({phase['weights']})"
    return (
        f"{phase['name']}{stage}: run {phase['run']}, steps {phase['first_step']:,}-{phase['last_step']:,}, "
        f"tokens {human_tokens(phase['start_token'])}-{human_tokens(phase['end_token'])} ({human_tokens(phase['tokens'])}), "
        f"seq {phase['sequence_length']:,}, RoPE base {phase['rope_theta']:,.0f}, "
        f"LR {phase['lr_first_step']:.3g}->{phase['lr_last_step']:.3g}, {len(phase['sources'])} sources, "
        f"weight sum {phase['weight_sum']:.5f}"
    )


def render_terminal(data: dict[str, Any]) -> str:
    out = [f"{data['name']}: {len(data['phases'])} phases, {human_tokens(data['total_tokens'])} tokens"]
    for phase in data["phases"]:
        out += ["", _phase_header(phase), "  " + rollup_line(phase["categories"])]
        langs = ", ".join(f"{k} {pct(v)}" for k, v in list(phase["languages"].items())[:8])
        out.append(f"  languages: {langs}")
        out += ["  " + line for line in table(SOURCE_HEADERS, _source_rows(phase), "lllrrrrrr")]
    if data["warnings"]:
        out += ["", *(f"warning: {w}" for w in data["warnings"])]
    return "\n".join(out) + "\n"


def render_markdown(data: dict[str, Any]) -> str:
    out = [f"# {data['name']}", "", f"{len(data['phases'])} phases, {human_tokens(data['total_tokens'])} tokens.", ""]
    out += ["| phase | stage | steps | tokens | boundary | seq | RoPE | web | multilingual | code | math | reasoning |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in data["phases"]:
        c = p["categories"]
        out.append(
            f"| {p['name']} | {p['stage'] or ''} | {p['steps']:,} | {human_tokens(p['tokens'])} | {human_tokens(p['end_token'])} | "
            f"{p['sequence_length']:,} | {p['rope_theta']:,.0f} | {pct(c['web'])} | {pct(c['multilingual'])} | {pct(c['code'])} | "
            f"{pct(c['math'])} | {pct(c['reasoning'])} |"
        )
    for p in data["phases"]:
        out += ["", f"## {p['name']}", "", _phase_header(p), ""]
        out.append("| " + " | ".join(SOURCE_HEADERS) + " |")
        out.append("|" + "---|" * len(SOURCE_HEADERS))
        out += ["| " + " | ".join(r) + " |" for r in _source_rows(p)]
    if data["warnings"]:
        out += ["", "## Warnings", "", *(f"- {w}" for w in data["warnings"])]
    return "\n".join(out) + "\n"


CSV_COLUMNS = ["phase", "stage", "source", "category", "language", "multilingual", "weight", "share", "tokens",
               "available_tokens", "epochs", "cumulative_epochs", "phase_start_token", "phase_end_token"]


def render_csv(data: dict[str, Any]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in data["phases"]:
        for s in p["sources"]:
            writer.writerow([p["name"], p["stage"] if p["stage"] is not None else "", s["name"], s["category"], s["language"],
                             int(s["multilingual"]), repr(s["weight"]), repr(s["share"]), s["tokens"],
                             "" if s["available_tokens"] is None else s["available_tokens"],
                             "" if s["epochs"] is None else repr(s["epochs"]),
                             "" if s["cumulative_epochs"] is None else repr(s["cumulative_epochs"]),
                             p["start_token"], p["end_token"]])
    return buf.getvalue()
