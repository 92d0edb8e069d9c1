"""Exploration: does any variant of the topic stage's recipe move Banking77 held-out accuracy?

Not the benchmark (that is `bench_topic_banking77.py`, through the CLI): this script trains the
stage's recipe in-process so that every epoch's weights can be scored and kept, then scores
weight soups (Wortsman et al. 2022) and logit ensembles of those snapshots. Same split, same
LP-FT start (mean pooling, linear-probe head), label smoothing 0.1, batch 32, max_length 64,
warmup 6%, no class weights, the stage's own `training_arguments`. Run every command with
`HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE` (OpenMP spin-waiting costs ~4× CPU on a shared box).

    # three seeds of the stage's recipe (Trainer's own AdamW), bf16 autocast
    .venv/bin/python benchmarks/topic_recipes.py train --seeds 42,43,44 --out W/seeds
    # layer-wise lr decay 0.8 from lr 8e-5, word embeddings frozen, one torch thread
    .venv/bin/python benchmarks/topic_recipes.py train --seeds 42 --lr 8e-5 --llrd 0.8 \
        --freeze-word-embeddings --threads 1 --out W/llrd
    # soups and ensembles of the saved snapshots (s<seed>_e<epoch>)
    .venv/bin/python benchmarks/topic_recipes.py combine W/seeds s42_e1+s44_e2 s42_e3+s43_e3+s44_e3

Validation (815 cases) is what a recipe may be chosen on; held-out (1,499) is reported beside it.
Results: benchmarks/RESULTS.md, "Topic stage on Banking77", session 4.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from bench_topic_banking77 import HELD_OUT_SEED, HELD_OUT_SHARE, VAL_SEED, VAL_SHARE
from classifier_bench import SHARED_DATA
from transformers import (
    AutoTokenizer,
    DataCollatorWithPadding,
    PrinterCallback,
    Trainer,
    TrainerCallback,
)

from pipelines.config import TopicConfig
from pipelines.data.dataset import split_cases
from pipelines.data.importers.intents import import_banking77
from pipelines.stages import topic
from pipelines.stages.encoder.classifier import encode, resolve_base_model
from pipelines.stages.encoder.classifier_train import (
    _Encoded,
    _weighted_loss,
    class_weights,
    init_head_from_probe,
)
from pipelines.stages.encoder.pooled import build_classifier
from pipelines.stages.training import set_torch_threads, training_arguments


class Data:
    """The benchmark's split (held out 15%, seed 13; validation 10% of the rest, seed 14)."""

    def __init__(self) -> None:
        cases = import_banking77(SHARED_DATA / "banking77")
        rest, held = split_cases(cases, HELD_OUT_SHARE, HELD_OUT_SEED)
        fit, val = split_cases(rest, VAL_SHARE, VAL_SEED)
        self.labels = topic.topic_labels(fit)
        self.base = resolve_base_model("minilm")
        self.tokenizer = AutoTokenizer.from_pretrained(self.base)
        self.collate = DataCollatorWithPadding(self.tokenizer)
        examples = {"fit": fit, "val": val, "held": held}
        self.truth = {}
        self.sets = {}
        for name, part in examples.items():
            ex = topic.examples(part, self.labels)
            self.truth[name] = np.asarray(ex.labels)
            self.sets[name] = _Encoded(encode(self.tokenizer, ex.texts, ex.pairs, 64), ex.labels)

    def logits(self, model: torch.nn.Module, name: str) -> np.ndarray:
        """fp32 logits of one split (eval mode, length-sorted batches of 128)."""
        model.eval()
        items = self.sets[name].items
        order = np.argsort([len(i["input_ids"]) for i in items])
        out = np.zeros((len(items), len(self.labels)), np.float32)
        with torch.no_grad():
            for start in range(0, len(order), 128):
                idx = order[start : start + 128]
                batch = self.collate(
                    [{k: v for k, v in items[i].items() if k != "labels"} for i in idx]
                )
                out[idx] = model(**batch).logits.float().numpy()
        return out

    def accuracy(self, logits: np.ndarray, name: str) -> float:
        return float((logits.argmax(1) == self.truth[name]).mean())


class Snapshots(TrainerCallback):
    """Keep a copy of the weights at the end of every epoch."""

    def __init__(self) -> None:
        self.states: list[dict] = []

    def on_epoch_end(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})


