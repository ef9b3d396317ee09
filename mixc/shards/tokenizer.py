"""Tokenizers: resolve a recipe's tokenizer name to one fixed definition with its EOS token.

A name is one of
  - a path to a `tokenizer.json`, or a folder holding one (relative to the recipe's folder);
  - `sample:bpe-<N>`: a byte-level BPE with N entries trained on mixc's sample data, the
    offline demo tokenizer (trained once, deterministically, and cached);
  - anything else: a Hugging Face hub id (needs the network).

The result is a `TokenizerSpec`: the tokenizer's JSON text, its EOS token and id, vocabulary
size and a fingerprint, so shards record exactly which tokenizer made them. `load()` gives a
`tokenizers.Tokenizer` that appends EOS to every document with the same post-processor
datatrove 0.10.1's DocumentTokenizer installs, so mixc's tokens equal datatrove's.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing

from ..environ import scoped_env
from ..errors import MixcError
from ..spec import Source
from ..store import token_size_for, write_atomic

SAMPLE_BPE = re.compile(r"sample:bpe-(\d+)")
SAMPLE_BPE_VERSION = 1  # bump when the training corpus or trainer settings change
ENDOFTEXT = "<|endoftext|>"
DEFAULT_EOS = (ENDOFTEXT, "<|end_of_text|>")
SUGGESTION = "use a local tokenizer.json (path) or the offline demo tokenizer sample:bpe-8192"


@dataclass(frozen=True)
class TokenizerSpec:
    name: str
    fingerprint: str  # sha256 of the canonical tokenizer JSON and the EOS token
    vocab_size: int  # with added tokens, as datatrove counts it
    eos_token: str
    eos_id: int
    definition: str  # the tokenizer.json text

    @property
    def token_size(self) -> int:
        """Bytes per token on disk (the store's rule)."""
        return token_size_for(self.vocab_size)

    def load(self) -> Tokenizer:
        """The tokenizer with EOS appended to every encoding, as datatrove's DocumentTokenizer sets it up.

        Truncation and padding are switched off whatever the tokenizer.json says: a pretraining
        document must never lose its end to a `max_length` meant for inference.
        """
        tokenizer = Tokenizer.from_str(self.definition)
        tokenizer.post_processor = TemplateProcessing(single="$A <EOS>", special_tokens=[("<EOS>", self.eos_id)], pair=None)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer


def default_cache_dir() -> Path:
    root = os.environ.get("MIXC_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "mixc") / "tokenizers"


def resolve_tokenizer(name: str, *, base_dir: Path | None = None, cache_dir: Path | None = None,
                      eos_token: str | None = None) -> TokenizerSpec:
    name = str(name).strip()
    if not name:
        raise MixcError(f"no tokenizer given; {SUGGESTION}")
    config_dir: Path | None = None
    if name.startswith("sample:"):
        definition = sample_bpe_path(name, cache_dir).read_text(encoding="utf-8")
    elif (path := _local_path(name, base_dir)) is not None:
        definition, config_dir = _read_local(name, path)
    else:
        definition, config_dir = _from_hub(name)
    try:
        tokenizer = Tokenizer.from_str(definition)
    except Exception as exc:  # the Rust side raises plain Exceptions on bad JSON
        raise MixcError(f"tokenizer '{name}' could not be parsed: {exc}") from None
    eos = _eos_token(name, tokenizer, eos_token, config_dir)
    return TokenizerSpec(name=name, fingerprint=tokenizer_fingerprint(definition, eos), vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                         eos_token=eos, eos_id=tokenizer.token_to_id(eos), definition=definition)


def tokenizer_fingerprint(definition: str, eos_token: str) -> str:
    """sha256 of the canonical tokenizer JSON and the EOS token: what shards record, and what
    verify, train and export recompute from the store's tokenizer file to know it is intact."""
    canonical = json.dumps(json.loads(definition), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(f"{canonical}\n{eos_token}".encode()).hexdigest()


# --------------------------------------------------------------------------- local files and the hub


def _local_path(name: str, base_dir: Path | None) -> Path | None:
    """The path a name points at, or None for a hub id. A path that looks like one must exist."""
    path = Path(name).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    # Hub ids are "org/name": never a trailing slash, never more than one slash.
    looks_like_path = name.startswith(("./", "../", "/", "~")) or name.endswith((".json", "/")) or name.count("/") > 1
    if path.exists():
        return path
    if looks_like_path:
        where = f" (relative paths are resolved against {base_dir})" if base_dir is not None and not Path(name).is_absolute() else ""
        raise MixcError(f"tokenizer '{name}': no such file {path}{where}")
    return None


def _read_local(name: str, path: Path) -> tuple[str, Path]:
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise MixcError(f"tokenizer '{name}': folder {path} has no tokenizer.json")
        path = path / "tokenizer.json"
    try:
        return path.read_text(encoding="utf-8"), path.parent
    except (OSError, UnicodeDecodeError) as exc:
        raise MixcError(f"tokenizer '{name}': cannot read {path}: {exc}") from None


def _from_hub(name: str) -> tuple[str, Path | None]:
    from huggingface_hub import constants, hf_hub_download  # only for hub tokenizers

    def fail(reason: str) -> MixcError:
        return MixcError(f"tokenizer '{name}' could not be loaded from the Hugging Face hub (offline? {reason}); {SUGGESTION}")

    try:  # a cached copy first: no network needed
        path = Path(hf_hub_download(repo_id=name, filename="tokenizer.json", local_files_only=True))
    except Exception:
        # huggingface_hub retries a dead connection for ~25 s; an unresolvable host fails at once here.
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
        try:
            socket.getaddrinfo(host, 443)
        except OSError as exc:
            raise fail(f"cannot resolve {host}: {exc}") from None
        try:
            path = Path(hf_hub_download(repo_id=name, filename="tokenizer.json"))
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            raise fail(reason) from None
    try:  # the EOS token is named in tokenizer_config.json; without it the defaults apply
        hf_hub_download(repo_id=name, filename="tokenizer_config.json", local_files_only=path.parent.joinpath("tokenizer_config.json").exists())
    except Exception:
        pass
    return path.read_text(encoding="utf-8"), path.parent


def _config_eos(config_dir: Path | None) -> str | None:
    if config_dir is None or not (config_dir / "tokenizer_config.json").is_file():
        return None
    try:
        eos = json.loads((config_dir / "tokenizer_config.json").read_text(encoding="utf-8")).get("eos_token")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(eos, dict):  # older configs store an AddedToken dict
        eos = eos.get("content")
    return eos if isinstance(eos, str) and eos else None


def _eos_token(name: str, tokenizer: Tokenizer, explicit: str | None, config_dir: Path | None) -> str:
    if explicit:
        if tokenizer.token_to_id(explicit) is None:
            raise MixcError(f"tokenizer '{name}': EOS token {explicit!r} is not in its vocabulary")
        return explicit
    configured = _config_eos(config_dir)
    for candidate in ([configured] if configured else []) + list(DEFAULT_EOS):
        if tokenizer.token_to_id(candidate) is not None:
            return candidate
    raise MixcError(f"tokenizer '{name}' has no EOS token (no tokenizer_config.json eos_token, and neither "
                    f"{' nor '.join(DEFAULT_EOS)} is in its vocabulary); name one with eos_token")


# --------------------------------------------------------------------------- training


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_path: str | Path | None = None) -> Tokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenizer and decoder) with `<|endoftext|>` as id 0.

    Deterministic: the trainer runs single-threaded (TOKENIZERS_PARALLELISM=false for the
    call), so the same texts give the same JSON in any process.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise MixcError(f"vocab size {vocab_size} is too small: a byte-level BPE needs at least {len(alphabet) + 1} entries")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT], initial_alphabet=alphabet,
                                  show_progress=False)
    with scoped_env("TOKENIZERS_PARALLELISM", "false"):
        tokenizer.train_from_iterator(texts, trainer)
    if out_path is not None:
        write_atomic(Path(out_path), tokenizer.to_str())
    return tokenizer


