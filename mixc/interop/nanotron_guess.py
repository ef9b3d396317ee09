"""Category and language of a source a nanotron config names only by its folder.

The shipped SmolLM3 catalog answers for the sources it knows; other names are guessed from
their words (a FineWeb2-style language suffix, 'math', 'code', ...).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from ..spec import DEFAULT_LANGUAGE, check_language, load_catalog

# Scripts of languages whose usual script is not Latin, for FineWeb2-style names ('fw2-rus').
SCRIPTS = {
    "cmn": "Hani", "zho": "Hani", "yue": "Hani", "jpn": "Jpan", "kor": "Hang", "rus": "Cyrl", "ukr": "Cyrl", "bul": "Cyrl",
    "srp": "Cyrl", "bel": "Cyrl", "kaz": "Cyrl", "mkd": "Cyrl", "arb": "Arab", "ara": "Arab", "fas": "Arab", "pes": "Arab",
    "urd": "Arab", "hin": "Deva", "mar": "Deva", "nep": "Deva", "ben": "Beng", "tam": "Taml", "tel": "Telu", "kan": "Knda",
    "mal": "Mlym", "guj": "Gujr", "pan": "Guru", "tha": "Thai", "ell": "Grek", "heb": "Hebr", "kat": "Geor", "hye": "Armn",
    "amh": "Ethi", "khm": "Khmr", "lao": "Laoo", "mya": "Mymr", "sin": "Sinh",
}
# Category from a source's name: the first pattern that matches wins, else web. Math goes
# first because math sets often say "code" ('megamath-text-code-block'), code before
# reasoning ('opencodereasoning' is code, as SmolLM3 counts it).
CATEGORY_PATTERNS = (
    ("math", re.compile(r"math|gsm|arithmetic|algebra|theorem|proof|numina", re.I)),
    ("code", re.compile(r"code|stack(?!.?exchange|.?overflow)|starcoder|github|jupyter|notebook|kaggle|pull.?request|commit|"
                        r"leetcode|programming|(?<![a-z])(python|javascript|typescript|java|cpp|rust|golang|php|ruby)(?![a-z])",
                        re.I)),
    ("reasoning", re.compile(r"reason|think|chain.of.thought|\bcot\b", re.I)),
)

# The shipped SmolLM3 catalog: without --catalog, a source it knows (matched by the names its
# dataset path gives) takes its category and language from there; only unknown ones are guessed.
# Absent when mixc is installed without the repository's mixes/ folder: then everything is guessed.
SHIPPED_CATALOG = Path(__file__).resolve().parents[2] / "mixes" / "smollm3" / "sources.yaml"


@lru_cache(maxsize=1)
def _shipped_sources() -> dict[str, tuple[str, str]]:
    """name -> (category, language) of the shipped catalog's sources."""
    if not SHIPPED_CATALOG.is_file():
        return {}
    sources, _ = load_catalog(SHIPPED_CATALOG)
    return {name: (s.category, s.language) for name, s in sources.items()}


def classify(candidates: tuple[str | None, ...]) -> tuple[str, str | None]:
    """(category, language or None for English) of an inline source: the shipped catalog's entry
    for the first candidate name it knows, else guessed from the names."""
    known = _shipped_sources()
    match = next((known[n] for n in candidates if n and n in known), None)
    if match is not None:
        category, language = match
        return category, None if language == DEFAULT_LANGUAGE else language
    category = guess_category(*candidates)
    return category, guess_language(candidates[0] or "") if category == "web" else None


def guess_category(*names: str | None) -> str:
    text = " ".join(n for n in names if n)
    for category, pattern in CATEGORY_PATTERNS:
        if pattern.search(text):
            return category
    return "web"


def guess_language(name: str) -> str | None:
    """'fw2-hq-fra_Latn' -> fra_Latn; FineWeb2-style 'fw2-rus' -> rus_Cyrl; else None (English)."""
    for code in re.findall(r"(?<![A-Za-z])([a-z]{3}_[A-Z][a-z]{3})(?![A-Za-z])", name):
        try:
            return check_language(code)
        except ValueError:
            continue
    m = re.match(r"(?:fw2|fineweb-?2)(?:-hq)?[-_]([a-z]{3})$", name)
    if m:
        try:
            return check_language(f"{m.group(1)}_{SCRIPTS.get(m.group(1), 'Latn')}")
        except ValueError:
            return None
    return None
