"""The `mixc` command line: parse arguments, call one library function, print.

Every user-facing failure is a `MixcError`: one line on stderr, exit status 1, no
traceback. Usage errors (unknown options, missing paths) exit 2, as click does.
"""

from __future__ import annotations

import json
import math
import signal
import sys
from pathlib import Path

import click

from . import __version__
from .diff import diff_phases, render_diff
from .errors import MixcError
from .eval import eval_hf, format_table
from .experiments.commands import COMMANDS as EXPERIMENT_COMMANDS
from .interop.nanotron_import import import_nanotron
from .interop.nanotron_write import export_nanotron, write_export
from .locyaml import SpecError, SpecErrors
from .memory import ModelShape, phase_memory, render_memory
from .project import default_recipe, load_plan
from .report import render as render_report
from .report.curves import run_curves
from .report.epochs import epochs_data, shard_plan
from .report.epochs import render as render_epochs
from .report.ledger import ledger, render_ledger, run_plan, run_records
from .report.packing import packing_data, render_packing
from .shards.tokenizer import sample_corpus, source_texts, train_tokenizer
from .shards.verify import decode_document, inspect_path, verify_path
from .spec import json_schemas, load_catalog, load_recipe, parse_count
from .train.configs import get_config
from .train.metrics import render_summary
from .validate import validate_paths


class MixcGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpecErrors as exc:
            for err in exc.errors:
                click.echo(str(err), err=True)
            sys.exit(1)
        except SpecError as exc:  # already 'file:line:column: error: ...'
            click.echo(str(exc), err=True)
            sys.exit(1)
        except MixcError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            # A second interrupt while the build's pool shuts down (another Ctrl-C, or mixc's own
            # dead-worker watcher) must not end in a traceback: from here on, SIGINT is ignored.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=MixcGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mixc")
def main() -> None:
    """mixc: compile pretraining data mixes into tokenized shards, blends and training curricula."""


def _emit(text: str, output: str | None) -> None:
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


# --------------------------------------------------------------------------- spec


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--strict", is_flag=True, help="CI mode: also fail mixes that do not declare relative weights and do not sum to 1.")
@click.option("--quiet", "-q", is_flag=True, help="Print only errors.")
def validate(paths: tuple[str, ...], strict: bool, quiet: bool) -> None:
    """Check mixes, catalogs and recipes (files or folders of them).

    Exit 0 when every file is valid, 1 when any is not, 2 on a usage error.
    """
    result = validate_paths(list(paths), strict=strict)
    if not quiet:
        for line in result.lines:
            click.echo(line)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    for err in result.errors:
        click.echo(str(err), err=True)
    if not result.ok:
        click.echo(f"{len(result.errors)} error(s) in {result.files} file(s)", err=True)
        sys.exit(1)


@main.command()
@click.option("--kind", type=click.Choice(["recipe", "mix", "catalog", "all"]), default="all", show_default=True)
def schema(kind: str) -> None:
    """Print the JSON Schema of the spec files."""
    schemas = json_schemas()
    click.echo(json.dumps(schemas if kind == "all" else schemas[kind], indent=2))


# --------------------------------------------------------------------------- plan and report

REPORT_FORMATS = ["table", "json", "markdown", "csv", "html", "png"]


class EpochThreshold(click.ParamType):
    """--epoch-warning: a finite number of epochs above zero (NaN would silence every warning)."""

    name = "epochs"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"expected a number of epochs such as 4, got {value!r}", param, ctx)
        if not math.isfinite(number) or number <= 0:
            self.fail(f"expected a finite number of epochs above 0, got {value!r}", param, ctx)
        return number


