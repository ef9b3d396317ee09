"""The packing report: what cutting samples costs each phase, before a step is trained.

Per phase and source (against a shard store): documents, the fraction of documents cut across
samples, the fraction of tokens that sit in cut documents, and the padding fraction, under
`concat` (a document is cut when a sample boundary falls inside it) or `bestfit` (only documents
longer than a sample are cut; the rest of a sample is padding). A phase's fractions weigh its
sources as the phase draws them: padding by samples (the shares), cut tokens by the real tokens
drawn, cut documents by the documents drawn. `epochs` counts real tokens: the samples the phase
draws of a source over the samples one pass of it packs into.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..packing import PackedSource, concat_stats, document_layout, phase_packing
from ..plan import Plan
from ..store import complete_source_folders, phase_manifest, read_manifest
from ..streams import folder_stream
from ..text import table


def packing_data(plan: Plan, store: str | Path, mode: str | None = None, phase: str | None = None) -> list[dict[str, Any]]:
    """One entry per phase (or only `phase`); `mode` overrides every phase's recipe option."""
    streams = _source_streams(store, plan)
    seed = plan.recipe.seed if plan.recipe else 0
    lengths: dict[str, Any] = {}
    out = []
    for p in ([plan.phase(phase)] if phase is not None else plan.phases):
        recipe_mode, window = phase_packing(plan, p)
        use = mode or recipe_mode
        rows = []
        for s in sorted(p.sources, key=lambda s: -s.share):
            if s.share <= 0:
                continue
            if s.name not in streams:
                raise MixcError(f"phase '{p.name}': source '{s.name}' has no shards in {store}")
            if use == "bestfit":
                stats = PackedSource(streams[s.name], p.sequence_length, window, seed).stats()
            else:
                if s.name not in lengths:
                    lengths[s.name] = document_layout(streams[s.name])[2]
                stats = concat_stats(lengths[s.name], p.sequence_length)
            draws = s.share * p.samples
            rows.append({"source": s.name, "share": s.share, "documents": stats.documents, "cut_documents": stats.cut_documents,
                         "cut_documents_fraction": stats.cut_documents_fraction,
                         "cut_tokens_fraction": stats.cut_tokens_fraction, "padding_fraction": stats.padding_fraction,
                         "samples": stats.samples, "epochs": draws / stats.samples if stats.samples else None})
        out.append({"phase": p.name, "mode": use, "window": window if use == "bestfit" else None,
                    "sequence_length": p.sequence_length, **_phase_fractions(rows), "sources": rows})
    return out


def _source_streams(store: str | Path, plan: Plan) -> dict:
    """Each source's stream: the folder a phase manifest names, else its newest finished folder
    (the sizes `shard_plan` counted), so phases not built yet do not stop the report."""
    folders = {read_manifest(f)["source"]: f for f in complete_source_folders(store)}
    for p in plan.phases:
        m = phase_manifest(store, plan.recipe.name, p.name) if plan.recipe else None
        for s in (m or {}).get("sources", []):
            folders[s["name"]] = Path(store) / s["folder"]
    return {name: folder_stream(folder) for name, folder in folders.items()}


def _phase_fractions(rows: list[dict[str, Any]]) -> dict[str, float]:
    real = [r["share"] * (1 - r["padding_fraction"]) for r in rows]
    docs = [w * r["documents"] / max(1, r["samples"]) for w, r in zip(real, rows)]

    def mean(weights, key):
        total = sum(weights)
        return sum(w * r[key] for w, r in zip(weights, rows)) / total if total else 0.0

    return {"cut_documents_fraction": mean(docs, "cut_documents_fraction"),
            "cut_tokens_fraction": mean(real, "cut_tokens_fraction"),
            "padding_fraction": mean([r["share"] for r in rows], "padding_fraction")}


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


HEADERS = ["source", "documents", "cut docs", "cut tokens", "padding", "epochs"]


def render_packing(phases: list[dict[str, Any]]) -> str:
    out = ["packing: documents cut across samples, tokens in cut documents, padding (per phase and source)"]
    for p in phases:
        how = f"bestfit, window {p['window']}" if p["mode"] == "bestfit" else "concat"
        out += ["", f"{p['phase']} ({how}, sequence length {p['sequence_length']}): cut documents "
                f"{_pct(p['cut_documents_fraction'])}, cut tokens {_pct(p['cut_tokens_fraction'])}, "
                f"padding {_pct(p['padding_fraction'])}"]
        rows = [[r["source"], str(r["documents"]), _pct(r["cut_documents_fraction"]), _pct(r["cut_tokens_fraction"]),
                 _pct(r["padding_fraction"]), "-" if r["epochs"] is None else f"{r['epochs']:.3f}"] for r in p["sources"]]
        out += ["  " + line for line in table(HEADERS, rows, "lrrrrr")]
    return "\n".join(out) + "\n"
