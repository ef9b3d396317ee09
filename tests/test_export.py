"""HF export: transformers loads the folder as SmolLM3 and computes mixc's logits, packed input too."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from spec_fixtures import run_cli

from mixc.errors import MixcError
from mixc.train import checkpoint
from mixc.train.export import export_hf, model_from_checkpoint, yarn
from mixc.train.model import SmolLM3, get_config

transformers = pytest.importorskip("transformers")


def mixc_model(seed: int = 0, **overrides) -> SmolLM3:
    torch.manual_seed(seed)
    model = SmolLM3(get_config("smollm3-test", **overrides)).eval()
    with torch.no_grad():  # norms away from 1 so a misplaced norm weight shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return model


def load_hf(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder)
    return model.eval()


def packed_batch():
    gen = torch.Generator().manual_seed(11)
    ids = torch.randint(1, 512, (2, 48), generator=gen)
    pos = torch.arange(48).repeat(2, 1)
    pos[0, 10:] -= 10
    pos[0, 30:] -= 20
    pos[1, 25:] -= 25
    return ids, pos


@pytest.mark.parametrize("tied", [True, False])
def test_transformers_logits_equal_mixc_plain_and_packed(tmp_path, tied):
    model = mixc_model(tie_word_embeddings=tied)
    export_hf(model, model.config, tmp_path)
    hf = load_hf(tmp_path)
    assert type(hf).__name__ == "SmolLM3ForCausalLM"
    ids, pos = packed_batch()
    with torch.no_grad():
        ours_plain, _ = model(ids)
        theirs_plain = hf(ids, use_cache=False).logits
        ours_packed, _ = model(ids, position_ids=pos)
        # transformers derives the document mask from position_ids restarting at 0, but only
        # with use_cache=False and no 2-D attention_mask: exactly this call.
        theirs_packed = hf(input_ids=ids, position_ids=pos, use_cache=False).logits
    torch.testing.assert_close(theirs_plain, ours_plain, atol=1e-4, rtol=0)
    torch.testing.assert_close(theirs_packed, ours_packed, atol=1e-4, rtol=0)
    # the packed comparison can fail: a plain causal run gives different logits after a boundary
    assert (theirs_plain - ours_packed).abs().max() > 1e-2


def test_tied_embedding_is_stored_once(tmp_path):
    model = mixc_model()
    export_hf(model, model.config, tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names
    assert "model.layers.3.self_attn.q_proj.weight" in names and "model.layers.0.mlp.up_proj.weight" in names
    hf = load_hf(tmp_path)
    assert hf.lm_head.weight.data_ptr() == hf.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize("theta", [50000.0, 5e6])
def test_exported_rope_base_is_read_back_as_ours(tmp_path, theta):
    model = mixc_model()
    model.set_rope_theta(theta)
    export_hf(model, model.config, tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["model_type"] == "smollm3" and written["architectures"] == ["SmolLM3ForCausalLM"]
    assert written["rope_theta"] == theta and written["rope_parameters"]["rope_theta"] == theta
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert config.rope_parameters["rope_theta"] == theta != config.default_theta
    assert config.no_rope_layers == model.config.no_rope_layers
    hf = load_hf(tmp_path)
    torch.testing.assert_close(hf.model.rotary_emb.inv_freq, model.rotary.inv_freq, atol=0, rtol=0)


def test_yarn_scaling_is_recorded_for_longer_inference(tmp_path):
    model = mixc_model(rope_theta=5e6, max_position_embeddings=256)
    export_hf(model, model.config, tmp_path, rope_scaling=yarn(2.0, 256))
    config = transformers.AutoConfig.from_pretrained(tmp_path)
    assert config.rope_parameters["rope_type"] == "yarn"
    assert config.rope_parameters["factor"] == 2.0
    assert config.rope_parameters["original_max_position_embeddings"] == 256
    assert config.rope_parameters["rope_theta"] == 5e6
    assert config.max_position_embeddings == 512
    hf = load_hf(tmp_path)
    assert hf.model.rotary_emb.rope_type == "yarn"
    with pytest.raises(MixcError, match="factor"):
        yarn(1.0, 256)


def save_checkpoint(root, model, step=5, **meta_extra):
    state = {"model": model.state_dict(), "step": step}
    meta = {"model_config": model.config.to_dict(), "step": step, "recipe": "smollm3-tiny", "phase": "decay", **meta_extra}
    return checkpoint.save(root, step, state, meta)


def test_export_carries_the_shards_tokenizer_for_auto_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    model = mixc_model(seed=5)
    eos = model.config.eos_token_id
    vocab = {f"w{i}": i for i in range(model.config.vocab_size) if i != eos} | {"<|endoftext|>": eos}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    shards = tmp_path / "shards"
    (shards / "tokenizers").mkdir(parents=True)
    tok.save(str(shards / "tokenizers" / "t.json"))
    save_checkpoint(tmp_path / "run", model, shards=str(shards), tokenizer={"file": "tokenizers/t.json"})
    out = tmp_path / "hf"
    assert run_cli(["export", str(tmp_path / "run"), str(out)]).exit_code == 0
    auto = transformers.AutoTokenizer.from_pretrained(out)
    assert auto.eos_token == "<|endoftext|>" and auto.eos_token_id == eos
    assert auto("w1 w7 w3")["input_ids"] == tok.encode("w1 w7 w3").ids == [1, 7, 3]
    # A store moved away: the weights still export, without a tokenizer.
    (shards / "tokenizers" / "t.json").unlink()
    assert run_cli(["export", str(tmp_path / "run"), str(tmp_path / "hf2")]).exit_code == 0
    assert not (tmp_path / "hf2" / "tokenizer.json").exists() and (tmp_path / "hf2" / "model.safetensors").exists()


def test_model_from_checkpoint_round_trips(tmp_path):
    model = mixc_model(seed=3)
    model.set_rope_theta(2e6)
    folder = save_checkpoint(tmp_path / "run", model)
    loaded, config, meta = model_from_checkpoint(tmp_path / "run")  # a run folder: its latest
    assert config == model.config and meta["phase"] == "decay" and config.rope_theta == 2e6
    ids, pos = packed_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(ids, position_ids=pos)[0], model(ids, position_ids=pos)[0], atol=0, rtol=0)
    (folder / "meta.json").write_text(json.dumps({"step": 5}))
    with pytest.raises(MixcError, match="no model"):
        model_from_checkpoint(folder)


def test_cli_export_checkpoint_format_hf(tmp_path):
    model = mixc_model(seed=4)
    folder = save_checkpoint(tmp_path / "run", model)
    out = tmp_path / "hf"
    result = run_cli(["export", str(folder), "--format", "hf", str(out), "--yarn", "2"])
    assert result.exit_code == 0, result.output
    hf = load_hf(out)
    assert hf.config.rope_parameters["rope_type"] == "yarn" and hf.config.rope_parameters["factor"] == 2.0
    assert hf.config.rope_parameters["original_max_position_embeddings"] == model.config.max_position_embeddings
    ids, _ = packed_batch()
    # The checkpoint names no recipe file: the model's constant, and the config says so.
    assert json.loads((out / "config.json").read_text())["mixc"] == {
        "recipe": "smollm3-tiny", "phase": "decay", "step": 5, "trained_sequence_length": model.config.max_position_embeddings,
        "trained_sequence_length_from": "model config (the checkpoint names no readable recipe phase)"}
    plain = tmp_path / "hf-plain"
    assert run_cli(["export", str(folder), str(plain)]).exit_code == 0  # --format hf is the default
    with torch.no_grad():
        torch.testing.assert_close(load_hf(plain)(ids, use_cache=False).logits, model(ids)[0], atol=1e-4, rtol=0)


@pytest.mark.parametrize("phase, length", [("stable-1", 256), ("long-context-32k", 1024), ("long-context-64k", 2048)])
def test_exported_length_is_the_one_the_checkpoints_phase_trained_at(tmp_path, phase, length):
    """The tiny recipe's 256 / 1024 / 2048 stand for SmolLM3's 4096 / 32768 / 65536: a checkpoint
    exports the sequence length of its own phase (from the recipe the checkpoint names), and YaRN
    scales from there, not from the model's constant."""
    from spec_fixtures import REPO

    recipe = REPO / "recipes" / "smollm3-tiny.yaml"
    model = mixc_model(seed=6, max_position_embeddings=4096)
    save_checkpoint(tmp_path / "run", model, recipe=str(recipe), phase=phase)
    plain, scaled = tmp_path / "hf", tmp_path / "hf-yarn"
    assert run_cli(["export", str(tmp_path / "run"), str(plain)]).exit_code == 0
    assert run_cli(["export", str(tmp_path / "run"), str(scaled), "--yarn", "4"]).exit_code == 0
    assert transformers.AutoConfig.from_pretrained(plain).max_position_embeddings == length
    assert json.loads((plain / "config.json").read_text())["mixc"]["trained_sequence_length_from"] == f"recipe {recipe}, phase {phase}"
    config = transformers.AutoConfig.from_pretrained(scaled)
    assert config.rope_parameters["original_max_position_embeddings"] == length and config.max_position_embeddings == 4 * length
    # A checkpoint that records its sequence length is taken at its word.
    save_checkpoint(tmp_path / "run2", model, sequence_length=65536)
    assert run_cli(["export", str(tmp_path / "run2"), str(tmp_path / "hf2")]).exit_code == 0
    assert transformers.AutoConfig.from_pretrained(tmp_path / "hf2").max_position_embeddings == 65536


def test_cli_export_errors_and_nanotron_subcommand_still_resolves(tmp_path):
    result = run_cli(["export", str(tmp_path / "missing"), "--format", "hf", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "no complete checkpoint found" in result.output and "Traceback" not in result.output
    result = run_cli(["export", "nanotron", "--help"])
    assert result.exit_code == 0 and "data_stages" in result.output
    result = run_cli(["export", "--help"])
    assert result.exit_code == 0 and "--format hf" in result.output


def test_an_interrupted_export_never_looks_complete(tmp_path, monkeypatch):
    import safetensors.torch

    model = mixc_model(seed=6)
    out = tmp_path / "hf"
    export_hf(model, None, out)
    assert (out / "config.json").exists()

    def dies(*_a, **_k):
        raise KeyboardInterrupt  # killed while writing the weights

    monkeypatch.setattr(safetensors.torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        export_hf(model, None, out)
    # The old export is no longer claimed complete: transformers finds no config.json.
    assert not (out / "config.json").exists()
    with pytest.raises((OSError, ValueError)):
        transformers.AutoModelForCausalLM.from_pretrained(out)
    monkeypatch.undo()
    export_hf(model, None, out)  # a rerun finishes it
    assert load_hf(out).config.vocab_size == model.config.vocab_size
