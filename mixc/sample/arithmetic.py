"""Math samples: word problems with worked solutions; every step's arithmetic is correct.

(Named arithmetic, not math, so that it is never mistaken for the standard library module.)
"""

from __future__ import annotations

from .dice import Dice
from .words import WORDS

NAMES: list[str] = WORDS["names"]
THINGS: list[str] = WORDS["things"]
CONTAINERS: list[str] = WORDS["containers"]


def _add_sub(dice: Dice) -> tuple[str, str, int]:
    name, thing = dice.pick(NAMES), dice.pick(THINGS)
    a, b = dice.between(3, 60), dice.between(2, 40)
    c = dice.between(1, a + b)
    s = a + b
    problem = f"{name} has {a} {thing}. {name} buys {b} more {thing} and then gives {c} {thing} to a friend. How many {thing} does {name} have now?"
    steps = [f"{name} starts with {a} {thing}.", f"After buying {b} more: {a} + {b} = {s}.", f"After giving away {c}: {s} - {c} = {s - c}."]
    return problem, "\n".join(steps), s - c


def _multiply(dice: Dice) -> tuple[str, str, int]:
    n, k = dice.between(2, 12), dice.between(2, 25)
    thing, box = dice.pick(THINGS), dice.pick(CONTAINERS)
    problem = f"A shop has {n} {box} of {thing}. Each of the {box} holds {k} {thing}. How many {thing} are there in total?"
    return problem, f"There are {n} {box} with {k} {thing} each.\nTotal: {n} × {k} = {n * k}.", n * k


def _divide(dice: Dice) -> tuple[str, str, int]:
    n, q = dice.between(2, 9), dice.between(2, 30)
    name, thing = dice.pick(NAMES), dice.pick(THINGS)
    problem = f"{name} shares {n * q} {thing} equally among {n} friends. How many {thing} does each friend get?"
    return problem, f"Divide the {thing} into {n} equal groups.\nEach friend gets {n * q} ÷ {n} = {q}.", q


def _rectangle(dice: Dice) -> tuple[str, str, int]:
    length, width = dice.between(3, 40), dice.between(2, 30)
    if dice.chance(0.5):
        problem = f"A garden is {length} meters long and {width} meters wide. What is its area in square meters?"
        return problem, f"The area of a rectangle is length times width.\nArea: {length} × {width} = {length * width}.", length * width
    s = length + width
    problem = f"A field is {length} meters long and {width} meters wide. How long is the fence around it?"
    steps = f"The perimeter is twice the sum of length and width.\nFirst {length} + {width} = {s}.\nThen 2 × {s} = {2 * s}."
    return problem, steps, 2 * s


def _equation(dice: Dice) -> tuple[str, str, int]:
    a, x, b = dice.between(2, 12), dice.between(1, 20), dice.between(1, 50)
    c = a * x + b
    problem = f"Solve for x: {a}x + {b} = {c}."
    steps = f"Subtract {b} from both sides: {c} - {b} = {c - b}, so {a}x = {c - b}.\nDivide both sides by {a}: {c - b} ÷ {a} = {x}."
    return problem, steps, x


def _percent(dice: Dice) -> tuple[str, str, int]:
    p = dice.pick([10, 20, 25, 30, 40, 50, 60, 75, 80])
    price = 20 * dice.between(1, 40)  # a multiple of 20 keeps every p% a whole number
    off = price * p // 100
    problem = f"A jacket costs {price} dollars. It is on sale for {p}% off. What is the sale price?"
    steps = (f"The discount is {p}% of {price}: {price} × {p} = {price * p}, and {price * p} ÷ 100 = {off}.\n"
             f"Sale price: {price} - {off} = {price - off}.")
    return problem, steps, price - off


def _speed(dice: Dice) -> tuple[str, str, int]:
    v, t = dice.between(20, 90), dice.between(2, 9)
    name = dice.pick(NAMES)
    problem = f"{name} drives at {v} kilometers per hour for {t} hours. How far does {name} travel?"
    return problem, f"Distance equals speed times time.\nDistance: {v} × {t} = {v * t}.", v * t


def _expression(dice: Dice) -> tuple[str, str, int]:
    a, b, c = dice.between(2, 30), dice.between(2, 30), dice.between(2, 9)
    d = dice.between(1, (a + b) * c)
    s = a + b
    problem = f"Compute ({a} + {b}) × {c} - {d}."
    steps = f"Parentheses first: {a} + {b} = {s}.\nThen multiply: {s} × {c} = {s * c}.\nFinally subtract: {s * c} - {d} = {s * c - d}."
    return problem, steps, s * c - d


MATH_PROBLEMS = [_add_sub, _multiply, _divide, _rectangle, _equation, _percent, _speed, _expression]


def math_document(dice: Dice) -> str:
    parts = []
    for i in range(dice.lognormal_count(3, 0.8, 1, 120)):
        problem, solution, answer = dice.pick(MATH_PROBLEMS)(dice)
        parts.append(f"Problem {i + 1}: {problem}\nSolution:\n{solution}\nAnswer: {answer}\n")
    return "\n".join(parts)
