import re

import pytest

from alignkit.judges import FinalAnswerVerifier
from alignkit.tasks import ANSWER_INSTRUCTION, LIMITS, Problem, arithmetic_problems, split_problems

# Independent reading of a problem: each sentence after the first changes the running value by
# the one number it holds; the verb says how. Checked in this order.
OPS = [
    ("mul", re.compile(r"times|multipl")),
    ("div", re.compile(r"equal|divides")),
    ("add", re.compile(r"more|get on|adds|poured in|rises|older|wins|gets \d|plants")),
    ("sub", re.compile(r"eat|buy|get off|covers|spends|sold|borrow|drained|falls|younger|loses|trades away")),
]


def rederive(prompt: str) -> tuple[int, list[str], list[int]]:
    """(answer, operations, every intermediate value) recomputed from the prompt's text."""
    sentences = [s for s in re.split(r"(?<=[.?])\s+", prompt) if re.search(r"\d", s)]
    value = int(re.search(r"-?\d+", sentences[0]).group())
    ops, values = [], [value]
    for sentence in sentences[1:]:
        (x,) = [int(n) for n in re.findall(r"\d+", sentence)]
        op = next(name for name, pattern in OPS if pattern.search(sentence))
        if op == "div":
            assert value % x == 0, prompt
            value //= x
        else:
            value = {"add": value + x, "sub": value - x, "mul": value * x}[op]
        ops.append(op)
        values.append(value)
    return value, ops, values


def test_fixed_seed_problem_by_hand():
    (problem,) = arithmetic_problems(1, difficulty=1, seed=0)
    assert problem == Problem(
        prompt="A water tank holds 15 litres. 2 litres are poured in. How many litres are in the tank now? "
        "Give the final answer after '####'.",
        answer="17",
        difficulty=1,
    )


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_answers_rederived_and_in_range(difficulty):
    limit = LIMITS[difficulty]
    for problem in arithmetic_problems(60, difficulty=difficulty, seed=7):
        answer, ops, values = rederive(problem.prompt)
        assert str(answer) == problem.answer, problem.prompt
        assert problem.difficulty == difficulty
        assert len(ops) == difficulty
        if difficulty < 3:
            assert set(ops) <= {"add", "sub"}
        else:
            assert {"mul", "div"} & set(ops), problem.prompt
        signed = "temperature" in problem.prompt
        for number in [int(n) for n in re.findall(r"-?\d+", problem.prompt)] + values:
            assert abs(number) <= limit, problem.prompt
            assert signed or number >= 0, problem.prompt
        assert problem.prompt.endswith(ANSWER_INSTRUCTION)


def test_deterministic_and_seed_dependent():
    first = arithmetic_problems(30, difficulty=2, seed=3)
    assert first == arithmetic_problems(30, difficulty=2, seed=3)
    assert first[:10] == arithmetic_problems(10, difficulty=2, seed=3)
    assert first != arithmetic_problems(30, difficulty=2, seed=4)
    assert arithmetic_problems(0) == []


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_prompts_distinct_and_varied(difficulty):
    problems = arithmetic_problems(300, difficulty=difficulty, seed=0)
    assert len({p.prompt for p in problems}) == 300
    # Many stories are in use, not one template repeated.
    openings = {re.sub(r"-?\d+", "N", p.prompt.split(".")[0]) for p in problems}
    assert len(openings) >= 8


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"difficulty must be one of \[1, 2, 3\], got 4"):
        arithmetic_problems(1, difficulty=4)
    with pytest.raises(ValueError, match="n must be >= 0"):
        arithmetic_problems(-1)


def test_split_problems():
    problems = arithmetic_problems(50, seed=1)
    train, held_out = split_problems(problems, held_out_fraction=0.2, seed=0)
    assert (len(train), len(held_out)) == (40, 10)
    assert not {p.prompt for p in train} & {p.prompt for p in held_out}
    assert sorted(train + held_out, key=problems.index) == problems
    # Input order is kept within each part.
    assert train == [p for p in problems if p in train]
    assert split_problems(problems, 0.2, seed=0) == (train, held_out)
    assert split_problems(problems, 0.2, seed=1) != (train, held_out)
    assert split_problems(problems, 0.0) == (problems, [])
    with pytest.raises(ValueError, match="held_out_fraction"):
        split_problems(problems, 1.5)


def test_split_keeps_repeated_prompts_together():
    problems = arithmetic_problems(10, seed=2)
    doubled = problems + problems
    for seed in range(5):
        train, held_out = split_problems(doubled, 0.5, seed=seed)
        assert (len(train), len(held_out)) == (10, 10)
        assert not {p.prompt for p in train} & {p.prompt for p in held_out}


def test_verifier_on_task():
    verifier = FinalAnswerVerifier()
    assert verifier.score(["q", "q"], ["15 + 2 = 17 litres.\n#### 17", "15 - 2 = 13.\n#### 13"], ["17", "17"]) == [
        1.0,
        0.0,
    ]
    problems = arithmetic_problems(5, difficulty=3, seed=0)
    right = [f"Working it out step by step.\n#### {p.answer}" for p in problems]
    wrong = [f"#### {int(p.answer) + 1}" for p in problems]
    prompts = [p.prompt for p in problems]
    answers = [p.answer for p in problems]
    assert verifier.score(prompts, right, answers) == [1.0] * 5
    assert verifier.score(prompts, wrong, answers) == [0.0] * 5
