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
        """The tokenizer with EOS appended to every encoding, exactly as datatrove's DocumentTokenizer sets it up."""
        tokenizer = Tokenizer.from_str(self.definition)
        tokenizer.post_processor = TemplateProcessing(single="$A <EOS>", special_tokens=[("<EOS>", self.eos_id)], pair=None)
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
    from ..spec import Source

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


# --------------------------------------------------------------------------- fast path

# GPT-2's pre-tokenizer split, which tokenizers' ByteLevel(use_regex=True) applies.
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class FastEncoder:
    """tiktoken running a byte-level BPE's own vocabulary, proven token-identical on check texts.

    `encode_batch` returns ids with EOS appended, like `TokenizerSpec.load().encode_batch`.
    A text containing an added token's literal string (e.g. "<|endoftext|>") goes through
    the HF tokenizer, which matches added tokens in raw text and tiktoken's ordinary encoding
    does not.
    """

    def __init__(self, spec: TokenizerSpec, encoding, added: list[str]):
        self.spec, self.encoding = spec, encoding
        self.added = re.compile("|".join(re.escape(a) for a in added)) if added else None
        self._hf: Tokenizer | None = None

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        eos = self.spec.eos_id
        out = [ids + [eos] for ids in self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)]
        if self.added is not None:
            for i, text in enumerate(texts):
                if self.added.search(text):
                    self._hf = self._hf or self.spec.load()
                    out[i] = self._hf.encode(text).ids
        return out


def fast_encoder(spec: TokenizerSpec, check_texts: Iterable[str] | None = None) -> FastEncoder | None:
    """A tiktoken encoder for a plain byte-level BPE if it encodes `check_texts` exactly as HF does, else None.

    Only GPT-2/Llama-3 style tokenizers qualify: no normalizer, a ByteLevel pre-tokenizer (or a
    regex Split followed by ByteLevel without regex), a BPE model without dropout or subword
    affixes. Callers should pass a sample of every source they will encode.
    """
    import tiktoken

    definition = json.loads(spec.definition)
    model, pre = definition.get("model") or {}, definition.get("pre_tokenizer") or {}
    if definition.get("normalizer") or model.get("type") != "BPE" or model.get("dropout") or model.get("byte_fallback") \
            or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix"):
        return None
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space"):
        pattern = GPT2_SPLIT
    elif pre.get("type") == "Sequence" and len(pre.get("pretokenizers", [])) == 2:
        split, byte_level = pre["pretokenizers"]
        if split.get("type") != "Split" or "Regex" not in split.get("pattern", {}) or split.get("behavior") != "Isolated" \
                or split.get("invert") or byte_level.get("type") != "ByteLevel" or byte_level.get("use_regex") \
                or byte_level.get("add_prefix_space"):
            return None
        pattern = split["pattern"]["Regex"]
    else:
        return None
    # Byte-level BPE spells bytes as printable characters; invert that map to get raw bytes.
    byte_of = {ch: b for b, ch in enumerate(_bytes_to_unicode())}
    added = {t["content"]: t["id"] for t in definition.get("added_tokens", [])}
    try:
        ranks = {bytes(byte_of[ch] for ch in token): rank for token, rank in model["vocab"].items() if token not in added}
        encoding = tiktoken.Encoding(f"mixc-{spec.fingerprint[:12]}", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    except (KeyError, ValueError):
        return None
    fast = FastEncoder(spec, encoding, sorted(added, key=len, reverse=True))
    texts = list(check_texts) if check_texts is not None else list(_check_sample())
    if fast.encode_batch(texts) != [e.ids for e in spec.load().encode_batch(texts)]:
        return None
    return fast


def _bytes_to_unicode() -> list[str]:
    """The printable character GPT-2's byte-level BPE uses for each byte 0..255."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _check_sample() -> Iterable[str]:
    from ..sample import sample_documents  # the sample package imports datatrove: heavy
    from ..spec import Source

    for name, category, language, programming_language, _ in SAMPLE_CORPUS:
        source = Source(name=name, category=category, language=language, programming_language=programming_language,
                        path="sample://check")
        for doc in sample_documents(source, seed=12345, documents=3):
            yield doc["text"]
