"""The review loop's steps on disk, for the `review` / `review-collect` flows (no Prefect here).

State under `CASEPILOT_HOME/review/`: `samples/<day>.parquet` (the drawn items with their
inclusion probabilities; a day's later runs append draws from newer traffic) and `<day>.json`
(the day's window, its draws and its label-free estimates),
`reviewed/<day>.parquet` (items joined with their first label), `landed.json` (request ids
already sent to intake) and `history.json` (one entry per reviewed day: reviewed accuracy with
intervals, per topic, agreement, label-free calibration). `reviewed_evidence` reads the latest
day for the promotion decision.
"""

from __future__ import annotations

import json
import math
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitoring.online import estimated_accuracy
from monitoring.review.estimate import (
    EMPTY,
    Estimate,
    difference_estimate,
    indicators,
    label_free_calibration,
    per_topic_accuracy,
    ratio_estimate,
    reviewed_accuracy,
)
from monitoring.review.labels import ReviewLabel, agreement, labeled_cases, reviewed_frame
from monitoring.review.sample import draw_review_sample
from pipelines.data.contract import write_jsonl

if TYPE_CHECKING:
    import pandas as pd

    from pipelines.config import Params

# which reviewed figure speaks for each stage in a promotion decision
STAGE_METRIC = {
    "trigger": "trigger_accuracy",
    "topic": "topic_accuracy",
    "retrieve": "suggestion_correct",
    "answer": "suggestion_correct",
    "tone": "suggestion_correct",
}


def review_dir(params: Params) -> Path:
    return params.home.root / "review"


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else default


def has_requests(params: Params, until: datetime | None = None) -> bool:
    """Whether the prediction log holds requests in the last `review.lookback_hours`."""
    from monitoring.log.store import PredictionLog

    until = until or datetime.now(UTC)
    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        since = until - timedelta(hours=params.review.lookback_hours)
        return not log.window(since=since, until=until, limit=1).empty
    finally:
        log.close()


def has_samples(params: Params) -> bool:
    """Whether the `review` flow stored any day's sample yet."""
    return any((review_dir(params) / "samples").glob("*.parquet"))


def draw_day(params: Params, day: str, until: datetime | None = None) -> pd.DataFrame:
    """Draw the day's review sample, or top it up; returns the items drawn by this call.

    The first draw of `day` samples the prediction log's last `lookback_hours`. A later run on
    the same day (a schedule shorter than a day, a rerun after more traffic) draws only from the
    requests logged since the previous draw, leaving out cases already sampled, and appends them:
    every item a reviewer may already be labeling stays in the day's sample, and traffic that
    arrived later (say, a challenger's first shadow suggestions) still gets reviewed. Each draw is
    a stratified sample of its own window, so the day's inclusion probabilities stay exact.
    Returns an empty frame when nothing new was logged since the previous draw.
    """
    import pandas as pd

    from monitoring.log.store import PredictionLog

    until = until or datetime.now(UTC)
    folder = review_dir(params) / "samples"
    sample_file, meta_file = folder / f"{day}.parquet", folder / f"{day}.json"
    drawn = pd.read_parquet(sample_file) if sample_file.is_file() else None
    meta = _read_json(meta_file, {}) if drawn is not None else {}
    since = until - timedelta(hours=params.review.lookback_hours)
    day_since = datetime.fromisoformat(meta["since"]) if meta else since
    if meta:
        since = max(since, datetime.fromisoformat(meta["until"]))
    log = PredictionLog.from_url(params.prediction_log_url)
    try:
        window = log.window(since=since, until=until)
        if drawn is not None:
            window = window[~window["case_id"].isin(set(drawn["case_id"]))]
            if window.empty:  # a quiet run reads only what came since the last draw
                return drawn.iloc[0:0]
        whole_day = log.window(since=day_since, until=until) if meta else window
    finally:
        log.close()
    draws = int(meta.get("draws", 0))
    seed_day = day if draws == 0 else f"{day}/{draws}"  # each draw its own deterministic seed
    sample = draw_review_sample(window, params.review, day=seed_day)
    if draws:  # another population (a later window): its strata are strata of their own
        sample["stratum"] = sample["stratum"] + f" (draw {draws + 1})"
    sample["day"] = day
    folder.mkdir(parents=True, exist_ok=True)
    merged = sample if drawn is None else pd.concat([drawn, sample], ignore_index=True)
    merged.to_parquet(sample_file, index=False)
    _write_json(
        meta_file,
        {
            "day": day,
            "since": day_since,
            "until": until,
            "draws": draws + 1,
            "requests": len(whole_day),
            "label_free": estimated_accuracy(whole_day),
        },
    )
    return sample


