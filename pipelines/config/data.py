"""params.yaml `data:`: batch source, synthetic world, validation, PII and weak labels."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelines.config.section import Section


class SourceConfig(Section):
    kind: Literal["folder", "sql"] = Field("folder", description="where fresh batches come from")
    path: str = Field("incoming", description="folder source: relative to CASEPILOT_HOME/data")
    url: str | None = Field(None, description="sql source: SQLAlchemy URL")
    query: str | None = Field(None, description="sql source: query returning LabeledCase columns")
    batch_column: str = Field("batch", description="sql source: column that names the batch")

    @model_validator(mode="after")
    def _sql_needs_url_and_query(self) -> SourceConfig:
        if self.kind == "sql" and not (self.url and self.query):
            raise ValueError("kind 'sql' needs both 'url' and 'query'; set them or use 'folder'")
        return self


class SynthConfig(Section):
    seed: int = 7
    days: int = Field(14, ge=1, le=365)
    cases_per_day: int = Field(300, ge=10)
    topics: int = Field(32, ge=30, description="topics of the fictional payments company")
    not_answerable_share: float = Field(0.2, ge=0.0, lt=1.0)
    label_noise: float = Field(0.02, ge=0.0, lt=1.0, description="share of flipped topic labels")
    pii_share: float = Field(0.1, ge=0.0, le=1.0, description="share of messages with planted PII")
    typo_rate: float = Field(0.15, ge=0.0, le=1.0)
    drift_from_day: int | None = Field(
        8, ge=1, description="from this day a new topic appears and vocabulary shifts; null = never"
    )
    drift_topic_share: float = Field(
        0.15, ge=0.0, le=1.0, description="share of answerable traffic on the new topic after drift"
    )
    followup_share: float = Field(
        0.12, ge=0.0, le=1.0, description="share of answerable cases that are context follow-ups"
    )
    days_root: str | None = Field(
        None,
        description="folder for the daily batches/ and truth/ (relative to CASEPILOT_HOME/data); "
        "null = inside the world folder. The demo keeps them outside CASEPILOT_HOME, with the "
        "outside world, so no raw planted PII lives in the platform's state",
    )


class ValidationConfig(Section):
    min_message_chars: int = Field(2, ge=1)
    max_message_chars: int = Field(4000, ge=10)
    not_answerable_share: tuple[float, float] = (0.02, 0.6)
    max_label_shift: float = Field(
        0.3, gt=0.0, le=1.0, description="total-variation distance of topic mix vs reference"
    )
    max_pii_rate: float = Field(0.25, ge=0.0, le=1.0, description="share of messages with PII")
    max_label_disagreement: float = Field(
        0.15, gt=0.0, le=1.0, description="share of labels an independent labeler disputes"
    )
    max_not_answerable_shift: float = Field(
        0.15, gt=0.0, le=1.0, description="|not-answerable share - the reference's| allowed"
    )
    max_label_conflict_share: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="share of rows whose message (with context) carries another label in the "
        "batch or reference; 0 = none at all (label noise makes a little of it normal)",
    )
    taxonomy: str = Field(
        "taxonomy.json",
        description="JSON topics file (list of names or of {name: ...}, or {topics: [...]}), "
        "relative to CASEPILOT_HOME/data; when absent, the reference's topics are the taxonomy",
    )
    reference: str | None = Field(
        None, description="JSONL/Parquet of LabeledCase to compare with; null = accepted data"
    )
    min_reference_cases: int = Field(
        50, ge=1, description="fewer labeled reference cases skip the reference checks"
    )
    min_rows_for_mix: int = Field(
        50, ge=1, description="smaller batches skip the mix-vs-reference checks (sampling noise)"
    )
    max_reference_cases: int = Field(
        5000, ge=10, description="reference cases embedded for label agreement (stable sample)"
    )
    agreement_k: int = Field(7, ge=1, description="nearest reference neighbours that vote")
    embedder: str = Field("minilm", description="sentence embedder for label agreement")


class PiiConfig(Section):
    """PII redaction (pipelines/data/redact.py): Presidio recognizers, offline."""

    phone_regions: tuple[str, ...] = Field(
        ("US", "GB", "DE", "FR", "IE", "NL", "ES", "IT"),
        description="ISO regions whose national phone formats `phonenumbers` looks for",
    )
    detect_person: bool = Field(True, description="redact person names (name lists + cues)")
    min_score: float = Field(0.35, ge=0.0, le=1.0, description="Presidio score to redact at")


class WeakConfig(Section):
    """Weak supervision (pipelines/data/weak/): labeling functions + Snorkel label model."""

    knn_k: int = Field(7, ge=1, description="gold neighbours that vote in the kNN labeler")
    knn_min_similarity: float = Field(
        0.55, ge=-1.0, le=1.0, description="kNN abstains below this cosine similarity"
    )
    macro_min_score: float = Field(
        85.0, ge=0.0, le=100.0, description="rapidfuzz score for 'agent reply is a macro'"
    )
    keywords_per_topic: int = Field(6, ge=0, description="keyword LFs mined per topic")
    keyword_min_precision: float = Field(0.85, gt=0.0, le=1.0, description="on gold cases")
    keyword_min_count: int = Field(3, ge=1, description="gold cases a keyword must appear in")
    holdout_share: float = Field(
        0.3, gt=0.0, lt=1.0, description="gold slice kept out of LF mining to measure accuracy"
    )
    label_model_epochs: int = Field(100, ge=1, description="Snorkel LabelModel training epochs")
    seed: int = 13


class DataConfig(Section):
    source: SourceConfig = SourceConfig()
    synth: SynthConfig = SynthConfig()
    validation: ValidationConfig = ValidationConfig()
    pii: PiiConfig = PiiConfig()
    weak: WeakConfig = WeakConfig()
    raw_retention_days: float = Field(
        0.0,
        ge=0.0,
        description="days a raw (unredacted) staged batch is kept after it was accepted or "
        "released; 0 = deleted as soon as its redacted copy is written",
    )
    quarantine_retention_days: float = Field(
        14.0,
        ge=0.0,
        description="days a quarantined raw batch waits for a person to fix and release it; "
        "then it is purged (the ledger keeps its hash, row count and failed expectations)",
    )
    validation_share: float = Field(0.15, gt=0.0, lt=0.5, description="held-out share")
    split_seed: int = 13
