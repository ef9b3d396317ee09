"""`mixc generate`: an HF export continues prompts through transformers exactly as mixc's model would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from spec_fixtures import output_of, run_cli

from mixc.train.export import export_hf
from mixc.train.model import SmolLM3, get_config

pytest.importorskip("transformers")


@pytest.fixture
def exported(tmp_path):
    """A random smollm3-test model exported with a word-level tokenizer.json next to it."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    torch.manual_seed(2)
    model = SmolLM3(get_config("smollm3-test")).eval()
    eos = model.config.eos_token_id
    vocab = {f"w{i}": i for i in range(model.config.vocab_size) if i != eos} | {"<|endoftext|>": eos}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    out = export_hf(model, model.config, tmp_path / "hf")
    tok.save(str(out / "tokenizer.json"))
    return model, tok, out


def greedy(model: SmolLM3, ids: list[int], steps: int) -> list[int]:
    """Greedy decoding with mixc's own model, stopping at EOS as transformers does."""
    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            nxt = int(model(torch.tensor([ids]))[0][0, -1].argmax())
            ids.append(nxt)
            if nxt == model.config.eos_token_id:
                break
    return ids


def test_generate_continues_each_prompt_greedily_like_mixcs_model(exported):
    model, tok, hf = exported
    prompts = ["w1 w2 w3", "w40 w41"]
    result = run_cli(["generate", str(hf), "--prompt", prompts[0], "--prompt", prompts[1], "--max-new-tokens", "6"])
    assert result.exit_code == 0, output_of(result)
    expected = [f"{p!r} -> {tok.decode(greedy(model, tok.encode(p).ids, 6), skip_special_tokens=False)!r}" for p in prompts]
    assert result.stdout.splitlines() == expected
    assert len(expected[0].split(" -> ")[1].split()) > 3  # something was generated


@pytest.mark.slow
def test_python_dash_m_is_the_same_command(exported):
    _, _, hf = exported
    cli = run_cli(["generate", str(hf), "--prompt", "w5", "--max-new-tokens", "3"])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "mixc.train.generate", str(hf), "--prompt", "w5", "--max-new-tokens", "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == cli.stdout and cli.stdout.startswith("'w5' -> 'w5 ")


def test_generate_errors_are_one_line(exported, tmp_path):
    _, _, hf = exported
    (tmp_path / "empty").mkdir()
    result = run_cli(["generate", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "no config.json" in output_of(result) and "Traceback" not in output_of(result)
    (hf / "tokenizer.json").unlink()
    result = run_cli(["generate", str(hf)])
    assert result.exit_code == 1 and "no tokenizer.json" in output_of(result) and "--tokenizer" in output_of(result)
    assert output_of(result).count("\n") == 1
