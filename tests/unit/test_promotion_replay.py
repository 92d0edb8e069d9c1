"""Fast checks of the per-stage decision parts, the reviewer channels, the service key and the
lifecycle schedules (no server: the real-server tests are test_monitor_decides.py and
test_schedule_fires.py)."""

from __future__ import annotations

import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from monitoring.decisions.replay import (
    evidence_key,
    joint_decision,
    joint_shadow_cases,
    stage_decision,
    stage_shadow_cases,
)
from monitoring.notify.channels import apprise_urls, notify_reviewers
from pipelines.config import params_from_mapping
from pipelines.home import Home

REF = "casepilot-trigger/2"


def _rules(params):
    """What the decisions take from params: the match threshold and the `promote:` section."""
    return params.monitor.match_threshold, params.promote


def _params(tmp_path: Path, **sections):
    return params_from_mapping(sections, home=Home(tmp_path / "home"), env={})


def _row(i: int, ref: str | None, sent: str | None, case: str | None = None) -> dict:
    shadow = None if ref is None else {"text": "x", "versions": {"trigger": ref}}
    at = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=i)
    return {"case_id": case or f"c{i}", "message": f"m{i}", "shadow": shadow,
            "sent_reply": sent, "created_at": at}  # fmt: skip


def test_stage_cases_are_the_ones_its_challenger_shadowed_with_a_reply() -> None:
    frame = pd.DataFrame([
        _row(0, REF, "hi"), _row(1, "casepilot-trigger/1", "hi"), _row(2, REF, None),
        _row(3, None, "hi"), _row(4, REF, "hi", case="c0"), _row(5, REF, "hi"),
    ])  # fmt: skip
    rows = stage_shadow_cases(frame, "trigger", REF, limit=10)
    assert rows["message"].tolist() == ["m4", "m5"]  # c0 served twice keeps its latest request
    assert stage_shadow_cases(frame, "trigger", REF, limit=1)["message"].tolist() == ["m5"]
    assert stage_shadow_cases(frame, "topic", REF, limit=10).empty


def test_stage_decision_pairs_the_two_replayed_arms(tmp_path: Path) -> None:
    params = _params(tmp_path, promote={"min_cases": 10})
    cases = [f"c{i}" for i in range(20)]
    sent = ["your refund was sent today"] * 20
    champion = [s if i % 2 else None for i, s in enumerate(sent)]  # matches half
    better = stage_decision("trigger", cases, sent, champion, list(sent), *_rules(params))
    assert better.promote and better.challenger_only == 10 and better.champion_only == 0
    assert better.stage_deltas == {"trigger": pytest.approx(0.5)}
    worse = stage_decision("trigger", cases, sent, champion, [None] * 20, *_rules(params))
    assert not worse.promote and any("regresses" in r for r in worse.reasons)
    again = stage_decision("trigger", cases, sent, champion, list(sent), *_rules(params))
    assert evidence_key("trigger", REF, better) == evidence_key("trigger", REF, again)
    assert evidence_key("trigger", REF, better) != evidence_key("trigger", REF, worse)


def test_joint_cases_are_the_ones_every_challenger_shadowed_at_once() -> None:
    both = {"topic": "casepilot-topic/2", "retrieve": "casepilot-retrieve/2"}
    at = datetime(2026, 12, 1, tzinfo=UTC)
    frame = pd.DataFrame([
        {"case_id": "a", "message": "ma", "sent_reply": "r", "created_at": at,
         "shadow": {"versions": both}},
        {"case_id": "b", "message": "mb", "sent_reply": "r", "created_at": at,
         "shadow": {"versions": {**both, "retrieve": "casepilot-retrieve/1"}}},
        {"case_id": "c", "message": "mc", "sent_reply": None, "created_at": at,
         "shadow": {"versions": both}},
    ])  # fmt: skip
    assert joint_shadow_cases(frame, both, limit=10)["message"].tolist() == ["ma"]


