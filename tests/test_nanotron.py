"""nanotron interop: importing SmolLM3's published configs, exporting recipes, the round trip."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from spec_fixtures import REPO, run_cli, write_project

from mixc.interop.nanotron import guess_category, guess_language, source_name
from mixc.locyaml import load_file
from mixc.plan import lr_at, plan_recipe
from mixc.spec import Schedule, load_recipe

FIXTURES = Path(__file__).parent / "fixtures" / "nanotron"
STAGE1, STAGE3 = FIXTURES / "stage1_8T.yaml", FIXTURES / "stage3_9T_11T.yaml"
LC32, LC64 = FIXTURES / "long_context_4k_to_32k.yaml", FIXTURES / "long_context_32k_to_64.yaml"
SHIPPED = REPO / "recipes" / "smollm3-3b.yaml"
CATALOG = REPO / "mixes" / "smollm3" / "sources.yaml"
GBS = 2_359_296


def import_(tmp_path: Path, *configs: Path | str, extra: tuple[str, ...] = ()) -> Path:
    out = tmp_path / "imported"
    result = run_cli(["import", "nanotron", *map(str, configs), "-o", str(out), *extra])
    assert result.exit_code == 0, result.output
    return out / "recipe.yaml"


def published_stages(path: Path) -> list[dict]:
    """The data stages as plain YAML reads them: the ground truth the importer must reproduce."""
    return yaml.safe_load(path.read_text())["data_stages"]


def mix_entries(resolved, index: int) -> list[tuple[str, float]]:
    return [(source.name, weight) for source, weight in resolved.mixes[index].entries]


def assert_same_curriculum(a, b, categories: bool = True) -> None:
    """Phases, step and token boundaries, weights, shares, sequence lengths, RoPE bases and the
    learning rate at every corner of every schedule."""
    pa, pb = plan_recipe(a), plan_recipe(b)
    ra, rb = a.recipe, b.recipe
    assert (ra.global_batch_tokens, ra.seed, ra.tokenizer, ra.model) == (rb.global_batch_tokens, rb.seed, rb.tokenizer, rb.model)
    assert ra.optimizer == rb.optimizer
    assert len(pa.phases) == len(pb.phases)
    for x, y in zip(pa.phases, pb.phases):
        assert (x.name, x.stage, x.run, x.first_step, x.last_step, x.start_token, x.end_token) == \
               (y.name, y.stage, y.run, y.first_step, y.last_step, y.start_token, y.end_token)
        assert (x.sequence_length, x.rope_theta) == (y.sequence_length, y.rope_theta)
        assert x.schedule.model_dump() == y.schedule.model_dump()
        assert [(s.name, s.weight, s.share, s.tokens) for s in x.sources] == [(s.name, s.weight, s.share, s.tokens) for s in y.sources]
        if categories:
            assert x.categories() == y.categories()
        steps = np.arange(x.first_step, x.last_step + 1, max(x.steps // 997, 1))
        assert np.array_equal(lr_at(x.schedule, steps), lr_at(y.schedule, steps))


# --------------------------------------------------------------------------- the published SmolLM3 configs


def test_stage3_config_reproduces_the_three_pretraining_phases(tmp_path):
    """stage3_9T_11T.yaml carries all three data stages and the final WSD schedule."""
    resolved = load_recipe(import_(tmp_path, STAGE3))
    plan = plan_recipe(resolved)
    recipe = resolved.recipe
    assert [p.name for p in plan.phases] == ["stable", "stable-stage-2", "decay-stage"]
    assert [(p.stage, p.first_step, p.last_step) for p in plan.phases] == [(1, 1, 3_450_000), (2, 3_450_001, 4_198_000),
                                                                           (3, 4_198_001, 4_720_000)]
    assert recipe.global_batch_tokens == GBS == 4096 * 3 * 1 * 192
    assert {(p.sequence_length, p.rope_theta) for p in plan.phases} == {(4096, 50_000)}
    assert recipe.schedule == Schedule(type="wsd", peak_lr=2e-4, warmup_steps=2000, decay_start_step=4_198_001,
                                       decay_steps=522_000, final_lr=0.0)
    assert (recipe.optimizer.beta1, recipe.optimizer.beta2, recipe.optimizer.eps) == (0.9, 0.95, 1e-8)
    assert (recipe.optimizer.weight_decay, recipe.optimizer.grad_clip, recipe.seed) == (0.1, 1.0, 6)
    assert (recipe.tokenizer, recipe.model) == ("meta-llama/Llama-3.2-1B", "smollm3-3b")
    # Weights exactly as published, in order, comments and trailing blanks notwithstanding.
    for i, stage in enumerate(published_stages(STAGE3)):
        dataset = stage["data"]["dataset"]
        entries = mix_entries(resolved, i)
        assert [w for _, w in entries] == dataset["dataset_weights"]
        assert [n for n, _ in entries] == [source_name(p) for p in dataset["dataset_read_path"]]
    assert len(mix_entries(resolved, 2)) == 56 and resolved.mixes[2].weight_sum == pytest.approx(1.00565)


def test_published_configs_give_the_shipped_smollm3_curriculum(tmp_path):
    """stage 3 plus the two long-context configs: the shipped recipe's phases, boundaries,
    LR schedules and weights (source names as the catalog spells them)."""
    imported = load_recipe(import_(tmp_path, STAGE3, LC32, LC64, extra=("--catalog", str(CATALOG))))
    shipped = load_recipe(SHIPPED)
    pi, ps = plan_recipe(imported), plan_recipe(shipped)
    assert [p.run for p in pi.phases] == ["loubna-48n-2105-decay"] * 3 + ["elie-lc-prolong-think-chatml-mix01",
                                                                         "elie-lc-prolong-start_32k-5Mrope-22k-steps"]
    assert [p.name for p in pi.phases] == ["stable", "stable-stage-2", "decay-stage", "lc-stage", "lc-stage-2"]
    for x, y in zip(pi.phases, ps.phases):
        assert (x.first_step, x.last_step, x.start_token, x.end_token) == (y.first_step, y.last_step, y.start_token, y.end_token)
        assert (x.sequence_length, x.rope_theta, x.samples_per_step) == (y.sequence_length, y.rope_theta, y.samples_per_step)
        assert x.schedule.model_dump() == y.schedule.model_dump()
        steps = np.arange(1, x.last_step + 1, 97)
        assert np.array_equal(lr_at(x.schedule, steps), lr_at(y.schedule, steps))
        assert [s.weight for s in x.sources] == [s.weight for s in y.sources]
    # The long-context runs: cosine from the end of a 1,000-step warmup, 2e-5 peak.
    assert pi.phases[3].schedule == Schedule(type="cosine", peak_lr=2e-5, warmup_steps=1000, decay_steps=19_000, final_lr=0.0)
    assert pi.phases[4].schedule.decay_steps == 21_000
    # Names: the catalog's, except stable-1/2 where the shipped mixes call the 'stack-edu-*'
    # folders 'stack-v2-*' (the published comment: "we use stack v2 data, just typo in s3 path
    # names"). The 64k slot read as '.../infiwebmath-4plus/tokenized' is infiwebmath-4plus.
    for x, y in zip(pi.phases, ps.phases):
        renamed = {(a.name, b.name) for a, b in zip(x.sources, y.sources) if a.name != b.name}
        assert all(a.replace("stack-edu-", "stack-v2-") == b for a, b in renamed), renamed
        if x.index >= 2:
            assert not renamed
        assert x.categories() == pytest.approx(y.categories(), abs=0.004)


def test_the_64k_phase_reads_infiwebmath_4plus_and_counts_it(tmp_path):
    """The 64k config's '.../infiwebmath-4plus/tokenized' slot is InfiWebMath-4+: one source whose
    epochs carry over from the 32k phase (a separate 'tokenized' source would drop ~410M tokens)."""
    plan = plan_recipe(load_recipe(SHIPPED))
    lc64 = plan.phases[-1]
    assert lc64.sequence_length == 65536 and "tokenized" not in {s.name for p in plan.phases for s in p.sources}
    assert "tokenized" not in load_file(CATALOG).data["sources"]
    mine = {s.name: s for s in lc64.sources}["infiwebmath-4plus"]
    assert mine.weight == 0.0079096 and 400e6 < mine.tokens < 420e6
    before = sum(s.tokens for p in plan.phases[:-1] for s in p.sources if s.name == "infiwebmath-4plus")
    assert mine.tokens_before == before > 0
    assert mine.cumulative_epochs == pytest.approx((before + mine.tokens) / 8.5e9)
    # Imported with the catalog, the published config gives the same name.
    imported = load_recipe(import_(tmp_path, LC64, extra=("--catalog", str(CATALOG))))
    assert ("infiwebmath-4plus", 0.0079096) in mix_entries(imported, 0)


def test_without_a_catalog_known_smollm3_sources_take_the_shipped_catalogs_fields(tmp_path):
    """multilingual_wiki's name says nothing of its languages and tinyGSM's 'problem-solving' and
    '2students' nothing of math: the shipped catalog knows them; unknown names are still guessed."""
    resolved = load_recipe(import_(tmp_path, STAGE3, LC64))
    plan = plan_recipe(resolved)
    decay = {s.name: s for s in plan.phase("decay-stage").sources}
    assert decay["multilingual_wiki"].multilingual and decay["multilingual_wiki"].language == "mul_Zyyy"
    lc64 = {s.name: s for s in plan.phases[-1].sources}
    assert lc64["problem-solving"].category == lc64["2students"].category == "math"
    assert lc64["fw2-hq-fra_Latn"].language == "fra_Latn" and lc64["dclm"].category == "web"
    # Without --catalog the category split equals the one the catalog gives.
    with_catalog = plan_recipe(load_recipe(import_(tmp_path / "c", STAGE3, LC64, extra=("--catalog", str(CATALOG)))))
    for x, y in zip(plan.phases, with_catalog.phases):
        assert x.categories() == pytest.approx(y.categories(), abs=1e-12), x.name


def test_an_unknown_folder_is_still_guessed(tmp_path):
    config = CONFIG.replace("web-en", "my-own-gsm-set")
    (tmp_path / "a.yaml").write_text(config)
    resolved = load_recipe(import_(tmp_path, tmp_path / "a.yaml"))
    assert {s.name: s.category for s, _ in resolved.mixes[0].entries}["my-own-gsm-set"] == "math"


def test_folder_names_that_are_not_safe_names_are_imported_as_safe_ones(tmp_path):
    config = CONFIG.replace("/data/tok/web-en/standard/", "/data/tok/..web en(2024)/standard/")
    (tmp_path / "a.yaml").write_text(config)
    resolved = load_recipe(import_(tmp_path, tmp_path / "a.yaml"))
    assert [n for n, _ in mix_entries(resolved, 0)][0] == "web-en-2024"


def test_resumed_configs_form_one_run(tmp_path):
    """SmolLM3 published one config per stage; each resumes the run of the one before."""
    alone = load_recipe(import_(tmp_path / "a", STAGE1))
    assert [(p.name, p.steps, p.start_step) for p in alone.recipe.phases] == [("stable", 4_720_000, None)]
    # Its read paths name the code folders as the shipped stable-1 mix does.
    shipped = load_recipe(SHIPPED)
    assert mix_entries(alone, 0) == mix_entries(shipped, 0)
    both = load_recipe(import_(tmp_path / "b", STAGE1, STAGE3))
    only3 = load_recipe(import_(tmp_path / "c", STAGE3))
    assert_same_curriculum(both, only3)


def test_naming_after_the_folder(tmp_path):
    resolved = load_recipe(import_(tmp_path, STAGE3, extra=("--names", "folder")))
    names = [n for n, _ in mix_entries(resolved, 2)]
    # '.../megamath-web-pro/standard/' is megamath-web-pro; the s3 typo shows through.
    assert names[:6] == ["fineweb-edu", "dclm", "pes2o", "wiki", "mwiki", "cosmopedia2"]
    assert "megamath-web-pro" in names and "natural_reasoning_fix" in names and "standard" not in names


# --------------------------------------------------------------------------- export and the round trip


def test_export_writes_the_published_blocks(tmp_path):
    out = tmp_path / "main.yaml"
    result = run_cli(["export", "nanotron", str(SHIPPED), "--run", "main", "--dp", "192", "--micro-batch-size", "3",
                      "--vocab-size", "128256", "--shards", "/data/shards", "-o", str(out)])
    assert result.exit_code == 0, result.output
    exported = yaml.safe_load(out.read_text())
    published = yaml.safe_load(STAGE3.read_text())
    assert exported["optimizer"]["learning_rate_scheduler"] == published["optimizer"]["learning_rate_scheduler"]
    tokens = {k: published["tokens"][k] for k in ("sequence_length", "micro_batch_size", "batch_accumulation_per_replica", "train_steps")}
    assert exported["tokens"] == tokens
    assert exported["parallelism"] == {"dp": 192}
    for ours, theirs in zip(exported["data_stages"], published["data_stages"]):
        assert ours["start_training_step"] == theirs["start_training_step"]
        assert ours["data"]["dataset"]["dataset_weights"] == theirs["data"]["dataset"]["dataset_weights"]
        for key in ("tokenizer_name", "vocab_size", "token_size_in_bytes"):
            assert ours["data"]["dataset"][key] == theirs["data"]["dataset"][key]
    assert exported["data_stages"][0]["data"]["dataset"]["dataset_folder"][:2] == ["/data/shards/fineweb-edu", "/data/shards/dclm"]
    assert exported["model"]["model_config"]["rope_theta"] == 50_000

    lc = tmp_path / "lc.yaml"
    result = run_cli(["export", "nanotron", str(SHIPPED), "--run", "long-context-32k", "--dp", "12", "-o", str(lc)])
    assert result.exit_code == 0, result.output
    exported, published = yaml.safe_load(lc.read_text()), yaml.safe_load(LC32.read_text())
    assert exported["optimizer"]["learning_rate_scheduler"] == published["optimizer"]["learning_rate_scheduler"]
    assert exported["tokens"] == {k: published["tokens"][k] for k in tokens}
    assert "vocab_size" not in exported["data_stages"][0]["data"]["dataset"]  # nanotron reads it from the shards


def test_round_trip_of_the_shipped_recipe(tmp_path):
    out = tmp_path / "exported"
    result = run_cli(["export", "nanotron", str(SHIPPED), "-o", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*.yaml"))
    assert [f.name for f in files] == ["01-main.yaml", "02-long-context-32k.yaml", "03-long-context-64k.yaml"]
    for f in files:
        config = yaml.safe_load(f.read_text())
        t = config["tokens"]
        assert t["sequence_length"] * t["micro_batch_size"] * t["batch_accumulation_per_replica"] * config["parallelism"]["dp"] == GBS
    again = load_recipe(import_(tmp_path, *files, extra=("--catalog", str(CATALOG))))
    assert again.recipe.name == "smollm3-3b"
    assert_same_curriculum(again, load_recipe(SHIPPED))


def test_export_points_at_the_built_store_folders_and_imports_back(tmp_path):
    """With a built store, dataset_folder names the phase manifests' folders (sources/<name>/<key>)."""
    from store_fixtures import make_store

    write_project(tmp_path)
    recipe = load_recipe(tmp_path / "recipe.yaml")
    plan = plan_recipe(recipe)
    names = sorted({s.name for p in plan.phases for s in p.sources})
    rng = np.random.default_rng(0)
    docs = {n: [rng.integers(1, 50, 10) for _ in range(3)] for n in names}
    store = make_store(tmp_path, recipe.recipe.name, {p.name: {s.name: s.weight for s in p.sources} for p in plan.phases}, docs)
    result = run_cli(["export", "nanotron", "recipe.yaml", "--shards", str(store), "-o", "nt"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "nt").glob("*.yaml"))
    dataset = yaml.safe_load(files[0].read_text())["data_stages"][0]["data"]["dataset"]
    assert (dataset["vocab_size"], dataset["token_size_in_bytes"]) == (1000, 2)  # from the store's manifests
    folders = dataset["dataset_folder"]
    for folder in folders:
        assert re.fullmatch(rf"{re.escape(str(store))}/sources/[\w.-]+/[0-9a-f]{{12}}", folder), folder
        assert (Path(folder) / "manifest.json").is_file()
    again = load_recipe(import_(tmp_path, *files, extra=("--model", "m")))
    assert_same_curriculum(again, recipe, categories=False)


