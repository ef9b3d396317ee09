"""The fast encoder: tiktoken running a byte-level BPE's own vocabulary, used only where exact.

HF `tokenizers` is the reference. tiktoken differs from it in three ways, and each is settled
here from the tokenizer's definition, not from a sample of text:

  1. tiktoken returns a pre-token found whole in its table directly; HF BPE (unless the model
     sets `ignore_merges`) always runs the merges, and some vocabulary entries are never
     reached by them (Llama 3 has 588). Every entry is run through HF's own BPE model: an
     unreachable one is left out of tiktoken's table, so tiktoken can neither look it up nor
     build it. With `ignore_merges: true` HF does look whole words up, so unreachable entries
     stay in the table and must be ones tiktoken's merging cannot build either.
  2. tiktoken merges the adjacent pair whose concatenation has the lowest rank, and its ranks
     are its output ids; HF merges the listed pair that comes first in `merges`. tiktoken's
     ranks are therefore derived from the merges order (rank of a merged token = its merge's
     index; one merge per token, or refuse), and ranks are mapped back to ids when the
     vocabulary's ids are not already in merges order.
  3. A pair whose concatenation is in the table but which is not that token's merge: tiktoken
     would merge it, HF would not. If every table entry is reachable by HF's merges, no such
     pair can sit side by side in a state both encoders reach (HF's merges inside a span do
     not depend on the text around it, so the span alone would reach that state and then stop
     short of its own token, i.e. be unreachable).

What the definition cannot prove is left to checks: the pre-tokenizer must be one whose regex
is known to split the same in both engines (GPT-2's, Llama 3's), every decodable vocabulary
entry alone and inside words must encode identically (`sweep`, cached per fingerprint), and
the tokenize step cross-checks sampled documents of every batch against HF.

A text holding an added token's literal (e.g. "<|endoftext|>") goes through HF, which splits
added tokens out of raw text; truncation and padding are off on every HF path.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zlib
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np
import tiktoken
import tokenizers
from tokenizers import Tokenizer

from ..errors import MixcError
from ..store import write_atomic
from .tokenizer import TokenizerSpec, default_cache_dir

SWEEP_VERSION = 1  # bump when the sweep or the static rules change: cached verdicts are redone
SWEEP_GROUP = 48  # vocabulary entries per "inside words" sweep text

# Pre-tokenizer patterns whose splits agree between tokenizers (onig) and tiktoken (fancy-regex):
# every character falls in some alternative, so tiktoken (which drops unmatched text) and HF's
# Split(Isolated) see the same pieces.
GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_SPLIT = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
KNOWN_SPLITS = (LLAMA3_SPLIT,)

log = logging.getLogger("mixc.shards")


class FastEncoder:
    """tiktoken over a byte-level BPE's vocabulary, token-identical to `spec.load()` by construction.

    `encode_batch` returns ids with EOS appended, like `TokenizerSpec.load().encode_batch`.
    """

    def __init__(self, spec: TokenizerSpec, encoding, ids: np.ndarray | None, added: list[str]):
        self.spec, self.encoding = spec, encoding
        self.ids = ids  # rank -> token id, or None where the ranks are the ids
        self.added = re.compile("|".join(re.escape(a) for a in added)) if added else None
        self._hf: Tokenizer | None = None

    def encode_ids(self, texts: list[str], num_threads: int = 1) -> list:
        """Each text's ids without EOS (lists, or int arrays where ranks are mapped to ids)."""
        if num_threads > 1:
            out: list = self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)
        else:  # tiktoken's batch call goes through a thread pool: slower than a loop on one thread
            out = [self.encoding.encode_ordinary(text) for text in texts]
        if self.ids is not None and out:
            lengths = np.fromiter(map(len, out), dtype=np.int64, count=len(out))
            flat = np.fromiter(chain.from_iterable(out), dtype=np.int64, count=int(lengths.sum()))
            out = np.split(self.ids[flat], np.cumsum(lengths)[:-1])
        if self.added is not None:
            for i, text in enumerate(texts):
                if self.added.search(text):
                    out[i] = self.hf().encode(text).ids[:-1]
        return out

    def encode_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        eos = self.spec.eos_id
        return [[int(t) for t in ids] + [eos] for ids in self.encode_ids(texts, num_threads)]

    def hf(self) -> Tokenizer:
        """The reference tokenizer (EOS appended, no truncation, no padding)."""
        if self._hf is None:
            self._hf = self.spec.load()
        return self._hf


