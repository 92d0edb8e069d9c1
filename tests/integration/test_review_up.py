"""Label Studio in `casepilot up` / `down`: started by up's own code as a program of the home's
supervisord, healthy on 127.0.0.1, found again by a second `up`, stopped by `down`; skipped with
the fix named when its tool environment (`make label-studio`) is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from flows.platform import review_server, stack, supervisor
from flows.platform import up_studio as cli_up_studio
from flows.platform.services import free_port
from flows.platform.up import Stack, _print, down
from pipelines.config import load_params
from pipelines.home import Home

INSTALLED = (review_server.REPO / ".venv-labelstudio" / "bin" / "label-studio").is_file() or bool(
    os.environ.get(review_server.BIN_ENV)
)


def _stack(home: Home, tmp_path: Path, review: dict) -> Stack:
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"review": review}))
    params = load_params(params_file, home=home)
    env = {**os.environ, **home.framework_env()}
    return Stack(params, params_file, env, services=stack.read_state(home))


def test_up_skips_label_studio_with_the_fix_when_it_is_missing_or_off(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv(review_server.BIN_ENV, str(tmp_path / "nowhere" / "label-studio"))
    st = _stack(home, tmp_path, {"port": free_port()})
    assert cli_up_studio.start(st) is None
    assert st.status["label-studio"].startswith("skipped: Label Studio is not installed at ")
    assert "run `make label-studio`" in st.status["label-studio"]
    assert stack.read_state(home) == {}  # nothing recorded, nothing for `down` to stop
    _print(st)
    printed = " ".join(capsys.readouterr().out.split())
    assert "label-studio skipped: Label Studio is not installed" in printed
    off = _stack(home, tmp_path, {"start_with_up": False})
    assert cli_up_studio.start(off) is None
    assert off.status["label-studio"].startswith("skipped: review.start_with_up is false")


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.skipif(not INSTALLED, reason="Label Studio is not installed: run `make label-studio`")
def test_up_starts_label_studio_records_it_and_down_stops_it(
    home: Home, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    port = free_port()
    st = _stack(home, tmp_path, {"port": port, "reviewers": ["reviewer-1"]})
    service = cli_up_studio.start(st)
    try:
        assert service is not None and service.url == f"http://127.0.0.1:{port}"
        assert stack.read_state(home) == {"label-studio": service}  # `down` will find it
        assert service.pid == service.pgid and stack.is_running(service)
        timeout_s = st.params.review.startup_timeout_s
        assert stack.wait_healthy(service, cli_up_studio.health_check(service), timeout_s)
        assert str(review_server.secrets_file(home)) in st.status["label-studio users"]
        # the admin and the reviewer sign in with the tokens from the secrets file
        from flows.lifecycle.review import studio_client

        for who in (None, "reviewer-1"):
            user = studio_client(st.params, who).users.whoami()
            assert user.email.startswith(who or "admin")
        # `up` again finds it running and starts nothing
        again = _stack(home, tmp_path, {"port": port, "reviewers": ["reviewer-1"]})
        assert cli_up_studio.start(again) == service
        assert again.status["label-studio"] == "already running"

        down(st.params_file)
        assert "label-studio: stopped in" in capsys.readouterr().out
        assert not stack.is_ours(service)
        assert not supervisor.running(home) and stack.port_free(port)
    finally:  # a failed assertion above: still stop what this test started
        supervisor.shutdown(home)
