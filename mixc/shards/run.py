"""The run pass: execute the lowered pipelines and turn their output into a finished store.

A build is one datatrove job whatever the executor: its tasks are the (source, rank) pairs
still to tokenize, in source order, and a small dispatching step runs the right source's
pipeline for each. So two workers keep two cores busy across many small sources, and a
cluster gets one job array for a whole phase.

Crash safety. Each source is tokenized into `sources/<name>/<key>/.work/`:
  - `job.json`         the task count of this attempt (a rerun with another count starts over)
  - `shards/`          `{rank:05d}_{k:05d}.ds` (+ .index, .metadata) written by the tasks
  - `tasks/{rank}.json` written by a task after its last shard is closed: its completion marker
  - `running/{rank}`   the pid of the local worker process running the task (see WorkerDeaths)
A rerun skips tasks with a marker and redoes the others from scratch (tokenize.clear_task), so
datatrove's own completion files are not trusted: its logging folder is fresh for every run.
When every task of a source has its marker, `finalize_source` renames the shards to
00000.ds, 00001.ds, ... in (rank, k) order and writes manifest.json last. A build killed at
any moment and run again therefore yields the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from datatrove.executor import SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from .. import __version__
from ..environ import scoped_env
from ..errors import MixcError
from ..project import default_recipe, load_plan
from ..sample import DEFAULT_SAMPLE_DOCUMENTS
from ..store import (
    MANIFEST,
    StoreLock,
    finalize_source,
    os_error,
    read_manifest,
    replace_folder,
    token_size_for,
    tokenizer_file,
    write_phase_manifest,
)
from ..text import human_tokens
from . import heldout
from .lower import WORK, BuildOptions, SourceBuild, lower
from .progress import ProgressDisplay, SourceProgress
from .tokenize import TokenizerRef, task_error, task_marker
from .tokenizer import resolve_tokenizer
from .workers import BuildTasks, Discard, WorkerDeaths, datatrove_log, local_executor, ray_executor, workers_stderr
from .writer import DEFAULT_SHARD_TOKENS

EXECUTORS = ("local", "ray", "slurm")


# --------------------------------------------------------------------------- what a build is


@dataclass
class PhaseEntry:
    name: str
    stage: int | None
    sequence_length: int
    budget_tokens: int
    shares: dict[str, float]  # source -> normalized weight


@dataclass
class BuildContext:
    """Everything needed to finish a build once its tasks are done (pickled into a slurm job)."""

    store: str
    recipe: str
    tokenizer: dict  # as written in manifests
    token_size: int
    sources: list[SourceBuild]
    phases: list[PhaseEntry]
    options: BuildOptions
    run_dir: str
    started_at: float = 0.0  # wall clock (time.time) when the build began, for a slurm finish job's summary


@dataclass
class SourceResult:
    name: str
    folder: str
    documents: int
    tokens: int
    reused: bool
    finalized_only: bool = False  # every task had been tokenized by an earlier, interrupted run
    dropped: int = 0  # documents skipped for a null or empty text
    heldout_missing: tuple[str, str] | None = None  # (kind, why) when a held-out split left it no document


@dataclass
class BuildResult:
    store: Path
    recipe: str
    sources: list[SourceResult]
    phase_manifests: list[Path]
    seconds: float
    tokenizer: str
    executor: str
    submitted: list[str] = field(default_factory=list)  # slurm job ids
    run_tokens: int | None = None  # tokens encoded by this run's own tasks (None: every built source's)

    @property
    def built_tokens(self) -> int:
        if self.run_tokens is not None:
            return self.run_tokens
        return sum(s.tokens for s in self.sources if not s.reused)

    def summary(self) -> str:
        if self.submitted:
            return (f"submitted slurm jobs {', '.join(self.submitted)} for {len(self.sources)} sources into {self.store}; "
                    f"the last job writes the manifests and prints the build summary in its log")
        lines = []
        width = max((len(s.name) for s in self.sources), default=6)
        for s in self.sources:
            state = "reused" if s.reused else "finalized" if s.finalized_only else "built"
            dropped = f"  ({s.dropped:,} dropped: null or empty text)" if s.dropped else ""
            lines.append(f"  {s.name:<{width}}  {s.documents:>10,} docs  {s.tokens:>14,} tokens  {state:<9}  {s.folder}{dropped}")
        built = [s for s in self.sources if not s.reused and not s.finalized_only]
        finalized = [s for s in self.sources if s.finalized_only]
        reused = len(self.sources) - len(built) - len(finalized)
        counts = f"{len(built)} source(s) tokenized, {reused} reused"
        if finalized:
            counts = (f"{len(built)} source(s) tokenized, finalized {len(finalized)} source(s) tokenized by an earlier run, "
                      f"{reused} reused")
        if self.built_tokens or built:
            rate = self.built_tokens / self.seconds if self.seconds > 0 else 0.0
            work = f"{human_tokens(self.built_tokens)} new tokens in {self.seconds:.1f}s ({human_tokens(rate)} tok/s) with {self.tokenizer}"
        else:
            work = f"no new tokens ({self.seconds:.1f}s)"
        dropped = sum(s.dropped for s in self.sources if not s.reused)
        if dropped:
            work += f"; {dropped:,} document(s) with a null or empty text dropped"
        lines += self.heldout_lines()
        lines.append(
            f"{counts}; {work}; "
            f"shards in {self.store}/sources, phase manifests: "
            + (", ".join(str(p) for p in self.phase_manifests) or "none")
        )
        return "\n".join(lines)


    MISSING_KINDS = {"small": "too small for its max_fraction (less than one document expected)",
                     "chance": "by chance (one or more expected, no content hash fell below the threshold)",
                     "off": "no split (heldout documents: 0, or built before held-out splits)"}

    def heldout_lines(self) -> list[str]:
        """Which sources have no held-out set, and why (each reason once, its sources named)."""
        missing = [s for s in self.sources if s.heldout_missing]
        if not missing:
            return []
        lines = [f"held-out: {len(missing)} of {len(self.sources)} source(s) have no held-out document, so no held-out "
                 "figures (mixc eval lists them as 'no held-out'):"]
        for kind, what in self.MISSING_KINDS.items():
            names = [s.name for s in missing if s.heldout_missing[0] == kind]
            if names:
                lines.append(f"  {len(names)} {what}: {', '.join(names)}")
        return lines


class FinishBuild(PipelineStep):
    """The last slurm job of a build: check the tasks and write the manifests."""

    name = "mixc finish"
    type = "📦 - STORE"

    def __init__(self, context: BuildContext):
        super().__init__()
        self.context = context

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        context = self.context
        with StoreLock(context.store):
            results, manifests = finish(context)
        # What `mixc build` prints at the end of a local build, here in the finishing job's log
        # and next to the task logs.
        seconds = time.time() - context.started_at if context.started_at else 0.0
        text = BuildResult(Path(context.store), context.recipe, results, manifests, seconds,
                           context.tokenizer.get("name", "?"), "slurm").summary()
        Path(context.run_dir, "summary.txt").write_text(text + "\n")
        print(text, flush=True)
        return
        yield


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    env_command: str | None = None  # how a job activates mixc's environment; default: this venv
    qos: str | None = None


def _slurm_executors(pipeline, tasks: int, workers: int, run_dir: Path, context: BuildContext, slurm: SlurmOptions, job_name: str):
    if not slurm.partition:
        raise MixcError("--executor slurm needs --slurm-partition")
    env_command = slurm.env_command
    if env_command is None and sys.prefix != sys.base_prefix:
        env_command = f"source {sys.prefix}/bin/activate"
    # One tokenizer thread per task (sbatch's --export on the command line would override a directive).
    env_command = " && ".join(c for c in (env_command, "export RAYON_NUM_THREADS=1") if c)
    common = dict(time=slurm.time, partition=slurm.partition, env_command=env_command, qos=slurm.qos or "",
                  logging_dir=str(run_dir / "logs"), requeue=True, mail_type="NONE")
    tokenize = SlurmPipelineExecutor(pipeline, tasks=tasks, workers=workers, cpus_per_task=slurm.cpus_per_task,
                                     mem_per_cpu_gb=slurm.mem_per_cpu_gb, job_name=job_name, **common)
    finish_step = FinishBuild(replace(context, sources=[replace(s, pipeline=[]) for s in context.sources]))
    finisher = SlurmPipelineExecutor([finish_step], tasks=1, cpus_per_task=1, mem_per_cpu_gb=4, job_name=f"{job_name}-finish",
                                     depends=tokenize, **dict(common, logging_dir=str(run_dir / "finish-logs")))
    return tokenize, finisher


def _submit_slurm(pipeline, n_tasks: int, workers: int, context: BuildContext, slurm: SlurmOptions,
                  pending: list[SourceBuild], seconds: float) -> BuildResult:
    """Submit the tokenize job array and the finishing job; the result names the jobs (nothing built yet)."""
    run_dir = Path(context.run_dir)
    tokenize_job, finisher = _slurm_executors(pipeline, n_tasks, workers, run_dir, context, slurm, f"mixc-{context.recipe}")
    with datatrove_log(run_dir):
        finisher.run()  # submits both: the finisher depends on the tokenize job
    names = {sb.name for sb in pending}
    return BuildResult(Path(context.store), context.recipe,
                       [SourceResult(sb.name, sb.folder, 0, 0, sb.name not in names) for sb in context.sources], [], seconds,
                       context.tokenizer["name"], "slurm", submitted=[str(tokenize_job.job_id), str(finisher.job_id)])


# --------------------------------------------------------------------------- preparing and finishing


def _prepare(store: Path, sb: SourceBuild) -> bool:
    """Get a source folder ready; False when it is already complete."""
    folder = sb.build_path(store)
    work = folder / WORK
    if sb.rebuild and (folder / MANIFEST).exists():  # staged by a rebuild that stopped before the swap
        shutil.rmtree(folder)
    if (folder / MANIFEST).exists():
        shutil.rmtree(work, ignore_errors=True)  # a build killed just after writing the manifest
        return False
    job = {"key": sb.key, "tasks": sb.tasks}
    if (work / "finalize.json").exists():
        return True  # every task finished; only the renames and the manifest are left
    try:
        same = json.loads((work / "job.json").read_text()) == job
    except (OSError, ValueError):
        same = False
    if not same:  # nothing, or an attempt with another task count: start the source over
        shutil.rmtree(folder, ignore_errors=True)
        (work / "shards").mkdir(parents=True)
        (work / "job.json").write_text(json.dumps(job))
    return True


def _pending_tasks(store: Path, sources: list[SourceBuild]) -> list[tuple[int, int]]:
    table = []
    for i, sb in enumerate(sources):
        work = sb.work(store)
        if (work / "finalize.json").exists():
            continue
        table += [(i, r) for r in range(sb.tasks) if not task_marker(work, r).exists()]
    return table


def _check_tasks(store: Path, sources: list[SourceBuild], run_dir: str, failure: BaseException | None) -> None:
    """Every task must have left its marker; otherwise fail with the first task's own error."""
    missing, errors = [], []
    for sb in sources:
        work = sb.work(store)
        if (sb.build_path(store) / MANIFEST).exists() or (work / "finalize.json").exists():
            continue
        for r in range(sb.tasks):
            if not task_marker(work, r).exists():
                missing.append(f"{sb.name}[{r}]")
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    errors.append(task_error(work, r).read_text().strip())
    if not missing:
        return
    more = f" ({len(missing) - 1} more task(s) failed)" if len(missing) > 1 else ""
    errors = [e for e in errors if e]  # a task that could not write its error (a full disk) leaves it empty
    if errors:
        raise MixcError(errors[0] + more)
    if isinstance(failure, OSError):
        raise MixcError(f"build task {missing[0]} failed: {os_error(failure, store)}{more}")
    if failure is not None:
        raise MixcError(f"build task {missing[0]} failed: {(str(failure) or type(failure).__name__).splitlines()[0]}{more}")
    raise MixcError(f"{len(missing)} build task(s) did not finish ({', '.join(missing[:5])}); task logs are in {run_dir}/logs")


