"""The shard store: where tokenized sources live, and how later passes find them.

Layout (see docs/store.md):

    STORE/sources/<source>/<key12>/   datatrove shards + manifest.json (written last: presence = complete)
    STORE/phases/<recipe>/<phase>.json  the folders and normalized weights one phase blends
    STORE/tokenizers/                  resolved tokenizer definitions

Everything here only reads. The build pass writes through `write_json_atomic`, so a reader never
sees half a manifest, and a folder without a manifest is never taken as a finished source.
"""

from __future__ import annotations

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


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON next to its final name, fsync, then rename: all or nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


def phase_manifest_path(store: str | Path, recipe_name: str, phase_name: str) -> Path:
    return Path(store) / "phases" / recipe_name / f"{phase_name}.json"


def phase_manifest(store: str | Path, recipe_name: str, phase_name: str) -> dict | None:
    path = phase_manifest_path(store, recipe_name, phase_name)
    if not path.exists():
        return None
    return _read_json(path, "phase manifest", PHASE_FORMAT)


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
