"""MLflow helpers every stage uses: open a run from config, log metrics, params and figures."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pipelines.config import Params


@contextmanager
def mlflow_run(params: Params, experiment: str, run_name: str) -> Iterator[Any]:
    """Yield an active MLflow run in `experiment`, tracking to `params.mlflow_tracking_uri`.

    The tracking URI is set here, never at import; an embedded SQLite store gets its folder.
    """
    import mlflow

    uri = params.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        params.home.mlflow.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=run_name) as run:
        yield run


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def log_evaluation(
    metrics: Mapping[str, Any],
    figures: Mapping[str, Figure] | None = None,
    params_logged: Mapping[str, Any] | None = None,
) -> None:
    """Log numeric metrics (nested keys become `a.b`), params and figures to the active run."""
    import mlflow

    numeric = {
        key: float(value)
        for key, value in _flatten(metrics).items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }
    if numeric:
        mlflow.log_metrics(numeric)
    if params_logged:
        mlflow.log_params({key: str(value)[:500] for key, value in _flatten(params_logged).items()})
    for name, figure in (figures or {}).items():
        mlflow.log_figure(figure, name if name.endswith(".png") else f"{name}.png")
