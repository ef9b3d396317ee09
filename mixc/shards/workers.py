"""Running a build's tasks on this machine (or on Ray): the step that dispatches each task to
its source's pipeline, the local worker processes' supervision (a worker must not outlive the
build, and a worker that dies must not hang it), and where their output goes.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.utils.logging import logger, setup_default_logger

from .tokenize import task_error, task_marker


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
        if self.owner is not None and self.owner != os.getpid():  # for WorkerDeaths in the build
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


class WorkerDeaths(threading.Thread):
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


class Discard:
    def write(self, text) -> int:
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def local_executor(pipeline, tasks: int, workers: int, run_dir: Path):
    return LocalPipelineExecutor(pipeline, tasks=tasks, workers=min(workers, tasks), logging_dir=str(run_dir / "logs"),
                                 skip_completed=False)


def ray_executor(pipeline, tasks: int, workers: int, run_dir: Path, threads: int | None):
    import ray  # optional: only for --executor ray
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False, include_dashboard=False)
    env = {"RAYON_NUM_THREADS": str(threads)} if threads else {}
    with contextlib.redirect_stderr(Discard()):  # the "shared filesystem" warning for a local logging dir
        return RayPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=str(run_dir / "logs"), skip_completed=False,
                                   cpus_per_task=1, mem_per_cpu_gb=2, ray_remote_kwargs={"runtime_env": {"env_vars": env}} if env else None)


@contextlib.contextmanager
def datatrove_log(run_dir: Path):
    """Send datatrove's own log lines to a file in the run folder instead of the terminal."""
    run_dir.mkdir(parents=True, exist_ok=True)
    logger.remove()
    logger.add(run_dir / "build.log", level="DEBUG")
    try:
        yield
    finally:
        logger.remove()
        setup_default_logger()


@contextlib.contextmanager
def workers_stderr(run_dir: Path, stream):
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