def finish(context: BuildContext, ran: set[str] | None = None) -> tuple[list[SourceResult], list[Path]]:
    """Finalize every tokenized source and write the phase manifests.

    `ran`: the sources this run tokenized (the others without a manifest were tokenized by an
    earlier, interrupted run and are only finalized); None when unknown (a slurm finish job)."""
    store = Path(context.store)
    _check_tasks(store, context.sources, context.run_dir, None)
    results = {}
    for sb in context.sources:
        folder = sb.path(store)
        reused = not sb.rebuild and (folder / MANIFEST).exists()
        if reused:
            manifest = read_manifest(folder)
        elif sb.rebuild and (sb.build_path(store) / MANIFEST).exists():  # finalized, not yet swapped in
            manifest = read_manifest(sb.build_path(store))
        else:
            manifest = _finalize(store, context, sb)
        if sb.rebuild:
            replace_folder(sb.build_path(store), folder)
        results[sb.name] = SourceResult(sb.name, sb.folder, int(manifest["documents"]), int(manifest["tokens"]), reused,
                                        finalized_only=not reused and ran is not None and sb.name not in ran,
                                        dropped=int(manifest.get("dropped_documents", 0)),
                                        heldout_missing=_missing_heldout(manifest, context.options))
    paths = []
    for phase in context.phases:
        paths.append(write_phase_manifest(store, context.recipe, phase.name, {
            "stage": phase.stage, "tokenizer": context.tokenizer, "token_size": context.token_size,
            "sequence_length": phase.sequence_length, "budget_tokens": phase.budget_tokens,
            "sources": [{"name": name, "share": share, "folder": results[name].folder,
                         "tokens": results[name].tokens, "documents": results[name].documents}
                        for name, share in phase.shares.items()],
        }))
    return [results[sb.name] for sb in context.sources], paths


