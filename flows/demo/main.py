"""`casepilot demo`: the deployed platform runs the whole lifecycle; the demo plays the world.

The demo starts the platform (`casepilot up` on free loopback ports) and only does what the
outside world does: it lands labeled batches, sends customers' messages and agents' replies, and
approves promotion requests as the `reviewer` user (announced as automated). The deployments,
their schedules and the drift automation do every lifecycle step (flows/demo/flow.py), and the
summary names the Prefect flow run that did each one.

The run keeps all its state in its own folder, `$CASEPILOT_HOME/demo` (wiped at the start of
each run, so a second run starts from the same clean world). The demo profile
(`configs/demo.yaml`) shortens training and compresses the schedules (minutes instead of days).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from flows.demo.params import DEMO_OVERLAY, DemoSetup, deep_merge, demo_setup
from flows.demo.platform import free_ports_overlay
from flows.demo.summary import DemoSummary, StepResult
from pipelines.home import Home, environment

# The demo compresses time: the platform's scheduler creates due runs every 3 s, and the worker
# looks for them every 3 s (Prefect's defaults: 60 s and 10 s).
CLOCK = {"PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "3", "PREFECT_WORKER_QUERY_SECONDS": "3"}


def demo_home(base: Home | None = None) -> Home:
    """The demo's own state folder: `$CASEPILOT_HOME/demo`."""
    return Home((base or Home.from_env()).root / "demo")


def outside_world(home: Home) -> Path:
    """The outside world's folder beside the demo's state: the synthetic world with its raw
    daily batches (planted PII included) and the landing folder intake pulls from. It is not
    under the platform's CASEPILOT_HOME, as customers' systems are not."""
    return home.root.parent / f"{home.root.name}-world"


def _outside_overlay(home: Home) -> dict:
    outside = outside_world(home)
    return {
        "data": {
            "synth": {"days_root": str(outside / "world")},
            "source": {"path": str(outside / "landing")},
        }
    }


def links(setup: DemoSetup, summary: DemoSummary) -> dict[str, str]:
    """Where to look afterwards: `casepilot up` on the demo's state, the evidence of the page."""
    home = setup.params.home
    out = {
        "open the UIs on this state": (
            f"CASEPILOT_HOME={home.root} casepilot up --params {setup.params_file}"
        ),
    }
    up = summary.find("platform up (`casepilot up`)")
    for name, url in ((up.data.get("services") or {}) if up else {}).items():
        out[f"{name} (during the run)"] = url
    page = summary.find("page")
    if page is not None and page.data.get("pages"):
        body = page.data["pages"][-1]
        out["evidence of the page"] = (body.get("links") or [{}])[0].get("href", "none")
    out["pages and notifications received"] = str(home.logs / "pages.jsonl")
    out["platform logs"] = str(home.logs)
    return out


def run_demo(
    params_file: Path,
    console: Console,
    *,
    overlays: Sequence[Path] = (DEMO_OVERLAY,),
    home: Home | None = None,
) -> DemoSummary:
    """Run the whole lifecycle demo; print and return its summary (also when a step fails)."""
    from flows.demo.receiver import page_receiver

    home = home or demo_home()
    for folder in (home.root, outside_world(home)):
        if folder.exists():
            shutil.rmtree(folder)
    home.ensure()
    console.rule("[bold]casepilot demo[/bold] — the lifecycle on the synthetic world")
    console.print(f"state folder (wiped at each run): {home.root}")
    summary = DemoSummary(console=console)
    setup: DemoSetup | None = None
    with page_receiver() as receiver, environment({**home.framework_env(), **CLOCK}):
        pager = {"kind": "webhook", "url": receiver.url, "retries": 2, "timeout_s": 5.0}
        overrides = deep_merge(free_ports_overlay(), {"monitor": {"pager": pager}})
        overrides = deep_merge(overrides, _outside_overlay(home))
        setup = demo_setup(params_file, overlays, home=home, overrides=overrides)
        _describe(setup, receiver.url, console)
        # imported here: Prefect reads its settings (PREFECT_HOME) from the environment on import
        from flows.demo.flow import drive_lifecycle

        try:
            drive_lifecycle(setup, summary, receiver)
        except Exception as err:  # noqa: BLE001 - reported in the summary; the CLI exits 1
            if not any(step.status == "failed" for step in summary.steps):
                summary.steps.append(
                    StepResult("demo flow", "failed", f"{type(err).__name__}: {err}"[:300], 0.0)
                )
            console.print_exception(max_frames=8)
        summary.links = links(setup, summary)
        summary.links["lifecycle latencies (JSON)"] = str(_write_figures(home, summary))
        console.print(summary.table())
        console.print(summary.links_table())
    return summary


def _write_figures(home: Home, summary: DemoSummary) -> Path:
    """The run's lifecycle latencies (flows/demo/figures.py), beside the platform's logs."""
    from flows.demo.figures import figures

    path = home.logs / "demo-figures.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures(summary), indent=2, default=str) + "\n", encoding="utf-8")
    return path


def _describe(setup: DemoSetup, receiver_url: str, console: Console) -> None:
    """Say what the demo profile is: the timeline and the (small) training settings."""
    t, p = setup.timeline, setup.params
    console.print(
        f"params: {setup.params_file} (params.yaml + demo overlay)\n"
        f"  days {t.train[0]}-{t.train[-1]} train the champion; normal traffic days "
        f"{list(t.normal)}; drift traffic days {list(t.drift)}; shadow traffic day {t.shadow[0]}; "
        f"{setup.plan.traffic_per_day} messages per day\n"
        f"  trigger {p.trigger.max_steps} steps, topic {p.topic.max_steps} steps "
        f"(base {p.topic.base_model}); answer/tone: {p.answer.tiny_layers}-layer decoders, "
        f"{p.answer.epochs:g} epoch; the drift automation retrains: "
        f"{', '.join(p.schedule.drift_retrain_stages or ('all',))}\n"
        f"  schedules: retrain every {p.schedule.retrain_interval_seconds} s (first 30 s after "
        f"`up`), monitor every {p.schedule.monitor_interval_seconds} s, promote poll every "
        f"{p.schedule.promote_poll_seconds} s; quantize: {p.quantize.method}\n"
        f"  pages go to the webhook receiver {receiver_url}"
    )
