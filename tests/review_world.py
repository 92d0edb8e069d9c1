"""A prediction log with known truth: the synthetic world's cases 'served' by simulated models.

Champion and shadow decide with calibrated probabilities (the trigger's p(answerable) and the
topic probability are right as often as they claim on answerable messages), so the label-free
average-confidence estimate is meaningful yet biased where unanswerable messages get through.
A correct topic suggests the agent's real reply, a wrong one another topic's reply.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

from monitoring.log.store import PredictionLog
from pipelines.config import SynthConfig
from pipelines.data.contract import Feedback, LabeledCase, PredictionRecord, Suggestion
from pipelines.data.synth import generate_world

if TYPE_CHECKING:
    from pipelines.config import Params


def world_cases(cases_per_day: int = 150, days: int = 2, seed: int = 5) -> list[LabeledCase]:
    world = generate_world(
        SynthConfig(cases_per_day=cases_per_day, drift_from_day=None), seed=seed, days=days
    )
    return [case for batch in world.days for case in batch.cases]


def _decide(
    case: LabeledCase,
    topics: Sequence[str],
    replies: dict[str, str],
    rng: random.Random,
    skill: float,
) -> Suggestion:
    right_trigger = rng.random() < skill
    p_answerable = (
        rng.uniform(0.5, 0.99) if right_trigger == case.answerable else rng.uniform(0.01, 0.49)
    )
    versions = {"trigger": "1", "topic": "1"}
    if p_answerable < 0.5:
        return Suggestion(
            text=None,
            stopped_at="trigger",
            abstain_reason="trigger: not answerable",
            scores={"trigger": p_answerable},
            versions=versions,
            latency_ms=5.0,
        )
    p_topic = rng.uniform(0.35, 0.99)
    if case.answerable and rng.random() < min(p_topic * skill / 0.9, 1.0):
        topic = case.topic
    else:
        topic = rng.choice([t for t in topics if t != case.topic])
    text = case.agent_reply if topic == case.topic and rng.random() < 0.85 else replies[topic]
    return Suggestion(
        text=text,
        topic=topic,
        scores={"trigger": p_answerable, "topic": p_topic},
        versions=versions,
        latency_ms=20.0,
        source="generated",
    )


def served_log(
    cases: list[LabeledCase],
    url: str,
    seed: int = 0,
    shadow_skill: float | None = 0.93,
    request_prefix: str = "req",
) -> PredictionLog:
    """Write one request per case (champion skill 0.9, optional shadow) and the agent's replies."""
    rng = random.Random(seed)
    topics = sorted({c.topic for c in cases if c.topic})
    replies = {}
    for case in cases:
        if case.topic and case.agent_reply:
            replies.setdefault(case.topic, case.agent_reply)
    log = PredictionLog.from_url(url)
    records, feedback = [], []
    for i, case in enumerate(cases):
        champion = _decide(case, topics, replies, rng, 0.9)
        shadow = _decide(case, topics, replies, rng, shadow_skill) if shadow_skill else None
        records.append(
            PredictionRecord(
                request_id=f"{request_prefix}-{i}",
                case_id=case.case_id,
                created_at=case.created_at,
                message=case.message,
                champion=champion,
                shadow=shadow,
                latency_ms=25.0,
            )
        )
        feedback.append(
            Feedback(
                case_id=case.case_id,
                sent_reply=case.agent_reply or "",
                used_suggestion=champion.text == case.agent_reply,
                created_at=case.created_at + timedelta(minutes=3),
            )
        )
    log.write(records)
    log.write_feedback(feedback)
    return log


def reviewed_day(params: Params, day: str, *, shadow_wrong: bool = False) -> list[LabeledCase]:
    """A served log, the day's review sample and an oracle's labels from the truth, summarised
    (CASEPILOT_HOME/review/history.json); `shadow_wrong` rates every shadow suggestion wrong.
    Returns the world's cases."""
    from dataclasses import replace

    from monitoring.review.run import draw_day, summarise_day
    from monitoring.review.simulate import true_label

    cases = world_cases(cases_per_day=60, days=1)
    truth = {c.case_id: c for c in cases}
    served_log(cases, params.prediction_log_url).close()
    sample = draw_day(params, day)
    labels = [
        true_label(row, truth[row["case_id"]], "oracle", params.monitor.match_threshold)
        for row in sample.to_dict("records")
    ]
    if shadow_wrong:
        labels = [replace(x, shadow_rating="wrong" if x.shadow_rating else None) for x in labels]
    summarise_day(params, day, labels)
    return cases
