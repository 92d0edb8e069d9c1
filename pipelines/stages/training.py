"""Trainer plumbing shared by the fine-tuned stages: arguments from config, progress, DeepSpeed.

The plain transformers Trainer on CPU is the default. When a stage's config names a DeepSpeed
ZeRO file, the Trainer gets it as `deepspeed=`; DeepSpeed then needs a distributed launcher, so
`relaunch_under_torchrun` re-runs the current command under `torchrun --nproc_per_node N`
(on a CPU box with `DS_ACCELERATOR=cpu`, its C++ ops compiled once into CASEPILOT_HOME/cache).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from pipelines.config import ClassifierConfig, GeneratorConfig
    from pipelines.home import Home


def under_distributed_launcher() -> bool:
    """Return True when this process was started by torchrun (or another launcher)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def deepspeed_config_path(path: str | None) -> str | None:
    """Return the absolute DeepSpeed config path, or None; a missing file names the fix."""
    if not path:
        return None
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"DeepSpeed config {path} not found; set `deepspeed:` to a file such as "
            f"configs/deepspeed/zero2.json, or to null for the plain Trainer"
        )
    return str(resolved)


def training_arguments(cfg: ClassifierConfig, output_dir: Path, *, n_train: int) -> Any:
    """Return TrainingArguments for a classifier: per-epoch evaluation and best-model reload."""
    import torch
    from transformers import TrainingArguments

    deepspeed = deepspeed_config_path(cfg.deepspeed)
    if deepspeed and not under_distributed_launcher():
        raise RuntimeError(
            "deepspeed is set but this process was not started by a launcher; run it with "
            "`--launcher torchrun` (or `torchrun --nproc_per_node 1 …`; on CPU with "
            "DS_ACCELERATOR=cpu)"
        )
    steps_per_epoch = max(1, -(-n_train // cfg.batch_size))
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps or -1,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,
        lr_scheduler_type="linear",
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(64, cfg.batch_size),
        eval_strategy="epoch" if not cfg.max_steps else "steps",
        save_strategy="epoch" if not cfg.max_steps else "steps",
        eval_steps=None if not cfg.max_steps else max(1, cfg.max_steps // 2),
        save_steps=None if not cfg.max_steps else max(1, cfg.max_steps // 2),
        save_total_limit=2,
        save_only_model=not deepspeed,  # DeepSpeed reloads the best model from full checkpoints
        load_best_model_at_end=True,
        metric_for_best_model=cfg.metric_for_best_model,
        greater_is_better=cfg.metric_for_best_model != "loss",
        logging_steps=max(1, min(50, steps_per_epoch // 4)),
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        bf16=cfg.bf16,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        deepspeed=deepspeed,
    )


def causal_lm_arguments(
    cfg: GeneratorConfig, output_dir: Path, *, n_train: int, deepspeed: str | None
) -> Any:
    """Return TrainingArguments for a decoder: cosine schedule, no evaluation nor checkpoints."""
    import torch
    from transformers import TrainingArguments

    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        weight_decay=0.0,
        logging_steps=max(1, min(50, steps_per_epoch // 2)),
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        optim="adamw_torch",
        deepspeed=deepspeed,
        train_sampling_strategy="group_by_length",  # less padding: prompts vary a lot in length
    )


def causal_lm_collator(pad_id: int):
    """Return a collate function padding `input_ids` / `labels` rows on the right (-100 labels)."""
    import torch

    def collate(rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        width = max(len(r["input_ids"]) for r in rows)
        ids = [r["input_ids"] + [pad_id] * (width - len(r["input_ids"])) for r in rows]
        labels = [r["labels"] + [-100] * (width - len(r["labels"])) for r in rows]
        mask = [[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows]
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }

    return collate


def set_torch_threads(threads: int) -> None:
    """Limit torch's intra-op threads (the default box has 2 cores shared with other work)."""
    import torch

    torch.set_num_threads(max(1, min(threads, os.cpu_count() or threads)))


def rich_progress_callback(console: Console | None, description: str) -> Any:
    """Return a TrainerCallback that drives a Rich progress bar with the latest loss."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress: Progress | None = None
            self.task: Any = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            self.progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            )
            self.progress.start()
            self.task = self.progress.add_task(description, total=state.max_steps, status="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is None or not logs:
                return
            shown = {k: v for k, v in logs.items() if k in ("loss", "eval_loss", "eval_accuracy")}
            status = " ".join(f"{k}={v:.4f}" for k, v in shown.items())
            self.progress.update(self.task, status=f"epoch {state.epoch or 0:.1f} {status}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgress()


def relaunch_under_torchrun(argv: Sequence[str], home: Home, *, nproc_per_node: int = 1) -> int:
    """Re-run the `casepilot <argv>` command under torchrun for DeepSpeed; returns its exit code.

    On a machine without CUDA, DeepSpeed is pointed at its CPU accelerator and its extension
    builds are cached under CASEPILOT_HOME/cache/torch_extensions (the first build takes ~2 min).
    """
    import torch

    env = dict(os.environ)
    env.setdefault("TORCH_EXTENSIONS_DIR", str(home.cache / "torch_extensions"))
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // nproc_per_node)))
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        "flows.cli.train_classifiers",
        *argv,
    ]
    return subprocess.run(command, env=env, check=False).returncode
