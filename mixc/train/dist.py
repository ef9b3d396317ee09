"""Data parallelism for the trainer: one process per device, started by torchrun.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without them the
trainer is one process and nothing here talks to anyone (except `--fsdp` on one GPU, which
opens a one-process group so FSDP2 applies the same mixed precision as on N GPUs). The loader
gives each rank a contiguous slice of every global batch, so ranks only meet to average
gradients (DDP or FSDP2) and to sum the logged loss.

Precision (`precision_policy`): on a GPU, bf16 compute with fp32 master weights, fp32
gradients and fp32 reductions, whatever the number of ranks: FSDP2's MixedPrecisionPolicy
under --fsdp (parameters cast to bf16 for compute, gradients reduced in fp32), autocast bf16
otherwise (DDP all-reduces the fp32 gradients). On CPU everything stays fp32.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import MixcError
from ..memory import ModelShape, needs_checkpointing


@dataclass(frozen=True)
class Precision:
    """How a step computes: `method` "fsdp2" (MixedPrecisionPolicy), "autocast" or "fp32"."""

    method: str
    compute_dtype: torch.dtype
    param_dtype: torch.dtype = torch.float32  # the master weights the optimizer updates
    reduce_dtype: torch.dtype = torch.float32  # gradient reductions across ranks

    def mp_policy(self):
        from torch.distributed.fsdp import MixedPrecisionPolicy  # ~1 s to import: only under --fsdp

        return MixedPrecisionPolicy(param_dtype=self.compute_dtype, reduce_dtype=self.reduce_dtype)

    def autocast(self, device_type: str):
        if self.method != "autocast":
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=self.compute_dtype)


def precision_policy(device_type: str, fsdp: bool, world_size: int) -> Precision:
    """The one place the trainer's precision is chosen. `world_size` is deliberately not
    consulted: one GPU trains with the numbers N GPUs use."""
    del world_size
    if device_type != "cuda":
        return Precision("fp32", torch.float32)
    return Precision("fsdp2" if fsdp else "autocast", torch.bfloat16)


def activation_checkpointing_for(config, seq_len: int, micro_batch: int, world: World, fsdp: bool) -> bool:
    """The default: on for a phase whose step would not fit in the GPU's memory without it
    (mixc/memory.py), off on CPU, where memory is rarely the limit and recomputing costs time."""
    if world.device.type != "cuda":
        return False
    total = torch.cuda.get_device_properties(world.device).total_memory
    return needs_checkpointing(ModelShape.of(config), seq_len, micro_batch, world.world_size, total, fsdp)


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


def setup(device: str = "cpu", fsdp: bool = False) -> World:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or stay alone
    (with a one-process group under `fsdp` on a GPU, for FSDP2's mixed precision)."""
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
    if world_size == 1 and not (fsdp and torch_device.type == "cuda"):
        return World(device=torch_device)
    started = False
    if not dist.is_initialized():
        backend = "nccl" if torch_device.type == "cuda" else "gloo"
        # Alone, a store in this process replaces torchrun's rendezvous.
        store = dist.HashStore() if world_size == 1 else None
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, store=store,
                                device_id=torch_device if torch_device.type == "cuda" else None)
        started = True
    return World(rank, world_size, local_rank, torch_device, started)


def teardown(world: World) -> None:
    if world.started_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World, fsdp: bool = False) -> nn.Module:
    """DDP over the ranks, or FSDP2 (`fully_shard` per decoder layer, then the root) when asked,
    also on one GPU: the precision is FSDP2's policy there too (`precision_policy`)."""
    if fsdp:
        from torch.distributed.fsdp import fully_shard  # ~1 s to import: only under --fsdp

        if world.device.type != "cuda":
            raise MixcError("--fsdp shards over GPUs; on CPU use plain data parallelism (DDP)")
        policy = precision_policy(world.device.type, True, world.world_size).mp_policy()
        for layer in model.layers:
            fully_shard(layer, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    if not world.distributed:
        return model
    # The rotary tables are recomputed identically on every rank: no buffer broadcast needed.
    ids = [world.device.index] if world.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


def sync_gradients(model: nn.Module, enabled: bool):
    """Context that skips the gradient all-reduce on all but a step's last micro-batch."""
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
