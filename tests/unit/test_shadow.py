"""The service's pure parts: shadow runner outcomes, micro-batching, alias folders, reload swaps."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bentos.batching import MicroBatcher
from bentos.inflight import InFlight
from bentos.reload import Reloader, shadow_refs
from bentos.shadow import ShadowJob, ShadowResult, ShadowRunner
from bentos.sources import FolderSource, StageRef
from pipelines.data.contract import STAGES, Suggestion

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _suggestion(text: str | None = "hi") -> Suggestion:
    return Suggestion(text=text, abstain_reason=None if text else "trigger: low", latency_ms=1.0)


def _job(i: int) -> ShadowJob:
    return ShadowJob(f"r{i}", f"c{i}", f"message {i}", (), _suggestion(), 1.0, NOW)


def _runner(run_batch, **kw) -> tuple[ShadowRunner, list[ShadowResult]]:
    results: list[ShadowResult] = []
    settings = {"timeout_s": 2.0, "queue_size": 16} | kw
    return ShadowRunner(run_batch, results.append, **settings), results


def test_every_job_is_delivered_once_with_the_challenger_output() -> None:
    runner, results = _runner(lambda jobs: [_suggestion(j.message.upper()) for j in jobs])
    for i in range(10):
        assert runner.submit(_job(i))
    assert runner.drain(timeout=10)
    runner.close()
    assert sorted(r.job.request_id for r in results) == sorted(f"r{i}" for i in range(10))
    assert all(r.outcome == "ok" and r.suggestion.text == r.job.message.upper() for r in results)


def test_crash_is_reported_not_raised() -> None:
    def crash(jobs):
        raise RuntimeError("boom")

    runner, results = _runner(crash)
    runner.submit(_job(1))
    assert runner.drain(timeout=10)
    runner.close()
    assert [(r.outcome, r.error) for r in results] == [("error", "RuntimeError: boom")]


def test_hung_challenger_times_out_and_later_jobs_run_on_a_new_thread() -> None:
    release = threading.Event()

    def run(jobs):
        if jobs[0].request_id == "r0":
            release.wait(30)
        return [_suggestion() for _ in jobs]

    runner, results = _runner(run, timeout_s=0.2, max_hung=1)
    runner.submit(_job(0))
    assert runner.drain(timeout=10)
    runner.submit(_job(1))  # one thread is still hung: max_hung=1 pauses shadowing
    assert runner.drain(timeout=10)
    release.set()
    runner._hung[0].result(timeout=10)  # the stuck run returns; its result is discarded
    runner.submit(_job(2))
    assert runner.drain(timeout=10)
    runner.close()
    assert [r.outcome for r in results] == ["timeout", "paused", "ok"]
    assert results[0].error == "shadow timed out after 0.2 s"


def _poll(condition, timeout: float = 10.0) -> bool:
    """True as soon as `condition()` holds; False after `timeout` (bounded, no fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)  # poll interval, bounded by the deadline above
    return condition()


def test_full_queue_sheds_the_shadow_but_still_delivers_the_job() -> None:
    gate = threading.Event()
    runner, results = _runner(
        lambda jobs: gate.wait(10) and [_suggestion() for _ in jobs],
        queue_size=1,
        max_batch=1,
        timeout_s=20,
    )
    accepted = [runner.submit(_job(i)) for i in range(5)]
    gate.set()
    assert runner.drain(timeout=20)
    runner.close()
    assert accepted.count(False) >= 3  # one running, one queued, the rest shed
    assert sorted(r.job.request_id for r in results) == [f"r{i}" for i in range(5)]
    assert {r.outcome for r in results} == {"ok", "shed"}
    assert runner.stats()["shed"] == accepted.count(False)


def test_shadow_yields_while_the_champion_is_busy_and_runs_once_it_is_idle() -> None:
    in_flight, ran = InFlight(), []
    runner, results = _runner(
        lambda jobs: ran.extend(j.request_id for j in jobs) or [_suggestion() for _ in jobs],
        in_flight=in_flight,
        quiet_s=0.0,
    )
    with in_flight.track():  # a champion request in flight
        for i in range(3):
            assert runner.submit(_job(i))
        # the dispatcher holds the first job back for the champion instead of running it
        assert _poll(lambda: runner.stats()["yielding"] == 1 and in_flight.waiting == 1)
        assert ran == [] and results == []
    assert runner.drain(timeout=10)  # idle again: the queued shadow work runs
    runner.close()
    assert sorted(ran) == ["r0", "r1", "r2"]
    assert [r.outcome for r in results] == ["ok"] * 3


