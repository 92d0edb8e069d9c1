"""The review queue against a real Label Studio server on 127.0.0.1 (one server for the module).

sample -> tasks with the right fields -> annotations submitted through the API by two reviewer
accounts -> `review-collect` lands a LabeledCase batch -> intake accepts it with
label_source=review -> it is in the next data version; and a headless-Chromium screenshot of the
labeling view of a real task. Label Studio comes from `make label-studio` (`.venv-labelstudio`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from flows.platform import review_server, stack
from flows.platform.services import free_port
from monitoring.review.run import reviewed_evidence
from monitoring.review.studio import tasks
from pipelines.config import load_params
from pipelines.home import Home
from tests.integration.test_ui_screenshots import CHROMIUM, assert_not_blank
from tests.review_world import served_log, world_cases

pytestmark = [
    pytest.mark.slow,
    # Label Studio's first start on a busy 2-core machine: minutes (tests/README figures)
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        not (review_server.REPO / ".venv-labelstudio" / "bin" / "label-studio").is_file()
        and not os.environ.get(review_server.BIN_ENV),
        reason="Label Studio is not installed: run `make label-studio`",
    ),
]
DAY = "2026-01-05"


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Params file, served prediction log and a running Label Studio; stopped afterwards."""
    from prefect.testing.utilities import prefect_test_harness

    root = tmp_path_factory.mktemp("review-studio")
    home = Home(root / "home").ensure()
    params_file = root / "params.yaml"
    params_file.write_text(
        yaml.safe_dump(
            {
                "data": {"validation": {"min_reference_cases": 1_000_000}},
                "review": {"port": free_port(), "daily_size": 16, "lookback_hours": 24 * 3650},
            }
        )
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CASEPILOT_HOME", str(home.root))
        params = load_params(params_file)
        cases = world_cases(cases_per_day=60, days=1)
        served_log(cases, params.prediction_log_url).close()
        started = time.monotonic()
        service = review_server.start_studio(params, timeout_s=900)
        startup_s = time.monotonic() - started
        print(f"\nLabel Studio first start (2 reviewer inits + start): {startup_s:.1f} s")
        (root / "startup.json").write_text(json.dumps({"first_start_s": startup_s}))
        try:
            with prefect_test_harness(server_startup_timeout=180):
                yield {
                    "params": params,
                    "params_file": str(params_file),
                    "service": service,
                    "truth": {c.case_id: c for c in cases},
                    "root": root,
                }
        finally:
            outcome = review_server.stop_studio(service)
            assert outcome != "STILL RUNNING" and not stack.is_ours(service), outcome


def _content(folder: Path) -> str:
    """A content hash of the accepted data (file names and bytes): what DVC's hash of the folder
    changes with, so the reviewed batch is in the next data version."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def test_sample_to_tasks_to_annotations_to_intake(studio: dict) -> None:
    from flows.lifecycle.review import review, review_collect, simulate_reviewers, studio_client
    from pipelines.data.intake import load_accepted, run_intake

    params = studio["params"]
    result = review(studio["params_file"], day=DAY)
    assert result["sampled"] == 16 and result["imported"] == 16
    assert review(studio["params_file"], day=DAY)["imported"] == 0  # idempotent
    admin = studio_client(params)
    listed = tasks(admin, result["project"])
    assert len(listed) == 16
    fields = {
        "message",
        "champion_text",
        "shadow_text",
        "sent_reply",
        "request_id",
        "case_id",
        "stratum",
        "inclusion_prob",
        "double_label",
    }
    assert all(fields <= set(t.data) for t in listed)
    assert all(0 < t.data["inclusion_prob"] <= 1 for t in listed)
    doubles = sum(bool(t.data["double_label"]) for t in listed)
    assert doubles == round(0.2 * 16)

    submitted = simulate_reviewers(studio["params_file"], studio["truth"], error_rate=0.0)
    assert submitted == 16 + doubles
    annotated = tasks(admin, result["project"])
    assert sum(len(t.annotations) for t in annotated) == submitted

    before = _content(params.home.data / "accepted")
    collected = review_collect(studio["params_file"])
    assert collected["labels"] == submitted and collected["disputed"] == []
    assert collected["cases"] == 16 and Path(collected["batch"]).is_file()
    report = run_intake(params)
    assert [o.state for o in report.outcomes] == ["accepted"], report
    reviewed = [c for c in load_accepted(params) if c.label_source == "review"]
    assert len(reviewed) == 16
    assert {c.labeler for c in reviewed} >= set(params.review.reviewers)
    assert _content(params.home.data / "accepted") != before

    day = collected["days"][DAY]
    assert day["reviewed_items"] == 16 and day["agreement"]["items"] == doubles
    assert day["agreement"]["agreement_rate"]["answerable"] == 1.0  # error-free reviewers
    topic = day["reviewed"]["champion"]["topic_accuracy"]
    assert 0 <= topic["low"] <= topic["value"] <= topic["high"] <= 1
    evidence = reviewed_evidence(params, "topic")
    assert evidence is not None and evidence["metric"] == "topic_accuracy"
    assert evidence["cases"] > 0 and isinstance(evidence["loses"], bool)
    assert review_collect(studio["params_file"])["cases"] == 0  # nothing lands twice


class Page:
    """A minimal Chrome DevTools Protocol session on one page (websockets, bounded waits)."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=64 * 2**20, open_timeout=30)
        self.next_id = 0

    def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message.get("result", {})
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> object:
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)[
            "result"
        ].get("value")

    def wait_for(self, expression: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.5) + 1):
            if self.evaluate(expression):
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        raise TimeoutError(f"page never satisfied {expression!r}")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Page]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: `make browser` installs Debian's chromium")
    port = free_port()
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        targets = None
        for _ in range(120):
            body = stack.http_ok(f"http://127.0.0.1:{port}/json/list")
            targets = [t for t in json.loads(body or b"[]") if t.get("type") == "page"]
            if targets:
                break
            time.sleep(0.5)
        assert targets, "chromium's DevTools endpoint never answered"
        page = Page(targets[0]["webSocketDebuggerUrl"])
        yield page
        page.ws.close()
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def test_labeling_view_shows_the_message_and_both_suggestions(
    studio: dict, browser: Page, tmp_path: Path
) -> None:
    from flows.lifecycle.review import review, studio_client
    from monitoring.review.studio import project_id

    params = studio["params"]
    review(studio["params_file"], day=DAY)  # the day's sample is in the project (once)
    project = project_id(studio_client(params), params.review.project_title)
    task = next(
        t
        for t in tasks(studio_client(params), project)
        if not t.data["champion_text"].startswith("(") and not t.data["shadow_text"].startswith("(")
    )
    creds = review_server.load_or_create_credentials(params.home, params.review.reviewers)
    reviewer = creds.reviewers[params.review.reviewers[0]]
    url = review_server.url(params)
    browser.call("Page.enable")
    browser.call(
        "Emulation.setDeviceMetricsOverride",
        width=1400,
        height=1000,
        deviceScaleFactor=1,
        mobile=False,
    )
    browser.call("Page.navigate", url=f"{url}/user/login/")
    browser.wait_for("!!document.querySelector('input#email')")
    browser.evaluate(
        f"document.querySelector('input#email').value = {json.dumps(reviewer.email)};"
        f"document.querySelector('input#password').value = {json.dumps(reviewer.password)};"
        "document.querySelector('form').submit(); true"
    )
    browser.wait_for("location.pathname.indexOf('/user/login') < 0")
    browser.call("Page.navigate", url=f"{url}/projects/{project}/data?task={task.id}")
    wanted = [task.data[key][:40] for key in ("message", "champion_text", "shadow_text")]
    # the labeling view's own text: the nearest ancestor of our "Champion suggestion" header
    # that also holds the message header (not the data manager's table of tasks beside it)
    view = """(() => {
      const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
      while (walk.nextNode()) {
        if (walk.currentNode.nodeValue.trim() !== 'Champion suggestion') continue;
        let e = walk.currentNode.parentElement;
        for (let i = 0; i < 15 && e; i++, e = e.parentElement) {
          if (e.innerText.includes('Customer message')) return e.innerText;
        }
      }
      return '';
    })()"""
    check = " && ".join(f"{view}.includes({json.dumps(w)})" for w in wanted)
    browser.wait_for(check, timeout_s=240)
    browser.wait_for("document.fonts.status === 'loaded'", timeout_s=60)
    png = tmp_path / "label-studio-task.png"
    shot = browser.call("Page.captureScreenshot", format="png")
    png.write_bytes(base64.b64decode(shot["data"]))
    text = str(browser.evaluate(view))
    png.with_suffix(".txt").write_text(text, encoding="utf-8")
    assert all(w in text for w in wanted), text
    assert "Shadow (challenger) suggestion" in text and "Reply the agent sent" in text
    others = [
        t.data["message"][:40] for t in tasks(studio_client(params), project) if t.id != task.id
    ]
    assert not any(o in text for o in others if o not in wanted[0])  # only this task's view
    assert_not_blank(png)
