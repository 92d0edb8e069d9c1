"""The scenario gate: a new stage version gets `challenger` only if the written scenarios agree.

`scenario_gate(params, stage, model_dir)` runs the suite (`register.scenario_suite`,
`register.scenario_messages_per_scenario` messages per scenario) twice through the real cascade:
the **baseline** — every stage's `champion` — and the **candidate** — the same cascade with
`model_dir` swapped in for `stage`. It passes when

- no `must_not` expectation fails with the candidate (PII, promises, other customers' data,
  made-up amounts: never tolerated, whatever the champion does), and
- the candidate's failure rate is at most the baseline's + `register.scenario_tolerance`.

Where a stage has no champion yet, its `challenger` stands in, else the trained folder beside
`model_dir` (`<models>/<stage>/`, the layout of `dvc.yaml` and the retrain flow), so the first
registration of a fresh pipeline is gated too. **First registration** (no champion of `stage`):
there is nothing to compare with, so only the `must_not` rule applies and the candidate's rate
is recorded. When some other stage has no version and no folder at all the gate is **skipped**
(recorded as such on the version, never silently passed as "ran"). Retrieval runs in an
in-memory Qdrant restored from the stage folder, so a serving process's index is never locked.

`register_stage` (pipelines/registry/register.py) calls this after the offline gates and records
the result
on the version (tags `casepilot.scenario_*`, the report as run artifacts, metrics on the
registration run); `scenario_rates` reads it back for the demo's summary line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.data.contract import STAGES
from pipelines.evaluate.scenarios.runner import Report, failing_scenarios, run_suite

if TYPE_CHECKING:
    from pipelines.config import Params, RegisterConfig

REPO = Path(__file__).resolve().parents[3]
TAG_GATE = "casepilot.scenario_gate"  # passed | failed | skipped
TAG_RATE = "casepilot.scenario_failure_rate"
TAG_CHAMPION_RATE = "casepilot.scenario_champion_failure_rate"
TAG_FAILING = "casepilot.scenario_must_not_failing"  # scenario ids, comma-separated
TAG_REASON = "casepilot.scenario_reason"
MAX_TAG = 4000  # MLflow tag values are capped (5000 chars on SQL stores)


@dataclass(frozen=True)
class ScenarioGate:
    """The gate's decision with both reports (None when that side did not run)."""

    passed: bool
    status: str  # passed | failed | skipped
    reason: str
    candidate: Report | None = None
    champion: Report | None = None

    @property
    def must_not_failing(self) -> list[str]:
        return failing_scenarios(self.candidate.must_not_failures()) if self.candidate else []

    def tags(self) -> dict[str, str]:
        """The version/run tags that record this decision."""
        tags = {TAG_GATE: self.status, TAG_REASON: self.reason[:MAX_TAG]}
        if self.candidate is not None:
            tags[TAG_RATE] = f"{self.candidate.failure_rate:.4f}"
            tags[TAG_FAILING] = ",".join(self.must_not_failing)[:MAX_TAG]
        if self.champion is not None:
            tags[TAG_CHAMPION_RATE] = f"{self.champion.failure_rate:.4f}"
        return tags

    def metrics(self) -> dict[str, float]:
        out = {}
        if self.candidate is not None:
            out["scenario_failure_rate"] = self.candidate.failure_rate
            out["scenario_must_not_failed"] = float(len(self.candidate.must_not_failures()))
        if self.champion is not None:
            out["scenario_champion_failure_rate"] = self.champion.failure_rate
        return out


def suite_folder(register: RegisterConfig) -> Path | None:
    """`register.scenario_suite` as a folder (relative paths: from the repo root), or None."""
    folder = register.scenario_suite
    if folder is None:
        return None
    path = Path(folder)
    return path if path.is_absolute() else REPO / path


def _stand_in(params: Params, stage: str, model_dir: Path) -> tuple[Path, str] | None:
    """Another stage's folder for the cascade: champion, else challenger, else the sibling."""
    from pipelines.registry.resolve import resolve_stage
    from pipelines.registry.store import (
        CHALLENGER,
        CHAMPION,
        aliases_of,
        registered_model_name,
        registry_client,
    )

    found = aliases_of(registry_client(params), registered_model_name(params.register, stage))
    for alias in (CHAMPION, CHALLENGER):
        if alias in found:
            resolved = resolve_stage(params, stage, alias)
            return resolved.local_dir, f"{resolved.name}/{resolved.version}@{alias}"
    sibling = model_dir.parent / stage
    if (sibling / "stage.json").is_file():
        return sibling, f"folder {sibling}"
    return None


def _cascade(folders: dict[str, tuple[Path, str]], loaded: dict[Path, Any]) -> Any:
    from pipelines.cascade import Cascade
    from pipelines.registry.model import load_stage_folder

    stages = {}
    for stage, (folder, _) in folders.items():
        if folder not in loaded:
            loaded[folder] = load_stage_folder(stage, folder, qdrant_location=":memory:")
        stages[stage] = loaded[folder]
    return Cascade(**stages, versions={s: v for s, (_, v) in folders.items()})


