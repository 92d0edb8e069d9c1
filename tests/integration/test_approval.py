"""Approval-gated promotion, rollback and the refusal of unapproved champions, on real MLflow.

Registry state lives in a SQLite store under tmp; pages go to a real HTTP receiver on 127.0.0.1.
The reviewer's action in the MLflow UI is a model version tag, so the tests set it with the
same client call the UI makes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from monitoring.decisions.promotion import ShadowStats
from monitoring.decisions.rollback import auto_rollback
from pipelines.config import Params, params_from_mapping
from pipelines.home import Home
from pipelines.registry.approval import (
    APPROVED_AT,
    EVIDENCE,
    PromotionRefused,
    UnapprovedChampion,
    approval_record,
    approve_request,
    approve_version,
    request_promotion,
)
from pipelines.registry.approval_ledger import UNAUTHENTICATED
from pipelines.registry.register import (
    CHALLENGER,
    CHAMPION,
    PREVIOUS_CHAMPION,
    aliases_of,
    bootstrap_champion,
    promote_challenger,
    registry_client,
    resolve_cascade_dirs,
    resolve_stage,
)
from pipelines.registry.rollback import rollback_champion
from tests.integration import test_registry
from tests.integration.test_registry import _register, winning_decision
from tests.unit.test_paging import Receiver

PASSING = {"accuracy": 0.9}
TAG = "casepilot.approved_by"
# the registry tests' fixtures: a tiny stage folder, one SQLite store for the module
stage_dir, store = test_registry.stage_dir, test_registry.store


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.stop()


def make_params(tmp_path: Path, store_uri: str, pager_url: str | None = None) -> Params:
    tag = uuid.uuid4().hex[:8]
    pager = {"kind": "webhook", "url": pager_url, "retries": 1, "timeout_s": 5} if pager_url else {}
    raw = {
        "register": {"tracking_uri": store_uri, "model_prefix": f"a{tag}-",
                     "experiment": f"approval-{tag}", "gates": {"topic": {"accuracy": 0.8}}},
        "monitor": {"pager": pager},
        "promote": {"rollback_min_cases": 20, "mlflow_ui_url": "http://127.0.0.1:5999"},
    }  # fmt: skip
    return params_from_mapping(raw, home=Home(tmp_path / "home"), env={})


@pytest.fixture
def params(store: str, tmp_path: Path) -> Params:
    return make_params(tmp_path, store)


def _champion_and_challenger(params: Params, stage_dir: Path) -> tuple[str, str, str]:
    """v1 bootstrapped as champion, v2 the challenger; returns (name, v1, v2)."""
    first = _register(params, stage_dir, PASSING)
    bootstrap_champion(params, by="ops-lead", stages=["topic"])
    second = _register(params, stage_dir, PASSING)
    return first.name, first.version, second.version


def test_approval_record_reads_the_reviewer_tag_or_a_bootstrap() -> None:
    assert approval_record({}, TAG) is None
    assert approval_record({TAG: "  "}, TAG) is None
    assert approval_record({TAG: "jane", APPROVED_AT: "2026-01-01"}, TAG).by == "jane"
    boot = approval_record({"casepilot.bootstrap": "true", "casepilot.promoted_by": "ops"}, TAG)
    assert boot.bootstrap and boot.by == "ops"
    assert approval_record({"casepilot.bootstrap": "false"}, TAG) is None


def test_promotion_is_refused_without_an_approval(params, stage_dir) -> None:
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    request = request_promotion(params, "topic", winning_decision(params), requested_by="ops")
    assert (request.version, request.requested_by) == (v2, "ops")
    assert request.link == f"http://127.0.0.1:5999/#/models/{name}/versions/{v2}"
    client = registry_client(params)
    client.set_model_version_tag(name, v2, TAG, "jane.doe")  # a tag is not an approval
    with pytest.raises(
        PromotionRefused, match=f"not approved.*`casepilot approve topic --version {v2}`"
    ):
        promote_challenger(params, "topic")
    assert aliases_of(client, name) == {CHAMPION: v1, CHALLENGER: v2}


def test_a_request_reads_as_requested_only_once_it_is_whole(
    params, stage_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow writes a version's tags one at a time: whoever sees `requested=true` (the demo's
    reviewer, a person in the UI) must find the request run and evidence already there, also
    when a new request replaces an older one."""
    from mlflow import MlflowClient

    from pipelines.registry.approval import REQUEST_RUN, REQUESTED

    name, _, v2 = _champion_and_challenger(params, stage_dir)
    seen: list[tuple[str, dict[str, str]]] = []
    set_tag = MlflowClient.set_model_version_tag

    def watched(self, model, version, key, value) -> None:
        set_tag(self, model, version, key, value)
        seen.append((key, dict(self.get_model_version(model, version).tags)))

    monkeypatch.setattr(MlflowClient, "set_model_version_tag", watched)
    for cases in (60, 80):  # a first request, then one on new evidence
        seen.clear()
        request = request_promotion(
            params, "topic", winning_decision(params, cases=cases), requested_by="ops"
        )
        complete = [tags for _, tags in seen if tags.get(REQUESTED) == "true"]
        assert complete and all(t.get(REQUEST_RUN) == request.audit_run_id for t in complete), seen
        assert all(json.loads(t[EVIDENCE])["cases"] == cases for t in complete)
        assert seen[-1][0] == REQUESTED
    assert registry_client(params).get_model_version(name, v2).tags[REQUESTED] == "true"


