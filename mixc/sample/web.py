"""Web documents: prose in the source's language, shaped like pages, wiki articles or forum threads."""

from __future__ import annotations

from .dice import Dice
from .languages import MULTILINGUAL, lexicon
from .prose import paragraphs, sentence, title, topic_nouns


def web_document(language: str, dice: Dice, style: str) -> str:
    if language.startswith("mul_"):
        language = dice.pick(MULTILINGUAL)
    lex = lexicon(language)
    focus = topic_nouns(lex, dice)
    sentences = dice.lognormal_count(18, 0.9, 2, 800)
    heading = title(lex, dice, focus)
    if style == "qa":  # forum threads: a question, then answers
        question = lex.sentence_sep.join([sentence(lex, dice, focus), sentence(lex, dice, focus, question=True)])
        answers = paragraphs(lex, dice, focus, sentences)
        return f"{heading}\n\nQ: {question}\n\n" + "\n\n".join(f"A: {a}" for a in answers) + "\n"
    body = paragraphs(lex, dice, focus, sentences)
    if style == "wiki":  # encyclopedia articles: sections with headings
        parts = [f"{heading}\n\n{body[0]}"]
        for p in body[1:]:
            parts.append(f"== {title(lex, dice, focus)} ==\n\n{p}" if dice.chance(0.4) else p)
        return "\n\n".join(parts) + "\n"
    return f"{heading}\n\n" + "\n\n".join(body) + "\n"


def web_style(name: str) -> str:
    """The page shape a web source's name suggests: forum threads, wiki articles, or plain prose."""
    lowered = name.lower()
    if "stack" in lowered or "forum" in lowered:
        return "qa"
    if "wiki" in lowered:
        return "wiki"
    return "prose"
