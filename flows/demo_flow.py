"""The `casepilot-demo` Prefect flow: the whole lifecycle on the synthetic world, step by step.

The lifecycle flows run as subflows (`retrain`, `monitor`, `promote` from flows/lifecycle.py), so
the demo exercises exactly what a deployment runs; the steps between them (bootstrap, traffic,
the shadow decision, the request and the demo reviewer's approval) are tasks over the project's
own functions. In a deployment the `retrain-on-drift` automation starts `retrain` on the
drift-breach event; here the demo flow starts it when the monitor reports that breach.
"""

from __future__ import annotations

import contextlib
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NONE
from rich.console import Console

from flows import demo_data, demo_steps
from flows.demo_params import DemoSetup
from flows.demo_receiver import PageReceiver
from flows.demo_service import RunningService, copilot_service
from flows.demo_summary import DemoSummary
from flows.demo_traffic import DayTraffic, send_day
from flows.lifecycle import monitor, promote, retrain


@task(name="traffic", cache_policy=NONE)
def traffic_task(
    setup: DemoSetup, service: RunningService, day: int, console: Console, label: str
) -> DayTraffic:
    plan = setup.plan
    size = plan.shadow_traffic if day in setup.timeline.shadow else None
    cases = demo_data.traffic_sample(setup.params, day, size or plan.traffic_per_day)
    return send_day(
        service, day, cases, concurrency=setup.plan.concurrency,
        match_threshold=setup.params.monitor.match_threshold, console=console, label=label,
    )  # fmt: skip


@task(name="bootstrap-champion", cache_policy=NONE)
def bootstrap_task(setup: DemoSetup) -> tuple[dict[str, str], list[str]]:
    return demo_steps.bootstrap(setup.params)


@task(name="shadow-decision", cache_policy=NONE)
def decision_task(setup: DemoSetup, traffic: DayTraffic) -> Any:
    return demo_steps.shadow_decision(setup.params, traffic.since, traffic.until)


def _traffic_line(t: DayTraffic) -> str:
    return (
        f"{t.requests} messages → {t.suggestions} suggestions, {t.feedback} agent replies "
        f"({t.used} used the suggestion), {t.failed} failed, {t.requests / t.seconds:.1f} req/s"
    )


def _monitor_day(
    setup: DemoSetup, summary: DemoSummary, service: RunningService, day: int, label: str
) -> dict[str, Any]:
    """Traffic of one simulated day, then one monitoring window over it."""
    console = summary.console or Console()
    with summary.step(f"traffic day {day} ({label})") as step:
        traffic = traffic_task(setup, service, day, console, label)
        step.result, step.data = _traffic_line(traffic), {"traffic": traffic}
    with summary.step(f"monitor day {day}") as step:
        with console.status(f"monitor day {day}: Evidently drift and online metrics …"):
            report = monitor(params_file=str(setup.params_file))
        drifted = "; ".join(report["reasons"]) or "no drift"
        step.result = (
            f"breach={report['breach']} page={report['page']} ({report['paged']}): {drifted}; "
            f"evidence {report['evidence_url']}"
        )
        step.data = report
    return report


DRIFT = "casepilot-drift"  # dedup key prefix of drift pages (flows/lifecycle_hooks.page_drift)
LATER_STEPS = ("promotion request", "approval (automated demo reviewer)", "promotion")


def _not_reached(summary: DemoSummary, why: str) -> None:
    """Record the promotion steps as skipped, with why, so the summary never hides them."""
    for name in LATER_STEPS:
        with summary.step(name) as step:
            step.skip(f"not run: {why}")


