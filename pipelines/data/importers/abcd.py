"""ABCD agent guidelines → KnowledgeDocs: one help-centre article per subflow."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from pipelines.data.contract import KnowledgeDoc
from pipelines.data.importers.intents import dataset_file, read_json
from pipelines.data.importers.mapping import DEFAULT_CREATED_AT, DataImportError


def slug(name: str) -> str:
    """'Single-Item Query' → 'single_item_query' (ABCD's ontology spells flows this way)."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def import_abcd_docs(
    root: Path,
    *,
    topic_level: Literal["flow", "subflow"] = "flow",
    created_at: datetime = DEFAULT_CREATED_AT,
) -> list[KnowledgeDoc]:
    """One KnowledgeDoc per subflow of guidelines.json; topic = the flow (or flow.subflow)."""
    path = dataset_file(root, "guidelines.json", "abcd_policies")
    guidelines = read_json(path)
    docs = []
    for flow_name, flow in guidelines.items():
        try:
            for subflow_name, subflow in flow["subflows"].items():
                key = f"{slug(flow_name)}.{slug(subflow_name)}"
                docs.append(
                    KnowledgeDoc(
                        doc_id=f"abcd:{key}",
                        topic=slug(flow_name) if topic_level == "flow" else key,
                        title=f"{flow_name}: {subflow_name}",
                        body=subflow_body(flow.get("description", ""), subflow),
                        updated_at=created_at,
                    )
                )
        except (AttributeError, KeyError, TypeError, ValidationError) as err:
            raise DataImportError(
                f"{path}: flow {flow_name!r} is not in ABCD's guidelines format ({err!r}); "
                "each flow needs subflows {name: {instructions: [...], actions: [...]}}"
            ) from err
    return docs


def subflow_body(description: str, subflow: dict[str, Any]) -> str:
    """A subflow's guideline as plain text: scope, instructions, then the numbered steps."""
    lines = [f"Scope: {description}"] if description else []
    lines += [text.strip() for text in subflow.get("instructions", []) if text.strip()]
    actions = subflow.get("actions", [])
    if actions:
        lines.append("Steps:")
    for number, action in enumerate(actions, start=1):
        button = action.get("button", "")
        step = action.get("text", "").strip()
        subtext = [sub.strip() for sub in action.get("subtext", []) if sub.strip()]
        if button and button != "N/A" and f"[{button}]" not in " ".join([step, *subtext]):
            step += f" [{button}]"
        lines.append(f"{number}. {step}")
        lines += [f"   - {sub}" for sub in subtext]
    return "\n".join(lines)
