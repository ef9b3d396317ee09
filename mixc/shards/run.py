"""The run pass: execute the lowered pipelines and turn their output into a finished store.

A build is one datatrove job whatever the executor: its tasks are the (source, rank) pairs
still to tokenize, in source order, and a small dispatching step runs the right source's
pipeline for each. So two workers keep two cores busy across many small sources, and a
cluster gets one job array for a whole phase.

Crash safety. Each source is tokenized into `sources/<name>/<key>/.work/`:
  - `job.json`         the task count of this attempt (a rerun with another count starts over)
  - `shards/`          `{rank:05d}_{k:05d}.ds` (+ .index, .metadata) written by the tasks
  - `tasks/{rank}.json` written by a task after its last shard is closed: its completion marker
  - `running/{rank}`   the pid of the local worker process running the task (see _WorkerDeaths)
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
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from datatrove.pipeline.base import PipelineStep

from .. import __version__
from ..errors import MixcError
from ..report.text import human_tokens
from . import heldout
from .lower import WORK, BuildOptions, SourceBuild, lower
from .progress import ProgressDisplay, SourceProgress
from .store import (
    MANIFEST,
    StoreLock,
    finalize_source,
    os_error,
    read_manifest,
    replace_folder,
    tokenizer_file,
    write_phase_manifest,
)
from .tokenize import TokenizerRef, task_error, task_marker

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
        lines.append(
            f"{counts}; {work}; "
            f"shards in {self.store}/sources, phase manifests: "
            + (", ".join(str(p) for p in self.phase_manifests) or "none")
        )
        return "\n".join(lines)


# --------------------------------------------------------------------------- the dispatching step


class BuildTasks(PipelineStep):
    """Task `rank` of the build = rank `local` of one source's own pipeline."""

    name = "mixc build"
    type = "🔢 - TOKENIZER"

    def __init__(self, jobs: list[tuple[str, int, list, str]], table: list[tuple[int, int]], owner: int | None = None):
        super().__init__()
        self.jobs = jobs  # (source, tasks, pipeline, work folder)
        self.table = table  # global rank -> (job, local rank)
        self.owner = owner  # pid of the local `mixc build` whose worker processes run these tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        if self.owner is not None and self.owner != os.getpid():
            _die_with_build(self.owner)
        job, local = self.table[rank]
        _, tasks, pipeline, work = self.jobs[job]
        if task_marker(work, local).exists():
            return
        if self.owner is not None and self.owner != os.getpid():  # for _WorkerDeaths in the build
            running = _running_file(work, local)
            running.parent.mkdir(parents=True, exist_ok=True)
            running.write_text(str(os.getpid()))  # read as an int: a torn write is just not seen yet
        # The tokenizer step records the documents its reader dropped (null or empty text).
        pipeline[-1].counters = [step for step in pipeline[:-1] if hasattr(step, "dropped_documents")]
        stream = None
        for step in pipeline:
            stream = step(stream, local, tasks)
        for _ in stream or ():
            pass
        return
        yield


_WATCHED: set[int] = set()


def _die_with_build(owner: int) -> None:
    """In a local worker process: exit when the building process dies, even by SIGKILL.

    datatrove's pool workers are children of a forkserver, not of the build, so the kernel's
    parent-death signal cannot reach them; a worker that outlived a killed build would keep
    writing shards into a store that the next build has already locked and cleared."""
    import select
    import signal
    import threading

    if owner in _WATCHED:
        return
    _WATCHED.add(owner)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the build's to handle; it stops the workers
    try:
        fd = os.pidfd_open(owner)
    except ProcessLookupError:
        os._exit(1)
    except (OSError, AttributeError):  # no pidfd (old kernel, not Linux): the rerun's lock check is all there is
        return

    def watch() -> None:
        select.select([fd], [], [])
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="mixc-watch-build", daemon=True).start()


def _running_file(work: str | Path, rank: int) -> Path:
    return Path(work) / "running" / f"{rank:05d}"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


class _WorkerDeaths(threading.Thread):
    """A pool worker that vanishes (the kernel's OOM killer, a native abort) leaves datatrove's
    multiprocessing pool waiting forever for its task. Each local worker writes its pid next to
    its task; a worker found dead, twice in a row, with its task neither finished nor failed
    while other workers live on (a pool shutting down ends them all at once) interrupts the build."""

    def __init__(self, tasks: list[tuple[str, Path, int]]):
        super().__init__(name="mixc-worker-deaths", daemon=True)
        self.tasks = tasks  # (label, work folder, rank)
        self.stop = threading.Event()
        self.died: tuple[str, int] | None = None
        for _, work, rank in tasks:
            _running_file(work, rank).unlink(missing_ok=True)

    def run(self) -> None:
        suspect = None
        while not self.stop.wait(0.5):
            found = self._dead_task()
            if found is not None and found == suspect and not self.stop.is_set():
                self.died = found
                signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
                return
            suspect = found

    def _dead_task(self) -> tuple[str, int] | None:
        living, dead = set(), None
        for label, work, rank in self.tasks:
            if task_error(work, rank).exists():
                return None  # a task failed: the build is already stopping
            try:
                pid = int(_running_file(work, rank).read_text())
            except (OSError, ValueError):
                continue
            if _alive(pid):
                living.add(pid)
            elif dead is None and not task_marker(work, rank).exists():
                dead = (label, pid)
        return dead if dead is not None and living else None


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


