"""SmolLM3 in plain PyTorch: a Llama-style decoder with NoPE layers and intra-document attention.

One readable module in the spirit of nanoGPT. The architecture is transformers' SmolLM3
(so mixc/train/export.py can write a checkpoint `SmolLM3ForCausalLM` loads unchanged):

- pre-norm RMSNorm, computed in fp32 whatever the activation dtype;
- grouped-query attention: key/value head j serves query heads j*g .. j*g+g-1 (g = heads /
  kv heads), the grouping `repeat_interleave` and SDPA's `enable_gqa` both use;
- rotary embeddings in the half-split layout (`rotate_half`), left out of every
  `no_rope_layer_interval`-th layer (0-based layers 3, 7, ..., 35 of 36): `no_rope_layers[i]`
  is 1 where layer i uses RoPE, exactly as transformers builds it;
- SwiGLU MLP, no biases anywhere, tied input/output embeddings, init N(0, 0.02).

Two projections are fused for speed: `qkv` holds q_proj, k_proj, v_proj stacked on the output
dimension, and `gate_up` holds gate_proj and up_proj. The export splits them again.

Intra-document attention. The loader's `position_ids` restart at 0 at every document start
(and at the start of every sample); a token attends only to earlier tokens of its own
document. On CPU this is SDPA with a block-diagonal causal boolean mask; a batch without
boundaries uses plain causal SDPA (`is_causal=True`, no mask). `attention="flex"` uses
flex_attention with a document block mask instead (meant for GPUs; it needs torch.compile
to be fast). `attention="varlen"` calls torch's flash varlen kernel on the batch flattened to
[tokens, heads, head_dim], one causal sequence per document (CUDA, sm80+, fp16/bf16 only).
`attention="auto"` picks, at the first forward: varlen where it can run, else flex on a GPU,
SDPA on CPU (`resolve_attention`). Without position_ids, `cu_seqlens` over the flattened batch
gives the same boundaries.

Labels at document starts. The loader labels every position with the next token of the
stream, so the EOS that closes document A is labelled with the first token of document B.
Under intra-document attention that prediction sees only document A, whose content says
nothing about B: what the model learns there is the distribution of first tokens, i.e. what
documents begin with, which it needs when generating after an EOS. mixc keeps these labels
by default, as transformers' loss does: `loss_mask=None` counts every label. Some trainers
drop them instead (Megatron's `eod_mask_loss`, a nanotron collator variant);
`document_start_loss_mask(input_ids, eos_token_id)` gives that choice to a trainer (the recipe
option `mask_document_starts: true`); masked labels contribute nothing to the loss or its gradient.

The loss is the mean cross-entropy over counted labels (labels equal to -100 are never
counted), plus an optional z-loss `z_loss * mean(logsumexp(logits)^2)` that keeps the
softmax normaliser near 1 (PaLM); SmolLM3 trained without it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

from ..errors import MixcError
from ..loader import IGNORE_INDEX  # the loader labels padding with it
from .configs import CONFIGS, SmolLM3Config, get_config  # noqa: F401  (the model's names; dimensions live in configs.py)

# ---------------------------------------------------------------------------------------------
# Building blocks


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32 (bf16 loses the small mean-square), scale in the activation dtype.
        normed = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * normed.to(x.dtype)


class Rotary(nn.Module):
    """cos/sin tables for the half-split rotary layout, computed once per forward for all layers."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim = head_dim
        self.register_buffer("inv_freq", self._inv_freq(theta), persistent=False)

    def _inv_freq(self, theta: float) -> torch.Tensor:
        return 1.0 / (theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.int64).float() / self.head_dim))

    def set_theta(self, theta: float) -> None:
        self.inv_freq = self._inv_freq(theta).to(self.inv_freq.device)

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.float()  # [B, T, head_dim/2], fp32
        angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, head_dim]: broadcast over heads
        return angles.cos().to(dtype), angles.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    """The attention's weights and the work on either side of its kernel: `project` before,
    `output` after. The block calls the kernel (AttentionMask.attend) between them, so that
    torch.compile can take both sides without the kernel (see Block)."""

    def __init__(self, config: SmolLM3Config, use_rope: bool):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.n_kv_head = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.use_rope = use_rope
        # q, k, v stacked: [n_head*hd | n_kv_head*hd | n_kv_head*hd] output rows.
        self.qkv = nn.Linear(config.hidden_size, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_head * self.head_dim, config.hidden_size, bias=False)

    def project(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]):
        """q [B, H, T, hd], k and v [B, KV, T, hd], rotated where this layer uses RoPE."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
                                     self.n_kv_head * self.head_dim], dim=-1)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.use_rope:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """The attention kernel's [B, H, T, hd] output projected back to [B, T, hidden]."""
        B, _, T, _ = y.shape
        return self.o_proj(y.transpose(1, 2).reshape(B, T, self.n_head * self.head_dim))


