"""A shard store written through mixc's own writer and store functions, for tests that need shards
but not a build (no tokenizer, no datatrove pipeline)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mixc.shards.writer import ShardWriter
from mixc.store import finalize_source, token_size_for, write_phase_manifest


def write_source(store: Path, name: str, docs: list[np.ndarray], *, vocab_size: int, eos_id: int = 0,
                 docs_per_file: int = 50, tokenizer: dict | None = None) -> dict:
    """One source folder: documents (without EOS) end to end, EOS appended, `docs_per_file` per shard."""
    token_size = token_size_for(vocab_size)
    key = hashlib.sha256(f"{name}:{len(docs)}:{vocab_size}".encode()).hexdigest()[:12]
    folder = store / "sources" / name / key  # not source_folder(): tests also use names a build refuses
    tokenizer = tokenizer or {"name": "test", "fingerprint": "f" * 64, "vocab_size": vocab_size, "eos_token": "<eos>", "eos_id": eos_id}
    summaries = []
    for k in range(0, len(docs), docs_per_file):
        # one writer per shard: the fixture cuts shards by document count, the build by tokens
        writer = ShardWriter(folder / ".work" / "shards", token_size=token_size, tokenizer_name="test",
                             shard_tokens=1 << 62, prefix=f"{k // docs_per_file:05d}_")
        chunk = [np.append(np.asarray(d), eos_id) for d in docs[k:k + docs_per_file]]
        writer.write(np.concatenate(chunk), np.cumsum([len(d) for d in chunk]))
        summaries.append({"files": [f.to_dict() for f in writer.close()]})
    return finalize_source(folder, summaries, {
        "source": name, "key": key, "tokenizer": tokenizer, "token_size": token_size,
        "input": {"location": f"test://{name}", "fingerprint": key}, "options": {}, "seed": 0, "mixc_version": "test"})


def make_store(tmp_path: Path, recipe_name: str, phases: dict[str, dict[str, float]], docs: dict[str, list[np.ndarray]],
               *, vocab_size: int = 1000, eos_id: int = 0, sequence_length: int = 32, budget_tokens: int = 0) -> Path:
    """A store with every source of `docs` and a phase manifest per phase of `phases`."""
    store = Path(tmp_path) / "store"
    manifests = {name: write_source(store, name, d, vocab_size=vocab_size, eos_id=eos_id) for name, d in docs.items()}
    for phase, weights in phases.items():
        total = sum(weights.values())
        any_m = next(iter(manifests.values()))
        write_phase_manifest(store, recipe_name, phase, {
            "stage": None, "tokenizer": any_m["tokenizer"], "token_size": any_m["token_size"],
            "sequence_length": sequence_length, "budget_tokens": budget_tokens,
            "sources": [{"name": n, "share": w / total, "folder": f"sources/{n}/{manifests[n]['key']}",
                         "tokens": manifests[n]["tokens"], "documents": manifests[n]["documents"]} for n, w in weights.items()],
        })
    return store
