"""The data contract: validation rules and JSONL / Parquet round trips."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.data.contract import (
    ContractError,
    Feedback,
    KnowledgeDoc,
    LabeledCase,
    PredictionRecord,
    Suggestion,
    Turn,
    read_jsonl,
    read_parquet,
    write_jsonl,
    write_parquet,
)

T0 = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)


def case(**overrides) -> LabeledCase:
    fields = dict(
        case_id="d001-0001",
        created_at=T0,
        message="How do I pause payouts?",
        context=(Turn(role="customer", text="hi"), Turn(role="agent", text="Hi! How can I help?")),
        answerable=True,
        topic="payouts",
        agent_reply="You can pause them under Settings → Payouts.",
        label_source="human",
        labeler="agent-17",
        reply_draft="Payouts may be paused via Settings > Payouts.",
    )
    return LabeledCase(**{**fields, **overrides})


def test_not_answerable_case_cannot_carry_a_topic() -> None:
    with pytest.raises(ValueError, match="topic must be null when answerable is false"):
        case(answerable=False, topic="payouts")
    ok = case(answerable=False, topic=None, unanswerable_kind="thanks")
    assert ok.topic is None


def test_unknown_fields_and_bad_label_source_are_refused() -> None:
    with pytest.raises(ValueError, match="extra"):
        LabeledCase(**case().model_dump(), priority="high")
    with pytest.raises(ValueError, match="label_source"):
        case(label_source="guess")


def test_timestamps_are_stored_in_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert case(created_at=datetime(2026, 1, 5, 11, 30, tzinfo=plus_two)).created_at == T0
    assert case(created_at=datetime(2026, 1, 5, 9, 30)).created_at == T0


def test_abstention_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="abstain_reason"):
        Suggestion(text=None, latency_ms=3.0)
    ok = Suggestion(text=None, stopped_at="trigger", abstain_reason="p=0.2 < 0.8", latency_ms=3.0)
    assert ok.stopped_at == "trigger"


def records() -> dict[type, list]:
    suggestion = Suggestion(
        text="Hi! Go to Settings → Payouts.",
        topic="payouts",
        scores={"trigger": 0.98, "topic": 0.91},
        versions={"trigger": "3", "topic": "5"},
        latency_ms=41.5,
        source="generated",
    )
    return {
        LabeledCase: [
            case(),
            case(case_id="d001-0002", context=(), agent_reply=None, reply_draft=None),
            case(
                case_id="d001-0003",
                answerable=False,
                topic=None,
                unanswerable_kind="chit_chat",
                label_source="weak",
                label_confidence=0.71,
            ),
        ],
        KnowledgeDoc: [
            KnowledgeDoc(
                doc_id="kb-payouts",
                topic="payouts",
                title="Payouts",
                body="Payouts arrive in 2 business days.",
                updated_at=T0,
            )
        ],
        PredictionRecord: [
            PredictionRecord(
                request_id="r1",
                case_id="c1",
                created_at=T0,
                message="m",
                champion=suggestion,
                shadow=None,
                shadow_error="TimeoutError",
                latency_ms=44.0,
            )
        ],
        Feedback: [
            Feedback(
                case_id="c1", sent_reply="Go to Settings.", used_suggestion=True, created_at=T0
            )
        ],
    }


@pytest.mark.parametrize("model", [LabeledCase, KnowledgeDoc, PredictionRecord, Feedback])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_round_trip(tmp_path: Path, model: type, fmt: str) -> None:
    originals = records()[model]
    path = tmp_path / f"records.{fmt}"
    write, read = (write_jsonl, read_jsonl) if fmt == "jsonl" else (write_parquet, read_parquet)
    assert write(originals, path) == len(originals)
    assert read(path, model) == originals


def test_bad_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "batch.jsonl"
    write_jsonl([case()], path)
    with path.open("a") as out:
        out.write('{"case_id": "x", "message": "no labels"}\n')
    with pytest.raises(ContractError, match=r"batch\.jsonl:2: not a valid LabeledCase"):
        read_jsonl(path, LabeledCase)


@settings(max_examples=40, deadline=None)
@given(
    message=st.text(min_size=1, max_size=200),
    context=st.lists(
        st.tuples(st.sampled_from(["customer", "agent"]), st.text(max_size=50)), max_size=3
    ),
    answerable=st.booleans(),
)
def test_any_text_survives_jsonl(
    tmp_path_factory: pytest.TempPathFactory, message: str, context: list, answerable: bool
) -> None:
    original = case(
        message=message,
        context=tuple(Turn(role=r, text=t) for r, t in context),
        answerable=answerable,
        topic="payouts" if answerable else None,
    )
    path = tmp_path_factory.mktemp("h") / "one.jsonl"
    write_jsonl([original], path)
    assert read_jsonl(path, LabeledCase) == [original]