class _Discard:
    def write(self, text) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _QuietTasks:
    """datatrove prints each task's log (and any traceback) on stderr; mixc keeps them in the
    task log files under the run folder and reports failures itself, in one line."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        with contextlib.redirect_stderr(_Discard()):
            return super()._run_for_rank(rank, local_rank, node_rank)


def _local_executor(pipeline, tasks: int, workers: int, run_dir: Path):
    from datatrove.executor import LocalPipelineExecutor

    class QuietLocal(_QuietTasks, LocalPipelineExecutor):
        pass

    return QuietLocal(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(run_dir / "logs"),
                      skip_completed=False)


def _ray_executor(pipeline, tasks: int, workers: int, run_dir: Path, threads: int | None):
    import ray
    from datatrove.executor import RayPipelineExecutor

    class QuietRay(_QuietTasks, RayPipelineExecutor):
        pass

    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, include_dashboard=False)
    env = {"RAYON_NUM_THREADS": str(threads)} if threads else {}
    with contextlib.redirect_stderr(_Discard()):  # the "shared filesystem" warning for a local logging dir
        return QuietRay(pipeline, tasks=tasks, workers=workers, logging_dir=str(run_dir / "logs"), skip_completed=False,
                        cpus_per_task=1, mem_per_cpu_gb=2, ray_remote_kwargs={"runtime_env": {"env_vars": env}} if env else None)


@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    time: str = "24:00:00"
    cpus_per_task: int = 1
    mem_per_cpu_gb: int = 2
    env_command: str | None = None  # how a job activates mixc's environment; default: this venv
    qos: str | None = None


def _slurm_executors(pipeline, tasks: int, workers: int, run_dir: Path, context: BuildContext, slurm: SlurmOptions, job_name: str):
    from datatrove.executor import SlurmPipelineExecutor

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
                                        dropped=int(manifest.get("dropped_documents", 0)))
    paths = []
    for phase in context.phases:
        paths.append(write_phase_manifest(store, context.recipe, phase.name, {
            "stage": phase.stage, "tokenizer": context.tokenizer, "token_size": context.token_size,
            "sequence_length": phase.sequence_length, "budget_tokens": phase.budget_tokens,
            "sources": [{"name": name, "weight": share, "folder": results[name].folder,
                         "tokens": results[name].tokens, "documents": results[name].documents}
                        for name, share in phase.shares.items()],
        }))
    return [results[sb.name] for sb in context.sources], paths


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
        manifest["heldout"] = heldout.finalize(sb.build_path(store), summaries, sb.options["heldout"], sb.category)
    return finalize_source(sb.build_path(store), summaries, manifest)


# --------------------------------------------------------------------------- the entry point


def _select_phases(plan, stage: str | int | None):
    if stage is None or str(stage).strip().lower() == "all":
        return list(plan.phases)
    try:
        return [plan.phase(stage)]
    except KeyError as exc:
        raise MixcError(f"--stage {stage}: {exc.args[0]}") from None


def _resolve_tokenizer(name: str, base_dir: Path | None, sample: bool, out: Path, notice):
    from .tokenizer import resolve_tokenizer

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
    from ..project import default_recipe, load_plan
    from ..sample import DEFAULT_SAMPLE_DOCUMENTS
    from .writer import DEFAULT_SHARD_TOKENS, token_size_for

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
    if shard_tokens is not None and shard_tokens < 1:
        raise MixcError(f"--shard-tokens {shard_tokens}: a shard holds at least 1 token")
    if executor == "slurm" and shutil.which("sbatch") is None:
        raise MixcError("--executor slurm: sbatch was not found on PATH; build on a slurm login node, or use --executor local")
    options = BuildOptions(
        shard_tokens=DEFAULT_SHARD_TOKENS if shard_tokens is None else shard_tokens,
        shuffle_seed=(seed if seed is not None else plan.recipe.seed) if shuffle else None,
        sample=sample,
        sample_documents=sample_documents or DEFAULT_SAMPLE_DOCUMENTS,
        seed=seed if seed is not None else plan.recipe.seed,
        tasks=max(1, tasks or workers),
        batch_documents=batch_documents or 1000,
        threads=1 if workers > 1 or executor != "local" else None,
        fast_encoder=fast_encoder,
        heldout=plan.recipe.heldout,
    )
    base_dir = None if tokenizer else recipe_path.parent
    # Only the recipe's own tokenizer falls back to the demo one under --sample: a tokenizer the
    # user names on the command line is what they asked for, or an error.
    spec = _resolve_tokenizer(tokenizer or plan.recipe.tokenizer, base_dir, sample and not tokenizer, out, notice)
    token_size = token_size_for(spec.vocab_size)

    with StoreLock(out):
        _clear_leftovers(out)
        rel = tokenizer_file(out, spec.name, spec.fingerprint, spec.definition)
        tok_info = {"name": spec.name, "fingerprint": spec.fingerprint, "vocab_size": spec.vocab_size,
                    "eos_token": spec.eos_token, "eos_id": spec.eos_id, "file": rel}
        ref = TokenizerRef(spec.name, str((out / rel).resolve()), spec.fingerprint, spec.vocab_size, spec.eos_id, token_size,
                           spec.eos_token)
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
                job_name = f"mixc-{plan.recipe.name}"
                tokenize_job, finisher = _slurm_executors(pipeline, len(table), workers, run_dir, context,
                                                          slurm or SlurmOptions(), job_name)
                with _datatrove_log(run_dir):
                    finisher.run()
                pending = {sb.name for sb in pending_sources}
                return BuildResult(out, plan.recipe.name, [SourceResult(sb.name, sb.folder, 0, 0, sb.name not in pending)
                                                           for sb in sources], [], time.monotonic() - started, spec.name,
                                   executor, submitted=[str(tokenize_job.job_id), str(finisher.job_id)])
            _run_tasks(executor, pipeline, len(table), workers, run_dir, options, out, pending_sources, progress, stream)
        ran = {pending_sources[job].name for job, _ in table}
        run_tokens = sum(_marker_tokens(pending_sources[job].work(out), rank) for job, rank in table)
        results, manifests = finish(context, ran)
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            (out / ".build").rmdir()
        for sb in sources if rebuild else ():  # the emptied staging folders
            with contextlib.suppress(OSError):
                sb.build_path(out).parent.rmdir()
                sb.build_path(out).parent.parent.rmdir()
    return BuildResult(out, plan.recipe.name, results, manifests, time.monotonic() - started, spec.name, executor,
                       run_tokens=run_tokens)


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


@contextlib.contextmanager
def _datatrove_log(run_dir: Path):
    """Send datatrove's own log lines to a file in the run folder instead of the terminal."""
    from datatrove.utils.logging import logger, setup_default_logger

    run_dir.mkdir(parents=True, exist_ok=True)
    logger.remove()
    logger.add(run_dir / "build.log", level="DEBUG")
    try:
        yield
    finally:
        logger.remove()
        setup_default_logger()


