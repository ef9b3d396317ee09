"""The timeline as a PNG (matplotlib, Agg): phases, learning rate, category shares, mixes.

For readers who never open a browser: the same charts as the HTML timeline, on the same
x axis (each run a segment, linear in tokens inside; see `html.run_segments`), plus one
row per phase with its category bar and its largest sources. A run's chart
(`mixc report RUN --format png`) adds its training loss and held-out BPB per category.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..plan import Plan, lr_at
from ..text import human_tokens
from .html import run_segments, timeline_payload

SEGMENTS = [("web-en", "web (English)", "#4e79a7"), ("multilingual", "multilingual web", "#9cc3e6"),
            ("code", "code", "#f28e2b"), ("math", "math", "#59a14f"), ("reasoning", "reasoning", "#b07aa1")]
PHASE_COLORS = ["#3d5a80", "#5b7fa6", "#7b6d8d", "#98c1d9", "#c9a227", "#6a994e", "#bc4749", "#386641"]
ACCENT = "#c2185b"
CATEGORY_COLORS = {"web": "#4e79a7", "multilingual": "#9cc3e6", "code": "#f28e2b", "math": "#59a14f", "reasoning": "#b07aa1"}
TOP_SOURCES = 5


def _segment_shares(categories: dict[str, float]) -> dict[str, float]:
    return {"web-en": max(categories["web"] - categories["multilingual"], 0.0), "multilingual": categories["multilingual"],
            "code": categories["code"], "math": categories["math"], "reasoning": categories["reasoning"]}


def _short(name: str, limit: int = 30) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


class _Axis:
    """Token position -> x in [0, 1], as the page's xOfToken."""

    def __init__(self, runs: list[dict[str, Any]]):
        self.runs = runs

    def __call__(self, token: float | np.ndarray) -> np.ndarray:
        token = np.asarray(token, dtype=np.float64)
        out = np.ones_like(token)
        done = np.zeros(token.shape, dtype=bool)
        for i, r in enumerate(self.runs):
            last = i == len(self.runs) - 1
            inside = ~done & ((token < r["end_token"]) | last)
            span = max(r["end_token"] - r["start_token"], 1)
            frac = np.clip((token - r["start_token"]) / span, 0.0, 1.0)
            out = np.where(inside, r["x0"] + frac * (r["x1"] - r["x0"]), out)
            done |= inside
        return out


def _boundary_ticks(ax, plan: Plan, xof: _Axis) -> None:
    tokens = [0, *(p.end_token for p in plan.phases)]
    xs, labels = [], []
    for t in tokens:
        x = float(xof(t))
        if xs and abs(x - xs[-1]) < 0.012:  # two boundaries too close to label apart
            continue
        xs.append(x)
        labels.append(human_tokens(t) if t else "0")
    ax.set_xticks(xs, labels)
    ax.set_xlim(0, 1)
    for x in xs:
        ax.axvline(x, color="#d9dde5", lw=0.8, zorder=0)


def _run_separators(ax, runs: list[dict[str, Any]]) -> None:
    for r in runs[1:]:
        ax.axvline(r["x0"], color="#1d2330", lw=1.2, ls=(0, (4, 3)), zorder=3)


def _inches(fig, fraction: float, ax) -> float:
    """A span of the x axis, in inches on the page."""
    return fraction * ax.get_position().width * fig.get_figwidth()


def _fits(fig, text: str, fraction: float, ax, size: float = 9.0) -> bool:
    return _inches(fig, fraction, ax) > 0.62 * size / 72 * len(text) + 0.08


