"""The SmolLM3 model: size, NoPE layers, GQA grouping, intra-document attention, loss, optimizer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import mixc.train.model as model_module
from mixc.errors import MixcError
from mixc.train.model import (
    AttentionMask,
    SmolLM3,
    count_parameters,
    document_start_loss_mask,
    get_config,
    positions_from_cu_seqlens,
)

EOS = 0


def tiny_model(seed: int = 0, **overrides) -> SmolLM3:
    torch.manual_seed(seed)
    return SmolLM3(get_config("smollm3-test", **overrides)).eval()


def packed_row(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids and position_ids of documents packed end to end in one row."""
    ids = torch.cat(docs)[None]
    pos = torch.cat([torch.arange(len(d)) for d in docs])[None]
    return ids, pos


def test_smollm3_3b_parameter_count_on_meta_device():
    config = get_config("smollm3-3b")
    with torch.device("meta"):
        model = SmolLM3(config)
    # 36 x (attention 2048*128*(16+16+4+4) + SwiGLU 3*2048*11008 + 2 norms) + tied embedding + final norm
    per_layer = 2048 * 128 * 40 + 3 * 2048 * 11008 + 2 * 2048
    expected = 36 * per_layer + 128256 * 2048 + 2048
    assert expected == 3_075_098_624
    assert model.num_parameters() == count_parameters(config) == expected
    assert model.output_weight() is model.embed_tokens.weight  # tied: counted once


