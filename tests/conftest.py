"""Shared test setup: every test run keeps its state in a temporary CASEPILOT_HOME."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.home import Home

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    # Before any test module imports a framework: telemetry off, offline hub, state out of ~.
    home = Home(Path(os.environ.get("CASEPILOT_TEST_HOME", "/tmp/casepilot-test-home")).resolve())
    os.environ["CASEPILOT_HOME"] = str(home.root)
    home.apply()


@pytest.fixture(autouse=True)
def _process_state_restored() -> Iterator[None]:
    """A `casepilot` command run in-process (Typer's CliRunner) sets the quiet switches in
    os.environ and adds log handlers (pipelines/quiet.py); the next test starts without them."""
    environ, root = dict(os.environ), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    os.environ.clear()
    os.environ.update(environ)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    """A fresh CASEPILOT_HOME for one test; a supervisord the test left in it is shut down."""
    from flows.platform import supervisor

    test_home = Home(tmp_path / "home").ensure()
    monkeypatch.setenv("CASEPILOT_HOME", str(test_home.root))
    yield test_home
    supervisor.shutdown(test_home)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public datasets beside the repo; skips when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (see ../shared/data/README.md)")
    return SHARED_DATA


def postgres_url(database: str = "test") -> str:
    """URL of the PostgreSQL server on 127.0.0.1:5432, or skip with the reason."""
    url = os.environ.get(
        "CASEPILOT_TEST_POSTGRES_URL", f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
    )
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=2):
            pass
    except OSError as err:
        pytest.skip(f"no PostgreSQL server reachable on 127.0.0.1:5432 ({err})")
    return url