EPOCH_THRESHOLD = EpochThreshold()


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file instead of stdout.")
@click.option("--tokens", help="Token budget per mix when reporting bare mixes (e.g. 1T).")
@click.option("--epoch-warning", type=EPOCH_THRESHOLD, help="Warn when a source is seen more epochs than this (default: the recipe's, else 4).")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), help="Shard store: use real source sizes from its manifests.")
def report(paths, fmt, output, tokens, epoch_warning, shards) -> None:
    """Explain a curriculum: per-phase shares, budgets, rollups, boundaries and epochs.

    PATHS is one recipe (default: recipes/smollm3-3b.yaml) or one or more mixes, or a run folder:
    its ledger (per phase and source, planned against consumed tokens, epochs, held-out BPB), or
    with --format html or png its recipe's timeline with the run's loss and held-out BPB on it.
    """
    if len(paths) == 1 and (Path(paths[0]) / "run.json").is_file():  # a run folder (mixc train --out)
        _report_run(paths[0], fmt, output)
        return
    budget = _count_option(parse_count, tokens, "--tokens")
    if shards:  # the same sizes and refusals as `mixc plan --shards`
        plan = shard_plan(list(paths), shards, tokens=budget, epoch_warning=epoch_warning)
    else:
        plan = load_plan(list(paths), tokens=budget, epoch_warning=epoch_warning)
    if fmt in ("html", "png") and not output:
        raise click.UsageError(f"--format {fmt} needs -o FILE")
    result = render_report(plan, fmt, output)
    if shards and plan.recipe is not None and fmt in ("table", "json"):
        packed = packing_data(plan, shards)
        result = (result + "\n" + render_packing(packed) if fmt == "table"
                  else json.dumps({**json.loads(result), "packing": packed}, indent=2) + "\n")
    if result is not None:
        _emit(result, output)
    if fmt == "table":
        for w in plan.warnings:
            click.echo(f"warning: {w}", err=True)


def _report_run(run: str, fmt: str, output: str | None) -> None:
    if fmt in ("table", "json"):
        data = ledger(run)
        _emit(json.dumps(data, indent=1) + "\n" if fmt == "json" else render_ledger(data), output)
        return
    if fmt not in ("html", "png"):
        raise click.UsageError(f"--format {fmt} is for recipes and mixes; a run folder's report is table, json, html or png")
    if not output:
        raise click.UsageError(f"--format {fmt} needs -o FILE")
    _, _, plan = run_plan(run)
    curves = run_curves(plan, run_records(Path(run)), run)
    result = render_report(plan, fmt, output, run=curves)
    if result is not None:
        _emit(result, output)


