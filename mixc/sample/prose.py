"""Prose from sentence templates over a lexicon: the grammar, compiled tables, English.

A lexicon is the words and punctuation of one language; sentences follow a few shapes
(noun phrase, verb, noun phrase, ...), and a document keeps returning to a few nouns (its
topic), as real documents do.
"""

from __future__ import annotations

import numpy as np

from .dice import Dice
from .words import WORDS


class Lexicon:
    """The words and punctuation of one language for the prose templates."""

    def __init__(self, *, dets=(), nouns, adjs, verbs, advs, preps, openers, conjs, adj_after=False,
                 word_sep=" ", sentence_sep=" ", stop=".", question="?", comma=",", cased=True):
        self.dets, self.nouns, self.adjs, self.verbs = list(dets), list(nouns), list(adjs), list(verbs)
        self.advs, self.preps, self.openers, self.conjs = list(advs), list(preps), list(openers), list(conjs)
        self.adj_after, self.word_sep, self.sentence_sep = adj_after, word_sep, sentence_sep
        self.stop, self.question, self.comma, self.cased = stop, question, comma, cased
        # Zipf bags: word i of a list appears about n/(i+1) times, so a uniform pick from the bag
        # follows Zipf's law over the list (few frequent words, a long tail), as real text does.
        self.bags = {name: _zipf_bag(getattr(self, name)) for name in ("dets", "nouns", "adjs", "verbs", "advs", "preps")}
        self._table: ProseTable | None = None

    @property
    def table(self) -> ProseTable:
        if self._table is None:
            self._table = ProseTable(self)
        return self._table


def _zipf_bag(words: list[str]) -> list[str]:
    return [w for i, w in enumerate(words) for _ in range(max(1, round(len(words) / (i + 1))))]


ENGLISH_TOPICS: dict[str, list[str]] = WORDS["english_topics"]
TOPICS = list(ENGLISH_TOPICS.values())

ENGLISH = Lexicon(nouns=[n for nouns in ENGLISH_TOPICS.values() for n in nouns], **WORDS["lexicons"]["eng"])

# The hand-written lexicons, by ISO 639-3 code.
LEXICONS: dict[str, Lexicon] = {"eng": ENGLISH} | {code: Lexicon(**entry) for code, entry in WORDS["lexicons"].items() if code != "eng"}

# Sentence shapes: N noun phrase, V verb, P preposition + noun phrase, R adverb, O opener, C conjunction.
PATTERNS = ["NVN", "NVNP", "ONVN", "NRVN", "NVNCNVN", "NVNP", "ONVNP", "NRVNP", "NVN", "NVNCNRVN"]


def _noun_phrase(lex: Lexicon, r, focus: list[str]) -> str:
    # Hot path: r is Dice.random, words come from Zipf bags (see Lexicon), picks are inlined.
    bag = lex.bags["nouns"]
    noun = focus[int(r() * len(focus))] if r() < 0.7 else bag[int(r() * len(bag))]
    adjs = lex.bags["adjs"]
    if lex.dets:
        dets = lex.bags["dets"]
        det = dets[int(r() * len(dets))]
        return f"{det} {adjs[int(r() * len(adjs))]} {noun}" if r() < 0.4 else f"{det} {noun}"
    if r() < 0.35:
        adj = adjs[int(r() * len(adjs))]
        return f"{noun}{lex.word_sep}{adj}" if lex.adj_after else f"{adj}{lex.word_sep}{noun}"
    return noun


def sentence(lex: Lexicon, dice: Dice, focus: list[str], question: bool = False) -> str:
    """One sentence drawn slot by slot (the compiled ProseTable is faster for whole paragraphs)."""
    r = dice.random
    bags = lex.bags
    words = []
    for slot in PATTERNS[int(r() * len(PATTERNS))]:
        if slot == "N":
            words.append(_noun_phrase(lex, r, focus))
        elif slot == "P":
            preps = bags["preps"]
            words.append(preps[int(r() * len(preps))])
            words.append(_noun_phrase(lex, r, focus))
        elif slot == "O":
            words.append(dice.pick(lex.openers) + lex.comma)
        elif slot == "C":
            words[-1] += lex.comma
            words.append(dice.pick(lex.conjs))
        else:  # V or R
            seq = bags["verbs" if slot == "V" else "advs"]
            words.append(seq[int(r() * len(seq))])
    text = lex.word_sep.join(words)
    if lex.cased:
        text = text[0].upper() + text[1:]
    return text + (lex.question if question else lex.stop)


def topic_nouns(lex: Lexicon, dice: Dice) -> list[str]:
    """A document keeps returning to a few nouns (its topic), as real documents do."""
    if lex is ENGLISH:
        return dice.pick(TOPICS)
    return [dice.pick(lex.nouns) for _ in range(6)]