def _missing_heldout(manifest: dict, options: BuildOptions) -> tuple[str, str] | None:
    """Why a source has no held-out document, when the build asked for a split and it has none."""
    reason = heldout.missing_reason(manifest)
    if reason is None or (reason[0] == "off" and not (options.heldout and options.heldout.documents)):
        return None  # documents held out, or no split asked for anywhere: nothing to explain
    return tuple(reason)


def _finalize(store: Path, context: BuildContext, sb: SourceBuild) -> dict:
    work = sb.work(store)
    summaries = []
    markers = [task_marker(work, r) for r in range(sb.tasks)]
    if not (work / "finalize.json").exists() or all(m.exists() for m in markers):
        summaries = [json.loads(m.read_text()) for m in markers]
    if not (work / "finalize.json").exists():
        if sum(s["documents"] for s in summaries) == 0:
            where = sb.input.get("location")
            files = sb.input.get("files")
            detail = f" ({len(files)} file(s), none with a non-empty text)" if files else ""
            raise MixcError(f"source '{sb.name}': no documents in {where}{detail}")
    manifest = {
        "source": sb.name, "key": sb.key, "tokenizer": context.tokenizer, "token_size": context.token_size,
        "input": sb.input, "options": dict(sb.options, tasks=sb.tasks), "seed": context.options.seed,
        "mixc_version": __version__, "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "dropped_documents": sum(int(s.get("dropped", 0)) for s in summaries),
    }
    if (sb.options.get("heldout") or {}).get("fraction"):
        manifest["heldout"] = heldout.finalize(sb.build_path(store), summaries, sb.options["heldout"], sb.category,
                                               max_fraction=sb.heldout_max_fraction)
    return finalize_source(sb.build_path(store), summaries, manifest)