def test_sustained_champion_load_sheds_past_the_queue_and_counts_it() -> None:
    in_flight, results, threads = InFlight(), [], []

    def on_done(result: ShadowResult) -> None:
        threads.append(threading.get_ident())
        results.append(result)

    runner = ShadowRunner(
        lambda jobs: [_suggestion() for _ in jobs],
        on_done,
        timeout_s=2.0,
        queue_size=2,
        in_flight=in_flight,
        quiet_s=0.0,
    )
    with in_flight.track():
        assert runner.submit(_job(0))
        assert _poll(lambda: runner.stats()["yielding"] == 1)  # r0 is held by the dispatcher
        accepted = [runner.submit(_job(i)) for i in range(1, 6)]
        assert accepted == [True, True, False, False, False]  # two wait in the queue
        assert _poll(lambda: len(results) == 3)
        assert [r.job.request_id for r in results] == ["r3", "r4", "r5"]
        assert {r.outcome for r in results} == {"shed"} and all(
            r.suggestion is None for r in results
        )
        assert all("shadow shed: the champion was busy" in r.error for r in results)
        # shed records are written off the request path: never on the submitting thread
        assert threading.get_ident() not in threads
    assert runner.drain(timeout=10)
    runner.close()
    stats = runner.stats()
    assert stats["shed"] == 3 and stats["ok"] == 3 and stats["done"] == stats["submitted"] == 6


def test_in_flight_waits_for_the_quiet_period_after_the_last_request() -> None:
    in_flight, returned = InFlight(), []
    quiet_s = 0.15
    with in_flight.track():
        waiter = threading.Thread(
            target=lambda: returned.append(
                (in_flight.wait_quiet(quiet_s, timeout=30), time.monotonic())
            )
        )
        waiter.start()
        assert _poll(lambda: in_flight.waiting == 1)
        assert in_flight.busy and returned == []
    idle_at = time.monotonic()
    waiter.join(30)
    ((ok, at),) = returned
    assert ok and at - idle_at >= quiet_s * 0.99 and not in_flight.busy
    with in_flight.track():  # a busy champion makes a bounded wait give up
        assert in_flight.wait_quiet(0.0, timeout=0.05) is False
    assert in_flight.wait_quiet(0.0, cancelled=lambda: True) is False


@pytest.mark.skipif(
    not hasattr(os, "setpriority") or os.getpriority(os.PRIO_PROCESS, 0) >= 10,
    reason="per-thread priorities need Linux and a process not already at nice >= 10",
)
def test_shadow_threads_run_at_the_configured_lower_priority() -> None:
    seen: list[int] = []

    def run(jobs):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return [_suggestion() for _ in jobs]

    runner, _ = _runner(run, nice=10)
    runner.submit(_job(0))
    assert runner.drain(timeout=10)
    runner.close()
    assert seen == [10] and os.getpriority(os.PRIO_PROCESS, 0) < 10  # the caller is untouched


def test_close_finishes_queued_jobs_as_stopped() -> None:
    gate = threading.Event()
    runner, results = _runner(
        lambda jobs: gate.wait(10) and [_suggestion() for _ in jobs], max_batch=1, timeout_s=20
    )
    for i in range(4):
        runner.submit(_job(i))
    closer = threading.Thread(target=runner.close)
    closer.start()
    gate.set()
    closer.join(20)
    assert not runner.submit(_job(9))
    assert len(results) == 5 and {r.outcome for r in results} <= {"ok", "stopped"}
    assert [r.outcome for r in results if r.job.request_id == "r9"] == ["stopped"]


def test_micro_batcher_batches_concurrent_requests_and_isolates_a_bad_item() -> None:
    sizes: list[int] = []

    def run(items):
        sizes.append(len(items))
        if "bad" in items:
            raise ValueError("bad item")
        return [x.upper() for x in items]

    async def main():
        batcher = MicroBatcher(run, max_batch_size=8, linger_ms=20)
        results = await asyncio.gather(
            *(batcher.submit(x) for x in ["a", "b", "bad", "c"]), return_exceptions=True
        )
        batcher.close()
        return results

    results = asyncio.run(main())
    assert results[:2] == ["A", "B"] and results[3] == "C"
    assert isinstance(results[2], ValueError)
    assert sizes[0] == 4 and sizes[1:] == [1, 1, 1, 1]


def _stage_dirs(root: Path, alias: str, stages, tag: str) -> None:
    for stage in stages:
        folder = root / alias / stage
        folder.mkdir(parents=True)
        (folder / "stage.json").write_text(json.dumps({"version": f"{stage}-{tag}"}))


