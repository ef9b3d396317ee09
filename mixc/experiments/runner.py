"""Proxy runs of an experiment: derived recipes, the local / Slurm / Ray launchers, the result CSVs.

An experiment folder holds mixes/<design>.yaml, recipes/<design>.yaml (the base recipe cut to
the varied phase, named <recipe>-<design> so the store keeps each design's phase manifest apart)
and runs/<design>-s<seed>/ — each a normal `mixc train` run folder. A run is finished when its
summary.json exists and is never run again; a failed run leaves FAILED (its exit status and the
log's last line) and is retried by the next invocation. Every run is two commands, `mixc build`
(the sources are tokenized once; later builds reuse them and only write the phase manifest) and
`mixc train --resume` (an interrupted run continues from its newest checkpoint).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import MixcError
from ..locyaml import load_file
from ..store import write_atomic
from ..train import checkpoint
from .csvio import write_table
from .mixes import Base

PLAN_FILE = "experiment.json"
MIXC = [sys.executable, "-c", "from mixc.cli import main; main()"]  # this interpreter's mixc, whatever PATH says


@dataclass(frozen=True)
class Run:
    design: str
    seed: int
    recipe: str
    folder: str

    @property
    def id(self) -> str:
        return Path(self.folder).name


def derived_recipe(base: Base, design: str, mix_path: Path, out: Path, steps: int | None, annealed: bool = False) -> Path:
    """The base recipe cut to the varied phase, on the design's mix, with its own schedule over `steps`.

    The phase becomes a run of its own. From scratch: a WSD schedule at the recipe's peak learning
    rate, warmup a tenth of the steps, decay over the last fifth (a proxy run's schedule). Annealed
    (started from a stable-phase checkpoint): no warmup, a linear decay from the peak rate to the
    recipe's final rate over all the steps, as the playbook's annealing ablations do."""
    if base.recipe is None:
        raise MixcError("a proxy run needs a recipe (RECIPE --phase P), not a bare mix")
    data = load_file(base.recipe.path).data
    recipe = base.recipe.recipe
    phase = dict(data["phases"][base.phase_index])
    n = steps or (phase.get("steps") or -(-phase["tokens"] // recipe.global_batch_tokens))
    phase.pop("tokens", None)
    phase.pop("start_step", None)
    phase.pop("schedule", None)
    phase.update(steps=n, run="main", mix=os.path.relpath(mix_path.resolve(), out.parent.resolve()))
    warmup = 0 if annealed else max(0, n // 10)
    decay = n if annealed else max(1, n // 5)
    data = {**data, "name": f"{recipe.name}-{design}", "phases": [phase],
            "description": f"proxy run of {recipe.name} phase {phase['name']} on mix {design} (written by mixc)",
            "schedule": {"type": "wsd", "peak_lr": recipe.schedule.peak_lr, "warmup_steps": warmup,
                         "decay_start_step": max(n - decay + 1, warmup + 1), "decay_steps": min(decay, n - warmup),
                         "final_lr": recipe.schedule.final_lr}}
    write_atomic(out, yaml.safe_dump(data, sort_keys=False, width=1000).encode())
    return out


def checkpoint_of(spec: str) -> str:
    """RUN@STEP (a run folder and one of its checkpoint steps) or RUN (its newest checkpoint) as a checkpoint folder."""
    run, _, step = spec.partition("@")
    root = Path(run) / "checkpoints"
    if not step:
        return str(checkpoint.resolve(run))
    try:
        wanted = int(step)
    except ValueError:
        raise MixcError(f"--from {spec}: '{step}' is not a step number (RUN@STEP)") from None
    found = [d for d in checkpoint.checkpoint_dirs(root) if checkpoint.step_of(d) == wanted]
    if not found:
        have = ", ".join(str(checkpoint.step_of(d)) for d in checkpoint.checkpoint_dirs(root)) or "none"
        raise MixcError(f"--from {spec}: no checkpoint of step {wanted} in {root} (steps there: {have})")
    return str(found[0].resolve())


def plan_runs(folder: Path, designs: list[str], seeds: int) -> list[Run]:
    return [Run(d, s, str(folder / "recipes" / f"{d}.yaml"), str(folder / "runs" / f"{d}-s{s}"))
            for d in designs for s in range(seeds)]


def write_plan(folder: Path, kind: str, runs: list[Run], shards: str, build_args: list[str], train_args: list[str],
               shares: dict[str, dict[str, float]], sources: list[str], categories: dict[str, str]) -> Path:
    doc = {"kind": kind, "shards": shards, "build_args": build_args, "train_args": train_args, "sources": sources,
           "categories": categories, "shares": shares,
           "runs": [{"design": r.design, "seed": r.seed, "recipe": r.recipe, "folder": r.folder} for r in runs]}
    path = folder / PLAN_FILE
    write_atomic(path, json.dumps(doc, indent=1) + "\n")
    return path


def read_plan(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / PLAN_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MixcError(f"{folder}: not an experiment folder (no {PLAN_FILE}; write one with mixc ablate or mixc sweep)") from None


def runs_of(plan: dict[str, Any]) -> list[Run]:
    return [Run(r["design"], r["seed"], r["recipe"], r["folder"]) for r in plan["runs"]]


def commands(plan: dict[str, Any], run: Run, mixc: list[str] | None = None) -> list[list[str]]:
    mixc = mixc or MIXC
    return [[*mixc, "build", "--recipe", run.recipe, "--out", plan["shards"], "--quiet", *plan["build_args"]],
            [*mixc, "train", run.recipe, "--shards", plan["shards"], "--out", run.folder, "--resume",
             "--seed", str(run.seed), *plan["train_args"]]]


def status(run: Run) -> str:
    folder = Path(run.folder)
    if (folder / "summary.json").is_file():
        return "done"
    if (folder / "FAILED").is_file():
        return "failed"
    return "pending"


def _execute(plan: dict[str, Any], run: Run, mixc: list[str] | None, which: slice = slice(None)) -> tuple[Run, str]:
    folder = Path(run.folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "FAILED").unlink(missing_ok=True)
    log = folder / "run.log"
    with open(log, "ab") as out:
        for cmd in commands(plan, run, mixc)[which]:
            out.write(("$ " + shlex.join(cmd) + "\n").encode())
            out.flush()
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT)
            if rc != 0:
                last = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:]
                write_atomic(folder / "FAILED", f"exit {rc} from mixc {cmd[len(mixc or MIXC)]}: {last[0] if last else ''}\n")
                return run, "failed"
    if which.stop is None and status(run) != "done":
        write_atomic(folder / "FAILED", "training ended without writing summary.json\n")
        return run, "failed"
    return run, status(run)


def _build_all(plan: dict[str, Any], todo: list[Run], mixc: list[str] | None, echo, outcome: dict[str, str]) -> set[str]:
    """The builds, one at a time (they write the same store), once per design; returns the designs whose build failed."""
    broken: set[str] = set()
    for design in dict.fromkeys(r.design for r in todo):
        first = next(r for r in todo if r.design == design)
        if _execute(plan, first, mixc, slice(0, 1))[1] == "failed":
            broken.add(design)
            echo(f"{design}: build failed ({(Path(first.folder) / 'FAILED').read_text().strip()})")
    for r in todo:
        if r.design in broken:
            outcome[r.id] = "failed"
    return broken


def run_local(plan: dict[str, Any], parallel: int, mixc: list[str] | None = None, echo=print) -> dict[str, str]:
    """Every unfinished run, `parallel` at a time; finished runs are skipped, failed ones retried."""
    runs = runs_of(plan)
    todo = [r for r in runs if status(r) != "done"]
    outcome = {r.id: "done (skipped)" for r in runs if status(r) == "done"}
    broken = _build_all(plan, todo, mixc, echo, outcome)
    trains = [r for r in todo if r.design not in broken]
    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        for run, result in pool.map(lambda r: _execute(plan, r, mixc, slice(1, None)), trains):
            outcome[run.id] = result
            echo(f"{run.id}: {result}" + (f" ({(Path(run.folder) / 'FAILED').read_text().strip()})" if result == "failed" else ""))
    return outcome


def slurm_script(plan: dict[str, Any], folder: Path, partition: str | None, time: str, cpus: int, gpus: int,
                 env: str | None) -> str:
    """A job array: task i runs the i-th unfinished run's commands (the list is fixed when written)."""
    todo = [r for r in runs_of(plan) if status(r) != "done"]
    if not todo:
        raise MixcError(f"{folder}: every run is finished; nothing to submit")
    lines = ["#!/bin/bash", f"#SBATCH --job-name=mixc-{folder.name}", f"#SBATCH --array=0-{len(todo) - 1}",
             f"#SBATCH --cpus-per-task={cpus}", f"#SBATCH --time={time}", f"#SBATCH --output={folder.resolve()}/slurm-%A_%a.out"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if gpus:
        lines.append(f"#SBATCH --gpus-per-task={gpus}")
    lines += ["set -euo pipefail", env or f"export PATH={shlex.quote(str(Path(sys.executable).parent))}:$PATH", "case $SLURM_ARRAY_TASK_ID in"]
    for i, run in enumerate(todo):
        build, train = commands(plan, run, ["mixc"])
        # array tasks build into one store: flock makes them take turns (sources are tokenized once)
        cmds = f"flock {shlex.quote(str(folder.resolve() / 'build.lock'))} {shlex.join(build)} && {shlex.join(train)}"
        lines.append(f"  {i}) test -f {shlex.quote(run.folder + '/summary.json')} || {{ {cmds}; }} ;;")
    lines += ["esac", ""]
    return "\n".join(lines)


def run_ray(plan: dict[str, Any], cpus: float, gpus: float, address: str | None = None, echo=print,
            mixc: list[str] | None = None) -> dict[str, str]:
    """One Ray task per unfinished run, with its resource request; the same commands as locally."""
    import ray  # optional: only for --executor ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    todo = [r for r in runs_of(plan) if status(r) != "done"]
    outcome = {r.id: "done (skipped)" for r in runs_of(plan) if status(r) == "done"}
    broken = _build_all(plan, todo, mixc, echo, outcome)

    @ray.remote(num_cpus=cpus, num_gpus=gpus)
    def task(plan: dict[str, Any], run: Run) -> tuple[Run, str]:
        return _execute(plan, run, mixc, slice(1, None))

    for run, result in ray.get([task.remote(plan, r) for r in todo if r.design not in broken]):
        outcome[run.id] = result
        echo(f"{run.id}: {result}")
    return outcome


def heldout_metrics(heldout: dict[str, Any]) -> dict[str, float]:
    """Columns from a held-out evaluation (summary.json's "heldout", or `mixc eval --format json`):
    bpb/<source> and loss/<source>, bpb/<category> and loss/<category>, bpb/mix and loss/mix.
    A category named like a source is written category:<name>, so no column means two things."""
    out: dict[str, float] = {}
    sources = heldout.get("sources") or {}
    for name, figures in sources.items():
        for key in ("bpb", "loss"):
            if _number(figures.get(key)):
                out[f"{key}/{name}"] = float(figures[key])
    for name, figures in (heldout.get("categories") or {}).items():
        label = f"category:{name}" if name in sources or name == "mix" else name
        for key in ("bpb", "loss"):
            if _number(figures.get(key)):
                out[f"{key}/{label}"] = float(figures[key])
    for key in ("bpb", "loss"):
        if _number((heldout.get("mix") or {}).get(key)):
            out[f"{key}/mix"] = float(heldout["mix"][key])
    return out


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_metrics(run: Run) -> dict[str, float]:
    """`loss/train` (the last training loss) and, when the run was evaluated in the loop, its last
    held-out evaluation (see heldout_metrics)."""
    summary = json.loads((Path(run.folder) / "summary.json").read_text())
    out: dict[str, float] = {}
    if _number(summary.get("loss_last")):
        out["loss/train"] = float(summary["loss_last"])
    out.update(heldout_metrics(summary.get("heldout") or {}))
    return out


def write_results(folder: Path, plan: dict[str, Any]) -> tuple[Path, Path, list[str]]:
    """ratios.csv and metrics.csv over the finished runs (RegMix's layout); the unfinished are listed."""
    sources = plan["sources"]
    ids, ratios, metrics, missing = [], [], [], []
    for run in runs_of(plan):
        if status(run) != "done":
            missing.append(run.id)
            continue
        ids.append(run.id)
        shares = plan["shares"][run.design]
        ratios.append([shares.get(s, 0.0) for s in sources])
        metrics.append(run_metrics(run))
    columns = sorted({k for m in metrics for k in m})
    r = write_table(folder / "ratios.csv", "run", sources, ids, ratios)
    m = write_table(folder / "metrics.csv", "run", columns, ids, [[m.get(c, math.nan) for c in columns] for m in metrics])
    return r, m, missing
