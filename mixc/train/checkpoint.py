"""Checkpoints: atomic (write a temporary folder, then rename), keep the last K, find the latest.

A checkpoint folder `step-000123/` holds `state.pt` (model, optimizer, RNG states, loader
state, step) and `meta.json` (what a person or `mixc export` needs without torch.load of the
whole state, written last through `write_atomic`). A folder without `meta.json` was never
finished and is ignored.

What a run saves is gathered by `TrainState` behind `state_dict()`/`load_state_dict()`: the
model, the optimizer, every rank's loader position, the RNG states, the non-finite guard and
the step. A sharded run (`--fsdp`) writes its model and optimizer with
torch.distributed.checkpoint instead: every rank writes its own shards into `sharded/` (no
rank ever holds the full state; a 3B model's optimizer state alone is ~37 GB), and `state.pt`
keeps the rest; meta.json says so (`"state_format": "dcp"`). Such a checkpoint loads into any
layout (DCP reshards), and `load_model_weights` reads its weights on a single process (export).

A finished checkpoint can still be damaged later (a full disk, a copy cut short, a hand edit):
`load` turns every such case into a MixcError naming the file, and `load_newest` falls back
over damaged checkpoints to the newest one that loads, with a warning naming each one passed.
Pruning (`keep`) never deletes the checkpoint just written, so a damaged newer folder can
never make it drop the last good one.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MixcError
from ..shards.verify import tokenizer_file_problem
from ..store import write_atomic

# TORCH: torch is imported inside the functions that save, load or seed, so that finding a run's
# checkpoints (the experiments' --from RUN@STEP, `mixc generate`'s tokenizer lookup) never pays for it.

PREFIX = "step-"
STATE_FILE = "state.pt"
SHARDED_DIR = "sharded"  # torch.distributed.checkpoint folder of a sharded run's model and optimizer
DCP_FORMAT = "dcp"


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
    """Write checkpoint `step` atomically, then drop all but the newest `keep` (one process)."""
    import torch  # heavy (see TORCH)

    final, tmp = _begin(root, step, f"{os.getpid()}")
    torch.save(state, tmp / STATE_FILE)
    return _commit(tmp, final, meta, keep)


def save_train_state(root: str | Path, step: int, train: TrainState, meta: dict[str, Any], keep: int = 3) -> Path | None:
    """Every rank calls this. A full state is gathered on rank 0, which writes it; a sharded
    state is written by every rank into one shared folder (torch.distributed.checkpoint).
    Returns the checkpoint folder on rank 0, None elsewhere."""
    import torch  # heavy (see TORCH)

    world = train.world
    state = train.state_dict()  # collective: every rank's loader position
    if not train.sharded:
        return save(root, step, state, meta, keep=keep) if world.main else None
    import torch.distributed.checkpoint as dcp  # heavy (see TORCH)

    final, tmp = _begin(root, step, "sharded") if world.main else (None, _tmp_name(root, step, "sharded"))
    if world.distributed:
        torch.distributed.barrier()  # the folder exists before anyone writes into it
    with _one_process_is_meant():
        dcp.save({"model": state.pop("model"), "optimizer": state.pop("optimizer")}, checkpoint_id=tmp / SHARDED_DIR,
                 no_dist=not world.distributed)
    if not world.main:
        return None
    torch.save(state, tmp / STATE_FILE)
    return _commit(tmp, final, {**meta, "state_format": DCP_FORMAT}, keep)


def _tmp_name(root: str | Path, step: int, tag: str) -> Path:
    return Path(root) / f".tmp-{PREFIX}{step:09d}-{tag}"


def _begin(root: str | Path, step: int, tag: str) -> tuple[Path, Path]:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(root, step, tag)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return root / f"{PREFIX}{step:09d}", tmp


def _commit(tmp: Path, final: Path, meta: dict[str, Any], keep: int) -> Path:
    root = final.parent
    # meta.json last: its presence marks the checkpoint complete.
    write_atomic(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True))
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
    import torch  # heavy (see TORCH)

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
    if meta.get("state_format") == DCP_FORMAT:
        if not (path / SHARDED_DIR / ".metadata").is_file():
            raise MixcError(f"{path / SHARDED_DIR} is incomplete (no .metadata): the sharded model and optimizer are missing")
        state["sharded"] = path / SHARDED_DIR  # read by TrainState.load_state_dict or load_model_weights
    return state, meta


def nonfinite_tensors(tree: Any, prefix: str = "") -> Iterator[str]:
    """Names of the tensors holding a NaN or an infinity anywhere in a (nested) state."""
    import torch  # heavy (see TORCH)

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


class TrainState:
    """Everything a run resumes from, behind `state_dict()`/`load_state_dict()`: the model, the
    optimizer, every rank's loader position, the RNG states (rank 0's, restored on every rank,
    as each rank starts from the same seed), the non-finite guard's history and the step.

    `sharded` (an FSDP2 run): the model and optimizer state are this rank's DTensor shards, saved
    and loaded with torch.distributed.checkpoint; otherwise full state dicts (rank 0's are saved).
    `state_dict()` is collective (the loader positions are gathered): every rank calls it."""

    def __init__(self, model, optimizer, loader, guard, world, *, sharded: bool, micro_batch_size: int, step: int = 0):
        self.model, self.optimizer, self.loader, self.guard, self.world = model, optimizer, loader, guard, world
        self.sharded, self.micro_batch_size, self.step = sharded, micro_batch_size, step

    def state_dict(self) -> dict[str, Any]:
        from . import dist as distributed  # imports torch (see TORCH)

        loader = distributed.gather_objects(self.loader.state_dict(), self.world)
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import get_state_dict  # heavy (see TORCH)

            model, optimizer = get_state_dict(self.model, self.optimizer)
        else:
            model, optimizer = self.model.state_dict(), self.optimizer.state_dict()
        return {"model": model, "optimizer": optimizer, "step": self.step, "rng": rng_state(), "loader": loader,
                "micro_batch_size": self.micro_batch_size, "guard": self.guard.meta()}

    def load_state_dict(self, state: dict[str, Any], *, parts: tuple[str, ...] = ("model", "optimizer", "rng", "loader", "guard", "step")
                        ) -> None:
        """Restore `parts` of a checkpoint's state (as `load` returns it; a rollback restores only
        the model, optimizer and RNG). A sharded checkpoint loads into any layout, a full one too."""
        if "sharded" in state:
            self._load_sharded(state["sharded"], optimizer="optimizer" in parts)
        else:
            if "model" in parts:
                _load_full_model(self.model, state["model"], self.sharded)
            if "optimizer" in parts:
                _load_full_optimizer(self.optimizer, self.model, state["optimizer"], self.sharded)
        if "rng" in parts:
            restore_rng(state["rng"])
        if "step" in parts:
            self.step = int(state["step"])
        if "guard" in parts and "guard" in state:
            self.guard.load_state_dict(state["guard"])
        if "loader" in parts:
            saved = state["loader"]
            if len(saved) == self.world.world_size and state.get("micro_batch_size") == self.micro_batch_size:
                self.loader.load_state_dict(saved[self.world.rank])
            else:
                # Another layout sees the same global batches; only the micro-batch split differs.
                self.loader.seek_step(int(state["step"]))

    def _load_sharded(self, folder: Path, *, optimizer: bool) -> None:
        import torch.distributed.checkpoint as dcp  # heavy (see TORCH)
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict  # heavy (see TORCH)

        # The templates say which tensors (and which of their shards) this rank reads.
        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        wanted = {"model": model_state, "optimizer": optimizer_state} if optimizer else {"model": model_state}
        try:
            with _one_process_is_meant():
                dcp.load(wanted, checkpoint_id=folder, no_dist=not self.world.distributed)
        except Exception as exc:  # a missing or cut-short shard file fails in many ways
            raise MixcError(f"{folder} is unreadable ({_reason(exc)})") from None
        set_state_dict(self.model, self.optimizer, model_state_dict=wanted["model"],
                       optim_state_dict=wanted.get("optimizer", {}))


def load_model_weights(state: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """The model weights of a loaded checkpoint on one process: a full state's own, or a sharded
    one's read into `template` (a plain model's state_dict, filled in place)."""
    if "sharded" not in state:
        return state["model"]
    import torch.distributed.checkpoint as dcp  # heavy (see TORCH)

    wanted = {"model": template}
    try:
        with _one_process_is_meant():
            dcp.load(wanted, checkpoint_id=state["sharded"], no_dist=True)
    except Exception as exc:
        raise MixcError(f"{state['sharded']} is unreadable ({_reason(exc)})") from None
    return wanted["model"]


@contextlib.contextmanager
def _one_process_is_meant() -> Iterator[None]:
    """DCP warns whenever it runs without a process group; alone (one GPU, an export) is meant."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _load_full_model(model, weights: dict, sharded: bool) -> None:
    if not sharded:
        model.load_state_dict(weights)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict  # heavy (see TORCH)

    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def _load_full_optimizer(optimizer, model, state: dict, sharded: bool) -> None:
    if not sharded:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict  # heavy (see TORCH)

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def seed_everything(seed: int) -> None:
    import torch  # heavy (see TORCH)

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    import torch  # heavy (see TORCH)

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import torch  # heavy (see TORCH)

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
