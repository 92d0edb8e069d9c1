"""Run the repo's Great Expectations suite on a batch frame; summarise and render the result.

The suite is data (`suites/labeled_case.json`): its bounds are GE suite parameters
(`{"$PARAMETER": "max_pii_rate"}`) filled from params.yaml at run time, so the thresholds live in
one place and the expectations are reviewable as a file. One ephemeral GE context per process.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

SUITE_PATH = Path(__file__).with_name("suites") / "labeled_case.json"
# Columns whose values are customer text: never copied into a report (they may hold PII).
TEXT_COLUMNS = frozenset({"message", "agent_reply", "reply_draft", "context"})
_RESULT_LISTS = ("partial_unexpected_list", "partial_unexpected_counts", "unexpected_list")


@dataclass(frozen=True)
class ValidationSummary:
    """A batch's verdict: passed, failed expectations by name, observed values, skipped checks."""

    batch_id: str
    origin: str
    rows: int
    passed: bool
    failed: list[str]
    observed: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    validated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    @classmethod
    def from_json(cls, text: str) -> ValidationSummary:
        return cls(**json.loads(text))


def expectation_name(config: Any) -> str:
    """`expect_…(column)`: how reports, quarantine and alerts name an expectation."""
    column = config.kwargs.get("column")
    return f"{config.type}({column})" if column else config.type


@functools.cache
def _validation_definition() -> Any:
    """The process-wide ephemeral GE context with the repo suite and a whole-frame batch."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context = gx.get_context(
        mode="ephemeral",
        project_config=DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False),
        ),
    )
    raw = json.loads(SUITE_PATH.read_text(encoding="utf-8"))
    suite = context.suites.add(
        gx.ExpectationSuite(
            name=raw["name"], expectations=raw["expectations"], meta=raw.get("meta")
        )
    )
    batch = (
        context.data_sources.add_pandas("intake")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole batch")
    )
    return context.validation_definitions.add(
        gx.ValidationDefinition(name="labeled_case", data=batch, suite=suite)
    )


def run_suite(frame: pd.DataFrame, parameters: dict[str, Any]) -> Any:
    """Validate `frame` with the repo suite; returns GE's `ExpectationSuiteValidationResult`."""
    result = _validation_definition().run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters,
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 10},
    )
    _scrub(result)
    return result


def summarise(
    result: Any, *, batch_id: str, origin: str, rows: int, skipped: dict[str, str]
) -> ValidationSummary:
    """Turn a GE result into a `ValidationSummary` (failed names + observed values)."""
    failed, observed = [], {}
    for item in result.results:
        name = expectation_name(item.expectation_config)
        observed[name] = _observation(item)
        if not item.success:
            failed.append(name)
    return ValidationSummary(
        batch_id=batch_id,
        origin=origin,
        rows=rows,
        passed=bool(result.success),
        failed=failed,
        observed=observed,
        skipped=skipped,
    )


def render_html(result: Any) -> str:
    """GE's own HTML rendering of the validation result (the data-docs page for it)."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    return DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))


def _observation(item: Any) -> Any:
    info = item.exception_info or {}
    # One dict for the expectation, or one per metric that failed to compute.
    for problem in [info, *(v for v in info.values() if isinstance(v, dict))]:
        if problem.get("raised_exception"):
            return {"error": str(problem.get("exception_message"))}
    result = item.result or {}
    if "observed_value" in result:
        return result["observed_value"]
    keys = ("element_count", "unexpected_count", "unexpected_percent", "partial_unexpected_list")
    return {key: result[key] for key in keys if key in result}


def _scrub(result: Any) -> None:
    """Drop customer text from the result, redact PII in other columns' example values, and make
    numbers plain floats (GE's renderer needs it). The result is saved as the batch's report."""
    for item in result.results:
        values = item.result or {}
        text_column = item.expectation_config.kwargs.get("column") in TEXT_COLUMNS
        for key in _RESULT_LISTS:
            if key in values:
                values[key] = [] if text_column else _redacted(values[key])
        for key, value in list(values.items()):
            values[key] = _plain(value)


def _redacted(value: Any) -> Any:
    """`value` with PII redacted in every string (a case id or labeler may hold an e-mail)."""
    from pipelines.data.redact import redact_text

    if isinstance(value, str):
        return redact_text(value).text
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
