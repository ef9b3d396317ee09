"""Opening a store's shards as the loader's source streams (the store itself never imports the loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import MixcError
from .loader import SourceStream
from .plan import Plan
from .store import check_store, phase_manifest, read_manifest


def folder_stream(folder: str | Path, manifest: dict | None = None) -> SourceStream:
    """The stream of one finished source folder: its shards in manifest order."""
    folder = Path(folder)
    m = manifest if manifest is not None else read_manifest(folder)
    return SourceStream(m["source"], [folder / f["path"] for f in m["files"]], int(m["token_size"]),
                        int(m["tokenizer"]["vocab_size"]))


def source_streams(store: str | Path, plan: Plan) -> dict[str, SourceStream]:
    """Memory-mapped streams for every source a recipe's phases blend, from the phase manifests."""
    store = check_store(store)
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
        streams[name] = folder_stream(folder, m)
        if streams[name].n_tokens != int(m["tokens"]):
            raise MixcError(f"{folder}: shards hold {streams[name].n_tokens} tokens, the manifest says {m['tokens']}; run mixc verify")
    return streams
