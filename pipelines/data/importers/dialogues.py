"""TweetSumm dialogues → one LabeledCase per customer turn that an agent turn answers."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from pipelines.data.contract import LabeledCase, Turn
from pipelines.data.importers.intents import dataset_file
from pipelines.data.importers.mapping import DEFAULT_CREATED_AT, DataImportError

TWEETSUMM_SPLITS = ("train", "valid")
TWEETSUMM_FILE = "dialogs_train_valid.jsonl"
# Nobody labeled these turns: "an agent replied to it" is a rule, hence a weak label.
TWEETSUMM_LABELER = "tweetsumm:agent-replied"


def import_tweetsumm(
    root: Path,
    splits: Sequence[str] | None = None,
    *,
    created_at: datetime = DEFAULT_CREATED_AT,
) -> list[LabeledCase]:
    """Cases from TweetSumm: message = a customer turn, agent_reply = the agent turn right after it.

    context = every earlier turn of the dialogue in order; answerable = True (an agent did
    answer it), topic = null (TweetSumm has no topic labels), label_source = "weak".
    """
    path = dataset_file(root, TWEETSUMM_FILE, "tweetsumm")
    wanted = set(TWEETSUMM_SPLITS if splits is None else splits)
    unknown = sorted(wanted - set(TWEETSUMM_SPLITS))
    if unknown or not wanted:
        raise DataImportError(
            f"tweetsumm: splits {unknown or '()'} unknown; "
            f"choose from {', '.join(TWEETSUMM_SPLITS)}"
        )
    cases = []
    for number, dialogue in _dialogues(path):
        if dialogue.get("split") not in wanted:
            continue
        try:
            cases.extend(_dialogue_cases(dialogue, created_at))
        except (KeyError, TypeError, ValidationError) as err:
            raise DataImportError(
                f"{path}:{number}: not a TweetSumm dialogue ({err!r}); each line needs "
                'conversation_id, split and turns [{"speaker": "customer"|"agent", "text": ...}]'
            ) from err
    return cases


def _dialogues(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                raise DataImportError(f"{path}:{number}: not valid JSON ({err})") from err


def _dialogue_cases(dialogue: dict[str, Any], created_at: datetime) -> Iterator[LabeledCase]:
    turns = [Turn(role=turn["speaker"], text=turn["text"].strip()) for turn in dialogue["turns"]]
    for index, (turn, following) in enumerate(zip(turns, turns[1:], strict=False)):
        if turn.role != "customer" or following.role != "agent" or not turn.text:
            continue
        yield LabeledCase(
            case_id=f"tweetsumm:{dialogue['conversation_id']}:{index}",
            created_at=created_at,
            message=turn.text,
            context=tuple(turns[:index]),
            answerable=True,
            topic=None,
            agent_reply=following.text or None,
            label_source="weak",
            labeler=TWEETSUMM_LABELER,
        )