@flow(name="casepilot-demo", validate_parameters=False, log_prints=False)
def demo_lifecycle(
    setup: DemoSetup, summary: DemoSummary, receiver: PageReceiver, api_key: str
) -> DemoSummary:
    """day-1 data → train → register → bootstrap → serve → traffic → drift → page → retrain →
    shadow → decision → request → demo approval → promote → reload."""
    params, timeline, plan = setup.params, setup.timeline, setup.plan
    params_file = str(setup.params_file)
    console = summary.console or Console()

    with summary.step("synthetic world") as step:
        world = demo_data.synthesize_world(params, console)
        step.result = (
            f"{world.cases:,} cases over {len(world.per_day)} days, {world.topics} topics, "
            f"drift from day {world.drift_day}"
        )
    days = ", ".join(map(str, timeline.train))
    with summary.step(f"train champion on day(s) {days}") as step:
        demo_data.deliver_days(params, timeline.train)
        registered = retrain(params_file=params_file, stages=None)["registered"]
        step.result = "registered " + demo_steps.registered_line(registered)
        step.data = {"registered": registered}
    with summary.step("bootstrap champion") as step:
        champion, forced = bootstrap_task(setup)
        step.result = ", ".join(f"{s} v{v}" for s, v in champion.items())
        if forced:
            step.result += f" (forced past failed offline gates: {', '.join(forced)})"
        step.data = {"champion": champion, "forced": forced}

    with contextlib.ExitStack() as running:
        with summary.step("serve") as step:
            service = running.enter_context(
                copilot_service(params, setup.params_file, api_key, console)
            )
            models = service.reload()
            step.result = f"{service.url}: champion {models['champion']}"
        breaches: list[int] = []
        for day in (*timeline.normal, *timeline.drift):
            label = "after drift" if day in timeline.drift else "normal"
            if _monitor_day(setup, summary, service, day, label)["breach"]:
                breaches.append(day)

        with summary.step("page") as step:
            pages = [p for p in receiver.received() if p.get("dedup_key", "").startswith(DRIFT)]
            if pages:
                last = pages[-1]
                link = (last.get("links") or [{}])[0].get("href", "no link")
                step.result = f"{len(pages)} page(s) at {receiver.url}: {last['summary'][:160]} "
                step.result += f"— evidence {link}"
                step.data = {"pages": pages}
            else:
                step.skip(f"nothing paged: the monitor did not see {params.monitor.breach_n} of "
                          f"{params.monitor.breach_m} windows breach")  # fmt: skip
        if not breaches:
            _not_reached(summary, "no monitoring window breached: nothing to retrain for")
            return summary
        with summary.step("automated retraining") as step:
            labels = tuple(d for d in (*timeline.normal, *timeline.drift))
            demo_data.deliver_days(params, labels)
            stages = list(plan.retrain_stages)
            registered = retrain(params_file=params_file, stages=stages)["registered"]
            step.result = (
                f"on drift breach (day {breaches[0]}), with labels of days "
                f"{labels[0]}-{labels[-1]}: " + demo_steps.registered_line(registered)
            )
            step.data = {"registered": registered}
        challengers = [s for s, info in registered.items() if info["challenger"]]
        if not challengers:
            with summary.step("challenger in shadow") as step:
                step.skip("no retrained stage passed its offline gates: nothing to shadow")
            _not_reached(summary, "no challenger")
            return summary
        with summary.step("challenger in shadow") as step:
            models = service.reload()
            if not models["shadow"]:
                raise RuntimeError(f"the service runs no shadow after reload: {models}")
            step.result = f"shadow {models['shadow']} beside champion {models['champion']}"
            step.data = {"shadow": models["shadow"]}
        traffic_day = timeline.shadow[0]
        with summary.step(f"traffic day {traffic_day} (shadow)") as step:
            traffic = traffic_task(setup, service, traffic_day, console, "shadow")
            step.result = _traffic_line(traffic)
        with summary.step("promotion decision") as step:
            decision = decision_task(setup, traffic)
            step.result, step.data = demo_steps.decision_line(decision), decision.as_dict()
        if not decision.promote:
            _not_reached(summary, "the shadow decision keeps the champion")
            return summary
        with summary.step("promotion request") as step:
            requests = demo_steps.request_promotions(params, challengers, decision)
            step.result = ", ".join(f"{r.name} v{r.version} ({r.link})" for r in requests)
            step.data = {"requests": requests}
        with summary.step("approval (automated demo reviewer)") as step:
            approvals = demo_steps.approve_as_demo_reviewer(
                params, challengers, plan.reviewer, console
            )
            step.result = (
                f"approved by '{approvals[0].by}' at {approvals[0].at} — NOT a human review"
            )
            step.data = {"approvals": approvals}
        with summary.step("promotion") as step:
            outcomes = promote(params_file=params_file)
            step.result = ", ".join(
                f"{s}: {o['status']} v{o.get('version', '?')} (was v{o.get('previous', '?')})"
                for s, o in outcomes.items()
            )
            step.data = {"outcomes": outcomes}
        with summary.step("service reload") as step:
            models = service.reload()
            step.result = f"now serving champion {models['champion']}"
            step.data = {"champion": models["champion"]}
    return summary
