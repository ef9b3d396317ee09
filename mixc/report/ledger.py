"""The run ledger: what a run's plan demanded against what the run consumed, and its held-out BPB.

`mixc report RUN` (a run folder: run.json, metrics.jsonl). Per phase and source:

- planned: the plan's token budget of the source in that phase (share x phase tokens);
- consumed: the tokens the run actually drew, counted through the blend for the steps trained
  (the blend is a pure function of the plan, the store and the seed, so this is exact):
  samples drawn x the phase's sequence length (a bestfit phase's samples include padding);
- epochs: the source's cumulative epochs at the end of what was trained of the phase;
- held-out BPB of the phase's mix average at its start (the last evaluation before its first step,
  else its first one) and at its end (its last evaluation), per category (with how many sources it
  covers) and per source; a source with no held-out document says so and why ("no_heldout").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..loader import CurriculumStream
from ..plan import plan_recipe
from ..spec import load_recipe
from ..store import source_token_counts
from ..streams import source_streams


def run_records(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line torn by a kill
    return out


def _brief(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    ev = record["eval"]
    return {"step": record["step"], "mix_bpb": (ev.get("mix") or {}).get("bpb"),
            "categories": {name: c["bpb"] for name, c in ev["categories"].items()},
            "coverage": {name: [c["sources"], c.get("no_heldout", 0)] for name, c in ev["categories"].items() if "sources" in c},
            "sources": {name: s["bpb"] for name, s in (ev.get("sources") or {}).items()},
            "no_heldout": {name: s.get("reason") for name, s in (ev.get("no_heldout") or {}).items()}}


def run_plan(run: str | Path):
    """A run folder's (run.json, resolved recipe, plan): the plan as the trainer made it, from
    the recipe and its store's token counts."""
    run = Path(run)
    try:
        info = json.loads((run / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MixcError(f"{run}: not a run folder (run.json: {exc})") from None
    for key in ("recipe", "shards"):
        if not Path(info.get(key) or "").exists():
            # run.json keeps the paths as `mixc train` was given them: relative ones from its directory.
            raise MixcError(f"{run / 'run.json'}: the run's {key} {info.get(key)!r} is not there (a relative path is "
                            "read from the current directory: run this where the run was trained)")
    resolved = load_recipe(info["recipe"])
    plan = plan_recipe(resolved, source_token_counts(Path(info["shards"]), resolved.recipe.name))
    return info, resolved, plan


def ledger(run: str | Path) -> dict[str, Any]:
    run = Path(run)
    info, resolved, plan = run_plan(run)
    store = Path(info["shards"])
    stream = CurriculumStream(plan, source_streams(store, plan), seed=info.get("seed"))
    records = run_records(run)
    trained = [r for r in records if not r.get("skipped")]
    last_step = max((r["step"] for r in records), default=0)
    evals = [r for r in trained if r.get("eval")]
    phases = []
    for i, (p, ps) in enumerate(zip(plan.phases, stream.phases)):
        first, last = stream.step_starts[i] + 1, stream.step_starts[i + 1]
        steps_done = max(0, min(last_step, last) - first + 1)
        samples = steps_done * p.samples_per_step
        drawn = ps.blend.epochs(samples)
        sources = []
        for sp, ep in zip(p.sources, drawn):
            sources.append({"name": sp.name, "category": sp.category, "share": sp.share, "planned_tokens": sp.tokens,
                            "consumed_tokens": ep.draws * p.sequence_length, "epochs": ep.cumulative_epochs})
        before = [r for r in evals if r["step"] < first]
        inside = [r for r in evals if first <= r["step"] <= last]
        start, end = _brief(before[-1] if before else (inside[0] if inside else None)), _brief(inside[-1] if inside else None)
        for s in sources:
            for key, brief in (("heldout_start_bpb", start), ("heldout_end_bpb", end)):
                s[key] = (brief or {}).get("sources", {}).get(s["name"])
            if (why := ((end or start) or {}).get("no_heldout", {}).get(s["name"])) is not None:
                s["no_heldout"] = why
        phases.append({"name": p.name, "steps": p.steps, "steps_done": steps_done, "planned_tokens": p.tokens,
                       "consumed_tokens": samples * p.sequence_length, "sources": sources,
                       "heldout_start": start, "heldout_end": end})
    return {"run": str(run), "recipe": resolved.recipe.name, "steps_done": last_step, "total_steps": stream.total_steps,
            "phases": phases}


def render_ledger(data: dict[str, Any]) -> str:
    def bpb(entry):
        return "-" if not entry or entry.get("mix_bpb") is None else f"{entry['mix_bpb']:.4f}"

    lines = [f"run {data['run']} (recipe {data['recipe']}): step {data['steps_done']}/{data['total_steps']}"]
    for p in data["phases"]:
        lines.append("")
        lines.append(f"phase {p['name']}: {p['steps_done']}/{p['steps']} steps, {p['consumed_tokens']:,} of "
                     f"{p['planned_tokens']:,} planned tokens; held-out bpb (mix) {bpb(p['heldout_start'])} -> "
                     f"{bpb(p['heldout_end'])}")
        cats = sorted(set((p["heldout_start"] or {}).get("categories", {})) | set((p["heldout_end"] or {}).get("categories", {})))
        for c in cats:
            a = (p["heldout_start"] or {}).get("categories", {}).get(c)
            b = (p["heldout_end"] or {}).get("categories", {}).get(c)
            covered = ((p["heldout_end"] or p["heldout_start"] or {}).get("coverage") or {}).get(c)
            over = "" if not covered else f"  ({covered[0]} source(s)" + (f", {covered[1]} without held-out)" if covered[1] else ")")
            lines.append(f"  {c:<13} bpb {'-' if a is None else f'{a:.4f}'} -> {'-' if b is None else f'{b:.4f}'}{over}")
        lines.append(f"  {'source':<40} {'share':>7} {'planned':>12} {'consumed':>12} {'epochs':>7}  held-out bpb")
        for s in p["sources"]:
            a, b = s.get("heldout_start_bpb"), s.get("heldout_end_bpb")
            held = "no held-out" if "no_heldout" in s else "" if a is None and b is None else \
                f"{'-' if a is None else f'{a:.4f}'} -> {'-' if b is None else f'{b:.4f}'}"
            lines.append(f"  {s['name'][:40]:<40} {s['share']:>7.4f} {s['planned_tokens']:>12,} {s['consumed_tokens']:>12,} "
                         f"{s['epochs']:>7.3f}  {held}".rstrip())
    return "\n".join(lines) + "\n"
