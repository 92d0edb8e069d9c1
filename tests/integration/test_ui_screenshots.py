"""The UIs render with data: headless Chromium on the Evidently dashboard and an MLflow model page.

Each page is loaded by Debian's `chromium --headless` with `--dump-dom` (the DOM after the
single-page app has run: asserted to hold the project's panels, or the model's name, version and
metric) and `--screenshot` (a PNG kept under the test's tmp dir, asserted not blank). Skips when
`/usr/bin/chromium` is missing (`make browser` installs it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flows.platform import stack
from flows.platform.services import free_port, start_mlflow_server, stop_mlflow_server
from monitoring.dashboard import PANELS, write_monitoring_run
from monitoring.drift import compute_drift, drift_frame_from_cases, drift_frame_from_window
from monitoring.online import online_metrics
from pipelines.config import Params, SynthConfig, params_from_mapping
from pipelines.data.synth import generate_world
from pipelines.home import Home
from tests.integration.test_registry import stage_dir  # noqa: F401 - the tiny stage folder fixture
from tests.unit.test_online import write_log

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="/usr/bin/chromium is missing: `make browser` installs Debian's chromium (as root)",
    ),
]


def _chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-dev-shm-usage", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--window-size=1400,1000",
        "--virtual-time-budget=20000", *mode, url,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=150)


def render(url: str, out: Path) -> str:
    """The page's DOM after its scripts ran; writes its screenshot to `out` (one browser run)."""
    result = _chromium(url, out.parent / "chromium-profile", "--dump-dom", f"--screenshot={out}")
    assert result.returncode == 0 and out.is_file(), result.stderr[-2000:]
    out.with_suffix(".html").write_text(result.stdout, encoding="utf-8")  # kept beside the PNG
    return result.stdout


def assert_not_blank(png: Path) -> None:
    """A rendered page has many colours and real contrast, unlike a blank or error screen."""
    import numpy as np
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1400, 1000)
        pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
    gray = pixels.mean(axis=2)
    assert gray.std() > 10, f"{png} looks blank (grey std {gray.std():.1f})"
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 50, f"{png} has only {colours} colours"


@pytest.fixture
def dashboard(home: Home, tmp_path: Path):
    """Three monitoring snapshots in the workspace, served by `evidently ui` on a free port."""
    params = params_from_mapping({"monitor": {"ui_port": free_port()}}, home=home, env={})
    world = generate_world(SynthConfig(cases_per_day=40), seed=3, days=2)
    reference = [case for batch in world.days for case in batch.cases]
    log = write_log(f"sqlite:///{tmp_path / 'predictions.db'}")
    window = log.window()
    log.close()
    online = online_metrics(window, params.monitor.match_threshold)
    drift = compute_drift(
        drift_frame_from_cases(reference),
        drift_frame_from_window(window),
        params.monitor,
        tracked=online.as_values(),
    )
    t0 = datetime.now(UTC) - timedelta(hours=3)  # recent: inside the dashboard's default range
    runs = [write_monitoring_run(params, drift, online, t0 + timedelta(hours=h)) for h in range(3)]
    port = params.monitor.ui_port
    command = [sys.executable, "-m", "evidently.cli", "ui", "--host", "127.0.0.1",
               "--port", str(port), "--workspace", str(home.evidently)]  # fmt: skip
    env = {**os.environ, **home.framework_env()}
    log = home.logs / "evidently-ui.log"
    ui = stack.launch("evidently-ui", command, env, log, f"http://127.0.0.1:{port}")
    try:
        stack.wait_healthy(ui, lambda: stack.http_ok(f"{ui.url}/api/version") is not None, 120)
        yield params, runs
    finally:
        assert stack.stop_group(ui) != "STILL RUNNING"


def test_evidently_dashboard_renders_the_monitors_panels(dashboard, tmp_path: Path) -> None:
    params, runs = dashboard
    png = tmp_path / "evidently-dashboard.png"
    dom = render(runs[-1].project_url, png)
    assert params.monitor.evidently_project in dom
    missing = [spec.title for spec in PANELS if spec.title not in dom]
    assert not missing, f"panels not rendered: {missing}"
    assert "<svg" in dom or "<canvas" in dom  # the plots themselves were drawn
    assert_not_blank(png)


@pytest.fixture
def mlflow_server(tmp_path: Path):
    params = params_from_mapping({}, home=Home(tmp_path / "server-home"), env={})
    info = start_mlflow_server(params, port=free_port(), timeout_s=150)
    try:
        yield info
    finally:
        stop_mlflow_server(params)


def test_mlflow_model_version_page_shows_the_registered_stage(
    mlflow_server,
    stage_dir: Path,  # noqa: F811 - the fixture imported from tests/integration/test_registry.py
    tmp_path: Path,
) -> None:
    from pipelines.registry.lineage import stage_lineage
    from pipelines.registry.register import register_stage

    params: Params = params_from_mapping(
        {"register": {"tracking_uri": mlflow_server.url, "gates": {"topic": {"accuracy": 0.8}}}},
        home=Home(tmp_path / "client-home"),
        env={},
    )
    lineage = stage_lineage(params, "topic", data_version="md5-ui", model_dir=stage_dir)
    version = register_stage(params, "topic", stage_dir, metrics={"accuracy": 0.875},
                             lineage=lineage)  # fmt: skip
    png = tmp_path / "mlflow-model-version.png"
    url = f"{mlflow_server.url}/#/models/{version.name}/versions/{version.version}"
    dom = render(url, png)
    assert version.name in dom
    assert f"Version {version.version}" in dom
    assert "metric.accuracy" in dom and "0.875" in dom  # the version's tags, as registered
    assert "challenger" in dom  # the gate passed: the alias is shown
    assert_not_blank(png)
