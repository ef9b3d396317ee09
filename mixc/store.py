"""The store contract: the one definition of what a shard store holds, below every pass that
reads or writes it (shards writes, the loader, train, report and interop read). The prose
version of this contract is docs/store.md.

Layout:

    STORE/sources/<source>/<key12>/   shards + manifest.json (written last: presence = complete)
    STORE/phases/<recipe>/<phase>.json  the folders and normalized shares one phase blends
    STORE/tokenizers/                  resolved tokenizer definitions

One shard is three files, exactly as datatrove 0.10.1's DocumentTokenizer writes them:

    NAME.ds           the tokens of every document end to end, little-endian uint16 (vocabulary
                      of at most 65,536 ids) or uint32, each document already ending with EOS
    NAME.ds.index     uint64 little-endian: the end of each document, in tokens from file start
    NAME.ds.metadata  "<tokenizer name>|<token size>\\n<token count>\\n<humanized count>" (no final newline)

Writers go through `write_atomic` / `write_json_atomic`, so a reader never sees half a file, and
a folder without a manifest is never taken as a finished source.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import humanize
import numpy as np

from .errors import MixcError
from .schema import check_name

SHARDS_FORMAT = "mixc.shards/1"
PHASE_FORMAT = "mixc.phase/1"
MANIFEST = "manifest.json"

# --------------------------------------------------------------------------- the shard format
TOKEN_SIZES = (2, 4)  # bytes per token id on disk
SHARD_SUFFIXES = ("", ".index", ".metadata")  # NAME.ds, NAME.ds.index, NAME.ds.metadata
INDEX_DTYPE = np.dtype("<u8")  # document ends, in tokens from the start of the .ds
DOCUMENT_FACTS_DTYPE = np.dtype("<u8")  # a held-out shard's per-document UTF-8 byte counts (.ds.bytes) and content hashes (.ds.hash)


def token_size_for(vocab_size: int) -> int:
    """Bytes per token: 2 while every id fits in uint16 (as datatrove decides it), else 4."""
    return 4 if vocab_size > np.iinfo(np.uint16).max + 1 else 2


def token_dtype(token_size: int) -> np.dtype:
    """The on-disk (little-endian) dtype of a token of `token_size` bytes."""
    return np.dtype("<u2") if token_size == 2 else np.dtype("<u4")


def shard_name(i: int) -> str:
    """The final name of a source folder's i-th shard."""
    return f"{i:05d}.ds"


def metadata_text(tokenizer_name: str, token_size: int, tokens: int) -> str:
    """The .ds.metadata text datatrove writes (nanotron and DatatroveFolderDataset users read it)."""
    return "\n".join([f"{tokenizer_name}|{token_size}", str(tokens), humanize.metric(tokens, unit="T")])


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
    """The process's umask, read without changing it where Linux reports it: setting it to read
    it would, for an instant, let another thread create files without its protection."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0)  # elsewhere the only portable way: set it, then put it back
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
    """A phase manifest, each source with its normalized `share`.

    Stores built before the field was named `share` hold the same number under `weight`
    (always the normalized share there, never the mix's raw weight): read as `share`."""
    data = _read_json(Path(path), "phase manifest", PHASE_FORMAT)
    for s in data.get("sources", []):
        if isinstance(s, dict):
            s.setdefault("share", s.pop("weight", None))
    return data


def phase_share(source: dict) -> float:
    """The normalized share of one `sources` entry of a phase manifest read as plain JSON."""
    return float(source["share"] if "share" in source else source["weight"])


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


def check_store(store: str | Path) -> Path:
    store = Path(store)
    if not store.is_dir():
        raise MixcError(f"{store}: no shard store here (build one with `mixc build --out {store}`)")
    return store


def source_token_counts(store: str | Path, recipe_name: str | None = None) -> dict[str, int]:
    """Tokens per source, for epoch accounting.

    With a recipe name, the folders its phase manifests chose; otherwise (or for sources no
    phase manifest names) the most recently finished folder of each source.
    """
    store = check_store(store)
    counts: dict[str, int] = {}
    for folder in complete_source_folders(store):
        m = read_manifest(folder)
        counts[m["source"]] = int(m["tokens"])
    if recipe_name:
        for path in sorted((store / "phases" / recipe_name).glob("*.json")):
            for s in read_phase_manifest(path)["sources"]:
                counts[s["name"]] = int(s["tokens"])
    return counts


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
        try:
            _PRCTL.append(ctypes.CDLL(None, use_errno=True).prctl)
        except (OSError, AttributeError):  # not Linux
            _PRCTL.append(None)


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux; elsewhere nothing)."""
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
        import fcntl  # POSIX only; imported where the lock is taken

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
    folder = Path(folder)
    work = folder / ".work"
    plan_path = work / "finalize.json"
    if plan_path.exists():
        plan = json.loads(plan_path.read_text(encoding="utf-8"))
    else:
        files = [f for summary in task_summaries for f in summary["files"]]
        plan = [dict(f, work=f["path"], path=shard_name(i)) for i, f in enumerate(files)]
        write_json_atomic(plan_path, plan)
    for f in plan:
        for suffix in SHARD_SUFFIXES:
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