def scenario_gate(params: Params, stage: str, model_dir: Path) -> ScenarioGate:
    """Run the suite with `model_dir` as `stage` against the champion cascade; decide."""
    from pipelines.evaluate.scenarios.schema import load_suite
    from pipelines.registry.resolve import resolve_stage
    from pipelines.registry.store import CHAMPION, aliases_of, registered_model_name
    from pipelines.registry.store import registry_client as client_of

    folder = suite_folder(params.register)
    if folder is None:
        return ScenarioGate(True, "skipped", "register.scenario_suite is null: no scenario gate")
    suite = load_suite(folder)
    others: dict[str, tuple[Path, str]] = {}
    for other in STAGES:
        if other != stage:
            found = _stand_in(params, other, Path(model_dir))
            if found is None:
                reason = f"no {other} version or folder to complete the cascade"
                return ScenarioGate(True, "skipped", reason)
            others[other] = found
    loaded: dict[Path, Any] = {}
    cfg = params.register
    run = lambda cascade: run_suite(  # noqa: E731
        cascade, suite, per_scenario=cfg.scenario_messages_per_scenario,
        seed=cfg.scenario_seed, pii=params.data.pii,
    )  # fmt: skip
    candidate = run(_cascade({**others, stage: (Path(model_dir), "candidate")}, loaded))
    champion = None
    if CHAMPION in aliases_of(client_of(params), registered_model_name(params.register, stage)):
        current = resolve_stage(params, stage, CHAMPION)
        baseline = {**others, stage: (current.local_dir, f"{current.name}/{current.version}")}
        cached = _baseline_cache(params, folder, baseline)
        if cached is not None and cached.is_file():
            champion = Report.load(cached.read_text(encoding="utf-8"))
        else:
            champion = run(_cascade(baseline, loaded))
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_text(champion.dump(), encoding="utf-8")
    return decide(candidate, champion, cfg.scenario_tolerance)


def _baseline_cache(
    params: Params, suite: Path, baseline: dict[str, tuple[Path, str]]
) -> Path | None:
    """Where the champion cascade's report is kept: the same champions, suite, seed and sample
    give the same report, so the next stage registered against them reuses it. None when a
    stage stands in as a plain folder (its contents may change under the same path)."""
    import hashlib
    import json

    if any(version.startswith("folder ") for _, version in baseline.values()):
        return None
    files = sorted(suite.glob("*.yaml"))
    key = {
        "tracking": params.mlflow_tracking_uri,
        "versions": {s: v for s, (_, v) in sorted(baseline.items())},
        "suite": [hashlib.sha256(f.read_bytes()).hexdigest() for f in files],
        "seed": params.register.scenario_seed,
        "n": params.register.scenario_messages_per_scenario,
        "pii": params.data.pii.model_dump(mode="json"),
    }
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return params.home.cache / "scenario-baselines" / f"{digest}.json"


def decide(candidate: Report, champion: Report | None, tolerance: float) -> ScenarioGate:
    """The rule: no must_not failure, and no worse than the champion by more than `tolerance`."""
    reasons = []
    leaked = candidate.must_not_failures()
    if leaked:
        kinds = sorted({f.kind for r in leaked for f in r.failures if f.kind.startswith("must_")})
        ids = ", ".join(failing_scenarios(leaked)[:10])
        reasons.append(f"must_not failed ({', '.join(kinds)}) in scenarios {ids}")
    rate = candidate.failure_rate
    if champion is not None and rate > champion.failure_rate + tolerance:
        reasons.append(
            f"scenario failure rate {rate:.1%} > champion's {champion.failure_rate:.1%} "
            f"+ tolerance {tolerance:.1%}"
        )
    if reasons:
        return ScenarioGate(False, "failed", "; ".join(reasons), candidate, champion)
    against = (
        f"champion {champion.failure_rate:.1%}" if champion else "no champion yet (first version)"
    )
    return ScenarioGate(
        True, "passed", f"failure rate {rate:.1%} vs {against}", candidate, champion
    )


@dataclass(frozen=True)
class ScenarioRates:
    """What the demo prints per stage: the recorded rates of the latest registered version."""

    stage: str
    version: str
    status: str
    candidate: float | None
    champion: float | None

    def line(self) -> str:
        pct = lambda v: "n/a" if v is None else f"{v:.1%}"  # noqa: E731
        return (
            f"{self.stage} v{self.version}: scenario failure rate: champion "
            f"{pct(self.champion)}, challenger {pct(self.candidate)} (gate {self.status})"
        )


def scenario_rates(params: Params, stages: tuple[str, ...] = STAGES) -> dict[str, ScenarioRates]:
    """The scenario gate's record on each stage's latest version (stages never gated are left
    out): read from the version tags that `register_stage` wrote."""
    from pipelines.registry.store import registered_model_name, registry_client

    client = registry_client(params)
    out = {}
    for stage in stages:
        name = registered_model_name(params.register, stage)
        versions = client.search_model_versions(f"name = '{name}'")
        if not versions:
            continue
        latest = max(versions, key=lambda v: int(v.version))
        tags = latest.tags or {}
        if TAG_GATE not in tags:
            continue
        rate, champion = (
            float(tags[k]) if tags.get(k) else None for k in (TAG_RATE, TAG_CHAMPION_RATE)
        )
        out[stage] = ScenarioRates(stage, str(latest.version), tags[TAG_GATE], rate, champion)
    return out