@dataclass(frozen=True)
class _Plan:
    pattern: str
    ranks: dict[bytes, int]
    ids: np.ndarray | None
    added: list[str]


def fast_encoder(spec: TokenizerSpec) -> FastEncoder | None:
    """The fast encoder of `spec` when its definition makes tiktoken exact (no sweep), else None."""
    plan, _ = _plan(spec)
    return None if plan is None else _build(spec, plan)


def refusal(spec: TokenizerSpec) -> str | None:
    """Why tiktoken cannot be exact for this tokenizer by its definition, or None when it can."""
    return _plan(spec)[1]


def choose_encoder(spec: TokenizerSpec, *, cache_dir: Path | None = None) -> tuple[str, str]:
    """("tiktoken" | "hf", reason): tiktoken when the definition allows it and the vocabulary sweep agrees.

    Deterministic in the tokenizer's definition (and the two libraries' versions), so it is
    decided once, at lowering, and cached on disk per fingerprint.
    """
    versions = {"sweep": SWEEP_VERSION, "tiktoken": tiktoken.__version__, "tokenizers": tokenizers.__version__}
    # Keyed by the definition's own hash: the verdict belongs to these exact bytes.
    digest = hashlib.sha256(spec.definition.encode()).hexdigest()[:32]
    path = Path(cache_dir or default_cache_dir()) / f"fast-encoder-{digest}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if cached.get("versions") == versions and cached.get("encoder") in ("tiktoken", "hf"):
            return cached["encoder"], cached["reason"]
    except (OSError, ValueError, AttributeError):
        pass
    plan, reason = _plan(spec)
    if plan is not None:
        reason = sweep(spec, _build(spec, plan))
    encoder = "hf" if reason else "tiktoken"
    reason = reason or "byte-level BPE, exact by its definition and the vocabulary sweep"
    try:
        write_atomic(path, json.dumps({"encoder": encoder, "reason": reason, "versions": versions}))
    except OSError:
        pass  # a read-only cache only costs the sweep next time
    return encoder, reason


def sweep(spec: TokenizerSpec, fast: FastEncoder) -> str | None:
    """Every decodable vocabulary entry, alone, after a space and run together with others,
    encoded both ways: None when all agree, else the first difference."""
    byte_of = {ch: b for b, ch in enumerate(bytes_to_unicode())}
    words = []
    for token in sorted(json.loads(spec.definition)["model"]["vocab"]):
        try:
            words.append(bytes(byte_of[ch] for ch in token).decode("utf-8"))
        except (KeyError, UnicodeDecodeError):
            continue  # not text on its own (part of a character, or not byte-level)
    texts = list(words) + [" " + w for w in words]
    for i in range(0, len(words), SWEEP_GROUP):
        group = words[i:i + SWEEP_GROUP]
        texts += ["".join(group), " ".join(group), "x" + "y".join(group) + "z"]
    hf = fast.hf()
    for start in range(0, len(texts), 4096):
        chunk = texts[start:start + 4096]
        expected = [e.ids for e in hf.encode_batch(chunk)]
        for text, want, got in zip(chunk, expected, fast.encode_batch(chunk)):
            if want != got:
                return f"vocabulary sweep: {text[:60]!r} encodes as {want[:8]} in HF tokenizers but {got[:8]} in tiktoken"
    return None


# --------------------------------------------------------------------------- the definition