def test_stages_that_win_only_together_form_a_group(tmp_path: Path) -> None:
    """A new topic: topic v2 names it but retrieve v1 has no conversation of it, retrieve v2 has
    them but topic v1 never names it — each alone changes nothing, together they answer. A third
    challenger that adds nothing given the others is left out of the group."""
    params = _params(tmp_path, promote={"min_cases": 10})
    cases = [f"c{i}" for i in range(30)]
    sent = ["your crypto payout is on its way"] * 30
    champion = [s if i < 5 else None for i, s in enumerate(sent)]
    joint = [s if i < 25 else None for i, s in enumerate(sent)]
    without = {"topic": list(champion), "retrieve": list(champion), "trigger": list(joint)}
    for stage in ("topic", "retrieve"):  # alone: no better than the champion
        alone = stage_decision(stage, cases, sent, champion, list(champion), *_rules(params))
        assert not alone.promote
    group, decision = joint_decision(
        ["trigger", "topic", "retrieve"], cases, sent, champion, joint, without, *_rules(params)
    )
    assert group == ["topic", "retrieve"]
    assert decision.promote and decision.challenger_only == 20 and decision.champion_only == 0
    assert decision.stage_deltas["topic"] == pytest.approx(20 / 30)
    # when the joint arm is no better than the champion there is no winning decision
    group, decision = joint_decision(
        ["topic", "retrieve"], cases, sent, champion, list(champion),
        {"topic": [None] * 30, "retrieve": [None] * 30}, *_rules(params),
    )  # fmt: skip
    assert group == ["topic", "retrieve"] and not decision.promote
    # one contributor is no group: its own decision stands
    group, _ = joint_decision(
        ["topic", "retrieve"], cases, sent, champion, joint,
        {"topic": list(champion), "retrieve": list(joint)}, *_rules(params),
    )  # fmt: skip
    assert group == []


def test_reviewer_channels_follow_the_pager(tmp_path: Path) -> None:
    hook = {"kind": "webhook", "url": "https://hooks.example.com/casepilot?team=ml"}
    assert apprise_urls(_params(tmp_path, monitor={"pager": hook}), env={}) == [
        "jsons://hooks.example.com/casepilot?team=ml"
    ]
    slack = {"kind": "slack", "url": "https://hooks.slack.com/services/T0/B0/XYZ"}
    extra = {"CASEPILOT_NOTIFY_URLS": "mailto://u:p@example.com json://127.0.0.1:9/x"}
    assert apprise_urls(_params(tmp_path, monitor={"pager": slack}), env=extra) == [
        slack["url"],
        "mailto://u:p@example.com",
        "json://127.0.0.1:9/x",
    ]
    duty = _params(tmp_path, monitor={"pager": {"kind": "pagerduty", "url": "https://x/y"}})
    with pytest.raises(ValueError, match="CASEPILOT_PAGERDUTY_ROUTING_KEY"):
        apprise_urls(duty, env={})
    assert apprise_urls(duty, env={"CASEPILOT_PAGERDUTY_ROUTING_KEY": "rk"}) == [
        "pagerduty://rk@rk"
    ]


def test_log_channel_writes_the_notification(tmp_path: Path) -> None:
    params = _params(tmp_path)
    result = notify_reviewers(params, "casepilot: review", "body", {"version": "2"}, env={})
    assert result.status == "sent" and result.channels == ("log",)
    line = (params.home.logs / "notifications.jsonl").read_text().splitlines()
    assert len(line) == 1 and '"version": "2"' in line[0]


def test_service_key_is_generated_once_into_a_0600_file(tmp_path: Path) -> None:
    from flows.platform.service_key import api_key_file, load_or_create_api_key, service_api_key

    params = _params(tmp_path)
    assert service_api_key(params, env={}) is None
    key = load_or_create_api_key(params, env={})
    assert len(key) >= 32 and load_or_create_api_key(params, env={}) == key
    assert stat.S_IMODE(api_key_file(params).stat().st_mode) == 0o600
    assert service_api_key(params, env={}) == key  # what the flows send
    given = load_or_create_api_key(params, env={"CASEPILOT_API_KEY": "from-env"})
    assert given == "from-env" and service_api_key(params, env={}) == "from-env"