def load_samples(params: Params) -> pd.DataFrame:
    """Every stored day's sample (a request sampled on two days keeps its first)."""
    import pandas as pd

    files = sorted((review_dir(params) / "samples").glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"no review sample under {review_dir(params) / 'samples'}: run the `review` flow first"
        )
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.drop_duplicates("request_id", keep="first").reset_index(drop=True)


def land_batch(
    params: Params, sample: pd.DataFrame, labels: list[ReviewLabel], name: str
) -> tuple[Path | None, int, list[str]]:
    """Write the not-yet-landed reviewed cases as one batch into the intake source folder.

    Returns (batch file or None, cases written, request ids held back for disagreement).
    """
    landed_file = review_dir(params) / "landed.json"
    landed = set(_read_json(landed_file, []))
    fresh = [label for label in labels if label.request_id not in landed]
    cases, disputed = labeled_cases(sample, fresh)
    if not cases:
        return None, 0, disputed
    if params.data.source.kind != "folder":
        raise ValueError("review batches land in a folder source; set data.source.kind: folder")
    folder = params.home.data / params.data.source.path
    path = folder / f"{params.review.batch_prefix}-{name}.jsonl"
    tmp = folder / f".{path.name}.tmp"  # a dot file: intake never reads a half-written batch
    write_jsonl(cases, tmp)
    os.replace(tmp, path)
    ids = {label.request_id for label in fresh if label.request_id not in disputed}
    _write_json(landed_file, sorted(landed | ids))
    return path, len(cases), disputed


def _estimates(values: dict[str, dict[str, Estimate]]) -> dict[str, dict[str, dict]]:
    return {k: {m: e.as_dict() for m, e in v.items()} for k, v in values.items()}


def summarise_day(params: Params, day: str, labels: list[ReviewLabel]) -> dict[str, Any]:
    """Reviewed accuracy (champion, challenger, per topic), agreement and calibration for `day`."""
    folder = review_dir(params)
    sample = load_samples(params)
    sample = sample[sample["day"] == day]
    day_labels = [label for label in labels if label.request_id in set(sample["request_id"])]
    frame = reviewed_frame(sample, day_labels)
    if frame.empty:
        return {"day": day, "reviewed_items": 0}
    (folder / "reviewed").mkdir(parents=True, exist_ok=True)
    frame.to_parquet(folder / "reviewed" / f"{day}.parquet", index=False)
    accuracy = reviewed_accuracy(frame)
    meta = _read_json(folder / "samples" / f"{day}.json", {})
    history = [h for h in _read_json(folder / "history.json", []) if h["day"] != day]
    earlier = [
        {
            "label_free": h["label_free"],
            "reviewed": {m: e["value"] for m, e in h["reviewed"]["champion"].items()},
        }
        for h in history
        if h["day"] < day
    ]
    label_free = {k: (math.nan if v is None else v) for k, v in meta.get("label_free", {}).items()}
    calibration = label_free_calibration(label_free, accuracy["champion"], earlier)
    entry = {
        "day": day,
        "sampled": len(sample),
        "reviewed_items": len(frame),
        "reviewed_at": max(label.reviewed_at for label in day_labels).isoformat(),
        "reviewed": _estimates(accuracy),
        "per_topic": _estimates(per_topic_accuracy(frame)),
        "agreement": agreement(day_labels).as_dict(),
        "label_free": label_free,
        "calibration": {k: vars(v) for k, v in calibration.items()},
    }
    _write_json(folder / "history.json", sorted([*history, entry], key=lambda h: h["day"]))
    return entry


