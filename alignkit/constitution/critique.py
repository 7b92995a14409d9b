"""Phase 1 of Constitutional AI (SL-CAI): critique -> revision, and the data that teaches a model those skills.

For each prompt the policy's answer is shown back to the feedback model as a conversation; a principle drawn at
random supplies the critique request ("what is wrong with your last reply under this principle?") and then the
revision request ("rewrite it"), each answered by the feedback model in turn (Bai et al. 2022, sec. 3.1). The
revision becomes the answer for the next round; after the last round it is the SFT target. Every step is kept with
its provenance (principle id, critique, revision, model) so the result can be audited.

The paper's feedback models were 52B; the 135M embedded model cannot critique from a prompt alone (shared GUIDE), so
`exemplar_sft_rows` turns the constitution's worked exemplars into conversations that teach the skill by SFT
(process supervision), and `comparison_sft_rows` does the same for the comparison skill from gold comparisons.

Even so, most of its free revisions of harmful answers pair a refusal with a senseless or harmful offer (docs/demo.md:
9 of 50 acceptable). `short_revision` is the short form a careful reader accepts: the writer's own refusal sentence
when it is one and names this request (else a plain "I can't help with that."), then the constitution's reason and
safe alternative for the request's kind of harm (its `alternatives`).
"""

from __future__ import annotations

import random
import re
from dataclasses import asdict, dataclass, field

from alignkit.constitution.audit import GoldComparison
from alignkit.constitution.feedback import Generate
from alignkit.constitution.principles import Alternative, Constitution, Exemplar, Principle
from alignkit.data import Turns, reply_to, user_turn
from alignkit.judges import offers_harm
from alignkit.judges.prompts import COMPARISON_TEMPLATE, conversation_text


@dataclass
class RevisionStep:
    principle: str
    critique: str
    revision: str


@dataclass
class RevisionRecord:
    """One prompt's phase-1 history: its first answer, every (principle, critique, revision), the final revision."""

    prompt: Turns
    initial: str
    steps: list[RevisionStep] = field(default_factory=list)
    policy: str = ""
    feedback_model: str = ""

    @property
    def final(self) -> str:
        return self.steps[-1].revision if self.steps else self.initial

    def as_dict(self) -> dict:
        return {**asdict(self), "final": self.final}


def critique_messages(prompt: Turns, response: str, principle: Principle) -> list[dict]:
    """The conversation so far (a request, or a whole chat such as a jailbreak), the reply, then the critique request."""
    return user_turn(prompt) + [{"role": "assistant", "content": response},
                                {"role": "user", "content": principle.critique}]


def revision_messages(prompt: Turns, response: str, principle: Principle, critique: str) -> list[dict]:
    return critique_messages(prompt, response, principle) + [{"role": "assistant", "content": critique},
                                                             {"role": "user", "content": principle.revision}]


def critique_and_revise(prompts: list[Turns], responses: list[str], constitution: Constitution, generate: Generate,
                        rng: random.Random, *, rounds: int = 1, principles: list[str] | None = None,
                        critique_tokens: int = 96, revision_tokens: int = 128, policy: str = "",
                        feedback_model: str = "") -> list[RevisionRecord]:
    """`rounds` critique -> revision rounds for every prompt, batched across prompts; one principle per prompt and
    round, drawn at random (from `principles`, ids, when given: e.g. the harm-related ones for red-team prompts)."""
    if len(prompts) != len(responses):
        raise ValueError(f"critique_and_revise: {len(prompts)} prompts but {len(responses)} responses")
    pool = constitution if principles is None else constitution.subset(principles)
    records = [RevisionRecord(p, r, policy=policy, feedback_model=feedback_model) for p, r in zip(prompts, responses)]
    for _ in range(rounds):
        drawn = [pool.draw(rng)[0] for _ in records]
        current = [r.final for r in records]
        critiques = generate([critique_messages(r.prompt, c, p) for r, c, p in zip(records, current, drawn)],
                             critique_tokens)
        revisions = generate([revision_messages(r.prompt, c, p, k)
                              for r, c, p, k in zip(records, current, drawn, critiques)], revision_tokens)
        for record, principle, critique, revision in zip(records, drawn, critiques, revisions):
            # An empty revision would erase the answer; keep the previous one and record what happened.
            record.steps.append(RevisionStep(principle.id, critique, revision if revision.strip() else record.final))
    return records


