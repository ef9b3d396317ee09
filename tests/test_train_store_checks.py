"""`mixc train` is bound to its data: it checks the store before step 1, and a resumed run
refuses a store or recipe that would silently change what the checkpoint was trained on.

Every refusal goes through the CLI: exit 1, one line naming what is wrong, no traceback.
Stores are written with make_store (vocabulary 300, model smollm3-test); runs are 1-3 steps.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from loader_fixtures import MIX_ONE, MIX_TWO
from store_fixtures import make_store
from test_train import RECIPE, pattern_docs

from mixc.cli import main
from mixc.loader import CurriculumStream
from mixc.plan import plan_recipe
from mixc.shards.tokenizer import tokenizer_fingerprint
from mixc.spec import Recipe, load_recipe
from mixc.store import source_token_counts, write_json_atomic
from mixc.streams import source_streams
from mixc.train import checkpoint
from mixc.train.binding import RESUME_RULES

PHASES = {"one": {"a": 3, "b": 1}, "two": {"a": 1, "b": 1, "c": 2}, "long": {"a": 1, "b": 1, "c": 2}}


def docs(a_docs: int = 300, a_seed: int = 1) -> dict[str, list[np.ndarray]]:
    return {"a": pattern_docs(1, a_docs, a_seed), "b": pattern_docs(100, 200, 2), "c": pattern_docs(200, 200, 3)}


def project(root: Path, recipe: str = RECIPE, store_docs: dict | None = None) -> tuple[Path, Path]:
    """recipe.yaml + mixes in `root`, and a store `root/store`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "recipe.yaml").write_text(recipe)
    (root / "one.yaml").write_text(MIX_ONE)
    (root / "two.yaml").write_text(MIX_TWO)
    return root / "recipe.yaml", make_store(root, "train-test", PHASES, store_docs or docs(), vocab_size=300)


def cli_train(recipe: Path, store: Path, out: Path, *args) -> object:
    return CliRunner().invoke(main, ["train", str(recipe), "--shards", str(store), "--out", str(out), "--threads", "1",
                                     "--log-every", "0", *map(str, args)])


def refused(result, *expected: str) -> str:
    """The one error line of a refused command, checked."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def folder(store: Path, source: str) -> Path:
    return next((store / "sources" / source).iterdir())


def rehash(src_folder: Path) -> None:
    """Make the manifest's checksums match the files again, so only the deeper check can fire."""
    m = json.loads((src_folder / "manifest.json").read_text())
    for f in m["files"]:
        f["sha256"] = hashlib.sha256((src_folder / f["path"]).read_bytes()).hexdigest()
        f["index_sha256"] = hashlib.sha256((src_folder / (f["path"] + ".index")).read_bytes()).hexdigest()
    write_json_atomic(src_folder / "manifest.json", m)


def set_tokenizer(store: Path, info: dict) -> None:
    """Record another tokenizer in every manifest, as a rebuild with it would."""
    for path in [*store.glob("sources/*/*/manifest.json"), *store.glob("phases/*/*.json")]:
        m = json.loads(path.read_text())
        m["tokenizer"] = dict(info)
        write_json_atomic(path, m)


def first_token_read(recipe: Path, store: Path) -> tuple[Path, int]:
    """The shard file and token offset of the first token step 1 reads."""
    plan = plan_recipe(load_recipe(recipe), source_token_counts(store, "train-test"))
    streams = source_streams(store, plan)
    stream = CurriculumStream(plan, streams, seed=plan.recipe.seed)
    _, indices = stream.rank_indices(0)
    phase = stream.phases[0]
    src, idx, _ = phase.blend.lookup(np.asarray(indices[:1], dtype=np.int64))
    source = streams[phase.names[int(src[0])]]
    position = int(idx[0]) * (phase.seq_len + 1)
    f = int(np.searchsorted(source.file_starts, position, side="right")) - 1
    return source.files[f], position - int(source.file_starts[f])