def test_folder_source_falls_back_to_champion_and_shadow_switch_per_stage(tmp_path: Path) -> None:
    _stage_dirs(tmp_path, "champion", STAGES, "v1")
    _stage_dirs(tmp_path, "challenger", ["trigger", "answer"], "v2")
    source = FolderSource(tmp_path)
    champion, challenger = source.resolve("champion"), source.resolve("challenger")
    assert (
        challenger["trigger"].version == "trigger-v2" and challenger["topic"].version == "topic-v1"
    )
    shadow = shadow_refs(champion, challenger, {"trigger": True, "answer": False})
    assert shadow["trigger"].version == "trigger-v2" and shadow["answer"].version == "answer-v1"
    with pytest.raises(LookupError, match="no folder for"):
        FolderSource(tmp_path / "missing").resolve("champion")


class _CountingCache:
    def __init__(self) -> None:
        self.built: list[dict[str, str]] = []

    def cascade(self, refs):
        from pipelines.cascade import Cascade

        self.built.append({s: r.version for s, r in refs.items()})
        return Cascade(None, None, None, None, versions={s: r.version for s, r in refs.items()})

    def keep_only(self, *refs) -> None:
        pass


class _MovableSource:
    def __init__(self) -> None:
        self.versions = {"champion": "v1", "challenger": "v1"}

    def resolve(self, alias):
        tag = self.versions[alias]
        if tag == "broken":
            raise OSError(f"{alias}: download failed")
        return {s: StageRef(s, f"{s}-{tag}", Path(f"/m/{tag}/{s}")) for s in STAGES}


def test_reloader_swaps_only_when_an_alias_moves() -> None:
    source, cache, events = _MovableSource(), _CountingCache(), []
    reloader = Reloader(source, cache, dict.fromkeys(STAGES, True), on_reload=events.append)
    assert reloader.check() and reloader.current.shadow is None  # challenger == champion
    first = reloader.current
    assert not reloader.check() and reloader.current is first
    source.versions["challenger"] = "v2"
    assert reloader.check() and reloader.current.shadow.versions["topic"] == "topic-v2"
    source.versions["champion"] = "broken"
    assert not reloader.check() and reloader.last_error.startswith("OSError")
    assert reloader.current.champion.versions["trigger"] == "trigger-v1"  # still serving
    assert events == ["initial", "swapped", "failed"]


class UnapprovedChampion(Exception):
    """Stands in for the registry's refusal to resolve an unapproved `champion`."""


def test_reloader_keeps_serving_when_the_new_champion_is_refused() -> None:
    source, cache = _MovableSource(), _CountingCache()
    reloader = Reloader(source, cache, dict.fromkeys(STAGES, True))
    assert reloader.check()
    serving = reloader.current

    def refuse(alias):
        raise UnapprovedChampion(f"{alias}: casepilot-trigger/3 has no casepilot.approved_by tag")

    source.resolve = refuse
    assert reloader.check(force=True) is False
    assert reloader.current is serving
    assert reloader.last_error.startswith("UnapprovedChampion: champion")


def _call_guard(path: str, headers: dict[bytes, bytes], chunks: list[bytes], *, ready=True):
    """Drive the guard middleware with a real ASGI exchange; returns (status, body, app_body)."""
    from bentos.guard import GuardMiddleware
    from pipelines.config import ServeConfig

    seen: list[bytes] = []

    async def app(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = GuardMiddleware(
        app, settings=lambda: ServeConfig(max_request_bytes=1024), ready=lambda: ready
    )
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0)

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers.items())}
    asyncio.run(guard(scope, receive, send))
    return (
        sent[0]["status"],
        json.loads(sent[1]["body"] or b"{}") if sent[0]["status"] != 200 else {},
        seen,
    )


def test_guard_bounds_bodies_without_a_length_and_checks_the_key(monkeypatch) -> None:
    monkeypatch.setenv("CASEPILOT_API_KEY", "k")
    status, body, seen = _call_guard("/suggest", {}, [b"x" * 600, b"y" * 600])
    assert status == 413 and "max_request_bytes" in body["error"] and seen == []
    status, _, seen = _call_guard("/suggest", {}, [b'{"a":', b" 1}"])
    assert status == 200 and seen == [b'{"a": 1}']  # small chunked body reaches the app whole
    assert _call_guard("/suggest", {}, [b"{}"], ready=False)[0] == 503
    assert _call_guard("/admin/reload", {}, [b"{}"])[0] == 401
    assert _call_guard("/admin/reload", {b"x-api-key": b"bad"}, [b"{}"])[0] == 403
    assert _call_guard("/feedback", {b"x-api-key": b"k"}, [b"{}"])[0] == 200
    monkeypatch.delenv("CASEPILOT_API_KEY")
    status, body, _ = _call_guard("/feedback", {b"x-api-key": b"k"}, [b"{}"])
    assert status == 403 and "set $CASEPILOT_API_KEY" in body["error"]
