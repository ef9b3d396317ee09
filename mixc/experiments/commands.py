"""The experiment commands of the command line (`mixc fit`, `propose`, `ablate`, `sweep`,
`results`): parse options, call the experiments package, print. `mixc.cli` adds them to `mixc`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import MixcError
from ..store import source_token_counts
from .constraints import build_constraints
from .designs import _catalog_sources, sweep_designs, variants
from .fitcli import fit_table, load_fitted, mix_vector, proposal_result, run_fit
from .mixes import load_base, write_mix
from .propose import propose
from .runner import checkpoint_of
from .setup import launch, prepare, prior_vector, results, results_text


@click.command(name="fit")
@click.option("--ratios", required=True, type=click.Path(dir_okay=False), help="ratios.csv: run id, then one share column per source.")
@click.option("--metrics", required=True, type=click.Path(dir_okay=False), help="metrics.csv: run id, then one column per metric.")
@click.option("--target", required=True, help="The metrics column to predict (e.g. bpb/web, loss/mix).")
@click.option("--model", "kind", type=click.Choice(["loglinear", "quadratic", "lightgbm"]), default="quadratic", show_default=True)
@click.option("--folds", type=click.IntRange(min=2), default=5, show_default=True, help="k of the k-fold cross-validation.")
@click.option("--seed", type=int, default=0, show_default=True, help="Fold assignment (and inner CV) seed.")
@click.option("--predict", type=click.Path(dir_okay=False), help="A ratios CSV of new mixtures to predict (columns matched by name).")
@click.option("--predictions", "predict_out", type=click.Path(dir_okay=False), help="Write the predictions here (default: stdout with --format csv).")
@click.option("--test-metrics", type=click.Path(dir_okay=False), help="Metrics of the --predict runs: report Spearman and MAE on them.")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Save the fitted model as JSON (for --predict later and mixc propose).")
def fit_command(ratios, metrics, target, kind, folds, seed, predict, predict_out, test_metrics, fmt, output) -> None:
    """Fit a regression from mixture shares to a metric; print k-fold cross-validated Spearman and MAE."""
    if fmt == "csv" and not predict:
        raise MixcError("--format csv prints predictions: give --predict NEW_RATIOS.csv")
    result = run_fit(ratios, metrics, target, kind, folds, seed, predict, predict_out, test_metrics, output)
    text = result.pop("predictions_csv", None)
    if fmt == "json":
        click.echo(json.dumps(result, indent=1, sort_keys=True))
    elif fmt == "csv":
        if text is not None:
            click.echo(text, nl=False)
        click.echo(fit_table(result), err=True)
    else:
        click.echo(fit_table(result))
        if text is not None:
            click.echo(text, nl=False)


@click.command(name="propose")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False), help="A model from `mixc fit -o`.")
@click.option("--target", help="Check that the model predicts this metric.")
@click.option("--base", required=True, type=click.Path(exists=True, dir_okay=False), help="The recipe (with --phase) or mix whose sources and catalog the proposal uses.")
@click.option("--phase", help="The recipe's phase (name or stage number).")
@click.option("--min-share", "min_shares", multiple=True, help="NAME=SHARE floor for a source, category or language (repeatable).")
@click.option("--max-share", "max_shares", multiple=True, help="NAME=SHARE cap for a source, category or language (repeatable).")
@click.option("--max-epochs", type=click.FloatRange(min=0, min_open=True), help="Cap each source at this many epochs of its size.")
@click.option("--shards", type=click.Path(file_okay=False), help="Source sizes from this store's manifests (else the catalog's tokens).")
@click.option("--tokens", type=int, help="The phase's token budget (default: the recipe phase's).")
@click.option("--prior", type=click.Path(exists=True, dir_okay=False), help="A mix to stay close to (with --max-distance).")
@click.option("--max-distance", type=click.FloatRange(min=0, max=1), help="Largest total-variation distance from --prior.")
@click.option("--candidates", type=click.IntRange(min=16), default=4000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="The proposed mix YAML.")
def propose_command(model_path, target, base, phase, min_shares, max_shares, max_epochs, shards, tokens, prior, max_distance,
                    candidates, seed, fmt, output) -> None:
    """The mix minimizing the model's predicted metric under the constraints, written as a mix YAML."""
    model = load_fitted(model_path, target)
    based = load_base(base, phase)
    missing = [s for s in model.sources if s not in based.sources]
    if missing:
        raise MixcError(f"{base}: the model's source{'s' if len(missing) > 1 else ''} {', '.join(missing[:5])} not in mix '{based.mix.name}'")
    sizes = None
    if shards:
        sizes = source_token_counts(shards, based.recipe.recipe.name if based.recipe else None)
    cons = build_constraints(based, model.sources, min_shares=min_shares, max_shares=max_shares, max_epochs=max_epochs,
                             sizes=sizes, phase_tokens=tokens or based.phase_tokens,
                             prior=mix_vector(prior, model.sources) if prior else None, max_distance=max_distance)
    found = propose(model, cons, candidates=candidates, seed=seed)
    shares = dict(zip(model.sources, found.shares))
    out = write_mix(output, Path(output).stem, shares, based, f"proposed by mixc propose: minimizes predicted {model.target}")
    result = proposal_result(model, found, out)
    if fmt == "json":
        click.echo(json.dumps(result, indent=1, sort_keys=True))
        return
    prior_text = f" (prior: {result['prior_predicted']:.6g})" if result["prior_predicted"] is not None else ""
    click.echo(f"predicted {model.target}: {found.predicted:.6g}{prior_text}  ({found.evaluated} mixtures evaluated)")
    click.echo("active constraints: " + ("; ".join(found.active) if found.active else "none"))
    if found.warning:
        click.echo(f"warning: {found.warning}", err=True)
    click.echo(f"wrote {out}")


