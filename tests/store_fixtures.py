"""A shard store written directly in mixc's layout, for tests that need shards but not a build."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from mixc.store import PHASE_FORMAT, SHARDS_FORMAT, write_json_atomic


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_source(store: Path, name: str, docs: list[np.ndarray], *, vocab_size: int, eos_id: int = 0,
                 docs_per_file: int = 50, tokenizer: dict | None = None) -> dict:
    """One source folder: documents (without EOS) end to end, EOS appended, split across files."""
    token_size = 2 if vocab_size <= 65536 else 4
    dtype = np.uint16 if token_size == 2 else np.uint32
    key = hashlib.sha256(f"{name}:{len(docs)}:{vocab_size}".encode()).hexdigest()[:12]
    folder = store / "sources" / name / key
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer or {"name": "test", "fingerprint": "f" * 64, "vocab_size": vocab_size, "eos_token": "<eos>", "eos_id": eos_id}
    files = []
    for k in range(0, max(len(docs), 1), docs_per_file):
        chunk = [np.append(np.asarray(d), eos_id).astype(dtype) for d in docs[k:k + docs_per_file]]
        path = folder / f"{k // docs_per_file:05d}.ds"
        (np.concatenate(chunk) if chunk else np.zeros(0, dtype)).tofile(path)
        np.cumsum([len(d) for d in chunk], dtype=np.uint64).tofile(str(path) + ".index")
        path.with_name(path.name + ".metadata").write_text(f"test|{token_size}\n{sum(map(len, chunk))}\n")
        files.append({"path": path.name, "tokens": int(sum(map(len, chunk))), "documents": len(chunk),
                      "sha256": _sha(path), "index_sha256": _sha(Path(str(path) + ".index"))})
    manifest = {"format": SHARDS_FORMAT, "source": name, "key": key, "tokenizer": tokenizer, "token_size": token_size,
                "documents": len(docs), "tokens": sum(f["tokens"] for f in files), "files": files,
                "input": {"location": f"test://{name}", "fingerprint": key}, "options": {}, "seed": 0,
                "mixc_version": "test"}
    write_json_atomic(folder / "manifest.json", manifest)
    return manifest


def make_store(tmp_path: Path, recipe_name: str, phases: dict[str, dict[str, float]], docs: dict[str, list[np.ndarray]],
               *, vocab_size: int = 1000, eos_id: int = 0, sequence_length: int = 32, budget_tokens: int = 0) -> Path:
    """A store with every source of `docs` and a phase manifest per phase of `phases`."""
    store = Path(tmp_path) / "store"
    manifests = {name: write_source(store, name, d, vocab_size=vocab_size, eos_id=eos_id) for name, d in docs.items()}
    for phase, weights in phases.items():
        total = sum(weights.values())
        any_m = next(iter(manifests.values()))
        write_json_atomic(store / "phases" / recipe_name / f"{phase}.json", {
            "format": PHASE_FORMAT, "recipe": recipe_name, "phase": phase, "stage": None,
            "tokenizer": any_m["tokenizer"], "token_size": any_m["token_size"], "sequence_length": sequence_length,
            "budget_tokens": budget_tokens,
            "sources": [{"name": n, "weight": w / total, "folder": f"sources/{n}/{manifests[n]['key']}",
                         "tokens": manifests[n]["tokens"], "documents": manifests[n]["documents"]} for n, w in weights.items()],
        })
    return store