def _count_option(parse, value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


@main.command(name="plan")
@click.argument("recipe", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--shards", type=click.Path(exists=True, file_okay=False), help="Shard store: source sizes from its manifests (else the catalog's estimates).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--epoch-warning", type=EPOCH_THRESHOLD, help="Warn when a source is seen more epochs than this (default: the recipe's).")
@click.option("--stage", help="Only this phase (stage number or name); earlier phases still count toward cumulative epochs.")
@click.option("--packing", type=click.Choice(["concat", "bestfit"]),
              help="With --shards: the packing report for this mode in every phase (default: each phase's recipe option).")
@click.option("--gpus", type=click.IntRange(min=1), help="Also estimate per-GPU memory of each phase on this many GPUs.")
@click.option("--gpu", type=click.Choice(["h100", "h200", "a100", "a100-40gb"]), default="h100", show_default=True)
@click.option("--activation-checkpointing/--no-activation-checkpointing", default=None,
              help="For --gpus (default: as the trainer, on only where a phase would not fit without it).")
@click.option("--fsdp/--no-fsdp", default=True, show_default=True, help="For --gpus: shard the state with FSDP2, or replicate it (DDP).")
@click.option("--micro-batch-size", type=click.IntRange(min=1), help="For --gpus: as `mixc train --micro-batch-size`.")
def plan_command(recipe, shards, fmt, epoch_warning, stage, packing, gpus, gpu, activation_checkpointing, fsdp, micro_batch_size) -> None:
    """Tokens each phase demands of each source, tokens available, and epochs (per phase and cumulative).

    With --shards, a positive weight on a source the store does not hold (or holds 0 tokens of)
    is refused with exit status 1. With --gpus, also each phase's per-GPU memory estimate
    (mixc/memory.py) and whether it fits.
    """
    paths = [recipe] if recipe else None
    if shards:
        plan = shard_plan(paths, shards, epoch_warning=epoch_warning, phase=stage)
    else:
        plan = load_plan(paths, epoch_warning=epoch_warning)
    try:
        data = epochs_data(plan, shards, stage)
    except KeyError as exc:
        raise MixcError(exc.args[0]) from None
    if packing and not shards:
        raise click.UsageError("--packing needs --shards (the report reads the documents' lengths)")
    if shards and plan.recipe is not None:
        data["packing"] = packing_data(plan, shards, packing, stage)
    memory = None
    if gpus:
        memory = phase_memory(plan, ModelShape.of(get_config(plan.recipe.model)), gpus, gpu, fsdp=fsdp,
                              activation_checkpointing=activation_checkpointing, micro_batch_size=micro_batch_size)
        if fmt == "json":
            data = {**data, "memory": {"gpus": gpus, "gpu": gpu, "fsdp": fsdp, "phases": memory}}
    click.echo(render_epochs(data, fmt), nl=False)
    if memory is not None and fmt != "json":
        click.echo("\n" + render_memory(memory, gpus, gpu, fsdp), nl=False)
    if fmt == "table" and data.get("packing"):
        click.echo("\n" + render_packing(data["packing"]), nl=False)
    if fmt == "json":  # the table prints its warnings itself
        for w in data["warnings"]:
            click.echo(f"warning: {w}", err=True)


@main.command()
@click.argument("path", type=click.Path(exists=True))
def verify(path: str) -> None:
    """Check shards against their manifests: a store, a source folder or a phase manifest.

    Exit 0 when everything matches; 1 listing each problem (file and what).
    """
    result = verify_path(path)
    for problem in result.problems:
        click.echo(str(problem), err=True)
    if not result.ok:
        click.echo(f"{len(result.problems)} problem(s) in {result.summary()}", err=True)
        sys.exit(1)
    click.echo(f"ok: {result.summary()}")


@main.command()
@click.argument("path", type=click.Path(exists=True))
@click.option("--doc", type=click.IntRange(min=0), help="Decode document N (0-based) back to text.")
@click.option("--source", help="With a store or phase manifest: the source to look at.")
def inspect(path: str, doc: int | None, source: str | None) -> None:
    """Counts and a document-length histogram of shards; --doc N decodes one document."""
    if doc is None:
        click.echo(inspect_path(path, source), nl=False)
    else:
        click.echo(decode_document(path, doc, source))


@main.command()
@click.argument("a")
@click.argument("b")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False), help="Compare two phases (stage number or name) of this recipe.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def diff(a: str, b: str, recipe: str | None, fmt: str) -> None:
    """What changes from A to B: two mix files, or two phases of a recipe.

    Examples: `mixc diff mixes/smollm3/stage1.yaml mixes/smollm3/stage2.yaml`,
    `mixc diff 1 2` (stages of the default recipe), `mixc diff --recipe R stable-2 decay`.
    """
    if recipe is None and Path(a).is_file() and Path(b).is_file():
        plan = load_plan([a, b])
        pa, pb = plan.phases
    else:
        plan = load_plan([recipe or str(default_recipe())])
        try:
            pa, pb = plan.phase(a), plan.phase(b)
        except KeyError as exc:
            raise MixcError(exc.args[0]) from None
    d = diff_phases(pa, pb)
    click.echo(json.dumps(d, indent=2) if fmt == "json" else render_diff(d), nl=fmt == "json")


# --------------------------------------------------------------------------- build


@main.command()
@click.option("--stage", default="all", show_default=True, help="A stage number (1, 2, 3), a phase name, or 'all' (every phase's sources).")
@click.option("--recipe", type=click.Path(exists=True, dir_okay=False), help="The recipe (default: recipes/smollm3-3b.yaml or $MIXC_RECIPE).")
@click.option("--out", default="shards", show_default=True, type=click.Path(file_okay=False), help="The shard store.")
@click.option("--sample", is_flag=True, help="Read every source's offline sample data instead of its real location.")
@click.option("--sample-documents", type=click.IntRange(min=1), help="Documents per sample source (default 500).")
@click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True)
@click.option("--tasks", type=click.IntRange(min=1), help="datatrove tasks per source (default: --workers).")
@click.option("--workers", type=click.IntRange(min=1), help="Tasks running at once (default: the CPU count).")
@click.option("--shard-tokens", help="Most tokens per shard file (default 100M; e.g. 50M, 1e9).")
@click.option("--tokenizer", help="Use this tokenizer instead of the recipe's (tokenizer.json path, sample:bpe-N or a hub id).")
@click.option("--seed", type=int, help="Seed of the sample documents and the shuffle (default: the recipe's).")
@click.option("--shuffle", is_flag=True, help="Shuffle the documents within each shard (seeded).")
@click.option("--slurm-partition", help="slurm: the partition to submit to.")
@click.option("--slurm-time", default="24:00:00", show_default=True, help="slurm: time limit per task.")
@click.option("--slurm-env", help="slurm: shell command that activates mixc's environment in a job (default: this venv).")
@click.option("--no-fast-encoder", is_flag=True, help="Always encode with HF tokenizers (default: tiktoken where proven identical).")
@click.option("--rebuild", is_flag=True, help="Tokenize the selected phases' sources again, even if complete; "
              "each new folder replaces the old one whole.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
def build(stage, recipe, out, sample, sample_documents, executor, tasks, workers, shard_tokens, tokenizer, seed, shuffle,
          slurm_partition, slurm_time, slurm_env, no_fast_encoder, rebuild, quiet) -> None:
    """Tokenize the sources of a phase (or all phases) into datatrove shards in the store --out.

    Sources already tokenized with the same input, tokenizer and options are reused, so
    `mixc build --stage 3` after `--stage 2` only tokenizes what stage 3 adds.
    """
    from .shards.run import SlurmOptions  # datatrove: heavy, imported only to build
    from .shards.run import build as run_build  # datatrove

    shard_tokens = _count_option(parse_count, shard_tokens, "--shard-tokens")
    if shard_tokens is not None and shard_tokens < 1:
        raise click.BadParameter(f"{shard_tokens}: a shard holds at least 1 token", param_hint="--shard-tokens")
    result = run_build(
        recipe, stage=stage, out=out, sample=sample, sample_documents=sample_documents, executor=executor, tasks=tasks,
        workers=workers, shard_tokens=shard_tokens, tokenizer=tokenizer,
        seed=seed, shuffle=shuffle, progress=not quiet, fast_encoder=not no_fast_encoder, rebuild=rebuild,
        slurm=SlurmOptions(partition=slurm_partition, time=slurm_time, env_command=slurm_env),
    )
    click.echo(result.summary())


# --------------------------------------------------------------------------- tokenizer


@main.group(name="tokenizer")
def tokenizer_group() -> None:
    """Tokenizers: train a byte-level BPE for the offline demo or your own data."""


@tokenizer_group.command(name="train")
@click.option("--vocab-size", required=True, type=click.IntRange(min=258), help="Vocabulary size, <|endoftext|> included.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, writable=True), help="The tokenizer.json to write.")
@click.option("--from-source", "source_name", help="Train on this catalog source (local parquet/jsonl files or sample://).")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False), help="The catalog naming --from-source.")
@click.option("--sample", is_flag=True, help="Train on mixc's fixed sample corpus (what sample:bpe-N tokenizers use).")
@click.option("--documents", type=click.IntRange(min=1), default=10000, show_default=True, help="Most documents read from --from-source.")
def tokenizer_train_command(vocab_size, out, source_name, catalog, sample, documents) -> None:
    """Train a byte-level BPE tokenizer (deterministic) and write its tokenizer.json."""
    if sample == bool(source_name):
        raise click.UsageError("give either --sample or --from-source NAME --catalog FILE")
    if sample:
        texts, origin = sample_corpus(), "the sample corpus"
    else:
        if not catalog:
            raise click.UsageError("--from-source needs --catalog FILE")
        sources, _ = load_catalog(catalog)
        if source_name not in sources:
            raise MixcError(f"{catalog}: no source named '{source_name}' (sources: {', '.join(sorted(sources))})")
        texts = source_texts(sources[source_name], documents=documents, base_dir=Path(catalog).parent)
        origin = f"source '{source_name}'"
    tokenizer = train_tokenizer(texts, vocab_size, out)
    click.echo(f"wrote {out}: byte-level BPE, {tokenizer.get_vocab_size()} tokens, trained on {origin}")


