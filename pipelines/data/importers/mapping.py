"""The column mapping of the generic importer: which column feeds which LabeledCase field.

A mapping is a YAML file of `ColumnMapping` keys (see README.md); unknown keys fail with the
closest valid key. Every importer error is a `DataImportError` naming the problem and the fix.
"""

from __future__ import annotations

import difflib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.data.contract import LabelSource, UnanswerableKind

# Datasets without times all get this created_at, so every import is byte-for-byte repeatable.
DEFAULT_CREATED_AT = datetime(2026, 1, 1, tzinfo=UTC)


class DataImportError(ValueError):
    """Input that cannot be imported; the message names the problem and the fix."""


class ColumnMapping(BaseModel):
    """Which column of a table feeds which LabeledCase field, and how labels become labels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_column: str = Field(description="the customer message")
    case_id_column: str | None = Field(None, description="else '<prefix>-<row>-<content hash>'")
    case_id_prefix: str | None = Field(None, description="prefix of made-up ids; else file stem")
    created_at_column: str | None = Field(None, description="else the fixed created_at passed in")
    created_at_format: str | None = Field(None, description="strptime format; else ISO 8601")
    topic_column: str | None = Field(None, description="the raw label; empty cells → topic null")
    topic_map: dict[str, str | None] = Field(
        default_factory=dict, description="raw label → topic; labels not listed are kept as is"
    )
    not_answerable_labels: dict[str, UnanswerableKind | None] = Field(
        default_factory=dict,
        description="raw labels meaning 'not answerable' (a list, or label → unanswerable_kind)",
    )
    unanswerable_kind: UnanswerableKind | None = Field(
        None, description="kind for not-answerable labels listed without their own kind"
    )
    answerable_column: str | None = Field(None, description="true/false, yes/no or 1/0")
    agent_reply_column: str | None = Field(None, description="what the agent actually sent")
    context_column: str | None = Field(None, description="prior turns: [{role, text}, …] or JSON")
    label_source: LabelSource = "human"
    labeler: str | None = None
    drop_empty_messages: bool = Field(False, description="skip rows whose message is empty")

    @field_validator("not_answerable_labels", mode="before")
    @classmethod
    def _list_means_no_kind(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | set | frozenset):
            return dict.fromkeys(value)
        return value

    @model_validator(mode="after")
    def _labels_in_one_place(self) -> ColumnMapping:
        both = sorted(set(self.topic_map) & set(self.not_answerable_labels))
        if both:
            raise ValueError(
                f"labels {both} are in both topic_map and not_answerable_labels; keep each in one"
            )
        if (self.topic_map or self.not_answerable_labels) and not self.topic_column:
            raise ValueError("topic_map / not_answerable_labels need topic_column; set it")
        return self

    def columns(self) -> dict[str, str]:
        """The mapped table columns, keyed by the mapping field that names them."""
        fields = [name for name in type(self).model_fields if name.endswith("_column")]
        return {name: getattr(self, name) for name in fields if getattr(self, name)}

    def kind_of(self, label: str) -> UnanswerableKind | None:
        """The unanswerable_kind of a not-answerable raw label."""
        return self.not_answerable_labels[label] or self.unanswerable_kind


def load_mapping(path: Path) -> ColumnMapping:
    """Read a ColumnMapping from YAML; unknown keys fail with the closest valid key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataImportError(f"mapping file {path} not found; check the path") from None
    except yaml.YAMLError as err:
        raise DataImportError(f"{path}: not valid YAML ({err}); fix the syntax") from err
    if not isinstance(raw, dict):
        raise DataImportError(f"{path}: a mapping must be a YAML mapping of keys; see README.md")
    return mapping_from_dict(raw, origin=str(path))


def mapping_from_dict(raw: dict[str, Any], origin: str = "mapping") -> ColumnMapping:
    """Validate a ColumnMapping from a dict, with error messages that name the key and the fix."""
    try:
        return ColumnMapping.model_validate(raw)
    except ValidationError as err:
        allowed = list(ColumnMapping.model_fields)
        problems = []
        for error in err.errors():
            key = ".".join(str(part) for part in error["loc"]) or "mapping"
            if error["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(error["loc"][0]), allowed, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                problems.append(f"unknown key '{key}' ({hint}allowed: {', '.join(allowed)})")
            else:
                problems.append(f"{key}: {error['msg']}")
        raise DataImportError(f"{origin}: " + "; ".join(problems)) from None