def _phases_panel(fig, ax, plan: Plan, runs: list[dict[str, Any]], xof) -> None:
    """Phases."""
    from matplotlib.patches import Rectangle  # matplotlib: loaded by render_png

    for i, p in enumerate(plan.phases):
        x0, x1 = float(xof(p.start_token)), float(xof(p.end_token))
        ax.add_patch(Rectangle((x0, 0), x1 - x0, 1, color=PHASE_COLORS[i % len(PHASE_COLORS)]))
        label = f"{p.stage} · {p.name}" if p.stage is not None else p.name
        if _fits(fig, label, x1 - x0, ax):
            ax.text((x0 + x1) / 2, 0.5, label, ha="center", va="center", color="white", fontsize=9, fontweight="bold")
    for r in runs:
        width = r["x1"] - r["x0"]
        prefix = "pretraining · " if r is runs[0] and len(runs) > 1 else ""
        label = next((t for t in (f"{prefix}run {r['name']} · {r['steps']:,} steps", f"run {r['name']}", r["name"]) if _fits(fig, t, width, ax, 8.5)),
                     r["name"][: max(int(_inches(fig, width, ax) * 72 / (0.62 * 8.5)) - 2, 1)] + "…")
        ax.text(r["x0"] + 0.003, 1.12, label, fontsize=8.5, va="bottom", color="#1d2330")
    if len(runs) > 1:
        ax.axvline(runs[0]["x1"], ymin=-0.1, ymax=1.1, color=ACCENT, lw=1.5, ls=":", clip_on=False)
        ax.text(runs[0]["x1"] - 0.004, -0.35, f"end of pretraining · {human_tokens(runs[0]['end_token'])}", color=ACCENT,
                ha="right", va="top", fontsize=9, fontweight="bold")
    ax.set_ylim(0, 1)
    ax.set_xlim(0, 1)
    ax.axis("off")


def _lr_panel(ax, plan: Plan, runs: list[dict[str, Any]], xof) -> None:
    """Learning rate, sampled per run plus the schedule's corners."""
    for r in runs:
        first = plan.phases[r["first_phase"]]
        sched = first.schedule
        steps = np.unique(np.concatenate([
            np.linspace(1, r["steps"], 1500).round(),
            [1, sched.warmup_steps, sched.warmup_steps + 1, r["steps"]],
            [sched.decay_start_step - 1, sched.decay_start_step] if sched.decay_start_step else [],
        ]))
        steps = steps[(steps >= 1) & (steps <= r["steps"])]
        tokens = r["start_token"] + (steps - 1) * plan.phases[0].global_batch_tokens
        ax.plot(xof(tokens), lr_at(sched, steps), color="#1d2330", lw=1.6)
    _boundary_ticks(ax, plan, xof)
    _run_separators(ax, runs)
    ax.set_ylabel("learning rate")
    ax.set_ylim(0, max(p.schedule.peak_lr for p in plan.phases) * 1.08)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.set_title("Learning rate over training tokens", loc="left", fontsize=11)
    ax.grid(axis="y", color="#eef0f4")


def _shares_panel(ax, plan: Plan, phases: list[dict[str, Any]], runs: list[dict[str, Any]], xof) -> None:
    """Category shares, stacked over tokens."""
    from matplotlib.patches import Rectangle  # matplotlib: loaded by render_png
    from matplotlib.ticker import PercentFormatter  # (the same)

    for p, pd in zip(plan.phases, phases):
        x0, x1 = float(xof(p.start_token)), float(xof(p.end_token))
        bottom = 0.0
        for key, _label, color in SEGMENTS:
            v = _segment_shares(pd["categories"])[key]
            ax.add_patch(Rectangle((x0, bottom), x1 - x0, v, color=color, lw=0))
            bottom += v
    _boundary_ticks(ax, plan, xof)
    _run_separators(ax, runs)
    ax.set_ylim(0, 1)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("Category shares over training tokens", loc="left", fontsize=11)
    handles = [Rectangle((0, 0), 1, 1, color=c) for _, _, c in SEGMENTS]
    ax.legend(handles, [label for _, label, _ in SEGMENTS], ncol=5, loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False)


def _series(ax, xof, tokens: list[int], values: list[float | None], **style) -> None:
    """A line over the known values (a missing one breaks it)."""
    y = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    ax.plot(xof(np.asarray(tokens, dtype=np.float64)), y, **style)


