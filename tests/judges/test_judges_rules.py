import math
import re
import sys
import textwrap

import pytest

from alignkit.judges import (
    REFUSAL_PHRASES,
    CallableJudge,
    FinalAnswerVerifier,
    Judge,
    JudgeError,
    RefusalDetector,
    RegexJudge,
    compare_from_scores,
    is_refusal,
    judge_from_spec,
)
from alignkit.tasks.answers import answers_match, extract_final_answer

SIGMOID_1 = 0.7310585786300049  # 1 / (1 + e^-1)
SIGMOID_HALF = 0.6224593312018546  # 1 / (1 + e^-0.5)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 15 + 2 = 17 litres.\n#### 17", "17"),
        ("#### $1,234", "1234"),
        ("The answer is 42.", "42"),
        ("Answer: -7", "-7"),
        ("Final answer: 3/4 of the cake", "3/4"),
        ("So we get \\boxed{12}. Done in 3 steps.", "12"),
        ("\\boxed{\\frac{3}{4}}", "3/4"),
        ("2 + 3 = 5\n5 * 2 = 10 (two bags of 5)", "10"),
        ("She buys 3 and then 4 apples, so 7 apples.", "7"),
        ("The temperature ends at -12 degrees.", "-12"),
        ("10-5", "5"),
        ("It costs $12.50.", "12.50"),
        ("Total: 1,234,567 people", "1234567"),
        ("That is 42.0", "42"),
        ("So 42.00 dollars", "42"),
        ("Roughly 3.14159 units", "3.14159"),
        ("I don't know.", None),
        ("", None),
        ("Water is H2O.", None),
        ("The answer is 8, or maybe not.\n#### 9", "9"),
        ("Step one gives 20. The answer is 15. Check: 15 + 5 = 20", "15"),
        ("1, 2, 3", "3"),
        ("It drops to \u22124", "-4"),
        ("#### -0", "0"),
        ("The answer is **1,000**.", "1000"),
        ("The answer is -$5", "-5"),
        ("The answer isn't 5; it is 7", "7"),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


def test_extract_final_answer_rejects_non_str():
    with pytest.raises(TypeError, match="expects a str"):
        extract_final_answer(42)


@pytest.mark.parametrize(
    "predicted, gold, expected",
    [
        ("3/4", "0.75", True),
        ("0.333333", "1/3", True),  # relative error 1e-6
        ("0.3333", "1/3", False),
        ("42", 42, True),
        ("42", "42.0", True),
        ("1,234", 1234, True),
        ("41", 42, False),
        ("-3", "3", False),
        ("72", "She earns 6 * 12 = 72 dollars.\n#### 72", True),
        ("1000000.5", 1000000, True),  # 5e-7 relative
        ("1000002", 1000000, False),  # 2e-6 relative
        ("1/0", 5, False),
        (None, 5, False),
        ("seven", 7, False),
        ("0.5", 0.5, True),
    ],
)
def test_answers_match(predicted, gold, expected):
    assert answers_match(predicted, gold) is expected


def test_answers_match_gold_without_number_is_an_error():
    with pytest.raises(ValueError, match="gold answer 'seventeen' holds no number"):
        answers_match("17", "seventeen")


def test_final_answer_verifier_scores():
    verifier = FinalAnswerVerifier()
    completions = ["15 + 2 = 17\n#### 17", "#### 18", "no idea"]
    assert verifier.score(["q"] * 3, completions, ["17", 17, "17"]) == [1.0, 0.0, 0.0]
    harsh = FinalAnswerVerifier(wrong_score=-0.5, missing_score=-1.0)
    assert harsh.score(["q"] * 3, completions, ["17", 17, "17"]) == [1.0, -0.5, -1.0]


def test_final_answer_verifier_errors():
    verifier = FinalAnswerVerifier()
    with pytest.raises(JudgeError, match="needs references .* 2 items"):
        verifier.score(["q", "q"], ["#### 1", "#### 2"])
    with pytest.raises(JudgeError, match="item 1 has no reference"):
        verifier.score(["q", "q"], ["#### 1", "#### 2"], ["1", None])
    with pytest.raises(JudgeError, match="item 0: gold answer 'abc' holds no number"):
        verifier.score(["q"], ["#### 1"], ["abc"])
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        verifier.score(["q", "q"], ["#### 1"], ["1"])
    with pytest.raises(JudgeError, match="item 0: completion must be a str"):
        verifier.score(["q"], [[{"role": "assistant", "content": "1"}]], ["1"])


def test_compare_hard():
    verifier = FinalAnswerVerifier()
    assert verifier.compare("q", "#### 17", "#### 3", reference="17") == 1.0
    assert verifier.compare("q", "#### 3", "#### 17", reference="17") == 0.0
    assert verifier.compare("q", "#### 17", "it is 17", reference="17") == 0.5
    assert verifier.compare("q", "#### 1", "#### 2", principle="correctness", reference="17") == 0.5


