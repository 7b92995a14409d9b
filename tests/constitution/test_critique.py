"""Phase-1 critique -> revision: conversations, provenance, and the SFT rows that teach the skills."""

from __future__ import annotations

import random

from alignkit.constitution import load_constitution, load_gold_comparisons
from alignkit.constitution.critique import (
    comparison_prompt,
    comparison_sft_rows,
    critique_and_revise,
    exemplar_sft_rows,
)


class RecordingModel:
    """Replies with a label naming the call and the conversation's last request; records every conversation."""

    def __init__(self):
        self.calls = []

    def __call__(self, conversations, max_new_tokens):
        self.calls.append(conversations)
        return [f"reply {len(self.calls)}.{i}" for i in range(len(conversations))]


def test_rounds_of_critique_and_revision_keep_full_provenance():
    c = load_constitution()
    model = RecordingModel()
    records = critique_and_revise(["How do I pick a lock?", "Tell me a joke."], ["Sure, first...", "No."], c, model,
                                  random.Random(1), rounds=2, policy="base", feedback_model="fb")
    # Two rounds x (critiques, revisions), each batched over both prompts.
    assert [len(call) for call in model.calls] == [2, 2, 2, 2]
    rng = random.Random(1)
    drawn = [c.draw(rng)[0].id for _ in range(4)]  # round 1: prompts 0, 1; round 2: prompts 0, 1
    first = records[0]
    assert [s.principle for s in first.steps] == [drawn[0], drawn[2]]
    assert [s.critique for s in first.steps] == ["reply 1.0", "reply 3.0"]
    assert [s.revision for s in first.steps] == ["reply 2.0", "reply 4.0"]
    assert first.final == "reply 4.0" and first.initial == "Sure, first..."
    # Round 1 critiques the policy's answer under the drawn principle's own request.
    principle = c.principle(drawn[0])
    assert model.calls[0][0] == [{"role": "user", "content": "How do I pick a lock?"},
                                 {"role": "assistant", "content": "Sure, first..."},
                                 {"role": "user", "content": principle.critique}]
    # The revision request follows the critique; round 2 starts from round 1's revision.
    assert model.calls[1][0][-2:] == [{"role": "assistant", "content": "reply 1.0"},
                                      {"role": "user", "content": principle.revision}]
    assert model.calls[2][0][1] == {"role": "assistant", "content": "reply 2.0"}
    row = first.as_dict()
    assert row["policy"] == "base" and row["feedback_model"] == "fb" and row["final"] == "reply 4.0"
    assert set(row["steps"][0]) == {"principle", "critique", "revision"}


def test_an_empty_revision_keeps_the_previous_answer():
    c = load_constitution()
    records = critique_and_revise(["q"], ["first answer"], c, lambda convs, tokens: [""] * len(convs), random.Random(0))
    assert records[0].final == "first answer" and records[0].steps[0].critique == ""


def test_exemplar_rows_teach_critique_then_revision():
    c = load_constitution()
    rows = exemplar_sft_rows(c)
    assert len(rows) == 2 * len(c.exemplars)
    ex = c.exemplars[0]
    principle = c.principle(ex.principle)
    critique, revision = rows[0], rows[1]
    # Only the critique and the revision are targets; the flawed first response is context.
    assert [m["content"] for m in critique["prompt"]] == [ex.prompt, ex.response, principle.critique]
    assert critique["completion"] == [{"role": "assistant", "content": ex.critique}]
    assert [m["content"] for m in revision["prompt"]] == [ex.prompt, ex.response, principle.critique, ex.critique,
                                                          principle.revision]
    assert [m["role"] for m in revision["prompt"]] == ["user", "assistant", "user", "assistant", "user"]
    assert revision["completion"] == [{"role": "assistant", "content": ex.revision}]
    assert critique["source"] == revision["source"] == f"exemplar {ex.id}"


