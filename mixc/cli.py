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
