"""The base of every params.yaml section model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """A params.yaml section: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")
