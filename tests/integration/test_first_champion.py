"""The monitor's first-champion requests: a cascade is requested whole or not at all.

Before any champion exists, each stage's challenger (it passed its offline gates) is requested
as the first champion. When a stage has no challenger — its only version failed its gate — the
service could not load the cascade, so promoting the other four would only fail the reload (seen
in the full demo: tone's gate failed, four aliases moved, every reload failed). The monitor then
requests nothing and says which stage is missing and why; once that stage passes, all are
requested. Promote then moves the cascade whole too: nothing moves while one stage waits for its
approval. Real MLflow SQLite store; the stage folders are stand-in `stage.json` files (nothing
loads them: a first-champion request reads only the registry).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pipelines.data.contract import STAGES
from pipelines.home import Home


def _register(params, stage: str, tmp: Path, **metrics: float) -> str:
    from pipelines.registry.lineage import stage_lineage
    from pipelines.registry.register import register_stage

    folder = tmp / f"{stage}-{len(list(tmp.glob(f'{stage}-*')))}"
    folder.mkdir()
    (folder / "stage.json").write_text(json.dumps({"stage": stage, "config": {}}))
    lineage = stage_lineage(params, stage, data_version="md5-test", model_dir=folder)
    return register_stage(params, stage, folder, metrics=metrics, lineage=lineage).version


def test_a_first_champion_cascade_is_requested_whole_or_not_at_all(
    home: Home, tmp_path: Path
) -> None:
    from flows.lifecycle.decide import decide_challengers
    from pipelines.config import load_params
    from pipelines.registry.approval import REQUESTED
    from pipelines.registry.register import registered_model_name, registry_client

    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({
        "register": {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "scenario_suite": None,
                     "gates": {s: {} for s in STAGES} | {"tone": {"faithfulness": 0.7}}},
    }))  # fmt: skip
    params = load_params(params_file)
    for stage in STAGES[:-1]:
        _register(params, stage, tmp_path)
    _register(params, "tone", tmp_path, faithfulness=0.15)  # fails its gate: no challenger

    decided = decide_challengers(params)
    assert set(decided) == set(STAGES[:-1]), decided
    for outcome in decided.values():
        assert outcome["status"] == "waiting", outcome
        assert (
            "casepilot-tone v1 failed its offline gate (faithfulness: 0.1500 < 0.7)"
            in (outcome["reason"])
        ), outcome["reason"]
    client = registry_client(params)
    for stage in STAGES[:-1]:
        tags = client.get_model_version(registered_model_name(params.register, stage), "1").tags
        assert tags.get(REQUESTED) != "true", (stage, tags)

    assert _register(params, "tone", tmp_path, faithfulness=0.9) == "2"  # passes: challenger
    decided = decide_challengers(params)
    assert {s: o["status"] for s, o in decided.items()} == dict.fromkeys(STAGES, "requested")
    tone = client.get_model_version(registered_model_name(params.register, "tone"), "2").tags
    assert tone[REQUESTED] == "true"

    # the first champion cascade moves whole: with one stage unapproved, nothing moves
    from flows.lifecycle.promote import promote_stages
    from pipelines.registry.approval import approve_version
    from pipelines.registry.register import CHAMPION, aliases_of

    for stage in STAGES[:-1]:
        approve_version(params, stage, "jane.doe")
    held = promote_stages(params, None)
    assert {s: o["status"] for s, o in held.items()} == dict.fromkeys(STAGES, "waiting"), held
    assert (
        "moves only together with casepilot-tone v2, not approved yet" in held["trigger"]["reason"]
    )
    for stage in STAGES:
        assert CHAMPION not in aliases_of(client, registered_model_name(params.register, stage)), (
            stage
        )
    approve_version(params, "tone", "jane.doe")
    moved = promote_stages(params, None)
    assert {s: o["status"] for s, o in moved.items()} == dict.fromkeys(STAGES, "promoted"), moved
    assert aliases_of(client, registered_model_name(params.register, "tone"))[CHAMPION] == "2"