# --------------------------------------------------------------------------- the entry point


def _select_phases(plan, stage: str | int | None):
    if stage is None or str(stage).strip().lower() == "all":
        return list(plan.phases)
    try:
        return [plan.phase(stage)]
    except KeyError as exc:
        raise MixcError(f"--stage {stage}: {exc.args[0]}") from None


def _resolve_tokenizer(name: str, base_dir: Path | None, sample: bool, notice):
    try:
        return resolve_tokenizer(name, base_dir=base_dir)
    except MixcError as exc:
        local = name.startswith(("sample:", ".", "/")) or name.endswith(".json") or (base_dir and (base_dir / name).exists())
        if not sample or local:
            raise
        notice(f"note: tokenizer '{name}' cannot be loaded here ({exc}); --sample builds with the demo tokenizer "
               f"'{DEMO_TOKENIZER}' instead")
        return resolve_tokenizer(DEMO_TOKENIZER)


DEMO_TOKENIZER = "sample:bpe-8192"


def build(*args, **kwargs) -> BuildResult:
    """Tokenize the sources of a recipe's phase(s) into the shard store `out` (see _build).

    A failed read or write of the store (a full disk, a read-only folder) is a located
    MixcError like any other bad input, not a traceback."""
    try:
        return _build(*args, **kwargs)
    except OSError as exc:
        raise MixcError(os_error(exc, kwargs.get("out"))) from None


