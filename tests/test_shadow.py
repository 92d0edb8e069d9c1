"""The service's pure parts: shadow runner outcomes, micro-batching, alias folders, reload swaps."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bentos.batching import MicroBatcher
from bentos.reload import FolderSource, Reloader, StageRef, shadow_refs
from bentos.shadow import ShadowJob, ShadowResult, ShadowRunner
from pipelines.contract import STAGES, Suggestion

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


def test_full_queue_drops_the_shadow_but_still_delivers_the_job() -> None:
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
    assert accepted.count(False) >= 3  # one running, one queued, the rest dropped
    assert sorted(r.job.request_id for r in results) == [f"r{i}" for i in range(5)]
    assert {r.outcome for r in results} == {"ok", "dropped"}


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
