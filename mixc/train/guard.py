"""Non-finite training steps: never apply a NaN or infinite update, never checkpoint one.

The loop checks every step's loss and gradient norm before `optimizer.step()`
(`clip_grad_norm_` measures the norm first; any NaN or infinite gradient makes it non-finite,
and a loss that overflowed shows up there as an infinite gradient even while the loss itself
prints as a finite 8e31). A non-finite step's gradients are dropped, the update is not made,
and the recipe's `nonfinite` block decides what follows:

- `stop`: the run ends with one line naming the step and the last good checkpoint (exit 1).
- `skip` (the default): the step's batch is dropped and the run goes on, from the same weights,
  with the next batch. A lone bad batch costs one batch; `limit` consecutive skips means the
  cause is not one batch (a learning rate or z-loss far too high) and the run stops instead of
  burning compute. It needs no checkpoint and no recomputation, which is why it is the default.
- `rollback`: the weights, optimizer and RNG go back to the newest checkpoint, and every batch
  since it (up to and including the bad one) is dropped, as PaLM did for loss spikes that build
  up over many steps. At most `limit` rollbacks; before the first checkpoint it skips the step.

Either way the loader moves past the dropped batches, and the dropped steps are recorded in
metrics.jsonl ("skipped") and in every later checkpoint's meta ("skipped_steps"), with the
counters `limit` needs. The decision depends only on the weights and the data, so a resumed
run drops the same steps and ends with the weights of an uninterrupted one.

A checkpoint is written only after checking the model and optimizer state are finite (an
update from finite gradients can still overflow the optimizer's moments); a non-finite state
rolls back under `rollback` and stops the run otherwise, leaving the last good checkpoint
the newest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import MixcError
from . import checkpoint


def step_problem(loss: float, grad_norm: float) -> str | None:
    """Why a step's update must not be applied, or None when it may."""
    if not math.isfinite(grad_norm):
        return f"gradient norm {grad_norm}" + ("" if math.isfinite(loss) else f", loss {loss}")
    if not math.isfinite(loss):
        return f"loss {loss}"
    return None


def state_problem(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str | None:
    """The first non-finite tensor of this rank's model or optimizer state, or None."""
    named = {f"model.{name}": p for name, p in model.named_parameters()}
    named.update({f"model.{name}": b for name, b in model.named_buffers()})
    for i, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            named[f"optimizer.{i}.{key}"] = value
    bad = next(checkpoint.nonfinite_tensors(named), None)
    return f"non-finite values in {bad}" if bad else None


@dataclass
class Guard:
    policy: str = "skip"
    limit: int = 5
    skipped: list[int] = field(default_factory=list)  # 1-based global steps whose update was dropped
    consecutive: int = 0  # skips in a row, up to the last step
    rollbacks: int = 0

    @classmethod
    def from_recipe(cls, settings, meta: dict[str, Any]) -> Guard:
        """The recipe's policy, with the history a checkpoint's meta carries (a resumed run)."""
        return cls(policy=settings.policy, limit=int(settings.limit), skipped=[int(s) for s in meta.get("skipped_steps", [])],
                   consecutive=int(meta.get("consecutive_skips", 0)), rollbacks=int(meta.get("rollbacks", 0)))

    def meta(self) -> dict[str, Any]:
        """The history a checkpoint carries (in its meta.json, and in its state as "guard")."""
        return {"skipped_steps": list(self.skipped), "consecutive_skips": self.consecutive, "rollbacks": self.rollbacks}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.skipped = [int(s) for s in state.get("skipped_steps", [])]
        self.consecutive = int(state.get("consecutive_skips", 0))
        self.rollbacks = int(state.get("rollbacks", 0))

    def passed(self) -> None:
        self.consecutive = 0

    def decide(self, step: int, problem: str, where: str, last_good: Any) -> str:
        """"skip" or "rollback" for non-finite step `step` (1-based), or a MixcError that stops the run."""
        good = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written yet"
        head = f"step {step} ({where}): {problem}; the update was not applied"
        if self.policy == "stop":
            raise MixcError(f"{head}; stopping (recipe nonfinite.policy: stop); {good}; lower the learning rate "
                            "or check the data")
        if self.policy == "rollback":
            if self.rollbacks >= self.limit:
                raise MixcError(f"{head}; {self.rollbacks} rollback(s) already, stopping (recipe nonfinite.limit: "
                                f"{self.limit}); {good}; lower the learning rate or check the data")
            return "rollback" if last_good else "skip"
        if self.consecutive >= self.limit:
            first = step - self.consecutive
            raise MixcError(f"{head}; steps {first}-{step} all non-finite, stopping after {self.limit} consecutive "
                            f"skips (recipe nonfinite.limit); {good}; lower the learning rate or check the data")
        return "skip"

    def record_skip(self, steps: range) -> None:
        self.skipped = sorted(set(self.skipped) | set(steps))
        self.consecutive += 1

    def record_rollback(self, steps: range) -> None:
        self.skipped = sorted(set(self.skipped) | set(steps))
        self.rollbacks += 1
        self.consecutive = 0
