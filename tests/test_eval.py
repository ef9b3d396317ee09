"""Held-out evaluation: bits per byte by hand, rank-independent, the same through an HF export."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from build_fixtures import texts, train_tokenizer, write_jsonl, write_project

from mixc.errors import MixcError
from mixc.eval import HeldoutSet, HeldoutSource, _rows, evaluate, format_table, load_heldout
from mixc.shards.heldout import is_heldout, missing_reason
from mixc.shards.run import build


def test_bits_per_byte_by_hand():
    # One document "ab" -> tokens 5, 6 and EOS 0; 4 UTF-8 bytes of text (say "aé" + 1). A model
    # that spreads probability evenly over 8 ids costs ln 8 nats per scored token; three tokens
    # are scored (5, 6 and the EOS), so bpb = 3 x log2(8) / 4 = 2.25 and loss = ln 8.
    heldout = HeldoutSet("r", "p", 2, 0, {}, {"s": 1.0}, [HeldoutSource("s", "code", [(np.array([5, 6, 0]), 4)])])
    # sequence length 2: windows (EOS 5 | 5 6) and (6 | 0): every token is a target exactly once
    assert [row.tolist() for _, row in _rows(heldout)] == [[0, 5, 6], [6, 0]]
    result = evaluate(lambda ids: torch.zeros(*ids.shape, 8), heldout)
    s = result["sources"]["s"]
    assert (s["tokens"], s["bytes"]) == (3, 4)
    assert s["loss"] == pytest.approx(math.log(8), abs=1e-6) and s["bpb"] == pytest.approx(2.25, abs=1e-6)  # float32 logits
    assert result["categories"]["code"]["bpb"] == pytest.approx(2.25) and result["mix"]["bpb"] == pytest.approx(2.25)

    # A model sure of the next id (p = 1/2 on it, the rest even) costs ln 2 per token it gets right.
    def sure(ids):
        logits = torch.zeros(*ids.shape, 8)
        nxt = {0: 5, 5: 6, 6: 0}
        for b in range(ids.shape[0]):
            for t in range(ids.shape[1]):
                logits[b, t, nxt.get(int(ids[b, t]), 1)] = math.log(7)  # e^x / (e^x + 7) = 1/2
        return logits
    s = evaluate(sure, heldout)["sources"]["s"]
    assert s["bpb"] == pytest.approx(3 * 1.0 / 4, abs=1e-6)


def test_categories_are_token_weighted_and_the_mix_is_weighted_by_the_phase():
    a = HeldoutSource("a", "web", [(np.array([1, 2, 3, 0]), 10)])
    b = HeldoutSource("b", "web", [(np.array([1, 0]), 2)])
    c = HeldoutSource("c", "math", [(np.array([4, 0]), 3)])
    heldout = HeldoutSet("r", "p", 16, 0, {}, {"a": 0.5, "b": 0.0, "c": 1.5}, [a, b, c])

    def skewed(ids):  # some ids cheaper than others, so sources differ
        logits = torch.zeros(*ids.shape, 8)
        logits[..., 0] = 2.0
        logits[..., 1] = 1.0
        return logits
    r = evaluate(skewed, heldout)
    s = r["sources"]
    ce = {n: s[n]["loss"] * s[n]["tokens"] for n in s}
    assert r["categories"]["web"]["loss"] == pytest.approx((ce["a"] + ce["b"]) / 6)
    assert r["categories"]["web"]["bpb"] == pytest.approx((ce["a"] + ce["b"]) / math.log(2) / 12)
    assert r["mix"]["bpb"] == pytest.approx((0.5 * s["a"]["bpb"] + 1.5 * s["c"]["bpb"]) / 2)
    assert list(r["categories"]) == ["web", "math"]


# --------------------------------------------------------------------------- on a built store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalstore")
    tok = train_tokenizer(root / "tok" / "tokenizer.json")
    write_jsonl(root / "data" / "web" / "a.jsonl", texts(1, 300))
    # "tiny": two documents, neither under the hash threshold of max_fraction 0.2: no held-out set
    write_jsonl(root / "data" / "tiny" / "a.jsonl", [t for t in texts(7, 40) if not is_heldout(t, 0.2)][:2])
    sources = {"web": {"category": "web", "format": "jsonl", "path": str(root / "data" / "web")},
               "code": {"category": "code", "path": "sample://code/eng_Latn/python"},
               "math": {"category": "math", "path": "sample://math/eng_Latn/math"},
               "tiny": {"category": "web", "format": "jsonl", "path": str(root / "data" / "tiny")}}
    recipe = write_project(root, sources, {"one": {"web": 2, "code": 1},
                                           "two": {"web": 1, "code": 1, "math": 1, "tiny": 0.2}}, tokenizer=str(tok))
    data = yaml.safe_load(recipe.read_text())
    data.update(model="smollm3-test", heldout={"documents": 12, "max_fraction": 0.2})
    for phase in data["phases"]:
        phase["steps"] = 2
    data["schedule"].update(warmup_steps=1, decay_start_step=2, decay_steps=1)
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    build(recipe, out=root / "store", sample_documents=100, shard_tokens=3000, workers=1, progress=False)
    return recipe, root / "store", tok


def test_the_heldout_set_comes_from_the_manifests(store):
    _, shards, _ = store
    heldout = load_heldout(shards, "build-test")
    assert heldout.phase == "two" and heldout.sequence_length == 64
    assert {s.name: s.category for s in heldout.sources} == {"web": "web", "code": "code", "math": "math"}
    assert all(0 < len(s.documents) <= 12 for s in heldout.sources)
    assert load_heldout(shards, "build-test", "one").weights == pytest.approx({"web": 2 / 3, "code": 1 / 3})


DDP_SCRIPT = """\
import json, sys, torch
from mixc.eval import evaluate_model, load_heldout
from mixc.train import dist
from mixc.train.model import SmolLM3, get_config
torch.set_num_threads(1)
world = dist.setup("cpu")
torch.manual_seed(5)
model = SmolLM3(get_config("smollm3-test"))
result = evaluate_model(model, load_heldout(sys.argv[1], "build-test"), world=world, batch_tokens=256)
if world.main:
    open(sys.argv[2], "w").write(json.dumps(result))
