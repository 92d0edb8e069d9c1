"""The review project in Label Studio, through its SDK (`label-studio-sdk`): config, tasks, labels.

One project (`review.project_title`) with a labeling config made for this job: the customer
message, the champion's and the shadow's suggestions and the reply the agent sent; the reviewer
says whether the message was answerable, picks the correct topic from the taxonomy, rates each
suggestion (correct / usable with edits / wrong / unsafe) and may write a corrected reply.
Tasks carry the sample's request id, stratum and inclusion probability so the labels can be joined
back to the design. The server itself is started by `flows/platform/review_server.py`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import quoteattr, unescape

from monitoring.review.labels import ReviewLabel

if TYPE_CHECKING:
    import pandas as pd
    from label_studio_sdk import LabelStudio

NOT_ANSWERABLE_TOPIC = "none"  # the topic choice for a message that is not answerable
RATING_CHOICES = (
    ("correct", "correct"),
    ("usable with edits", "usable"),
    ("wrong", "wrong"),
    ("unsafe", "unsafe"),
)
TASK_TEXT = {
    "message": "message",
    "champion": "champion_text",
    "shadow": "shadow_text",
    "sent": "sent_reply",
}


def label_config(topics: Sequence[str]) -> str:
    """The Label Studio labeling config (XML) for reviewing one prediction."""
    if not topics:
        raise ValueError("the labeling config needs the taxonomy's topics; none were given")
    topic_choices = "".join(f"<Choice value={quoteattr(t)}/>" for t in topics)
    ratings = "".join(
        f"<Choice value={quoteattr(v)} alias={quoteattr(a)}/>" for v, a in RATING_CHOICES
    )

    def rating(name: str, to: str, required: str) -> str:
        return (
            f'<Choices name="{name}" toName="{to}" choice="single" showInline="true" '
            f'required="{required}">{ratings}</Choices>'
        )

    return (
        '<View style="display:grid;grid-template-columns:1fr 1fr;column-gap:1em">'
        '<View><Header value="Customer message" size="5"/><Text name="message" value="$message"/>'
        '<Header value="Reply the agent sent" size="5"/><Text name="sent" value="$sent_reply"/>'
        '<Header value="Was the message answerable?" size="5"/>'
        '<Choices name="answerable" toName="message" choice="single" showInline="true" '
        'required="true"><Choice value="answerable"/><Choice value="not answerable"/></Choices>'
        '<Header value="Correct topic" size="5"/>'
        f'<Choices name="topic" toName="message" choice="single" showInline="true">'
        f'<Choice value="{NOT_ANSWERABLE_TOPIC}"/>{topic_choices}</Choices></View>'
        '<View><Header value="Champion suggestion" size="5"/>'
        '<Text name="champion" value="$champion_text"/>'
        f"{rating('champion_rating', 'champion', 'false')}"
        '<Header value="Shadow (challenger) suggestion" size="5"/>'
        '<Text name="shadow" value="$shadow_text"/>'
        f"{rating('shadow_rating', 'shadow', 'false')}"
        '<Header value="Corrected reply (optional)" size="5"/>'
        '<TextArea name="corrected_reply" toName="message" rows="3" maxSubmissions="1"/>'
        "</View></View>"
    )


def connect(url: str, token: str) -> LabelStudio:
    """An SDK client signed in with a (legacy) API token."""
    from label_studio_sdk import LabelStudio

    return LabelStudio(base_url=url, api_key=token)


def topics_of(config: str) -> list[str]:
    """The topic choices of a labeling config made by `label_config`."""
    block = re.search(r'<Choices name="topic".*?</Choices>', config or "", re.S)
    values = re.findall(r'<Choice value="([^"]*)"', block.group(0)) if block else []
    return [unescape(v) for v in values if v != NOT_ANSWERABLE_TOPIC]


def find_project(client: LabelStudio, title: str) -> Any | None:
    """The project called `title`, or None."""
    return next((p for p in client.projects.list(title=title) if p.title == title), None)


def project_id(client: LabelStudio, title: str) -> int:
    """The review project's id; a clear error when the `review` flow has not created it."""
    project = find_project(client, title)
    if project is None:
        raise LookupError(f"no Label Studio project {title!r}: run the `review` flow first")
    return int(project.id)


def ensure_project(
    client: LabelStudio, title: str, topics: Sequence[str], double_share: float
) -> int:
    """Create the review project, or add new topics to its config (never drop one); its id."""
    overlap = {
        "maximum_annotations": 2 if double_share > 0 else 1,
        "overlap_cohort_percentage": round(100 * double_share),
    }
    project = find_project(client, title)
    if project is not None:
        known = topics_of(project.label_config)
        merged = known + sorted(set(topics) - set(known))
        if merged != known:
            client.projects.update(id=project.id, label_config=label_config(merged), **overlap)
        return int(project.id)
    description = "casepilot: daily review sample of served predictions (label_source=review)"
    created = client.projects.create(
        title=title,
        label_config=label_config(sorted(set(topics))),
        description=description,
        show_skip_button=False,
        **overlap,
    )
    return int(created.id)