@contextlib.contextmanager
def _workers_stderr(run_dir: Path, stream):
    """Send what worker processes print on stderr (a traceback when Ctrl-C reaches them, a
    native library's abort message) to run_dir/workers.log: the build reports failures itself,
    in one line. Yields the stream the progress display should use (the real terminal)."""
    try:
        to_terminal = stream is sys.__stderr__ or stream.fileno() == 2
    except (AttributeError, OSError, ValueError):
        to_terminal = False
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.__stderr__.flush()
    saved = os.dup(2)
    log = os.open(run_dir / "workers.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    os.dup2(log, 2)
    os.close(log)
    terminal = os.fdopen(os.dup(saved), "w", buffering=1, closefd=True) if to_terminal else None
    try:
        yield terminal or stream
    finally:
        if terminal is not None:
            terminal.close()
        os.dup2(saved, 2)
        os.close(saved)


def _run_tasks(executor: str, pipeline, n_tasks: int, workers: int, run_dir: Path, options: BuildOptions, store: Path,
               sources: list[SourceBuild], progress: bool, stream) -> None:
    watched = [SourceProgress(sb.name, sb.work(store), sb.tasks) for sb in sources]
    failure: BaseException | None = None
    deaths = None
    if executor == "local" and min(workers, n_tasks) > 1:
        deaths = _WorkerDeaths([(f"{sources[job].name}[{rank}]", sources[job].work(store), rank)
                                for job, rank in pipeline[0].table])
    saved_threads = os.environ.get("RAYON_NUM_THREADS")
    if options.threads:
        os.environ["RAYON_NUM_THREADS"] = str(options.threads)  # inherited by the worker processes
    try:
        with _datatrove_log(run_dir), _workers_stderr(run_dir, stream) as stream, \
                ProgressDisplay(watched, stream, enabled=progress):
            if deaths is not None:
                deaths.start()
            if executor == "ray":
                _ray_executor(pipeline, n_tasks, workers, run_dir, options.threads).run()
            else:
                _local_executor(pipeline, n_tasks, workers, run_dir).run()
    except KeyboardInterrupt:
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
        if options.threads:
            if saved_threads is None:
                os.environ.pop("RAYON_NUM_THREADS", None)
            else:
                os.environ["RAYON_NUM_THREADS"] = saved_threads
    _check_tasks(store, sources, str(run_dir), failure)
