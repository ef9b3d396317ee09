"""The `mixc` command line: parse arguments, call one library function, print.

Every user-facing failure is a `MixcError`: one line on stderr, exit status 1, no
traceback. Usage errors (unknown options, missing paths) exit 2, as click does.
"""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .errors import MixcError
from .locyaml import SpecErrors


class MixcGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except SpecErrors as exc:
            for err in exc.errors:
                click.echo(str(err), err=True)
            sys.exit(1)
        except MixcError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
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
    from .validate import validate_paths

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
    from .spec import json_schemas

    schemas = json_schemas()
    click.echo(json.dumps(schemas if kind == "all" else schemas[kind], indent=2))


# --------------------------------------------------------------------------- plan and report

REPORT_FORMATS = ["table", "json", "markdown", "csv", "html", "png"]


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True))
@click.option("--format", "fmt", type=click.Choice(REPORT_FORMATS), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to a file instead of stdout.")
@click.option("--tokens", help="Token budget per mix when reporting bare mixes (e.g. 1T).")
@click.option("--epoch-warning", type=float, help="Warn when a source is seen more epochs than this (default: the recipe's, else 4).")
@click.option("--shards", type=click.Path(exists=True, file_okay=False), help="Shard store: use real source sizes from its manifests.")
def report(paths, fmt, output, tokens, epoch_warning, shards) -> None:
    """Explain a curriculum: per-phase shares, budgets, rollups, boundaries and epochs.

    PATHS is one recipe (default: recipes/smollm3-3b.yaml) or one or more mixes.
    """
    from .project import load_plan
    from .report import render
    from .spec import parse_count

    source_tokens = _manifest_tokens(shards) if shards else None
    budget = _count_option(parse_count, tokens, "--tokens")
    plan = load_plan(list(paths), tokens=budget, epoch_warning=epoch_warning, source_tokens=source_tokens)
    if fmt in ("html", "png") and not output:
        raise click.UsageError(f"--format {fmt} needs -o FILE")
    result = render(plan, fmt, output)
    if result is not None:
        _emit(result, output)
    if fmt == "table":
        for w in plan.warnings:
            click.echo(f"warning: {w}", err=True)


def _count_option(parse, value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from None


def _manifest_tokens(shards: str) -> dict[str, int]:
    from .build.store import source_token_counts

    return source_token_counts(shards)


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
    from pathlib import Path

    from .diff import diff_phases, render_diff
    from .project import default_recipe, load_plan

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
    from .interop.nanotron import import_nanotron

    result = import_nanotron(list(configs), out_dir, catalog=catalog, name=name, naming=naming, model=model)
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"wrote {result.recipe} and {len(result.mixes)} mixes in {result.recipe.parent / 'mixes'}")


@main.group()
def export() -> None:
    """Write a recipe (or a checkpoint) in another tool's format."""


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
    from .interop.nanotron import export_nanotron, write_export
    from .spec import load_recipe

    resolved = load_recipe(recipe)
    configs = export_nanotron(resolved, shards=shards, dp=dp, micro_batch_size=micro_batch_size, vocab_size=vocab_size, run=run)
    written = write_export(resolved, configs, output)
    if isinstance(written, str):
        click.echo(written, nl=False)
    else:
        for path in written:
            click.echo(f"wrote {path}", err=True)
