"""Review sampling and the design-based accuracy estimates, on a prediction log with known truth.

No Label Studio here: the labels come from the synthetic world's truth (`true_label`), so the
estimator is judged against the true accuracy of every logged prediction.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from monitoring.online import estimated_accuracy
from monitoring.review.estimate import (
    METRICS,
    indicators,
    label_free_calibration,
    ratio_estimate,
    reviewed_accuracy,
)
from monitoring.review.labels import ReviewLabel, agreement, labeled_cases, reviewed_frame
from monitoring.review.sample import allocate, draw_review_sample, strata_of
from monitoring.review.simulate import true_label, with_errors
from pipelines.config import ReviewConfig
from tests.review_world import served_log, world_cases

THRESHOLD = 0.8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    cases = world_cases(cases_per_day=150, days=2)
    url = f"sqlite:///{tmp_path_factory.mktemp('review') / 'predictions.db'}"
    log = served_log(cases, url)
    window = log.window()
    log.close()
    return {c.case_id: c for c in cases}, window


def oracle(sample: pd.DataFrame, truth: dict, reviewer: str = "oracle") -> list[ReviewLabel]:
    return [
        true_label(row, truth[row["case_id"]], reviewer, THRESHOLD)
        for row in sample.to_dict("records")
    ]


def test_allocation_and_inclusion_probabilities(world) -> None:
    truth, window = world
    cfg = ReviewConfig(daily_size=60)
    sample = draw_review_sample(window, cfg, day="2026-01-06")
    assert len(sample) == 60 and sample["request_id"].is_unique
    sizes = window.drop_duplicates("case_id").pipe(lambda f: len(f))
    assert sample.groupby("stratum")["stratum_size"].first().sum() == sizes
    for _, group in sample.groupby("stratum"):
        assert len(group) >= 2
        assert np.allclose(group["inclusion_prob"], len(group) / group["stratum_size"].iloc[0])
    # disagreements are oversampled (weight 3) relative to plain answers (weight 1)
    probs = sample.groupby("decision")["inclusion_prob"].mean()
    assert probs["disagreement"] > probs["answered"]
    assert all(
        s.split("|")[0] == d for s, d in zip(sample["stratum"], sample["decision"], strict=True)
    )
    assert sample["double_label"].sum() == round(0.2 * 60)
    again = draw_review_sample(window, cfg, day="2026-01-06")
    assert again["request_id"].tolist() == sample["request_id"].tolist()
    other = draw_review_sample(window, cfg, day="2026-01-07")
    assert other["request_id"].tolist() != sample["request_id"].tolist()


def test_allocation_edge_cases_and_topic_strata() -> None:
    assert allocate({"a": 1, "b": 50}, {"a": 1.0, "b": 1.0}, 10) == {"a": 1, "b": 9}
    assert allocate({"a": 3, "b": 3}, {"a": 1.0, "b": 1.0}, 100) == {"a": 3, "b": 3}
    frame = pd.DataFrame(
        {
            "decision": ["answered"] * 90 + ["abstained"] * 10,
            "champion_topic": ["card"] * 60 + ["fees"] * 30 + [None] * 10,
        }
    )
    strata = strata_of(frame, {"answered": 1.0, "abstained": 1.0}, n=10)
    # card expects 6 of 10 items and fees 3: own strata; the 10 abstentions (1 item) are pooled
    assert set(strata) == {"answered|card", "answered|fees", "abstained|*"}


def test_empty_window_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="serve traffic first"):
        draw_review_sample(pd.DataFrame(), ReviewConfig(), day="d")


@pytest.mark.slow  # ~60 s on 2 busy cores: 100 resamples of every metric
def test_interval_covers_the_true_accuracy_in_90_of_100_resamples(world) -> None:
    truth, window = world
    cfg = ReviewConfig(daily_size=60)
    population = draw_review_sample(window, cfg, day="all", size=len(window))
    assert (population["inclusion_prob"] == 1.0).all()
    full = reviewed_frame(population, oracle(population, truth))
    true = {
        role: {m: e.value for m, e in est.items()} for role, est in reviewed_accuracy(full).items()
    }
    label_free = estimated_accuracy(window)
    covered = {(role, m): 0 for role in true for m in METRICS}
    history: list[dict] = []
    raw_err, cal_err = {"trigger": [], "topic": []}, {"trigger": [], "topic": []}
    for i in range(100):
        sample = draw_review_sample(window, cfg, day=f"resample-{i}")
        estimates = reviewed_accuracy(reviewed_frame(sample, oracle(sample, truth)))
        for role, metrics in estimates.items():
            for name, estimate in metrics.items():
                covered[(role, name)] += estimate.covers(true[role][name])
        calibration = label_free_calibration(label_free, estimates["champion"], history[-10:])
        for stage, metric in (("trigger", "trigger_accuracy"), ("topic", "topic_accuracy")):
            raw_err[stage].append(abs(label_free[stage] - true["champion"][metric]))
            if history:
                cal_err[stage].append(abs(calibration[stage].calibrated - true["champion"][metric]))
        history.append(
            {
                "label_free": label_free,
                "reviewed": {m: e.value for m, e in estimates["champion"].items()},
            }
        )
    print(f"\ncoverage of 95% intervals in 100 resamples (n=60 of {len(window)}): {covered}")
    for stage in raw_err:
        print(
            f"label-free {stage}: |raw - true| {np.mean(raw_err[stage]):.3f}, "
            f"|calibrated - true| {np.mean(cal_err[stage]):.3f}"
        )
    assert min(covered.values()) >= 90, covered
    # the label-free topic estimate is biased (unanswerable messages that pass the trigger);
    # calibrating against reviewed accuracy removes most of that bias
    assert np.mean(cal_err["topic"]) < np.mean(raw_err["topic"])


def test_hajek_with_full_population_is_the_plain_mean(world) -> None:
    truth, window = world
    population = draw_review_sample(window, ReviewConfig(), day="all", size=len(window))
    full = reviewed_frame(population, oracle(population, truth))
    y, z = indicators(full, "champion")["topic_accuracy"]
    estimate = ratio_estimate(full, y, z)
    assert estimate.value == pytest.approx(y[z].mean())
    assert estimate.se == pytest.approx(0.0)  # a census has no sampling error


def test_agreement_and_labeled_cases() -> None:
    now = datetime(2026, 1, 6, tzinfo=UTC)
    sample = pd.DataFrame(
        [
            {
                "request_id": f"r{i}",
                "case_id": f"c{i}",
                "created_at": now,
                "message": f"m {i}",
                "sent_reply": "ok",
                "stratum": "answered",
                "stratum_size": 4,
                "stratum_sample": 4,
                "inclusion_prob": 1.0,
            }
            for i in range(4)
        ]
    )

    def label(i: int, who: str, answerable: bool, topic: str | None, rating: str) -> ReviewLabel:
        return ReviewLabel(f"r{i}", f"c{i}", who, now, answerable, topic, rating, None)

    labels = [
        label(0, "a", True, "card", "correct"),
        label(0, "b", True, "card", "correct"),
        label(1, "a", True, "card", "wrong"),
        label(1, "b", True, "payout", "wrong"),
        label(2, "a", False, None, "wrong"),
        label(2, "b", False, None, "usable"),
        label(3, "a", True, "payout", "correct"),
    ]
    result = agreement(labels)
    assert result.items == 3
    assert result.agreement_rate["topic"] == pytest.approx(2 / 3)
    assert result.agreement_rate["answerable"] == 1.0
    assert math.isnan(result.cohen_kappa["answerable"]) or result.cohen_kappa["answerable"] == 1.0
    assert result.cohen_kappa["champion_rating"] < 1.0
    cases, disputed = labeled_cases(sample, labels)
    assert disputed == ["r1"]  # reviewers disagree on the topic: held back from training
    assert sorted(c.case_id for c in cases) == ["c0", "c2", "c3"]
    assert {c.label_source for c in cases} == {"review"}
    assert next(c for c in cases if c.case_id == "c0").labeler == "a,b"
    assert next(c for c in cases if c.case_id == "c2").topic is None


def test_simulated_reviewer_errs_at_the_configured_rate(world) -> None:
    import random

    truth, window = world
    sample = draw_review_sample(window, ReviewConfig(daily_size=200), day="d")
    rng = random.Random(3)
    topics = sorted({c.topic for c in truth.values() if c.topic})
    exact = oracle(sample, truth)
    noisy = [with_errors(label, rng, 0.2, topics) for label in exact]
    flipped = np.mean([a.answerable != b.answerable for a, b in zip(exact, noisy, strict=True)])
    assert 0.12 < flipped < 0.28
    assert [with_errors(label, rng, 0.0, topics) for label in exact] == exact


def test_review_config_rejects_unknown_strata() -> None:
    with pytest.raises(ValueError, match="stratum_weights"):
        ReviewConfig(stratum_weights={"answerd": 1.0})


def test_server_command_line_keeps_secrets_out_of_argv(home) -> None:
    from flows.platform import review_server
    from pipelines.config import params_from_mapping

    params = params_from_mapping({"review": {"port": 18123}}, home=home, env={})
    command, env = review_server.start_command(params)
    creds = review_server.load_or_create_credentials(home, params.review.reviewers)
    assert command[command.index("--internal-host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "18123"
    assert creds.admin.password not in " ".join(command) and creds.admin.token not in command
    assert env["LABEL_STUDIO_USERNAME"] == creds.admin.email
    assert env["LABEL_STUDIO_USER_TOKEN"] == creds.admin.token and len(creds.admin.token) == 40
    assert env["COLLECT_ANALYTICS"] == "false" and env["LATEST_VERSION_CHECK"] == "false"
    secrets = review_server.secrets_file(home)
    assert secrets.stat().st_mode & 0o777 == 0o600
    assert set(creds.reviewers) == set(params.review.reviewers)
    inits = review_server.init_commands(params)
    assert [e["LABEL_STUDIO_USERNAME"] for _, e in inits] == [
        creds.reviewers[name].email for name in params.review.reviewers
    ]
    # a reviewer added in params gets an account; the stored ones are kept
    more = params_from_mapping({"review": {"reviewers": ["reviewer-1", "ana"]}}, home=home, env={})
    again = review_server.load_or_create_credentials(home, more.review.reviewers)
    assert again.admin == creds.admin and "ana" in again.reviewers
    assert again.reviewers["reviewer-1"] == creds.reviewers["reviewer-1"]


def test_review_run_lands_once_summarises_and_vetoes_a_reviewed_worse_challenger(home) -> None:
    from dataclasses import replace

    from monitoring.review.run import (
        describe,
        draw_day,
        land_batch,
        latest_values,
        load_samples,
        reviewed_evidence,
        reviewed_veto,
        summarise_day,
    )
    from pipelines.config import params_from_mapping
    from pipelines.data.contract import LabeledCase, read_jsonl

    params = params_from_mapping(
        {"review": {"daily_size": 30, "lookback_hours": 24 * 3650}}, home=home, env={}
    )
    cases = world_cases(cases_per_day=60, days=1)
    served_log(cases, params.prediction_log_url).close()
    day = "2026-01-05"
    sample = draw_day(params, day)
    labels = oracle(sample, {c.case_id: c for c in cases})
    path, landed, disputed = land_batch(params, load_samples(params), labels, "t1")
    assert landed == 30 and disputed == [] and path.parent == home.data / "incoming"
    assert {c.label_source for c in read_jsonl(path, LabeledCase)} == {"review"}
    assert land_batch(params, load_samples(params), labels, "t2")[1] == 0  # never twice
    entry = summarise_day(params, day, labels)
    assert entry["reviewed_items"] == 30 and entry["label_free"]["topic"] > 0
    assert "reviewed_champion_topic_accuracy_low" in latest_values(params)
    assert describe(entry).startswith("reviewed suggestion correct (n=30): champion ")
    evidence = reviewed_evidence(params, "answer")
    assert evidence["metric"] == "suggestion_correct" and reviewed_veto(evidence) is None
    worse = [replace(x, shadow_rating="wrong" if x.shadow_rating else None) for x in labels]
    summarise_day(params, day, worse)
    evidence = reviewed_evidence(params, "answer")
    assert evidence["loses"] and evidence["difference"]["high"] < 0
    assert "worse where people checked" in reviewed_veto(evidence)


def test_a_later_run_the_same_day_tops_the_sample_up_with_newer_traffic_only(home) -> None:
    from datetime import UTC, datetime, timedelta

    from monitoring.review.run import draw_day, load_samples, summarise_day
    from pipelines.config import params_from_mapping

    params = params_from_mapping(
        {"review": {"daily_size": 20, "lookback_hours": 24 * 3650}}, home=home, env={}
    )
    first_cases = world_cases(cases_per_day=40, days=1)
    served_log(first_cases, params.prediction_log_url).close()
    day = "2026-01-05"
    first = draw_day(params, day)
    assert len(first) == 20 and set(first["case_id"]) <= {c.case_id for c in first_cases}
    # nothing logged since: the day's sample stays as drawn
    assert draw_day(params, day).empty and len(load_samples(params)) == 20

    # later traffic (new cases, logged after the first draw) gets its own draw, appended
    now = datetime.now(UTC)
    later = [
        c.model_copy(update={"case_id": f"later-{c.case_id}", "created_at": now})
        for c in first_cases[:30]
    ]
    served_log(later, params.prediction_log_url, request_prefix="later").close()
    second = draw_day(params, day, until=datetime.now(UTC) + timedelta(hours=1))
    assert len(second) == 20 and all(c.startswith("later-") for c in second["case_id"])
    assert all(0 < p <= 1 for p in second["inclusion_prob"])
    whole = load_samples(params)
    assert len(whole) == 40 and set(first["request_id"]) <= set(whole["request_id"])
    # each draw is its own stratified sample: no stratum spans two draws, so the day's estimate
    # over both draws keeps exact weights and a valid interval
    assert not set(first["stratum"]) & set(second["stratum"])
    truth = {c.case_id: c for c in first_cases} | {c.case_id: c for c in later}
    entry = summarise_day(params, day, oracle(whole, truth))
    assert entry["reviewed_items"] == 40
    for estimate in entry["reviewed"]["champion"].values():
        if estimate["cases"]:
            assert 0 <= estimate["low"] <= estimate["value"] <= estimate["high"] <= 1, estimate