def reviewed_evidence(params: Params, stage: str) -> dict[str, Any] | None:
    """The latest reviewed day's champion-vs-challenger figure for `stage`, or None.

    {"day", "metric", "champion", "challenger", "difference" (challenger - champion, paired on
    the same reviewed items), "cases", "loses": True when the difference's 95% interval lies
    below zero - the challenger is reviewed-worse and must not be requested}.
    """
    import pandas as pd

    metric = STAGE_METRIC[stage]
    files = sorted((review_dir(params) / "reviewed").glob("*.parquet"))
    for path in reversed(files):
        frame = pd.read_parquet(path)
        if not frame["has_shadow"].any():
            continue
        champ_y, champ_z = indicators(frame, "champion")[metric]
        chal_y, chal_z = indicators(frame, "challenger")[metric]
        both = champ_z & chal_z
        diff = difference_estimate(frame, champ_y, chal_y, both)
        return {
            "day": path.stem,
            "metric": metric,
            "champion": ratio_estimate(frame, champ_y, champ_z).as_dict(),
            "challenger": ratio_estimate(frame, chal_y, chal_z).as_dict(),
            "difference": diff.as_dict(),
            "cases": int(both.sum()),
            "loses": bool(diff is not EMPTY and diff.high < 0),
        }
    return None


def latest_values(params: Params) -> dict[str, float]:
    """The latest reviewed day as flat name -> value, for the Evidently dashboard's panels.

    `reviewed_<role>_<metric>` with `_low` / `_high` (95% interval), and per label-free stage
    `label_free_error_<stage>` (label-free minus reviewed) and `calibrated_error_<stage>`.
    """
    history = _read_json(review_dir(params) / "history.json", [])
    if not history:
        return {}
    entry, values = history[-1], {}
    for role, metrics in entry.get("reviewed", {}).items():
        for name, est in metrics.items():
            for suffix, key in (("", "value"), ("_low", "low"), ("_high", "high")):
                values[f"reviewed_{role}_{name}{suffix}"] = float(est[key])
    for stage, cal in entry.get("calibration", {}).items():
        values[f"label_free_error_{stage}"] = float(cal["raw_error"])
        values[f"calibrated_error_{stage}"] = float(cal["calibrated_error"])
    return values


def describe(entry: dict[str, Any], metric: str = "suggestion_correct") -> str:
    """One line for a summary: a reviewed figure with its interval, champion and challenger."""
    parts = []
    for role, metrics in entry.get("reviewed", {}).items():
        est = metrics.get(metric)
        if est and not math.isnan(est["value"]):
            parts.append(f"{role} {est['value']:.1%} [{est['low']:.1%}, {est['high']:.1%}]")
    cases = entry.get("reviewed_items", 0)
    return f"reviewed {metric.replace('_', ' ')} (n={cases}): " + (", ".join(parts) or "n/a")


def reviewed_veto(evidence: dict[str, Any] | None) -> str | None:
    """The reason a promotion must not be requested on reviewed evidence, or None.

    For `decide_promotion`'s caller: a challenger that wins on match rate but whose reviewed
    correctness is significantly worse (the paired difference's 95% interval below 0) is refused.
    """
    if not evidence or not evidence["loses"]:
        return None
    diff, metric = evidence["difference"], evidence["metric"].replace("_", " ")
    return (
        f"reviewed {metric}: challenger {evidence['challenger']['value']:.3f} vs champion "
        f"{evidence['champion']['value']:.3f}, difference {diff['value']:+.3f} "
        f"[{diff['low']:+.3f}, {diff['high']:+.3f}] on {evidence['cases']} reviewed items "
        f"({evidence['day']}) - the challenger is worse where people checked"
    )
