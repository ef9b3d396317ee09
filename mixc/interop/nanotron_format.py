"""Facts of the nanotron config format that both directions use: how a folder names a source,
which model_config sizes name an architecture, and how mixc writes YAML for it."""

from __future__ import annotations

import re
from typing import Any

import yaml

from ..train.configs import CONFIGS, SmolLM3Config

LAYOUT_WORDS = frozenset({"standard", "tokenized"})
NAMINGS = ("read-path", "folder")

# The sizes in nanotron's model_config that tell architectures apart, in the order an export
# writes them. Field names are transformers' (and mixc's SmolLM3Config's) too.
SIZE_KEYS = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads",
             "vocab_size")


def _sizes(name: str) -> dict[str, int]:
    config = SmolLM3Config(**CONFIGS[name])
    return {key: getattr(config, key) for key in SIZE_KEYS}


# The architectures an import recognises by name and an export writes the sizes of.
KNOWN_MODELS = {"smollm3-3b": _sizes("smollm3-3b")}


def model_name(config: dict[str, Any]) -> tuple[str, str]:
    """mixc's model name for a model_config's sizes, and the sizes in words."""
    sizes = {k: config.get(k) for k in SIZE_KEYS}
    words = ", ".join(f"{k} {v}" for k, v in sizes.items() if v is not None) or "not given"
    for name, known in KNOWN_MODELS.items():
        if sizes == known:
            return name, words
    layers, hidden = sizes["num_hidden_layers"], sizes["hidden_size"]
    return (f"nanotron-{layers}l-{hidden}h" if layers and hidden else "nanotron"), words


def source_name(path: str) -> str:
    """The last component of a folder path, skipping a trailing storage-layout word."""
    parts = [p for p in re.split(r"[/\\]+", path.strip()) if p and not p.endswith(":")]
    if not parts:
        return path.strip()
    if len(parts) > 1 and parts[-1].lower() in LAYOUT_WORDS:
        return parts[-2]
    # mixc's own store: .../sources/<source>/<12-hex key>
    if len(parts) > 2 and re.fullmatch(r"[0-9a-f]{12}", parts[-1]) and parts[-3] == "sources":
        return parts[-2]
    return parts[-1]


def last_component(path: str) -> str:
    parts = [p for p in re.split(r"[/\\]+", path.strip()) if p]
    return parts[-1] if parts else path


def slug(text: str) -> str:
    """A safe mixc name (spec.check_name) from any text: a folder or stage name of a config."""
    out = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9_.+-]+", "-", str(text).strip())).strip("-._+")
    return out[:128] or "phase"


def plain_number(x: float) -> int | float:
    """1.0 as 1: what a person writes, and what nanotron's configs hold."""
    return int(x) if float(x).is_integer() and abs(x) < 2**53 else x


def dump(data: Any, header: str, flow_leaves: bool = False) -> str:
    """YAML with a comment header; flow_leaves writes innermost lists and mappings on one line."""
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000, default_flow_style=None if flow_leaves else False)
    return "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines()) + body