def _build(
    recipe: str | Path | None = None,
    *,
    stage: str | int | None = "all",
    out: str | Path = "shards",
    sample: bool = False,
    sample_documents: int | None = None,
    executor: str = "local",
    tasks: int | None = None,
    workers: int | None = None,
    shard_tokens: int | None = None,
    tokenizer: str | None = None,
    seed: int | None = None,
    shuffle: bool = False,
    batch_documents: int | None = None,
    fast_encoder: bool = True,
    rebuild: bool = False,
    slurm: SlurmOptions | None = None,
    progress: bool = True,
    stream=None,
) -> BuildResult:
    """Tokenize the sources of a recipe's phase(s) into the shard store `out`.

    `stage`: a stage number, a phase name or "all". Sources already in the store with the same
    key are reused; the phase manifests are (re)written for the selected phases. `rebuild`
    tokenizes the selected phases' sources afresh and swaps each new folder in for the old.
    """
    if executor not in EXECUTORS:
        raise MixcError(f"unknown executor '{executor}' (choose from {', '.join(EXECUTORS)})")
    stream = stream or sys.stderr

    def notice(text: str) -> None:
        print(text, file=stream, flush=True)

    started = time.monotonic()
    recipe_path = Path(recipe) if recipe else default_recipe()
    plan = load_plan([str(recipe_path)])
    if plan.recipe is None:
        raise MixcError(f"{recipe_path}: mixc build takes a recipe (it names the tokenizer and the phases)")
    phases = _select_phases(plan, stage)
    out = Path(out)
    workers = max(1, workers or os.cpu_count() or 1)
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise MixcError("--executor slurm: sbatch was not found on PATH; build on a slurm login node, or use --executor local")
    options = _options(plan.recipe.seed, executor, workers, shard_tokens=shard_tokens, seed=seed, shuffle=shuffle,
                       sample=sample, sample_documents=sample_documents, tasks=tasks, batch_documents=batch_documents,
                       fast_encoder=fast_encoder, heldout=plan.recipe.heldout)
    base_dir = None if tokenizer else recipe_path.parent
    # Only the recipe's own tokenizer falls back to the demo one under --sample: a tokenizer the
    # user names on the command line is what they asked for, or an error.
    spec = _resolve_tokenizer(tokenizer or plan.recipe.tokenizer, base_dir, sample and not tokenizer, notice)
    token_size = token_size_for(spec.vocab_size)

    with StoreLock(out):
        _clear_leftovers(out)
        tok_info, ref = _store_tokenizer(out, spec, token_size)
        sources = lower(phases, ref, out, options, rebuild)
        pending_sources = [sb for sb in sources if _prepare(out, sb)]
        run_dir = out / ".build" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        context = BuildContext(
            store=str(out), recipe=plan.recipe.name, tokenizer=tok_info, token_size=token_size, sources=sources,
            phases=[PhaseEntry(p.name, p.stage, p.sequence_length, p.tokens, p.shares()) for p in phases],
            options=options, run_dir=str(run_dir), started_at=time.time(),
        )
        table = _pending_tasks(out, pending_sources)
        if table:
            jobs = [(sb.name, sb.tasks, sb.pipeline, str(sb.work(out).resolve())) for sb in pending_sources]
            pipeline = [BuildTasks(jobs, table, owner=os.getpid() if executor == "local" else None)]
            if executor == "slurm":
                return _submit_slurm(pipeline, len(table), workers, context, slurm or SlurmOptions(), pending_sources,
                                     time.monotonic() - started)
            _run_tasks(executor, pipeline, len(table), workers, run_dir, options, out, pending_sources, progress, stream)
        ran = {pending_sources[job].name for job, _ in table}
        run_tokens = sum(_marker_tokens(pending_sources[job].work(out), rank) for job, rank in table)
        results, manifests = finish(context, ran)
        _remove_run_folders(out, run_dir, sources if rebuild else [])
    return BuildResult(out, plan.recipe.name, results, manifests, time.monotonic() - started, spec.name, executor,
                       run_tokens=run_tokens)


def _options(recipe_seed: int, executor: str, workers: int, *, shard_tokens: int | None, seed: int | None, shuffle: bool,
             sample: bool, sample_documents: int | None, tasks: int | None, batch_documents: int | None,
             fast_encoder: bool, heldout=None) -> BuildOptions:
    """The build's options, defaults filled in."""
    if shard_tokens is not None and shard_tokens < 1:
        raise MixcError(f"--shard-tokens {shard_tokens}: a shard holds at least 1 token")
    return BuildOptions(
        shard_tokens=DEFAULT_SHARD_TOKENS if shard_tokens is None else shard_tokens,
        shuffle_seed=(seed if seed is not None else recipe_seed) if shuffle else None,
        sample=sample,
        sample_documents=sample_documents or DEFAULT_SAMPLE_DOCUMENTS,
        seed=seed if seed is not None else recipe_seed,
        tasks=max(1, tasks or workers),
        batch_documents=batch_documents or 1000,
        threads=1 if workers > 1 or executor != "local" else None,
        fast_encoder=fast_encoder,
        heldout=heldout,
    )


