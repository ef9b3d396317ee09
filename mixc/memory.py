"""Per-GPU memory of a training step, estimated from the model shape alone (no torch).

    est = estimate(ModelShape.of(config), seq_len=32768, micro_batch=1, world_size=8,
                   fsdp=True, activation_checkpointing=True)

N parameters, W ranks, FSDP sharding over all W (DDP: W = 1 for the state terms), B x T
tokens per micro-batch, L layers, hidden h, key/value width k (= kv heads x head dim),
MLP width f, vocabulary V. Bytes per GPU:

    parameters   4N / W             fp32 master weights
    gradients    4N / W             fp32 (FSDP2 reduces in fp32 and keeps the shard)
    optimizer    8N / W             AdamW's two fp32 moments
    working      FSDP: 2 x (V h + 2 x layer)   bf16 copies gathered for compute (the tied
                                                embedding, and one layer plus the prefetched next)
                 DDP/one GPU: 2N                autocast's bf16 weight copies
    activations  B T x ((L + 1) a + e)      without checkpointing
                 B T x (L r h + 2 a + e)    with per-layer checkpointing: each layer keeps its
                                    input (r bytes an element: 2 under FSDP2's bf16
                                    parameters, 4 under autocast, whose residual stream stays
                                    fp32) and one layer's full activations live again during
                                    its recomputation
                 (the extra a in both: the gradients of one layer's activations, alive while
                 backward runs through it)
    loss         4 V h + 4 B T h + z    the fp32 output-weight gradient, the fp32
                                    hidden-state gradient and one logits chunk z
                                    (ChunkedLinearCrossEntropy in mixc/train/model.py: 1 GiB of
                                    fp32 logits and their bf16 copy on a GPU, 16 MiB on CPU)

where a, the bytes one layer saves for backward per token with compute in c-byte elements, is

    a = 16 h + c x (7 h + 4 k + 3 f)

(two RMSNorms keep fp32 input and output, 8 h each; qkv input h, the rotary inputs and their
rotated halves 2 (h + k), attention's q, k, v and output h + 2 k + h, o_proj's contiguous
input h, gate_up input h, the SwiGLU input 2 f, down_proj input f). e = 2 x c h covers the
embedding output and the final norm. For the 3B in bf16 (c = 2) a is 131,584 bytes: 4.7 MB
per token over 36 layers, ~160 GB for one 32k sequence; with checkpointing ~14 GB. A
forward and backward of the tiny test model on CPU (fp32) peaks within about 0.9-1.4x of
this estimate (tests/test_memory.py).

A phase fits when the total is at most 90% of the GPU's memory: the rest is left for the CUDA
context, NCCL buffers and allocator fragmentation. Attention is assumed to keep no T x T
matrix (flash/varlen, flex or the CPU's per-document SDPA); the dense-mask SDPA fallback on
packed GPU rows would add B T^2 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import MixcError
from .loader import check_split, micro_batch_sizes

# Usable memory as nvidia-smi reports it (MiB), by the names `mixc plan --gpu` accepts.
GPU_MEMORY = {"h100": 81559 * 2**20, "h200": 143771 * 2**20, "a100": 81920 * 2**20, "a100-40gb": 40960 * 2**20}
FIT_FRACTION = 0.9
LOGITS_CHUNK_BYTES = 1 << 24  # mixc/train/model.py CHUNK_BYTES (CPU)
GPU_LOGITS_CHUNK_BYTES = 3 * (1 << 29)  # GPU_CHUNK_BYTES of fp32 logits + their bf16 gradient copy


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = True

    @classmethod
    def of(cls, config) -> ModelShape:
        """From any object with transformers' config field names (SmolLM3Config, a dict-like)."""
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        return cls(get("num_hidden_layers"), get("hidden_size"), get("intermediate_size"), get("num_attention_heads"),
                   get("num_key_value_heads"), get("vocab_size"), bool(get("tie_word_embeddings", True)))

    @property
    def kv_width(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def layer_parameters(self) -> int:
        h, k = self.hidden, self.kv_width
        return 2 * h * h + 2 * h * k + 3 * h * self.intermediate + 2 * h

    @property
    def parameters(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return self.layers * self.layer_parameters + embeddings + self.hidden

    def layer_activation_bytes(self, compute_bytes: int = 2) -> int:
        """a: bytes one decoder layer saves for backward per token (see the module docstring)."""
        h, k, f = self.hidden, self.kv_width, self.intermediate
        return 16 * h + compute_bytes * (7 * h + 4 * k + 3 * f)


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    gradients: int
    optimizer: int
    working: int
    activations: int
    loss: int

    @property
    def total(self) -> int:
        return self.parameters + self.gradients + self.optimizer + self.working + self.activations + self.loss

    def fits(self, device_bytes: int) -> bool:
        return self.total <= FIT_FRACTION * device_bytes

    def as_dict(self) -> dict[str, int]:
        return {"parameters": self.parameters, "gradients": self.gradients, "optimizer": self.optimizer,
                "working": self.working, "activations": self.activations, "loss": self.loss, "total": self.total}


def estimate(shape: ModelShape, seq_len: int, micro_batch: int, world_size: int = 1, *, fsdp: bool = True,
             activation_checkpointing: bool = False, compute_bytes: int = 2) -> MemoryEstimate:
    """Per-GPU bytes of one training step (the formula in the module docstring).

    compute_bytes: 2 for bf16 compute (the GPU policy), 4 for fp32 (CPU)."""
    n = shape.parameters
    shards = world_size if fsdp else 1
    if fsdp:
        working = 2 * (shape.vocab * shape.hidden + 2 * shape.layer_parameters)
        residual = compute_bytes
    else:
        working = 2 * n if compute_bytes == 2 else 0
        residual = 4
    tokens = seq_len * micro_batch
    a = shape.layer_activation_bytes(compute_bytes)
    edges = 2 * compute_bytes * shape.hidden
    if activation_checkpointing:
        per_token = shape.layers * residual * shape.hidden + 2 * a + edges
    else:
        per_token = (shape.layers + 1) * a + edges
    chunk = GPU_LOGITS_CHUNK_BYTES if compute_bytes == 2 else LOGITS_CHUNK_BYTES
    loss = 4 * shape.vocab * shape.hidden + 4 * tokens * shape.hidden + chunk
    return MemoryEstimate(parameters=-(-4 * n // shards), gradients=-(-4 * n // shards), optimizer=-(-8 * n // shards),
                          working=working, activations=tokens * per_token, loss=loss)


def needs_checkpointing(shape: ModelShape, seq_len: int, micro_batch: int, world_size: int, device_bytes: int,
                        fsdp: bool) -> bool:
    """True when a step does not fit on the device without activation checkpointing."""
    return not estimate(shape, seq_len, micro_batch, world_size, fsdp=fsdp).fits(device_bytes)


def gib(n: int) -> str:
    return f"{n / 2**30:.1f}"


def phase_memory(plan, shape: ModelShape, gpus: int, gpu: str, *, activation_checkpointing: bool | None = None,
                 fsdp: bool = True, micro_batch_size: int | None = None) -> list[dict]:
    """One row per phase of a plan: micro-batch, accumulation, checkpointing, the estimate and
    whether it fits. activation_checkpointing None is the trainer's default (on only for a phase
    that would not fit without it)."""
    device = GPU_MEMORY[gpu]
    rows = []
    for p, micro in zip(plan.phases, micro_batch_sizes(plan, micro_batch_size)):
        row: dict = {"phase": p.name, "sequence_length": p.sequence_length, "samples_per_step": p.samples_per_step}
        try:
            check_split(p.name, p.samples_per_step, gpus)
        except MixcError as exc:
            rows.append({**row, "error": str(exc), "fits": False})
            continue
        largest = -(-p.samples_per_step // gpus)
        n_micro = -(-largest // micro)
        micro = -(-largest // n_micro)
        ckpt = activation_checkpointing
        if ckpt is None:
            ckpt = needs_checkpointing(shape, p.sequence_length, micro, gpus, device, fsdp)
        est = estimate(shape, p.sequence_length, micro, gpus, fsdp=fsdp, activation_checkpointing=ckpt)
        rows.append({**row, "micro_batch_size": micro, "micro_batches_per_step": n_micro,
                     "activation_checkpointing": ckpt, "bytes": est.as_dict(), "device_bytes": device,
                     "fits": est.fits(device)})
    return rows


def render_memory(rows: list[dict], gpus: int, gpu: str, fsdp: bool) -> str:
    head = (f"memory per GPU, {gpus} x {gpu} ({gib(GPU_MEMORY[gpu])} GiB, fits at <= {FIT_FRACTION:.0%}), "
            f"{'FSDP2 over ' + str(gpus) if fsdp else 'replicated (DDP)'}, bf16 compute, GiB:")
    lines = [head, f"{'phase':<20} {'seq':>6} {'micro':>5} {'accum':>5} {'ckpt':>4} {'params':>6} {'grads':>6} {'optim':>6} "
                   f"{'work':>6} {'activ':>7} {'loss':>5} {'total':>7}  fits"]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['phase']:<20} {r['sequence_length']:>6}  {r['error']}")
            continue
        b = r["bytes"]
        lines.append(f"{r['phase']:<20} {r['sequence_length']:>6} {r['micro_batch_size']:>5} {r['micro_batches_per_step']:>5} "
                     f"{'on' if r['activation_checkpointing'] else 'off':>4} {gib(b['parameters']):>6} {gib(b['gradients']):>6} "
                     f"{gib(b['optimizer']):>6} {gib(b['working']):>6} {gib(b['activations']):>7} {gib(b['loss']):>5} "
                     f"{gib(b['total']):>7}  {'yes' if r['fits'] else 'NO'}")
    return "\n".join(lines) + "\n"
