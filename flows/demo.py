"""`casepilot demo`: the whole lifecycle on the embedded synthetic world, in one command.

day-1 data → train → register → bootstrap champion → serve → synthetic traffic with agent
feedback → drift → page (to a local webhook receiver) → automated retraining → challenger in
shadow → promotion request → approval by a clearly named demo reviewer → promotion → summary.

The run keeps all its state in its own folder, `$CASEPILOT_HOME/demo` (wiped at the start of
each run, so a second run starts from the same clean world), and runs the `casepilot-demo`
Prefect flow (`flows/demo_flow.py`) with the lifecycle flows as subflows. The demo profile
(`configs/demo.yaml`) shortens training so the whole run fits ~20 minutes on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from rich.console import Console

from flows.demo_params import DEMO_OVERLAY, DemoSetup, demo_setup
from flows.demo_summary import DemoSummary, StepResult
from pipelines.home import Home


def demo_home(base: Home | None = None) -> Home:
    """The demo's own state folder: `$CASEPILOT_HOME/demo`."""
    return Home((base or Home.from_env()).root / "demo")


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set `values` in os.environ for the block (the demo's state folder), then restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _prefect_settings(home: Home, api_url: str | None) -> contextlib.AbstractContextManager:
    """Prefect's state under the demo folder, or the configured server's API."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    updates = {PREFECT_HOME: str(home.prefect)}
    if api_url:
        updates[PREFECT_API_URL] = api_url
    return temporary_settings(updates=updates)


def links(setup: DemoSetup, summary: DemoSummary) -> dict[str, str]:
    """Where to look afterwards: the UIs (under `casepilot up`) and the evidence of the page."""
    from flows.cli_up import prefect_api_url
    from pipelines.registry_audit import mlflow_ui_url

    params, home = setup.params, setup.params.home
    try:
        api, _port = prefect_api_url(params)
    except ValueError:  # a remote Prefect server: its UI is where its API is
        api = params.schedule.prefect_api_url or ""
    out = {
        "open the UIs on this state": (
            f"CASEPILOT_HOME={home.root} casepilot up --params {setup.params_file}"
        ),
        "Prefect UI (flow runs)": api.removesuffix("/api") + "/runs",
        "MLflow UI (models, requests, approvals)": mlflow_ui_url(params) + "/#/models",
    }
    monitors = [s for s in summary.steps if s.name.startswith("monitor day") and s.data]
    if monitors:
        evidence = monitors[-1].data["evidence_url"]
        out["Evidently UI (drift dashboard)"] = evidence.split("/reports/")[0]
    page = summary.find("page")
    if page is not None and page.data.get("pages"):
        body = page.data["pages"][-1]
        out["evidence of the page"] = (body.get("links") or [{}])[0].get("href", "none")
    out["pages received"] = str(home.logs / "pages.jsonl") + " (and the webhook receiver)"
    out["service log"] = str(home.logs / "demo-service.log")
    return out


def run_demo(
    params_file: Path,
    console: Console,
    *,
    overlays: Sequence[Path] = (DEMO_OVERLAY,),
    home: Home | None = None,
) -> DemoSummary:
    """Run the whole lifecycle demo; print and return its summary (also when a step fails)."""
    from flows.demo_receiver import page_receiver

    home = home or demo_home()
    if home.root.exists():
        shutil.rmtree(home.root)
    home.ensure()
    console.rule("[bold]casepilot demo[/bold] — the lifecycle on the synthetic world")
    console.print(f"state folder (wiped at each run): {home.root}")
    summary = DemoSummary(console=console)
    setup: DemoSetup | None = None
    with page_receiver() as receiver, _environment(home.framework_env()):
        pager = {"kind": "webhook", "url": receiver.url, "retries": 2, "timeout_s": 5.0}
        setup = demo_setup(
            params_file, overlays, home=home, overrides={"monitor": {"pager": pager}}
        )
        _describe(setup, receiver.url, console)
        # imported here: Prefect reads its settings (PREFECT_HOME) from the environment on import
        from flows.demo_flow import demo_lifecycle

        try:
            with _prefect_settings(home, setup.params.schedule.prefect_api_url):
                demo_lifecycle(setup, summary, receiver, secrets.token_urlsafe(24))
        except Exception as err:  # noqa: BLE001 - reported in the summary; the CLI exits 1
            if not any(step.status == "failed" for step in summary.steps):
                summary.steps.append(
                    StepResult("demo flow", "failed", f"{type(err).__name__}: {err}"[:300], 0.0)
                )
            console.print_exception(max_frames=8)
        summary.links = links(setup, summary)
        console.print(summary.table())
        console.print(summary.links_table())
    return summary


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
        f"{p.answer.epochs:g} epoch; retrain after drift: {', '.join(setup.plan.retrain_stages)}\n"
        f"  pages go to the webhook receiver {receiver_url}"
    )
