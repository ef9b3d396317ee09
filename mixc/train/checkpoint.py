"""Checkpoints: atomic (write a temporary folder, then rename), keep the last K, find the latest.

A checkpoint folder `step-000123/` holds `state.pt` (model, optimizer, RNG states, loader
state, step) and `meta.json` (what a person or `mixc export` needs without torch.load of the
whole state). A folder without `meta.json` was never finished and is ignored.

A finished checkpoint can still be damaged later (a full disk, a copy cut short, a hand edit):
`load` turns every such case into a MixcError naming the file, and `load_newest` falls back
over damaged checkpoints to the newest one that loads, with a warning naming each one passed.
Pruning (`keep`) never deletes the checkpoint just written, so a damaged newer folder can
never make it drop the last good one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import MixcError

PREFIX = "step-"


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX):].isdigit()
             and (p / "meta.json").is_file()]
    return sorted(found, key=step_of)


def step_of(path: Path) -> int:
    return int(path.name[len(PREFIX):])


def latest(root: str | Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None


def save(root: str | Path, step: int, state: dict[str, Any], meta: dict[str, Any], keep: int = 3) -> Path:
    """Write checkpoint `step` atomically, then drop all but the newest `keep`."""
    import torch

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:09d}"
    tmp = root / f".tmp-{PREFIX}{step:09d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save(state, tmp / "state.pt")
    # meta.json last: its presence marks the checkpoint complete.
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep > 0:
        # The one just written is known good; the others are counted by step, so a damaged or
        # discarded folder with a higher step can never push it out.
        others = [d for d in checkpoint_dirs(root) if d != final]
        for old in others[:max(0, len(others) - (keep - 1))]:
            shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, meta) of one checkpoint folder; a MixcError naming the file when it is damaged."""
    import torch

    path = Path(path)
    if not (path / "meta.json").is_file() or not (path / "state.pt").is_file():
        raise MixcError(f"{path} is not a complete mixc checkpoint (expected state.pt and meta.json)")
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise MixcError(f"{path / 'meta.json'} is unreadable ({_reason(exc)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("step"), int):
        raise MixcError(f"{path / 'meta.json'} is not a checkpoint's metadata (no integer 'step')")
    if (path / "state.pt").stat().st_size == 0:
        raise MixcError(f"{path / 'state.pt'} is empty")
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except Exception as exc:  # a cut-short zip or pickle fails in many ways, all meaning "damaged"
        raise MixcError(f"{path / 'state.pt'} is unreadable ({_reason(exc)})") from None
    if not isinstance(state, dict):
        raise MixcError(f"{path / 'state.pt'} does not hold a checkpoint's state")
    return state, meta


def nonfinite_tensors(tree: Any, prefix: str = "") -> Iterator[str]:
    """Names of the tensors holding a NaN or an infinity anywhere in a (nested) state."""
    import torch

    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point() or tree.is_complex():
            local = tree.to_local() if hasattr(tree, "to_local") else tree
            if not bool(torch.isfinite(local).all()):
                yield prefix or "<tensor>"
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from nonfinite_tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from nonfinite_tensors(value, f"{prefix}.{i}" if prefix else str(i))


def check_finite(path: Path, state: dict[str, Any]) -> None:
    """A MixcError when the model or optimizer state of a loaded checkpoint is not finite."""
    bad = list(nonfinite_tensors({"model": state.get("model"), "optimizer": state.get("optimizer")}))
    if bad:
        raise MixcError(f"{path / 'state.pt'} holds NaN or infinite values in {len(bad)} tensor(s), e.g. {bad[0]}")


def load_newest(root: str | Path, *, warn: Callable[[str], Any], finite: bool = False,
                set_aside: bool = False) -> tuple[Path, dict[str, Any], dict[str, Any]] | None:
    """(path, state, meta) of the newest checkpoint under `root` that loads (and, with `finite`,
    holds only finite numbers), or None when there is none at all. Every newer checkpoint passed
    over is named in a warning with the one used instead; with `set_aside` it is also renamed `bad-step-...`, so that it is
    neither resumed from nor counted by `keep` again. A MixcError when none loads."""
    dirs = checkpoint_dirs(root)
    if not dirs:
        return None
    passed: list[tuple[str, Path]] = []
    for path in reversed(dirs):
        try:
            state, meta = load(path)
            if finite:
                check_finite(path, state)
        except MixcError as exc:
            passed.append((str(exc), path))
            continue
        for problem, bad in passed:
            # Set aside only once a usable one is found: a run with none must keep failing,
            # never look empty and start over.
            moved = _set_aside(bad) if set_aside else None
            warn(f"warning: {problem}; " + (f"moved it to {moved.name}; " if moved else "") + f"using {path.name} instead")
        return path, state, meta
    raise MixcError(f"no usable checkpoint in {root}: {'; '.join(problem for problem, _ in passed)}")


def load_given(path: str | Path, *, warn: Callable[[str], Any]) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """A checkpoint folder as given, or a run folder's newest checkpoint that loads."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return (path, *load(path))  # the user named this one: no silent substitute
    for candidate in (path, path / "checkpoints"):
        found = load_newest(candidate, warn=warn)
        if found:
            return found
    raise MixcError(f"no complete checkpoint found at {path}")


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder whose latest checkpoint is meant."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    for candidate in (path, path / "checkpoints"):
        found = latest(candidate)
        if found:
            return found
    raise MixcError(f"no complete checkpoint found at {path}")


class TokenizerMissing(MixcError):
    """The checkpoint names no tokenizer file, or the store no longer holds it."""


def tokenizer_file(meta: dict[str, Any], where: str | Path) -> Path:
    """The tokenizer.json a checkpoint's run was trained with: its meta names the shard store
    and the tokenizer's file inside it. `where` names the checkpoint in errors. A file that no
    longer gives the fingerprint the run was trained with is refused (MixcError), never used."""
    info = meta.get("tokenizer") or {}
    if not info.get("file") or not meta.get("shards"):
        raise TokenizerMissing(f"{where}: the checkpoint does not name its tokenizer file; pass --tokenizer FILE")
    found = Path(meta["shards"]) / info["file"]
    if not found.is_file():
        raise TokenizerMissing(f"{found}: the run's tokenizer is missing (was the shard store moved?)")
    from ..shards.verify import tokenizer_file_problem

    if (problem := tokenizer_file_problem(Path(meta["shards"]), info)) is not None:
        raise MixcError(f"{found}: {problem}; refusing to use it for the checkpoint {where}")
    return found


def _reason(exc: BaseException) -> str:
    """The gist of a loader's error: its type and first sentence (torch adds a paragraph)."""
    text = str(exc).strip().splitlines()
    if not text:
        return type(exc).__name__
    first = text[0].split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {first[:160]}"


def _set_aside(path: Path) -> Path | None:
    target = path.with_name(f"bad-{path.name}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"bad{n}-{path.name}")
    try:
        os.replace(path, target)
    except OSError:
        return None  # another rank moved it first, or a read-only run folder: the warning still names it
    return target


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