def test_compare_soft_is_sigmoid_of_score_gap():
    # scores 1 and -1, temperature 2: sigmoid((1 - (-1)) / 2) = sigmoid(1)
    verifier = FinalAnswerVerifier(wrong_score=-1.0, temperature=2.0)
    assert verifier.compare("q", "#### 17", "#### 3", reference="17") == pytest.approx(SIGMOID_1)
    assert verifier.compare("q", "#### 3", "#### 17", reference="17") == pytest.approx(1 - SIGMOID_1)
    # scores 3 and 1, temperature 4: sigmoid(0.5)
    regex = RegexJudge("yes", match_score=3.0, miss_score=1.0)
    assert compare_from_scores(regex, "q", "yes", "no", temperature=4.0) == pytest.approx(SIGMOID_HALF)
    assert compare_from_scores(regex, "q", "no", "yes", temperature=4.0) == pytest.approx(1 - SIGMOID_HALF)
    assert compare_from_scores(regex, "q", "yes", "yes", temperature=4.0) == 0.5


def test_compare_from_scores_large_gap_and_bad_temperature():
    huge = RegexJudge("yes", match_score=1000.0, miss_score=0.0)
    assert compare_from_scores(huge, "q", "yes", "no", temperature=1.0) == 1.0
    assert compare_from_scores(huge, "q", "no", "yes", temperature=1.0) == 0.0
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        compare_from_scores(huge, "q", "yes", "no", temperature=-1.0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        RegexJudge("x", temperature=-0.1)


def test_judges_satisfy_the_protocol():
    for judge in (FinalAnswerVerifier(), RegexJudge("x"), RefusalDetector(), CallableJudge(lambda p, c, r: 0.0)):
        assert isinstance(judge, Judge)

    class ScoreOnly:
        def score(self, prompts, completions, references=None):
            return [0.0] * len(completions)

    assert not isinstance(ScoreOnly(), Judge)


def test_regex_judge():
    judge = RegexJudge(r"\bparis\b")
    assert judge.score(["q"] * 3, ["It is Paris.", "It is Lyon.", "Parisian"]) == [1.0, 0.0, 0.0]
    case_sensitive = RegexJudge("paris", flags=0, match_score=2.0, miss_score=-1.0)
    assert case_sensitive.score(["q", "q"], ["Paris", "paris"]) == [-1.0, 2.0]
    compiled = RegexJudge(re.compile(r"\d{3}"))
    assert compiled.score(["q", "q"], ["call 911", "call 91"]) == [1.0, 0.0]
    assert judge.compare("q", "Paris", "Rome") == 1.0
    with pytest.raises(ValueError, match="invalid pattern '\\(unclosed'"):
        RegexJudge("(unclosed")


def test_refusal_phrases_are_normalised():
    assert len(REFUSAL_PHRASES) >= 25
    for phrase in REFUSAL_PHRASES:
        assert phrase == phrase.lower().strip() and "\u2019" not in phrase


@pytest.mark.parametrize(
    "text",
    [
        "I\u2019m sorry, but I can\u2019t help with that.",
        "As an AI language model, I must decline.",
        "I CANNOT provide instructions for that.",
        "Unfortunately, I'm   unable to assist.",
        "That is something I will not do.",
        "My apologies, but this request is against my guidelines.",
    ],
)
def test_is_refusal_on_refusals(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sorry for the wait! The capital of France is Paris.",
        "Here is how to bake bread: mix flour, water, salt and yeast.",
        "The answer is 42.",
    ],
)
def test_is_refusal_on_benign_answers(text):
    assert not is_refusal(text)


def test_refusal_detector_known_errors():
    # Documented limits of phrase matching: an apology that goes on to help is flagged...
    assert is_refusal("I'm sorry to hear your cat is ill; here is what a vet would check.")
    # ...and a refusal in words outside the list is missed.
    assert not is_refusal("That request is off-limits for me.")


def test_refusal_detector_scores_and_compare():
    detector = RefusalDetector()
    assert detector.score(["q", "q"], ["I won't do that.", "Sure, here it is."]) == [1.0, 0.0]
    assert detector.compare("q", "I cannot help.", "Sure.") == 1.0


JUDGE_MODULE = "alignkit_test_judge_fns"