def _shown(value: Any, missing: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return missing
    return str(value)


def task_data(row: dict[str, Any]) -> dict[str, Any]:
    """What one task shows, plus the design fields the labels are joined back with."""
    reason = _shown(row.get("abstain_reason"), "no reason logged")
    return {
        "message": row["message"],
        "champion_text": _shown(row.get("champion_text"), f"(no suggestion: {reason})"),
        "shadow_text": _shown(row.get("shadow_text"), "(no shadow suggestion)"),
        "sent_reply": _shown(row.get("sent_reply"), "(the agent has not replied yet)"),
        "request_id": row["request_id"],
        "case_id": row["case_id"],
        "stratum": row["stratum"],
        "inclusion_prob": float(row["inclusion_prob"]),
        "double_label": bool(row["double_label"]),
    }


def tasks(client: LabelStudio, project_id: int) -> list[Any]:
    """Every task of the project with its annotations."""
    return list(client.tasks.list(project=project_id, fields="all"))


def import_sample(client: LabelStudio, project_id: int, sample: pd.DataFrame) -> int:
    """Import the sample's items not in the project yet; returns how many were added."""
    present = {t.data.get("request_id") for t in tasks(client, project_id)}
    new = [task_data(r) for r in sample.to_dict("records") if r["request_id"] not in present]
    if new:
        client.projects.import_tasks(id=project_id, request=new, return_task_ids=True)
    return len(new)


def _choice(name: str, to: str, value: str) -> dict[str, Any]:
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": [value]}}


def annotation_result(label: ReviewLabel) -> list[dict[str, Any]]:
    """The Label Studio result JSON a reviewer's form submission produces for `label`."""
    result = [
        _choice("answerable", "message", "answerable" if label.answerable else "not answerable"),
        _choice("topic", "message", label.topic or NOT_ANSWERABLE_TOPIC),
    ]
    for name, to, value in (
        ("champion_rating", "champion", label.champion_rating),
        ("shadow_rating", "shadow", label.shadow_rating),
    ):
        if value:
            result.append(_choice(name, to, value))
    if label.corrected_reply:
        result.append(
            {
                "from_name": "corrected_reply",
                "to_name": "message",
                "type": "textarea",
                "value": {"text": [label.corrected_reply]},
            }
        )
    return result


def submit(client: LabelStudio, task_id: int, label: ReviewLabel) -> int:
    """Submit `label` as an annotation of the client's own user; returns the annotation id."""
    return int(client.annotations.create(id=task_id, result=annotation_result(label)).id)


def _values(result: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in result:
        value = item.get("value", {})
        if "choices" in value and value["choices"]:
            out[item["from_name"]] = value["choices"][0]
        elif "text" in value and value["text"]:
            out[item["from_name"]] = value["text"][0]
    return out


def parse_annotation(task: Any, annotation: dict[str, Any], reviewer: str) -> ReviewLabel | None:
    """A `ReviewLabel` from one submitted annotation; None if cancelled or unanswered."""
    if annotation.get("was_cancelled"):
        return None
    values = _values(annotation.get("result") or [])
    if "answerable" not in values:
        return None
    answerable = values["answerable"] == "answerable"
    topic = values.get("topic")
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    reviewed_at = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) if stamp else None
    return ReviewLabel(
        request_id=str(task.data["request_id"]),
        case_id=str(task.data["case_id"]),
        reviewer=reviewer,
        reviewed_at=(reviewed_at or datetime.now(UTC)).astimezone(UTC),
        answerable=answerable,
        topic=topic if answerable and topic != NOT_ANSWERABLE_TOPIC else None,
        champion_rating=values.get("champion_rating"),
        shadow_rating=values.get("shadow_rating"),
        corrected_reply=values.get("corrected_reply"),
    )


def reviewer_names(client: LabelStudio) -> dict[int, str]:
    """User id -> reviewer id (the local part of the account's email)."""
    return {int(u.id): str(u.email).split("@")[0] for u in client.users.list()}


def collect_labels(client: LabelStudio, project_id: int) -> list[ReviewLabel]:
    """Every finished annotation of the project as a `ReviewLabel`."""
    names = reviewer_names(client)
    labels = []
    for task in tasks(client, project_id):
        for annotation in task.annotations or []:
            annotation = annotation if isinstance(annotation, dict) else annotation.dict()
            who = annotation.get("completed_by")
            who = who.get("id") if isinstance(who, dict) else who
            label = parse_annotation(task, annotation, names.get(int(who), f"user-{who}"))
            if label is not None:
                labels.append(label)
    return labels
