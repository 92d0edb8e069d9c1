"""What a reviewer sees before `casepilot approve`: the version page with the request's evidence.

Headless Chromium renders the MLflow UI's model version page after a real promotion request
(the helpers and skip rules of tests/integration/test_ui_screenshots.py); the README's screenshot
(docs/approval-request.png) is this test's PNG.
"""

from __future__ import annotations

from pathlib import Path

from flows.platform.services import free_port, start_mlflow_server, stop_mlflow_server
from pipelines.config import params_from_mapping
from pipelines.home import Home
from pipelines.registry.approval import request_promotion
from pipelines.registry.register import bootstrap_champion
from tests.integration.test_approval_auth import STAGE, _new_version
from tests.integration.test_registry import winning_decision
from tests.integration.test_ui_screenshots import assert_not_blank, pytestmark, render  # noqa: F401 - slow, skipif


def test_the_version_page_shows_the_request_its_evidence_and_how_to_approve(
    tmp_path: Path,
) -> None:
    server_params = params_from_mapping({}, home=Home(tmp_path / "server-home"), env={})
    info = start_mlflow_server(server_params, port=free_port(), timeout_s=150)
    try:
        params = params_from_mapping(
            {"register": {"tracking_uri": info.url}}, home=Home(tmp_path / "client"), env={}
        )
        _new_version(params, challenger=False)
        bootstrap_champion(params, by="ops", stages=[STAGE])
        version = _new_version(params)
        request = request_promotion(params, STAGE, winning_decision(params), requested_by="ops")
        png = tmp_path / "approval-request.png"
        dom = render(request.link, png)
    finally:
        stop_mlflow_server(server_params)
    assert f"Version {version}" in dom and "challenger" in dom
    for shown in ("casepilot.promotion_requested_by", "casepilot.evidence.challenger_match_rate",
                  "casepilot.evidence_sha256", request.evidence_sha256,
                  f"casepilot approve {STAGE} --version {version}"):  # fmt: skip
        assert shown in dom, f"{shown!r} is not on the version page"
    assert_not_blank(png)
