"""params.yaml `review:`: the daily review queue in Label Studio."""

from __future__ import annotations

from pydantic import Field, model_validator

from pipelines.config.section import Section


class ReviewConfig(Section):
    """The daily review queue in Label Studio (flows/lifecycle/review.py, monitoring/review/)."""

    daily_size: int = Field(
        60,
        ge=4,
        description="predictions sent to reviewers per review run: the day's first run samples "
        "the last lookback_hours, a later run that day only the requests logged since",
    )
    lookback_hours: float = Field(
        24.0, gt=0, description="the day's sample is drawn from the log's last N hours"
    )
    seed: int = Field(11, description="sampling seed; the day's date is mixed in")
    low_confidence: float = Field(
        0.6, gt=0, lt=1, description="topic probability below which an answer is low-confidence"
    )
    stratum_weights: dict[str, float] = Field(
        default_factory=lambda: {
            "answered": 1.0,
            "abstained": 2.0,
            "disagreement": 3.0,
            "low_confidence": 2.0,
        },
        description="oversampling weight per decision stratum (allocation ~ size x weight); "
        "topics are spread within each stratum (systematic sampling in topic order)",
    )
    double_label_share: float = Field(
        0.2, ge=0, le=1, description="share of sampled items labelled by two reviewers"
    )
    reviewers: tuple[str, ...] = Field(
        ("reviewer-1", "reviewer-2"),
        min_length=1,
        description="Label Studio reviewer accounts (passwords/tokens in the secrets folder)",
    )
    demo_error_rate: float = Field(
        0.05, ge=0, le=1, description="the demo's simulated reviewer mislabels this share"
    )
    port: int = Field(8089, ge=1, le=65535, description="Label Studio on 127.0.0.1")
    start_with_up: bool = Field(
        True,
        description="`casepilot up` starts Label Studio (false: the review flows use one "
        "already running on review.port)",
    )
    startup_timeout_s: float = Field(
        600.0,
        gt=0,
        description="how long `casepilot up` waits for Label Studio (first start: accounts, "
        "migrations check; minutes on a busy 2-core machine)",
    )
    project_title: str = Field("casepilot review", min_length=1)
    batch_prefix: str = Field(
        "review", min_length=1, description="reviewed batches land as <prefix>-<date>.jsonl"
    )

    @model_validator(mode="after")
    def _known_strata(self) -> ReviewConfig:
        known = {"answered", "abstained", "disagreement", "low_confidence"}
        unknown = set(self.stratum_weights) - known
        if unknown or any(w <= 0 for w in self.stratum_weights.values()):
            raise ValueError(
                f"stratum_weights: keys must be among {sorted(known)} with weights > 0 "
                f"(got {self.stratum_weights})"
            )
        return self