# ----------------------------------------------------------------------- the store, before step 1


def test_a_clean_store_trains(tmp_path):
    recipe, store = project(tmp_path)
    result = cli_train(recipe, store, tmp_path / "run", "--max-steps", "1", "--verify-store")
    assert result.exit_code == 0, result.output


def _truncate_index(store):
    index = folder(store, "a") / "00001.ds.index"
    index.write_bytes(index.read_bytes()[:-8])
    return ["source 'a'", f"{index}: "]


def _delete_metadata(store):
    meta = folder(store, "b") / "00000.ds.metadata"
    meta.unlink()
    return ["source 'b'", f"{meta}: missing"]


def _unlisted_shard(store):
    extra = folder(store, "c") / "00009.ds"
    shutil.copy(folder(store, "c") / "00000.ds", extra)
    return ["source 'c'", f"{extra}: shard file not listed in the manifest"]


def _wrong_vocab(store):
    m = json.loads((folder(store, "a") / "manifest.json").read_text())
    m["tokenizer"]["vocab_size"] = 200
    write_json_atomic(folder(store, "a") / "manifest.json", m)
    return ["source 'a'", "tokenizer vocab_size 200 in the folder's manifest, 300 in the phase manifest"]


def _non_increasing_index(store):
    index = folder(store, "a") / "00000.ds.index"
    ends = np.fromfile(index, dtype="<u8")
    ends[[3, 4]] = ends[[4, 3]]
    ends.tofile(index)
    rehash(folder(store, "a"))
    return ["source 'a'", f"{index}: document ends are not increasing"]


def _deleted_index(store):
    index = folder(store, "b") / "00001.ds.index"
    index.unlink()
    return ["source 'b'", f"{index}: missing"]


def _short_ds(store):
    ds = folder(store, "c") / "00000.ds"
    ds.write_bytes(ds.read_bytes()[:-2])
    return ["source 'c'", f"{ds}: ", "bytes, expected"]


def _missing_folder(store):
    shutil.rmtree(folder(store, "c"))
    return ["phases/train-test/two.json: source 'c': folder sources/c/"]


@pytest.mark.parametrize("damage", [_truncate_index, _delete_metadata, _unlisted_shard, _wrong_vocab, _non_increasing_index,
                                    _deleted_index, _short_ds, _missing_folder])
def test_a_damaged_store_is_refused_before_step_1(tmp_path, damage):
    recipe, store = project(tmp_path)
    expected = damage(store)
    refused(cli_train(recipe, store, tmp_path / "run"), "the shard store fails its checks", *expected)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # refused before any step
    # `mixc verify` rejects the same store.
    assert CliRunner().invoke(main, ["verify", str(store)]).exit_code == 1


def test_a_flipped_byte_is_caught_where_its_id_is_read_or_by_verify_store(tmp_path):
    recipe, store = project(tmp_path)
    shard, offset = first_token_read(recipe, store)
    data = bytearray(shard.read_bytes())
    data[2 * offset + 1] ^= 0x40  # the high byte of a uint16 token: id 16384 + something, over the vocabulary
    shard.write_bytes(bytes(data))
    # The cheap checks do not read token files; the batch holding the id names source and shard.
    line = refused(cli_train(recipe, store, tmp_path / "run"), f"shard {shard} holds token id", f"at token {offset}",
                   "outside the vocabulary of 300")
    assert re.search(r"source '[abc]'", line)
    # The same line when a DataLoader worker process meets it.
    assert refused(cli_train(recipe, store, tmp_path / "run1", "--workers", "1")) == line
    # --verify-store reads every token file against its checksum before step 1.
    refused(cli_train(recipe, store, tmp_path / "run2", "--verify-store"), f"{shard}: sha256 does not match the manifest")