def test_promotion_is_refused_with_approval_but_no_request(params, stage_dir) -> None:
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    registry_client(params).set_model_version_tag(name, v2, TAG, "jane.doe")  # the UI's action
    with pytest.raises(PromotionRefused, match="no promotion request"):
        promote_challenger(params, "topic")
    with pytest.raises(PromotionRefused, match="no promotion request"):
        approve_version(params, "topic", "jane.doe")
    assert aliases_of(registry_client(params), name)[CHAMPION] == v1


def test_an_approval_binds_the_request_its_evidence_and_other_people(params, stage_dir) -> None:
    from monitoring.decisions.promotion import decide_promotion

    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    tie = ShadowStats("x", {"a": True, "b": False})
    losing = decide_promotion(tie, tie, {}, params.promote)
    with pytest.raises(ValueError, match="does not support promoting topic"):
        request_promotion(params, "topic", losing)
    with pytest.raises(ValueError, match="already the champion"):
        request_promotion(params, "topic", winning_decision(params), version=v1)
    client = registry_client(params)
    request_promotion(params, "topic", winning_decision(params), requested_by="ops")
    approve_version(params, "topic", "early-bird")
    request_promotion(params, "topic", winning_decision(params, cases=80), requested_by="ops")
    assert TAG not in client.get_model_version(name, v2).tags  # approve this evidence, not older
    with pytest.raises(PromotionRefused, match="not approved"):
        promote_challenger(params, "topic", promoted_by="promote-flow")
    with pytest.raises(PromotionRefused, match="'ops' requested the promotion"):
        approve_version(params, "topic", "ops")
    approve_version(params, "topic", "promote-flow")
    with pytest.raises(PromotionRefused, match="'promote-flow' runs the promotion"):
        promote_challenger(params, "topic", promoted_by="promote-flow")
    approve_version(params, "topic", "jane.doe")
    client.set_model_version_tag(name, v2, EVIDENCE, '{"cases": 10000}')  # evidence edited
    with pytest.raises(PromotionRefused, match="does not match this version's evidence"):
        promote_challenger(params, "topic", promoted_by="promote-flow")
    assert aliases_of(client, name)[CHAMPION] == v1


def test_approved_promotion_moves_champion_and_records_the_audit(params, stage_dir) -> None:
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    decision = winning_decision(params)
    request_promotion(params, "topic", decision)
    client = registry_client(params)
    before = datetime.now(UTC).replace(microsecond=0)
    approval = approve_request(params, "topic", v2, reviewer="jane.doe")
    assert approval.store == UNAUTHENTICATED
    moved = promote_challenger(params, "topic", promoted_by="promote-flow")

    assert (moved.version, moved.previous, moved.approved_by) == (v2, v1, "jane.doe")
    assert aliases_of(client, name) == {CHAMPION: v2, PREVIOUS_CHAMPION: v1}
    tags = client.get_model_version(name, v2).tags
    assert datetime.fromisoformat(tags[APPROVED_AT]) >= before
    assert tags["casepilot.promoted_by"] == "promote-flow"
    assert tags["casepilot.promotion_run_id"] == moved.audit_run_id
    assert json.loads(tags["casepilot.promotion_evidence"])["cases"] == decision.cases
    assert client.get_model_version(name, v1).tags["casepilot.replaced_by"] == v2

    run = client.get_run(moved.audit_run_id)
    assert (
        run.info.experiment_id
        == client.get_experiment_by_name(params.register.experiment).experiment_id
    )
    assert run.data.tags["casepilot.event"] == "promotion"
    assert run.data.tags["casepilot.approved_by"] == "jane.doe"
    assert run.data.tags["casepilot.approval_store"] == UNAUTHENTICATED
    assert run.data.tags["casepilot.approval_run_id"] == approval.run_id
    assert run.data.tags["casepilot.previous_champion"] == v1
    assert run.data.metrics["p_value"] == pytest.approx(decision.p_value)
    assert run.data.metrics["challenger_match_rate"] == pytest.approx(0.9)
    evidence = json.loads(
        Path(
            client.download_artifacts(run.info.run_id, "evidence.json", str(params.home.root))
        ).read_text()
    )
    assert evidence["stage_delta.topic"] == pytest.approx(0.01)
    assert resolve_stage(params, "topic", CHAMPION).version == v2  # approved: loads


