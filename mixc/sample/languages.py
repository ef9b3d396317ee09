"""A lexicon for every language: hand-written ones, else pseudo-words in the language's script.

English, French, Spanish, German, Italian, Portuguese and Russian have hand-written word
lists (words.toml). Every other language gets pronounceable pseudo-words in the right script
(CJK, Hangul, Thai, Arabic, Devanagari, Greek, ...), fixed per language, with its punctuation
and its spacing (no spaces between words in CJK, Thai, Khmer, Lao, Burmese).
"""

from __future__ import annotations

import unicodedata
from functools import lru_cache

from .dice import GENERATOR_VERSION, Dice, Seeder
from .prose import LEXICONS, Lexicon
from .words import WORDS

# The languages a `mul_*` (multilingual) source cycles through, one per document.
MULTILINGUAL = ["eng_Latn", "fra_Latn", "spa_Latn", "deu_Latn", "ita_Latn", "por_Latn", "rus_Cyrl", "cmn_Hani",
                "jpn_Jpan", "kor_Hang", "arb_Arab", "hin_Deva", "ell_Grek", "tha_Thai", "vie_Latn"]

HANZI: str = WORDS["hanzi"]
HIRAGANA: str = WORDS["hiragana"]
SYLLABLES = {script: (entry["consonants"], entry["vowels"]) for script, entry in WORDS["syllables"].items()}
VIETNAMESE_VOWELS: list[str] = WORDS["vietnamese_vowels"]
VIETNAMESE_ONSETS: list[str] = WORDS["vietnamese_onsets"]

# Other scripts: a Unicode block to take letters from (pseudo-words without a syllable model).
SCRIPT_BLOCKS = {"Hebr": (0x05D0, 0x05EA), "Armn": (0x0561, 0x0586), "Geor": (0x10D0, 0x10F0), "Ethi": (0x1200, 0x1350),
                 "Taml": (0x0B85, 0x0BB9), "Telu": (0x0C05, 0x0C39), "Knda": (0x0C85, 0x0CB9), "Mlym": (0x0D05, 0x0D39),
                 "Gujr": (0x0A85, 0x0AB9), "Guru": (0x0A05, 0x0A39), "Sinh": (0x0D85, 0x0DC6), "Khmr": (0x1780, 0x17A2),
                 "Mymr": (0x1000, 0x1021), "Laoo": (0x0E81, 0x0EAE), "Tibt": (0x0F40, 0x0F6C), "Mong": (0x1820, 0x1877)}
UNSPACED = {"Hani", "Hans", "Hant", "Jpan", "Thai", "Khmr", "Laoo", "Mymr"}
CASED = {"Latn", "Cyrl", "Grek", "Armn"}
# (full stop, question mark, comma) of a script; others use ". ? ,".
PUNCTUATION = {"Hani": ("。", "？", "，"), "Hans": ("。", "？", "，"), "Hant": ("。", "？", "，"), "Jpan": ("。", "？", "、"),
               "Arab": (".", "؟", "،"), "Deva": ("।", "?", ","), "Beng": ("।", "?", ","), "Grek": (".", ";", ","),
               "Thai": ("", "", "")}


def _pseudo_word_maker(language: str, dice: Dice):
    script = language.split("_")[1]
    if language.startswith("vie_"):
        return lambda syl: " ".join(dice.pick(VIETNAMESE_ONSETS) + dice.pick(VIETNAMESE_VOWELS) + dice.pick(["", "", "n", "ng", "t", "c", "m"])
                                    for _ in range(syl))
    if script in ("Hani", "Hans", "Hant"):
        return lambda syl: "".join(dice.common(HANZI) for _ in range(min(syl, 3)))
    if script == "Jpan":
        return lambda syl: "".join(dice.common(HANZI) for _ in range(min(syl, 2))) + "".join(dice.pick(HIRAGANA) for _ in range(dice.below(3)))
    if script == "Hang":
        # Hangul syllables are composed arithmetically from lead, vowel and tail jamo.
        return lambda syl: "".join(chr(0xAC00 + (dice.below(19) * 21 + dice.below(21)) * 28 + (dice.below(28) if dice.chance(0.3) else 0))
                                   for _ in range(syl))
    if script in SYLLABLES:
        consonants, vowels = SYLLABLES[script]

        def word(syl: int) -> str:
            text = "".join(dice.pick(consonants) + dice.pick(vowels) for _ in range(syl))
            return text[:-1] + "ς" if script == "Grek" and text.endswith("σ") else text

        return word
    lo, hi = SCRIPT_BLOCKS.get(script, (0x61, 0x7A))
    letters = [chr(c) for c in range(lo, hi + 1) if unicodedata.category(chr(c)) in ("Lo", "Ll")] or list("abcdefghijklmnopqrstuvwxyz")
    inventory = [dice.pick(letters) for _ in range(20)]
    return lambda syl: "".join(dice.pick(inventory) for _ in range(syl + 1))


@lru_cache(maxsize=64)
def lexicon(language: str) -> Lexicon:
    """The hand-written lexicon of a language, else pseudo-words in its script (fixed per language)."""
    code, script = language.split("_")
    if code in LEXICONS and (script in ("Latn", "Cyrl")):
        return LEXICONS[code]
    dice = Seeder(f"{GENERATOR_VERSION}|lexicon|{language}".encode()).dice(0)
    word = _pseudo_word_maker(language, dice)

    def words(n: int, lo: int, hi: int) -> list[str]:
        return [word(dice.between(lo, hi)) for _ in range(n)]

    stop, question, comma = PUNCTUATION.get(script, (".", "?", ","))
    unspaced = script in UNSPACED
    return Lexicon(nouns=words(60, 1, 3), adjs=words(30, 1, 3), verbs=words(30, 1, 3), advs=words(10, 1, 2),
                   preps=words(12, 1, 1), openers=words(10, 2, 3), conjs=words(5, 1, 1), adj_after=True,
                   word_sep="" if unspaced else " ", sentence_sep=" " if script == "Thai" or not unspaced else "",
                   stop=stop, question=question, comma=comma, cased=script in CASED)