# The sample:bpe corpus: a fixed spread of categories and languages, documents per source.
SAMPLE_CORPUS = [
    ("fineweb-edu", "web", "eng_Latn", None, 300), ("wiki", "web", "eng_Latn", None, 75),
    ("stackexchange", "web", "eng_Latn", None, 75), ("fw2-fra", "web", "fra_Latn", None, 60),
    ("fw2-spa", "web", "spa_Latn", None, 60), ("fw2-deu", "web", "deu_Latn", None, 60), ("fw2-rus", "web", "rus_Cyrl", None, 50),
    ("fw2-cmn", "web", "cmn_Hani", None, 50), ("fw2-arb", "web", "arb_Arab", None, 40), ("fw2-hin", "web", "hin_Deva", None, 40),
    ("stack-python", "code", "eng_Latn", "Python", 125), ("stack-javascript", "code", "eng_Latn", "JavaScript", 50),
    ("stack-java", "code", "eng_Latn", "Java", 40), ("stack-cpp", "code", "eng_Latn", "C++", 40),
    ("stack-rust", "code", "eng_Latn", "Rust", 30), ("stack-go", "code", "eng_Latn", "Go", 30),
    ("stack-sql", "code", "eng_Latn", "SQL", 30), ("stack-html", "code", "eng_Latn", "HTML", 30),
    ("stack-markdown", "code", "eng_Latn", "Markdown", 30), ("finemath", "math", "eng_Latn", None, 200),
    ("reasoning", "reasoning", "eng_Latn", None, 150),
]


