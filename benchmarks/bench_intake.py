"""Benchmark intake: validate (GE suite + computed checks) and redact N synthetic messages.

    .venv/bin/python benchmarks/bench_intake.py --rows 100000

Writes rows/s per phase to benchmarks/results/intake.json. The kNN label-agreement check is
timed on its own (`--agreement-rows` batch against a `--reference-rows` reference), because
its cost is MiniLM encoding, which scales with the rows embedded, not with the suite.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from pipelines.config import SynthConfig, params_from_mapping
from pipelines.data.intake.store import IntakePaths
from pipelines.data.intake.validate import make_judge, validate_rows
from pipelines.data.redact import redact_cases
from pipelines.data.synth import generate_world
from pipelines.home import Home

RESULTS = Path(__file__).resolve().parent / "results" / "intake.json"


def synthetic_cases(rows: int, seed: int) -> tuple[list, list[str]]:
    """`rows` synthetic cases (10% with planted PII) over as many days as needed, and the topics."""
    per_day = min(rows, 20_000)
    days = -(-rows // per_day)
    world = generate_world(
        SynthConfig(cases_per_day=per_day, drift_from_day=None), seed=seed, days=days
    )
    cases = [case for day in world.days for case in day.cases][:rows]
    return cases, [topic.name for topic in world.topics]


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--agreement-rows", type=int, default=1_000)
    parser.add_argument("--reference-rows", type=int, default=3_000)
    args = parser.parse_args()

    cases, topics = synthetic_cases(args.rows + args.agreement_rows + args.reference_rows, seed=5)
    batch = cases[: args.rows]
    agreement_batch = cases[args.rows : args.rows + args.agreement_rows]
    reference = cases[args.rows + args.agreement_rows :]
    with tempfile.TemporaryDirectory() as tmp:
        home = Home(Path(tmp)).ensure()
        (home.data / "taxonomy.json").write_text(json.dumps(topics))
        params = params_from_mapping(
            {"data": {"validation": {"min_reference_cases": 10**9, "max_label_shift": 1.0}}},
            home=home,
        )
        paths = IntakePaths.for_params(params)
        judge = make_judge(params, paths)
        rows = [case.model_dump(mode="json") for case in batch]
        (summary, _), validate_s = timed(
            lambda: validate_rows(rows, judge, batch_id="bench", origin="bench")
        )
        (_, stats), redact_s = timed(lambda: redact_cases(batch, params.data.pii))

        # Label agreement: a judge whose reference is big enough for the kNN check to run.
        params = params_from_mapping({"data": {"validation": {"max_label_shift": 1.0}}}, home=home)
        judge = make_judge(params, paths)
        judge.reference.extend(reference)
        judge.embed()(["warm up"])  # load MiniLM outside the timing
        agreement_rows = [case.model_dump(mode="json") for case in agreement_batch]
        (agreement, _), agreement_s = timed(
            lambda: validate_rows(agreement_rows, judge, batch_id="bench-knn", origin="bench")
        )
    result = {
        "rows": args.rows,
        "validate_s": round(validate_s, 2),
        "validate_rows_per_s": round(args.rows / validate_s),
        "redact_s": round(redact_s, 2),
        "redact_rows_per_s": round(args.rows / redact_s),
        "validate_and_redact_rows_per_s": round(args.rows / (validate_s + redact_s)),
        "texts_redacted": stats.texts_redacted,
        "validation_passed": summary.passed,
        "failed": summary.failed,
        "agreement_rows": args.agreement_rows,
        "agreement_reference_rows": len(reference),
        "agreement_validate_s": round(agreement_s, 2),
        "agreement_rows_per_s": round(args.agreement_rows / agreement_s),
        "label_disputed_share": agreement.observed.get(
            "expect_column_mean_to_be_between(label_disputed)"
        ),
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
