"""The lowering pass: the sources of a plan's phases -> one datatrove pipeline per source.

Each source becomes [reader, optional length filter, TokenizeStep]: the reader chosen by the
source's format (strict parquet/jsonl readers on a datatrove data folder — local path, file://,
hf://... — or HuggingFaceDatasetReader for `format: hf`), or mixc's sample reader for
`sample://` locations and `--sample` builds.

Lowering also fixes the source's store key: sha256 over its input fingerprint, the tokenizer
fingerprint and the options that change bytes. Everything in it is canonical, never the spelling
of the spec: a local location enters as its resolved absolute path, so the same source built
from any working directory, through a relative or an absolute path or a symlink, has one key.
Input fingerprints:
  - local files: the resolved location, and every file's path (relative to the source folder),
    size and mtime in ns.
    Editing or replacing a file changes its mtime, so the key changes; hashing terabytes of
    parquet on every build would cost more than tokenizing them.
  - remote files (hf://, s3://): path, size and whatever content id the filesystem reports
    (blob id / ETag / sha256).
  - `format: hf` datasets: dataset id, config, split, data_dir and the hub revision sha.
  - sample sources: `sample_fingerprint(source, seed, documents)`.
The task count is not part of the key: any complete tokenization of the same input with the
same tokenizer and options is an equally valid copy, and reruns stay incremental.

Nothing here runs a pipeline or writes a file; it only lists the input.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datatrove.io import get_datafolder

from ..errors import MixcError
from ..plan import PhasePlan
from ..sample import sample_fingerprint, sample_location, sample_reader
from ..spec import Heldout, Source
from ..store import source_folder
from . import heldout
from .fast_encoder import encoder_choice
from .readers import LengthFilter, StrictJsonlReader, StrictParquetReader
from .tokenize import DEFAULT_BATCH_DOCUMENTS, TokenizerRef, TokenizeStep
from .writer import DEFAULT_SHARD_TOKENS

DEFAULT_GLOBS = {"parquet": "**/*.parquet", "jsonl": "**/*.jsonl*"}
WORK = ".work"


@dataclass(frozen=True)
class BuildOptions:
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    shuffle_seed: int | None = None  # shuffle documents within each shard
    sample: bool = False  # read every source's sample instead of its location
    sample_documents: int = 500
    seed: int = 0  # the recipe's seed: picks the sample documents
    tasks: int = 1  # datatrove tasks per source
    batch_documents: int = DEFAULT_BATCH_DOCUMENTS
    threads: int | None = None  # RAYON_NUM_THREADS per worker (1 when several workers run)
    fast_encoder: bool = True  # tiktoken where exact for the tokenizer (see fast_encoder.py), else HF tokenizers
    heldout: Heldout | None = None  # the recipe's held-out policy (a source's own overrides it); None: no split


@dataclass
class SourceBuild:
    """One source lowered: where its shards go and the datatrove pipeline that writes them."""

    name: str
    key: str
    folder: str  # relative to the store: sources/<name>/<key>
    input: dict
    options: dict
    tasks: int
    pipeline: list = field(repr=False)
    rebuild: bool = False  # `mixc build --rebuild`: tokenize afresh beside the folder, then swap it in
    category: str = ""  # web, multilingual, code, math, reasoning: recorded with the held-out split
    heldout_max_fraction: float | None = None  # the policy's cap, recorded to explain a source left without held-out documents

    def path(self, store: str | Path) -> Path:
        return Path(store) / self.folder

    def build_path(self, store: str | Path) -> Path:
        """Where the tasks write: the folder itself, or for a rebuild a staging folder outside
        `sources/`, so that the complete folder stays readable until the new one replaces it."""
        return Path(store) / rebuild_folder(self.folder) if self.rebuild else self.path(store)

    def work(self, store: str | Path) -> Path:
        return self.build_path(store) / WORK


REBUILD = ".rebuild"


def rebuild_folder(folder: str) -> str:
    """sources/<name>/<key> -> .rebuild/<name>/<key> (relative to the store)."""
    return str(Path(REBUILD, *Path(folder).parts[1:]))


def canonical_sha256(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_sample(source: Source, options: BuildOptions) -> bool:
    return options.sample or (source.path or "").startswith("sample://")


def _local_path(url: str) -> Path | None:
    """The local path of a location, or None for a remote one."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://"))
    if "://" in url:
        return None
    return Path(url)