class MLP(nn.Module):
    def __init__(self, config: SmolLM3Config):
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gate_up = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)  # [gate | up]
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up(x)
        if torch.compiler.is_compiling():  # inductor fuses both directions itself (SwiGLU's out= would break the graph)
            gate, up = gate_up.chunk(2, dim=-1)
            return self.down_proj(F.silu(gate) * up)
        return self.down_proj(SwiGLU.apply(gate_up))


class SwiGLU(torch.autograd.Function):
    """silu(gate) * up on the fused [gate | up] projection.

    Autograd would keep gate, silu(gate) and up and concatenate the two gradients; this keeps
    only the fused input and writes both gradient halves straight into one buffer."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor) -> torch.Tensor:
        gate, up = gate_up.chunk(2, dim=-1)
        ctx.save_for_backward(gate_up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (gate_up,) = ctx.saved_tensors
        gate, up = gate_up.chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        grad = torch.empty_like(gate_up)
        grad_gate, grad_up = grad.chunk(2, dim=-1)
        torch.mul(grad_out, silu, out=grad_up)
        # d silu(g) / dg = sig * (1 + g * (1 - sig)) = sig + silu - silu * sig, built in place:
        # these elementwise passes are memory-bound, so fewer fresh buffers is most of the cost.
        dsilu = silu.sub_(silu * sig).add_(sig)
        torch.mul(grad_out, up, out=grad_gate)
        grad_gate.mul_(dsilu)
        return grad


class Block(nn.Module):
    def __init__(self, config: SmolLM3Config, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, use_rope=bool(config.no_rope_layers[layer_idx]))
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, rope, mask):
        q, k, v = self.attention_inputs(x, rope)
        return self.attention_output_and_mlp(x, mask.attend(q, k, v))

    # The two halves around the attention kernel. `SmolLM3.compile_blocks` compiles these and
    # leaves the kernel call between them eager: which kernel runs (and, on CPU, the calls per
    # document) depends on the batch's document layout, which would otherwise recompile.
    def attention_inputs(self, x, rope):
        return self.self_attn.project(self.input_layernorm(x), rope)

    def attention_output_and_mlp(self, x, y):
        x = x + self.self_attn.output(y)
        return x + self.mlp(self.post_attention_layernorm(x))


# ---------------------------------------------------------------------------------------------
# Intra-document attention


def document_ids(position_ids: torch.Tensor) -> torch.Tensor:
    """[B, T] index of the document each token belongs to: a new one wherever a position is 0."""
    return (position_ids == 0).cumsum(dim=-1)


def positions_from_cu_seqlens(cu_seqlens: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    """position_ids [B, T] from cumulative sequence starts over the flattened batch."""
    flat = torch.arange(batch * length, device=cu_seqlens.device)
    starts = cu_seqlens.to(device=flat.device, dtype=torch.int64)
    owner = torch.searchsorted(starts, flat, right=True) - 1
    return (flat - starts[owner]).view(batch, length)


def document_start_loss_mask(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Loss mask that drops every label whose target is a document's first token.

    Every document ends with EOS, so those are exactly the labels of EOS inputs (including a
    sample's last position, whose next document is not in the sample)."""
    return input_ids != eos_token_id