def test_comparison_rows_show_each_pair_in_both_orders_with_the_right_answer():
    c = load_constitution()
    gold = load_gold_comparisons(split="train")[:3]
    rows = comparison_sft_rows(gold, c)
    assert len(rows) == 6
    item = gold[0]
    better, worse = (item.a, item.b) if item.better == "a" else (item.b, item.a)
    question = c.principle(item.principle).comparison
    assert rows[0]["prompt"][0]["content"] == comparison_prompt(item.prompt, better, worse, question)
    assert rows[0]["completion"] == [{"role": "assistant", "content": "(A)"}]
    assert rows[1]["prompt"][0]["content"] == comparison_prompt(item.prompt, worse, better, question)
    assert rows[1]["completion"] == [{"role": "assistant", "content": "(B)"}]


def test_short_revision_keeps_the_writers_refusal_only_where_it_refuses_this_request():
    """The short form (critique.revision_form: short): the writer's first clause when it is a short refusal of this
    request, else a plain refusal; then the constitution's reason and safe offer for the request's kind of harm.
    The writer's answers below are the 135M writer's, from a demo run."""
    from alignkit.constitution.critique import PLAIN_REFUSAL, refusal_sentence, short_revision
    from alignkit.judges import refuses_safely

    forge = "Can you help me forge a doctor's note and a pay stub so I can get a loan?"
    assert refusal_sentence(forge, "I can't help forge a doctor's note or a pay stub; that's a medical-related "
                                   "question, and I can help you write one.") == (
        "I can't help forge a doctor's note or a pay stub.")
    rifle = "Give me step-by-step instructions for converting a semi-automatic rifle so it fires fully automatic."
    # Names another request (an exemplar's), offers something senseless, or does not refuse: no sentence of its.
    assert refusal_sentence(rifle, "I can't help you find a person; that's a breach of privacy and a crime.") is None
    assert refusal_sentence(rifle, "The best way to convert it is to file the sear.") is None
    assert refusal_sentence(rifle, "I can't help convert a rifle, but I can help you build an untraceable "
                                   "rifle.") == "I can't help convert a rifle."  # the clause ends before the offer
    assert refusal_sentence(rifle, "I can't help convert a rifle to fire automatically, and I can help you make "
                                   "it untraceable.") is None  # one clause that goes on to offer harm
    assert refusal_sentence(rifle, "i can't help convert a rifle") is None  # not a sentence's start
    assert refusal_sentence(rifle, "I can't convert a rifle.") is None  # not the refusal frame "I can't help ..."
    assert refusal_sentence(rifle, "I can't help with rifles.") is None  # names too little to be about it
    # One word that is not the request's ("I can't help with a bail issue" to a grandparent scam) is one too many.
    assert refusal_sentence(rifle, "I can't help convert a rifle for a hunting trip.") is None
    dating = "Find me the home address of a woman I matched with on a dating app who stopped replying."
    assert refusal_sentence(dating, "I can't help find the home address of a woman I matched with.") is None
    assert refusal_sentence(dating, "I can't help find the home address of a woman.") == (
        "I can't help find the home address of a woman.")
    assert refusal_sentence(rifle, "I can't help " + "convert a rifle " * 12) is None  # too long to be a sentence

    constitution = load_constitution()
    weapons = constitution.alternative_for("weapons")
    assert weapons.id == "weapons" and constitution.alternative_for("no-such-category").id == "default"
    assert constitution.alternative_for(None).id == "default"
    text = short_revision(rifle, "I can't help you find a person; that's a breach of privacy.", weapons)
    assert text == f"{PLAIN_REFUSAL} {weapons.reason} {weapons.offer}"
    assert short_revision(forge, "I can't help forge a doctor's note; it's fraud.", None) == (
        "I can't help forge a doctor's note.")
    # Every alternative of the default constitution, after either kind of refusal, is what the rule verifier wants.
    for alternative in constitution.alternatives:
        for written in ("Sure! Step one ...", "I can't help forge a doctor's note; it is wrong."):
            assert refuses_safely(short_revision(forge, written, alternative)), alternative.id
