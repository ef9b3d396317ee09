"""The plan pass: learning rates, integer budgets, boundaries, stage lookup, epochs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from spec_fixtures import write_project

from mixc.locyaml import SpecErrors
from mixc.plan import epochs_at_token, largest_remainder, lr_at, lr_at_token, normalize, plan_mixes, plan_recipe
from mixc.spec import Schedule, load_mix, load_recipe

SMOLLM3_WSD = Schedule(type="wsd", peak_lr=2e-4, warmup_steps=2000, decay_start_step=4_198_001, decay_steps=522_000, final_lr=0.0)


# --------------------------------------------------------------------------- learning rate


def test_wsd_warmup_stable_decay():
    s = SMOLLM3_WSD
    assert lr_at(s, 1) == pytest.approx(2e-4 / 2000)
    assert lr_at(s, 1000) == pytest.approx(1e-4)
    assert lr_at(s, 2000) == pytest.approx(2e-4)  # warmup reaches the peak at its last step
    assert lr_at(s, 2001) == lr_at(s, 3_450_000) == lr_at(s, 4_198_000) == 2e-4
    assert lr_at(s, 4_198_001) == pytest.approx(2e-4 * (1 - 1 / 522_000))  # the decay starts at once
    assert lr_at(s, 4_198_000 + 261_000) == pytest.approx(1e-4)
    assert lr_at(s, 4_720_000) == 0.0  # the last step trains at final_lr
    assert lr_at(s, 5_000_000) == 0.0


def test_wsd_decays_to_a_nonzero_final_lr():
    s = Schedule(type="wsd", peak_lr=1.0, warmup_steps=0, decay_start_step=11, decay_steps=10, final_lr=0.1)
    assert lr_at(s, 1) == 1.0 and lr_at(s, 10) == 1.0
    assert lr_at(s, 20) == pytest.approx(0.1)
    assert lr_at(s, 15) == pytest.approx(1.0 - 0.9 * 5 / 10)


def test_lr_is_vectorized_and_monotone_after_warmup():
    steps = np.arange(1, 4_720_001, 997)
    lrs = lr_at(SMOLLM3_WSD, steps)
    assert isinstance(lrs, np.ndarray) and lrs.shape == steps.shape
    assert [float(x) for x in lrs[:5]] == [lr_at(SMOLLM3_WSD, int(s)) for s in steps[:5]]
    after = lrs[steps >= 2000]
    assert np.all(np.diff(after) <= 0) and lrs.max() == pytest.approx(2e-4)


def test_cosine():
    s = Schedule(type="cosine", peak_lr=1.0, warmup_steps=10, decay_steps=100, final_lr=0.1)
    assert lr_at(s, 5) == pytest.approx(0.5)
    assert lr_at(s, 10) == pytest.approx(1.0)
    assert lr_at(s, 60) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert lr_at(s, 35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_at(s, 110) == pytest.approx(0.1) and lr_at(s, 500) == pytest.approx(0.1)


def test_cosine_without_length_is_refused_but_the_plan_fills_it_in(tmp_path):
    with pytest.raises(ValueError, match="decay_steps"):
        lr_at(Schedule(type="cosine", peak_lr=1.0, warmup_steps=2), 5)
    plan = plan_recipe(load_recipe(write_project(tmp_path) / "recipe.yaml"))
    lc = plan.phase("lc")
    assert lc.schedule.decay_steps == 10 - 2  # the rest of its 10-step run after warmup
    assert lr_at(lc.schedule, 2) == pytest.approx(1e-4)
    assert lr_at(lc.schedule, lc.last_step) == pytest.approx(0.0, abs=1e-18)


def test_constant_schedule():
    s = Schedule(type="constant", peak_lr=3e-4, warmup_steps=3)
    assert [lr_at(s, i) for i in (1, 3, 4, 10_000)] == pytest.approx([1e-4, 3e-4, 3e-4, 3e-4])


def test_lr_at_token_follows_the_runs(tmp_path):
    plan = plan_recipe(load_recipe(write_project(tmp_path) / "recipe.yaml"))
    assert lr_at_token(plan, 0) == pytest.approx(1e-3 / 10)  # step 1 of the main run
    assert lr_at_token(plan, 100 * 4096) == pytest.approx(1e-3)  # first token of phase b, step 101
    assert lr_at_token(plan, 200 * 4096 - 1) == pytest.approx(0.0, abs=1e-18)  # last step of the main run
    assert lr_at_token(plan, 200 * 4096) == pytest.approx(1e-4 / 2)  # step 1 of the cosine run


# --------------------------------------------------------------------------- budgets


def test_largest_remainder_examples():
    assert largest_remainder([1 / 3] * 3, 10) == [4, 3, 3]  # ties go to the earlier source
    assert largest_remainder([0.5, 0.5], 3) == [2, 1]
    assert largest_remainder([0.6, 0.2, 0.15, 0.05], 409_600) == [245_760, 81_920, 61_440, 20_480]
    assert largest_remainder([1.0], 0) == [0]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), min_size=1, max_size=60).filter(lambda w: sum(w) > 0),
    st.integers(min_value=0, max_value=10**13),
)
def test_largest_remainder_sums_exactly(weights, total):
    shares = normalize(weights)
    budgets = largest_remainder(shares, total)
    assert sum(budgets) == total
    for share, budget in zip(shares, budgets):
        assert abs(budget - share * total) < 1 + 1e-9 * total  # floor or ceil of the exact share
    assert budgets == largest_remainder(shares, total)


def test_normalize_refuses_zero_sum():
    assert normalize([1, 3]) == [0.25, 0.75]
    with pytest.raises(ValueError):
        normalize([0.0, 0.0])


# --------------------------------------------------------------------------- phases, boundaries and stages


def test_boundaries_runs_and_budgets(tmp_path):
    plan = plan_recipe(load_recipe(write_project(tmp_path) / "recipe.yaml"))
    a, b, lc = plan.phases
    assert [(p.first_step, p.last_step, p.start_token, p.end_token) for p in plan.phases] == [
        (1, 100, 0, 409_600), (101, 200, 409_600, 819_200), (1, 10, 819_200, 860_160)]
    assert (a.run, b.run, lc.run) == ("main", "main", "lc")
    assert a.schedule is b.schedule and lc.schedule.type == "cosine"
    assert plan.total_tokens == 860_160
    assert (lc.samples_per_step, lc.samples) == (4, 40)
    for p in plan.phases:
        assert sum(s.tokens for s in p.sources) == p.tokens
    assert plan.at_token(0) is a and plan.at_token(409_599) is a and plan.at_token(409_600) is b
    assert plan.at_token(10**12) is lc


def test_stage_lookup(tmp_path):
    plan = plan_recipe(load_recipe(write_project(tmp_path) / "recipe.yaml"))
    assert plan.phase("2").name == "b" and plan.phase(1).name == "a" and plan.phase(" 2 ").name == "b"
    assert plan.phase("lc").name == "lc"
    with pytest.raises(KeyError, match=r"no phase has stage 3 \(stages: 1, 2\)"):
        plan.phase("3")
    with pytest.raises(KeyError, match=r"no phase named 'decay' \(phases: a, b, lc\)"):
        plan.phase("decay")


def test_tokens_instead_of_steps(tmp_path):
    write_project(tmp_path, {"recipe.yaml": ("    steps: 100\n    sequence_length: 256\n    rope_theta: 10000\n  - name: b",
                                             "    tokens: 409.6K\n    sequence_length: 256\n    rope_theta: 10000\n  - name: b")})
    plan = plan_recipe(load_recipe(tmp_path / "recipe.yaml"))
    assert (plan.phase("1").steps, plan.phase("1").tokens) == (100, 409_600)
    assert plan.phase("2").first_step == 101
    # A budget that is not a whole number of steps rounds up: never train on less than asked.
    write_project(tmp_path, {"recipe.yaml": ("    steps: 100\n    sequence_length: 256\n    rope_theta: 10000\n  - name: b",
                                             "    tokens: 409601\n    sequence_length: 256\n    rope_theta: 10000\n  - name: b")})
    with pytest.raises(SpecErrors, match="start_step 101 overlaps the previous phase"):  # b now starts at 102
        load_recipe(tmp_path / "recipe.yaml")
    (tmp_path / "recipe.yaml").write_text((tmp_path / "recipe.yaml").read_text().replace("    start_step: 101\n", ""))
    plan = plan_recipe(load_recipe(tmp_path / "recipe.yaml"))
    assert (plan.phase("1").steps, plan.phase("1").tokens, plan.phase("2").first_step) == (101, 101 * 4096, 102)


def test_same_inputs_same_plan(tmp_path):
    path = write_project(tmp_path) / "recipe.yaml"
    assert plan_recipe(load_recipe(path)) == plan_recipe(load_recipe(path))


def test_source_sizes_from_manifests_override_the_catalog(tmp_path):
    resolved = load_recipe(write_project(tmp_path) / "recipe.yaml")
    plan = plan_recipe(resolved, source_tokens={"web-en": 245_760, "code-py": 61_440})
    a, b, lc = plan.phases
    web = {p.name: next(s for s in p.sources if s.name == "web-en") for p in plan.phases}
    assert web["a"].epochs == pytest.approx(1.0) and web["b"].cumulative_epochs == pytest.approx(2.0)
    assert web["b"].tokens_before == 245_760
    assert next(s for s in a.sources if s.name == "code-py").epochs == pytest.approx(1.0)
    assert epochs_at_token(plan, 409_600 + 204_800)["web-en"] == pytest.approx(1.5)  # half way through b
    assert plan.warnings == []
    flagged = plan_recipe(resolved, source_tokens={"web-en": 100_000})
    # 2.46 epochs by the end of a, 4.92 by the end of b, 5.16 by the end of lc: flagged above 4.
    assert [w.split(":")[0] for w in flagged.warnings] == ["b", "lc"]


def test_inline_sources_without_a_catalog(tmp_path):
    path = tmp_path / "self-contained.yaml"
    path.write_text(
        "name: tiny-mix\n"
        "sources:\n"
        "  en:\n    weight: 3\n    category: web\n    path: data/en.parquet\n    tokens: 1M\n"
        "  de:\n    weight: 1\n    category: web\n    language: deu_Latn\n    dataset: someone/german\n    format: hf\n"
        "  py:\n    weight: 1\n    category: code\n    path: data/py.jsonl\n    format: jsonl\n"
    )
    mix = load_mix(path)
    plan = plan_mixes([mix], tokens=500_000)
    (phase,) = plan.phases
    assert phase.name == "tiny-mix" and mix.weights_mode == "absolute" and mix.weight_sum == 5
    assert phase.shares() == {"en": 0.6, "de": 0.2, "py": 0.2}
    assert {s.name: s.tokens for s in phase.sources} == {"en": 300_000, "de": 100_000, "py": 100_000}
    assert phase.categories() == pytest.approx({"web": 0.8, "code": 0.2, "math": 0.0, "reasoning": 0.0, "multilingual": 0.2})
    assert phase.languages() == pytest.approx({"eng_Latn": 0.8, "deu_Latn": 0.2})
    de = next(s for s in phase.sources if s.name == "de")
    assert de.multilingual and de.source.url == "hf://datasets/someone/german" and de.source.format == "hf"
    en = next(s for s in phase.sources if s.name == "en")
    assert en.available_tokens == 1_000_000 and en.epochs == pytest.approx(0.3)


def test_inline_fields_override_a_catalog_source(tmp_path):
    write_project(tmp_path, {"mix.yaml": ("  web-en: 0.6", "  web-en: {weight: 0.6, tokens: 10, path: local/en.parquet}")})
    mix = load_mix(tmp_path / "mix.yaml")
    web = dict((s.name, s) for s, _ in mix.entries)["web-en"]
    # A relative path is relative to the mix that says it.
    assert (web.tokens, web.url, web.category) == (10, str(tmp_path / "local" / "en.parquet"), "web")