def _plan(spec: TokenizerSpec) -> tuple[_Plan | None, str | None]:
    definition = json.loads(spec.definition)
    model = definition.get("model") or {}
    if definition.get("normalizer"):
        return None, "it has a normalizer"
    if model.get("type") != "BPE":
        return None, f"its model is {model.get('type')}, not BPE"
    for key in ("dropout", "byte_fallback", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return None, f"its BPE sets {key}"
    pattern = _split_pattern(definition.get("pre_tokenizer") or {})
    if pattern is None:
        return None, "its pre-tokenizer is not GPT-2's or Llama 3's byte-level split"
    byte_chars = bytes_to_unicode()
    byte_of = {ch: b for b, ch in enumerate(byte_chars)}
    vocab: dict[str, int] = model.get("vocab") or {}
    if any(ch not in vocab for ch in byte_chars):
        return None, "its vocabulary lacks some of the 256 byte symbols"
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges") or []]
    merge_of: dict[str, int] = {}  # merged token -> index of its merge
    for index, (left, right) in enumerate(merges):
        token = left + right
        if left not in vocab or right not in vocab or token not in vocab:
            return None, f"merge {index} ({left} {right}) names a token missing from the vocabulary"
        if token in merge_of:
            return None, f"token {token!r} is made by two merges ({merge_of[token]} and {index}): tiktoken ranks a token once"
        merge_of[token] = index
    # Entries spelled in byte symbols are the only ones a byte-level text can produce.
    spelled = [t for t in vocab if len(t) > 1 and all(ch in byte_of for ch in t)]
    reachable = _reachable(model, spelled)
    unreachable = sorted((t for t in spelled if t not in reachable), key=vocab.__getitem__)
    table = [ch for ch in byte_chars] + sorted(reachable, key=merge_of.__getitem__)
    if model.get("ignore_merges"):
        table += unreachable  # HF looks whole words up in the full vocabulary; so must tiktoken
    ranks = {bytes(byte_of[ch] for ch in t): rank for rank, t in enumerate(table)}
    ids = np.array([vocab[t] for t in table], dtype=np.int64)
    if model.get("ignore_merges") and unreachable:
        built = [t for t in unreachable if _tiktoken_merge(ranks, bytes(byte_of[ch] for ch in t)) == [ranks[bytes(byte_of[ch] for ch in t)]]]
        if built:
            return None, (f"{len(built)} vocabulary entries (e.g. {built[0]!r}) are outside the merges "
                          "yet tiktoken's merging would build them")
    multi = ids[256:]
    if np.all(multi[1:] > multi[:-1]):  # ids already in merges order: use them as ranks, nothing to map
        ranks = {b: int(ids[r]) for b, r in ranks.items()}
        ids_of_rank = None
    else:
        ids_of_rank = ids
    added = sorted({t["content"] for t in definition.get("added_tokens") or []}, key=len, reverse=True)
    return _Plan(pattern, ranks, ids_of_rank, added), None


def _split_pattern(pre: dict) -> str | None:
    if pre.get("type") == "ByteLevel":
        ok = pre.get("use_regex", True) and not pre.get("add_prefix_space")
        return GPT2_SPLIT if ok else None
    if pre.get("type") == "Sequence" and len(pre.get("pretokenizers") or []) == 2:
        split, byte_level = pre["pretokenizers"]
        pattern = (split.get("pattern") or {}).get("Regex")
        if split.get("type") == "Split" and pattern in KNOWN_SPLITS and split.get("behavior") == "Isolated" \
                and not split.get("invert") and byte_level.get("type") == "ByteLevel" \
                and not byte_level.get("use_regex", True) and not byte_level.get("add_prefix_space"):
            return pattern
    return None


def _reachable(model: dict, tokens: list[str]) -> set[str]:
    """The entries HF's BPE merges build from their own bytes (run by HF's model itself, ignore_merges off)."""
    bare = Tokenizer.from_str(json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": None, "post_processor": None, "decoder": None,
        "model": dict(model, ignore_merges=False, dropout=None, unk_token=None)}))
    vocab, bpe = model["vocab"], bare.model
    return {t for t in tokens if [piece.id for piece in bpe.tokenize(t)] == [vocab[t]]}


def _tiktoken_merge(ranks: dict[bytes, int], piece: bytes) -> list[int]:
    """tiktoken's merging of one piece, without its whole-piece lookup: the lowest-ranked
    adjacent pair whose concatenation is in the table merges first, leftmost on ties."""
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        best, at = None, -1
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and (best is None or rank < best):
                best, at = rank, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return [ranks[p] for p in parts]


def _build(spec: TokenizerSpec, plan: _Plan) -> FastEncoder:
    try:
        encoding = tiktoken.Encoding(f"mixc-{spec.fingerprint[:12]}", pat_str=plan.pattern,
                                     mergeable_ranks=plan.ranks, special_tokens={})
    except ValueError as exc:
        raise MixcError(f"tokenizer '{spec.name}': tiktoken rejected its vocabulary: {exc}") from None
    return FastEncoder(spec, encoding, plan.ids, plan.added)