def _run_panels(loss_ax, bpb_ax, plan: Plan, runs: list[dict[str, Any]], xof, run: dict[str, Any]) -> None:
    """The run's training loss per step and held-out BPB per evaluation, on the plan's token axis."""
    loss, heldout = run["loss"], run["heldout"]
    _series(loss_ax, xof, loss["token"], loss["value"], color="#1d2330", lw=1.2)
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(f"Training loss (run {run['path']}, step {run['steps_done']:,} of {run['total_steps']:,})",
                      loc="left", fontsize=11)
    for name, values in heldout["categories"].items():
        _series(bpb_ax, xof, heldout["token"], values, color=CATEGORY_COLORS.get(name), lw=1.8, marker="o", ms=3, label=name)
    _series(bpb_ax, xof, heldout["token"], heldout["mix"], color="#1d2330", lw=1.4, ls="--", label="mix (phase weights)")
    bpb_ax.set_ylabel("bits per byte")
    bpb_ax.set_title("Held-out bits per byte per category", loc="left", fontsize=11)
    if heldout["step"]:
        bpb_ax.legend(ncol=6, loc="upper left", bbox_to_anchor=(0, -0.12), frameon=False)
    for ax in (loss_ax, bpb_ax):
        _boundary_ticks(ax, plan, xof)
        _run_separators(ax, runs)
        ax.grid(axis="y", color="#eef0f4")


def _mix_panel(ax, phases: list[dict[str, Any]]) -> None:
    """One row per phase: its mix by category, and its largest sources."""
    from matplotlib.ticker import PercentFormatter  # matplotlib: loaded by render_png

    rows = len(phases)
    for row, pd in enumerate(phases):
        y = rows - 1 - row
        left = 0.0
        for key, _label, color in SEGMENTS:
            v = _segment_shares(pd["categories"])[key]
            ax.barh(y, v, left=left, color=color, height=0.7)
            if v >= 0.06:
                ax.text(left + v / 2, y, f"{100 * v:.0f}%", ha="center", va="center", color="white", fontsize=8)
            left += v
        top = sorted(pd["sources"], key=lambda s: -s["share"])[:TOP_SOURCES]
        rest = 1.0 - sum(s["share"] for s in top)
        names = [f"{_short(s['name'])} {100 * s['share']:.1f}%" for s in top] + [f"other {100 * rest:.1f}%"]
        text = ", ".join(names[:3]) + ",\n" + ", ".join(names[3:])
        ax.text(1.03, y, text, va="center", fontsize=8, color="#1d2330", linespacing=1.25)
    ax.set_yticks(range(rows), [f"{p['name']}\n{human_tokens(p['tokens'])} tokens" for p in reversed(phases)], fontsize=8.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, rows - 0.4)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_title("Mix per phase (left) and its largest sources", loc="left", fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    pos = ax.get_position()
    ax.set_position([pos.x0, pos.y0, pos.width * 0.36, pos.height])


def render_png(plan: Plan, data: dict[str, Any], output: str | None, run: dict[str, Any] | None = None) -> None:
    import matplotlib  # heavy, optional: only for --format png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use('Agg'): no display needed

    if not output:
        raise ValueError("the PNG report needs an output file")
    timeline_payload(plan, data)  # the same precondition as the page: a recipe with tokens
    runs = run_segments(plan)
    xof = _Axis(runs)
    phases = data["phases"]

    plt.rcParams.update({"font.family": "DejaVu Sans", "font.size": 9.5, "axes.edgecolor": "#9aa2b1",
                         "axes.labelcolor": "#1d2330", "xtick.color": "#5d6678", "ytick.color": "#5d6678"})
    rows = len(phases)
    extra = [2.0, 2.1] if run is not None else []
    fig = plt.figure(figsize=(12, 8.6 + 0.42 * rows + sum(extra)), dpi=110)
    grid = fig.add_gridspec(4 + len(extra), 1, height_ratios=[0.5, 2.1, 2.0, *extra, 0.42 * rows + 0.5], hspace=0.5,
                            left=0.15, right=0.97, top=0.93, bottom=0.04)
    fig.suptitle(f"{plan.name}: {len(phases)} phases, {human_tokens(plan.total_tokens)} tokens "
                 f"(global batch {data['recipe']['global_batch_tokens']:,} tokens)", x=0.15, ha="left", fontsize=13, fontweight="bold")

    _phases_panel(fig, fig.add_subplot(grid[0]), plan, runs, xof)
    _lr_panel(fig.add_subplot(grid[1]), plan, runs, xof)
    _shares_panel(fig.add_subplot(grid[2]), plan, phases, runs, xof)
    if run is not None:
        _run_panels(fig.add_subplot(grid[3]), fig.add_subplot(grid[4]), plan, runs, xof, run)
    _mix_panel(fig.add_subplot(grid[3 + len(extra)]), phases)

    fig.savefig(output, format="png", metadata={"Software": None})
    plt.close(fig)
