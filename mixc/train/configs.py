"""SmolLM3's dimensions and the named model configs, without torch.

The one home of these numbers: the model (mixc/train/model.py) builds from them, and nanotron
interop (mixc/interop) reads them without importing torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import MixcError


@dataclass
class SmolLM3Config:
    """Field names and meanings as transformers' SmolLM3Config, so export is a direct dump."""

    vocab_size: int = 128256
    hidden_size: int = 2048
    intermediate_size: int = 11008
    num_hidden_layers: int = 36
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    hidden_act: str = "silu"
    max_position_embeddings: int = 65536
    rope_theta: float = 50000.0
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = True
    no_rope_layer_interval: int = 4
    no_rope_layers: list[int] | None = None  # 1 = the layer uses RoPE; None = every interval-th layer skips it
    initializer_range: float = 0.02
    attention_bias: bool = False
    mlp_bias: bool = False
    bos_token_id: int | None = 128000
    eos_token_id: int | None = 128001
    pad_token_id: int | None = 128004

    def __post_init__(self):
        if self.no_rope_layers is None:
            # transformers: layer i is NoPE when (i + 1) % interval == 0.
            self.no_rope_layers = [int((i + 1) % self.no_rope_layer_interval != 0) for i in range(self.num_hidden_layers)]
        problems = []
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}")
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads {self.num_attention_heads} is not a multiple of num_key_value_heads {self.num_key_value_heads}")
        if (self.hidden_size // max(self.num_attention_heads, 1)) % 2:
            problems.append("the head dimension must be even for rotary embeddings")
        if len(self.no_rope_layers) < self.num_hidden_layers:
            problems.append(f"no_rope_layers has {len(self.no_rope_layers)} entries for {self.num_hidden_layers} layers")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act {self.hidden_act!r} is not supported (only 'silu')")
        if self.attention_bias or self.mlp_bias:
            problems.append("biases are not supported (SmolLM3 has none)")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                problems.append(f"{name} {value} is outside the vocabulary (size {self.vocab_size})")
        if problems:
            raise MixcError("invalid model config: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SmolLM3Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MixcError(f"model config has unknown field(s): {', '.join(unknown)}")
        return cls(**values)


# Named configs. smollm3-3b is the published SmolLM3-3B at its pretraining RoPE base; the
# tiny ones keep its shape (GQA, one NoPE layer in four, tied embeddings) at CPU scale and use
# the demo tokenizer sample:bpe-8192 (vocab 8192, EOS id 0).
_TINY_IDS = dict(bos_token_id=None, eos_token_id=0, pad_token_id=None)
CONFIGS: dict[str, dict[str, Any]] = {
    "smollm3-3b": dict(),
    "smollm3-tiny": dict(vocab_size=8192, hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, **_TINY_IDS),
    "smollm3-test": dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, **_TINY_IDS),
}


def get_config(name: str, **overrides: Any) -> SmolLM3Config:
    if name not in CONFIGS:
        raise MixcError(f"unknown model '{name}'; known models: {', '.join(sorted(CONFIGS))}")
    return SmolLM3Config(**{**CONFIGS[name], **overrides})
