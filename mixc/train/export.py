"""Hugging Face export: a mixc model or checkpoint as a folder `SmolLM3ForCausalLM` loads.

`export_hf` writes `config.json` and `model.safetensors`. The config spells out every RoPE
field, because a missing one silently falls back to transformers' default base of 2,000,000
instead of the 50,000 (pretraining) or 5,000,000 (64k) the model was trained with. It writes
the base in both spellings transformers has used: `rope_parameters` (5.x) and the top-level
`rope_theta` / `rope_scaling` pair (4.x). For inference beyond the trained length, pass
`rope_scaling=yarn(...)`: SmolLM3 was trained to 64k with a plain base change and extends
to 128k with YaRN at inference only.

The weights are renamed to transformers' layout (mixc fuses q/k/v and gate/up; they are split
here). Tied embeddings are stored once, as `model.embed_tokens.weight`; transformers ties
`lm_head.weight` to it on load.

`model_from_checkpoint` rebuilds a model from a mixc checkpoint (mixc/train/checkpoint.py):
`state["model"]` is the model's state_dict (a sharded `--fsdp` checkpoint's shards are read
from its `sharded/` folder on this one process) and `meta["model_config"]` the SmolLM3Config
as a dict, including the RoPE base of the phase that wrote it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from tokenizers import Tokenizer

from ..errors import MixcError
from ..locyaml import SpecError, SpecErrors, load_file
from ..spec import Recipe
from ..store import write_atomic
from . import checkpoint
from .model import SmolLM3, SmolLM3Config

HF_ARCHITECTURE = "SmolLM3ForCausalLM"


def yarn(factor: float, original_max_position_embeddings: int, **extra: Any) -> dict[str, Any]:
    """YaRN RoPE scaling for inference up to `factor` x the trained length."""
    if factor <= 1:
        raise MixcError(f"YaRN factor must be above 1, got {factor}")
    return {"rope_type": "yarn", "factor": float(factor),
            "original_max_position_embeddings": int(original_max_position_embeddings), **extra}


def hf_config(config: SmolLM3Config, *, rope_scaling: dict[str, Any] | None = None,
              dtype: torch.dtype = torch.float32, extra: dict[str, Any] | None = None,
              max_position_embeddings: int | None = None) -> dict[str, Any]:
    """`max_position_embeddings`: the length the weights were trained at, when known (a
    checkpoint's phase); else the model config's constant."""
    values = config.to_dict()
    if max_position_embeddings is not None:
        values["max_position_embeddings"] = int(max_position_embeddings)
    rope_parameters = {"rope_type": "default", "rope_theta": float(config.rope_theta)}
    if rope_scaling:
        scaling = dict(rope_scaling)
        scaling.setdefault("rope_type", scaling.pop("type", None) or "yarn")
        if "original_max_position_embeddings" not in scaling:
            raise MixcError("rope_scaling needs original_max_position_embeddings (the length the model was trained at)")
        rope_parameters = {**scaling, "rope_theta": float(config.rope_theta)}
        factor = scaling.get("factor")
        if factor:
            # The usable length grows with the scaling factor.
            values["max_position_embeddings"] = int(scaling["original_max_position_embeddings"] * factor)
    out = {
        "architectures": [HF_ARCHITECTURE],
        "model_type": "smollm3",
        **values,
        "rope_theta": float(config.rope_theta),
        "rope_scaling": {k: v for k, v in rope_parameters.items() if k != "rope_theta"} if rope_scaling else None,
        "rope_parameters": rope_parameters,
        "use_sliding_window": False,
        "sliding_window": None,
        "attention_dropout": 0.0,
        "use_cache": True,
        "dtype": str(dtype).removeprefix("torch."),
        "torch_dtype": str(dtype).removeprefix("torch."),
    }
    out.update(extra or {})
    return out


def hf_state_dict(model: SmolLM3) -> dict[str, torch.Tensor]:
    """The model's weights under transformers' names, q/k/v and gate/up split, tied weights once."""
    config = model.config
    q_size = config.num_attention_heads * config.head_dim
    kv_size = config.num_key_value_heads * config.head_dim
    out: dict[str, torch.Tensor] = {"model.embed_tokens.weight": model.embed_tokens.weight,
                                    "model.norm.weight": model.norm.weight}
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        q, k, v = layer.self_attn.qkv.weight.split([q_size, kv_size, kv_size], dim=0)
        gate, up = layer.mlp.gate_up.weight.chunk(2, dim=0)
        out.update({
            prefix + "input_layernorm.weight": layer.input_layernorm.weight,
            prefix + "self_attn.q_proj.weight": q,
            prefix + "self_attn.k_proj.weight": k,
            prefix + "self_attn.v_proj.weight": v,
            prefix + "self_attn.o_proj.weight": layer.self_attn.o_proj.weight,
            prefix + "post_attention_layernorm.weight": layer.post_attention_layernorm.weight,
            prefix + "mlp.gate_proj.weight": gate,
            prefix + "mlp.up_proj.weight": up,
            prefix + "mlp.down_proj.weight": layer.mlp.down_proj.weight,
        })
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = model.lm_head.weight
    return out


def export_hf(model: SmolLM3, config: SmolLM3Config | None, out_dir: str | Path, *,
              rope_scaling: dict[str, Any] | None = None, dtype: torch.dtype = torch.float32,
              extra: dict[str, Any] | None = None, max_position_embeddings: int | None = None) -> Path:
    """Write `out_dir/config.json` and `out_dir/model.safetensors`; returns out_dir."""
    import safetensors.torch  # only when writing the weights

    config = config or model.config
    if config.to_dict() != model.config.to_dict():
        raise MixcError("export_hf: the config passed differs from the model's own config")
    refuse_nonfinite(model.state_dict(), "the model")
    tensors = {name: t.detach().to("cpu", dtype).contiguous() for name, t in hf_state_dict(model).items()}
    overflow = list(checkpoint.nonfinite_tensors(tensors))
    if overflow:
        raise MixcError(f"the model's weights do not fit {str(dtype).removeprefix('torch.')} ({len(overflow)} tensor(s) "
                        f"overflow, e.g. {overflow[0]}); nothing exported (choose a wider --dtype)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Every file is written under a temporary name and renamed, config.json last: a killed
    # export never leaves a folder that transformers would load as complete.
    (out / "config.json").unlink(missing_ok=True)
    write_atomic(out / "model.safetensors", safetensors.torch.save(tensors, metadata={"format": "pt"}))
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
                  "pad_token_id": config.pad_token_id}
    write_atomic(out / "generation_config.json", json.dumps(generation, indent=2, sort_keys=True) + "\n")
    text = json.dumps(hf_config(config, rope_scaling=rope_scaling, dtype=dtype, extra=extra,
                                max_position_embeddings=max_position_embeddings), indent=2, sort_keys=True)
    write_atomic(out / "config.json", text + "\n")
    return out


def refuse_nonfinite(weights: dict[str, torch.Tensor], where: Any) -> None:
    """A NaN or infinite weight makes every output NaN: such a model is refused, never written."""
    bad = list(checkpoint.nonfinite_tensors(weights))
    if bad:
        raise MixcError(f"{where}: {len(bad)} of {len(weights)} weight tensors hold NaN or infinite values "
                        f"(e.g. {bad[0]}); nothing exported (export an earlier checkpoint folder)")


def model_from_checkpoint(path: str | Path, *, attention: str = "sdpa", warn: Callable[[str], Any] | None = None
                          ) -> tuple[SmolLM3, SmolLM3Config, dict[str, Any]]:
    """(model, config, meta) from a checkpoint folder, or a run folder (its newest checkpoint
    that loads; `warn` hears of every damaged one passed over)."""
    folder, state, meta = checkpoint.load_given(path, warn=warn or (lambda _msg: None))
    if "model_config" not in meta or not ("model" in state or "sharded" in state):
        raise MixcError(f"{folder} has no model (expected meta.json 'model_config' and state 'model')")
    config = SmolLM3Config.from_dict(meta["model_config"])
    model = SmolLM3(config, attention=attention)
    # A sharded (--fsdp) checkpoint's shards are read into this model's full-size tensors.
    loaded = checkpoint.load_model_weights(state, model.state_dict())
    weights = {_strip_wrappers(k): v for k, v in loaded.items()}
    refuse_nonfinite(weights, folder)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise MixcError(f"{folder}: checkpoint weights do not fit the model config "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return model, config, meta


def _strip_wrappers(name: str) -> str:
    # DDP saves "module.", torch.compile "_orig_mod."; the weights are the same.
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


def export_checkpoint(path: str | Path, out_dir: str | Path, *, yarn_factor: float | None = None,
                      dtype: torch.dtype = torch.float32, warn: Callable[[str], Any] | None = None) -> Path:
    """`mixc export CHECKPOINT --format hf OUT`: the checkpoint's model as a transformers folder.

    max_position_embeddings (and YaRN's original length, with `yarn_factor`) is the sequence
    length the checkpoint was trained at: its phase's, not the model's constant (a 4k-phase
    checkpoint of smollm3-3b has never seen 65,536 positions). See `trained_length`."""
    model, config, meta = model_from_checkpoint(path, warn=warn)
    length, origin = trained_length(meta or {}, config)
    rope_scaling = yarn(yarn_factor, length) if yarn_factor else None
    extra = {"mixc": {**{k: meta[k] for k in ("recipe", "phase", "step") if k in meta}, "trained_sequence_length": length,
                      "trained_sequence_length_from": origin}}
    try:
        tokenizer = checkpoint.tokenizer_file(meta or {}, path)
    except checkpoint.TokenizerMissing:
        tokenizer = None  # a moved store only means the export carries no tokenizer (generate takes --tokenizer)
    if tokenizer is not None:  # before the weights and config: config.json is written last
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / "config.json").unlink(missing_ok=True)
        export_tokenizer(tokenizer, out_dir, eos_token_id=config.eos_token_id, max_length=length)
    return export_hf(model, config, out_dir, rope_scaling=rope_scaling, dtype=dtype, extra=extra,
                     max_position_embeddings=length)


def trained_length(meta: dict[str, Any], config: SmolLM3Config) -> tuple[int, str]:
    """(sequence length the checkpoint's phase trained at, where that figure came from).

    From the checkpoint's meta when it records `sequence_length`, else from its recipe file's
    phase of that name; only when neither is readable, the model config's constant (said so in
    the exported config's "mixc" block)."""
    if isinstance(meta.get("sequence_length"), int) and meta["sequence_length"] > 0:
        return meta["sequence_length"], "checkpoint"
    recipe, phase = meta.get("recipe"), meta.get("phase")
    if isinstance(recipe, str) and isinstance(phase, str) and Path(recipe).is_file():
        try:
            phases = Recipe.model_validate(load_file(recipe).data).phases
        except (OSError, SpecError, SpecErrors, ValidationError):  # edited or broken since: the model's constant
            phases = []
        for p in phases:
            if p.name == phase:
                return p.sequence_length, f"recipe {recipe}, phase {phase}"
    return config.max_position_embeddings, "model config (the checkpoint names no readable recipe phase)"


def export_tokenizer(tokenizer_json: str | Path, out_dir: str | Path, *, eos_token_id: int, max_length: int) -> None:
    """Put the shards' tokenizer next to the weights, so `AutoTokenizer.from_pretrained(OUT)` works."""
    out = Path(out_dir)
    tok = Tokenizer.from_file(str(tokenizer_json))
    eos = tok.id_to_token(eos_token_id)
    if eos is None:
        raise MixcError(f"{tokenizer_json}: no token with the model's EOS id {eos_token_id}")
    write_atomic(out / "tokenizer.json", Path(tokenizer_json).read_bytes())
    settings = {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos, "bos_token": None,
                "pad_token": eos, "model_max_length": int(max_length), "clean_up_tokenization_spaces": False}
    write_atomic(out / "tokenizer_config.json", json.dumps(settings, indent=2, sort_keys=True) + "\n")

