"""Build progress: per source documents, tokens and tokens/s, read from the tasks' progress files.

Tasks may run in other processes or on other machines, so they report through small files in
their work folders (tokenize.py writes them) and a thread in the building process polls them.
On a terminal one status line is redrawn in place; elsewhere (CI, a log file) a plain line is
printed every LOG_EVERY seconds. Either way each finished source gets a permanent line.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..text import human_tokens
from .tokenize import task_marker, task_progress

POLL_SECONDS = 0.5
LOG_EVERY = 10.0


@dataclass
class SourceProgress:
    name: str
    work: Path
    tasks: int
    documents: int = 0
    tokens: int = 0
    seconds: float = 0.0
    done: bool = False

    def poll(self) -> None:
        documents = tokens = 0
        seconds = 0.0
        finished = 0
        for rank in range(self.tasks):
            try:
                p = json.loads(task_progress(self.work, rank).read_text())
            except (OSError, ValueError):
                p = None
            if task_marker(self.work, rank).exists():
                finished += 1
            if p:
                documents += p["documents"]
                tokens += p["tokens"]
                seconds = max(seconds, p["seconds"])
        self.documents, self.tokens, self.seconds = documents, tokens, seconds
        self.done = finished == self.tasks

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return f"{self.name}: {self.documents:,} docs, {human_tokens(self.tokens)} tokens, {human_tokens(self.rate)} tok/s"


class ProgressDisplay:
    """Polls the sources being built until stopped; use as a context manager."""

    def __init__(self, sources: list[SourceProgress], stream=None, enabled: bool = True):
        self.sources = sources
        self.stream = stream or sys.stderr
        self.enabled = enabled and bool(sources)
        self.tty = self.enabled and getattr(self.stream, "isatty", lambda: False)()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported: set[str] = set()
        self._last_log = time.monotonic()
        self._started = time.monotonic()
        self._width = 0

    def __enter__(self) -> ProgressDisplay:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, name="mixc-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread:
            self._stop.set()
            self._thread.join()
            self._tick(final=True)
            self._clear()

    def _loop(self) -> None:
        while not self._stop.wait(POLL_SECONDS):
            self._tick(final=False)

    def _tick(self, final: bool) -> None:
        for s in self.sources:
            if s.name not in self._reported:
                s.poll()
                if s.done:
                    self._reported.add(s.name)
                    self._print(f"  done  {s.line()}")
        if final:
            return
        running = [s for s in self.sources if s.name not in self._reported and s.documents]
        done = len(self._reported)
        status = f"[{done}/{len(self.sources)} sources, {time.monotonic() - self._started:.0f}s] " + \
            "; ".join(s.line() for s in running[:3])
        if self.tty:
            self._status(status)
        elif time.monotonic() - self._last_log >= LOG_EVERY:
            self._last_log = time.monotonic()
            self._print(status)

    def _status(self, text: str) -> None:
        width = 160
        text = text[:width]
        self.stream.write("\r" + text + " " * max(0, self._width - len(text)))
        self.stream.flush()
        self._width = len(text)

    def _clear(self) -> None:
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def _print(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()