def _disk_location(source: Source) -> tuple[str, str, bool]:
    """(data folder, glob pattern, recursive) of a file source, as datatrove's readers take them."""
    url = source.url
    glob = source.glob or DEFAULT_GLOBS[source.format]
    local = _local_path(url)
    if local is not None:
        if not local.exists():
            raise MixcError(f"source '{source.name}': path '{url}' does not exist")
        if local.is_file():  # one file: its folder, matched by name
            return str(local.parent.resolve()), local.name, False
        return str(local.resolve()), glob, True
    return url, glob, True


def canonical_location(source: Source) -> str:
    """The location as a key input: a local path resolved (file:///abs/path), a remote URL as given.

    The spec's own spelling (`data/web`, `./data/web`, `../proj/data/web`) depends on the working
    directory and would give one source several keys."""
    local = _local_path(source.url)
    if local is None:
        return source.url.rstrip("/")  # 'hf://datasets/x/' and 'hf://datasets/x' are one folder
    return "file://" + str(local.resolve())


def input_fingerprint(source: Source, options: BuildOptions) -> dict:
    """What the source's bytes depend on, with a digest of it."""
    if is_sample(source, options):
        info: dict[str, Any] = {"location": sample_location(source),
                                "sample": sample_fingerprint(source, seed=options.seed, documents=options.sample_documents)}
    elif source.format == "hf":
        info = {"location": f"hf-dataset://{source.dataset}", "dataset": source.dataset, "config": source.config,
                "split": source.split, "data_dir": source.data_dir, "revision": _hub_revision(source)}
    else:
        folder, glob, recursive = _disk_location(source)
        info = {"location": canonical_location(source), "files": _list_files(source, folder, glob, recursive)}
    info["fingerprint"] = canonical_sha256(info)
    return info


REMOTE_IDS = ("sha256", "blob_id", "ETag", "etag", "md5Hash", "md5", "crc32c", "LastModified", "last_modified",
              "mtime", "updated", "created")