def title(lex: Lexicon, dice: Dice, focus: list[str]) -> str:
    text = _noun_phrase(lex, dice.random, focus)
    return text[0].upper() + text[1:] if lex.cased else text


class ProseTable:
    """The sentence grammar of a lexicon compiled to arrays, for generating paragraphs with numpy.

    Python costs ~0.1 us per pick; a paragraph of sentences drawn slot by slot in Python runs at
    ~2 MB/s here. Compiled, a document is a few vectorized draws and one str.join (>5 MB/s).

    Slots: D determiner, a optional adjective, N noun (or the document's focus noun), V verb,
    R adverb, P preposition, O opener, C conjunction, E sentence end. A slot draws a uniform
    entry of its bag, so Zipf bags give Zipf frequencies, and empty strings in the 'a' bag make
    the adjective optional. Table entries carry their leading separator.
    """

    SLOTS = "DaNVRPOCE"

    def __init__(self, lex: Lexicon):
        sep = lex.word_sep
        adjs = lex.bags["adjs"]
        entries: dict[str, list[str]] = {
            "D": [sep + w for w in lex.bags["dets"]] or [""],
            "a": [sep + w for w in adjs] + [""] * round(len(adjs) * (1.5 if lex.dets else 1.86)),  # 40% / 35% adjectives
            "N": [sep + w for w in lex.bags["nouns"]],
            "V": [sep + w for w in lex.bags["verbs"]],
            "R": [sep + w for w in lex.bags["advs"]],
            "P": [sep + w for w in lex.bags["preps"]],
            "O": [sep + w + lex.comma for w in lex.openers],
            "C": [lex.comma + sep + w for w in lex.conjs],
            "E": [lex.stop + (lex.sentence_sep if not sep else "")],
        }
        words: list[str] = []
        starts, sizes = [], []
        for slot in self.SLOTS:
            starts.append(len(words))
            sizes.append(len(entries[slot]))
            words.extend(entries[slot])
        self.noun_ids = {w: words.index(sep + w) for w in lex.nouns}
        self.end_id = starts[-1]
        self.paragraph_end_id = len(words)  # a sentence end that also ends the paragraph
        words.append(lex.stop + "\n\n")
        self.size = len(words)
        cap = [w.replace(w.lstrip()[:1], w.lstrip()[:1].upper(), 1) if lex.cased and w.strip() else w for w in words]
        self.words = np.array(words + cap, dtype=object)  # id + size: the capitalized form
        self.empty = np.array([not w for w in words])
        self.bag_start, self.bag_size = np.array(starts), np.array(sizes)
        noun_phrase = "DaN" if lex.dets else ("Na" if lex.adj_after else "aN")
        patterns = [p.replace("P", "P~").replace("N", "~").replace("~", noun_phrase).replace("C", "C") + "E" for p in PATTERNS]
        codes = [np.array([self.SLOTS.index(c) for c in p]) for p in patterns]
        self.pattern_flat = np.concatenate(codes)
        self.pattern_len = np.array([len(c) for c in codes])
        self.pattern_start = np.cumsum(self.pattern_len) - self.pattern_len
        self.noun_slot = self.SLOTS.index("N")

    def paragraphs(self, rng: np.random.Generator, focus: list[str], sentences: int) -> list[str]:
        pids = rng.integers(0, len(self.pattern_len), sentences)
        lens = self.pattern_len[pids]
        ends = np.cumsum(lens)
        starts = ends - lens
        total = int(ends[-1])
        slots = self.pattern_flat[np.arange(total) - np.repeat(starts - self.pattern_start[pids], lens)]
        u = rng.random(total)
        ids = self.bag_start[slots] + (u * self.bag_size[slots]).astype(np.int64)
        # 70% of nouns are the document's focus nouns: documents stay on topic.
        focus_ids = np.array([self.noun_ids[w] for w in focus])
        nouns = np.flatnonzero((slots == self.noun_slot) & (rng.random(total) < 0.7))
        ids[nouns] = focus_ids[(u[nouns] * len(focus_ids)).astype(np.int64)]
        # Paragraphs of 1-7 sentences (mean ~4).
        breaks = ends[:-1][rng.random(sentences - 1) < 0.25] - 1
        ids[breaks] = self.paragraph_end_id
        # Capitalize each sentence's first word (the next one when an optional adjective is empty).
        first = starts + self.empty[ids[starts]]
        ids[first] += self.size
        text = "".join(self.words[ids].tolist()).replace("\n\n ", "\n\n").lstrip(" ")
        return text.split("\n\n")


def paragraphs(lex: Lexicon, dice: Dice, focus: list[str], sentences: int) -> list[str]:
    return lex.table.paragraphs(dice.rng, focus, sentences)


def english_sentence(dice: Dice) -> str:
    """One English sentence (code comments, HTML paragraphs, markdown prose)."""
    return sentence(ENGLISH, dice, dice.pick(TOPICS))