@pytest.fixture
def judge_module(tmp_path, monkeypatch):
    (tmp_path / f"{JUDGE_MODULE}.py").write_text(
        textwrap.dedent(
            """
            seen = []

            def length_reward(prompt, completion, reference):
                seen.append((prompt, reference))
                return len(completion) / 10

            def exact(prompt, completion, reference):
                return completion == reference

            def bad(prompt, completion, reference):
                return 1.0 if completion == "ok" else "high"

            def boom(prompt, completion, reference):
                raise KeyError("nope")

            def not_a_number(prompt, completion, reference):
                return float("nan")

            class Holder:
                @staticmethod
                def score(prompt, completion, reference):
                    return 2

            value = 3
            """
        )
    )
    (tmp_path / "alignkit_test_broken_mod.py").write_text("import alignkit_definitely_missing_dep\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A fresh import per test: another test's tmp_path may hold a module of the same name.
    monkeypatch.delitem(sys.modules, JUDGE_MODULE, raising=False)
    monkeypatch.delitem(sys.modules, "alignkit_test_broken_mod", raising=False)
    return JUDGE_MODULE


def test_callable_judge_by_dotted_path(judge_module):
    judge = CallableJudge(f"{judge_module}:length_reward")
    messages = [{"role": "user", "content": "hi"}]
    assert judge.score([messages, "p"], ["abcd", "ab"]) == [0.4, 0.2]
    assert sys.modules[judge_module].seen == [(messages, None), ("p", None)]
    exact = CallableJudge(f"{judge_module}.exact")
    assert exact.score(["p", "p"], ["17", "18"], ["17", "17"]) == [1.0, 0.0]
    assert CallableJudge(f"{judge_module}:Holder.score").score(["p"], ["x"]) == [2.0]
    assert exact.compare("p", "17", "18", reference="17") == 1.0


def test_callable_judge_with_a_function():
    judge = CallableJudge(lambda prompt, completion, reference: completion.count("!"))
    assert judge.score(["p", "p"], ["wow!!", "ok"]) == [2.0, 0.0]
    assert judge.compare("p", "a!", "b!!") == 0.0


def test_callable_judge_bad_paths(judge_module):
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        CallableJudge("no_such_module_xyz:fn")
    with pytest.raises(ValueError, match=f"module '{judge_module}' has no attribute 'missing'"):
        CallableJudge(f"{judge_module}:missing")
    with pytest.raises(ValueError, match=r"is not callable \(it is a int\)"):
        CallableJudge(f"{judge_module}:value")
    with pytest.raises(ValueError, match="not a dotted path"):
        CallableJudge("justaname")
    with pytest.raises(ValueError, match="must be a dotted path or a callable"):
        CallableJudge(3)
    # A module that exists but fails on its own import keeps its real error.
    with pytest.raises(ModuleNotFoundError, match="alignkit_definitely_missing_dep"):
        CallableJudge("alignkit_test_broken_mod:f")


def test_callable_judge_bad_returns(judge_module):
    with pytest.raises(JudgeError, match=r"item 1 returned 'high' \(str\), expected a number"):
        CallableJudge(f"{judge_module}:bad").score(["p", "p"], ["ok", "x"])
    with pytest.raises(JudgeError, match="failed on item 0: KeyError: 'nope'"):
        CallableJudge(f"{judge_module}:boom").score(["p"], ["x"])
    with pytest.raises(JudgeError, match="item 0 returned NaN"):
        CallableJudge(f"{judge_module}:not_a_number").score(["p"], ["x"])


def test_judge_from_spec(judge_module):
    assert isinstance(judge_from_spec("final_answer"), FinalAnswerVerifier)
    assert isinstance(judge_from_spec("refusal"), RefusalDetector)
    regex = judge_from_spec({"regex": r"\d+", "match_score": 2.0})
    assert isinstance(regex, RegexJudge)
    assert regex.score(["q", "q"], ["a 1", "none"]) == [2.0, 0.0]
    callable_judge = judge_from_spec({"callable": f"{judge_module}:length_reward"})
    assert callable_judge.score(["q"], ["abcde"]) == [0.5]
    harsh = judge_from_spec({"final_answer": {"wrong_score": -1.0}, "missing_score": -2.0})
    assert harsh.score(["q", "q"], ["#### 3", "none"], ["4", "4"]) == [-1.0, -2.0]
    soft = judge_from_spec({"refusal": None, "temperature": 1.0})
    assert soft.compare("q", "I cannot.", "Sure.") == pytest.approx(SIGMOID_1)
    existing = RefusalDetector()
    assert judge_from_spec(existing) is existing


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bleu", "unknown judge spec 'bleu'; valid kinds: callable, final_answer, http, lm, refusal, regex, reward_model"),
        ("regex", "needs a value"),
        ({}, "must name exactly one kind; valid kinds: callable, final_answer, http, lm, refusal, regex, reward_model"),
        ({"regex": "a", "callable": "m:f"}, "must name exactly one kind"),
        ({"regex": "a", "bogus": 1}, r"unknown options \['bogus'\]"),
        ({"final_answer": "strict"}, "takes a dict of options"),
        (42, "must be a str or dict"),
    ],
)
def test_judge_from_spec_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        judge_from_spec(spec)


def test_sigmoid_constants():
    assert SIGMOID_1 == pytest.approx(1 / (1 + math.exp(-1)))
    assert SIGMOID_HALF == pytest.approx(1 / (1 + math.exp(-0.5)))