# --------------------------------------------------------------------------- train


@main.command(name="train")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--shards", required=True, type=click.Path(file_okay=False), help="The shard store `mixc build` wrote.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run folder: checkpoints/, metrics.jsonl, summary.json.")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in --out.")
@click.option("--micro-batch-size", type=click.IntRange(min=1), help="Sequences per forward pass per process, for phases without their own micro_batch_size (default: ~8192 tokens).")
@click.option("--max-steps", type=click.IntRange(min=0), help="Stop after this global step (checkpointed).")
@click.option("--checkpoint-every", type=click.IntRange(min=0), default=100, show_default=True, help="Also checkpoint at every phase end.")
@click.option("--keep", type=click.IntRange(min=1), default=3, show_default=True, help="Checkpoints to keep.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--attention", type=click.Choice(["auto", "sdpa", "flex", "varlen"]), default="auto", show_default=True,
              help="auto: varlen (flash) on a GPU that runs it, else compiled flex; sdpa on CPU.")
@click.option("--fsdp", is_flag=True, help="Shard parameters with FSDP2 (GPUs, under torchrun).")
@click.option("--compile", "compile_layers", is_flag=True,
              help="torch.compile each layer around its attention kernel (faster steps; the first step of each sequence length compiles).")
@click.option("--activation-checkpointing/--no-activation-checkpointing", default=None,
              help="Recompute each layer in backward (default: on for a phase that would not fit the GPU without it; off on CPU).")
