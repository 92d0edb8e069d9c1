"""Reviewed correctness in the promotion decision: a match-rate winner that reviewers found worse
is rejected with the reviewed figures as the reason, and the figures are tagged on the version.

The reviewed day comes from the synthetic world with known truth (tests/review_world.py): the
sample is drawn from a served prediction log and labelled by an oracle from the truth (every
shadow suggestion rated wrong for the reviewed-worse challenger). The version lives in a real
SQLite MLflow registry; the decision is recorded by the `monitor` flow's own `record_decision`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.lifecycle.record import REJECTED, REJECTED_REASONS, record_decision
from monitoring.decisions.promotion import PromotionDecision
from monitoring.review.promotion import TAG_PREFIX, reviewed_decision, with_reviewed_evidence
from pipelines.config import Params, params_from_mapping
from pipelines.home import Home
from pipelines.registry.resolve import ResolvedStage
from pipelines.registry.store import registered_model_name, registry_client
from tests.review_world import reviewed_day

STAGE = "answer"
DAY = "2026-01-05"
# what the replay says: the challenger matches the agents' replies significantly more often
WINS = PromotionDecision(True, ("match rate up",), 60, 0.50, 0.70, 14, 2, 0.002)


@pytest.fixture
def params(home: Home) -> Params:
    return params_from_mapping(
        {"review": {"daily_size": 30, "lookback_hours": 24 * 3650}}, home=home, env={}
    )


def _challenger(params: Params, tmp_path: Path) -> ResolvedStage:
    """One registered version of the answer stage (a tiny logged artifact)."""
    client = registry_client(params)
    name = registered_model_name(params.register, STAGE)
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment("review-promotion"))
    client.log_text(run.info.run_id, "weights", "model/weights.txt")
    client.set_terminated(run.info.run_id)
    version = client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id)
    return ResolvedStage(STAGE, "challenger", name, str(version.version), tmp_path, tmp_path)


def test_no_reviewed_day_leaves_the_decision_alone(params: Params) -> None:
    assert with_reviewed_evidence(params, STAGE, WINS) == (WINS, {})


def test_reviewed_worse_challenger_is_rejected_with_the_reviewed_figures(
    params: Params, tmp_path: Path
) -> None:
    reviewed_day(params, DAY, shadow_wrong=True)
    challenger = _challenger(params, tmp_path)
    decision = reviewed_decision(params, STAGE, challenger.name, challenger.version, WINS)
    assert not decision.promote
    assert decision.reasons[0] == "match rate up"
    assert "worse where people checked" in decision.reasons[-1]

    outcome = record_decision(params, STAGE, challenger, decision)
    assert outcome["status"] == "rejected"
    assert "reviewed suggestion correct: challenger 0.000" in outcome["reason"]
    tags = registry_client(params).get_model_version(challenger.name, challenger.version).tags
    assert tags[REJECTED] == "true"
    assert "worse where people checked" in tags[REJECTED_REASONS]
    assert tags[f"{TAG_PREFIX}metric"] == "suggestion_correct"
    assert tags[f"{TAG_PREFIX}day"] == DAY and tags[f"{TAG_PREFIX}loses"] == "true"
    assert float(tags[f"{TAG_PREFIX}challenger"]) == 0.0
    assert float(tags[f"{TAG_PREFIX}champion"]) > 0.3
    assert float(tags[f"{TAG_PREFIX}difference_high"]) < 0
    assert int(tags[f"{TAG_PREFIX}cases"]) > 0


def test_reviewed_no_worse_challenger_keeps_its_match_rate_decision(params: Params) -> None:
    reviewed_day(params, DAY)
    decision, tags = with_reviewed_evidence(params, STAGE, WINS)
    assert decision == WINS  # the oracle's shadow is about as good: no veto
    assert tags[f"{TAG_PREFIX}loses"] == "false"
    assert float(tags[f"{TAG_PREFIX}difference_high"]) >= 0  # the interval is not below zero
