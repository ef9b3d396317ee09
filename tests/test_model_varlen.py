"""attention="varlen" (torch's flash varlen kernel over the flattened batch) and "auto".

The kernel runs on CUDA only, so here it is replaced by a reference written from causal SDPA
per sequence: what is proven on CPU is the plumbing around it (cu_seqlens from position_ids,
flattening, GQA, reshaping back, gradients) and the backend choice. bench/gpu_check.py checks
the real kernel against CPU fp32 when a GPU is lent."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import mixc.train.model as model_module
from mixc.errors import MixcError
from mixc.loader import batch_from
from mixc.train.model import AttentionMask, SmolLM3, cu_seqlens_from_positions, get_config, resolve_attention


def reference_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1),
                          enable_gqa=False, **unused):
    """torch.nn.attention.varlen.varlen_attn's contract on CPU: [total, heads, hd] in and out,
    sequence i = rows cu[i]:cu[i+1], causal when window_size == (-1, 0)."""
    assert not any(v is not None for v in unused.values())
    assert cu_seq_q.dtype == torch.int32 and torch.equal(cu_seq_q, cu_seq_k)
    assert query.dtype == key.dtype == value.dtype, "flash takes one dtype"
    reference_varlen_attn.dtypes.add(query.dtype)
    bounds = cu_seq_q.tolist()
    assert bounds[0] == 0 and bounds[-1] == query.shape[0] == key.shape[0] == value.shape[0]
    assert max_q == max_k == max(e - s for s, e in zip(bounds, bounds[1:]))
    if not enable_gqa and key.shape[1] != query.shape[1]:
        raise ValueError("kv heads differ from query heads without enable_gqa")  # as torch's
    parts = []
    for s, e in zip(bounds, bounds[1:]):
        q, k, v = (x[s:e].transpose(0, 1)[None] for x in (query, key, value))  # [1, heads, length, hd]
        out = F.scaled_dot_product_attention(q, k, v, is_causal=window_size == (-1, 0), enable_gqa=enable_gqa)
        parts.append(out[0].transpose(0, 1))
    reference_varlen_attn.calls += 1
    return torch.cat(parts)


@pytest.fixture
def cpu_varlen(monkeypatch):
    reference_varlen_attn.calls, reference_varlen_attn.dtypes = 0, set()
    monkeypatch.setattr(model_module, "_varlen_attn", lambda: reference_varlen_attn)
    return reference_varlen_attn


# -- cu_seqlens from position_ids ------------------------------------------------------------


def test_cu_seqlens_from_positions_equal_the_loaders_with_padding_and_a_single_long_document():
    length = 12
    tokens = np.arange(4 * (length + 1), dtype=np.int64).reshape(4, length + 1)
    starts = [np.array([0, 3, 9]),  # two documents, then padding from 9 (its own segment)
              np.array([0]),  # one document over the whole row
              np.arange(length),  # one-token documents
              np.array([0, 11])]  # a one-token document at the row end
    batch = batch_from(tokens, starts, np.zeros(4, np.int32), real=np.array([9, 13, 13, 13]))
    cu, longest = cu_seqlens_from_positions(torch.from_numpy(batch["position_ids"]))
    assert cu.dtype == torch.int32
    assert cu.tolist() == batch["cu_seqlens"].tolist() == [0, 3, 9, 12, 24, *range(25, 36), 36, 47, 48]
    assert longest == batch["max_seqlen"] == 12


def test_cu_seqlens_start_a_sequence_at_a_row_that_begins_inside_a_document():
    pos = torch.tensor([[5, 6, 7, 0, 1, 2, 3, 0],  # continues a document from before the row
                        [9, 10, 11, 12, 13, 14, 15, 16]])  # inside one document throughout
    cu, longest = cu_seqlens_from_positions(pos)
    assert cu.tolist() == [0, 3, 7, 8, 16] and longest == 8
    cu, longest = cu_seqlens_from_positions(torch.arange(64)[None])  # a single long document
    assert cu.tolist() == [0, 64] and longest == 64


# -- the varlen code path against the CPU path -----------------------------------------------


def _packed_positions() -> torch.Tensor:
    pos = torch.arange(40).repeat(3, 1)
    pos[0, 7:] -= 7
    pos[0, 30:] -= 23
    pos[2, 39:] -= 39  # a one-token document at the end
    pos[1] = torch.cat([torch.arange(5, 25), torch.arange(20)])  # the first document began before this row
    return pos


@pytest.mark.parametrize("gqa", [True, False])
def test_varlen_path_equals_the_per_document_path_forward_and_backward(cpu_varlen, gqa):
    torch.manual_seed(0)
    q = torch.randn(3, 4, 40, 16, requires_grad=True)
    k = torch.randn(3, 2, 40, 16, requires_grad=True)
    v = torch.randn(3, 2, 40, 16, requires_grad=True)
    pos = _packed_positions()
    results = []
    for backend in ("varlen", "sdpa"):
        mask = AttentionMask(pos, backend, gqa)
        assert (mask.cu_seqlens is not None) == (backend == "varlen")
        assert (mask.segments is not None) == (backend == "sdpa")
        out = mask.attend(q, k, v)
        assert out.shape == q.shape
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (q, k, v))
        results.append((out, grads))
    assert cpu_varlen.calls == 1
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_varlen_keeps_kv_head_j_for_query_heads_j_times_g(cpu_varlen):
    B, H, KV, T, D = 2, 8, 2, 6, 8
    q, k = torch.randn(B, H, T, D), torch.randn(B, KV, T, D)
    v = torch.arange(KV, dtype=torch.float)[None, :, None, None].expand(B, KV, T, D).contiguous()
    pos = torch.arange(T).repeat(B, 1)
    pos[:, 3:] -= 3
    for gqa in (True, False):
        out = AttentionMask(pos, "varlen", gqa).attend(q, k, v)
        for h in range(H):
            torch.testing.assert_close(out[:, h], torch.full((B, T, D), float(h // (H // KV))))
    assert cpu_varlen.calls == 2


def test_varlen_model_matches_sdpa_model_loss_and_gradients(cpu_varlen):
    config = get_config("smollm3-test")
    models = []
    for backend in ("sdpa", "varlen"):
        torch.manual_seed(0)
        models.append(SmolLM3(config, attention=backend))
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 512, (3, 40), generator=gen)
    labels = torch.randint(1, 512, (3, 40), generator=gen)
    labels[0, 30:] = -100  # padding after the second document of row 0
    losses = []
    for model in models:
        _, loss = model(ids, position_ids=_packed_positions(), labels=labels, return_logits=False)
        loss.backward()
        losses.append(loss)
    assert cpu_varlen.calls == config.num_hidden_layers
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5, msg=name)


def test_varlen_under_autocast_hands_the_kernel_one_compute_dtype(cpu_varlen):
    """Autocast casts SDPA's inputs but not a custom op's, and RoPE layers make q, k fp32 while v
    is bf16: the varlen path casts them itself, and tracks the SDPA path within bf16 error."""
    config = get_config("smollm3-test")
    gen = torch.Generator().manual_seed(4)
    ids = torch.randint(1, 512, (3, 40), generator=gen)
    losses = []
    for backend in ("sdpa", "varlen"):
        torch.manual_seed(0)
        model = SmolLM3(config, attention=backend)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = model(ids, position_ids=_packed_positions(), labels=ids, return_logits=False)
        loss.backward()
        losses.append(float(loss.detach()))
    assert cpu_varlen.calls == config.num_hidden_layers and cpu_varlen.dtypes == {torch.bfloat16}
    assert abs(losses[1] - losses[0]) < 2e-2 * losses[0]


def test_varlen_without_boundaries_is_plain_causal_attention(cpu_varlen):
    mask = AttentionMask(torch.arange(10).repeat(2, 1), "varlen", True)
    assert not mask.packed and mask.cu_seqlens is None and mask.mask is None
    q = torch.randn(2, 4, 10, 8)
    torch.testing.assert_close(mask.attend(q, q, q), F.scaled_dot_product_attention(q, q, q, is_causal=True))
    assert cpu_varlen.calls == 0


# -- choosing the backend --------------------------------------------------------------------


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA device as resolve_attention sees it: capability, flash kernels, torch's varlen."""
    state = {"capability": (9, 0), "flash": True, "varlen": reference_varlen_attn}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: state["capability"])
    monkeypatch.setattr(torch.backends.cuda, "is_flash_attention_available", lambda: state["flash"])
    monkeypatch.setattr(model_module, "_varlen_attn", lambda: state["varlen"])
    return state