def _llrd_optimizer(
    model: torch.nn.Module, lr: float, decay: float, weight_decay: float
) -> torch.optim.Optimizer:
    """AdamW with lr × decay^(depth from the top) per layer; no weight decay on bias/LayerNorm."""
    n_layers = len(model.bert.encoder.layer)
    groups = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name.startswith("bert.embeddings"):
            depth = 0
        elif name.startswith("bert.encoder.layer."):
            depth = int(name.split(".")[3]) + 1
        else:
            depth = n_layers + 1
        no_decay = "bias" in name or "LayerNorm" in name
        groups.append(
            {
                "params": [param],
                "lr": lr * decay ** (n_layers + 1 - depth),
                "weight_decay": 0.0 if no_decay else weight_decay,
            }
        )
    return torch.optim.AdamW(groups, lr=lr)


def train(args: argparse.Namespace) -> None:
    set_torch_threads(args.threads)
    data = Data()
    cfg = TopicConfig(
        epochs=args.epochs,
        learning_rate=args.lr,
        label_smoothing=0.1,
        bf16=not args.fp32,
        class_weights="none",
        metric_for_best_model="accuracy",
        torch_threads=args.threads,
    )
    weights = class_weights(data.truth["fit"].tolist(), len(data.labels), "none")
    start = build_classifier(data.base, data.labels, "mean")
    init_head_from_probe(start, data.tokenizer, data.sets["fit"], data.sets["val"], weights)
    init = {k: v.clone() for k, v in start.state_dict().items()}
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    for seed in [int(s) for s in args.seeds.split(",")]:
        wall, cpu = time.perf_counter(), time.process_time()
        model = build_classifier(data.base, data.labels, "mean")
        model.load_state_dict(init)
        if args.freeze_word_embeddings:
            model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        training = training_arguments(
            cfg.model_copy(update={"seed": seed}),
            args.out / f"ck{seed}",
            n_train=len(data.sets["fit"]),
        )
        training.save_strategy, training.eval_strategy = "no", "no"
        training.load_best_model_at_end = False
        snapshots = Snapshots()
        optimizer = (
            _llrd_optimizer(model, args.lr, args.llrd, cfg.weight_decay) if args.llrd else None
        )
        trainer = Trainer(
            model=model,
            args=training,
            data_collator=data.collate,
            train_dataset=data.sets["fit"],
            processing_class=data.tokenizer,
            compute_loss_func=_weighted_loss(weights, 0.1),
            callbacks=[snapshots],
            optimizers=(optimizer, None),
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
        record["runs"][f"s{seed}_time"] = {
            "wall": time.perf_counter() - wall,
            "cpu": time.process_time() - cpu,
        }
        for epoch, state in enumerate(snapshots.states, 1):
            name = f"s{seed}_e{epoch}"
            torch.save(state, args.out / f"{name}.pt")
            model.load_state_dict(state)
            scores = {}
            for split in ("val", "held"):
                logits = data.logits(model, split)
                np.save(args.out / f"{name}_{split}.npy", logits)
                scores[split] = data.accuracy(logits, split)
            record["runs"][name] = scores
        print(json.dumps(record["runs"]), flush=True)
        (args.out / "res.json").write_text(json.dumps(record, indent=1))


def _mean_state(states: list[dict]) -> dict:
    """Uniform soup: the mean of each floating-point tensor (integer buffers from the first)."""
    return {
        name: torch.stack([s[name].double() for s in states]).mean(0).to(first.dtype)
        if first.is_floating_point()
        else first
        for name, first in states[0].items()
    }


def combine(args: argparse.Namespace) -> None:
    """Score the uniform weight soup and the logit ensemble of each '+'-joined snapshot list."""
    set_torch_threads(args.threads)
    data = Data()
    model = build_classifier(data.base, data.labels, "mean")
    for combo in args.combos:
        names = combo.split("+")
        states = [torch.load(args.dir / f"{n}.pt") for n in names]
        model.load_state_dict(_mean_state(states))
        soup = {split: data.accuracy(data.logits(model, split), split) for split in ("val", "held")}
        ensemble = {
            split: data.accuracy(sum(np.load(args.dir / f"{n}_{split}.npy") for n in names), split)
            for split in ("val", "held")
        }
        print(json.dumps({"combo": combo, "soup": soup, "logit_ensemble": ensemble}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("train", help="train seeds, keep and score every epoch's weights")
    run.add_argument("--seeds", default="42")
    run.add_argument("--epochs", type=float, default=3.0)
    run.add_argument("--lr", type=float, default=5e-5)
    run.add_argument("--llrd", type=float, default=None, help="layer-wise lr decay factor")
    run.add_argument("--freeze-word-embeddings", action="store_true")
    run.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--out", type=Path, required=True)
    mix = commands.add_parser("combine", help="soups and ensembles of saved snapshots")
    mix.add_argument("dir", type=Path)
    mix.add_argument("combos", nargs="+", help="e.g. s42_e1+s44_e2")
    mix.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    train(args) if args.command == "train" else combine(args)


if __name__ == "__main__":
    main()
