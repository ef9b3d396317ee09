"""Data parallelism for the trainer: one process per device, started by torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the
trainer is one process and nothing here talks to anyone. The loader gives each rank a
contiguous slice of every global batch, so ranks only meet to average gradients (DDP or
FSDP2) and to sum the logged loss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from ..errors import MixcError


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    started_here: bool = False  # we created the process group, so we destroy it

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(device: str = "cpu") -> World:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or stay alone."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MixcError("--device cuda was asked for but torch sees no CUDA device")
        torch_device = torch.device("cuda", local_rank if world_size > 1 else torch.device(device).index or 0)
        torch.cuda.set_device(torch_device)
    elif device == "cpu":
        torch_device = torch.device("cpu")
    else:
        raise MixcError(f"unknown device '{device}' (expected cpu or cuda)")
    if world_size == 1:
        return World(device=torch_device)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                device_id=torch_device if torch_device.type == "cuda" else None)
        started = True
    return World(rank, world_size, local_rank, torch_device, started)


def teardown(world: World) -> None:
    if world.started_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, fsdp: bool = False) -> nn.Module:
    """DDP over the ranks, or FSDP2 (`fully_shard` per decoder layer, then the root) when asked."""
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        if world.device.type != "cuda":
            raise MixcError("--fsdp shards over GPUs; on CPU use plain data parallelism (DDP)")
        if not world.distributed:
            return model  # one GPU: nothing to shard over
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for layer in model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if not world.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    # The rotary tables are recomputed identically on every rank: no buffer broadcast needed.
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def sync_gradients(model: nn.Module, enabled: bool):
    """Context that skips the gradient all-reduce on all but a step's last micro-batch."""
    import contextlib

    if hasattr(model, "no_sync") and not enabled:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def sum_across(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(obj, world: World) -> list:
    """Every rank's `obj`, in rank order (a list of one when alone)."""
    if not world.distributed:
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out