def test_smollm3_3b_matches_published_shape():
    c = get_config("smollm3-3b")
    assert (c.num_hidden_layers, c.hidden_size, c.intermediate_size) == (36, 2048, 11008)
    assert (c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (16, 4, 128256)
    assert c.rope_theta == 50000 and c.tie_word_embeddings and c.rms_norm_eps == 1e-6


def test_nope_layers_are_transformers_choice():
    from transformers import SmolLM3Config as HFConfig

    config = get_config("smollm3-3b")
    assert config.no_rope_layers == HFConfig(num_hidden_layers=36).no_rope_layers
    with torch.device("meta"):
        model = SmolLM3(config)
    nope = [i for i, layer in enumerate(model.layers) if not layer.self_attn.use_rope]
    assert nope == list(range(3, 36, 4))
    # the tiny configs keep exactly one NoPE layer in four
    assert get_config("smollm3-tiny").no_rope_layers == [1, 1, 1, 0]


def test_unknown_model_and_bad_config_are_clear_errors():
    with pytest.raises(MixcError, match="unknown model 'smollm3-7b'"):
        get_config("smollm3-7b")
    with pytest.raises(MixcError, match="num_key_value_heads"):
        get_config("smollm3-test", num_key_value_heads=3)
    with pytest.raises(MixcError, match="eos_token_id"):
        get_config("smollm3-test", eos_token_id=512)


@pytest.mark.parametrize("gqa", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_gqa_kv_head_j_serves_query_heads_j_times_g(gqa, packed):
    B, H, KV, T, D = 2, 8, 2, 6, 4
    group = H // KV
    q, k = torch.randn(B, H, T, D), torch.randn(B, KV, T, D)
    # every value of kv head j is j: the attention output of a query head names its kv head
    v = torch.arange(KV, dtype=torch.float)[None, :, None, None].expand(B, KV, T, D).contiguous()
    position_ids = torch.arange(T).repeat(B, 1)
    if packed:
        position_ids[:, 3:] -= 3
    out = AttentionMask(position_ids, "sdpa", gqa).attend(q, k, v)
    for h in range(H):
        torch.testing.assert_close(out[:, h], torch.full((B, T, D), float(h // group)))


def test_packed_row_equals_documents_run_alone():
    model = tiny_model()
    gen = torch.Generator().manual_seed(1)
    docs = [torch.randint(1, 512, (n,), generator=gen) for n in (7, 1, 20, 12)]
    ids, pos = packed_row(docs)
    with torch.no_grad():
        packed, _ = model(ids, position_ids=pos)
        alone = torch.cat([model(d[None])[0] for d in docs], dim=1)
        plain, _ = model(ids)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    # and the mask matters: without boundaries later documents see earlier ones
    assert (plain - alone).abs().max() > 1e-3


def test_cu_seqlens_gives_the_same_boundaries_as_position_ids():
    model = tiny_model()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(1, 512, (2, 16), generator=gen)
    pos = torch.arange(16).repeat(2, 1)
    pos[0, 5:] -= 5
    pos[1, 9:] -= 9
    pos[1, 12:] -= 3
    cu = torch.tensor([0, 5, 16, 25, 28, 32], dtype=torch.int32)  # over the flattened batch
    assert torch.equal(positions_from_cu_seqlens(cu, 2, 16), pos)
    with torch.no_grad():
        torch.testing.assert_close(model(ids, cu_seqlens=cu)[0], model(ids, position_ids=pos)[0], atol=0, rtol=0)


def test_batch_without_boundaries_uses_plain_causal_attention(monkeypatch):
    pos = torch.arange(10).repeat(3, 1)
    mask = AttentionMask(pos, "sdpa", True)
    assert not mask.packed and mask.mask is None and mask.segments is None
    packed = pos.clone()
    packed[1, 4:] -= 4
    mask = AttentionMask(packed, "sdpa", True)  # CPU: one causal call per document
    assert mask.packed and mask.mask is None
    assert mask.segments == [[(0, 10)], [(0, 4), (4, 10)], [(0, 10)]]
    monkeypatch.setattr(model_module, "MAX_SEGMENTS_PER_ROW", 1)  # too many documents: one masked call
    mask = AttentionMask(packed, "sdpa", True)
    assert mask.packed and mask.segments is None
    assert mask.mask[1, 0, 5, 3].item() is False and mask.mask[1, 0, 5, 4].item() is True
    assert mask.mask[0, 0, 5, 3].item() is True and mask.mask[0, 0, 3, 5].item() is False


@pytest.mark.parametrize("gqa", [True, False])
def test_attention_per_document_equals_one_masked_call(monkeypatch, gqa):
    """The CPU fast path (a causal call per document) computes what the block-diagonal mask does,
    forward and backward."""
    torch.manual_seed(0)
    q = torch.randn(3, 4, 40, 16, requires_grad=True)
    k = torch.randn(3, 2, 40, 16, requires_grad=True)
    v = torch.randn(3, 2, 40, 16, requires_grad=True)
    pos = torch.arange(40).repeat(3, 1)
    pos[0, 7:] -= 7
    pos[0, 30:] -= 23
    pos[2, 39:] -= 39  # a one-token document at the end
    pos[1] = torch.cat([torch.arange(5, 25), torch.arange(20)])  # the first document began before this row
    results = []
    for limit in (32, 0):
        monkeypatch.setattr(model_module, "MAX_SEGMENTS_PER_ROW", limit)
        mask = AttentionMask(pos, "sdpa", gqa)
        assert (mask.segments is not None) == (limit == 32)
        out = mask.attend(q, k, v)
        grads = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), (q, k, v))
        results.append((out, grads))
    (a, ga), (b, gb) = results
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_flex_attention_matches_sdpa_on_packed_input():
    flex = pytest.importorskip("torch.nn.attention.flex_attention")
    del flex
    sdpa = tiny_model()
    flex_model = SmolLM3(sdpa.config, attention="flex").eval()
    flex_model.load_state_dict(sdpa.state_dict())
    ids, pos = packed_row([torch.arange(1, 9), torch.arange(20, 44)])
    with torch.no_grad():
        try:
            got = flex_model(ids, position_ids=pos)[0]
        except Exception as e:  # flex attention without a compiler backend on this platform
            pytest.skip(f"flex_attention unavailable here: {e}")
        torch.testing.assert_close(got, sdpa(ids, position_ids=pos)[0], atol=1e-5, rtol=0)


def test_document_start_labels_count_by_default_and_can_be_masked():
    model = tiny_model()
    # two documents, each ending with EOS; labels are the next token, across the boundary too
    stream = torch.tensor([5, 6, 7, EOS, 9, 10, 11, 12, EOS, 14])
    ids, labels = stream[None, :-1], stream[None, 1:]
    pos = torch.tensor([[0, 1, 2, 3, 0, 1, 2, 3, 4]])
    mask = document_start_loss_mask(ids, EOS)
    assert mask.tolist() == [[True, True, True, False, True, True, True, True, False]]
    other = labels.clone()
    other[ids == EOS] = 300  # a different first token for the documents that follow
    with torch.no_grad():
        logits, loss = model(ids, position_ids=pos, labels=labels)
        _, loss_other = model(ids, position_ids=pos, labels=other)
        _, masked = model(ids, position_ids=pos, labels=labels, loss_mask=mask)
        _, masked_other = model(ids, position_ids=pos, labels=other, loss_mask=mask)
    assert loss != loss_other  # default: the first-token labels are trained
    assert masked == masked_other  # masked: they contribute nothing
    per_token = F.cross_entropy(logits[0], labels[0], reduction="none")
    torch.testing.assert_close(loss, per_token.mean())
    torch.testing.assert_close(masked, per_token[mask[0]].mean())


def test_ignore_index_and_z_loss():
    model = tiny_model()
    ids = torch.randint(1, 512, (2, 12), generator=torch.Generator().manual_seed(3))
    labels = ids.roll(-1, dims=1)
    labels[0, -1] = -100
    with torch.no_grad():
        logits, plain = model(ids, labels=labels)
        _, with_z = model(ids, labels=labels, z_loss=1e-2)
    flat, flat_labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = flat_labels != -100
    ce = F.cross_entropy(flat[keep], flat_labels[keep])
    torch.testing.assert_close(plain, ce)
    torch.testing.assert_close(with_z, ce + 1e-2 * torch.logsumexp(flat[keep], -1).square().mean())


def test_optimizer_decays_matmul_weights_only():
    for tied in (True, False):
        model = tiny_model(tie_word_embeddings=tied)
        opt = model.configure_optimizer(lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-8)
        assert isinstance(opt, torch.optim.AdamW)
        decay, no_decay = opt.param_groups
        assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
        assert decay["betas"] == (0.9, 0.95) and decay["eps"] == 1e-8
        names = {id(p): n for n, p in model.named_parameters()}
        decayed = {names[id(p)] for p in decay["params"]}
        kept = {names[id(p)] for p in no_decay["params"]}
        assert not decayed & kept and decayed | kept == set(names.values())
        assert "embed_tokens.weight" in kept
        assert all(n.endswith("norm.weight") for n in kept - {"embed_tokens.weight"})
        assert {n.rsplit(".", 2)[-2] for n in decayed} >= {"qkv", "o_proj", "gate_up", "down_proj"}
        assert ("lm_head.weight" in decayed) == (not tied)


def test_set_rope_theta_equals_a_model_built_with_that_base():
    model = tiny_model()
    other = SmolLM3(get_config("smollm3-test", rope_theta=5e6)).eval()
    other.load_state_dict(model.state_dict())
    ids = torch.randint(1, 512, (1, 30), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        before = model(ids)[0]
        model.set_rope_theta(5e6)
        after = model(ids)[0]
        assert (before - after).abs().max() > 1e-4
        torch.testing.assert_close(after, other(ids)[0], atol=0, rtol=0)
    assert model.config.rope_theta == 5e6  # a checkpoint's model_config records the phase's base
    assert "rotary.inv_freq" not in model.state_dict()


def test_same_seed_same_weights_and_training_reduces_loss():
    a, b = tiny_model(seed=7).train(), tiny_model(seed=7).train()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    ids = torch.randint(1, 512, (4, 33), generator=torch.Generator().manual_seed(5))
    pos = torch.arange(32).repeat(4, 1)
    pos[:, 16:] -= 16
    opt = a.configure_optimizer(lr=3e-3, weight_decay=0.1)
    losses = []
    for _ in range(10):
        _, loss = a(ids[:, :-1], position_ids=pos, labels=ids[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.5


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_chunked_loss_without_logits_equals_the_full_loss_and_gradients(z_loss):
    model = tiny_model().train()
    ids = torch.randint(1, 512, (3, 40), generator=torch.Generator().manual_seed(6))
    labels = ids.roll(-1, dims=1)
    labels[0, :5] = -100
    pos = torch.arange(40).repeat(3, 1)
    pos[:, 20:] -= 20
    mask = document_start_loss_mask(ids, EOS) & (ids != 7)
    results = []
    for return_logits in (True, False):
        model.zero_grad()
        logits, loss = model(ids, position_ids=pos, labels=labels, loss_mask=mask, z_loss=z_loss,
                             return_logits=return_logits)
        (3 * loss).backward()  # backward scales the precomputed gradients by the incoming one
        results.append((logits, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (full_logits, full, full_grads), (no_logits, chunked, chunked_grads) = results
    assert full_logits is not None and no_logits is None
    torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    with torch.no_grad():  # evaluation: the loss alone
        torch.testing.assert_close(model(ids, position_ids=pos, labels=labels, loss_mask=mask, z_loss=z_loss,
                                         return_logits=False)[1], full, atol=1e-6, rtol=1e-6)


def test_swiglu_gradient_matches_autograd():
    from mixc.train.model import SwiGLU

    gate_up = torch.randn(2, 5, 12, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(SwiGLU.apply, (gate_up,))
    gate, up = gate_up.detach().chunk(2, dim=-1)
    torch.testing.assert_close(SwiGLU.apply(gate_up).detach(), F.silu(gate) * up)


@pytest.mark.parametrize("packed", [False, True])
def test_activation_checkpointing_gives_the_plain_loss_and_gradients(packed):
    plain = tiny_model(seed=3).train()
    ckpt = tiny_model(seed=3).train()
    ckpt.activation_checkpointing = True
    torch.manual_seed(4)
    if packed:
        ids, pos = packed_row([torch.randint(1, 512, (n,)) for n in (17, 40, 7)])
        ids, pos = torch.cat([ids, ids.flip(1)]), torch.cat([pos, pos.flip(1)])
        pos = torch.stack([pos[0], torch.cat([torch.arange(30), torch.arange(34)])])
    else:
        ids, pos = torch.randint(0, 512, (2, 64)), None
    labels = torch.randint(0, 512, ids.shape)
    saved, losses = [], []
    for model in (plain, ckpt):
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            _, loss = model(ids, position_ids=pos, labels=labels, return_logits=False)
        loss.backward()
        saved.append(None)
        losses.append(loss.item())
    cut = saved.index(None)
    # Checkpointing really keeps less for backward, and changes no number.
    assert sum(saved[cut + 1:-1]) < sum(saved[:cut]) / 2
    assert losses[0] == losses[1]
    a, b = dict(plain.named_parameters()), dict(ckpt.named_parameters())
    for name in a:
        torch.testing.assert_close(b[name].grad, a[name].grad, rtol=0, atol=0, msg=name)


def test_meta_device_build_gives_the_plain_construction_bit_for_bit():
    config = get_config("smollm3-test")
    torch.manual_seed(11)
    plain = SmolLM3(config)
    built = SmolLM3.build(get_config("smollm3-test"), "cpu", seed=11)
    assert not any(p.is_meta for p in built.parameters())
    a, b = plain.state_dict(), built.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert torch.equal(plain.rotary.inv_freq, built.rotary.inv_freq)
    assert built.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert (built.norm.weight == 1).all()
    other = SmolLM3.build(config, "cpu", seed=12)
    assert not torch.equal(other.embed_tokens.weight, built.embed_tokens.weight)


def test_bf16_chunked_loss_tracks_fp32_and_gpu_chunks_are_larger():
    """Under autocast bf16 (the GPU policy; CPU autocast here) the chunked loss and its
    bf16-GEMM weight gradient stay within bf16 error of the fp32 computation."""
    model = tiny_model(seed=2).train()
    ids = torch.randint(1, 512, (2, 48), generator=torch.Generator().manual_seed(1))
    labels = ids.roll(-1, dims=1)
    grads, losses = [], []
    for dtype in (torch.float32, torch.bfloat16):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            _, loss = model(ids, labels=labels, return_logits=False)
        loss.backward()
        losses.append(loss.item())
        grads.append(model.embed_tokens.weight.grad.clone())
    assert grads[1].dtype == torch.float32
    assert abs(losses[1] - losses[0]) / losses[0] < 1e-2
    assert F.cosine_similarity(grads[1].flatten(), grads[0].flatten(), dim=0) > 0.999
    assert model_module.chunk_rows(128256, "cuda") == 2092 and model_module.chunk_rows(128256, "cpu") == 256
