"""Servers for the service benchmark: model folders, `bentoml serve` on loopback, flush, counts.

Each server gets its own params file (batch size, shadow per stage), CASEPILOT_HOME (an embedded
Qdrant folder is locked by one process), prediction log and port on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BENCH_KEY = "bench-only-key"
STAGES = ("trigger", "topic", "retrieve", "answer", "tone")
START_ATTEMPTS = 3  # BentoML's own port race (see `lost_port_race`) is retried, nothing else


def build_tiny_models(out: Path) -> Path:
    """Train every stage for a few steps on a one-day synthetic world into `out/<stage>`."""
    from pipelines.config import (
        AnswerConfig,
        RetrieveConfig,
        SynthConfig,
        ToneConfig,
        TopicConfig,
        TriggerConfig,
    )
    from pipelines.data.synth.world import generate_world
    from pipelines.stages import answer, retrieve, tone, topic, trigger
    from pipelines.stages.encoder.classifier import build_tiny_encoder

    world = generate_world(SynthConfig(days=1, cases_per_day=60, drift_from_day=None), seed=3)
    cases = [c for day in world.days for c in day.cases]
    words = {w for c in cases for w in c.message.lower().split()} | {"agent", "customer", ":"}
    base = build_tiny_encoder(out / "base", sorted(words))
    tiny = dict(
        base_model=str(base),
        max_steps=6,
        batch_size=16,
        learning_rate=3e-3,
        warmup_ratio=0.0,
        max_length=48,
        metric_for_best_model="loss",
        seed=1,
    )
    gen = dict(
        tiny_layers=1,
        tiny_hidden=32,
        tiny_heads=2,
        vocab_size=300,
        max_length=128,
        max_new_tokens=16,
        learning_rate=1e-2,
        batch_size=16,
        epochs=1.0,
    )
    trigger.train(TriggerConfig(**tiny), cases, cases, out / "trigger")
    topic.train(TopicConfig(**tiny), cases, cases, out / "topic")
    retrieve.train(
        RetrieveConfig(top_k=5),
        cases,
        None,
        out / "retrieve",
        docs=world.docs,
        location=str(out / "qdrant-build"),
        data_version="service-test",
    )
    answer.train(AnswerConfig(**gen), cases, [], out / "answer", docs=world.docs)
    tone.train(ToneConfig(**gen, lora=False), cases, [], out / "tone")
    return out


def _set_threshold(stage_dir: Path, threshold: float) -> None:
    meta = json.loads((stage_dir / "stage.json").read_text())
    meta["threshold"] = threshold
    (stage_dir / "stage.json").write_text(json.dumps(meta))


def models_layout(models: Path, work: Path, *, topic_threshold: float | None = None) -> Path:
    """`champion` → models; `challenger/trigger` → its trigger with a retuned threshold.

    `topic_threshold` overrides the topic stage's (e.g. 0, so every answerable request goes on
    to retrieval and generation, as with a well-trained topic stage); the rest are links.
    """
    root = work / "models"
    (root / "challenger").mkdir(parents=True)
    (root / "champion").mkdir(parents=True)
    for stage in STAGES:
        if stage == "topic" and topic_threshold is not None:
            shutil.copytree(models / stage, root / "champion" / stage)
            _set_threshold(root / "champion" / stage, topic_threshold)
        else:
            (root / "champion" / stage).symlink_to((models / stage).resolve())
    trigger = root / "challenger" / "trigger"
    shutil.copytree(models / "trigger", trigger)
    threshold = json.loads((trigger / "stage.json").read_text())["threshold"]
    _set_threshold(trigger, max(0.0, float(threshold) - 0.05))
    return root


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(
    work: Path,
    root: Path | None,
    *,
    name: str,
    params_yaml: str,
    env: dict[str, str] | None = None,
    port: int | None = None,
    ready_s: float = 300,
    wait: bool = True,
) -> tuple[str, subprocess.Popen]:
    """`bentoml serve` in its own process group on 127.0.0.1; returns once /readyz is 200
    (`wait=False`: at once).

    `root`: a `<alias>/<stage>` models folder, or None for the MLflow registry in its home.
    Its home, prediction log (`log-<name>.db`) and output (`server-<name>.log`) are named by
    `name` under `work`, so launching the same name again restarts on the same state.
    """
    port = port or free_port()
    params = work / f"params-{name}.yaml"
    params.write_text(params_yaml)
    full_env = {
        **os.environ,
        # one home each: an embedded Qdrant folder is locked by one process
        "CASEPILOT_HOME": str(work / f"home-{name}"),
        "HF_HUB_OFFLINE": "1",
        "CASEPILOT_PARAMS": str(params),
        "CASEPILOT_PREDICTION_LOG_URL": f"sqlite:///{log_path(work, name)}",
        "BENTOML_HOME": str(work / "bentoml"),
        "BENTOML_DO_NOT_TRACK": "true",
        "CASEPILOT_API_KEY": BENCH_KEY,
        **({"CASEPILOT_MODELS_DIR": str(root)} if root else {}),  # else the MLflow registry
        **(env or {}),
    }
    log = work / f"server-{name}.log"
    url = f"http://127.0.0.1:{port}"
    for attempt in range(1, START_ATTEMPTS + 1):
        since = log.stat().st_size if log.is_file() else 0
        process = popen_serve(port, full_env, log)
        if not wait:
            return url, process
        try:
            if wait_ready(url, process, ready_s):
                return url, process
        except RuntimeError:
            if attempt < START_ATTEMPTS and lost_port_race(log, since):
                continue
            raise
        stop_server(process)
        raise TimeoutError(f"server not ready in {ready_s:g} s; see {log.name}")
    raise AssertionError("unreachable")


def popen_serve(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    """`bentoml serve` of the copilot on 127.0.0.1:`port` in its own process group."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("bentoml")),
                "serve",
                "bentos.service:CopilotService",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def lost_port_race(log: Path, since: int = 0) -> bool:
    """True when the server exited because BentoML's process manager lost a port race.

    BentoML 1.4 picks the circus arbiter's control ports with `reserve_free_port`, which binds
    an ephemeral port and releases it before circus binds it again; any socket opened on the
    machine in between (an outgoing connection's ephemeral port included) takes it, and
    `bentoml serve` exits with `ZMQError: Address already in use`. Starting it again picks new
    ports. Only output after byte `since` counts (the log is appended to across restarts).
    """
    if not log.is_file():
        return False
    with log.open("rb") as out:
        out.seek(since)
        tail = out.read().decode(errors="replace")
    return "ZMQError: Address already in use" in tail


