"""Checkpoints: atomic (write a temporary folder, then rename), keep the last K, find the latest.

A checkpoint folder `step-000123/` holds `state.pt` (model, optimizer, RNG states, loader
state, step) and `meta.json` (what a person or `mixc export` needs without torch.load of the
whole state). A folder without `meta.json` was never finished and is ignored.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..errors import MixcError

PREFIX = "step-"


def checkpoint_dirs(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "meta.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


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
    for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(f".tmp-{PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def load(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    path = Path(path)
    if not (path / "meta.json").is_file() or not (path / "state.pt").is_file():
        raise MixcError(f"{path} is not a complete mixc checkpoint (expected state.pt and meta.json)")
    meta = json.loads((path / "meta.json").read_text())
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    return state, meta


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


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
