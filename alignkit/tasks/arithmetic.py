"""A built-in verifiable task: arithmetic word problems with exact integer answers.

Written by the alignkit team so that RL and iterative DPO can run fully offline: a policy
answers, ``FinalAnswerVerifier`` checks the number after "####" against ``Problem.answer``.

Each problem starts from a quantity and applies a chain of operations, each told as one
sentence of a small story (13 templates). Difficulty sets the chain and the size of numbers:

- 1: one addition or subtraction, every number (operands, intermediate values, answer) <= 20;
- 2: two additions/subtractions, numbers <= 100;
- 3: three operations, at least one multiplication or exact division, numbers <= 1000.

Answers are integers and never negative, except in the temperature template, whose values
may go below zero (within the same bound).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

LIMITS = {1: 20, 2: 100, 3: 1000}
ANSWER_INSTRUCTION = "Give the final answer after '####'."
# Largest multiplier or divisor, so that steps stay mental-arithmetic sized even at difficulty 3.
_MAX_FACTOR = 12


@dataclass(frozen=True)
class Problem:
    """One word problem; ``answer`` is the exact integer result as a string (e.g. "17")."""

    prompt: str
    answer: str
    difficulty: int


@dataclass(frozen=True)
class _Template:
    setup: str
    question: str
    add: str | None
    sub: str | None
    mul: str | None = None
    div: str | None = None
    signed: bool = False
    # Realistic bounds tighter than the difficulty's (nobody is 0 or 900 years old).
    min_value: int = 0
    max_value: int | None = None

    def ops(self) -> list[str]:
        return [op for op in ("add", "sub", "mul", "div") if getattr(self, op) is not None]


# Placeholders: {a} start value, {x} the step's operand; {name}, {sub}/{Sub} (she/he),
# {obj} (her/him), {their}/{Their} (her/his).
_TEMPLATES: tuple[_Template, ...] = (
    _Template(
        setup="{name} has {a} sweets.",
        add="{Sub} buys {x} more sweets.",
        sub="{Sub} eats {x} of them.",
        mul="{Their} aunt gives {obj} enough sweets to have {x} times as many as before.",
        div="{Sub} shares the sweets equally among {x} friends, {obj}self included, and keeps {their} own share.",
        question="How many sweets does {name} have now?",
    ),
    _Template(
        setup="A shop has {a} apples on display.",
        add="A delivery brings {x} more apples.",
        sub="Customers buy {x} apples.",
        mul="The manager restocks so that there are {x} times as many apples as before.",
        div="The apples are split equally between {x} branches of the shop, and this branch keeps one share.",
        question="How many apples does the shop have on display now?",
    ),
    _Template(
        setup="A train leaves the first station with {a} passengers.",
        add="At the next station {x} passengers get on.",
        sub="At the following station {x} passengers get off.",
        mul="At the central station so many people board that there are {x} times as many passengers as before.",
        div="At a junction the train splits into {x} parts with equal numbers of passengers, and one part continues.",
        question="How many passengers are on the train that continues?",
    ),
    _Template(
        setup="A delivery van has {a} km left to drive today.",
        add="A new order adds {x} km to the route.",
        sub="The driver covers {x} km before lunch.",
        mul="The remaining route has to be driven {x} times in all, once for each load.",
        question="How many km does the van have left to drive?",
    ),
    _Template(
        setup="{name} has saved {a} dollars.",
        add="{Sub} saves {x} more dollars.",
        sub="{Sub} spends {x} dollars on a gift.",
        mul="A savings scheme multiplies {their} money by {x}.",
        div="{Sub} splits {their} money into {x} equal parts and donates all parts but one.",
        question="How many dollars does {name} have now?",
    ),
    _Template(
        setup="A bakery bakes {a} cookies in the morning.",
        add="The bakers bake {x} more cookies.",
        sub="{x} cookies are sold.",
        mul="A large order arrives and the bakers scale up the stock to {x} times its size.",
        div="The cookies are put on {x} equal trays and every tray but one is sent to a cafe.",
        question="How many cookies are at the bakery now?",
    ),
    _Template(
        setup="{name} grows {a} tulips in {their} garden.",
        add="{Sub} plants {x} more tulips.",
        sub="Rabbits eat {x} of the tulips.",
        mul="By the next spring the tulips have multiplied to {x} times as many.",
        div="{Sub} divides the tulips into {x} equal rows and gives away every row but one.",
        question="How many tulips does {name} have in the garden now?",
    ),
    _Template(
        setup="A library shelf holds {a} books.",
        add="A librarian adds {x} books to the shelf.",
        sub="Readers borrow {x} books from the shelf.",
        mul="The shelf is refilled until it holds {x} times as many books.",
        div="The books are sorted into {x} equal piles and all piles but one move to another room.",
        question="How many books are on the shelf now?",
    ),
    _Template(
        setup="At dawn the temperature is {a} degrees.",
        add="Then it rises by {x} degrees.",
        sub="Then it falls by {x} degrees.",
        question="What is the temperature in degrees at the end?",
        signed=True,
    ),
    _Template(
        setup="{name} is {a} years old.",
        add="{Their} cousin is {x} years older than that.",
        sub="{Their} friend is {x} years younger than that.",
        mul="{Their} great-grandmother is {x} times as old as that.",
        question="How old, in years, is the last person mentioned?",
        min_value=1,
        max_value=120,
    ),
    _Template(
        setup="{name} scores {a} points in a game.",
        add="{Sub} wins {x} bonus points.",
        sub="{Sub} loses {x} points for a mistake.",
        mul="A power-up multiplies {their} score by {x}.",
        div="A penalty divides {their} score by {x}.",
        question="What is {name}'s score now?",
    ),
    _Template(
        setup="A water tank holds {a} litres.",
        add="{x} litres are poured in.",
        sub="{x} litres are drained.",
        question="How many litres are in the tank now?",
    ),
    _Template(
        setup="{name} has {a} stamps.",
        add="{Sub} gets {x} stamps for {their} birthday.",
        sub="{Sub} trades away {x} stamps.",
        mul="{Sub} buys a collection that leaves {obj} with {x} times as many stamps.",
        div="{Sub} splits the stamps into {x} equal albums and gives all albums but one to {their} cousins.",
        question="How many stamps does {name} have now?",
    ),
)

# (name, subject, object, possessive)
_PEOPLE = (
    ("Ana", "she", "her", "her"),
    ("Omar", "he", "him", "his"),
    ("Priya", "she", "her", "her"),
    ("Kenji", "he", "him", "his"),
    ("Lucia", "she", "her", "her"),
    ("Tom", "he", "him", "his"),
    ("Amara", "she", "her", "her"),
    ("Ravi", "he", "him", "his"),
    ("Sofia", "she", "her", "her"),
    ("Ivan", "he", "him", "his"),
    ("Zoe", "she", "her", "her"),
    ("Kwame", "he", "him", "his"),
)


def _step(op: str, value: int, low: int, high: int, rng: random.Random) -> int | None:
    """A random operand for ``op`` keeping it and the result in [low, high], or None if there is none."""
    # Added and removed amounts start at 2 so that every sentence reads in the plural ("2 books").
    # Below zero (temperatures) the room to the bound can exceed the bound, hence the min.
    if op == "add":
        top = min(high - value, high)
        return rng.randint(2, top) if top >= 2 else None
    if op == "sub":
        top = min(value - low, high)
        return rng.randint(2, top) if top >= 2 else None
    if op == "mul":
        if value < 1:
            return None
        top = min(_MAX_FACTOR, high // value)
        return rng.randint(2, top) if top >= 2 else None
    divisors = [d for d in range(2, min(_MAX_FACTOR, value) + 1) if value % d == 0] if value >= 2 else []
    return rng.choice(divisors) if divisors else None


def _apply(op: str, value: int, x: int) -> int:
    if op == "add":
        return value + x
    if op == "sub":
        return value - x
    if op == "mul":
        return value * x
    return value // x


def _try_problem(rng: random.Random, difficulty: int) -> Problem | None:
    """One random attempt at a problem; None when the drawn numbers admit no valid chain."""
    wants_product = difficulty == 3
    templates = [t for t in _TEMPLATES if not wants_product or {"mul", "div"} & set(t.ops())]
    template = rng.choice(templates)
    high = min(LIMITS[difficulty], template.max_value or LIMITS[difficulty])
    low = -high if template.signed else template.min_value
    ops = template.ops() if wants_product else [op for op in template.ops() if op in ("add", "sub")]
    chain = [rng.choice(ops) for _ in range(difficulty)]
    if wants_product and not {"mul", "div"} & set(chain):
        chain[rng.randrange(len(chain))] = rng.choice([op for op in ("mul", "div") if op in ops])

    name, sub, obj, their = rng.choice(_PEOPLE)
    people = {"name": name, "sub": sub, "Sub": sub.capitalize(), "obj": obj, "their": their,
              "Their": their.capitalize()}
    value = rng.randint(low if template.signed else max(low, 2), high)
    sentences = [template.setup.format(a=value, **people)]
    for op in chain:
        x = _step(op, value, low, high, rng)
        if x is None:
            return None
        value = _apply(op, value, x)
        sentences.append(getattr(template, op).format(x=x, **people))
    sentences += [template.question.format(**people), ANSWER_INSTRUCTION]
    return Problem(prompt=" ".join(sentences), answer=str(value), difficulty=difficulty)


def arithmetic_problems(n: int, *, difficulty: int = 1, seed: int = 0) -> list[Problem]:
    """``n`` distinct word problems of the given difficulty (1, 2 or 3), the same for a given seed.

    The first k problems of a larger ``n`` are the k problems of a smaller one.
    """
    if difficulty not in LIMITS:
        raise ValueError(f"difficulty must be one of {sorted(LIMITS)}, got {difficulty!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    # A string seed is hashed deterministically by random (unlike hash()), and keeps difficulties apart.
    rng = random.Random(f"alignkit.tasks.arithmetic:{difficulty}:{seed}")
    problems: list[Problem] = []
    seen: set[str] = set()
    attempts = 0
    max_attempts = 100 * n + 1000
    while len(problems) < n:
        attempts += 1
        if attempts > max_attempts:
            raise ValueError(
                f"could only generate {len(problems)} distinct problems of difficulty {difficulty}, asked for {n}"
            )
        problem = _try_problem(rng, difficulty)
        if problem is not None and problem.prompt not in seen:
            seen.add(problem.prompt)
            problems.append(problem)
    return problems


def split_problems(
    problems: list[Problem], held_out_fraction: float = 0.2, seed: int = 0
) -> tuple[list[Problem], list[Problem]]:
    """Split into (train, held_out), deterministically for a seed.

    Problems are grouped by prompt, so a repeated prompt never lands on both sides. About
    ``held_out_fraction`` of the distinct prompts (rounded) are held out; both parts keep the
    input order.
    """
    if not 0.0 <= held_out_fraction <= 1.0:
        raise ValueError(f"held_out_fraction must be in [0, 1], got {held_out_fraction}")
    prompts = list(dict.fromkeys(p.prompt for p in problems))
    order = list(range(len(prompts)))
    random.Random(f"alignkit.tasks.split:{seed}").shuffle(order)
    held_prompts = {prompts[i] for i in order[: round(len(prompts) * held_out_fraction)]}
    train = [p for p in problems if p.prompt not in held_prompts]
    held_out = [p for p in problems if p.prompt in held_prompts]
    return train, held_out