def test_schedules_are_crons_unless_an_interval_overrides_them(tmp_path: Path) -> None:
    from datetime import timedelta as td

    from flows.lifecycle.deploy import flow_schedule

    params = _params(tmp_path, schedule={"monitor_interval_seconds": 30})
    assert flow_schedule(params, "retrain").cron == params.schedule.retrain_cron
    assert flow_schedule(params, "monitor").interval == td(seconds=30)
    assert flow_schedule(params, "promote").interval == td(seconds=60)
    assert flow_schedule(params, "rollback") is None


class _Replay:
    """The replayed cascade as a function of which challenger stages are swapped in: a new
    topic answered only when topic v2 *and* retrieve v2 serve (25 of 30 cases), retrieve v2 alone
    answers a few more (12), topic v2 alone fewer than the champion (3 vs 5), trigger v2 nothing."""

    def __init__(self, sent: list[str]) -> None:
        self.sent = sent

    def texts(self, swapped: dict, messages: list[str]) -> list[str | None]:
        if {"topic", "retrieve"} <= set(swapped):
            hits = 25
        else:
            hits = {"retrieve": 12, "topic": 3}.get(next(iter(set(swapped) - {"trigger"}), ""), 5)
        return [s if i < hits else None for i, s in enumerate(self.sent[: len(messages)])]

    def champion_texts(self, messages: list[str]) -> list[str | None]:
        return self.texts({}, messages)


def test_a_loser_is_judged_with_a_challenger_that_won_alone(tmp_path: Path) -> None:
    """Retrieve v2 wins alone and is requested alone; topic v2 loses alone (it names a topic
    retrieve v1 has no conversation of) but adds matches given retrieve v2: it is requested
    together with it. Trigger v2 adds nothing and keeps its own rejection."""
    from flows.lifecycle.evidence import Pending
    from flows.lifecycle.joint import joint_evidence as _joint_evidence
    from pipelines.registry.resolve import ResolvedStage

    params = _params(tmp_path, promote={"min_cases": 10})
    sent = ["your crypto payout is on its way"] * 30
    versions = {s: f"casepilot-{s}/2" for s in ("trigger", "topic", "retrieve")}
    at = datetime(2026, 12, 1, tzinfo=UTC)
    window = pd.DataFrame([
        {"case_id": f"c{i}", "message": f"m{i}", "sent_reply": reply, "created_at": at,
         "shadow": {"versions": versions}}
        for i, reply in enumerate(sent)
    ])  # fmt: skip
    replay = _Replay(sent)
    cases, messages = window["case_id"].tolist(), window["message"].tolist()
    pending = {}
    for stage in versions:
        challenger = ResolvedStage(
            stage, "challenger", f"casepilot-{stage}", "2", tmp_path, tmp_path
        )
        alone = stage_decision(
            stage, cases, sent, replay.champion_texts(messages),
            replay.texts({stage: challenger}, messages), *_rules(params),
        )  # fmt: skip
        pending[stage] = Pending(challenger, {}, "k", alone, requested=False)
    assert pending["retrieve"].decision.promote and not pending["topic"].decision.promote

    groups = _joint_evidence(params, pending, window, replay)
    assert set(groups) == {"topic"}  # retrieve keeps its request, trigger its own rejection
    decision, together = groups["topic"]
    assert decision.promote and together == {"retrieve": "2"}
    assert decision.challenger_only == 20 and "requested together with" in decision.reasons[0]
    # without retrieve v2 in the running, topic v2 loses and says why
    del pending["retrieve"]
    decision, together = _joint_evidence(params, pending, window, replay)["topic"]
    assert not decision.promote and together is None
    assert "together with the other challengers" in decision.reasons[-1]