def test_rollback_restores_the_previous_champion_and_pages(
    store, stage_dir, tmp_path, receiver
) -> None:
    params = make_params(tmp_path, store, receiver.url)
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    with pytest.raises(LookupError, match="no previous champion"):
        rollback_champion(params, "topic", "too early")
    request_promotion(params, "topic", winning_decision(params))
    approve_version(params, "topic", "jane.doe")
    promote_challenger(params, "topic")

    done = rollback_champion(params, "topic", "match rate fell", link="http://127.0.0.1:8000/p")
    client = registry_client(params)
    assert aliases_of(client, name) == {CHAMPION: v1}  # v1 had no predecessor to keep
    assert (done.from_version, done.to_version) == (v2, v1)
    assert (
        client.get_model_version(name, v2).tags["casepilot.rolled_back_reason"] == "match rate fell"
    )
    assert client.get_model_version(name, v1).tags["casepilot.restored_from"] == v2
    assert client.get_run(done.audit_run_id).data.tags["casepilot.event"] == "rollback"

    assert done.page.status == "sent", done.page.reason
    (page,) = [r["json"] for r in receiver.requests]
    assert page["dedup_key"] == f"casepilot-rollback-{name}-v{v2}"
    assert page["links"] == [{"href": "http://127.0.0.1:8000/p", "text": "evidence"}]
    assert page["details"]["to_version"] == v1 and "match rate fell" in page["summary"]
    assert page["details"]["audit_run"].endswith(f"/runs/{done.audit_run_id}")
    assert resolve_stage(params, "topic", CHAMPION).version == v1


def test_auto_rollback_acts_only_on_a_real_regression(store, stage_dir, tmp_path, receiver) -> None:
    params = make_params(tmp_path, store, receiver.url)
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    request_promotion(params, "topic", winning_decision(params))
    approve_version(params, "topic", "jane.doe")
    promote_challenger(params, "topic")
    before = ShadowStats("champion", {f"b{i}": i % 10 < 8 for i in range(40)})  # 0.80
    steady = ShadowStats("champion", {f"a{i}": i % 10 < 8 for i in range(40)})  # 0.80
    worse = ShadowStats("champion", {f"a{i}": i % 10 < 5 for i in range(40)})  # 0.50

    kept = auto_rollback(params, "topic", (before, steady))
    assert not kept.decision.roll_back and kept.rollback is None
    assert aliases_of(registry_client(params), name)[CHAMPION] == v2 and not receiver.requests

    rolled = auto_rollback(params, "topic", (before, worse))
    assert rolled.decision.roll_back and rolled.rollback.to_version == v1
    assert aliases_of(registry_client(params), name)[CHAMPION] == v1
    (page,) = [r["json"] for r in receiver.requests]
    assert page["details"]["after_match_rate"] == pytest.approx(0.5)
    assert page["links"][0]["href"].startswith("http://127.0.0.1:5999/#/experiments/")


def test_an_unapproved_champion_is_refused_and_paged_once(
    store, stage_dir, tmp_path, receiver
) -> None:
    params = make_params(tmp_path, store, receiver.url)
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    registry_client(params).set_registered_model_alias(name, CHAMPION, v2)  # around the gate
    for _ in range(2):
        with pytest.raises(UnapprovedChampion, match=f"no approval record .*`{TAG}`") as err:
            resolve_stage(params, "topic", CHAMPION)
        assert "casepilot rollback topic" in str(err.value)
    assert not (params.home.cache / "mlflow-models" / "topic" / v2).exists()  # refused first
    assert resolve_stage(params, "topic", CHALLENGER).version == v2  # as challenger: fine
    registry_client(params).delete_registered_model_alias(name, CHALLENGER)
    with pytest.raises(UnapprovedChampion):
        resolve_cascade_dirs(params, CHALLENGER, stages=["topic"])  # falls back to champion
    (page,) = [r["json"] for r in receiver.requests]  # one page per version, not per attempt
    assert page["dedup_key"] == f"casepilot-unapproved-champion-{name}-v{v2}"
    assert page["links"][0]["href"].endswith(f"/#/models/{name}/versions/{v2}")


