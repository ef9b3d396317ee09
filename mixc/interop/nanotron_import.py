"""`mixc import nanotron`: nanotron configs -> DIR/recipe.yaml and DIR/mixes/<phase>.yaml.

The configs are read by nanotron_read; the files are written only once all of them are known
to validate as `mixc validate` would, and an import that fails leaves nothing behind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..locyaml import SpecError, SpecErrors
from ..plan import plan_recipe
from ..spec import Schedule, load_catalog, load_recipe
from .nanotron_format import NAMINGS, dump, last_component, plain_number, slug, source_name
from .nanotron_guess import classify
from .nanotron_read import RunConfig, Stage, merge_runs, read_config


@dataclass
class ImportResult:
    recipe: Path
    mixes: list[Path]
    warnings: list[str]


def _unique(name: str, taken: set[str]) -> str:
    out, n = name, 1
    while out in taken:
        n += 1
        out = f"{name}-{n}"
    taken.add(out)
    return out


def _schedule_dict(s: Schedule) -> dict[str, Any]:
    out: dict[str, Any] = {"type": s.type, "peak_lr": s.peak_lr, "warmup_steps": s.warmup_steps}
    if s.type == "wsd":
        out |= {"decay_start_step": s.decay_start_step, "decay_steps": s.decay_steps}
    elif s.type == "cosine":
        out["decay_steps"] = s.decay_steps
    if s.type != "constant":
        out["final_lr"] = plain_number(s.final_lr)
    return out


def _read_all(paths: list[str | Path], naming: str) -> list[RunConfig]:
    """Every config, with the problems of all of them reported together."""
    configs, errors = [], []
    for p in paths:
        try:
            configs.append(read_config(p, naming))
        except SpecErrors as exc:
            errors.extend(exc.errors)
        except SpecError as exc:
            errors.append(exc)
    if errors:
        raise SpecErrors(errors)
    return configs


def _check_runs(runs: list[RunConfig], warnings: list[str]) -> None:
    first = runs[0]
    for run in runs[1:]:
        if run.global_batch_tokens != first.global_batch_tokens:
            raise SpecErrors([SpecError(
                f"global batch of {run.global_batch_tokens:,} tokens (sequence x micro batch x accumulation x dp) differs from "
                f"{first.global_batch_tokens:,} in {Path(first.path).name}; a mixc recipe has one global batch",
                run.located.where(("tokens",)), "tokens")])
    for run in runs[1:]:
        if run.tokenizer and first.tokenizer and run.tokenizer != first.tokenizer:
            warnings.append(f"{Path(run.path).name}: tokenizer '{run.tokenizer}' differs from '{first.tokenizer}'; "
                            "the recipe keeps the first (check they share a vocabulary)")


def import_nanotron(paths: list[str | Path], out_dir: str | Path, catalog: str | Path | None = None,
                    name: str | None = None, naming: str = "read-path", model: str | None = None) -> ImportResult:
    """Write DIR/recipe.yaml and DIR/mixes/<phase>.yaml from nanotron configs, in run order."""
    if naming not in NAMINGS:
        raise MixcError(f"unknown naming '{naming}'; expected one of: {', '.join(NAMINGS)}")
    if not paths:
        raise MixcError("give at least one nanotron config")
    configs = _read_all(paths, naming)
    runs, warnings = merge_runs(configs)
    _check_runs(runs, warnings)
    catalog_names: set[str] = set()
    catalog_ref = None
    out = Path(out_dir)
    if catalog is not None:
        sources, _ = load_catalog(catalog)
        catalog_names = set(sources)
        catalog_ref = os.path.relpath(Path(catalog).resolve(), (out / "mixes").resolve())
    pending: dict[Path, str] = {}  # written only once all of it is known to validate
    phases, mix_files = [], []
    run_names: set[str] = set()
    phase_names: set[str] = set()
    for r_index, run in enumerate(runs):
        # general.run names the run (a mixc export writes the run's name there).
        run_name = _unique(slug(run.run) if run.run else "main" if r_index == 0 else slug(Path(run.path).stem), run_names)
        run_phases = []
        for i, stage in enumerate(run.stages):
            phase_name = _unique(slug(stage.name), phase_names)
            mix_path = out / "mixes" / f"{phase_name}.yaml"
            mix_files.append(mix_path)
            pending[mix_path] = _mix_text(run, stage, i, phase_name, catalog_ref, catalog_names, naming, warnings)
            run_phases.append(_phase(run, stage, i, r_index, phase_name, run_name))
        if r_index == 0 and run_name != "main":
            for phase in run_phases:
                phase["run"] = run_name
        phases += run_phases
    recipe_path = out / "recipe.yaml"
    pending[recipe_path] = _recipe_text(configs, runs, phases, name, model)
    _write_checked(pending, recipe_path)
    return ImportResult(recipe_path, mix_files, warnings)


def _phase(run: RunConfig, stage: Stage, i: int, r_index: int, phase_name: str, run_name: str) -> dict[str, Any]:
    """A recipe phase for data stage i of a run (the run's first phase starts it, with its schedule)."""
    phase: dict[str, Any] = {"name": phase_name}
    if r_index == 0:
        phase["stage"] = i + 1
    phase["mix"] = f"mixes/{phase_name}.yaml"
    if i > 0:
        phase["start_step"] = stage.start_step
    phase |= {"steps": run.stage_end(i) - stage.start_step + 1, "sequence_length": run.sequence_length,
              "rope_theta": plain_number(run.rope_theta)}
    if r_index > 0:
        phase["run"] = run_name
        if i == 0:
            phase["schedule"] = _schedule_dict(run.schedule)
    return phase


def _recipe_text(configs: list[RunConfig], runs: list[RunConfig], phases: list[dict[str, Any]], name: str | None,
                 model: str | None) -> str:
    first = runs[0]
    files = ", ".join(Path(c.path).name for c in configs)
    recipe: dict[str, Any] = {
        "name": name or slug(first.project or Path(first.path).stem),
        "description": f"imported from nanotron: {files}",
        "tokenizer": first.tokenizer or "unknown",
        "model": model or first.model,
        "global_batch_tokens": first.global_batch_tokens,
        "seed": first.seed if first.seed is not None else 0,
        "schedule": _schedule_dict(first.schedule),
        "optimizer": {k: plain_number(v) if isinstance(v, float) else v for k, v in first.optimizer.model_dump().items()},
        "phases": phases,
    }
    header = (f"Imported by `mixc import nanotron` from {files}.\n"
              f"Runs: {', '.join(f'{Path(r.path).name} ({r.train_steps:,} steps)' for r in runs)}.\n"
              f"Global batch: sequence x micro batch x accumulation x dp = {first.global_batch_tokens:,} tokens.\n"
              f"Architecture in the config: {first.architecture}.")
    return dump(recipe, header)


def _mix_text(run: RunConfig, stage: Stage, index: int, phase_name: str, catalog_ref: str | None, catalog_names: set[str],
              naming: str, warnings: list[str]) -> str:
    sources: dict[str, Any] = {}
    inline = []
    for e in stage.entries:
        # A catalog may spell a source after the other path, or keep a layout word as its name.
        candidates = (e.name, source_name(e.folder if naming == "read-path" else (e.read_path or e.folder)),
                      *(last_component(p) for p in (e.read_path, e.folder) if p))
        name = next((n for n in candidates if n in catalog_names), None)
        if name is not None and name not in sources:
            sources[name] = plain_number(e.weight)
            continue
        name = slug(e.name)
        name = name if name not in sources else f"{name}-{len(sources)}"
        inline.append(name)
        names = (e.name, source_name(e.read_path) if e.read_path else None, source_name(e.folder))
        category, language = classify((*names, *candidates[1:]))
        entry: dict[str, Any] = {"weight": plain_number(e.weight), "category": category}
        if language:
            entry["language"] = language
        entry |= {"path": e.folder, "verified": False}
        sources[name] = entry
    if catalog_ref and inline:
        warnings.append(f"{phase_name}: {len(inline)} source(s) not in the catalog, defined inline: {', '.join(inline[:8])}"
                        + (" ..." if len(inline) > 8 else ""))
    mix: dict[str, Any] = {"name": phase_name}
    if catalog_ref:
        mix["catalog"] = catalog_ref
    mix |= {"weights": "relative", "sources": sources}
    end = run.stage_end(index)
    header = (f"Data stage '{stage.name}' of {Path(run.path).name} ({stage.key}): steps {stage.start_step:,}-{end:,}, "
              f"{len(stage.entries)} datasets.\n"
              "Weights as written in the config (nanotron normalizes them; so does mixc, as they are relative).")
    if inline:
        header += ("\nInline sources: category and language from the shipped SmolLM3 catalog where it knows the folder's name,"
                   "\nelse guessed from the name; path = the nanotron dataset folder (already tokenized).\n"
                   "Point path or dataset at the raw text (or give --catalog) before `mixc build`.")
    return dump(mix, header, flow_leaves=True)


def _write_checked(pending: dict[Path, str], recipe_path: Path) -> None:
    """Write the recipe and its mixes, validate them as `mixc validate` would, and on failure put
    back what was there before: an import that fails leaves nothing behind."""

    before = {path: path.read_bytes() if path.is_file() else None for path in pending}
    made = {d for path in pending for d in (path.parent, *path.parent.parents) if not d.exists()}
    for path, text in pending.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    try:
        plan_recipe(load_recipe(recipe_path))
    except (SpecError, SpecErrors) as exc:  # a bug in the importer: read_config checks what it writes
        for path, old in before.items():
            if old is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(old)
        for folder in sorted(made, key=lambda d: len(d.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise MixcError(f"the imported recipe does not validate (nothing was written):\n{exc}") from None