def test_auto_picks_varlen_where_flash_runs_else_compiled_flex_on_gpus(fake_gpu):
    gpu, bf16 = torch.device("cuda", 0), torch.bfloat16
    assert resolve_attention("auto", gpu, bf16, 128) == "varlen"
    assert resolve_attention("auto", gpu, torch.float16, 128) == "varlen"
    assert resolve_attention("auto", gpu, torch.float32, 128) == "flex"  # flash has no fp32
    assert resolve_attention("auto", gpu, bf16, 12) == "flex"  # head_dim not a multiple of 8
    fake_gpu["capability"] = (8, 0)
    assert resolve_attention("auto", gpu, bf16, 128) == "varlen"  # A100
    fake_gpu["capability"] = (7, 5)
    assert resolve_attention("auto", gpu, bf16, 128) == "flex"  # T4: no flash
    with pytest.raises(MixcError, match="compute capability 8.0 or newer"):
        resolve_attention("varlen", gpu, bf16, 128)
    fake_gpu["capability"] = (9, 0)
    fake_gpu["flash"] = False
    assert resolve_attention("auto", gpu, bf16, 128) == "flex"
    fake_gpu["flash"], fake_gpu["varlen"] = True, None  # a torch without torch.nn.attention.varlen
    assert resolve_attention("auto", gpu, bf16, 128) == "flex"
    with pytest.raises(MixcError, match="no torch.nn.attention.varlen"):
        resolve_attention("varlen", gpu, bf16, 128)


