"""The demo's drive of the deployed platform: the outside world acts, the platform does the rest.

The demo starts the platform exactly as an operator would (`casepilot up`: Prefect server and
worker with the lifecycle deployments, schedules and the drift automation, MLflow with sign-in,
the Evidently UI, the BentoML service) and then only plays the outside world: it lands labeled
batches in the intake folder, sends customers' messages and the agents' replies to the service,
and approves promotion requests as the `reviewer` user through MLflow's API (loudly labelled as
automated). Every lifecycle step — training, quantizing, registering, monitoring, paging,
retraining on drift, shadow evidence, promotion requests and notifications, promotion, reloading —
is done by a deployment run, a schedule or the drift automation; the demo waits for it on the
Prefect API and names the flow run that did it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from flows.demo import data as demo_data
from flows.demo import steps as demo_steps
from flows.demo.params import DemoSetup
from flows.demo.platform import FlowRuns, running_platform, wait_until
from flows.demo.receiver import PageReceiver
from flows.demo.service import ServiceClient
from flows.demo.summary import DemoSummary
from flows.demo.traffic import DayTraffic, send_day

OUTSIDE = "demo (outside world)"
REVIEWER = "demo as `reviewer` (automated)"
FIRST_TRAINING = "train + quantize + register (scheduled retrain)"
LATER_STEPS = ("promotion request", "promotion")


def _traffic_line(t: DayTraffic) -> str:
    return (
        f"{t.requests} messages → {t.suggestions} suggestions, {t.feedback} agent replies "
        f"({t.used} used the suggestion), {t.failed} failed, {t.requests / t.seconds:.1f} req/s"
    )


def _not_reached(summary: DemoSummary, why: str) -> None:
    """Record the promotion steps as skipped, with why, so the summary never hides them."""
    for name in LATER_STEPS:
        with summary.step(name) as step:
            step.skip(f"not run: {why}")


def _land(setup: DemoSetup, days: tuple[int, ...]) -> str:
    names = demo_data.deliver_days(setup.params, days)
    return f"{', '.join(names)} → {setup.params.data.source.path}/ (the intake source)"


class Drive:
    """One demo run against a running platform: the waits, the outside world's actions."""

    def __init__(
        self, setup: DemoSetup, summary: DemoSummary, receiver: PageReceiver, platform: Any
    ) -> None:
        self.setup, self.summary, self.receiver = setup, summary, receiver
        self.params = setup.params
        self.console = summary.console or Console()
        self.runs = FlowRuns(platform.prefect_api)
        self.service = ServiceClient.for_platform(self.params)
        self.timeouts = setup.plan

    def traffic(self, day: int, label: str) -> DayTraffic:
        """One simulated day of customers and agents; the day's labels land afterwards."""
        plan = self.setup.plan
        size = plan.shadow_traffic if day in self.setup.timeline.shadow else None
        cases = demo_data.traffic_sample(self.params, day, size or plan.traffic_per_day)
        with self.summary.step(f"traffic day {day} ({label})") as step:
            traffic = send_day(
                self.service, day, cases, concurrency=plan.concurrency,
                match_threshold=self.params.monitor.match_threshold, console=self.console,
                label=label,
            )  # fmt: skip
            landed = _land(self.setup, (day,))
            step.result, step.by = f"{_traffic_line(traffic)}; labels {landed}", OUTSIDE
            step.data = {"traffic": traffic}
        return traffic

    def review(self, since: datetime, days: tuple[int, ...]) -> dict[str, Any]:
        """The scheduled `review` run puts a sample in Label Studio; the demo's reviewers label
        it through Label Studio's API (the outside world); the scheduled `review-collect` run
        brings the labels back through intake and computes the reviewed accuracy."""
        from flows.lifecycle.review import simulate_reviewers

        with self.summary.step("review queue (Label Studio)") as step:
            sampled = self.runs.wait_finished(
                "review", since=since, timeout_s=self.timeouts.wait_s, started_by="schedule"
            )
            truth = demo_data.truth(self.params, days)
            labeled_at = datetime.now(UTC)
            labels = simulate_reviewers(str(self.setup.params_file), truth, seed=days[-1])
            collected = self.runs.wait_finished(
                "review-collect", since=labeled_at, timeout_s=self.timeouts.wait_s,
                started_by="schedule",
            )  # fmt: skip
            reviewed = demo_steps.reviewed_line(self.params)
            step.result = f"{labels} annotations by the demo's reviewers (automated); {reviewed}"
            step.by = f"{sampled.line}; {collected.line}"
            step.data = {"reviewed": reviewed, "annotations": labels}
        return step.data

    def monitor_after(self, since: datetime, name: str) -> dict[str, Any]:
        """The first scheduled `monitor` run after `since`, once finished."""
        with self.summary.step(name) as step:
            run = self.runs.wait_finished(
                "monitor", since=since, timeout_s=self.timeouts.wait_s, started_by="schedule"
            )
            step.result, step.by = run.message or "completed", run.line
            step.data = {"run": run, "breach": "breach=True" in run.message}
        return step.data

    def retrain(self, since: datetime, name: str, started_by: str) -> dict[str, Any]:
        with self.summary.step(name) as step:
            run = self.runs.wait_finished(
                "retrain", since=since, timeout_s=self.timeouts.retrain_wait_s,
                started_by=started_by,
            )  # fmt: skip
            registered = demo_steps.challengers(self.params)
            scenarios = demo_steps.scenario_lines(self.params)
            step.result = "challengers: " + demo_steps.versions_line(registered)
            step.result += "; " + ("; ".join(scenarios) or "scenario gate: not run")
            step.by = run.line
            step.data = {"run": run, "registered": registered, "scenarios": scenarios}
        return step.data

    def requests_and_approval(self, expected: dict[str, str]) -> list[Any]:
        """Wait for the platform's decision on each challenger (a promotion request with a
        notification to the reviewers, or a rejection with its reason), then approve each
        request as the `reviewer` user — the outside world's only registry action."""
        with self.summary.step("promotion request") as step:
            decided = demo_steps.wait_for_decisions(self.params, expected, self.timeouts.wait_s)
            requests = [d for d in decided if d.requested]
            notes = demo_steps.notifications(self.receiver.received())
            step.result = "; ".join(d.line for d in decided) + f"; {len(notes)} notification(s)"
            if self.summary.find("review queue (Label Studio)"):  # beside the match rate
                step.result += "; " + demo_steps.reviewed_line(self.params)
            step.by = ", ".join(sorted({d.requested_by for d in decided}))
            step.data = {"decisions": decided, "notifications": notes}
            if not requests:
                step.skip(step.result + " — nothing to approve")
                return []
        with self.summary.step("approval (automated demo reviewer)") as step:
            approvals = demo_steps.approve_as_reviewer(
                self.params, requests, self.setup.plan.reviewer, self.console
            )
            step.result = "; ".join(a.line for a in approvals) + " — NOT a human review"
            step.by, step.data = REVIEWER, {"approvals": approvals}
        return requests

    def promotion(self, since: datetime, requests: list[Any]) -> dict[str, str]:
        with self.summary.step("promotion") as step:
            served = demo_steps.wait_for_champions(
                self.params, {r.stage: r.version for r in requests}, self.timeouts.wait_s
            )
            # the alias moves before the run that moved it finishes (it then asks for a reload)
            run = wait_until(
                "the promote run that moved `champion` to finish",
                lambda: demo_steps.promote_run(self.runs, since),
                self.timeouts.wait_s,
            )
            step.result = ", ".join(f"{s} → v{v}" for s, v in served.items())
            step.by, step.data = run.line, {"champion": served, "run": run}
        return served

    def serving(self, expected: dict[str, str], name: str) -> dict[str, Any]:
        """Light traffic until the service answers with the expected champion versions."""
        with self.summary.step(name) as step:
            switch = self.service.wait_for_versions(expected, self.timeouts.wait_s)
            step.result = (
                f"serving {switch.versions} after {switch.seconds:.0f} s; "
                f"{switch.requests} requests during the switch, {switch.failed} failed"
            )
            step.by = "BentoML service (registry alias poll, no restart)"
            step.data = {"champion": switch.versions, "failed": switch.failed}
        return step.data