@click.option("--threads", type=click.IntRange(min=1), help="torch CPU threads per process.")
@click.option("--seed", type=int, help="Override the recipe's seed (data order and init).")
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True),
              help="Peak TFLOP/s per device for the MFU estimate (default: known GPUs only; no MFU on CPU).")
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True, help="Data loader worker processes.")
@click.option("--log-every", type=click.IntRange(min=0), default=1, show_default=True, help="Progress line every N steps.")
@click.option("--verify-store", is_flag=True, help="Also check every token file's checksum before step 1 (reads all the shards).")
@click.option("--init-from", type=click.Path(exists=True), help="Start a new run from this checkpoint's weights (a folder, or a run: its newest).")
def train_command(recipe, shards, out, resume, micro_batch_size, max_steps, checkpoint_every, keep, device, attention, fsdp,
                  threads, seed, peak_tflops, workers, log_every, verify_store, activation_checkpointing, init_from,
                  compile_layers) -> None:
    """Train RECIPE's model through its phases on the shards (under torchrun: data parallel)."""
    from .train.loop import train  # torch: heavy, imported only by the commands that need it

    summary = train(recipe, shards, out, resume=resume, micro_batch_size=micro_batch_size, max_steps=max_steps,
                    checkpoint_every=checkpoint_every, keep=keep, device=device, attention=attention, fsdp=fsdp,
                    threads=threads, seed=seed, peak_flops=peak_tflops * 1e12 if peak_tflops else None,
                    num_workers=workers, log_every=log_every, verify_store=verify_store,
                    activation_checkpointing=activation_checkpointing, init_from=init_from, compile=compile_layers)
    if summary:
        click.echo(render_summary(summary))


# --------------------------------------------------------------------------- interop


@main.group(name="import")
def import_group() -> None:
    """Bring other tools' training configs into mixc."""


@import_group.command("nanotron")
@click.argument("configs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for recipe.yaml and mixes/.")
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False), help="Reference this catalog's sources by name instead of defining them inline.")
@click.option("--name", help="Recipe name (default: the first config's general.project).")
@click.option("--names", "naming", type=click.Choice(["read-path", "folder"]), default="read-path", show_default=True,
              help="Name sources after dataset_read_path (when given) or always after dataset_folder.")
@click.option("--model", help="The recipe's model name (default: recognized from model_config, e.g. smollm3-3b).")
def import_nanotron_command(configs, out_dir, catalog, name, naming, model) -> None:
    """Turn nanotron training configs into a recipe and one mix per data stage.

    Give the configs in training order. A config whose first data stages repeat the previous
    one's resumes that run (it replaces it, as SmolLM3's stage 2 and 3 configs do); any other
    config starts a new run (a long-context extension).
    """
    result = import_nanotron(list(configs), out_dir, catalog=catalog, name=name, naming=naming, model=model)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {result.recipe} and {len(result.mixes)} mixes in {result.recipe.parent / 'mixes'}")


class ExportGroup(click.Group):
    """`mixc export nanotron RECIPE ...`, and `mixc export CHECKPOINT --format hf OUT` when the
    first argument names no subcommand."""

    def resolve_command(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            return "checkpoint", self.commands["checkpoint"], args
        return super().resolve_command(ctx, args)


@main.group(cls=ExportGroup)
def export() -> None:
    """Write a recipe (or a checkpoint) in another tool's format.

    \b
    mixc export nanotron RECIPE ...           a recipe as nanotron data stages
    mixc export CHECKPOINT --format hf OUT    a trained checkpoint for transformers
    """


@export.command("checkpoint")
@click.argument("checkpoint", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--format", type=click.Choice(["hf"]), default="hf", show_default=True, expose_value=False,
              help="Output format (Hugging Face, the only one).")
@click.option("--yarn", "yarn_factor", type=float, help="Record YaRN RoPE scaling by this factor for inference beyond the trained length (max_position_embeddings).")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True)
def export_checkpoint_command(checkpoint, out, yarn_factor, dtype) -> None:
    """CHECKPOINT (a checkpoint folder, or a run folder: its latest) as config.json and
    model.safetensors that transformers' AutoModelForCausalLM loads."""
    import torch  # heavy: only for the commands that need it

    from .train.export import export_checkpoint  # torch

    written = export_checkpoint(checkpoint, out, yarn_factor=yarn_factor, dtype=getattr(torch, dtype),
                                warn=lambda msg: click.echo(msg, err=True))
    click.echo(f"wrote {written / 'config.json'} and {written / 'model.safetensors'}")


