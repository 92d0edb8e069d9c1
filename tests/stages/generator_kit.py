"""The answer and tone tests' toy world: four cases with house-style replies and robotic drafts.

tests/stages/test_answer.py, test_tone.py and conftest.py use them, and so does test_quantize.py.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pipelines.data.contract import KnowledgeDoc, LabeledCase

NOW = datetime(2026, 1, 5, tzinfo=UTC)
# (topic, message, house-style reply, robotic draft)
WORLD = [
    ("payouts", "when will my payout of $40 arrive?",
     "Hi! Payouts land in 2 business days. Track them under Balance → Payouts.",
     "Payouts are credited within 2 business days. Status is available under Balance → Payouts."),
    ("payouts", "my payout failed, where is the money?",
     "Hi! A failed payout comes back within 5 business days, we'll retry then.",
     "Failed payouts are returned within 5 business days prior to retry."),
    ("refunds", "how do I refund a customer?",
     "Sure! Open the payment under Payments → Refunds and click Refund, it's instant.",
     "Refunds may be issued via Payments → Refunds. The operation is immediate."),
    ("refunds", "refund fee question, is there a fee?",
     "Good news: refunds are free, we don't charge a fee. 🙂",
     "No fee is charged for refunds."),
]  # fmt: skip
TINY = dict(tiny_layers=2, tiny_hidden=64, tiny_heads=2, vocab_size=500, max_length=160,
            max_new_tokens=40, learning_rate=1e-2, batch_size=8, epochs=80.0)  # fmt: skip


def _cases(copies: int = 1) -> list[LabeledCase]:
    return [
        LabeledCase(
            case_id=f"c{i}-{k}",
            created_at=NOW,
            message=msg,
            answerable=True,
            topic=topic,
            agent_reply=reply,
            reply_draft=draft,
            label_source="synthetic",
        )  # fmt: skip
        for k in range(copies)
        for i, (topic, msg, reply, draft) in enumerate(WORLD)
    ]


DOCS = [
    KnowledgeDoc(doc_id="d-payouts", topic="payouts", title="Payouts", updated_at=NOW,
                 body="Payouts arrive in 2 business days; failed ones return in 5 business days."),
    KnowledgeDoc(doc_id="d-refunds", topic="refunds", title="Refunds", updated_at=NOW,
                 body="Refund a payment under Payments → Refunds. Refunds are free."),
]  # fmt: skip