def test_auto_is_sdpa_on_cpu_and_explicit_choices_are_kept_or_refused(fake_gpu):
    assert resolve_attention("auto", "cpu", torch.float32, 16) == "sdpa"
    assert resolve_attention("auto", "cpu", torch.bfloat16, 128) == "sdpa"
    assert resolve_attention("flex", "cpu", torch.float32, 16) == "flex"
    assert resolve_attention("sdpa", torch.device("cuda", 0), torch.bfloat16, 128) == "sdpa"
    assert resolve_attention("varlen", torch.device("cuda", 0), torch.bfloat16, 128) == "varlen"
    with pytest.raises(MixcError, match="attention 'varlen' cannot run here: it needs a CUDA GPU"):
        resolve_attention("varlen", "cpu", torch.bfloat16, 128)
    with pytest.raises(MixcError, match="unknown attention backend 'flash'"):
        resolve_attention("flash", "cpu", torch.float32, 16)
    with pytest.raises(MixcError, match="unknown attention backend 'flash'"):
        SmolLM3(get_config("smollm3-test"), attention="flash")


def test_model_resolves_auto_once_at_its_first_forward():
    torch.manual_seed(0)
    model = SmolLM3(get_config("smollm3-test"), attention="auto")
    assert model.attention == "auto"
    ids = torch.randint(1, 512, (1, 12))
    pos = torch.cat([torch.arange(5), torch.arange(7)])[None]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(ids, position_ids=pos)
    assert model.attention == "sdpa"