PLAIN_REFUSAL = "I can't help with that."
MAX_REFUSAL_WORDS = 24
# Words that say nothing about what a refusal refuses: its own frame ("I can't help you ..."), and the request words
# every harmful request shares ("how", "make", "someone"). What is left is what the request is about.
_FRAME_WORDS = frozenset("""
    about after also because been before being could does doing done from give have help here into just know like
    make made need please really should some someone something tell than that their them then there these they this
    those very want what when where which while will with would your you're cannot can't won't sorry able assist
    provide information anything thing things easiest easy best quickest quick fastest without step steps write
    create produce find build
""".split())
_WORD = re.compile(r"[a-z][a-z'-]{3,}")
_CLAUSE_END = re.compile(r"[.;:!?\n]|,\s+(?:but|because|as|since|so|which)\b|\s+(?:but|because|since)\s")
# The refusal frame the sentence must start with; what follows it is what it refuses.
_FRAME = re.compile(r"(?:i can't|i cannot|i can not|i won't|i will not) (?:help|assist)(?: you)?(?: to| with)? ")
_FIRST_PERSON = re.compile(r"\b(?:i|i'm|i've|me|my|myself|mine)\b")


def _stem(word: str) -> str:
    """A crude stem, the same for a word's common forms ("forged", "forge" -> "forg"; "notes", "note" -> "not")."""
    for suffix in ("'s", "s", "ing", "ed", "e"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
    return word


def _content_words(text: str) -> set[str]:
    words = _WORD.findall(text.lower().replace("\u2019", "'"))
    return {_stem(w) for w in words if w not in _FRAME_WORDS}


def refusal_sentence(request: str, revision: str) -> str | None:
    """The writer's refusal as a sentence of its own, if its first clause is a short refusal in the form "I can't
    help (you) ..." whose object is this request's: it names at least two content words, all of them the request's,
    and none of it speaks as the user ("a woman I matched with"); else None (the writer's refusals often name another request)."""
    text = revision.strip().replace("\u2019", "'")
    clause = _CLAUSE_END.split(text, maxsplit=1)[0].strip()
    if not clause or len(clause.split()) > MAX_REFUSAL_WORDS or not clause[0].isupper():
        return None
    frame = _FRAME.match(clause.lower())
    if frame is None or offers_harm(clause):
        return None
    refused = clause.lower()[frame.end():]
    named = _content_words(refused)
    if len(named) < 2 or not named <= _content_words(request) or _FIRST_PERSON.search(refused):
        return None
    return clause + "."


def short_revision(request: str, revision: str, alternative: Alternative | None) -> str:
    """The short form of a revision of an answer to a harmful request: the writer's refusal sentence
    (`refusal_sentence`, else PLAIN_REFUSAL), then the constitution's reason and safe offer for its kind of harm."""
    parts = [refusal_sentence(request, revision) or PLAIN_REFUSAL]
    if alternative is not None:
        parts += [alternative.reason, alternative.offer]
    return " ".join(parts)


def exemplar_sft_rows(constitution: Constitution, exemplars: list[Exemplar] | None = None) -> list[dict]:
    """SFT rows teaching critique and revision from worked exemplars: two prompt/completion rows per exemplar, so
    only the critique and the revision are trained (the exemplar's flawed first response is context, never a
    target)."""
    rows = []
    for ex in exemplars if exemplars is not None else constitution.exemplars:
        principle = constitution.principle(ex.principle)
        source = f"exemplar {ex.id}"
        critique = critique_messages(ex.prompt, ex.response, principle)
        revision = revision_messages(ex.prompt, ex.response, principle, ex.critique)
        rows.append({"prompt": critique, "completion": reply_to(critique, ex.critique), "source": source})
        rows.append({"prompt": revision, "completion": reply_to(revision, ex.revision), "source": source})
    return rows


def comparison_prompt(prompt: str, first: str, second: str, question: str) -> str:
    """The multiple-choice question the LM and HTTP judges ask (judges/prompts.py), for training the same skill."""
    return COMPARISON_TEMPLATE.format(conversation=conversation_text(prompt), question=question, first=first,
                                      second=second)


def comparison_sft_rows(gold: list[GoldComparison], constitution: Constitution) -> list[dict]:
    """SFT rows teaching the comparison skill: each gold pair in both orders, answered "(A)" or "(B)" correctly.

    The judges read the option from the token after "(", so the trained reply is "(A)" or "(B)" itself.
    """
    rows = []
    for item in gold:
        question = constitution.principle(item.principle).comparison
        better, worse = (item.a, item.b) if item.better == "a" else (item.b, item.a)
        for first, second, answer in ((better, worse, "(A)"), (worse, better, "(B)")):
            # Prompt/completion: a long question is cut from its start, never losing the answer.
            # The LM judge asks exactly this conversation and reads the option where "(A)" and "(B)" part.
            question_turn = user_turn(comparison_prompt(item.prompt, first, second, question))
            rows.append({"prompt": question_turn, "completion": reply_to(question_turn, answer),
                         "source": f"gold comparison {item.id}"})
    return rows
