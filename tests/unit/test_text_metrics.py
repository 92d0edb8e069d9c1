"""Text metrics on hand-checked examples: ROUGE-L, groundedness, facts, faithfulness, tone."""

from __future__ import annotations

import pytest

from pipelines.evaluate.text_metrics import (
    exact_match,
    extract_facts,
    faithfulness,
    groundedness,
    lost_facts,
    near_match,
    rouge_l,
    tone_score,
)

DRAFT = (
    "Failed payouts are returned to the balance within 5 business days. Bank details must be "
    "verified under Settings → Payouts → Bank accounts prior to retry. A fee of $0.50 applies "
    "to <EMAIL> notices sent via Paylane Connect."
)
REWRITE = (
    "Hi! A failed payout comes back to your balance within 5 business days. Double-check your "
    "bank details under Settings -> Payouts -> Bank accounts and we'll retry ($0.50 fee for "
    "<EMAIL> notices from Paylane Connect)."
)


def test_rouge_l_hand_checked():
    # LCS of "the cat sat on the mat" / "the cat is on the mat" is 5 tokens of 6 each: F1 = 5/6.
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l("same words here", "same words here") == pytest.approx(1.0)
    assert rouge_l("", "anything") == 0.0
    assert near_match("the cat sat on the mat", "the cat is on the mat", threshold=0.8)
    assert not near_match("a dog", "the cat is on the mat")
    assert exact_match("Hi  there!", "hi there!")


def test_groundedness_counts_reply_words_found_in_context():
    # reply words: refund, sent, to, <EMAIL> → 3 of 4 in the context ("sent" is not)
    assert groundedness("refund sent to <EMAIL>", ["your refund went to <EMAIL>"]) == pytest.approx(
        0.75
    )
    assert groundedness("", ["anything"]) == 0.0
    assert groundedness("totally new words", []) == 0.0


def test_extract_facts_finds_amounts_paths_placeholders_and_terms():
    facts = extract_facts(DRAFT, ["Paylane Connect"])
    # the last menu segment is read up to its capitalised words: the sentence goes on after it
    assert {"5", "$0.50", "<EMAIL>", "settings → payouts → bank", "paylane connect"} <= facts
    assert extract_facts("See Payments → All payments → Blocked.") == {
        "payments → all payments → blocked"
    }
    # a bare ">" between words is a menu separator, but a placeholder's ">" is not
    assert "settings → cards" in extract_facts("Or Settings > Cards.")
    assert extract_facts("Email <EMAIL> now") == {"<EMAIL>"}
    # numbers are whole tokens; product terms match whole words in their own case
    assert extract_facts("Use 3D Secure, a 2xx reply, Form 1099-K, fee 2.9%.") == {"1099", "2.9%"}
    assert extract_facts("Our business in the US", ["US"]) == {"us"}
    assert extract_facts("Our business, thanks", ["US"]) == set()


def test_faithfulness_accepts_a_faithful_rewrite_and_names_lost_facts():
    assert faithfulness(DRAFT, REWRITE, ["Paylane Connect"]) == 1.0
    unfaithful = REWRITE.replace("5 business", "7 business").replace("$0.50", "a small")
    assert lost_facts(DRAFT, unfaithful, ["Paylane Connect"]) == ["$0.50", "5"]
    assert faithfulness(DRAFT, unfaithful, ["Paylane Connect"]) == pytest.approx(1 - 2 / 5)
    # whole tokens only: "25" does not keep the fact "5"
    assert lost_facts("wait 5 days", "wait 25 days") == ["5"]
    assert faithfulness("No facts in here.", "Nothing either.") == 1.0


def test_tone_score_prefers_house_style():
    assert tone_score(REWRITE) > tone_score(DRAFT)
    assert tone_score("Hi! You're all set, we've sent it.") == pytest.approx(1.0)
    # stiff, no contraction, no friendly word: only the length check passes
    assert tone_score("Please be advised that the request is processed.") == pytest.approx(0.25)
    assert tone_score("") == 0.0