def sample_corpus() -> Iterable[str]:
    """The fixed texts sample:bpe tokenizers are trained on (~2 MB)."""
    from ..sample import sample_documents  # the sample package imports datatrove: heavy

    for name, category, language, programming_language, documents in SAMPLE_CORPUS:
        source = Source(name=name, category=category, language=language, programming_language=programming_language,
                        path=f"sample://{category}/{language}/{name}")
        for doc in sample_documents(source, seed=0, documents=documents):
            yield doc["text"]


def sample_bpe_path(name: str, cache_dir: Path | None = None) -> Path:
    """The cached tokenizer.json of a `sample:bpe-<N>` name, training it on first use."""
    match = SAMPLE_BPE.fullmatch(name)
    if not match:
        raise MixcError(f"unknown sample tokenizer '{name}': the form is sample:bpe-<vocab size>, e.g. sample:bpe-8192")
    vocab_size = int(match.group(1))
    path = Path(cache_dir or default_cache_dir()) / f"sample-bpe-{vocab_size}-v{SAMPLE_BPE_VERSION}.json"
    if not path.is_file():
        train_tokenizer(sample_corpus(), vocab_size, path)
    return path


def source_texts(source, *, documents: int, base_dir: Path | None = None, seed: int = 0) -> Iterable[str]:
    """Up to `documents` texts of a catalog source, for `mixc tokenizer train --from-source`.

    sample:// sources give their sample; local parquet/jsonl files are read with datatrove's
    readers. Hub-only sources are refused: training reads local data only.
    """
    from ..sample import sample_documents  # the sample package imports datatrove: heavy

    location = source.path or ""
    if location.startswith("sample://"):
        return (doc["text"] for doc in sample_documents(source, seed=seed, documents=documents))
    if not location or location.startswith(("hf://", "http://", "https://", "s3://")) or source.format == "hf":
        raise MixcError(f"source '{source.name}' is not on local disk ({source.url}); download it and set its path, "
                        "or train on the sample data with --sample")
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise MixcError(f"source '{source.name}': no such file or folder {path}")
    from datatrove.pipeline.readers import JsonlReader, ParquetReader  # datatrove: heavy, only to read a source

    reader_class = ParquetReader if source.format == "parquet" else JsonlReader
    folder, glob = (str(path.parent), path.name) if path.is_file() else (str(path), source.glob)
    reader = reader_class(folder, glob_pattern=glob, text_key=source.text_column, limit=documents)
    return _nonempty(source, path, (document.text for document in reader.run()))


def _nonempty(source, path: Path, texts: Iterable[str]) -> Iterable[str]:
    count = 0
    for text in texts:
        count += 1
        yield text
    if count == 0:
        raise MixcError(f"source '{source.name}': no documents with a '{source.text_column}' column under {path}")