def _store_tokenizer(out: Path, spec, token_size: int) -> tuple[dict, TokenizerRef]:
    """Save the tokenizer's definition in the store: what the manifests record of it, and the tasks' reference."""
    rel = tokenizer_file(out, spec.name, spec.fingerprint, spec.definition)
    info = {"name": spec.name, "fingerprint": spec.fingerprint, "vocab_size": spec.vocab_size,
            "eos_token": spec.eos_token, "eos_id": spec.eos_id, "file": rel}
    ref = TokenizerRef(spec.name, str((out / rel).resolve()), spec.fingerprint, spec.vocab_size, spec.eos_id, token_size,
                       spec.eos_token)
    return info, ref


def _remove_run_folders(out: Path, run_dir: Path, rebuilt: list[SourceBuild]) -> None:
    """After a finished build: its run folder, and the emptied staging folders of a rebuild."""
    shutil.rmtree(run_dir, ignore_errors=True)
    with contextlib.suppress(OSError):
        (out / ".build").rmdir()
    for sb in rebuilt:
        with contextlib.suppress(OSError):
            sb.build_path(out).parent.rmdir()
            sb.build_path(out).parent.parent.rmdir()


def _marker_tokens(work: Path, rank: int) -> int:
    try:
        return int(json.loads(task_marker(work, rank).read_text())["tokens"])
    except (OSError, ValueError, KeyError):
        return 0


def _clear_leftovers(store: Path) -> None:
    """What killed builds leave behind, removed under the lock (no other build is running).

    Half-written temporary files of atomic writes, and the run folders (task logs) of local
    builds. A slurm build's run folder stays: its jobs may still be writing their logs there."""
    for pattern in (".*.tmp", "tokenizers/.*.tmp", "phases/*/.*.tmp", "sources/*/*/.*.tmp", "sources/*/*/.work/*/.*.tmp",
                    ".rebuild/*/*/.*.tmp"):
        for path in store.glob(pattern):
            path.unlink(missing_ok=True)
    runs = store / ".build"
    if runs.is_dir():
        for run in runs.iterdir():
            if run.is_dir() and not (run / "finish-logs").exists():
                shutil.rmtree(run, ignore_errors=True)


def _run_tasks(executor: str, pipeline, n_tasks: int, workers: int, run_dir: Path, options: BuildOptions, store: Path,
               sources: list[SourceBuild], progress: bool, stream) -> None:
    watched = [SourceProgress(sb.name, sb.work(store), sb.tasks) for sb in sources]
    failure: BaseException | None = None
    deaths = None
    if executor == "local" and min(workers, n_tasks) > 1:
        deaths = WorkerDeaths([(f"{sources[job].name}[{rank}]", sources[job].work(store), rank)
                                for job, rank in pipeline[0].table])
    threads = str(options.threads) if options.threads else None
    try:
        with scoped_env("RAYON_NUM_THREADS", threads), datatrove_log(run_dir), workers_stderr(run_dir, stream) as stream, \
                ProgressDisplay(watched, stream, enabled=progress):
            if deaths is not None:
                deaths.start()
            tasks = (ray_executor(pipeline, n_tasks, workers, run_dir, options.threads) if executor == "ray"
                     else local_executor(pipeline, n_tasks, workers, run_dir))
            # datatrove's task logger copies each task's log (and any traceback) to sys.stderr; mixc
            # keeps them in the task log files under the run folder and reports failures itself, in
            # one line. Tasks in worker processes write to fd 2, which workers_stderr redirected.
            with contextlib.redirect_stderr(Discard()):
                tasks.run()
    except KeyboardInterrupt:
        if deaths is not None:
            deaths.stop.set()  # no second interrupt from the watcher while the pool shuts down
        if deaths is not None and deaths.died is not None:
            label, pid = deaths.died
            raise MixcError(f"build task {label}: its worker process (pid {pid}) died without an error, killed by the "
                            f"system (out of memory?) or a native crash; try fewer --workers (logs in {run_dir})") from None
        raise
    except Exception as exc:  # the tasks' own error files say more; _check_tasks reports them
        failure = exc
    finally:
        if deaths is not None:
            deaths.stop.set()
    _check_tasks(store, sources, str(run_dir), failure)
