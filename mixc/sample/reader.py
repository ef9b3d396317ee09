"""A source's sample: its documents, its fingerprint, its sample:// address, a datatrove reader.

A reader task takes a contiguous range of indices: rank r of W reads [r*N//W, (r+1)*N//W).
Concatenating the ranks' outputs in rank order therefore gives the documents in index
order whatever the number of tasks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.readers.base import BaseReader

from ..spec import Source
from .arithmetic import math_document
from .code import code_document, programming_language
from .dice import GENERATOR_VERSION, Seeder, source_key
from .reasoning import reasoning_document
from .web import web_document, web_style

DEFAULT_SAMPLE_DOCUMENTS = 500


def sample_location(source: Source) -> str:
    """The sample:// address a source's sample is known by (in manifests and logs).

    It names what the bytes depend on (category, language, name), not the source's `path`:
    two sources with the same path but different names have different samples.
    """
    return f"sample://{source.category}/{source.language}/{source.name}"


def _generator(source: Source):
    """One function index -> text for this source's category."""
    if source.category == "web":
        style = web_style(source.name)
        return lambda dice: web_document(source.language, dice, style)
    if source.category == "code":
        language = programming_language(source)
        return lambda dice: code_document(language, dice)
    if source.category == "math":
        return math_document
    chat = "chatml" in source.name.lower()
    return lambda dice: reasoning_document(dice, chat)


def sample_documents(source: Source, *, seed: int, documents: int = DEFAULT_SAMPLE_DOCUMENTS,
                     start: int = 0, stop: int | None = None) -> Iterator[dict]:
    """Documents [start, stop) of the source's sample (all `documents` by default), as {"id", "text"}."""
    seeder = Seeder(source_key(source, seed))
    make = _generator(source)
    stop = documents if stop is None else min(stop, documents)
    for index in range(start, stop):
        yield {"id": f"{source.name}/{index}", "text": make(seeder.dice(index))}


def sample_fingerprint(source: Source, *, seed: int, documents: int = DEFAULT_SAMPLE_DOCUMENTS) -> dict:
    """What identifies a sample's bytes: a changed generator, source, seed or size gives a new fingerprint."""
    identity = {"generator": GENERATOR_VERSION, "source": source.name, "category": source.category, "language": source.language,
                "programming_language": source.programming_language, "seed": int(seed), "documents": int(documents)}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode("utf-8")).hexdigest()
    return {"location": sample_location(source), "files": [], **identity, "fingerprint": digest}


def rank_range(documents: int, rank: int, world_size: int) -> tuple[int, int]:
    """The contiguous block of document indices that task `rank` of `world_size` reads."""
    return rank * documents // world_size, (rank + 1) * documents // world_size


class SampleReader(BaseReader):
    """A datatrove reader over a source's sample; task r of W reads indices rank_range(N, r, W)."""

    name = "🧪 Sample"

    def __init__(self, source: Source, *, seed: int, documents: int = DEFAULT_SAMPLE_DOCUMENTS, limit: int = -1,
                 default_metadata: dict | None = None):
        super().__init__(limit=limit, default_metadata=default_metadata)
        self.source = source
        self.seed = int(seed)
        self.documents = int(documents)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        if data:
            yield from data
        start, stop = rank_range(self.documents, rank, world_size)
        if self.limit != -1:
            stop = min(stop, start + self.limit)
        base = {"source": self.source.name, "category": self.source.category, "language": self.source.language}
        for index, doc in enumerate(sample_documents(self.source, seed=self.seed, documents=self.documents, start=start, stop=stop),
                                    start=start):
            metadata = base | {"index": index}
            if self.default_metadata:
                metadata = self.default_metadata | metadata
            document = Document(text=doc["text"], id=doc["id"], metadata=metadata)
            with self.track_time():
                self.update_doc_stats(document)
            self.stat_update("documents")
            yield document


def sample_reader(source: Source, *, seed: int, documents: int = DEFAULT_SAMPLE_DOCUMENTS) -> SampleReader:
    return SampleReader(source, seed=seed, documents=documents)