# --------------------------------------------------------------------------- ablate, sweep, results


def _experiment_options(f):
    for option in reversed([
        click.option("--out", required=True, type=click.Path(file_okay=False), help="The experiment folder (mixes/, recipes/, runs/, CSVs)."),
        click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True, help="Runs per design, seeds 0..N-1."),
        click.option("--steps", type=click.IntRange(min=1), help="Steps per proxy run (default: the phase's)."),
        click.option("--from", "from_run", help="Annealed: start every run from RUN@STEP's checkpoint weights (RUN alone: its newest)."),
        click.option("--shards", default="shards", show_default=True, type=click.Path(file_okay=False), help="The shard store."),
        click.option("--sample", is_flag=True, help="Build from the offline sample data (mixc build --sample)."),
        click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch threads per run."),
        click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True),
        click.option("--parallel", type=click.IntRange(min=1), default=1, show_default=True, help="local: runs at once."),
        click.option("--ray-cpus", type=float, default=1.0, show_default=True, help="ray: CPUs requested per run."),
        click.option("--gpus", type=float, default=0.0, show_default=True, help="ray / slurm: GPUs per run."),
        click.option("--slurm-partition"), click.option("--slurm-time", default="04:00:00", show_default=True),
        click.option("--slurm-env", help="slurm: shell line activating mixc's environment (default: this venv's PATH)."),
        click.option("--prepare-only", is_flag=True, help="Write the mixes, recipes and experiment.json; run nothing."),
    ]):
        f = option(f)
    return f


def _run_experiment(kind, base, designs, descriptions, o, catalog_sources=None) -> None:
    folder = Path(o["out"])
    build_args = ["--sample"] if o["sample"] else []
    init_from = checkpoint_of(o["from_run"]) if o["from_run"] else None
    plan = prepare(kind, base, designs, folder, seeds=o["seeds"], steps=o["steps"], shards=o["shards"], build_args=build_args,
                   train_args=["--threads", str(o["threads"])], descriptions=descriptions, catalog_sources=catalog_sources,
                   init_from=init_from)
    click.echo(f"{len(designs)} designs x {o['seeds']} seeds in {folder} (mixes/, recipes/, runs/)")
    if o["prepare_only"]:
        return
    done = launch(plan, folder, o["executor"], o["parallel"], echo=click.echo,
                  slurm={"partition": o["slurm_partition"], "time": o["slurm_time"], "gpus": int(o["gpus"]), "env": o["slurm_env"],
                         "cpus": o["threads"]}, ray_resources={"cpus": o["ray_cpus"], "gpus": o["gpus"]})
    if done is not None:
        out = results(folder)
        click.echo(results_text(out))
        if out["failed"]:
            raise MixcError(f"{len(out['failed'])} run(s) failed; see their run.log and FAILED files")


