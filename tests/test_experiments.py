"""mixc ablate / sweep / fit / propose: designs, constraints, fits, the runner and the CLI."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from mixc.errors import MixcError
from mixc.experiments import runner
from mixc.experiments.constraints import build_constraints
from mixc.experiments.csvio import format_table, read_table, write_table
from mixc.experiments.designs import apply_vary, sweep_designs, variants
from mixc.experiments.fit import average_ranks, cross_validate, fit, spearman
from mixc.experiments.mixes import load_base, write_mix
from mixc.experiments.setup import prepare, results
from mixc.spec import load_mix
from mixc.validate import validate_paths

REGMIX = Path(__file__).parent / "fixtures" / "regmix"
PILE_CC = "metric/the_pile_pile_cc_val_loss"


@pytest.fixture
def recipe(tmp_path) -> Path:
    return write_recipe(tmp_path)


def write_recipe(tmp_path: Path) -> Path:
    """A catalog of five sources (two web languages, code, two math), a relative mix and a one-phase recipe."""
    (tmp_path / "sources.yaml").write_text(textwrap.dedent("""\
        sources:
          web-a: {category: web, dataset: org/web-a, tokens: 100000}
          web-b: {category: web, language: fra_Latn, dataset: org/web-b, tokens: 50000}
          code-a: {category: code, dataset: org/code-a, tokens: 200000}
          math-a: {category: math, dataset: org/math-a, tokens: 2000}
          math-b: {category: math, dataset: org/math-b, tokens: 400000}
          spare: {category: web, dataset: org/spare, tokens: 9000}
        """))
    (tmp_path / "mix.yaml").write_text(textwrap.dedent("""\
        name: decay
        catalog: sources.yaml
        weights: relative
        sources: {web-a: 4, web-b: 2, code-a: 2, math-a: 1, math-b: 1}
        """))
    (tmp_path / "recipe.yaml").write_text(textwrap.dedent("""\
        name: exp
        tokenizer: sample:bpe-512
        model: smollm3-test
        global_batch_tokens: 2048
        schedule: {type: cosine, peak_lr: 1.0e-3, warmup_steps: 1}
        phases:
          - {name: decay, mix: mix.yaml, steps: 10, sequence_length: 256, rope_theta: 10000}
        """))
    return tmp_path / "recipe.yaml"


def shares_of(path) -> dict[str, float]:
    mix = load_mix(path)
    total = math.fsum(w for _, w in mix.entries)
    return {s.name: w / total for s, w in mix.entries}


# --------------------------------------------------------------------------- variants


@pytest.mark.parametrize("vary, expected", [
    ("math=2x", {"web-a": 0.4 / 1.2, "web-b": 0.2 / 1.2, "code-a": 0.2 / 1.2, "math-a": 0.2 / 1.2, "math-b": 0.2 / 1.2}),
    ("code=0.3", {"web-a": 0.4 * 0.7 / 0.8, "web-b": 0.2 * 0.7 / 0.8, "code-a": 0.3, "math-a": 0.1 * 0.7 / 0.8, "math-b": 0.1 * 0.7 / 0.8}),
    ("drop:web-b", {"web-a": 0.5, "code-a": 0.25, "math-a": 0.125, "math-b": 0.125}),
    ("swap:math-a=spare", {"web-a": 0.4, "web-b": 0.2, "code-a": 0.2, "spare": 0.1, "math-b": 0.1}),
    ("swap:math-a=web-b", {"web-a": 0.4, "web-b": 0.3, "code-a": 0.2, "math-b": 0.1}),
    ("fra_Latn=0.5x", {"web-a": 0.4 / 0.9, "web-b": 0.1 / 0.9, "code-a": 0.2 / 0.9, "math-a": 0.1 / 0.9, "math-b": 0.1 / 0.9}),
    ("math-b=0", {"web-a": 0.4 / 0.9, "web-b": 0.2 / 0.9, "code-a": 0.2 / 0.9, "math-a": 0.1 / 0.9}),
])
def test_each_vary_gives_exact_renormalized_shares_and_a_strictly_valid_mix(recipe, tmp_path, vary, expected):
    base = load_base(recipe, "decay")
    v = apply_vary(base, vary)
    assert v.shares.keys() == expected.keys()
    for s, share in expected.items():
        assert v.shares[s] == pytest.approx(share, abs=1e-12)
    out = write_mix(tmp_path / "out" / f"{v.name}.yaml", v.name, v.shares, base, "test")
    result = validate_paths([str(out)], strict=True)
    assert not result.errors, result.errors
    for s, share in shares_of(out).items():
        assert share == pytest.approx(expected[s], abs=1e-9)
    assert math.fsum(yaml.safe_load(out.read_text())["sources"].values()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("vary, message", [
    ("nope=2x", "'nope' is not a source, a category"),
    ("swap:web-a=ghost", "'ghost' is neither a source"),
    ("code=1.5", "a share must be in [0, 1]"),
    ("code=abc", "'abc' is not a number"),
    ("web-a", "expected NAME=2x"),
])
def test_a_bad_vary_is_one_clear_error(recipe, vary, message):
    with pytest.raises(MixcError, match=None) as exc:
        apply_vary(load_base(recipe, "decay"), vary)
    assert message in str(exc.value)


def test_variants_start_with_the_baseline_and_refuse_duplicates(recipe):
    base = load_base(recipe, "decay")
    vs = variants(base, ["math=2x", "drop:web-b"])
    assert [v.name for v in vs] == ["baseline", "math-x2", "drop-web-b"]
    assert vs[0].shares == pytest.approx({"web-a": 0.4, "web-b": 0.2, "code-a": 0.2, "math-a": 0.1, "math-b": 0.1})
    with pytest.raises(MixcError, match="already asked for"):
        variants(base, ["math=2x", "math=2x"])


# --------------------------------------------------------------------------- sweep designs and constraints


def test_sweep_designs_respect_epoch_caps_floors_and_caps_and_are_seeded(recipe):
    base = load_base(recipe, "decay")
    sources = list(base.sources)
    cons = build_constraints(base, sources, max_epochs=1.0, phase_tokens=base.phase_tokens * 10,
                             min_shares=("web=0.3",), max_shares=("code-a=0.25",))
    # math-a holds 2000 tokens of a 204800-token phase: at most 1 epoch is a share of 2000/204800
    assert cons.hi[sources.index("math-a")] == pytest.approx(2000 / 204800)
    prior = np.array([base.shares[s] for s in sources])
    cons_prior = build_constraints(base, sources, max_epochs=1.0, phase_tokens=base.phase_tokens * 10,
                                   min_shares=("web=0.3",), max_shares=("code-a=0.25",))
    draws = sweep_designs(cons_prior, prior, 40, "regmix", seed=7)
    assert len(draws) == 40
    for x in draws:
        assert math.fsum(x) == pytest.approx(1.0, abs=1e-9)
        assert not cons.violations(x)
        assert x[sources.index("math-a")] <= 2000 / 204800 + 1e-6
        assert x[sources.index("web-a")] + x[sources.index("web-b")] >= 0.3 - 1e-6
        assert x[sources.index("code-a")] <= 0.25 + 1e-6
    again = sweep_designs(cons_prior, prior, 40, "regmix", seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(draws, again))
    other = sweep_designs(cons_prior, prior, 40, "regmix", seed=8)
    assert not all(np.array_equal(a, b) for a, b in zip(draws, other))


def test_impossible_constraints_are_refused_before_any_draw(recipe):
    base = load_base(recipe, "decay")
    with pytest.raises(MixcError, match="the caps sum to"):
        build_constraints(base, list(base.sources), max_epochs=0.001, phase_tokens=10**9)
    with pytest.raises(MixcError, match="floors sum to"):
        build_constraints(base, list(base.sources), min_shares=("web-a=0.7", "code-a=0.5"))


# --------------------------------------------------------------------------- CSVs and statistics


def test_csv_round_trip_keeps_every_float_and_ids(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.random((7, 3))
    ids = [f"run-{i}" for i in range(7)]
    path = write_table(tmp_path / "r.csv", "run", ["a", "b/c", "d"], ids, values.tolist())
    table = read_table(path)
    assert table.ids == ids and table.columns == ["a", "b/c", "d"]
    assert np.array_equal(table.values, values)
    assert np.array_equal(table.select(["d", "a"]), values[:, [2, 0]])


def test_a_bad_csv_cell_is_located(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("run,loss\nr1,1.5\nr2,oops\n")
    with pytest.raises(MixcError, match=r"m.csv:3: column 'loss': 'oops' is not a number"):
        read_table(path)


def test_spearman_uses_average_ranks_for_ties():
    assert average_ranks(np.array([3.0, 1.0, 3.0, 2.0])).tolist() == [3.5, 1.0, 3.5, 2.0]
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    b = np.array([2.0, 1.0, 4.0, 4.0, 6.0])
    # Pearson's r of the average ranks [1, 2.5, 2.5, 4, 5] and [2, 1, 3.5, 3.5, 5], by hand: 7.25 / sqrt(9.5 * 9.5)
    assert spearman(a, b) == pytest.approx(7.25 / 9.5)
    assert spearman(a, -a) == pytest.approx(-1.0)


# --------------------------------------------------------------------------- fits


def test_loglinear_fit_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(4), size=300)
    t = np.array([1.0, -0.5, 0.3, -0.8])  # sum 0: the gauge the fit reports
    y = 2.0 + 1.5 * np.exp(X @ t) + rng.normal(0, 1e-4, size=300)
    p = fit("loglinear", X, y, ["a", "b", "c", "d"], "loss").params
    assert p["c"] == pytest.approx(2.0, abs=0.02)
    assert p["k"] == pytest.approx(1.5, abs=0.02)
    assert np.allclose(p["t"], t, atol=0.02)


def test_quadratic_fit_recovers_a_quadratic_surface():
    rng = np.random.default_rng(2)
    X = rng.dirichlet(np.ones(4), size=200)
    y = 3 + X @ np.array([0.5, -1.0, 0.2, 0.0]) + 2.0 * X[:, 0] * X[:, 1] - 1.5 * X[:, 2] ** 2
    model = fit("quadratic", X, y, list("abcd"), "loss")
    fresh = rng.dirichlet(np.ones(4), size=50)
    truth = 3 + fresh @ np.array([0.5, -1.0, 0.2, 0.0]) + 2.0 * fresh[:, 0] * fresh[:, 1] - 1.5 * fresh[:, 2] ** 2
    assert np.max(np.abs(model.predict(fresh) - truth)) < 1e-3
    assert cross_validate("quadratic", X, y)["spearman"] > 0.999


def _mixc(*args, cwd=None):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", "from mixc.cli import main; main()", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd)


def test_regmix_lightgbm_fit_ranks_held_out_runs_and_cross_validates(tmp_path):
    pytest.importorskip("lightgbm")
    proc = _mixc("fit", "--ratios", REGMIX / "train_mixture_1m.csv", "--metrics", REGMIX / "train_pile_loss_1m.csv",
                 "--target", PILE_CC, "--model", "lightgbm", "--predict", REGMIX / "test_mixture_1m.csv",
                 "--test-metrics", REGMIX / "test_pile_loss_1m.csv", "--predictions", tmp_path / "p.csv",
                 "-o", tmp_path / "m.json", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runs"] == 512 and out["test"]["runs"] == 256
    assert out["test"]["spearman"] >= 0.97  # RegMix's own notebook: 0.989
    assert out["cv"]["spearman"] >= 0.95
    predictions = read_table(tmp_path / "p.csv")
    assert len(predictions.ids) == 256
    model = json.loads((tmp_path / "m.json").read_text())
    assert model["model"] == "lightgbm" and model["params"]["model"].startswith("tree")


def test_regmix_quadratic_and_loglinear_are_weaker_but_reasonable():
    r, m = read_table(REGMIX / "train_mixture_1m.csv"), read_table(REGMIX / "train_pile_loss_1m.csv")
    rt, mt = read_table(REGMIX / "test_mixture_1m.csv"), read_table(REGMIX / "test_pile_loss_1m.csv")
    y, yt = m.column(PILE_CC)[m.rows_for(r.ids)], mt.column(PILE_CC)[mt.rows_for(rt.ids)]
    for kind in ("quadratic", "loglinear"):
        model = fit(kind, r.values, y, r.columns, PILE_CC)
        assert spearman(model.predict(rt.select(r.columns)), yt) > 0.9


def test_predict_refuses_a_ratios_file_without_a_source_column(tmp_path):
    text = (REGMIX / "test_mixture_1m.csv").read_text().splitlines()
    header = text[0].split(",")
    drop = header.index("train_the_pile_arxiv")
    (tmp_path / "new.csv").write_text("\n".join(",".join(c for i, c in enumerate(line.split(",")) if i != drop) for line in text[:5]))
    proc = _mixc("fit", "--ratios", REGMIX / "train_mixture_1m.csv", "--metrics", REGMIX / "train_pile_loss_1m.csv",
                 "--target", PILE_CC, "--model", "loglinear", "--predict", tmp_path / "new.csv")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0 and "the model needs column train_the_pile_arxiv" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- propose


def test_propose_respects_every_constraint_and_writes_a_strict_mix(recipe, tmp_path):
    base = load_base(recipe, "decay")
    sources = list(base.sources)
    rng = np.random.default_rng(3)
    X = rng.dirichlet(np.ones(len(sources)), size=120)
    # math-a is the best data by far, code-a the worst: the unconstrained optimum is all math-a
    y = 3.0 + X @ np.array([0.3, 0.4, 1.0, -1.0, 0.1])
    ids = [f"r{i}" for i in range(len(y))]
    write_table(tmp_path / "ratios.csv", "run", sources, ids, X.tolist())
    write_table(tmp_path / "metrics.csv", "run", ["loss/mix"], ids, [[v] for v in y])
    assert _mixc("fit", "--ratios", tmp_path / "ratios.csv", "--metrics", tmp_path / "metrics.csv", "--target", "loss/mix",
                 "--model", "quadratic", "-o", tmp_path / "model.json").returncode == 0
    proc = _mixc("propose", "--model", tmp_path / "model.json", "--target", "loss/mix", "--base", recipe, "--phase", "decay",
                 "--max-epochs", "2", "--tokens", "100000", "--min-share", "web=0.4", "--max-share", "code-a=0.05",
                 "--min-share", "math-b=0.02", "--prior", tmp_path / "mix.yaml", "--max-distance", "0.5",
                 "--candidates", "400", "--format", "json", "-o", tmp_path / "proposed.yaml")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    shares = shares_of(tmp_path / "proposed.yaml")
    assert not validate_paths([str(tmp_path / "proposed.yaml")], strict=True).errors
    assert shares.get("math-a", 0) <= 2 * 2000 / 100000 + 1e-6  # 2 epochs of 2000 tokens in a 100000-token phase
    assert shares.get("web-a", 0) + shares.get("web-b", 0) >= 0.4 - 1e-6
    assert shares.get("code-a", 0) <= 0.05 + 1e-6
    assert shares.get("math-b", 0) >= 0.02 - 1e-6
    prior = {"web-a": 0.4, "web-b": 0.2, "code-a": 0.2, "math-a": 0.1, "math-b": 0.1}
    assert 0.5 * sum(abs(shares.get(s, 0) - prior[s]) for s in prior) <= 0.5 + 1e-6
    assert out["predicted"] < out["prior_predicted"]
    assert any("math-a at its cap" in a for a in out["active"])


# --------------------------------------------------------------------------- runner

FAKE_MIXC = textwrap.dedent("""\
    import json, os, sys
    from pathlib import Path
    args = sys.argv[1:]
    if args[0] == "build":
        sys.exit(0)
    out = Path(args[args.index("--out") + 1])
    with open(os.environ["RUN_LOG"], "a") as f:
        f.write(out.name + "\\n")
    if os.environ.get("FAIL_DESIGN") and out.name.startswith(os.environ["FAIL_DESIGN"]):
        print("error: simulated failure", file=sys.stderr)
        sys.exit(3)
    seed = int(args[args.index("--seed") + 1])
    loss = 2.0 + 0.01 * seed + (0.5 if "math" in out.name else 0.0)
    heldout = {"sources": {"web-a": {"category": "web", "loss": loss, "bpb": loss / 2}},
               "categories": {"web": {"loss": loss, "bpb": loss / 2}}, "mix": {"loss": loss + 1, "bpb": loss / 2 + 1}}
    (out / "summary.json").write_text(json.dumps({"loss_last": loss, "heldout": heldout}))
    """)


def _fake(tmp_path, monkeypatch, fail: str = ""):
    script = tmp_path / "fake_mixc.py"
    script.write_text(FAKE_MIXC)
    monkeypatch.setenv("RUN_LOG", str(tmp_path / "ran.txt"))
    monkeypatch.setenv("FAIL_DESIGN", fail)
    return [sys.executable, str(script)]


def _experiment(recipe, tmp_path, seeds=3):
    base = load_base(recipe, "decay")
    vs = variants(base, ["math=2x", "drop:web-b"])
    return prepare("ablate", base, {v.name: v.shares for v in vs}, tmp_path / "exp", seeds=seeds, steps=2,
                   shards=str(tmp_path / "store"), build_args=[], train_args=[], descriptions={v.name: v.vary for v in vs})


def test_runner_skips_finished_runs_reports_failures_and_retries_them(recipe, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = load_base(recipe, "decay")
    vs = variants(base, ["math=2x", "drop:web-b"])
    # relative --out and --shards: experiment.json keeps absolute paths, so results work from any folder
    plan = prepare("ablate", base, {v.name: v.shares for v in vs}, Path("exp"), seeds=3, steps=2, shards="store",
                   build_args=[], train_args=[], descriptions={v.name: v.vary for v in vs})
    assert all(Path(r["folder"]).is_absolute() for r in plan["runs"]) and Path(plan["shards"]).is_absolute()
    monkeypatch.chdir(recipe.parent.parent)
    assert not validate_paths([str(tmp_path / "exp" / "recipes"), str(tmp_path / "exp" / "mixes")], strict=True).errors
    mixc = _fake(tmp_path, monkeypatch, fail="drop-web-b")
    outcome = runner.run_local(plan, parallel=2, mixc=mixc, echo=lambda _: None)
    assert [k for k, v in outcome.items() if v == "failed"] == ["drop-web-b-s0", "drop-web-b-s1", "drop-web-b-s2"]
    assert "simulated failure" in (tmp_path / "exp" / "runs" / "drop-web-b-s0" / "FAILED").read_text()
    out = results(tmp_path / "exp")
    assert out["failed"] == ["drop-web-b-s0", "drop-web-b-s1", "drop-web-b-s2"]
    (tmp_path / "ran.txt").unlink()
    monkeypatch.setenv("FAIL_DESIGN", "")
    outcome = runner.run_local(plan, parallel=2, mixc=mixc, echo=lambda _: None)
    assert sorted((tmp_path / "ran.txt").read_text().split()) == ["drop-web-b-s0", "drop-web-b-s1", "drop-web-b-s2"]
    assert outcome["baseline-s0"] == "done (skipped)" and outcome["drop-web-b-s1"] == "done"
    out = results(tmp_path / "exp")
    ratios, metrics = read_table(out["ratios"]), read_table(out["metrics"])
    assert len(ratios.ids) == 9
    assert metrics.columns == ["bpb/mix", "bpb/web", "bpb/web-a", "loss/mix", "loss/train", "loss/web", "loss/web-a"]
    assert metrics.column("loss/mix")[metrics.ids.index("math-x2-s1")] == pytest.approx(2.0 + 0.01 + 0.5 + 1)
    assert ratios.select(["web-a"])[ratios.ids.index("drop-web-b-s0")][0] == pytest.approx(0.5)
    math_x2 = next(v for v in out["report"]["variants"] if v["design"] == "math-x2")
    row = next(r for r in math_x2["metrics"] if r["metric"] == "loss/train")
    assert row["delta"] == pytest.approx(0.5) and row["effect"] == "worse"  # 0.5 >> 2 x seed sd 0.01
    if "report_png" in out:  # matplotlib installed
        assert Path(out["report_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    drop = next(v for v in out["report"]["variants"] if v["design"] == "drop-web-b")
    assert next(r for r in drop["metrics"] if r["metric"] == "loss/train")["effect"] is None


def test_slurm_script_is_a_job_array_of_the_unfinished_runs(recipe, tmp_path, monkeypatch):
    plan = _experiment(recipe, tmp_path, seeds=2)
    done = Path(plan["runs"][0]["folder"])
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    script = runner.slurm_script(plan, tmp_path / "exp", "gpu", "01:00:00", 4, 1, "source env.sh")
    assert "#SBATCH --array=0-4" in script and "#SBATCH --partition=gpu" in script and "#SBATCH --gpus-per-task=1" in script
    assert "baseline-s0" not in script and "baseline-s1" in script
    assert script.count("mixc train") == 5 and script.count("flock") == 5
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


@pytest.mark.slow  # starting a local Ray takes ~10 s
def test_ray_path_runs_every_unfinished_run_as_a_task(recipe, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    plan = _experiment(recipe, tmp_path, seeds=1)
    mixc = _fake(tmp_path, monkeypatch)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        outcome = runner.run_ray(plan, cpus=1, gpus=0, echo=lambda _: None, mixc=mixc)
    finally:
        ray.shutdown()
    assert outcome == {"baseline-s0": "done", "math-x2-s0": "done", "drop-web-b-s0": "done"}


def test_format_table_writes_empty_cells_for_missing_metrics():
    text = format_table("run", ["a", "b"], ["r1"], [[1.0, float("nan")]])
    assert text == "run,a,b\nr1,1.0,\n"


# --------------------------------------------------------------------------- real runs (tiny model, a few steps)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The fixture recipe built from the offline sample data, and a base run of 2 steps with a checkpoint."""
    tmp_path = tmp_path_factory.mktemp("built")
    recipe = write_recipe(tmp_path)
    store = tmp_path / "store"
    proc = _mixc("build", "--recipe", recipe, "--out", store, "--sample", "--sample-documents", "40", "--quiet", "--workers", "1")
    assert proc.returncode == 0, proc.stderr
    proc = _mixc("train", recipe, "--shards", store, "--out", tmp_path / "base", "--max-steps", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    return recipe, store, tmp_path / "base"


def test_init_from_starts_a_fresh_run_on_the_checkpoint_weights(built, tmp_path):
    import torch

    from mixc.train import checkpoint
    from mixc.train import dist as distributed
    from mixc.train.loop import Trainer

    recipe, built, base_run = built
    base = load_base(recipe, "decay")
    v = apply_vary(base, "math=2x")
    ckpt = runner.checkpoint_of(f"{base_run}@2")
    plan = prepare("ablate", base, {"math-x2": v.shares}, tmp_path / "exp", seeds=1, steps=2, shards=str(built),
                   build_args=["--sample", "--sample-documents", "40"], train_args=[], descriptions={"math-x2": "x"}, init_from=ckpt)
    assert plan["train_args"] == ["--init-from", ckpt]
    derived = plan["runs"][0]["recipe"]
    assert _mixc("build", "--recipe", derived, "--out", built, "--sample", "--sample-documents", "40", "--quiet").returncode == 0
    world = distributed.setup("cpu", False)
    try:
        trainer = Trainer(Path(derived), built, tmp_path / "annealed", world, resume=False, micro_batch_size=None, max_steps=None,
                          checkpoint_every=0, keep=1, attention="sdpa", seed=None, fsdp=False, peak_flops=None, num_workers=0,
                          log_every=0, verify_store=False, log=lambda _m: None, on_step=None, init_from=ckpt)
        trainer.setup()
        saved = checkpoint.load(ckpt)[0]["model"]
        ours = trainer.model.state_dict()
        assert ours.keys() == saved.keys() and all(torch.equal(ours[k], saved[k]) for k in ours)
        assert trainer.start_step == 0  # a fresh run: its own schedule and data from step 1
    finally:
        distributed.teardown(world)
    with pytest.raises(MixcError, match="no checkpoint of step 7"):
        runner.checkpoint_of(f"{base_run}@7")


@pytest.mark.slow  # two builds and two trainings, each a fresh process
def test_ablate_cli_runs_annealed_variants_and_reruns_nothing(built, tmp_path):
    recipe, built, base_run = built
    args = ["ablate", recipe, "--phase", "decay", "--from", f"{base_run}@2", "--vary", "code=0.5", "--steps", "2",
            "--shards", built, "--sample", "--out", tmp_path / "abl"]
    proc = _mixc(*args)
    assert proc.returncode == 0, proc.stderr
    assert "baseline-s0: done" in proc.stdout and "code-0.5-s0: done" in proc.stdout
    metrics = read_table(tmp_path / "abl" / "metrics.csv")
    assert metrics.ids == ["baseline-s0", "code-0.5-s0"] and "loss/train" in metrics.columns
    # the runs' in-loop held-out evaluation: per source, per category and for the mix
    assert {"bpb/web-a", "bpb/code-a", "bpb/web", "bpb/code", "bpb/mix"} <= set(metrics.columns)
    assert np.all(np.isfinite(metrics.select(["bpb/web-a", "bpb/code"])))
    assert read_table(tmp_path / "abl" / "ratios.csv").select(["code-a"])[1][0] == pytest.approx(0.5)
    again = _mixc(*args)
    assert again.returncode == 0 and "done" not in again.stdout.replace("done (skipped)", "")


def test_sweep_cli_writes_strict_mixes_within_epoch_caps_and_the_same_designs_again(recipe, tmp_path):
    args = ["sweep", recipe, "--phase", "decay", "--runs", "6", "--max-epochs", "1", "--steps", "50", "--max-share", "code=0.3",
            "--prior", "tokens", "--out", tmp_path / "sw", "--prepare-only"]
    proc = _mixc(*args)
    assert proc.returncode == 0, proc.stderr
    mixes = sorted((tmp_path / "sw" / "mixes").glob("*.yaml"))
    assert [m.stem for m in mixes] == ["d0", "d1", "d2", "d3", "d4", "d5"]
    assert not validate_paths([str(tmp_path / "sw")], strict=True).errors
    phase_tokens = 50 * 2048
    sizes = {"web-a": 100000, "web-b": 50000, "code-a": 200000, "math-a": 2000, "math-b": 400000}
    first = {m.stem: shares_of(m) for m in mixes}
    for shares in first.values():
        for s, share in shares.items():
            assert share <= sizes[s] / phase_tokens + 1e-6  # one epoch at most
        assert shares.get("code-a", 0) <= 0.3 + 1e-6
    plan = runner.read_plan(tmp_path / "sw")
    assert [r["design"] for r in plan["runs"]] == ["d0", "d1", "d2", "d3", "d4", "d5"]
    recipe_text = yaml.safe_load((tmp_path / "sw" / "recipes" / "d3.yaml").read_text())
    assert recipe_text["name"] == "exp-d3" and recipe_text["phases"][0]["steps"] == 50
    assert _mixc(*args).returncode == 0  # same seed: the same designs, so the folder is accepted again
    assert {m.stem: shares_of(m) for m in mixes} == first
    other = _mixc(*args[:-3], "--design-seed", "5", "--out", tmp_path / "sw", "--prepare-only")
    assert other.returncode == 1 and "holds an experiment with other designs" in other.stderr
