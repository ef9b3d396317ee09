"""Generate text with transformers from a `mixc export --format hf` folder: the demo's last step.

    python -m mixc.train.generate demo-out/hf --tokenizer demo-out/run --prompt "The"

The point is the round trip: the weights mixc trained load into transformers'
`AutoModelForCausalLM` and produce text through the tokenizer the shards were built with.
`--tokenizer` is a tokenizer.json, or a run/checkpoint folder whose metadata names the shard
store and the tokenizer file in it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import MixcError


def tokenizer_file(path: str | Path) -> Path:
    """A tokenizer.json itself, or the one a run's checkpoint was trained with."""
    path = Path(path)
    if path.is_file():
        return path
    from . import checkpoint

    meta = json.loads((checkpoint.resolve(path) / "meta.json").read_text())
    return checkpoint.tokenizer_file(meta, path)


def load(model_dir: str | Path, tokenizer: str | Path):
    """(transformers model, tokenizers.Tokenizer), loaded once for any number of prompts."""
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging

    logging.disable_progress_bar()
    tok = Tokenizer.from_file(str(tokenizer_file(tokenizer)))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return model.eval(), tok


def continue_text(model, tok, prompt: str, *, max_new_tokens: int = 20, sample: bool = False, seed: int = 0) -> str:
    """The prompt and its continuation, greedy by default (deterministic)."""
    import torch

    # No special tokens: the post-processor appends EOS, which would end the prompt's document.
    ids = tok.encode(prompt, add_special_tokens=False).ids
    if not ids:
        raise MixcError("the prompt encodes to no tokens")
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=sample,
                             top_k=50 if sample else None, pad_token_id=model.config.eos_token_id)
    return tok.decode(out[0].tolist(), skip_special_tokens=False)


def generate(model_dir: str | Path, tokenizer: str | Path, prompt: str, **kw) -> str:
    model, tok = load(model_dir, tokenizer)
    return continue_text(model, tok, prompt, **kw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir")
    parser.add_argument("--tokenizer", help="tokenizer.json, or the run folder that trained the model "
                        "(default: the tokenizer.json `mixc export` put next to the weights)")
    parser.add_argument("--prompt", action="append", help="one or more prompts (default: a few)")
    parser.add_argument("--max-new-tokens", type=int, default=20)
    parser.add_argument("--sample", action="store_true", help="top-k sampling instead of greedy decoding")
    args = parser.parse_args(argv)
    try:
        model, tok = load(args.model_dir, args.tokenizer or Path(args.model_dir) / "tokenizer.json")
        for prompt in args.prompt or ["The", "def ", "In mathematics,"]:
            text = continue_text(model, tok, prompt, max_new_tokens=args.max_new_tokens, sample=args.sample)
            print(f"{prompt!r} -> {text!r}", flush=True)
    except MixcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