def test_cli_promote_refuses_without_approval_and_rolls_back(
    store, stage_dir, tmp_path, monkeypatch
) -> None:
    import yaml
    from typer.testing import CliRunner

    from flows.cli.main import app

    params = make_params(tmp_path, store)
    monkeypatch.setenv("CASEPILOT_HOME", str(params.home.root))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"register": params.register.model_dump()}))
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    runner = CliRunner()
    args = ["--stage", "topic", "--yes", "--params", str(params_file)]

    def said(result) -> str:  # Rich wraps long lines at the runner's width
        return " ".join(result.output.split())

    by = runner.invoke(app, ["promote", "--by", "me", *args])
    assert by.exit_code == 2 and "--by only names who bootstraps" in said(by)
    refused = runner.invoke(app, ["promote", *args])
    assert refused.exit_code == 1 and "no promotion request" in said(refused)
    request_promotion(params, "topic", winning_decision(params))
    refused = runner.invoke(app, ["promote", *args])
    assert refused.exit_code == 1 and f"casepilot approve topic --version {v2}" in said(refused)
    approve = ["approve", "topic", "--version", v2, "--yes", "--params", str(params_file)]
    approved = runner.invoke(app, [*approve, "--reviewer", "jane.doe"])
    assert approved.exit_code == 0, approved.output
    assert "approved by jane.doe (unauthenticated store)" in said(approved)
    assert "challenger match rate" in approved.output  # the evidence is shown first
    promoted = runner.invoke(app, ["promote", "--yes", "--params", str(params_file)])  # all
    assert promoted.exit_code == 0, promoted.output
    assert "jane.doe" in promoted.output
    assert aliases_of(registry_client(params), name)[CHAMPION] == v2

    rolled = runner.invoke(app, ["rollback", "topic", "--reason", "agents complain", "--yes",
                                 "--params", str(params_file)])  # fmt: skip
    assert rolled.exit_code == 0, rolled.output
    assert aliases_of(registry_client(params), name)[CHAMPION] == v1
    logged = [
        json.loads(line) for line in (params.home.logs / "pages.jsonl").read_text().splitlines()
    ]
    assert logged[-1]["dedup_key"] == f"casepilot-rollback-{name}-v{v2}"


def test_the_monitor_check_rolls_back_a_regressed_champion_once_and_pages(
    store, stage_dir, tmp_path, receiver
) -> None:
    from flows.lifecycle.rollback import check_rollbacks
    from tests.unit.test_promotion import REPLY, WRONG, log_served

    params = make_params(tmp_path, store, receiver.url)
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    assert check_rollbacks(params, stages=("topic",))["topic"]["status"] == "skipped"  # bootstrap
    request_promotion(params, "topic", winning_decision(params))
    approve_version(params, "topic", "jane.doe")
    promote_challenger(params, "topic")
    client = registry_client(params)
    promoted = datetime.fromisoformat(
        client.get_model_version(name, v2).tags["casepilot.promoted_at"]
    )
    at = lambda minutes: promoted + timedelta(minutes=minutes)  # noqa: E731
    before = [(f"b{i}", at(-50 + i), {"topic": v1}, REPLY if i % 10 else WRONG) for i in range(40)]
    log_served(params.prediction_log_url, before)  # v1: 0.90 before the promotion
    log_served(params.prediction_log_url,
               [(f"a{i}", at(1 + i), {"topic": v2}, WRONG) for i in range(10)])  # fmt: skip
    link = "http://127.0.0.1:8000/projects/p/snapshots/s"

    early = check_rollbacks(params, link=link, stages=("topic",))["topic"]
    assert early["status"] == "kept" and "need 20" in early["reason"]  # too few cases yet
    log_served(params.prediction_log_url,
               [(f"a{i}", at(1 + i), {"topic": v2}, REPLY if i % 2 else WRONG)
                for i in range(10, 40)])  # fmt: skip
    rolled = check_rollbacks(params, link=link, stages=("topic",))["topic"]
    assert rolled["status"] == "rolled back", rolled
    assert rolled["before_match_rate"] == pytest.approx(0.9) and rolled["after_cases"] == 40
    assert rolled["after_match_rate"] == pytest.approx(15 / 40) and rolled["to_version"] == v1
    assert aliases_of(client, name) == {CHAMPION: v1}
    assert client.get_model_version(name, v2).tags["casepilot.rolled_back_by"] == (
        "casepilot auto-rollback"
    )
    (page,) = [r["json"] for r in receiver.requests]
    assert page["links"] == [{"href": link, "text": "evidence"}]
    assert page["dedup_key"] == f"casepilot-rollback-{name}-v{v2}"
    assert page["details"]["after_match_rate"] == pytest.approx(15 / 40)

    again = check_rollbacks(params, link=link, stages=("topic",))["topic"]
    assert again["status"] == "skipped" and "bootstrap" in again["reason"]  # v1: nothing older
    assert aliases_of(client, name) == {CHAMPION: v1} and len(receiver.requests) == 1


