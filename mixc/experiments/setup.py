"""Writing an experiment folder (mixes, derived recipes, experiment.json) and running it, for the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MixcError
from ..store import write_atomic
from . import runner
from .fitcli import mix_vector
from .mixes import Base, rounded_shares, write_mix
from .report import ablation_report, report_png, report_table


def prepare(kind: str, base: Base, designs: dict[str, dict[str, float]], folder: Path, *, seeds: int, steps: int | None,
            shards: str, build_args: list[str], train_args: list[str], descriptions: dict[str, str],
            catalog_sources: dict | None = None, init_from: str | None = None) -> dict[str, Any]:
    """Mixes, derived recipes and experiment.json; `init_from` (a checkpoint) makes every run an annealed one."""
    folder = Path(folder).resolve()  # experiment.json names absolute paths: `mixc results` works from anywhere
    shards = str(Path(shards).resolve())
    existing = folder / runner.PLAN_FILE
    sources = list(base.sources)
    for shares in designs.values():
        sources += [s for s in shares if s not in sources]
    # the shares as the mix files write them (rounded), so ratios.csv says exactly what was trained
    shares_out = {d: rounded_shares(sh) for d, sh in designs.items()}
    if existing.is_file():
        old = runner.read_plan(folder)
        if old.get("shares") != shares_out:
            raise MixcError(f"{folder} holds an experiment with other designs; choose another --out (or delete it)")
    for name, shares in designs.items():
        mix = write_mix(folder / "mixes" / f"{name}.yaml", name, shares, base, descriptions[name], catalog_sources)
        runner.derived_recipe(base, name, mix, folder / "recipes" / f"{name}.yaml", steps, annealed=init_from is not None)
    if init_from is not None:
        train_args = [*train_args, "--init-from", init_from]
    runs = runner.plan_runs(folder, list(designs), seeds)
    known = {**base.sources, **(catalog_sources or {})}
    runner.write_plan(folder, kind, runs, shards, build_args, train_args, shares_out, sources,
                      {s: known[s].category for s in sources})
    return runner.read_plan(folder)


def launch(plan: dict[str, Any], folder: Path, executor: str, parallel: int, *, slurm: dict[str, Any], ray_resources: dict[str, float],
           echo) -> dict[str, str] | None:
    if executor == "slurm":
        script = runner.slurm_script(plan, folder, slurm.get("partition"), slurm.get("time", "04:00:00"),
                                     slurm.get("cpus", 2), slurm.get("gpus", 0), slurm.get("env"))
        path = folder / "slurm.sh"
        write_atomic(path, script)
        echo(f"wrote {path}: submit with `sbatch {path}`, then `mixc results {folder}`")
        return None
    if executor == "ray":
        return runner.run_ray(plan, ray_resources.get("cpus", 1), ray_resources.get("gpus", 0), echo=echo)
    return runner.run_local(plan, parallel, echo=echo)


def results(folder: Path) -> dict[str, Any]:
    plan = runner.read_plan(folder)
    ratios, metrics, missing = runner.write_results(folder, plan)
    out: dict[str, Any] = {"ratios": str(ratios), "metrics": str(metrics), "unfinished": missing,
                           "failed": [r.id for r in runner.runs_of(plan) if runner.status(r) == "failed"]}
    if plan["kind"] == "ablate":
        done = [r for r in runner.runs_of(plan) if runner.status(r) == "done"]
        report = ablation_report({r.id: runner.run_metrics(r) for r in done}, {r.id: r.design for r in done},
                                 {r.id: r.seed for r in done})
        write_atomic(folder / "report.json", json.dumps(report, indent=1) + "\n")
        out["report"] = report
        out["report_file"] = str(folder / "report.json")
        if report_png(report, folder / "report.png"):
            out["report_png"] = str(folder / "report.png")
    return out


def results_text(out: dict[str, Any]) -> str:
    lines = []
    if "report" in out:
        lines.append(report_table(out["report"]))
    extra = [out[k] for k in ("report_file", "report_png") if k in out]
    lines.append(f"wrote {out['ratios']} and {out['metrics']}" + (f"; and {', '.join(extra)}" if extra else ""))
    if out["failed"]:
        lines.append(f"failed (rerun the same command to retry): {', '.join(out['failed'])}")
    pending = [r for r in out["unfinished"] if r not in out["failed"]]
    if pending:
        lines.append(f"not finished: {', '.join(pending)}")
    return "\n".join(lines)


def prior_vector(base: Base, sources: list[str], prior: str | None, sizes: dict[str, int] | None) -> np.ndarray:
    """The sweep's centre: the base mix (default), shares proportional to source sizes ('tokens'), or a mix file."""
    if prior is None:
        shares = base.shares
        return np.array([shares.get(s, 0.0) for s in sources])
    if prior == "tokens":
        lacking = [s for s in sources if (sizes or {}).get(s, base.sources[s].tokens) is None]
        if lacking:
            raise MixcError(f"--prior tokens: no size known for {', '.join(lacking[:5])} (pass --shards, or give 'tokens' in the catalog)")
        v = np.array([float((sizes or {}).get(s, base.sources[s].tokens)) for s in sources])
        return v / v.sum()
    return mix_vector(prior, sources)
