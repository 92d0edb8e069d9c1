"""The demo's configuration: params.yaml + the demo overlay(s), and the timeline of simulated days.

The overlay (`configs/demo.yaml` by default) changes only the keys it lists — small training
settings, a short world — so the demo uses the same typed `Params` as everything else. Its
`demo:` mapping is the demo's own timeline (`DemoPlan`), not a params.yaml section. The merged
params are written to `<demo state folder>/params.yaml`, so the service subprocess and the
flows read exactly what the demo runs with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipelines.config import ConfigError, Params, load_params
from pipelines.home import Home

REPO = Path(__file__).resolve().parents[2]
DEMO_OVERLAY = REPO / "configs" / "demo.yaml"
DEMO_REVIEWER = "demo-reviewer (automated demo approval)"


class DemoPlan(BaseModel):
    """The `demo:` mapping of the overlay: which simulated days do what."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    train_days: int = Field(2, ge=1, description="days whose labeled data trains the champion")
    traffic_per_day: int = Field(110, ge=10, description="messages of each later day sent")
    shadow_traffic: int | None = Field(
        None, ge=10, description="messages of the shadow day (null: traffic_per_day)"
    )
    concurrency: int = Field(8, ge=1, le=64, description="parallel agents sending traffic")
    reviewer: str = Field(DEMO_REVIEWER, min_length=1)
    wait_s: float = Field(
        600.0, gt=0, description="longest wait for one platform step (a monitor run, a request)"
    )
    retrain_wait_s: float = Field(
        1800.0, gt=0, description="longest wait for one retrain run (training on 2 cores)"
    )


@dataclass(frozen=True)
class Timeline:
    """Days of the synthetic world by role (1-based, inclusive)."""

    train: tuple[int, ...]  # labeled data the champion learns from
    normal: tuple[int, ...]  # traffic before drift
    drift: tuple[int, ...]  # traffic after drift, until the page
    shadow: tuple[int, ...]  # traffic with the challenger in shadow


@dataclass(frozen=True)
class DemoSetup:
    params: Params
    params_file: Path
    plan: DemoPlan
    timeline: Timeline


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `overlay`'s keys replacing it, recursing into mappings."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"{path}: not found; pass an existing params file or demo overlay")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw


def timeline(params: Params, plan: DemoPlan) -> Timeline:
    """The days' roles, or a ConfigError that names the key to change."""
    synth = params.data.synth
    drift_day = synth.drift_from_day
    if drift_day is None:
        raise ConfigError("data.synth.drift_from_day is null: the demo needs a drift day")
    if not plan.train_days < drift_day:
        raise ConfigError(
            f"demo.train_days ({plan.train_days}) must be before data.synth.drift_from_day "
            f"({drift_day}): the champion trains on data from before the drift"
        )
    drift_days = tuple(range(drift_day, synth.days))
    if len(drift_days) < params.monitor.breach_n:
        raise ConfigError(
            f"data.synth.days ({synth.days}) leaves {len(drift_days)} drift day(s) before the "
            f"shadow day; monitor.breach_n needs {params.monitor.breach_n}: set data.synth.days "
            f">= {drift_day + params.monitor.breach_n}"
        )
    return Timeline(
        train=tuple(range(1, plan.train_days + 1)),
        normal=tuple(range(plan.train_days + 1, drift_day)),
        drift=drift_days,
        shadow=(synth.days,),
    )


def demo_setup(
    params_file: Path,
    overlays: Sequence[Path] = (DEMO_OVERLAY,),
    *,
    home: Home | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> DemoSetup:
    """Merge params.yaml, the overlays and `overrides`; write and load the demo's params file."""
    raw: dict[str, Any] = _read_yaml(params_file) if params_file.is_file() else {}
    for overlay in overlays:
        raw = deep_merge(raw, _read_yaml(Path(overlay)))
    raw = deep_merge(raw, overrides or {})
    plan_raw = raw.pop("demo", None) or {}
    try:
        plan = DemoPlan.model_validate(plan_raw)
    except ValidationError as err:
        problems = "; ".join(
            f"demo.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"demo overlay: {problems}") from None
    home = home or Home.from_env()
    out = home.root / "params.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# written by `casepilot demo`: params.yaml + demo overlay(s); do not edit\n"
        + yaml.safe_dump(raw, sort_keys=False),
        encoding="utf-8",
    )
    params = load_params(out, home=home)
    return DemoSetup(params, out, plan, timeline(params, plan))