def drive_lifecycle(setup: DemoSetup, summary: DemoSummary, receiver: PageReceiver) -> DemoSummary:
    """land data → (platform: train → request) → approve → (platform: promote → serve) → traffic
    → (platform: monitor → drift → page → retrain → shadow → request + notify) → approve →
    (platform: promote → reload)."""
    params, timeline = setup.params, setup.timeline
    with summary.step("synthetic world") as step:
        world = demo_data.synthesize_world(params, summary.console or Console())
        step.result = (
            f"{world.cases:,} cases over {len(world.per_day)} days, {world.topics} topics, "
            f"drift from day {world.drift_day}"
        )
        step.by = OUTSIDE
    with summary.step(f"labeled data of day(s) {timeline.train[0]}-{timeline.train[-1]}") as step:
        step.result, step.by = _land(setup, timeline.train), OUTSIDE
    started = datetime.now(UTC)
    with running_platform(params, setup.params_file) as platform:
        with summary.step("platform up (`casepilot up`)") as step:
            step.result, step.by = platform.line, "casepilot up"
            step.data = {"services": platform.urls}
        drive = Drive(setup, summary, receiver, platform)
        first = drive.retrain(
            started, "train + quantize + register (scheduled retrain)", "schedule"
        )
        requests = drive.requests_and_approval(first["registered"])
        if not requests:
            raise RuntimeError("no first champion was requested: nothing can be served")
        champion = drive.promotion(started, requests)
        drive.serving(champion, "serve the first champion")
        try:
            _drift_to_promotion(drive, summary)
        finally:
            _record_runs(drive, summary)
    return summary