def _list_files(source: Source, folder: str, glob: str, recursive: bool) -> list[dict]:
    try:
        data = get_datafolder(folder)
        names = data.list_files(recursive=recursive, glob_pattern=glob)
    except Exception as exc:
        hint = "; offline, `mixc build --sample` reads mixc's generated sample data instead" if "://" in folder else ""
        raise MixcError(f"source '{source.name}': cannot list {folder}: {exc}{hint}") from None
    if not names:
        raise MixcError(f"source '{source.name}': no {source.format} files match '{glob}' in {folder}")
    files = []
    if data.is_local():
        for name in names:
            st = os.stat(os.path.join(data.path, name))
            files.append({"path": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    else:
        for name in names:
            info = data.info(name)
            # The strongest content id the filesystem offers (hub LFS/blob ids, S3 ETags, GCS
            # hashes), else a modification time: a rewritten file of the same size must not match.
            ident = next((str(info[k]) for k in REMOTE_IDS if info.get(k)), None)
            lfs = info.get("lfs") or {}
            files.append({"path": name, "size": info.get("size"), "id": lfs.get("sha256") or ident})
    return files


def _hub_revision(source: Source) -> str:
    try:
        from huggingface_hub import HfApi  # only for hub datasets; a failed import is a located error too

        return HfApi().dataset_info(source.dataset).sha
    except Exception as exc:
        raise MixcError(f"source '{source.name}': cannot reach the Hugging Face hub to pin dataset '{source.dataset}' ({exc})") from None


def heldout_fraction(source: Source, options: BuildOptions, input_info: dict) -> float:
    """The fraction of `source` held out for evaluation (see mixc/shards/heldout.py)."""
    policy = source.heldout or options.heldout
    if policy is None:
        return 0.0
    known = heldout.estimated_documents(input_info, options.sample_documents if is_sample(source, options) else None)
    return heldout.split_fraction(policy.documents, policy.max_fraction, known)


def byte_options(source: Source, options: BuildOptions, input_info: dict | None = None) -> dict:
    """Build options that change the shards' bytes (part of the key)."""
    opts = {
        "shard_tokens": options.shard_tokens,
        "shuffle_seed": options.shuffle_seed,
        "filter": source.filter.model_dump() if source.filter else None,
        "text_column": None if is_sample(source, options) else source.text_column,
    }
    fraction = heldout_fraction(source, options, input_info or {})
    if fraction > 0:  # no split: the key of a store built before held-out splits existed
        opts["heldout"] = {"rule": heldout.PERSON.decode(), "fraction": fraction,
                           "documents": (source.heldout or options.heldout).documents,
                           "tokens": (source.heldout or options.heldout).tokens}
    return opts


def source_key(input_info: dict, tokenizer_fingerprint: str, options: dict) -> str:
    return canonical_sha256({"input": input_info["fingerprint"], "tokenizer": tokenizer_fingerprint, "options": options})[:12]


def reader_for(source: Source, options: BuildOptions):
    if is_sample(source, options):
        return sample_reader(source, seed=options.seed, documents=options.sample_documents)
    if source.format == "hf":
        from datatrove.pipeline.readers import HuggingFaceDatasetReader  # optional: needs the `datasets` package

        dataset_options = {"split": source.split}
        if source.config:
            dataset_options["name"] = source.config
        if source.data_dir:
            dataset_options["data_dir"] = source.data_dir
        return HuggingFaceDatasetReader(source.dataset, dataset_options=dataset_options, text_key=source.text_column)
    folder, glob, recursive = _disk_location(source)
    cls = StrictParquetReader if source.format == "parquet" else StrictJsonlReader
    return cls(folder, source_name=source.name, text_key=source.text_column, glob_pattern=glob, recursive=recursive)


def lower_source(source: Source, tokenizer: TokenizerRef, store: str | Path, options: BuildOptions,
                 rebuild: bool = False) -> SourceBuild:
    """One source -> its key, its folder in the store and its datatrove pipeline."""
    info = input_fingerprint(source, options)
    # The encoder is keyed and recorded (manifest "options"): --no-fast-encoder never reuses a tiktoken build.
    opts = dict(byte_options(source, options, info), encoder=encoder_choice(tokenizer, options.fast_encoder))
    key = source_key(info, tokenizer.fingerprint, opts)
    folder = source_folder(source.name, key)
    tasks = max(1, options.tasks)
    if "files" in info:  # a task per file at most: datatrove splits file sources by file
        tasks = min(tasks, len(info["files"]))
    pipeline: list = [reader_for(source, options)]
    if source.filter and (source.filter.min_chars is not None or source.filter.max_chars is not None):
        pipeline.append(LengthFilter(source.filter.min_chars, source.filter.max_chars))
    work = (Path(store) / (rebuild_folder(folder) if rebuild else folder) / WORK).resolve()
    pipeline.append(TokenizeStep(source.name, tokenizer, work, shard_tokens=options.shard_tokens,
                                 batch_documents=options.batch_documents, shuffle_seed=options.shuffle_seed,
                                 threads=options.threads, fast=opts["encoder"] == "tiktoken",
                                 heldout_fraction=(opts.get("heldout") or {}).get("fraction", 0.0)))
    policy = source.heldout or options.heldout
    return SourceBuild(source.name, key, folder, info, opts, tasks, pipeline, rebuild,
                       category="multilingual" if source.multilingual else source.category,
                       heldout_max_fraction=policy.max_fraction if policy is not None else None)


def phase_sources(phases: list[PhasePlan]) -> list[Source]:
    """Every source of the given phases, once each, in first-use order."""
    out: dict[str, Source] = {}
    for phase in phases:
        for s in phase.sources:
            out.setdefault(s.name, s.source)
    return list(out.values())


def lower(phases: list[PhasePlan], tokenizer: TokenizerRef, store: str | Path, options: BuildOptions,
          rebuild: bool = False) -> list[SourceBuild]:
    """The union of the phases' sources, each lowered to its pipeline."""
    return [lower_source(s, tokenizer, store, options, rebuild) for s in phase_sources(phases)]
