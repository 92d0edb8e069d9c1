"""Data intake (issue 3): pull batches, validate with Great Expectations, quarantine or accept.

run_intake(params)            pull unseen batches from the source, validate and route each
load_accepted(params)         every accepted (validated, PII-redacted) LabeledCase
list_quarantine(params)       batches held back, with the expectations they failed
release(batch_id, params)     re-validate a fixed quarantined batch; accept it if it passes

The data version is DVC's hash of the accepted folder in dvc.lock (pipelines.registry.lineage).
"""

from pipelines.data.intake.run import (
    BatchOutcome,
    IntakeError,
    IntakeReport,
    process_staged,
    pull,
    release,
    run_intake,
)
from pipelines.data.intake.store import (
    IntakePaths,
    QuarantinedBatch,
    list_quarantine,
    load_accepted,
)
from pipelines.data.intake.suite import ValidationSummary

__all__ = [
    "BatchOutcome",
    "IntakeError",
    "IntakePaths",
    "IntakeReport",
    "QuarantinedBatch",
    "ValidationSummary",
    "list_quarantine",
    "load_accepted",
    "process_staged",
    "pull",
    "release",
    "run_intake",
]
