"""`--compile`: each layer's halves around its attention kernel compiled with torch.compile.

A user turns it on for speed and must get the same training: the same loss and gradients (up to
float rounding, since inductor fuses and reorders elementwise work), the same checkpoints and
export layout, and no recompilation when only the batch's document layout changes (on CPU the
attention kernel runs once per document, which would otherwise specialise every graph)."""

from __future__ import annotations

import json

import pytest
import torch
from test_train import metrics, recipe_store, run  # noqa: F401  (recipe_store is a fixture)
from torch._dynamo.utils import counters

from mixc.train import checkpoint
from mixc.train.model import SmolLM3, get_config


def packed(rows: list[list[int]], vocab: int = 512, seed: int = 0):
    """input_ids, position_ids and labels for rows made of documents of the given lengths."""
    gen = torch.Generator().manual_seed(seed)
    pos = torch.stack([torch.cat([torch.arange(n) for n in row]) for row in rows])
    ids = torch.randint(1, vocab, pos.shape, generator=gen)
    return ids, pos, torch.randint(1, vocab, pos.shape, generator=gen)


def loss_and_grads(model: SmolLM3, batch) -> tuple[float, dict[str, torch.Tensor]]:
    ids, pos, labels = batch
    model.zero_grad(set_to_none=True)
    _, loss = model(ids, position_ids=pos, labels=labels, return_logits=False)
    loss.backward()
    return loss.item(), {name: p.grad.clone() for name, p in model.named_parameters()}


def pair(**overrides) -> tuple[SmolLM3, SmolLM3]:
    config = get_config("smollm3-test", **overrides)
    eager, compiled = (SmolLM3.build(config, "cpu", seed=5).train() for _ in range(2))
    return eager, compiled.compile_blocks()


def test_compiled_layers_give_the_eager_loss_and_gradients_without_recompiling_per_layout():
    torch._dynamo.reset()
    eager, compiled = pair()
    assert compiled.state_dict().keys() == eager.state_dict().keys()  # checkpoints and export unchanged
    layouts = [packed([[64], [64]]), packed([[20, 30, 14], [64]], seed=1), packed([[5, 59], [33, 31]], seed=2),
               packed([[1, 62, 1], [40, 24]], seed=3)]
    graphs = []
    for batch in layouts:
        want, want_grads = loss_and_grads(eager, batch)
        got, got_grads = loss_and_grads(compiled, batch)
        assert got == pytest.approx(want, rel=1e-5)
        for name, grad in want_grads.items():
            torch.testing.assert_close(got_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
        graphs.append(counters["stats"]["unique_graphs"])
    assert graphs[0] > 0
    # The first packed layout may add graphs (none expected); further layouts must not.
    assert graphs[1] == graphs[2] == graphs[3], graphs


def test_compiled_layers_with_activation_checkpointing_match_plain_compiled():
    torch._dynamo.reset()
    _, plain = pair()
    _, checkpointed = pair()
    checkpointed.activation_checkpointing = True
    batch = packed([[10, 30, 24], [64]])
    want, want_grads = loss_and_grads(plain, batch)
    got, got_grads = loss_and_grads(checkpointed, batch)
    assert got == pytest.approx(want, rel=1e-6)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_train_with_compile_follows_the_eager_run_and_resumes(recipe_store, tmp_path):  # noqa: F811
    # Five steps cross from phase one into phase two; the run then resumes compiled to step 9,
    # across the switch to the 64-token phase (a new shape: compiled once more).
    run(recipe_store, tmp_path / "eager", max_steps=9)
    run(recipe_store, tmp_path / "compiled", max_steps=5, compile=True)
    run(recipe_store, tmp_path / "compiled", max_steps=9, compile=True, resume=True)
    eager, compiled = metrics(tmp_path / "eager"), metrics(tmp_path / "compiled")
    assert [m["step"] for m in compiled] == [m["step"] for m in eager] == list(range(1, 10))
    for a, b in zip(eager, compiled):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-4), a["step"]
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3), a["step"]
    assert json.loads((tmp_path / "compiled" / "run.json").read_text())["compile"] is True
    state, _ = checkpoint.load(checkpoint.latest(tmp_path / "compiled" / "checkpoints"))
    reference, _ = checkpoint.load(checkpoint.latest(tmp_path / "eager" / "checkpoints"))
    assert state["model"].keys() == reference["model"].keys()
    for name, tensor in reference["model"].items():
        torch.testing.assert_close(state["model"][name], tensor, rtol=1e-3, atol=1e-5, msg=name)
