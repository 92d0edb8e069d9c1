"""Writes a synthetic world to disk: taxonomy, docs, daily batches, label-noise truth, manifest.

Layout under the output folder::

    taxonomy.json            {"company", "topics": [{name, title, description,
                                                      introduced_day, macros}]}
    docs.jsonl               one KnowledgeDoc per topic
    batches/day-001.jsonl    LabeledCase per simulated day
    truth/day-001.jsonl      LabelFlip per case whose topic label was flipped (may be empty)
    manifest.json            seed, days, config, drift day, counts per day, files with sha256
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.data.contract import write_jsonl
from pipelines.data.synth.world import DayBatch, World

COMPANY = "Paylane"


@dataclass(frozen=True)
class DayCounts:
    day: int
    cases: int
    answerable: int
    not_answerable: int
    followups: int
    flipped: int
    pii_cases: int
    drift_topic_cases: int


@dataclass(frozen=True)
class WorldSummary:
    """What `write_world` wrote: where, from which seed, and the counts per day."""

    out: Path
    seed: int
    drift_day: int | None
    topics: int
    per_day: tuple[DayCounts, ...]
    files: tuple[str, ...]

    @property
    def cases(self) -> int:
        return sum(day.cases for day in self.per_day)


def day_counts(batch: DayBatch, drift_topic: str | None) -> DayCounts:
    """The counts of one day's batch (labels as written, i.e. after label noise)."""
    answerable = [case for case in batch.cases if case.answerable]
    return DayCounts(
        day=batch.day,
        cases=len(batch.cases),
        answerable=len(answerable),
        not_answerable=len(batch.cases) - len(answerable),
        followups=sum(1 for case in answerable if case.context),
        flipped=len(batch.flips),
        pii_cases=batch.pii_cases,
        drift_topic_cases=sum(
            1 for case in answerable if drift_topic and case.topic == drift_topic
        ),
    )


def write_world(world: World, out: Path, days_root: Path | None = None) -> WorldSummary:
    """Write `world` under `out`, replacing an earlier world's day files; returns a summary.

    The daily `batches/` and `truth/` (the customers' raw messages, with their planted PII) go
    under `days_root` when given — e.g. outside CASEPILOT_HOME, where the outside world keeps
    them — else under `out`; the manifest records where.
    """
    out = Path(out)
    days_root = Path(days_root) if days_root is not None else out
    out.mkdir(parents=True, exist_ok=True)
    for folder in ("batches", "truth"):
        (days_root / folder).mkdir(parents=True, exist_ok=True)
        for stale in sorted((days_root / folder).glob("day-*.jsonl")):
            stale.unlink()
    written = [_write_json(out / "taxonomy.json", _taxonomy(world))]
    write_jsonl(world.docs, out / "docs.jsonl")
    written.append("docs.jsonl")
    day_files = []
    for batch in world.days:
        name = f"day-{batch.day:03d}.jsonl"
        write_jsonl(batch.cases, days_root / "batches" / name)
        write_jsonl(batch.flips, days_root / "truth" / name)
        day_files += [f"batches/{name}", f"truth/{name}"]
    per_day = tuple(day_counts(batch, world.drift_topic) for batch in world.days)
    manifest = {
        "generator": "casepilot data synth",
        "company": COMPANY,
        "seed": world.config.seed,
        "days": world.config.days,
        "drift_day": world.drift_day,
        "drift_topic": world.drift_topic,
        "topics": [topic.name for topic in world.topics],
        "config": world.config.model_dump(mode="json"),
        "counts": [asdict(counts) for counts in per_day],
        "files": [_file_entry(out, name) for name in written]
        + [_file_entry(days_root, name) for name in day_files],
    }
    if days_root != out:
        manifest["days_root"] = str(days_root.resolve())
    _write_json(out / "manifest.json", manifest)
    return WorldSummary(
        out=out,
        seed=world.config.seed,
        drift_day=world.drift_day,
        topics=len(world.topics),
        per_day=per_day,
        files=(*written, *day_files, "manifest.json"),
    )


def _taxonomy(world: World) -> dict:
    return {"company": COMPANY, "topics": [asdict(topic) for topic in world.topics]}


def _write_json(path: Path, payload: dict) -> str:
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path.name


def _file_entry(out: Path, name: str) -> dict:
    data = (out / name).read_bytes()
    return {"path": name, "sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n")}