dist.teardown(world)
"""


def _env():
    return dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")


def test_two_gloo_ranks_evaluate_as_one_process(store, tmp_path):
    _, shards, _ = store
    script = tmp_path / "ddp_eval.py"
    script.write_text(DDP_SCRIPT)
    one = subprocess.run([sys.executable, str(script), str(shards), str(tmp_path / "one.json")], env=_env(),
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
                          str(shards), str(tmp_path / "two.json")], env=_env(), capture_output=True, text=True, timeout=180)
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = json.loads((tmp_path / "one.json").read_text()), json.loads((tmp_path / "two.json").read_text())
    assert a["sources"].keys() == b["sources"].keys()
    for name in a["sources"]:
        assert b["sources"][name]["tokens"] == a["sources"][name]["tokens"]
        assert b["sources"][name]["loss"] == pytest.approx(a["sources"][name]["loss"], abs=1e-5)
        assert b["sources"][name]["bpb"] == pytest.approx(a["sources"][name]["bpb"], abs=1e-5)
    assert b["mix"]["bpb"] == pytest.approx(a["mix"]["bpb"], abs=1e-5)


def _cli(*args):
    done = subprocess.run([str(Path(sys.executable).with_name("mixc")), *map(str, args)], env=_env(), capture_output=True,
                          text=True, timeout=300)
    return done


@pytest.fixture(scope="module")
def trained(store, tmp_path_factory):
    from mixc.train.loop import train

    recipe, shards, _ = store
    run = tmp_path_factory.mktemp("evalrun") / "run"
    train(recipe, shards, run, threads=1, log=lambda _m: None)
    return run


def test_mixc_eval_of_a_checkpoint_equals_its_hf_export_and_a_foreign_tokenizer_is_refused(store, trained, tmp_path):
    pytest.importorskip("transformers")
    _, shards, _ = store
    (tmp_path / "run").symlink_to(trained)
    done = _cli("eval", tmp_path / "run", "--format", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    ours = json.loads(done.stdout)
    assert ours["step"] == 4 and ours["phase"] == "two"
    # the trainer evaluated at both phase ends, into metrics.jsonl and summary.json: the same figures
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = {r["step"]: r["eval"] for r in records if "eval" in r}
    assert {2, 4} <= set(evaluated)
    for name, s in ours["sources"].items():
        assert evaluated[4]["sources"][name]["bpb"] == pytest.approx(s["bpb"], abs=1e-5)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["heldout"]["step"] == 4 and set(summary["heldout"]["phases"]) == {"one", "two"}
    assert _cli("export", tmp_path / "run", "--format", "hf", tmp_path / "hf").returncode == 0
    done = _cli("eval", tmp_path / "hf", "--shards", shards, "--format", "json")
    assert done.returncode == 0, done.stderr[-3000:]
    theirs = json.loads(done.stdout)
    for name, s in ours["sources"].items():
        assert theirs["sources"][name]["bpb"] == pytest.approx(s["bpb"], abs=1e-4)
        assert theirs["sources"][name]["tokens"] == s["tokens"]
    table = _cli("eval", tmp_path / "run", "--step", 2)
    assert table.returncode == 0 and "[mix of one]" in table.stdout and "bpb" in table.stdout
    # another tokenizer in the export: refused in one line
    other = train_tokenizer(tmp_path / "other" / "tokenizer.json", vocab_size=350)
    (tmp_path / "hf" / "tokenizer.json").write_bytes(other.read_bytes())
    done = _cli("eval", tmp_path / "hf", "--shards", shards)
    assert done.returncode != 0 and "does not match the store's" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_store_without_heldout_documents_is_a_clear_error(tmp_path):
    (tmp_path / "phases" / "r").mkdir(parents=True)
    with pytest.raises(MixcError, match="no phase of recipe 'x'"):
        load_heldout(tmp_path, "x")


def test_the_run_ledger_counts_consumed_tokens_through_the_blend(store, trained):
    from mixc.report.ledger import ledger

    done = _cli("report", trained, "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(done.stdout)
    assert data == json.loads(json.dumps(ledger(trained)))
    assert data["steps_done"] == data["total_steps"] == 4
    for phase in data["phases"]:
        assert phase["steps_done"] == 2 and phase["consumed_tokens"] == phase["planned_tokens"] == 2 * 512
        # every sample of the phase is drawn from one source: the per-source counts add up exactly
        assert sum(s["consumed_tokens"] for s in phase["sources"]) == phase["consumed_tokens"]
        assert all(s["epochs"] > 0 for s in phase["sources"] if s["share"] > 0)
        assert phase["heldout_end"]["step"] == {"one": 2, "two": 4}[phase["name"]]
    two = data["phases"][1]
    assert two["heldout_start"]["step"] == 2  # phase one's end is phase two's start
    table = _cli("report", trained)
    assert table.returncode == 0 and "phase two: 2/2 steps" in table.stdout and "held-out bpb (mix)" in table.stdout


# --------------------------------------------------------------------------- sources with no held-out set


def test_why_a_source_has_no_heldout_document():
    chance = missing_reason({"documents": 200, "heldout": {"fraction": 0.01, "max_fraction": 0.05, "documents": 0}})
    assert chance[0] == "chance" and "fraction 0.01 of its 200 documents expects 2.0" in chance[1] and "(probability 13%)" in chance[1]
    small = missing_reason({"documents": 8, "heldout": {"fraction": 0.05, "max_fraction": 0.05, "documents": 0}})
    assert small == ("small", "too small: max_fraction 0.05 of its 8 documents expects 0.40")
    assert missing_reason({"documents": 8})[0] == "off"
    assert missing_reason({"documents": 8, "heldout": {"fraction": 0.05, "documents": 1}}) is None


def test_a_source_without_heldout_documents_is_named_in_the_build_summary_and_the_evaluation(store):
    recipe, shards, _ = store
    summary = build(recipe, out=shards, sample_documents=100, shard_tokens=3000, workers=1, progress=False).summary()
    assert "held-out: 1 of 4 source(s) have no held-out document" in summary
    assert "  1 too small for its max_fraction (less than one document expected): tiny" in summary
    heldout = load_heldout(shards, "build-test")
    assert sorted(s.name for s in heldout.sources) == ["code", "math", "web"]
    assert heldout.missing == {"tiny": {"category": "web", "reason": "too small: max_fraction 0.2 of its 2 documents expects 0.40"}}
    result = evaluate(lambda ids: torch.zeros(*ids.shape, 400), heldout)
    assert result["no_heldout"] == heldout.missing and "tiny" not in result["sources"]
    # the web category covers one source and says one more has no held-out set; the mix covers 3 of 3.2 weight
    assert (result["categories"]["web"]["sources"], result["categories"]["web"]["no_heldout"]) == (1, 1)
    assert (result["categories"]["code"]["sources"], result["categories"]["code"]["no_heldout"]) == (1, 0)
    assert result["mix"]["weight_covered"] == pytest.approx(3 / 3.2)
    table = format_table(result)
    assert "no held-out: too small: max_fraction 0.2 of its 2 documents expects 0.40" in table
    assert "1 source(s), 1 without held-out" in table and "93.8% of the phase's weight" in table


def test_the_run_and_its_ledger_mark_a_source_without_heldout(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    evals = [r["eval"] for r in records if "eval" in r]
    assert evals and all(set(e["no_heldout"]) == {"tiny"} for e in evals)
    assert set(json.loads((trained / "summary.json").read_text())["heldout"]["no_heldout"]) == {"tiny"}
    done = _cli("report", trained, "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    two = {s["name"]: s for s in json.loads(done.stdout)["phases"][1]["sources"]}
    assert two["tiny"]["no_heldout"].startswith("too small") and two["tiny"]["heldout_end_bpb"] is None
    assert two["web"]["heldout_end_bpb"] > 0 and "no_heldout" not in two["web"]
    table = _cli("report", trained).stdout
    tiny_row = next(line for line in table.splitlines() if line.strip().startswith("tiny"))
    assert tiny_row.endswith("no held-out")
    assert "(1 source(s), 1 without held-out)" in table


def test_packed_rows_and_cached_batches_give_the_one_document_per_row_figures(store):
    """The trainer's evaluation packs several windows in a row (positions restart at each) and
    reuses its batches: the figures stay those of one window per row, padded."""
    from dataclasses import replace

    from mixc.eval import evaluate_model, mixc_scorer, prepared_batches
    from mixc.train.model import SmolLM3, get_config

    _, shards, _ = store
    torch.manual_seed(3)
    model = SmolLM3(get_config("smollm3-test")).eval()
    for length in (64, 256):
        heldout = replace(load_heldout(shards, "build-test"), sequence_length=length)
        plain = evaluate(mixc_scorer(model), heldout, vocab_size=512, batch_tokens=1024)
        packed = evaluate_model(model, heldout, batch_tokens=1024)
        rows = sum(b.inputs.shape[0] for b in prepared_batches(heldout, 1024, True))
        assert rows < len(_rows(heldout))  # windows really share rows
        for name, s in plain["sources"].items():
            assert packed["sources"][name]["tokens"] == s["tokens"]
            assert packed["sources"][name]["bpb"] == pytest.approx(s["bpb"], abs=1e-6)
        again = evaluate_model(model, heldout, batch_tokens=1024)
        assert again == packed and prepared_batches(heldout, 1024, True) is prepared_batches(heldout, 1024, True)


def test_the_default_interval_costs_the_budget_and_caps_the_count():
    """eval_every 0: an interval whose forward-only passes over the held-out tokens cost about
    AUTO_OVERHEAD of the training in between, never shorter than a run / AUTO_MAX_EVALS."""
    from mixc.train.heldout_eval import AUTO_MAX_EVALS, AUTO_OVERHEAD, auto_interval

    # 1M held-out tokens, 2.36M-token batches, 40 steps: every 5 steps costs ~3%.
    every = auto_interval(1_000_000, 2_359_296, 40)
    assert every == 5
    assert 1_000_000 / 3 / (every * 2_359_296) <= AUTO_OVERHEAD < 1_000_000 / 3 / ((every - 1) * 2_359_296)
    # the demo: 45k held-out tokens, 2,048-token batches, 212 steps: the cost rule alone (245) wins
    assert auto_interval(45_000, 2_048, 212) == 245
    # a held-out set small next to the run: the count rule keeps it to AUTO_MAX_EVALS evaluations
    # (SmolLM3's 11T tokens are 4.7M steps of 2.36M tokens: ten evaluations, ~470k steps apart)
    assert auto_interval(1_000_000, 2_359_296, 4_700_000) == 4_700_000 // AUTO_MAX_EVALS
    assert auto_interval(100, 2_048, 1_000) == 1_000 // AUTO_MAX_EVALS
    assert auto_interval(100, 2_048, 5) == 1
