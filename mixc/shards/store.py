"""The shard store: where tokenized sources live, and how later passes find them.

Layout (see docs/store.md):

    STORE/sources/<source>/<key12>/   datatrove shards + manifest.json (written last: presence = complete)
    STORE/phases/<recipe>/<phase>.json  the folders and normalized weights one phase blends
    STORE/tokenizers/                  resolved tokenizer definitions

Everything here only reads. The build pass writes through `write_json_atomic`, so a reader never
sees half a manifest, and a folder without a manifest is never taken as a finished source.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MixcError

if TYPE_CHECKING:
    from ..loader import SourceStream
    from ..plan import Plan

SHARDS_FORMAT = "mixc.shards/1"
PHASE_FORMAT = "mixc.phase/1"
MANIFEST = "manifest.json"


def write_atomic(path: str | Path, data: str | bytes, *, fsync: bool = True) -> None:
    """Write next to the final name, then rename: a reader sees the old file or the whole new one.

    `fsync=False` for files that are only progress hints (a crash may lose them, never tear them)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp creates 0600; a store is shared (a cluster's readers are other users): the
        # permissions an ordinary open() would give, i.e. 0666 less the umask.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it, then put it back
    os.umask(mask)
    return mask


def write_json_atomic(path: str | Path, data: Any) -> None:
    """JSON, all or nothing (see write_atomic)."""
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _read_json(path: Path, what: str, fmt: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MixcError(f"{path}: {what} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MixcError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise MixcError(f"{path}: not a {what} (expected format '{fmt}')")
    return data


def read_manifest(folder: str | Path) -> dict:
    """The manifest of one finished source folder."""
    return _read_json(Path(folder) / MANIFEST, "source manifest", SHARDS_FORMAT)


def path_part(name: str, what: str) -> str:
    """A name used as one path component, checked again here (the spec checks it first), so
    that no caller can make the store write outside itself."""
    from ..spec import check_name

    try:
        return check_name(name)
    except ValueError as exc:
        raise MixcError(f"{what} {exc}") from None


def source_folder(source_name: str, key: str) -> str:
    """sources/<source>/<key>, relative to the store."""
    return f"sources/{path_part(source_name, 'source')}/{path_part(key, 'key')}"


def phase_manifest_path(store: str | Path, recipe_name: str, phase_name: str) -> Path:
    return Path(store) / "phases" / path_part(recipe_name, "recipe") / f"{path_part(phase_name, 'phase')}.json"


def read_phase_manifest(path: str | Path) -> dict:
    return _read_json(Path(path), "phase manifest", PHASE_FORMAT)


def phase_manifest(store: str | Path, recipe_name: str, phase_name: str) -> dict | None:
    path = phase_manifest_path(store, recipe_name, phase_name)
    if not path.exists():
        return None
    return read_phase_manifest(path)


def complete_source_folders(store: str | Path) -> list[Path]:
    """Every finished source folder in the store, oldest manifest first."""
    root = Path(store) / "sources"
    folders = [m.parent for m in root.glob(f"*/*/{MANIFEST}")]
    return sorted(folders, key=lambda f: ((f / MANIFEST).stat().st_mtime_ns, str(f)))


def _check_store(store: str | Path) -> Path:
    store = Path(store)
    if not store.is_dir():
        raise MixcError(f"{store}: no shard store here (build one with `mixc build --out {store}`)")
    return store


def source_token_counts(store: str | Path, recipe_name: str | None = None) -> dict[str, int]:
    """Tokens per source, for epoch accounting.

    With a recipe name, the folders its phase manifests chose; otherwise (or for sources no
    phase manifest names) the most recently finished folder of each source.
    """
    store = _check_store(store)
    counts: dict[str, int] = {}
    for folder in complete_source_folders(store):
        m = read_manifest(folder)
        counts[m["source"]] = int(m["tokens"])
    if recipe_name:
        for path in sorted((store / "phases" / recipe_name).glob("*.json")):
            for s in _read_json(path, "phase manifest", PHASE_FORMAT)["sources"]:
                counts[s["name"]] = int(s["tokens"])
    return counts


def source_streams(store: str | Path, plan: Plan) -> dict[str, SourceStream]:
    """Memory-mapped streams for every source a recipe's phases blend, from the phase manifests."""
    from ..loader import SourceStream

    store = _check_store(store)
    recipe = plan.recipe.name if plan.recipe else None
    if recipe is None:
        raise MixcError("loading shards needs a recipe (its phase manifests name the source folders)")
    folders: dict[str, str] = {}
    tokenizer: tuple[str, Any] | None = None
    for phase in plan.phases:
        m = phase_manifest(store, recipe, phase.name)
        if m is None:
            which = phase.stage if getattr(phase, "stage", None) else phase.name
            raise MixcError(f"phase '{phase.name}' of recipe '{recipe}' is not built in {store}; run `mixc build --stage {which}`")
        fp = m["tokenizer"]["fingerprint"]
        if tokenizer is None:
            tokenizer = (phase.name, fp)
        elif fp != tokenizer[1]:
            raise MixcError(f"{store}: phase '{phase.name}' was built with a different tokenizer than phase '{tokenizer[0]}'; rebuild")
        for s in m["sources"]:
            if folders.setdefault(s["name"], s["folder"]) != s["folder"]:
                raise MixcError(
                    f"{store}: source '{s['name']}' points at {folders[s['name']]} in one phase and {s['folder']} in "
                    f"phase '{phase.name}'; rebuild the phases with one input"
                )
    streams = {}
    for name, rel in folders.items():
        folder = store / rel
        m = read_manifest(folder)
        if m["source"] != name:
            raise MixcError(f"{folder}: manifest is for source '{m['source']}', the phase expects '{name}'")
        streams[name] = SourceStream(
            name, [folder / f["path"] for f in m["files"]], int(m["token_size"]), int(m["tokenizer"]["vocab_size"])
        )
        if streams[name].n_tokens != int(m["tokens"]):
            raise MixcError(f"{folder}: shards hold {streams[name].n_tokens} tokens, the manifest says {m['tokens']}; run mixc verify")
    return streams


# --------------------------------------------------------------------------- write side
# Used by the build pass. A source folder is filled in its `.work/` area by the tokenize tasks
# (see mixc/shards/tokenize.py), then `finalize_source` moves the shards to their final names
# and writes the manifest last.

LOCK = "store.lock"


_HELD: dict[int, int] = {}  # fd -> pid of the process that took the lock (this one, unless forked)


def _release_in_child() -> None:
    """After a fork: the child must not keep the build's lock, and must not outlive the build.

    An flock belongs to the open file description, which a forked child shares; a child that
    keeps its copy (datatrove's multiprocessing Manager idles forever) would hold the store
    locked after the build itself is killed. Closing the child's copy drops only its reference.
    PR_SET_PDEATHSIG then has the kernel kill the child when the building process dies."""
    if not _HELD:
        return
    parent = next(iter(_HELD.values()))
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()
    die_with_parent(parent)


_PRCTL: list = []  # libc's prctl, looked up before any fork (no dlopen in a forked child)


def _load_prctl() -> None:
    if not _PRCTL:
        import ctypes

        try:
            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError):  # not Linux
            _PRCTL.append(None)


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing)."""
    import signal

    _load_prctl()
    if _PRCTL[0] is None:
        return
    _PRCTL[0](1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if parent is not None and os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_release_in_child)


class StoreLock:
    """An exclusive flock on STORE/store.lock for the duration of a build.

    The kernel drops the lock when the process dies (even by SIGKILL), so a killed build never
    leaves the store locked: the descriptor is close-on-exec, forked children close their copy
    (see _release_in_child), and no other process ever holds it.
    """

    def __init__(self, store: str | Path):
        self.path = Path(store) / LOCK
        self._fd: int | None = None

    def __enter__(self) -> StoreLock:
        import fcntl

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise MixcError(os_error(exc, self.path.parent)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            pid = holder.removeprefix("pid ").strip()
            who = f"pid {pid}; check it with `ps -p {pid}`" if pid.isdigit() else "another process"
            raise MixcError(f"{self.path.parent}: another mixc build is writing to this store ({who}); "
                            "wait for it to finish or build into another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}\n".encode(), 0)
        _load_prctl()
        self._fd = fd
        _HELD[fd] = os.getpid()
        return self

    def __exit__(self, *exc) -> None:
        fd, self._fd = self._fd, None
        if fd is not None and _HELD.pop(fd, None) is not None:  # not in a forked child: it closed its copy
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing releases the lock


def os_reason(exc: OSError) -> str:
    """An OSError in words: 'No space left on device' rather than '[Errno 28] ...'."""
    return exc.strerror or str(exc) or type(exc).__name__


def os_error(exc: OSError, store: str | Path | None = None) -> str:
    """One line for a failed read or write of the store: what happened, where, what to do."""
    import errno

    where = exc.filename or store or "the shard store"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{os_reason(exc).lower()} writing {where}; free space there or build into another --out"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where} ({os_reason(exc).lower()}); build into a folder you can write with --out"
    return f"{where}: {os_reason(exc)}"


def tokenizer_file(store: str | Path, name: str, fingerprint: str, definition: str) -> str:
    """Save a resolved tokenizer's definition in the store (once); its path relative to the store."""
    slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-") or "tokenizer"
    rel = f"tokenizers/{slug}-{fingerprint[:12]}.json"
    path = Path(store) / rel
    if not path.exists():
        write_atomic(path, definition)
    return rel


def finalize_source(folder: str | Path, task_summaries: list[dict], manifest: dict) -> dict:
    """Move the tasks' shards from `folder/.work/shards` to 00000.ds, 00001.ds, ... and write the manifest.

    `task_summaries` in rank order; `manifest` holds everything but the files and counts. The
    renames follow a plan written first, so a finalize killed halfway resumes where it stopped.
    """
    import shutil

    folder = Path(folder)
    work = folder / ".work"
    plan_path = work / "finalize.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
    else:
        files = [f for summary in task_summaries for f in summary["files"]]
        plan = [dict(f, work=f["path"], path=f"{i:05d}.ds") for i, f in enumerate(files)]
        write_json_atomic(plan_path, plan)
    for f in plan:
        for suffix in ("", ".index", ".metadata"):
            src, dst = work / "shards" / (f["work"] + suffix), folder / (f["path"] + suffix)
            if src.exists():
                os.replace(src, dst)
            elif not dst.exists():
                raise MixcError(f"{folder}: shard {f['work'] + suffix} of an interrupted build is missing; delete {folder} and rebuild")
    files = [{k: f[k] for k in ("path", "tokens", "documents", "sha256", "index_sha256")} for f in plan]
    manifest = dict(manifest, format=SHARDS_FORMAT, files=files,
                    documents=sum(f["documents"] for f in files), tokens=sum(f["tokens"] for f in files))
    write_json_atomic(folder / MANIFEST, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def replace_folder(staged: str | Path, final: str | Path) -> None:
    """Put a complete source folder (manifest written) in place of `final`, for `build --rebuild`.

    Where the kernel can swap two directories, a reader sees the old complete folder or the new
    one, never a mix. Elsewhere the old folder is renamed away first: for an instant the folder
    is absent (a reader fails cleanly: no manifest), and never half old, half new."""
    import shutil

    staged, final = Path(staged), Path(final)
    if not (staged / MANIFEST).exists():
        raise MixcError(f"{staged}: a rebuilt folder without a manifest is not complete; not replacing {final}")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and _exchange(staged, final):
        shutil.rmtree(staged)  # now the old folder
        return
    if final.exists():
        old = staged.with_name(staged.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(staged, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, final)


def write_phase_manifest(store: str | Path, recipe_name: str, phase_name: str, data: dict) -> Path:
    path = phase_manifest_path(store, recipe_name, phase_name)
    write_json_atomic(path, dict(data, format=PHASE_FORMAT, recipe=recipe_name, phase=phase_name))
    return path


def recipe_phase_manifests(store: str | Path, recipe_name: str) -> list[Path]:
    """The phase manifests a store holds for a recipe, by file name (read each with read_phase_manifest)."""
    return sorted(phase_manifest_path(store, recipe_name, "phase").parent.glob("*.json"))
