"""Fast checks of the service's reliability parts, without a server (issue 13).

The prediction log (pending shadow rows, SQL NULL, lost on restart, old tables), the writer's
commit futures, the challenger loading apart from the champion, the MLflow store check, the
API key comparison, the error-log filter, bounded metric labels and signal forwarding.
"""

from __future__ import annotations

import concurrent.futures
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel, StrictBool, ValidationError

from bentos.reload import Reloader, StageCache
from bentos.sources import CHALLENGER, CHAMPION, FolderSource, StoreMissing, StoreReplaced
from monitoring.log.store import (
    SHADOW_LOST_ON_RESTART,
    PredictionLog,
    ShadowUpdate,
)
from monitoring.log.writer import BufferedPredictionWriter, WriterFull
from pipelines.data.contract import STAGES, PredictionRecord, Suggestion

REPO = Path(__file__).resolve().parents[2]
CARD = "4111 1111 1111 1111"


def _record(i: int) -> PredictionRecord:
    champion = Suggestion(
        text=f"reply {i}", topic="payouts", versions={"trigger": "1"}, latency_ms=1.0
    )
    return PredictionRecord(
        request_id=f"r{i}",
        case_id=f"c{i}",
        created_at=datetime.now(UTC),
        message=f"message {i}",
        champion=champion,
        latency_ms=1.0,
    )


def _raw(log: PredictionLog, sql: str) -> list[tuple]:
    with log.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.text(sql))]


def test_pending_row_gets_its_shadow_later_and_missing_shadow_is_sql_null(tmp_path) -> None:
    log = PredictionLog.from_url(f"sqlite:///{tmp_path / 'log.db'}")
    assert log.write([_record(1), _record(2), _record(3)], shadow_pending=True) == 3
    assert _raw(log, "SELECT count(*) FROM predictions WHERE shadow_status='pending'") == [(3,)]
    shadow = Suggestion(text="shadow 1", versions={"trigger": "2"}, latency_ms=1.0)
    changed = log.update_shadows(
        [
            ShadowUpdate("r1", "ok", shadow),
            ShadowUpdate("r2", "timeout", None, "shadow timed out after 5 s"),
        ]
    )
    assert changed == 2
    rows = dict(
        (r[0], r[1:])
        for r in _raw(
            log,
            "SELECT request_id, shadow IS NULL, typeof(shadow), shadow_status, shadow_error "
            "FROM predictions",
        )
    )
    assert rows["r1"][0] == 0 and rows["r1"][2] == "ok"
    assert rows["r2"] == (1, "null", "timeout", "shadow timed out after 5 s")  # SQL NULL
    assert rows["r3"][0] == 1 and rows["r3"][2] == "pending"
    frame = log.window().set_index("request_id")
    assert frame.loc["r1", "shadow"]["text"] == "shadow 1" and frame.loc["r2", "shadow"] is None
    # a restart: what was still pending is marked lost, with the reason
    assert log.mark_pending_lost() == 1
    assert _raw(
        log, "SELECT shadow_status, shadow_error FROM predictions WHERE request_id='r3'"
    ) == [("lost", SHADOW_LOST_ON_RESTART)]
    assert log.mark_pending_lost() == 0
    log.close()