def test_cli_bootstrap_refuses_a_version_that_failed_its_gates_unless_forced(
    store, stage_dir, tmp_path, monkeypatch
) -> None:
    import yaml
    from typer.testing import CliRunner

    from flows.cli.main import app

    params = make_params(tmp_path, store)
    monkeypatch.setenv("CASEPILOT_HOME", str(params.home.root))
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"register": params.register.model_dump()}))
    failing = _register(params, stage_dir, {"accuracy": 0.4})
    runner = CliRunner()
    args = ["promote", "--bootstrap", "--stage", "topic", "--yes", "--params", str(params_file)]

    refused = runner.invoke(app, args)
    said = " ".join(refused.output.split())
    assert refused.exit_code == 1, refused.output
    assert f"topic v{failing.version} failed its offline gates (accuracy: 0.4000 < 0.8)" in said
    assert "register.gates.topic" in said and "--bootstrap --force" in said
    client = registry_client(params)
    assert CHAMPION not in aliases_of(client, failing.name)
    assert runner.invoke(app, ["promote", "--force", "--yes", "--params", str(params_file)]
                         ).exit_code == 2  # --force never skips a reviewer  # fmt: skip

    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert "champion forced past failed offline gates" in " ".join(forced.output.split())
    assert aliases_of(client, failing.name)[CHAMPION] == failing.version
    tags = client.get_model_version(failing.name, failing.version).tags
    assert tags["casepilot.bootstrap_forced"] == "true"
    assert tags["casepilot.forced_gate_reasons"] == "accuracy: 0.4000 < 0.8"
    audit = client.get_run(tags["casepilot.promotion_run_id"])
    assert audit.data.tags["casepilot.bootstrap_forced"] == "true"
    assert resolve_stage(params, "topic", CHAMPION).version == failing.version  # it loads


def test_a_version_restored_by_the_monitor_is_not_rolled_back_again(
    store, stage_dir, tmp_path
) -> None:
    from flows.lifecycle.rollback import check_rollbacks
    from tests.unit.test_promotion import REPLY, WRONG, log_served

    params = make_params(tmp_path, store)
    name, v1, v2 = _champion_and_challenger(params, stage_dir)
    for _ in range(2):  # v2 over v1, then v3 over v2
        request_promotion(params, "topic", winning_decision(params))
        approve_version(params, "topic", "jane.doe")
        promoted = promote_challenger(params, "topic")
        if promoted.version == v2:
            _register(params, stage_dir, PASSING)
    v3, client = promoted.version, registry_client(params)
    stamp = client.get_model_version(name, v3).tags["casepilot.promoted_at"]
    at = lambda minutes: datetime.fromisoformat(stamp) + timedelta(minutes=minutes)  # noqa: E731
    served = [(f"b{i}", at(-30 + i), {"topic": v2}, REPLY) for i in range(25)]
    served += [(f"a{i}", at(1 + i), {"topic": v3}, WRONG) for i in range(25)]
    log_served(params.prediction_log_url, served)

    assert check_rollbacks(params, stages=("topic",))["topic"]["status"] == "rolled back"
    assert aliases_of(client, name) == {CHAMPION: v2, PREVIOUS_CHAMPION: v1}
    # v2 is the trusted version the rollback restored: it is not watched again, so the monitor
    # never walks on back to v1 by itself
    again = check_rollbacks(params, stages=("topic",))["topic"]
    assert again["status"] == "skipped" and "restored by a rollback" in again["reason"]
    assert aliases_of(client, name) == {CHAMPION: v2, PREVIOUS_CHAMPION: v1}