def log_path(work: Path, name: str) -> Path:
    """The SQLite prediction log of the server `name`."""
    return work / f"log-{name}.db"


def wait_ready(url: str, process: subprocess.Popen, seconds: float) -> bool:
    """Poll /readyz until 200 (True) or `seconds` pass (False); raises if the server exited."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    return False


def start_server(
    work: Path, root: Path, *, shadow: bool, max_batch: int, torch_threads: int | None = None
) -> tuple:
    """Start `bentoml serve` on a free loopback port; `torch_threads` None = params' default."""
    shadow_yaml = "".join(f"    {s}: {str(shadow).lower()}\n" for s in STAGES)
    params = (
        f"serve:\n  max_batch_size: {max_batch}\n  shadow_timeout_s: 30\n  shadow:\n{shadow_yaml}"
        + (f"  torch_threads: {torch_threads}\n" if torch_threads else "")
    )
    return launch(work, root, name=f"{shadow}-{max_batch}", params_yaml=params)


def _parents() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every live process, from /proc."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            out[int(entry)] = (int(fields[1]), int(fields[2]))
    return out


def server_groups(pid: int) -> set[int]:
    """Process groups of `pid` and its descendants: BentoML's worker runs in a group of its own."""
    table, groups, todo = _parents(), set(), [pid]
    while todo:
        current = todo.pop()
        if current in table:
            groups.add(table[current][1])
        todo += [p for p, (parent, _) in table.items() if parent == current]
    return groups or {pid}


def kill9(process: subprocess.Popen) -> set[int]:
    """SIGKILL every process group of the server at once (arbiter and workers); their ids."""
    groups = server_groups(process.pid)
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    process.wait(30)
    return groups


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL what is left of it (any group) after 60 s."""
    groups = server_groups(process.pid) if process.poll() is None else set()
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    for group in groups:  # a worker orphaned by its arbiter would keep the port and Qdrant lock
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def flush(url: str) -> dict:
    """Wait until the server's shadow work and log writes are done; its shadow counts."""
    response = httpx.post(
        f"{url}/admin/flush", json={}, headers={"X-API-Key": BENCH_KEY}, timeout=300
    )
    return response.json()["shadow"]


def counts(url: str) -> dict:
    """The server's counts now, without waiting: shadow jobs done, champion batches and items."""
    response = httpx.post(
        f"{url}/admin/flush",
        json={"timeout_s": 0.001},  # returns the runner's counts at once
        headers={"X-API-Key": BENCH_KEY},
        timeout=60,
    )
    body = response.json()
    batches = body.get("batches", {})
    return {
        "shadow_done": int(body["shadow"]["done"]),
        "batches": int(batches.get("batches", 0)),
        "items": int(batches.get("items", 0)),
    }


def shadow_done(url: str) -> int:
    """Shadow jobs finished so far (any outcome), without waiting for the rest."""
    return counts(url)["shadow_done"]