def test_ids_over_the_vocabulary_in_a_consistently_written_store_are_named(tmp_path):
    # Written as if a tokenizer with 300 ids made it, but holding id 450 (below the model's
    # 512: without the check this trains silently on a token the tokenizer does not have).
    bad = docs()
    for d in bad["a"] + bad["b"] + bad["c"]:
        d[::7] = 450
    recipe, store = project(tmp_path, store_docs=bad)
    refused(cli_train(recipe, store, tmp_path / "run"), "holds token id 450", "outside the vocabulary of 300")


def _wordlevel(store: Path, vocab_size: int = 300) -> dict:
    """A real tokenizer file in the store, recorded in every manifest."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<eos>": 0, **{f"w{i}": i for i in range(1, vocab_size)}}, unk_token="<eos>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (store / "tokenizers").mkdir(exist_ok=True)
    path = store / "tokenizers" / "test.json"
    tok.save(str(path))
    info = {"name": "test", "fingerprint": tokenizer_fingerprint(path.read_text(), "<eos>"), "vocab_size": vocab_size,
            "eos_token": "<eos>", "eos_id": 0, "file": "tokenizers/test.json"}
    set_tokenizer(store, info)
    return info


def test_a_corrupted_tokenizer_file_is_refused_by_train_verify_and_export(tmp_path):
    recipe, store = project(tmp_path)
    _wordlevel(store)
    assert CliRunner().invoke(main, ["verify", str(store)]).exit_code == 0
    assert cli_train(recipe, store, tmp_path / "run", "--max-steps", "1").exit_code == 0
    tok = store / "tokenizers" / "test.json"
    tok.write_text(tok.read_text().replace('"w17"', '"w71x"'))  # still valid JSON, another tokenizer
    expected = "tokenizer file tokenizers/test.json does not match the fingerprint the shards were built with"
    refused(cli_train(recipe, store, tmp_path / "run2"), "the shard store fails its checks", expected)
    verify = CliRunner().invoke(main, ["verify", str(store)])
    assert verify.exit_code == 1 and expected in verify.stderr
    export = CliRunner().invoke(main, ["export", str(tmp_path / "run"), str(tmp_path / "hf")])
    assert export.exit_code == 1 and expected in export.stderr and "Traceback" not in export.output
    assert not (tmp_path / "hf" / "tokenizer.json").exists()


# ----------------------------------------------------------------------- resume


@pytest.fixture
def trained(tmp_path):
    """A project trained 2 steps (phase 'one' started, not finished)."""
    recipe, store = project(tmp_path / "p")
    assert cli_train(recipe, store, tmp_path / "run", "--max-steps", "2").exit_code == 0
    return recipe, store, tmp_path / "run"


def test_resume_after_a_rebuild_with_another_tokenizer_is_refused(trained):
    recipe, store, run = trained
    set_tokenizer(store, {"name": "other", "fingerprint": "e" * 64, "vocab_size": 300, "eos_token": "<eos>", "eos_id": 0})
    refused(cli_train(recipe, store, run, "--resume"), "cannot resume from", "the shard store's tokenizer changed",
            "'test' (fingerprint ffffffffffff)", "'other' (fingerprint eeeeeeeeeeee)")


def test_resume_after_the_source_contents_change_is_refused(trained, tmp_path):
    recipe, store, run = trained
    root = recipe.parent
    shutil.rmtree(store)
    make_store(root, "train-test", PHASES, docs(a_seed=7), vocab_size=300)  # same size, other documents
    refused(cli_train(recipe, store, run, "--resume"), "phase 'one' has started", "source 'a' contents changed under "
            "the same key")
    make_store(root, "train-test", PHASES, docs(a_docs=280), vocab_size=300)  # another input: another folder key
    old_key = json.loads((run / "checkpoints" / "step-000000002" / "meta.json").read_text())
    old_key = next(s["key"] for s in old_key["binding"]["phases"][0]["sources"] if s["name"] == "a")
    new_key = next(p.name for p in (store / "sources" / "a").iterdir() if p.name != old_key)
    refused(cli_train(recipe, store, run, "--resume"), f"source 'a' store folder key {old_key} -> {new_key}")


@pytest.mark.parametrize(("edit", "expected"), [
    (("seed: 11", "seed: 12"), "recipe field 'seed' changed from 11 to 12"),
    (("model: smollm3-test", "model: smollm3-tiny"), "recipe field 'model' changed from 'smollm3-test' to 'smollm3-tiny'"),
    (("tokenizer: test", "tokenizer: other"), "recipe field 'tokenizer' changed"),
    (("global_batch_tokens: 256", "global_batch_tokens: 512"), "recipe field 'global_batch_tokens' changed from 256 to 512"),
    (("    sequence_length: 32\n    rope_theta: 10000\n  - name: two",
      "    sequence_length: 16\n    rope_theta: 10000\n  - name: two"),
     "phase 'one' has started (the checkpoint is at step 2) and changed: sequence_length 32 -> 16"),
    (("steps: 4\n    sequence_length: 32\n    rope_theta: 10000\n  - name: two",
      "steps: 1\n    sequence_length: 32\n    rope_theta: 10000\n  - name: two",
      "decay_start_step: 6\n  decay_steps: 3", "decay_start_step: 3\n  decay_steps: 2"),
     "phase 'one' has trained 2 steps and now has only 1"),
])
def test_resume_refuses_a_changed_field_it_cannot_apply(trained, edit, expected):
    recipe, store, run = trained
    text = RECIPE
    for old, new in zip(edit[::2], edit[1::2]):
        assert old in text
        text = text.replace(old, new)
    recipe.write_text(text)
    refused(cli_train(recipe, store, run, "--resume"), "cannot resume from", expected)
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_applies_new_optimizer_settings_and_names_them(trained):
    recipe, store, run = trained
    recipe.write_text(RECIPE.replace("optimizer:\n  grad_clip: 1.0", "optimizer:\n  grad_clip: 0.5\n  weight_decay: 0.3\n"
                                     "  beta2: 0.99\n  eps: 1.0e-6"))
    result = cli_train(recipe, store, run, "--resume", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning: resuming with changed settings"))
    for said in ("optimizer.beta2 0.95 -> 0.99", "optimizer.eps 1e-08 -> 1e-06", "optimizer.grad_clip 1.0 -> 0.5",
                 "optimizer.weight_decay 0.1 -> 0.3"):
        assert said in warning, warning
    # The optimizer that took step 3 had the recipe's settings, not the checkpoint's.
    state = torch.load(run / "checkpoints" / "step-000000003" / "state.pt", weights_only=False)
    decay, no_decay = state["optimizer"]["param_groups"]
    assert tuple(decay["betas"]) == (0.9, 0.99) and decay["eps"] == 1e-6 and decay["weight_decay"] == 0.3
    assert tuple(no_decay["betas"]) == (0.9, 0.99) and no_decay["weight_decay"] == 0.0
    # ... and the next resume with the same recipe has nothing to say.
    again = cli_train(recipe, store, run, "--resume", "--max-steps", "4")
    assert again.exit_code == 0 and "warning" not in again.output


def test_resume_warns_about_a_phase_not_started_and_extends_the_current_one(trained):
    recipe, store, run = trained
    (recipe.parent / "three.yaml").write_text(MIX_TWO.replace("c: {weight: 0.5", "c: {weight: 1.5"))
    edited = RECIPE.replace("    mix: two.yaml\n    steps: 3", "    mix: three.yaml\n    steps: 3")
    edited = edited.replace("steps: 4\n    sequence_length: 32\n    rope_theta: 10000\n  - name: two",
                            "steps: 5\n    sequence_length: 32\n    rope_theta: 10000\n  - name: two")
    assert edited.count("three.yaml") == 1 and "steps: 5" in edited
    recipe.write_text(edited)
    result = cli_train(recipe, store, run, "--resume", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    warning = next(line for line in result.output.splitlines() if line.startswith("warning: resuming"))
    assert "phase 'one' steps 4 -> 5" in warning and "phase 'long' (not started) changed: source" in warning, warning


def test_old_and_new_checkpoints_record_the_binding(trained):
    _, store, run = trained
    meta = json.loads((checkpoint.latest(run / "checkpoints") / "meta.json").read_text())
    binding = meta["binding"]
    assert binding["tokenizer"]["fingerprint"] == "f" * 64
    assert binding["recipe"]["seed"] == 11 and binding["recipe"]["model"] == "smollm3-test"
    one = binding["phases"][0]
    assert one["name"] == "one" and one["first_step"] == 0 and one["samples_per_step"] == 8
    a = next(s for s in one["sources"] if s["name"] == "a")
    assert a["key"] == folder(store, "a").name and a["tokens"] == json.loads((folder(store, "a") / "manifest.json").read_text())["tokens"]


# ----------------------------------------------------------------------- every field has a rule


def _fields(model, prefix: str = "") -> list[str]:
    out = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        inner = [t for t in getattr(info.annotation, "__args__", (info.annotation,)) if isinstance(t, type)]
        nested = [t for t in inner if hasattr(t, "model_fields")]
        if name == "phases":
            from mixc.spec import Phase

            out += _fields(Phase, "phases[].")
        elif nested:
            out += _fields(nested[0], f"{path}.")
        else:
            out.append(path)
    return out


def test_every_recipe_field_has_a_documented_resume_rule():
    fields = _fields(Recipe)
    assert "optimizer.weight_decay" in fields and "phases[].schedule.peak_lr" in fields and "seed" in fields
    assert sorted(set(fields) - set(RESUME_RULES)) == []
    assert sorted(set(RESUME_RULES) - set(fields)) == []
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme[readme.index("Resume rules"):]
    for field, (rule, _) in RESUME_RULES.items():
        assert re.search(rf"\| `{re.escape(field)}` \| {rule} \|", table), field


def test_a_real_build_trains_then_refuses_a_rebuild_with_another_tokenizer_or_input(tmp_path):
    """End to end on `mixc build` output: the cheap checks pass a fresh store; a resume after
    rebuilding it with another tokenizer, or from another input, is refused."""
    from build_fixtures import texts, train_tokenizer, write_jsonl, write_project

    from mixc.shards.run import build

    tokenizer = train_tokenizer(tmp_path / "tok.json", vocab_size=400)
    web = tmp_path / "data" / "web.jsonl"
    write_jsonl(web, texts(1, 200))
    write_jsonl(tmp_path / "data" / "code.jsonl", texts(2, 200))
    sources = {"web": {"category": "web", "format": "jsonl", "path": str(web)},
               "code": {"category": "code", "format": "jsonl", "path": str(tmp_path / "data" / "code.jsonl")}}
    recipe = write_project(tmp_path, sources, {"one": {"web": 2, "code": 1}}, tokenizer=str(tokenizer))
    recipe.write_text(recipe.read_text().replace("model: m", "model: smollm3-test"))
    store, run = tmp_path / "store", tmp_path / "run"

    def rebuild(**kw):
        build(recipe, out=store, workers=1, progress=False, **kw)

    rebuild()
    assert cli_train(recipe, store, run, "--max-steps", "1").exit_code == 0
    other = train_tokenizer(tmp_path / "other.json", vocab_size=420)
    rebuild(tokenizer=str(other))
    refused(cli_train(recipe, store, run, "--resume"), "the shard store's tokenizer changed")
    rebuild()  # the first tokenizer again: the store is the run's again
    assert cli_train(recipe, store, run, "--resume", "--max-steps", "2").exit_code == 0
    write_jsonl(web, texts(5, 200))
    rebuild()
    refused(cli_train(recipe, store, run, "--resume"), "phase 'one' has started", "source 'web' store folder key")
