"""Log a quantization report to MLflow: one table row per candidate, plus metrics and params.

The run lives in the stage's experiment (`casepilot-<stage>`, beside its training runs), named
`quantize-<stage>`; the experiment is created with its artifacts under CASEPILOT_HOME.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipelines.config import Params
    from pipelines.quantize.run import QuantizeReport


def quantization_tags(model_dir: Path) -> dict[str, str]:
    """Registry version tags from the folder's `quantize.json` ({} when it was not quantized).

    `casepilot.quantization` is the chosen method; the others say why and what it cost.
    """
    path = Path(model_dir) / "quantize.json"
    if not path.is_file():
        return {}
    report = json.loads(path.read_text(encoding="utf-8"))
    chosen = report["chosen"]
    verdict = next((v for v in report["verdicts"] if v["method"] == chosen), {})
    return {
        "casepilot.quantization": chosen,
        "casepilot.quantization_reason": report["reason"][:5000],
        "casepilot.quantization_key_metric": report["key_metric"],
        "casepilot.quantization_metric_drop": f"{verdict.get('metric_drop', 0.0):.6f}",
        "casepilot.quantization_speedup": f"{verdict.get('speedup', 1.0):.3f}",
        "casepilot.quantization_candidates": ",".join(c["method"] for c in report["candidates"]),
    }


def candidate_rows(report: QuantizeReport) -> dict[str, list[Any]]:
    """The candidates as table columns: method, metric, drop, latency, speed-up, sizes, gate."""
    rows = [
        {
            "method": c.method,
            "chosen": c.method == report.chosen,
            "key_metric": report.key_metric,
            "metric": c.metric,
            "metric_drop": v.metric_drop,
            "latency_ms": c.latency_ms,
            "speedup": v.speedup,
            "disk_mb": c.disk_bytes / 1e6,
            "memory_mb": c.memory_bytes / 1e6,
            "passed": v.passed,
            "gate": v.reason,
        }
        for c, v in zip(report.candidates, report.verdicts, strict=True)
    ]
    return {key: [row[key] for row in rows] for key in rows[0]}


def log_report(params: Params, report: QuantizeReport, out_dir: Path) -> str:
    """Log `report` to a new run `quantize-<stage>`; returns the run id."""
    import mlflow

    from pipelines.registry.store import ensure_experiment, registry_client
    from pipelines.registry.tracking import mlflow_run

    experiment = f"casepilot-{report.stage}"
    ensure_experiment(registry_client(params), params, experiment)
    with mlflow_run(params, experiment, f"quantize-{report.stage}") as run:
        mlflow.log_table(data=candidate_rows(report), artifact_file="quantize_candidates.json")
        metrics: dict[str, float] = {}
        for c, v in zip(report.candidates, report.verdicts, strict=True):
            prefix = f"quantize.{c.method}"
            metrics |= {
                f"{prefix}.{report.key_metric}": c.metric,
                f"{prefix}.latency_ms": c.latency_ms,
                f"{prefix}.speedup": v.speedup,
                f"{prefix}.disk_mb": c.disk_bytes / 1e6,
            }
        mlflow.log_metrics(metrics)
        settings = {k: v for k, v in asdict(report).items() if k not in ("candidates", "verdicts")}
        mlflow.log_params({k: str(v)[:500] for k, v in settings.items()})
        mlflow.log_artifact(str(Path(out_dir) / "quantize.json"))
        mlflow.set_tags(
            {
                "casepilot.stage": report.stage,
                "casepilot.quantization": report.chosen,
                "casepilot.model_dir": str(out_dir),
            }
        )
        return run.info.run_id
