"""The review queue on Prefect: `review` (daily sample -> Label Studio) and `review-collect`.

`review`: draw the day's stratified sample from the prediction log (`monitoring.review.sample`),
create or update the one Label Studio project (labeling config from the taxonomy) and import the
items as tasks. `review-collect`: pull finished annotations through the SDK, land the agreed
ones as a `LabeledCase` batch (label_source=review) in the intake source folder - the next
intake validates, redacts and versions it like any batch, so the next retrain trains on it -
and record the day's reviewed accuracy with intervals, inter-reviewer agreement and the
label-free calibration (`CASEPILOT_HOME/review/history.json`; `monitoring.review.run`).
Both talk to the Label Studio server `flows/platform/review_server.py` starts, as its admin account.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger
from prefect.states import Completed

from flows.lifecycle.hooks import FLOW_OPTIONS, load_flow_params
from flows.platform import review_server
from monitoring.review import run as review_run
from monitoring.review import studio as review_studio
from monitoring.review.simulate import label_through_studio

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

    from pipelines.config import Params
    from pipelines.data.contract import LabeledCase


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def studio_client(params: Params, reviewer: str | None = None) -> LabelStudio:
    """An SDK client of the local Label Studio as its admin (or as `reviewer`)."""
    creds = review_server.load_or_create_credentials(params.home, params.review.reviewers)
    account = creds.reviewers[reviewer] if reviewer else creds.admin
    return review_studio.connect(review_server.url(params), account.token)


def taxonomy(params: Params, fallback: Sequence[str] = ()) -> list[str]:
    """Topic names from `data.validation.taxonomy`, else `fallback` (e.g. the sample's topics)."""
    from pipelines.data.intake.checks import load_taxonomy
    from pipelines.data.intake.sources import resolve_under

    topics = load_taxonomy(resolve_under(params.home.data, params.data.validation.taxonomy))
    return sorted(topics or {t for t in fallback if t})


@flow(name="review", **FLOW_OPTIONS)
def review(params_file: str = "params.yaml", day: str | None = None) -> dict[str, Any]:
    """Sample the day's predictions and put them in front of reviewers in Label Studio (a later
    run on the same day adds a sample of the requests logged since: `review_run.draw_day`)."""
    params = load_flow_params(params_file)
    day = day or today()
    if not review_run.has_requests(params):  # a quiet run, not a failure: nothing served yet
        why = f"nothing to review: no requests in the last {params.review.lookback_hours:g} h"
        return Completed(message=why, data={"day": day, "sampled": 0, "imported": 0})
    sample = review_run.draw_day(params, day)
    if sample.empty:  # quiet: the day's sample already holds every request logged until now
        why = f"nothing new to review for {day}: no requests since the day's last draw"
        return Completed(message=why, data={"day": day, "sampled": 0, "imported": 0})
    client = studio_client(params)
    topics = taxonomy(params, sample["champion_topic"].dropna().tolist())
    cfg = params.review
    project = review_studio.ensure_project(
        client, cfg.project_title, topics, cfg.double_label_share
    )
    added = review_studio.import_sample(client, project, sample)
    url = f"{review_server.url(params)}/projects/{project}/data"
    get_run_logger().info("review %s: %d sampled, %d new tasks at %s", day, len(sample), added, url)
    return {
        "day": day,
        "sampled": len(sample),
        "imported": added,
        "project": project,
        "url": url,
        "strata": sample["stratum"].value_counts().to_dict(),
    }


@flow(name="review-collect", **FLOW_OPTIONS)
def review_collect(params_file: str = "params.yaml", day: str | None = None) -> dict[str, Any]:
    """Pull finished annotations: land them for intake, record reviewed accuracy and agreement."""
    params = load_flow_params(params_file)
    if not review_run.has_samples(params):  # a quiet run: the `review` flow sampled nothing yet
        return Completed(message="nothing to collect: no review sample yet", data={"labels": 0})
    client = studio_client(params)
    sample = review_run.load_samples(params)
    project = review_studio.project_id(client, params.review.project_title)
    labels = review_studio.collect_labels(client, project)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    batch, cases, disputed = review_run.land_batch(params, sample, labels, stamp)
    days = sorted(set(sample[sample["request_id"].isin({x.request_id for x in labels})]["day"]))
    if day is not None:
        days = [d for d in days if d == day]
    summaries = {d: review_run.summarise_day(params, d, labels) for d in days}
    get_run_logger().info(
        "review-collect: %d labels, %d cases landed in %s, %d held back (reviewers disagree)",
        len(labels),
        cases,
        batch,
        len(disputed),
    )
    return {
        "labels": len(labels),
        "batch": str(batch) if batch else None,
        "cases": cases,
        "disputed": disputed,
        "days": summaries,
    }


def simulate_reviewers(
    params_file: str,
    truth: Mapping[str, LabeledCase],
    *,
    error_rate: float | None = None,
    seed: int = 0,
) -> int:
    """The demo's reviewers: label every open task from the world's truth through the API.

    Each `review.reviewers` account submits with its own token; `error_rate` defaults to
    `review.demo_error_rate`. Returns the annotations submitted.
    """
    params = load_flow_params(params_file)
    topics = taxonomy(params, [c.topic for c in truth.values() if c.topic])
    client = studio_client(params)
    project = review_studio.project_id(client, params.review.project_title)
    clients = {name: studio_client(params, name) for name in params.review.reviewers}
    rate = params.review.demo_error_rate if error_rate is None else error_rate
    return label_through_studio(
        clients,
        project,
        truth,
        topics=topics,
        error_rate=rate,
        threshold=params.monitor.match_threshold,
        seed=seed,
    )
