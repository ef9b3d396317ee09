"""Reasoning samples: questions answered step by step (orderings, sequences, counting, sorting, dates).

A source whose name contains "chatml" gets ChatML turns with the steps in a <think> block.
"""

from __future__ import annotations

from .dice import Dice
from .words import WORDS

NAMES: list[str] = WORDS["names"]
COMPARISONS: list[tuple[str, str]] = [tuple(pair) for pair in WORDS["comparisons"]]
DAYS: list[str] = WORDS["days"]
SPELLING: list[str] = WORDS["spelling"]


def _ordering(dice: Dice) -> tuple[str, list[str], str]:
    people = []
    while len(people) < 3:
        name = dice.pick(NAMES)
        if name not in people:
            people.append(name)
    more, most = dice.pick(COMPARISONS)
    a, b, c = people  # a > b > c
    question = f"{a} is {more} than {b}. {b} is {more} than {c}. Who is the {most}?"
    steps = [f"{a} is {more} than {b}, so {b} is not the {most}.", f"{b} is {more} than {c}, so {c} is not the {most}.",
             f"{a} is {more} than {b}, who is {more} than {c}, so {a} is {more} than both."]
    return question, steps, a


def _sequence(dice: Dice) -> tuple[str, list[str], str]:
    start, step, n = dice.between(1, 30), dice.between(2, 12), dice.between(4, 6)
    terms = [start + i * step for i in range(n)]
    question = f"What number comes next in the sequence {', '.join(map(str, terms))}, ...?"
    steps = [f"The differences are {', '.join(f'{terms[i + 1]} - {terms[i]} = {step}' for i in range(n - 1))}.",
             f"Each term adds {step} to the one before.", f"The next term is {terms[-1]} + {step} = {terms[-1] + step}."]
    return question, steps, str(terms[-1] + step)


def _count_letter(dice: Dice) -> tuple[str, list[str], str]:
    word = dice.pick(SPELLING)
    letter = dice.pick(sorted(set(word)))
    hits = [i + 1 for i, ch in enumerate(word) if ch == letter]
    question = f"How many times does the letter '{letter}' appear in the word '{word}'?"
    steps = [f"Spell the word: {', '.join(word)}.", f"The letter '{letter}' is at positions {', '.join(map(str, hits))}.",
             f"That is {len(hits)} time{'s' if len(hits) != 1 else ''}."]
    return question, steps, str(len(hits))


def _sort_numbers(dice: Dice) -> tuple[str, list[str], str]:
    numbers = [dice.between(1, 99) for _ in range(dice.between(3, 6))]
    ordered = sorted(numbers)
    question = f"Sort these numbers from smallest to largest: {', '.join(map(str, numbers))}."
    steps = [f"The smallest number is {ordered[0]}.", f"The largest number is {ordered[-1]}.",
             f"In order: {', '.join(map(str, ordered))}."]
    return question, steps, ", ".join(map(str, ordered))


def _weekday(dice: Dice) -> tuple[str, list[str], str]:
    today, n = dice.below(7), dice.between(2, 40)
    question = f"If today is {DAYS[today]}, what day of the week will it be in {n} days?"
    steps = [f"A week has 7 days, so only the remainder matters: {n} = 7 × {n // 7} + {n % 7}.",
             f"Counting {n % 7} days forward from {DAYS[today]} gives {DAYS[(today + n) % 7]}."]
    return question, steps, DAYS[(today + n) % 7]


REASONING = [_ordering, _sequence, _count_letter, _sort_numbers, _weekday]


def reasoning_document(dice: Dice, chat: bool) -> str:
    parts = []
    for _ in range(dice.lognormal_count(2, 0.8, 1, 80)):
        question, steps, answer = dice.pick(REASONING)(dice)
        thinking = "\n".join(f"Step {i + 1}: {s}" for i, s in enumerate(steps))
        if chat:
            parts.append(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n<think>\n{thinking}\n</think>\n"
                         f"The answer is {answer}.<|im_end|>\n")
        else:
            parts.append(f"Question: {question}\nLet's think step by step.\n{thinking}\nTherefore, the answer is {answer}.\n")
    return "\n".join(parts)
