"""Generate text with transformers from a `mixc export --format hf` folder: the demo's last step.

    mixc generate demo-out/hf --tokenizer demo-out/run --prompt "The"
    (python -m mixc.train.generate ... is the same command)

The point is the round trip: the weights mixc trained load into transformers'
`AutoModelForCausalLM` and produce text through the tokenizer the shards were built with.
`--tokenizer` is a tokenizer.json, or a run/checkpoint folder whose metadata names the shard
store and the tokenizer file in it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer

from ..errors import MixcError
from . import checkpoint


def tokenizer_file(path: str | Path) -> Path:
    """A tokenizer.json itself, or the one a run's checkpoint was trained with."""
    path = Path(path)
    if path.is_file():
        return path
    meta = json.loads((checkpoint.resolve(path) / "meta.json").read_text())
    return checkpoint.tokenizer_file(meta, path)


def load(model_dir: str | Path, tokenizer: str | Path):
    """(transformers model, tokenizers.Tokenizer), loaded once for any number of prompts."""
    from transformers import AutoModelForCausalLM  # transformers and torch: heavy, only to generate
    from transformers.utils import logging  # (the same)

    logging.disable_progress_bar()
    tok = Tokenizer.from_file(str(tokenizer_file(tokenizer)))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    return model.eval(), tok


def continue_text(model, tok, prompt: str, *, max_new_tokens: int = 20, sample: bool = False, seed: int = 0) -> str:
    """The prompt and its continuation, greedy by default (deterministic)."""
    import torch  # heavy: `mixc generate` loads it through transformers, not at import

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


DEFAULT_PROMPTS = ("The", "def ", "In mathematics,")


def generate_texts(model_dir: str | Path, prompts: Iterable[str] = (), *, tokenizer: str | Path | None = None,
                   max_new_tokens: int = 20, sample: bool = False) -> Iterator[tuple[str, str]]:
    """(prompt, prompt + continuation) for each prompt (default: a few), loading the model once.

    `tokenizer`: a tokenizer.json or the run folder that trained the model; by default the
    tokenizer.json `mixc export` put next to the weights."""
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise MixcError(f"{model_dir}: no config.json here; export a checkpoint first (`mixc export RUN --format hf {model_dir}`)")
    if tokenizer is None:
        tokenizer = model_dir / "tokenizer.json"
        if not tokenizer.is_file():
            raise MixcError(f"{model_dir}: no tokenizer.json next to the weights; pass --tokenizer (a tokenizer.json or the run folder)")
    model, tok = load(model_dir, tokenizer)
    for prompt in prompts or DEFAULT_PROMPTS:
        yield prompt, continue_text(model, tok, prompt, max_new_tokens=max_new_tokens, sample=sample)


if __name__ == "__main__":  # `python -m mixc.train.generate ARGS` is `mixc generate ARGS`
    from ..cli import main

    main(["generate", *sys.argv[1:]], prog_name="mixc")