def cu_seqlens_from_positions(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(cu_seqlens int32 [N + 1], max_seqlen) over the flattened [B * T] batch: a sequence starts
    at every position 0 and at every row start (a row may begin inside a document), as the
    loader's own `cu_seqlens`. A varlen kernel then keeps each token within its sequence."""
    B, T = position_ids.shape
    starts = position_ids == 0
    starts[:, 0] = True
    flat = torch.nonzero(starts.flatten()).flatten()
    cu = torch.cat([flat, flat.new_tensor([B * T])]).to(torch.int32)
    return cu, int((cu[1:] - cu[:-1]).max())


# Above this many documents in a row, one masked attention call beats a call per document.
MAX_SEGMENTS_PER_ROW = 32


class AttentionMask:
    """Which keys each query may see, prepared once per forward and shared by all layers."""

    def __init__(self, position_ids: torch.Tensor, backend: str, gqa: bool):
        self.backend = backend
        self.gqa = gqa
        self.mask = None
        self.block_mask = None
        self.segments: list[list[tuple[int, int]]] | None = None
        self.cu_seqlens: torch.Tensor | None = None
        self.max_seqlen = 0
        # Boundaries inside a row = a position 0 after the first column.
        self.packed = bool((position_ids[:, 1:] == 0).any())
        if not self.packed:
            return  # plain causal SDPA (a flash kernel on a GPU), whatever the backend
        B, T = position_ids.shape
        if backend == "varlen":
            self.cu_seqlens, self.max_seqlen = cu_seqlens_from_positions(position_ids)
            return
        if backend == "sdpa" and not position_ids.is_cuda:
            # On CPU, attend within each document separately (causal SDPA per segment): a
            # masked full-row attention computes every cross-document score and throws it away.
            # A row's first token starts a segment even when its positions do not begin at 0.
            starts = [[0] + [i for i in torch.nonzero(row == 0).flatten().tolist() if i] for row in position_ids]
            if max(len(s) for s in starts) <= MAX_SEGMENTS_PER_ROW:
                self.segments = [list(zip(s, s[1:] + [T])) for s in starts]
                return
        doc = document_ids(position_ids)
        if backend == "flex":
            def same_document_causal(b, h, q, kv):
                return (q >= kv) & (doc[b, q] == doc[b, kv])

            # Compiled on a GPU: uncompiled, building the mask materialises a B x T x T boolean
            # (~13 GB at 64k); compiled, it works block by block.
            self.block_mask = create_block_mask(same_document_causal, B, None, T, T, device=position_ids.device,
                                                _compile=position_ids.is_cuda)
        else:
            causal = torch.ones(T, T, dtype=torch.bool, device=position_ids.device).tril()
            self.mask = (doc[:, :, None] == doc[:, None, :]) & causal  # [B, T, T]
            self.mask = self.mask[:, None]  # broadcast over heads

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.backend == "flex" and self.packed:
            return _flex_attention(q.is_cuda)(q, k, v, block_mask=self.block_mask, enable_gqa=True)
        if not self.gqa and k.shape[1] != q.shape[1]:
            group = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        if self.cu_seqlens is not None:
            return self._varlen(q, k, v)
        if self.segments is not None:
            rows = []
            for b, segments in enumerate(self.segments):
                parts = [F.scaled_dot_product_attention(q[b:b + 1, :, s:e], k[b:b + 1, :, s:e], v[b:b + 1, :, s:e],
                                                        is_causal=True, enable_gqa=self.gqa) for s, e in segments]
                rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
            return torch.cat(rows, dim=0)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, is_causal=self.mask is None,
                                              enable_gqa=self.gqa)

    def _varlen(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """[B, H, T, hd] in and out; the kernel sees [B * T, heads, hd] and one causal sequence
        per document. Shared k/v heads are passed as they are (the kernel groups query heads
        j*g .. j*g+g-1 on kv head j, as SDPA does) unless the model asks for copies."""
        B, H, T, D = q.shape
        # Autocast leaves a custom op's inputs alone (SDPA's it casts), and under autocast RoPE
        # layers hand over fp32 q, k (the fp32 cos/sin tables) with a bf16 v: one dtype for flash.
        device_type = q.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else q.dtype

        def flat(x: torch.Tensor) -> torch.Tensor:
            return x.transpose(1, 2).reshape(B * T, x.shape[1], D).to(dtype)

        out = _varlen_attn()(flat(q), flat(k), flat(v), self.cu_seqlens, self.cu_seqlens, self.max_seqlen,
                             self.max_seqlen, window_size=(-1, 0), enable_gqa=k.shape[1] != H)
        return out.reshape(B, T, H, D).transpose(1, 2)


# ---------------------------------------------------------------------------------------------
# Choosing the attention backend

ATTENTION_BACKENDS = ("auto", "sdpa", "flex", "varlen")


@functools.cache
def _varlen_attn():
    """torch's varlen_attn, or None when this torch has none. Imported on first use:
    the module pulls in torch._dynamo."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn


def varlen_unavailable(device: torch.device, compute_dtype: torch.dtype, head_dim: int) -> str | None:
    """Why the varlen (flash) kernel cannot run on `device` at `compute_dtype`; None when it can."""
    if device.type != "cuda":
        return f"it needs a CUDA GPU (flash attention), not {device.type}"
    if _varlen_attn() is None:
        return f"torch {torch.__version__} has no torch.nn.attention.varlen"
    if not torch.backends.cuda.is_flash_attention_available():
        return "this torch build has no flash attention kernels"
    major, minor = torch.cuda.get_device_capability(device)
    if major < 8:
        return f"flash attention needs compute capability 8.0 or newer, {device} has {major}.{minor}"
    if compute_dtype not in (torch.float16, torch.bfloat16):
        return f"flash attention computes in fp16 or bf16, not {str(compute_dtype).replace('torch.', '')}"
    if head_dim % 8 or head_dim > 256:
        return f"flash attention takes head_dim a multiple of 8 up to 256, not {head_dim}"
    return None


def resolve_attention(requested: str, device: torch.device | str, compute_dtype: torch.dtype, head_dim: int) -> str:
    """The backend a model computes with: `requested` checked, or for "auto" the fastest that runs
    here: varlen on a GPU where flash runs, else compiled flex (still no dense T x T mask); SDPA
    on CPU (a causal call per document, mixc's CPU path)."""
    if requested not in ATTENTION_BACKENDS:
        raise MixcError(f"unknown attention backend '{requested}' (expected one of {', '.join(ATTENTION_BACKENDS)})")
    device = torch.device(device)
    if requested == "varlen":
        reason = varlen_unavailable(device, compute_dtype, head_dim)
        if reason:
            raise MixcError(f"attention 'varlen' cannot run here: {reason}; use --attention auto, flex or sdpa")
    if requested != "auto":
        return requested
    if device.type != "cuda":
        return "sdpa"
    return "varlen" if varlen_unavailable(device, compute_dtype, head_dim) is None else "flex"


# ---------------------------------------------------------------------------------------------
# The loss without the logits


def _apply_loss_mask(labels: torch.Tensor, loss_mask: torch.Tensor | None) -> torch.Tensor:
    labels = labels.long()
    return labels if loss_mask is None else labels.masked_fill(~loss_mask.bool(), IGNORE_INDEX)


# fp32 logits per chunk. On CPU under glibc's largest mmap threshold (32 MiB), so the chunk
# buffers are reused from the heap instead of being mapped fresh (and page-faulted) every time.
# On a GPU the caching allocator reuses any size; larger chunks mean fewer, fuller GEMMs
# (2092 rows for a 128k vocabulary), for 1 GiB of logits (mixc/memory.py counts it).
CHUNK_BYTES = 1 << 24
GPU_CHUNK_BYTES = 1 << 30


def chunk_rows(vocab: int, device_type: str) -> int:
    """Tokens per logits chunk of ChunkedLinearCrossEntropy on a device."""
    return max(256, (GPU_CHUNK_BYTES if device_type == "cuda" else CHUNK_BYTES) // 4 // vocab)


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """mean cross-entropy (+ z_loss * mean lse^2) of `hidden @ weight.T`, in chunks of tokens.

    The [tokens, vocab] logits are the largest activation of a small model (and of a 3B one at
    long sequences). Each chunk's logits live only inside this forward: the gradients with
    respect to hidden and weight are computed right there (softmax - one-hot, in place), so
    backward only scales them. Same numbers as F.cross_entropy on the full logits (softmax in
    fp32), a fraction of the memory, and fewer passes over the logits."""

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, z_loss: float):
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        counted = (labels != IGNORE_INDEX).sum()
        scale = 1.0 / max(int(counted), 1)
        need_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        chunk = chunk_rows(vocab, hidden.device.type)
        # Matmuls in the autocast dtype when autocast is on (bf16 on GPUs), softmax in fp32.
        device_type = hidden.device.type
        autocast = torch.is_autocast_enabled(device_type)
        compute_dtype = torch.get_autocast_dtype(device_type) if autocast else hidden.dtype
        w = weight.to(compute_dtype)
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(device_type, enabled=False):
            for start in range(0, n_tokens, chunk):
                h = hidden[start:start + chunk].to(compute_dtype)
                y = labels[start:start + chunk]
                valid = y != IGNORE_INDEX
                target = y.clamp(min=0)[:, None]
                logits = (h @ w.T).float()
                picked = logits.gather(1, target)[:, 0]
                # One exp pass serves the loss and the gradient: exp(logits - max) in place,
                # lse = max + log(sum), softmax = that / sum.
                peak = logits.amax(dim=-1)
                expd = logits.sub_(peak[:, None]).exp_()
                total_exp = expd.sum(dim=-1)
                lse = peak + total_exp.log()
                per_token = lse - picked
                if z_loss:
                    per_token = per_token + z_loss * lse.square()
                total += per_token.masked_fill(~valid, 0.0).sum()
                if not need_grad:
                    continue
                # d/dlogits of (lse - logit[y] + z lse^2) = softmax * (1 + 2 z lse) - onehot(y),
                # times the token's weight in the mean (0 for ignored labels), in two passes.
                weight_of = valid.float() * scale
                factor = weight_of / total_exp
                if z_loss:
                    factor = factor * (1 + 2 * z_loss * lse)
                probs = expd.mul_(factor[:, None])
                probs.scatter_add_(1, target, -weight_of[:, None])
                g = probs.to(compute_dtype)
                grad_hidden[start:start + chunk] = g @ w
                if compute_dtype == torch.float32:
                    grad_weight.addmm_(g.T, h)
                else:
                    # The weight gradient as a bf16 GEMM (an fp32 one is several times slower on
                    # tensor cores), summed over chunks in fp32, as autocast's weight gradients are.
                    grad_weight.add_(g.T @ h)
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total * scale

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_loss, (grad_weight * grad_loss).to(ctx.weight_dtype), None, None


_compiled_flex = None


def _flex_attention(on_gpu: bool):
    """flex_attention, compiled on GPUs (uncompiled it materialises the whole score matrix)."""
    global _compiled_flex
    if not on_gpu:
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex


# ---------------------------------------------------------------------------------------------
# The model


class SmolLM3(nn.Module):
    """The decoder. Initialization is a pure function of the global CPU RNG state when the
    constructor starts (see `init_weights`), so `SmolLM3(config)` after `torch.manual_seed(s)`
    and `SmolLM3.build(config, device, s)` (meta device, then initialized in place on the
    target device) hold the same bits.

    `activation_checkpointing`: keep only each decoder layer's input during the forward and
    recompute the layer in backward (torch.utils.checkpoint, non-reentrant): the activations
    of one layer instead of all of them, for about a third more compute. Same loss and
    gradients; the trainer turns it on per phase (mixc/train/dist.py)."""

    def __init__(self, config: SmolLM3Config, attention: str = "sdpa", activation_checkpointing: bool = False):
        super().__init__()
        # The RNG state init_weights draws from: the state before any submodule's own init.
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        self.activation_checkpointing = activation_checkpointing
        if attention not in ATTENTION_BACKENDS:
            raise MixcError(f"unknown attention backend '{attention}' (expected one of {', '.join(ATTENTION_BACKENDS)})")
        self.config = config
        self.attention = attention
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = Rotary(config.head_dim, config.rope_theta)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # SDPA's grouped-query mode reads shared k/v heads without materialising copies.
        self.gqa_in_sdpa = True
        if not self.embed_tokens.weight.is_meta:
            self.init_weights(generator)

    @classmethod
    def build(cls, config: SmolLM3Config, device: torch.device | str, seed: int, **kwargs: Any) -> SmolLM3:
        """The model with every tensor allocated once, on `device`: built on the meta device,
        then initialized in place from `seed` (no full fp32 copy in host memory first)."""
        with torch.device("meta"):
            model = cls(config, **kwargs)
        model.to_empty(device=device)
        model.init_weights(torch.Generator().manual_seed(seed))
        return model

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator) -> None:
        """Matmul and embedding weights ~ N(0, initializer_range), norm weights 1, rotary table
        recomputed; parameters in registration order, each drawn on the CPU from `generator`
        and copied to its device, so the values do not depend on the device (one parameter at
        a time in host memory)."""
        std = self.config.initializer_range
        for param in self.parameters():
            if param.dim() >= 2:
                param.copy_(torch.empty(param.shape, dtype=torch.float32).normal_(0.0, std, generator=generator))
            else:
                param.fill_(1.0)
        self.rotary.set_theta(self.config.rope_theta)

    def compile_blocks(self) -> SmolLM3:
        """torch.compile each decoder layer's two halves around its attention kernel (norms,
        projections, rotary and SwiGLU, with their elementwise work fused), as torchtitan compiles
        per block. The function is the same; float results differ by rounding only. Each new
        shape (a phase's sequence length, a short last micro-batch) compiles once, on first use."""
        for layer in self.layers:
            layer.attention_inputs = torch.compile(layer.attention_inputs)
            layer.attention_output_and_mlp = torch.compile(layer.attention_output_and_mlp)
        return self

    def output_weight(self) -> torch.Tensor:
        return self.embed_tokens.weight if self.config.tie_word_embeddings else self.lm_head.weight

    def set_rope_theta(self, theta: float) -> None:
        """Change the RoPE base (a long-context phase does, as SmolLM3 did); no weights change."""
        self.config.rope_theta = float(theta)
        self.rotary.set_theta(float(theta))

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                loss_mask: torch.Tensor | None = None, z_loss: float = 0.0, return_logits: bool = True):
        """logits [B, T, V] and the mean loss over counted labels (None without labels).

        labels[t] is the target at position t (already shifted by the loader); loss_mask [B, T]
        (bool or 0/1) chooses which labels count. A trainer passes `return_logits=False`: the
        output projection and the loss then run in chunks of tokens without ever holding the
        [B, T, V] logits (see ChunkedLinearCrossEntropy), and logits come back as None."""
        B, T = input_ids.shape
        if position_ids is None:
            if cu_seqlens is not None:
                position_ids = positions_from_cu_seqlens(cu_seqlens, B, T)
            else:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.embed_tokens(input_ids)
        rope = self.rotary(position_ids, x.dtype)
        mask = AttentionMask(position_ids, self._attention_backend(x), self.gqa_in_sdpa)
        checkpointed = self.activation_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            if checkpointed:
                x = torch.utils.checkpoint.checkpoint(layer, x, rope, mask, use_reentrant=False)
            else:
                x = layer(x, rope, mask)
        x = self.norm(x)
        if labels is not None and not return_logits:
            labels = _apply_loss_mask(labels, loss_mask)
            loss = ChunkedLinearCrossEntropy.apply(x.reshape(-1, x.shape[-1]), self.output_weight(),
                                                   labels.reshape(-1), float(z_loss))
            return None, loss
        logits = F.linear(x, self.output_weight())
        if labels is None:
            return logits, None
        return logits, self.loss(logits, labels, loss_mask, z_loss)

    def _attention_backend(self, x: torch.Tensor) -> str:
        """"auto" resolved once, at the first forward, for its device and compute dtype."""
        if self.attention == "auto":
            device_type = x.device.type
            dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
            self.attention = resolve_attention("auto", x.device, dtype, self.config.head_dim)
        return self.attention

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor | None = None,
             z_loss: float = 0.0) -> torch.Tensor:
        labels = _apply_loss_mask(labels, loss_mask)
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        flat_labels = labels.reshape(-1)
        counted = (flat_labels != IGNORE_INDEX).sum().clamp(min=1)
        loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum") / counted
        if z_loss:
            lse = torch.logsumexp(flat_logits, dim=-1)
            loss = loss + z_loss * (lse.square() * (flat_labels != IGNORE_INDEX)).sum() / counted
        return loss

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights are one parameter: counted once

    def configure_optimizer(self, lr: float, weight_decay: float, betas: tuple[float, float] = (0.9, 0.95),
                            eps: float = 1e-8) -> torch.optim.AdamW:
        """AdamW with weight decay on the 2-D matmul weights only: not the embedding, not the norms."""
        embedding = self.embed_tokens.weight
        decay, no_decay = [], []
        for p in self.parameters():
            if not p.requires_grad:
                continue
            (decay if p.dim() == 2 and p is not embedding else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        device = embedding.device.type
        # The fused kernel (one pass over all parameters) exists for CPU and CUDA in recent torch.
        fused = device in ("cpu", "cuda") and "fused" in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, fused=fused or None,
                                 foreach=None if fused else True)


def count_parameters(config: SmolLM3Config) -> int:
    """The parameter count from the config alone (the model's own count must agree)."""
    h, hd = config.hidden_size, config.head_dim
    attention = h * hd * (config.num_attention_heads * 2 + config.num_key_value_heads * 2)
    mlp = 3 * h * config.intermediate_size
    per_layer = attention + mlp + 2 * h
    embeddings = config.vocab_size * h * (1 if config.tie_word_embeddings else 2)
    return config.num_hidden_layers * per_layer + embeddings + h

