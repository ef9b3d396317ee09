"""`mixc export nanotron`: a recipe -> the nanotron config blocks of each of its runs.

Per run: `data_stages` pointing at mixc's shard folders (the ones a built store's phase
manifests name, when given one), `tokens`, the optimizer with nanotron's learning-rate
scheduler, and the model's RoPE base (plus the sizes of an architecture mixc knows by name).
Importing an export gives the same recipe back (nanotron_import).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import MixcError
from ..plan import plan_recipe
from ..spec import ResolvedRecipe, Schedule
from ..store import read_phase_manifest, recipe_phase_manifests, token_size_for
from .nanotron_format import KNOWN_MODELS, dump, plain_number, slug


def _lr_scheduler(s: Schedule, train_steps: int) -> dict[str, Any]:
    out: dict[str, Any] = {"learning_rate": s.peak_lr, "lr_warmup_steps": s.warmup_steps, "lr_warmup_style": "linear"}
    if s.type == "wsd":
        out |= {"lr_decay_style": "linear", "lr_decay_starting_step": s.decay_start_step, "lr_decay_steps": s.decay_steps,
                "min_decay_lr": plain_number(s.final_lr)}
    elif s.type == "cosine":
        out |= {"lr_decay_style": "cosine", "lr_decay_starting_step": s.warmup_steps, "lr_decay_steps": s.decay_steps,
                "min_decay_lr": plain_number(s.final_lr)}
    else:  # constant: the decay never starts, and would go nowhere
        out |= {"lr_decay_style": "linear", "lr_decay_starting_step": train_steps + 1, "lr_decay_steps": 0,
                "min_decay_lr": s.peak_lr}
    return out


def shard_folder(shards: str, source: str, built: dict[str, str] | None = None) -> str:
    """A source's shard folder: the one the store's phase manifests name, else `<shards>/<source>`."""
    if built and source in built:
        return f"{shards.rstrip('/')}/{built[source]}"
    return f"{shards.rstrip('/')}/{source}"


def _built(shards: str, recipe_name: str) -> tuple[dict[str, dict[str, str]], int | None]:
    """From the phase manifests of a built store, if any: phase -> source -> folder (relative
    to the store; per phase, since a mix may define a source differently and so build it into
    another folder), and the vocabulary size of the tokenizer the shards were written with."""
    folders: dict[str, dict[str, str]] = {}
    vocab_size = None
    for path in recipe_phase_manifests(shards, recipe_name):
        manifest = read_phase_manifest(path)
        folders[manifest["phase"]] = {s["name"]: s["folder"] for s in manifest["sources"]}
        if vocab_size is None:
            vocab_size = int(manifest["tokenizer"]["vocab_size"])
    return folders, vocab_size if folders else None


# A byte-level tokenizer's alphabet: no tokenizer that can encode arbitrary text has fewer ids.
MIN_VOCAB_SIZE = 256
MAX_VOCAB_SIZE = 2**32  # nanotron stores ids in at most 4 bytes


def _check_vocab_size(vocab_size: int, built_vocab: int | None, shards: str) -> None:
    """--vocab-size becomes the model's embedding rows and the shards' bytes per id: it must cover
    every id the tokenizer can emit, and agree with the bytes the shards were written with."""

    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise MixcError(f"--vocab-size {vocab_size}: expected between {MIN_VOCAB_SIZE} (a byte-level alphabet) "
                        f"and {MAX_VOCAB_SIZE:,} (4-byte token ids)")
    if built_vocab is None:
        return
    if vocab_size < built_vocab:
        raise MixcError(f"--vocab-size {vocab_size:,} is smaller than the {built_vocab:,} ids of the tokenizer the shards in "
                        f"{shards} were built with; the model needs a row for every id (omit --vocab-size to use the store's)")
    if token_size_for(vocab_size) != token_size_for(built_vocab):
        raise MixcError(f"--vocab-size {vocab_size:,} means {token_size_for(vocab_size)}-byte token ids, but the shards in "
                        f"{shards} hold {token_size_for(built_vocab)}-byte ids (tokenizer of {built_vocab:,} ids); "
                        "nanotron would misread them")


def export_nanotron(resolved: ResolvedRecipe, shards: str = "shards", dp: int = 1, micro_batch_size: int = 1,
                    vocab_size: int | None = None, run: str | None = None) -> dict[str, dict[str, Any]]:
    """Per run of the recipe, the nanotron config blocks that describe its data and schedule."""

    plan = plan_recipe(resolved)
    recipe = resolved.recipe
    built, built_vocab = _built(shards, recipe.name)
    if vocab_size is None:
        vocab_size = built_vocab
    else:
        _check_vocab_size(vocab_size, built_vocab, shards)
    runs: dict[str, list] = {}
    for p in plan.phases:
        runs.setdefault(p.run, []).append(p)
    if run is not None and run not in runs:
        raise MixcError(f"no run named '{run}' (runs: {', '.join(runs)})")
    out = {}
    for name, phases in runs.items():
        if run is not None and name != run:
            continue
        first = phases[0]
        for p in phases[1:]:
            for attr, label in (("sequence_length", "sequence_length"), ("rope_theta", "rope_theta")):
                if getattr(p, attr) != getattr(first, attr):
                    raise MixcError(f"run '{name}': phases '{first.name}' and '{p.name}' differ in {label}; a nanotron config "
                                    "has one per run (give the later phase its own run)")
        for p in phases:
            if recipe.phases[p.index].packing.mode != "concat":
                raise MixcError(f"run '{name}': phase '{p.name}' packs documents best-fit (packing: "
                                f"{recipe.phases[p.index].packing.mode}); nanotron's Nanoset cuts the concatenated stream, so "
                                "the config would train other samples: export with packing: concat (or another --run)")
        samples = recipe.global_batch_tokens // first.sequence_length
        if samples % (dp * micro_batch_size):
            raise MixcError(f"run '{name}': {samples} sequences per step do not split into dp {dp} x micro batch "
                            f"{micro_batch_size}; choose values whose product divides {samples} (export runs one by one with --run to give each its own)")
        train_steps = phases[-1].last_step
        dataset_extra: dict[str, Any] = {"tokenizer_name": recipe.tokenizer}
        if vocab_size:
            dataset_extra |= {"vocab_size": vocab_size, "token_size_in_bytes": token_size_for(vocab_size)}
        stages = []
        for p in phases:
            stages.append({
                "name": p.name,
                "start_training_step": p.first_step,
                "data": {
                    "dataset": {
                        "dataset_folder": [shard_folder(shards, s.name, built.get(p.name)) for s in p.sources],
                        "dataset_weights": [s.weight for s in p.sources],
                        **dataset_extra,
                    },
                    "seed": recipe.seed,
                },
            })
        opt = recipe.optimizer
        model_config: dict[str, Any] = dict(KNOWN_MODELS.get(recipe.model, {}))
        model_config |= {"rope_theta": first.rope_theta, "max_position_embeddings": first.sequence_length}
        if vocab_size:
            model_config["vocab_size"] = vocab_size
        if opt.z_loss:
            model_config |= {"z_loss_enabled": True, "z_loss_coefficient": opt.z_loss}
        out[name] = {
            "general": {"project": recipe.name, "run": name, "seed": recipe.seed},
            "data_stages": stages,
            "tokens": {"sequence_length": first.sequence_length, "micro_batch_size": micro_batch_size,
                       "batch_accumulation_per_replica": samples // (dp * micro_batch_size), "train_steps": train_steps},
            "parallelism": {"dp": dp},
            "optimizer": {
                "clip_grad": opt.grad_clip,
                "weight_decay": opt.weight_decay,
                "learning_rate_scheduler": _lr_scheduler(first.schedule, train_steps),
                "optimizer_factory": {"name": "adamW", "adam_beta1": opt.beta1, "adam_beta2": opt.beta2, "adam_eps": opt.eps},
            },
            "model": {"model_config": model_config},
            "tokenizer": {"tokenizer_name_or_path": recipe.tokenizer, "tokenizer_max_length": first.sequence_length},
        }
    return out


def export_text(resolved: ResolvedRecipe, run_name: str, config: dict[str, Any]) -> str:
    recipe = resolved.recipe
    header = (f"nanotron blocks for run '{run_name}' of mixc recipe '{recipe.name}' ({resolved.path}), written by `mixc export nanotron`.\n"
              "Merge them into a full nanotron config (model architecture, the rest of parallelism, checkpoints, logging).\n"
              f"Global batch {recipe.global_batch_tokens:,} tokens = sequence_length x micro_batch_size x "
              "batch_accumulation_per_replica x dp: change dp and micro batch together (mixc export --dp/--micro-batch-size).\n"
              "dataset_folder: one folder of datatrove shards per source, as `mixc build` writes them; weights as in the mixes\n"
              "(nanotron normalizes them).")
    return dump(config, header)


def write_export(resolved: ResolvedRecipe, configs: dict[str, dict[str, Any]], output: str | None) -> list[Path] | str:
    """One run: OUTPUT is the file. Several runs: OUTPUT is a folder of <run>.yaml, in run order.
    Without OUTPUT: the YAML text (runs as separate documents)."""
    texts = {name: export_text(resolved, name, config) for name, config in configs.items()}
    if output is None:
        return "---\n".join(texts.values())
    target = Path(output)
    if len(texts) == 1 and not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(next(iter(texts.values())), encoding="utf-8")
        return [target]
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (name, text) in enumerate(texts.items(), start=1):
        path = target / f"{i:02d}-{slug(name)}.yaml"  # numbered: a shell glob lists them in run order
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