def test_export_names_each_phases_own_folder_for_a_source(tmp_path):
    """A source built into another folder for a later phase (its mix defines it differently):
    each data stage points at the folder its own phase trains on, not the first phase's."""
    import shutil

    from store_fixtures import make_store

    from mixc.store import phase_manifest_path, read_phase_manifest, write_phase_manifest

    write_project(tmp_path)
    recipe = load_recipe(tmp_path / "recipe.yaml")
    plan = plan_recipe(recipe)
    rng = np.random.default_rng(0)
    docs = {n: [rng.integers(1, 50, 10) for _ in range(3)] for n in sorted({s.name for p in plan.phases for s in p.sources})}
    store = make_store(tmp_path, recipe.recipe.name, {p.name: {s.name: s.weight for s in p.sources} for p in plan.phases}, docs)
    first, second = plan.phases[0], plan.phases[1]
    assert first.run == second.run  # two data stages of one exported run
    manifest = read_phase_manifest(phase_manifest_path(store, recipe.recipe.name, second.name))
    entry = manifest["sources"][0]
    moved = str(Path(entry["folder"]).parent / "0123456789ab")
    shutil.copytree(store / entry["folder"], store / moved)
    entry["folder"] = moved
    write_phase_manifest(store, recipe.recipe.name, second.name, {k: v for k, v in manifest.items() if k != "format"})
    result = run_cli(["export", "nanotron", "recipe.yaml", "--shards", str(store), "-o", "nt"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    stages = yaml.safe_load(sorted((tmp_path / "nt").glob("*.yaml"))[0].read_text())["data_stages"]
    by_stage = {st["name"]: dict(zip([s.name for s in p.sources], st["data"]["dataset"]["dataset_folder"]))
                for st, p in zip(stages, plan.phases)}
    assert by_stage[second.name][entry["name"]] == f"{store}/{moved}"
    if entry["name"] in by_stage[first.name]:
        assert by_stage[first.name][entry["name"]] != f"{store}/{moved}"


def test_round_trip_without_a_catalog(tmp_path):
    """Inline sources: the same curriculum (categories are guessed, so they may differ)."""
    write_project(tmp_path)
    result = run_cli(["export", "nanotron", "recipe.yaml", "-o", "nt"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    files = sorted((tmp_path / "nt").glob("*.yaml"))
    assert len(files) == 2  # the main run and the 'lc' run
    again = load_recipe(import_(tmp_path, *files, extra=("--model", "m")))
    original = load_recipe(tmp_path / "recipe.yaml")
    assert_same_curriculum(again, original, categories=False)
    assert [s.category for s, _ in again.mixes[0].entries] == ["web", "web", "code", "math"]  # guessed from the names
    assert [s.language for s, _ in again.mixes[0].entries][:2] == ["eng_Latn", "eng_Latn"]


def test_export_to_stdout_and_determinism(tmp_path):
    first = run_cli(["export", "nanotron", str(SHIPPED)])
    second = run_cli(["export", "nanotron", str(SHIPPED)])
    assert first.exit_code == 0 and first.stdout == second.stdout
    docs = list(yaml.safe_load_all(first.stdout))
    assert [d["general"]["run"] for d in docs] == ["main", "long-context-32k", "long-context-64k"]
    a, b = import_(tmp_path / "a", STAGE3, LC32), import_(tmp_path / "b", STAGE3, LC32)
    for x, y in zip(sorted(a.parent.rglob("*.yaml")), sorted(b.parent.rglob("*.yaml"))):
        assert x.read_bytes() == y.read_bytes()


def test_export_refuses_a_batch_that_does_not_split(tmp_path):
    result = run_cli(["export", "nanotron", str(SHIPPED), "--dp", "192", "--micro-batch-size", "3"])
    assert result.exit_code == 1
    assert "run 'long-context-32k': 72 sequences per step do not split into dp 192 x micro batch 3" in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- bad and odd input

CONFIG = """\
general: {project: toy, run: toy-run, seed: 3}
data_stages:
- name: warm up
  start_training_step: 1
  data:
    dataset:
      dataset_folder:
      - /data/tok/web-en/standard/     # the English web
      -   /data/tok/fw2-rus<BLANKS>
      # a comment between items
      - /data/tok/stack-python
      dataset_weights: [0.6,  0.3 ,
                        0.1]   # flow style, odd spacing
- name: anneal
  start_training_step: 81
  data:
    dataset:
      dataset_folder: {/data/tok/web-en/standard/: 0.5, /data/tok/openmath-gsm: 0.5}
tokens: {sequence_length: 256, micro_batch_size: 4, batch_accumulation_per_replica: 2, train_steps: 100}
parallelism: {dp: 2}
model: {model_config: {rope_theta: 10000.0, hidden_size: 64, num_hidden_layers: 2}}
optimizer:
  learning_rate_scheduler:
    learning_rate: 0.001
    lr_warmup_steps: 10
    lr_warmup_style: linear
    lr_decay_style: linear
    min_decay_lr: 0.0001
""".replace("<BLANKS>", "    ")  # trailing blanks after a list item, as in SmolLM3's configs


def test_comments_odd_whitespace_and_nanotron_defaults(tmp_path):
    (tmp_path / "toy.yaml").write_text(CONFIG)
    resolved = load_recipe(import_(tmp_path, tmp_path / "toy.yaml"))
    recipe = resolved.recipe
    assert recipe.name == "toy" and recipe.global_batch_tokens == 256 * 4 * 2 * 2 and recipe.model == "nanotron-2l-64h"
    assert mix_entries(resolved, 0) == [("web-en", 0.6), ("fw2-rus", 0.3), ("stack-python", 0.1)]
    assert mix_entries(resolved, 1) == [("web-en", 0.5), ("openmath-gsm", 0.5)]  # the older {folder: weight} form
    assert [(p.name, p.steps, p.run) for p in recipe.phases] == [("warm-up", 80, "toy-run"), ("anneal", 20, "toy-run")]
    assert [(s.category, s.language) for s, _ in resolved.mixes[0].entries] == [("web", "eng_Latn"), ("web", "rus_Cyrl"),
                                                                                 ("code", "eng_Latn")]
    # No decay start or length: nanotron decays from the end of warmup over the rest of the run.
    assert recipe.schedule == Schedule(type="wsd", peak_lr=1e-3, warmup_steps=10, decay_start_step=11, decay_steps=90,
                                       final_lr=1e-4)
    plan = plan_recipe(resolved)
    assert lr_at(plan.phases[1].schedule, 100) == pytest.approx(1e-4)


def _fails(tmp_path: Path, text: str, *more: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli(["import", "nanotron", str(path), *more, "-o", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return result.output


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_mismatched_lists_are_located(tmp_path):
    text = CONFIG.replace("                        0.1]", "                        0.1, 0.2]")
    out = _fails(tmp_path, text)
    line = _line_of(text, "dataset_weights: [0.6")
    assert re.search(rf"bad\.yaml:{line}:\d+: error: data_stages\[0\]\.data\.dataset\.dataset_weights: 4 weights for 3 "
                     rf"dataset folders \(dataset_folder at line {_line_of(text, 'dataset_folder:')}\)", out), out
    published = STAGE1.read_text()
    text = published.replace("      - /scratch/smollm3-data-part1/github-issues\n", "")
    out = _fails(tmp_path, text)
    assert "data_stages[0].data.dataset.dataset_read_path: 40 read paths for 41 dataset folders" in out
    assert f"bad.yaml:{_line_of(text, 'dataset_read_path:')}:" in out


@pytest.mark.parametrize("edit, message, key", [
    (("      - /data/tok/stack-python\n", ""), "3 weights for 2 dataset folders", "dataset_weights"),
    (("[0.6,  0.3 ,", "[0.6,  '0.3' ,"), "expected a number, got str '0.3'", "dataset_weights[1]"),
    (("[0.6,  0.3 ,", "[0.6,  -0.3 ,"), "weight is negative (-0.3)", "dataset_weights[1]"),
    (("train_steps: 100", "train_steps: 50"), "starts at step 81, after the run's last step", "data_stages[1].start_training_step"),
    (("start_training_step: 81", "start_training_step: 1"), "does not come after the previous stage's start", "start_training_step"),
    (("    lr_decay_style: linear", "    lr_decay_style: cosine\n    lr_decay_starting_step: 50"),
     "a cosine decay from step 50, after a 10-step warmup, has no mixc equivalent", "lr_decay_starting_step"),
    (("    learning_rate: 0.001\n", ""), "required key is missing", "optimizer.learning_rate_scheduler.learning_rate"),
    (("model: {model_config: {rope_theta: 10000.0,", "model: {model_config: {"), "required key is missing", "rope_theta"),
    (("      dataset_folder: {/data", "      hf_dataset_or_datasets: {/data"), "mixc imports tokenized (Nanoset) stages", "hf_dataset"),
    # The older {folder: weight} form: its weights are checked where they are written (a word
    # there was a crash, a negative one an error in the recipe that would have been written).
    (("{/data/tok/web-en/standard/: 0.5,", "{/data/tok/web-en/standard/: half,"), "expected a number, got str 'half'",
     "dataset_folder./data/tok/web-en/standard/"),
    (("{/data/tok/web-en/standard/: 0.5,", "{/data/tok/web-en/standard/: -0.5,"), "weight is negative (-0.5)",
     "dataset_folder./data/tok/web-en/standard/"),
    # An optimizer value mixc cannot read is an error, not nanotron's default in its place.
    (("optimizer:\n", "optimizer:\n  weight_decay: '0.1'\n"), "expected a number, got str '0.1'", "optimizer.weight_decay"),
    (("optimizer:\n", "optimizer:\n  optimizer_factory: {name: adamW, adam_beta1: yes}\n"), "expected a number, got bool True",
     "optimizer.optimizer_factory.adam_beta1"),
    (("tokens: {sequence_length", "tokens: [256]\nx: {sequence_length"), "expected a mapping, got list [256]", "tokens"),
])
def test_bad_configs_are_located(tmp_path, edit, message, key):
    old, new = edit
    assert old in CONFIG
    out = _fails(tmp_path, CONFIG.replace(old, new, 1))
    assert re.search(r"bad\.yaml:\d+:\d+: error: \S*" + re.escape(key), out), out
    assert out.count(message) == 1, out  # once, however many keys lie under a bad section


def test_runs_that_cannot_share_a_recipe(tmp_path):
    (tmp_path / "a.yaml").write_text(CONFIG)
    (tmp_path / "b.yaml").write_text(CONFIG.replace("dp: 2", "dp: 4").replace("name: warm up", "name: other"))
    result = run_cli(["import", "nanotron", "a.yaml", "b.yaml", "-o", "out"], cwd=tmp_path)
    assert result.exit_code == 1 and "global batch of 8,192 tokens" in result.output and "b.yaml:" in result.output
    # A config that starts like the run but rewrites a stage it already trained: a new run, said so.
    (tmp_path / "c.yaml").write_text(CONFIG.replace("[0.6,  0.3 ,\n                        0.1]", "[0.6, 0.3, 0.1]")
                                     .replace("start_training_step: 81", "start_training_step: 61"))
    result = run_cli(["import", "nanotron", "a.yaml", "c.yaml", "-o", "out"], cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "c.yaml starts like the run of a.yaml but changes or drops its data stage 'anneal': imported as a new run" in result.output
    assert [p.run for p in load_recipe(tmp_path / "out" / "recipe.yaml").recipe.phases] == ["toy-run"] * 2 + ["toy-run-2"] * 2


def test_not_a_config(tmp_path):
    assert "expected a nanotron config" in _fails(tmp_path, "- just\n- a list\n")
    assert "data_stages: required key is missing" in _fails(tmp_path, "tokens: {train_steps: 3}\n")


# --------------------------------------------------------------------------- the naming and guessing rules


@pytest.mark.parametrize("path, name", [
    ("s3://smollm3/datasets/llama_tokenized_4097/megamath-web-pro/standard/", "megamath-web-pro"),
    ("s3://smollm3/datasets/llama_tokenized-global-chunks/fineweb-edu/fineweb-edu/", "fineweb-edu"),
    ("s3://smollm3/datasets/llama_tokenized_4097/mwiki/standard", "mwiki"),
    ("/fsx/data/short-context/infiwebmath-4plus/tokenized", "infiwebmath-4plus"),
    ("/scratch/smollm3-data-part1/stack-v2-Python ", "stack-v2-Python"),
    ("shards/web-en", "web-en"),
    ("web-en", "web-en"),
])
def test_source_name(path, name):
    assert source_name(path) == name


def test_guessed_categories_match_smollm3s_own_counting():
    """Every source of the decay phase, guessed from its name alone, lands in the category the
    SmolLM3 catalog gives it (SMOLLM3_FACTS.md's counting)."""
    catalog = load_file(CATALOG).data["sources"]
    names = [n for n, _ in load_file(REPO / "mixes" / "smollm3" / "stage3.yaml").data["sources"].items()]
    assert len(names) == 56
    assert {n: guess_category(n) for n in names} == {n: catalog[n]["category"] for n in names}
    assert guess_language("fw2-hq-jpn_Jpan") == "jpn_Jpan" and guess_language("fw2-kor") == "kor_Hang"
    assert guess_language("fw2-fra") == "fra_Latn" and guess_language("fineweb-edu") is None and guess_language("dclm") is None


def test_interop_reads_smollm3s_sizes_from_the_models_own_config_without_torch(tmp_path):
    """One home for SmolLM3's dimensions (mixc/train/configs.py): the export writes the sizes the
    trainer builds, and interop gets them without importing torch."""
    import subprocess
    import sys

    from mixc.train.model import get_config

    result = run_cli(["export", "nanotron", str(SHIPPED), "--run", "main"])
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(result.stdout)["model"]["model_config"]
    config = get_config("smollm3-3b")
    sizes = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads", "vocab_size")
    assert {k: written[k] for k in sizes} == {k: getattr(config, k) for k in sizes}
    code = ("import sys, mixc.cli, mixc.interop.nanotron_import, mixc.interop.nanotron_write, mixc.train.configs; "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