def test_an_older_log_table_gains_the_new_column(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    log = PredictionLog.from_url(url)
    with log.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE predictions DROP COLUMN shadow_status"))
    log.close()
    reopened = PredictionLog.from_url(url)
    assert reopened.write([_record(1)], shadow_pending=True) == 1
    assert _raw(reopened, "SELECT shadow_status FROM predictions") == [("pending",)]
    reopened.close()


def test_writer_future_resolves_only_after_the_commit(tmp_path) -> None:
    log = PredictionLog.from_url(f"sqlite:///{tmp_path / 'log.db'}")
    blocker = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    with BufferedPredictionWriter(log, flush_interval_s=0.01, shadow_pending=True) as writer:
        with blocker.connect() as conn:
            conn.exec_driver_sql("BEGIN EXCLUSIVE")  # the log is "down": writes wait
            done = writer.submit(_record(1))
            with pytest.raises(concurrent.futures.TimeoutError):  # not while the lock is held
                done.result(timeout=0.3)
            assert log.count() == 0
            conn.exec_driver_sql("ROLLBACK")
        assert done.result(timeout=30) is True
        assert log.count() == 1  # committed when the future said so
        update = writer.submit(ShadowUpdate("r1", "ok", Suggestion(text="s", latency_ms=1.0)))
        assert update.result(timeout=30) is True
    assert _raw(log, "SELECT shadow_status FROM predictions") == [("ok",)]
    blocker.dispose()
    log.close()


def test_writer_full_queue_refuses_after_the_timeout(tmp_path) -> None:
    log = PredictionLog.from_url(f"sqlite:///{tmp_path / 'log.db'}")
    blocker = sa.create_engine(f"sqlite:///{tmp_path / 'log.db'}")
    writer = BufferedPredictionWriter(log, max_batch=1, flush_interval_s=0.01, queue_size=1)
    with blocker.connect() as conn:
        conn.exec_driver_sql("BEGIN EXCLUSIVE")
        first = writer.submit(_record(1))  # taken by the writer thread, which now waits
        deadline = time.monotonic() + 10
        while writer._queue.qsize() and time.monotonic() < deadline:
            time.sleep(0.01)
        writer.submit(_record(2))  # fills the queue
        started = time.monotonic()
        with pytest.raises(WriterFull, match="queue full"):
            writer.submit(_record(3), timeout=0.2)
        assert 0.15 < time.monotonic() - started < 5
        conn.exec_driver_sql("ROLLBACK")
    assert first.result(timeout=30)
    writer.close()
    assert writer.stats().submitted == 2 and log.count() == 2
    blocker.dispose()
    log.close()


# ---------------------------------------------------------------- reload


def _stage_dir(root: Path, alias: str, stage: str, version: str) -> None:
    folder = root / alias / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stage.json").write_text(json.dumps({"version": version}))
    (folder / "weights.txt").write_text("ok")


def _load(stage: str, folder: Path) -> str:
    """Stands in for a stage model: fails like a real loader on a corrupt weights file."""
    if (folder / "weights.txt").read_text() != "ok":
        raise ValueError(f"{folder / 'weights.txt'}: corrupt weights")
    return f"{stage}@{folder.name}"


def test_a_broken_challenger_leaves_the_champion_serving(tmp_path) -> None:
    for stage in STAGES:
        _stage_dir(tmp_path, CHAMPION, stage, "1")
    _stage_dir(tmp_path, CHALLENGER, "trigger", "2")
    (tmp_path / CHALLENGER / "trigger" / "weights.txt").write_text("\x00garbage")
    events: list[str] = []
    reloader = Reloader(
        FolderSource(tmp_path),
        StageCache(_load),
        dict.fromkeys(STAGES, True),
        on_reload=events.append,
    )
    assert reloader.check()
    assert reloader.current.champion.versions["trigger"] == "1"
    assert reloader.current.shadow is None
    assert "corrupt weights" in reloader.shadow_error and "challenger" in reloader.shadow_error
    assert events == ["challenger_failed", "initial"]
    assert reloader.check() is False  # nothing changed: no swap, still reported
    assert reloader.shadow_error is not None
    # the challenger is fixed: the next check shadows it
    (tmp_path / CHALLENGER / "trigger" / "weights.txt").write_text("ok")
    assert reloader.check()
    assert reloader.current.shadow.versions["trigger"] == "2" and reloader.shadow_error is None
    # a corrupt champion: the previous models keep serving, the error is reported
    serving = reloader.current
    (tmp_path / CHAMPION / "topic" / "stage.json").write_text(json.dumps({"version": "9"}))
    (tmp_path / CHAMPION / "topic" / "weights.txt").write_text("bad")
    assert reloader.check() is False and reloader.current is serving
    assert "corrupt weights" in reloader.last_error


def test_a_missing_mlflow_store_fails_the_reload_and_a_replaced_one_is_reported(tmp_path) -> None:
    from bentos.sources import RegistrySource
    from pipelines.config import params_from_mapping
    from pipelines.home import Home

    home = Home(tmp_path / "home").ensure()
    params = params_from_mapping({}, home=home, env={})
    store = Path(params.mlflow_tracking_uri.removeprefix("sqlite:///"))
    source = RegistrySource(params)
    with pytest.raises(StoreMissing, match="not creating an empty one"):
        source.check_store()
    assert not store.exists()  # not silently created
    store.write_bytes(b"first")
    source.check_store()
    assert source.store_replaced is None
    replacement = store.with_name("new.db")
    replacement.write_bytes(b"second")
    os.replace(replacement, store)
    with pytest.raises(StoreReplaced, match="restart the service"):
        source.check_store()
    assert source.store_replaced and str(store) in source.store_replaced


MLFLOW_HTTP = (
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
)


def test_an_unreachable_mlflow_server_fails_the_reload_within_seconds(
    tmp_path, monkeypatch
) -> None:
    """MLflow's default retries hold a refused request ~4 minutes; the service's give up fast."""
    from bentos.sources import RegistrySource
    from flows.platform.services import free_port
    from pipelines.config import params_from_mapping
    from pipelines.home import Home

    for key in MLFLOW_HTTP:
        monkeypatch.delenv(key, raising=False)  # restored after the test
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    params = params_from_mapping(
        {"register": {"tracking_uri": uri}}, home=Home(tmp_path / "home").ensure(), env={}
    )
    source = RegistrySource(params)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"
    started = time.monotonic()
    with pytest.raises(Exception, match="Max retries exceeded"):
        source.resolve("champion")
    assert time.monotonic() - started < 20
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")  # an operator's value wins
    RegistrySource(params)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"


# ---------------------------------------------------------------- guard, logs, metrics


def test_api_key_is_compared_in_constant_time(monkeypatch) -> None:
    """Right key passes, wrong ones fail; the comparison goes through hmac.compare_digest."""
    from bentos.guard import GuardMiddleware

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    monkeypatch.setenv("TEST_KEY", "s3cret-key")

    def auth(key: str) -> tuple | None:
        scope = {"headers": [(b"x-api-key", key.encode("latin-1"))]}
        return GuardMiddleware._auth(scope, "TEST_KEY")

    assert auth("s3cret-key") is None
    assert auth("s3cret-kez")[0] == 403 and auth("s")[0] == 403 and auth("é")[0] == 403
    assert calls and all(b == b"s3cret-key" for _, b in calls)
    assert len(calls) == 4


class _Body(BaseModel):
    message: int
    used_suggestion: StrictBool


def test_rejected_requests_log_one_warning_line_without_the_input() -> None:
    from bentos.surfaces import QuietClientErrors

    try:
        _Body.model_validate({"message": f"my card is {CARD}", "used_suggestion": "yes"})
    except ValidationError:
        record = logging.LogRecord(
            "bentoml._internal.server.http_app",
            logging.ERROR,
            __file__,
            1,
            "Exception on %s [%s]",
            ("/suggest", "POST"),
            sys.exc_info(),
        )
    assert QuietClientErrors().filter(record)
    text = logging.Formatter("%(levelname)s %(message)s").format(record)
    assert text.startswith("WARNING rejected request to /suggest: 2 validation error(s)")
    assert "message" in text and "used_suggestion" in text
    assert CARD not in text and "\n" not in text and "input_value" not in text
    server_error = logging.LogRecord(
        "x", logging.ERROR, __file__, 1, "boom", (), (RuntimeError, RuntimeError("x"), None)
    )
    assert QuietClientErrors().filter(server_error) and server_error.levelno == logging.ERROR


def test_unknown_endpoints_share_one_metric_label_set() -> None:
    from bentos.surfaces import OTHER_ENDPOINT, bounded_metrics

    lines = ['bentoml_service_request_total{endpoint="/suggest",http_response_code="200"} 3.0']
    for i in range(300):
        lines.append(
            f'bentoml_service_request_total{{endpoint="/x{i}",http_response_code="404"}} 1.0'
        )
        lines.append(
            f'bentoml_service_request_duration_seconds_bucket{{endpoint="/x{i}",le="0.1"}} 1.0'
        )
    out = bounded_metrics("# HELP x\n" + "\n".join(lines))
    assert out.splitlines() == [
        "# HELP x",
        'bentoml_service_request_total{endpoint="/suggest",http_response_code="200"} 3.0',
        f'bentoml_service_request_total{{endpoint="{OTHER_ENDPOINT}",http_response_code="404"}}'
        " 300.0",
        f'bentoml_service_request_duration_seconds_bucket{{endpoint="{OTHER_ENDPOINT}",le="0.1"}}'
        " 300.0",
    ]


@pytest.mark.slow  # loads the Presidio engine (~10-30 s)
def test_case_ids_with_pii_are_stored_as_a_stable_hash() -> None:
    from bentos.records import stored_case_id

    assert stored_case_id("d3-0042") == "d3-0042"
    hashed = stored_case_id("jane.doe@example.com")
    assert hashed.startswith("pii-sha256:") and "jane" not in hashed
    assert stored_case_id("jane.doe@example.com") == hashed != stored_case_id("joe@example.com")


def test_serve_forwards_sigterm_to_the_whole_process_group(tmp_path) -> None:
    """The wrapper's child and grandchild (a server and its worker) both stop on SIGTERM."""
    pids = tmp_path / "pids"
    child = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{worker.pid}}")
        time.sleep(120)
        """
    )
    wrapper = textwrap.dedent(
        f"""
        import sys
        from flows.cli.serve import run_forwarding_signals
        command = [sys.executable, "-c", {child!r}]
        sys.exit(run_forwarding_signals(command, dict(__import__("os").environ)))
        """
    )
    process = subprocess.Popen([sys.executable, "-c", wrapper], cwd=REPO)
    deadline = time.monotonic() + 30
    while not (pids.exists() and len(pids.read_text().split()) == 2):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)
    server, worker = map(int, pids.read_text().split())
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{p}").exists() and "Z" not in _state(p) for p in (server, worker)):
        assert time.monotonic() < deadline, "server or its worker still running"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except (FileNotFoundError, IndexError):
        return "Z"


def test_only_bentomls_own_port_race_counts_as_a_lost_race(tmp_path: Path) -> None:
    """The test servers start `bentoml serve` again only after circus lost its reserved port."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from service_harness import lost_port_race

    log = tmp_path / "server.log"
    assert not lost_port_race(log)  # no log yet
    log.write_text("Traceback ...\nValueError: models folder is empty\n")
    assert not lost_port_race(log)  # any other exit is a real failure
    size = log.stat().st_size
    with log.open("a") as out:
        out.write("zmq.error.ZMQError: Address already in use (addr='tcp://127.0.0.1:54567')\n")
    assert lost_port_race(log) and lost_port_race(log, since=size)
    assert not lost_port_race(log, since=log.stat().st_size)  # only output after `since` counts
