"""The per-GPU memory estimate (mixc/memory.py) and `mixc plan --gpus`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mixc.cli import main
from mixc.memory import GPU_MEMORY, ModelShape, estimate

ROOT = Path(__file__).resolve().parent.parent
SMOLLM3_3B = ModelShape(layers=36, hidden=2048, intermediate=11008, heads=16, kv_heads=4, vocab=128256)


def test_parameter_count_of_the_3b_and_the_state_terms_by_hand():
    n = 3_075_098_624
    assert SMOLLM3_3B.parameters == n
    est = estimate(SMOLLM3_3B, 4096, 2, 8, fsdp=True)
    assert (est.parameters, est.gradients, est.optimizer) == (4 * n // 8, 4 * n // 8, 8 * n // 8)
    # DDP replicates the state and keeps autocast's bf16 weight copies.
    ddp = estimate(SMOLLM3_3B, 4096, 2, 8, fsdp=False)
    assert (ddp.parameters, ddp.optimizer, ddp.working) == (4 * n, 8 * n, 2 * n)
    # One layer saves 16h + 2 (7h + 4k + 3f) bytes a token in bf16: 131,584 for the 3B.
    assert SMOLLM3_3B.layer_activation_bytes(2) == 16 * 2048 + 2 * (7 * 2048 + 4 * 512 + 3 * 11008) == 131_584
    assert est.activations == 8192 * (37 * 131_584 + 4 * 2048)


def test_the_model_shape_of_the_named_config_matches_the_torch_model():
    from mixc.train.model import count_parameters, get_config

    for name in ("smollm3-3b", "smollm3-tiny", "smollm3-test"):
        config = get_config(name)
        assert ModelShape.of(config).parameters == count_parameters(config)


def test_checkpointing_is_what_makes_32k_fit_on_8_h100s():
    h100 = GPU_MEMORY["h100"]
    plain = estimate(SMOLLM3_3B, 32768, 1, 8)
    ckpt = estimate(SMOLLM3_3B, 32768, 1, 8, activation_checkpointing=True)
    assert not plain.fits(h100) and plain.activations > 140e9
    assert ckpt.fits(h100) and ckpt.total < 30e9


MEASURE = """
import sys, torch
from mixc.train.model import SmolLM3, get_config

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

torch.set_num_threads(1)
B, T, ckpt = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.manual_seed(0)
model = SmolLM3(get_config("smollm3-test"), activation_checkpointing=ckpt)
ids, labels = torch.randint(0, 512, (B, T)), torch.randint(0, 512, (B, T))
_, loss = model(ids[:1, :16], labels=labels[:1, :16], return_logits=False)  # one-time allocations
loss.backward()
model.zero_grad(set_to_none=True)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size to the current one
before = status("VmRSS")
_, loss = model(ids, labels=labels, return_logits=False)
loss.backward()
print(status("VmHWM") - before)
"""


@pytest.mark.parametrize("checkpointing", [False, True])
def test_estimate_bounds_a_measured_cpu_forward_and_backward(checkpointing):
    """Peak resident memory of one fp32 forward + backward of the test model on 16 x 1024
    tokens, against the estimate's activations, gradients and loss buffers (a loose bound: the
    CPU allocator, not the formula, decides the last tens of percent)."""
    from mixc.train.model import get_config

    shape = ModelShape.of(get_config("smollm3-test"))
    out = subprocess.run([sys.executable, "-c", MEASURE, "16", "1024", str(int(checkpointing))], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=120)
    measured = int(out.stdout.strip())
    est = estimate(shape, 1024, 16, 1, fsdp=False, activation_checkpointing=checkpointing, compute_bytes=4)
    predicted = est.activations + est.gradients + est.loss
    assert 0.6 * predicted < measured < 1.8 * predicted, (measured, predicted)


def test_plan_gpus_prints_each_phase_and_names_the_world_sizes_that_work():
    recipe = str(ROOT / "recipes" / "smollm3-3b.yaml")
    result = CliRunner().invoke(main, ["plan", recipe, "--gpus", "8", "--gpu", "h100"])
    assert result.exit_code == 0, result.output
    memory = result.output.split("memory per GPU, 8 x h100")[1].splitlines()[2:]
    rows = {line.split()[0]: line.split() for line in memory}
    assert rows["stable-1"][-1] == "yes" and rows["stable-1"][4] == "off"
    assert rows["long-context-64k"][:5] == ["long-context-64k", "65536", "1", "5", "on"]  # 36 over 8: 5 micro-batches
    forced = CliRunner().invoke(main, ["plan", recipe, "--gpus", "8", "--no-activation-checkpointing"])
    memory = forced.output.split("memory per GPU")[1].splitlines()[2:]
    assert [line.split()[-1] for line in memory] == ["yes", "yes", "yes", "NO", "NO"]
    many = CliRunner().invoke(main, ["plan", recipe, "--gpus", "64", "--format", "json"])
    phases = json.loads(many.stdout)["memory"]["phases"]
    assert "world sizes 1 to 36 work" in phases[-1]["error"] and phases[-1]["fits"] is False
    assert phases[0]["fits"] is True
