"""Inputs for build tests: a small trained tokenizer, jsonl/parquet sources, a recipe over them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

WORDS = ("the a model data token shard phase source mix curriculum learns from text code math web rate step "
         "budget weight sample document reader writer index file store key build run task worker").split()


def texts(seed: int, n: int, *, lo: int = 5, hi: int = 400) -> list[str]:
    """Deterministic documents of varied length (some with non-ASCII), none empty."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = rng.choice(WORDS, size=int(rng.integers(lo, hi)))
        text = " ".join(words)
        if i % 7 == 0:
            text += " naïve café — 数据 ✓"
        if i % 11 == 0:
            text = text.capitalize() + ".\n\nSecond paragraph."
        out.append(text)
    return out


def train_tokenizer(path: Path, vocab_size: int = 400, *, extra_tokens: int = 0) -> Path:
    """A byte-level BPE tokenizer.json with <|endoftext|> as id 0; `extra_tokens` added tokens widen the vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts(0, 300), trainer)
    if extra_tokens:
        tok.add_tokens([f"<extra_{i}>" for i in range(extra_tokens)])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def write_jsonl(path: Path, docs: list[str], **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"id": f"{path.stem}-{i}", "text": text, **extra}) + "\n")
    return path


def write_parquet(path: Path, docs: list[str], column: str = "text") -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [f"{path.stem}-{i}" for i in range(len(docs))], column: docs}), path, row_group_size=50)
    return path


def write_project(root: Path, sources: dict[str, dict], phases: dict[str, dict[str, float]], *, tokenizer: str,
                  name: str = "build-test", seed: int = 3) -> Path:
    """A catalog, one mix per phase (stage i+1) and a recipe; returns the recipe path."""
    import yaml

    root.mkdir(parents=True, exist_ok=True)
    (root / "catalog.yaml").write_text(yaml.safe_dump({"sources": sources}))
    phase_list = []
    for i, (phase, weights) in enumerate(phases.items()):
        (root / f"{phase}.yaml").write_text(yaml.safe_dump({"catalog": "catalog.yaml", "weights": "relative", "sources": weights}))
        phase_list.append({"name": phase, "stage": i + 1, "mix": f"{phase}.yaml", "steps": 10, "sequence_length": 64,
                           "rope_theta": 10000})
    recipe = {"name": name, "tokenizer": tokenizer, "model": "m", "global_batch_tokens": 512, "seed": seed,
              "schedule": {"type": "wsd", "peak_lr": 1e-3, "warmup_steps": 2, "decay_start_step": 5 * len(phases),
                           "decay_steps": 3},
              "phases": phase_list}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def wait_for(predicate, proc, timeout: float = 60) -> bool:
    """Poll `predicate` until it holds (True), the process `proc` ends or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    return False


def datatrove_tokenized(jsonl_folder: Path, out: Path, tokenizer_file: str | Path) -> Path:
    """The reference: datatrove's own DocumentTokenizer over a folder of JSONL, unshuffled, in one
    task (its shard is out/00000_unshuffled.ds). Builds compare their bytes with it."""
    from datatrove.executor import LocalPipelineExecutor  # datatrove: heavy, only for the tests that compare
    from datatrove.pipeline.readers import JsonlReader  # (the same)
    from datatrove.pipeline.tokens import DocumentTokenizer  # (the same)

    LocalPipelineExecutor([
        JsonlReader(str(jsonl_folder)),
        DocumentTokenizer(str(out), tokenizer_name_or_path=str(tokenizer_file), eos_token="<|endoftext|>",
                          shuffle_documents=False, batch_size=1000),
    ], tasks=1, workers=1, logging_dir=str(out.parent / f"{out.name}-logs")).run()
    return out
