"""DeepSpeed ZeRO on CPU: `casepilot train topic --deepspeed …` relaunches itself under torchrun.

The slow test really trains a tiny BERT (built from a config) for a few ZeRO-2 steps on the CPU
accelerator. The first run compiles DeepSpeed's C++ ops with g++ (1–3 minutes); they are cached
under the test CASEPILOT_HOME's cache/torch_extensions for later runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from pipelines.config import TopicConfig
from pipelines.data.contract import LabeledCase, write_jsonl
from pipelines.stages.encoder.classifier import build_tiny_encoder
from pipelines.stages.training import training_arguments

REPO = Path(__file__).resolve().parents[2]
ZERO2 = REPO / "configs" / "deepspeed" / "zero2.json"
MESSAGES = {
    "refunds": ["refund the order", "give a refund please"],
    "payouts": ["when does my payout arrive", "payout is late"],
}


def test_deepspeed_configs_are_valid_zero_configs() -> None:
    for name, stage in (("zero2.json", 2), ("zero3.json", 3), ("zero2_offload.json", 2)):
        config = json.loads((REPO / "configs" / "deepspeed" / name).read_text())
        assert config["zero_optimization"]["stage"] == stage
        assert config["train_micro_batch_size_per_gpu"] == "auto"  # filled in by the Trainer


def test_deepspeed_without_a_launcher_names_the_fix(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = TopicConfig(deepspeed=str(ZERO2))
    with pytest.raises(RuntimeError, match="torchrun"):
        training_arguments(cfg, tmp_path, n_train=10)
    with pytest.raises(FileNotFoundError, match="configs/deepspeed/zero2.json"):
        training_arguments(TopicConfig(deepspeed="nope.json"), tmp_path, n_train=10)


@pytest.mark.slow
def test_zero2_on_cpu_trains_and_saves_safetensors(tmp_path: Path) -> None:
    words = sorted({w for ms in MESSAGES.values() for m in ms for w in m.split()})
    base = build_tiny_encoder(tmp_path / "base", words, hidden=64)
    cases = [
        LabeledCase(
            case_id=f"{topic}-{i}-{k}",
            created_at=datetime(2026, 1, 1, tzinfo=UTC),
            message=m,
            answerable=True,
            topic=topic,
            label_source="human",
        )
        for topic, ms in MESSAGES.items()
        for i, m in enumerate(ms)
        for k in range(4)
    ]
    write_jsonl(cases, tmp_path / "cases.jsonl")
    settings = {
        "base_model": str(base),
        "max_steps": 24,
        "batch_size": 8,
        "learning_rate": 3e-3,
        "warmup_ratio": 0.0,
        "metric_for_best_model": "loss",
        "torch_threads": 1,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"topic": settings}), encoding="utf-8")
    out = tmp_path / "model"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli.train_classifiers",
            "train",
            "topic",
            "--cases",
            str(tmp_path / "cases.jsonl"),
            "--val",
            str(tmp_path / "cases.jsonl"),
            "--out",
            str(out),
            "--params",
            str(tmp_path / "params.yaml"),
            "--deepspeed",
            str(ZERO2),
            "--no-mlflow",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Rich wraps at the terminal width (80 columns on CI), so compare whitespace-normalised text.
    assert "relaunching under torchrun" in " ".join(result.stdout.split())
    assert (out / "model.safetensors").is_file()
    meta = json.loads((out / "stage.json").read_text())
    assert meta["config"]["deepspeed"] == str(ZERO2)
    losses = meta["metrics"]["train_loss_history"]
    assert meta["metrics"]["train_steps"] == 24
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses  # ZeRO-2 steps really learn
