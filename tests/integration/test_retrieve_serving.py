"""A retrieve retrain and registration succeed while another process serves the current index.

The serving side loads the stage folder the way the BentoML service does
(`load_stage_folder(..., qdrant_location=params.qdrant_location)`) and keeps it open; with
the default `retrieve.qdrant_location: null` nothing it holds (no embedded Qdrant folder lock
under CASEPILOT_HOME) stands in the way of `casepilot train retrieve` + `casepilot register`
in another process, and it still answers afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.home import Home
from tests.stages.test_retrieve import toy_cases, toy_docs

BIN = Path(sys.executable).parent
SERVE = """
import sys
from pipelines.config import load_params
from pipelines.registry.register import load_stage_folder
params = load_params(sys.argv[2])
index = load_stage_folder("retrieve", sys.argv[1], qdrant_location=params.qdrant_location)
print("ready", flush=True)
for line in sys.stdin:
    [hits] = index.search([line.strip()], ["refund_status"])
    print("hit", hits[0].ref_id, flush=True)
"""


def _casepilot(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [str(BIN / "casepilot"), *args], cwd=cwd, capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"casepilot {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow  # three processes that each load MiniLM
@pytest.mark.timeout(1200)
def test_retrain_and_register_retrieve_while_the_index_is_served(
    home: Home, tmp_path: Path
) -> None:
    cases, docs, params = tmp_path / "cases.jsonl", tmp_path / "docs.jsonl", tmp_path / "p.yaml"
    cases.write_text("".join(c.model_dump_json() + "\n" for c in toy_cases()))
    docs.write_text("".join(d.model_dump_json() + "\n" for d in toy_docs()))
    params.write_text(json.dumps({"retrieve": {"top_k": 5, "min_similarity": 0.3}}))
    common = ["--cases", str(cases), "--val", str(cases), "--docs", str(docs), "--no-mlflow"]
    _casepilot("train", "retrieve", *common, "--out", "v1", "--params", str(params), cwd=tmp_path)

    serving = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(tmp_path / "v1"), str(params)], cwd=tmp_path,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "CASEPILOT_HOME": str(home.root)},
    )  # fmt: skip
    try:
        assert serving.stdout is not None and serving.stdin is not None
        assert serving.stdout.readline().strip() == "ready"  # bounded: the test's timeout
        _casepilot("train", "retrieve", *common, "--out", "v2", "--params", str(params),
                   cwd=tmp_path)  # fmt: skip
        record = tmp_path / "v2.json"
        _casepilot("register", "retrieve", "--model", "v2", "--record", str(record),
                   "--params", str(params), cwd=tmp_path)  # fmt: skip
        assert json.loads(record.read_text())["version"] == "1"
        serving.stdin.write("how long does a refund take\n")
        serving.stdin.flush()
        assert serving.stdout.readline().split() == ["hit", "refund_status-2"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(serving.pid, signal.SIGKILL)
        serving.wait()
