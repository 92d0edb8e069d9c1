"""params.yaml model stages: `trigger:`, `topic:`, `retrieve:`, `answer:` and `tone:`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.config.section import Section


class ClassifierConfig(Section):
    """A fine-tuned encoder classifier (trigger, topic)."""

    base_model: str = Field("minilm", description="'minilm' (packaged) or a local path / hub id")
    max_length: int = Field(64, ge=8, le=512)
    epochs: float = Field(4.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0, lt=1)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    early_stopping_patience: int = Field(2, ge=1)
    target_precision: float = Field(0.95, gt=0, lt=1, description="threshold chosen to meet it")
    seed: int = 42
    deepspeed: str | None = Field(None, description="path to a DeepSpeed ZeRO config, or null")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="share of steps warming up the lr")
    max_steps: int | None = Field(None, ge=1, description="stop after this many steps (tests)")
    metric_for_best_model: Literal["loss", "accuracy", "f1"] = Field(
        "f1", description="validation metric that early stopping and best-model reload follow"
    )
    class_weights: Literal["balanced", "sqrt", "none"] = Field(
        "balanced", description="weighted cross-entropy: inverse class frequency, its root, or off"
    )
    bf16: bool = Field(False, description="bf16 autocast while training (CPU AMX / GPU)")
    torch_threads: int = Field(2, ge=1, description="torch intra-op threads on CPU")
    pooling: Literal["cls", "mean"] = Field(
        "cls", description="head input: BERT [CLS] pooler, or the normalised mean of token states"
    )
    head_init: Literal["random", "linear_probe"] = Field(
        "random", description="linear_probe: head starts as a logistic regression on frozen input"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="cross-entropy label smoothing")


class TriggerConfig(ClassifierConfig):
    target_precision: float = Field(0.97, gt=0, lt=1)


class TopicConfig(ClassifierConfig):
    target_precision: float = Field(0.93, gt=0, lt=1)
    pooling: Literal["cls", "mean"] = "mean"
    head_init: Literal["random", "linear_probe"] = "linear_probe"


class RetrieveConfig(Section):
    embedder: str = Field(
        "minilm", description="'minilm' (packaged) or a sentence-transformers path"
    )
    qdrant_location: str | None = Field(
        None,
        description="Qdrant server URL (scale-out), or null: each process restores the index "
        "from its stage folder into an in-process Qdrant (no shared folder lock)",
    )
    top_k: int = Field(20, ge=1, le=200)
    min_similarity: float = Field(
        0.35, ge=-1, le=1, description="abstain when the best hit's cosine similarity is below it"
    )
    batch_size: int = Field(
        64, ge=1, description="texts per embedding batch, queries per search batch"
    )
    passage_chars: int = Field(
        600, ge=50, description="doc bodies are split into passages this long"
    )
    oversample: int = Field(
        10, ge=1, description="embedded Qdrant: search top_k×oversample unfiltered, then by topic"
    )
    relevance_match: float = Field(
        0.8,
        gt=0,
        le=1,
        description="evaluation: a hit is relevant when its reply matches this well",
    )


class GeneratorConfig(Section):
    """A decoder-only LM stage (answer, tone)."""

    base_model: str | None = Field(
        None, description="local path or cached hub id; null builds a small model from `tiny`"
    )
    # Sized for 2 CPU cores: ~0.6 CPU-s per step of 16 prompts (~160 tokens) on the synthetic world.
    tiny_layers: int = Field(3, ge=1)
    tiny_hidden: int = Field(192, ge=16)
    tiny_heads: int = Field(4, ge=1)
    vocab_size: int = Field(4000, ge=256, description="tokenizer trained on the corpus")
    max_length: int = Field(
        256, ge=32, description="prompt + reply tokens; the prompt is cut first"
    )
    max_new_tokens: int = Field(64, ge=1)
    epochs: float = Field(4.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0, lt=1)
    batch_size: int = Field(16, ge=1)
    lora: bool = Field(False, description="LoRA adapter (peft) instead of full fine-tuning")
    lora_rank: int = Field(16, ge=1)
    seed: int = 42
    deepspeed: str | None = None


class AnswerConfig(GeneratorConfig):
    min_confidence: float = Field(0.35, ge=0, le=1)
    min_groundedness: float = Field(0.5, ge=0, le=1)
    retrieved_match_similarity: float = Field(
        0.65,
        ge=0,
        le=1,
        description="return a retrieved reply as is when its retrieval cosine is at least this",
    )
    max_passages: int = Field(3, ge=1, description="retrieved passages put in the prompt")
    passage_chars: int = Field(200, ge=50, description="doc passage length in training prompts")


class ToneConfig(GeneratorConfig):
    lora: bool = True
    min_faithfulness: float = Field(0.8, ge=0, le=1, description="below it, keep the draft")
    identity_share: float = Field(
        0.2, ge=0, le=1, description="extra (reply → same reply) pairs so house style is left alone"
    )