def _record_runs(drive: Drive, summary: DemoSummary) -> None:
    """Every flow run on the platform's Prefect server, and who started it."""
    with summary.step("flow runs on the platform") as step:
        runs = drive.runs.every_run()
        counts: dict[str, int] = {}
        for run in runs:
            key = f"{run.flow}/{run.deployment} by {run.started_by.split(' ')[0]}"
            counts[key] = counts.get(key, 0) + 1
        step.result = ", ".join(f"{n}× {key}" for key, n in sorted(counts.items()))
        step.by, step.data = "Prefect API", {"runs": runs}


def _drift_to_promotion(drive: Drive, summary: DemoSummary) -> None:
    """Normal and drifted days with their monitor runs; then retrain, shadow and promotion."""
    timeline = drive.setup.timeline
    drift_started = None
    for day in (*timeline.normal, *timeline.drift):
        label = "after drift" if day in timeline.drift else "normal"
        traffic = drive.traffic(day, label)
        drift_started = drift_started or (traffic.since if day in timeline.drift else None)
        drive.monitor_after(traffic.until, f"monitor day {day}")
    with summary.step("page") as step:
        pages = demo_steps.drift_pages(drive.receiver.received())
        if not pages:
            step.skip("nothing paged: the monitor did not see enough drifted windows")
        else:
            step.result, step.data = (
                demo_steps.page_line(pages[-1], drive.receiver.url),
                {"pages": pages},
            )
            step.by = "monitor deployment run (N-of-M rule)"
    if not pages:
        _not_reached(summary, "no page: nothing to retrain for")
        return
    retrained = drive.retrain(
        drift_started or datetime.now(UTC), "automated retraining (drift automation)", "automation"
    )
    if not retrained["registered"]:
        _not_reached(summary, "no retrained stage passed its offline gates")
        return
    shadow_day = timeline.shadow[0]
    with summary.step("challenger in shadow") as step:
        shadowing = drive.service.wait_for_shadow(retrained["registered"], drive.timeouts.wait_s)
        step.result, step.by = f"shadow {shadowing}", "BentoML service (registry alias poll)"
    since = datetime.now(UTC)
    shadow = drive.traffic(shadow_day, "shadow")
    drive.review(shadow.until, (*timeline.normal, *timeline.drift, shadow_day))
    requests = drive.requests_and_approval(retrained["registered"])
    if not requests:
        with summary.step("promotion") as step:
            step.skip("the platform rejected every challenger: the champion stays")
        return
    champion = drive.promotion(since, requests)
    drive.serving(champion, "service reload")