def bytes_to_unicode() -> list[str]:
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


def log_choice(spec: TokenizerSpec, encoder: str, reason: str) -> None:
    if encoder == "hf":
        log.warning("tokenizer '%s': encoding with HF tokenizers, not the fast encoder: %s", spec.name, reason)


# --------------------------------------------------------------------------- in a build


CROSS_CHECK_EVERY = 256  # with the fast encoder, one document in this many (at least one a batch) is encoded by HF too


def encoder_choice(ref, fast: bool) -> str:
    """The encoder a build uses for `ref`: "tiktoken" where exact for this tokenizer (decided
    from its definition and a vocabulary sweep, cached), else "hf". Part of the store key."""
    if not fast:
        return "hf"
    key = f"{ref.file}:{ref.fingerprint}"
    if key not in _CHOICES:
        spec = _spec(ref)
        encoder, reason = choose_encoder(spec)
        log_choice(spec, encoder, reason)
        _CHOICES[key] = encoder
    return _CHOICES[key]


_CHOICES: dict[str, str] = {}  # per process: lowering many sources sweeps once
_FAST: dict[str, FastEncoder] = {}  # per process: several tasks in one worker build it once


def load_fast_encoder(ref) -> FastEncoder:
    """The fast encoder of `ref`, once per process; an error if its definition does not allow one."""
    key = f"fast:{ref.file}:{ref.fingerprint}"
    if key not in _FAST:
        spec = _spec(ref)
        fast = fast_encoder(spec)
        if fast is None:
            raise MixcError(f"tokenizer '{ref.name}': the fast encoder was chosen for it but cannot be built: {refusal(spec)}")
        _FAST[key] = fast
    return _FAST[key]


def _spec(ref) -> TokenizerSpec:
    try:
        definition = Path(ref.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MixcError(f"tokenizer '{ref.name}': cannot read {ref.file}: {exc}") from None
    return TokenizerSpec(ref.name, ref.fingerprint, ref.vocab_size, ref.eos_token, ref.eos_id, definition)


def checked_documents(rank: int, batch: int, size: int) -> list[int]:
    """Which documents of a batch the cross-check encodes with HF: every CROSS_CHECK_EVERY-th from an
    offset fixed by (task, batch number), so each batch has one and reruns check the same ones."""
    if size <= 0:
        return []
    offset = zlib.crc32(f"{rank}:{batch}".encode()) % min(CROSS_CHECK_EVERY, size)
    return list(range(offset, size, CROSS_CHECK_EVERY))


def cross_check(source: str, rank: int, batch_number: int, batch: list, tokens: np.ndarray, ends: np.ndarray,
                tokenizer, eos_id: int, first: int, max_chars: int | None = None) -> None:
    """HF's ids for the sampled documents of a batch must equal the fast encoder's, or the source stops.

    Documents longer than `max_chars` are not re-encoded whole (HF's memory grows ~200 bytes per
    character; the tokenizer step encodes such documents in pieces)."""
    picked = checked_documents(rank, batch_number, len(batch))
    if max_chars is not None:
        picked = [i for i in picked if len(batch[i].text) <= max_chars]
    expected = tokenizer.encode_batch_fast([batch[i].text for i in picked], add_special_tokens=False)
    for i, encoding in zip(picked, expected):
        start = int(ends[i - 1]) if i else 0
        got = tokens[start:int(ends[i])].tolist()
        want = encoding.ids + [eos_id]
        if got != want:
            at = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            doc = batch[i]
            where = doc.metadata.get("file_path") if doc.metadata else None
            raise MixcError(
                f"source '{source}': the fast encoder (tiktoken) disagrees with HF tokenizers on document "
                f"{doc.id!r}{f' of {where}' if where else ''} (document {first + i} of task {rank}): token {at} is "
                f"{got[at] if at < len(got) else 'missing'}, HF gives {want[at] if at < len(want) else 'nothing more'}; "
                "the source is not written. Build with --no-fast-encoder and report the tokenizer.")