@click.command(name="ablate")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--phase", required=True, help="The phase whose mix is varied (name or stage number).")
@click.option("--vary", "varies", multiple=True, required=True,
              help="NAME=2x (scale), NAME=0.3 (set share), drop:NAME, swap:A=B; NAME a source, category or language. Repeatable.")
@_experiment_options
def ablate_command(recipe, phase, varies, **o) -> None:
    """One proxy run per --vary (and the baseline) x seed; per-metric deltas against the baseline."""
    base = load_base(recipe, phase)
    if base.recipe is None:
        raise MixcError(f"{recipe} is a mix; ablate takes a recipe (the proxy runs train its --phase)")
    vs = variants(base, list(varies))
    _run_experiment("ablate", base, {v.name: v.shares for v in vs},
                    {v.name: f"ablation of {base.mix.name}: {v.vary or 'baseline'}" for v in vs}, o, _catalog_sources(base))


@click.command(name="sweep")
@click.argument("recipe", type=click.Path(exists=True, dir_okay=False))
@click.option("--phase", required=True, help="The phase whose mix is swept (name or stage number).")
@click.option("--runs", type=click.IntRange(min=1), required=True, help="Number of random mixtures.")
@click.option("--design", type=click.Choice(["dirichlet", "regmix"]), default="regmix", show_default=True)
@click.option("--prior", help="Centre of the draws: 'tokens' (shares by source size) or a mix file (default: the phase's mix).")
@click.option("--max-epochs", type=click.FloatRange(min=0, min_open=True), help="Cap each source at this many epochs of its size.")
@click.option("--min-share", "min_shares", multiple=True, help="NAME=SHARE floor (source, category or language; repeatable).")
@click.option("--max-share", "max_shares", multiple=True, help="NAME=SHARE cap (source, category or language; repeatable).")
@click.option("--design-seed", type=int, default=0, show_default=True, help="Seed of the random designs.")
@_experiment_options
def sweep_command(recipe, phase, runs, design, prior, max_epochs, min_shares, max_shares, design_seed, **o) -> None:
    """Random mixtures around a prior (RegMix-style), each a proxy run; results as ratios.csv + metrics.csv."""
    base = load_base(recipe, phase)
    if base.recipe is None:
        raise MixcError(f"{recipe} is a mix; sweep takes a recipe (the proxy runs train its --phase)")
    sources = list(base.sources)
    sizes = None
    if max_epochs is not None or prior == "tokens":
        sizes = source_token_counts(o["shards"], base.recipe.recipe.name) if Path(o["shards"]).is_dir() else None
    centre = prior_vector(base, sources, prior, sizes)
    cons = build_constraints(base, sources, min_shares=min_shares, max_shares=max_shares, max_epochs=max_epochs, sizes=sizes,
                             phase_tokens=(o["steps"] * base.recipe.recipe.global_batch_tokens) if o["steps"] else base.phase_tokens)
    draws = sweep_designs(cons, centre, runs, design, design_seed)
    width = len(str(runs - 1))
    designs = {f"d{i:0{width}d}": dict(zip(sources, x)) for i, x in enumerate(draws)}
    _run_experiment("sweep", base, designs, {d: f"{design} design {d} around the prior (seed {design_seed})" for d in designs}, o)


@click.command(name="results")
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def results_command(folder, fmt) -> None:
    """ratios.csv + metrics.csv of an experiment's finished runs (and an ablation's report)."""
    out = results(Path(folder))
    click.echo(json.dumps(out, indent=1) if fmt == "json" else results_text(out))


COMMANDS = [fit_command, propose_command, ablate_command, sweep_command, results_command]