@export.command("nanotron")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", type=click.Path(), help="A file (one run), or a folder of NN-<run>.yaml (several runs). Default: stdout.")
@click.option("--shards", default="shards", show_default=True, help="The shard store the data stages read (one folder per source).")
@click.option("--run", help="Export only this run of the recipe.")
@click.option("--dp", type=click.IntRange(min=1), default=1, show_default=True, help="Data-parallel replicas.")
@click.option("--micro-batch-size", type=click.IntRange(min=1), default=1, show_default=True, help="Sequences per replica per micro batch.")
@click.option("--vocab-size", type=click.IntRange(min=1), help="Also write vocab_size and token_size_in_bytes (else nanotron reads them from the shards).")
def export_nanotron_command(recipe, output, shards, run, dp, micro_batch_size, vocab_size) -> None:
    """nanotron's data_stages, tokens and learning-rate blocks for each run of RECIPE.

    Gradient accumulation is derived so that sequence x micro batch x accumulation x dp is
    the recipe's global batch.
    """
    resolved = load_recipe(recipe)
    configs = export_nanotron(resolved, shards=shards, dp=dp, micro_batch_size=micro_batch_size, vocab_size=vocab_size, run=run)
    written = write_export(resolved, configs, output)
    if isinstance(written, str):
        click.echo(written, nl=False)
    else:
        for path in written:
            click.echo(f"wrote {path}", err=True)


# --------------------------------------------------------------------------- generate


@main.command(name="generate")
@click.argument("hf_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--prompt", "prompts", multiple=True, help="A prompt to continue (repeatable; default: a few).")
@click.option("--tokenizer", type=click.Path(exists=True), help="tokenizer.json, or the run folder that trained the model (default: the one `mixc export` put in HF_DIR).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--sample", is_flag=True, help="Top-k sampling instead of greedy decoding.")
def generate_command(hf_dir, prompts, tokenizer, max_new_tokens, sample) -> None:
    """Continue prompts with transformers from HF_DIR (`mixc export ... --format hf`): the round trip's last step."""
    from .train.generate import generate_texts  # transformers and torch: heavy

    for prompt, text in generate_texts(hf_dir, prompts, tokenizer=tokenizer, max_new_tokens=max_new_tokens, sample=sample):
        click.echo(f"{prompt!r} -> {text!r}")


# --------------------------------------------------------------------------- experiments: fit, propose, ablate, sweep, results

for _command in EXPERIMENT_COMMANDS:
    main.add_command(_command)


# --------------------------------------------------------------------------- eval


@main.command(name="eval")
@click.argument("target", type=click.Path(exists=True, file_okay=False))
@click.option("--step", type=click.IntRange(min=1), help="Evaluate the run's checkpoint of this step (default: the newest).")
@click.option("--shards", type=click.Path(file_okay=False), help="The shard store (default: the one the run trained on; required for a Hugging Face model).")
@click.option("--recipe", help="Hugging Face model: the recipe whose phases the store holds (default: the only one).")
@click.option("--phase", help="The phase whose sequence length and mix weights apply (default: the checkpoint's, else the last).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def eval_command(target, step, shards, recipe, phase, fmt) -> None:
    """Held-out loss and bits per byte, per source and category, of TARGET: a run or checkpoint
    folder, or a Hugging Face causal LM folder (with --shards) whose tokenizer is the store's."""
    from .train.heldout_eval import eval_checkpoint  # torch: heavy, imported only by this command

    if (Path(target) / "config.json").is_file() and not (Path(target) / "meta.json").is_file():
        if not shards:
            raise MixcError(f"{target}: a Hugging Face model is evaluated on a store's held-out shards; give --shards DIR")
        result = eval_hf(target, shards, recipe=recipe, phase=phase)
    else:
        result = eval_checkpoint(target, step=step, shards=shards, phase=phase, warn=lambda msg: click.echo(msg, err=True))
    click.echo(json.dumps(result, indent=1) if fmt == "json" else format_table(result))
