"""The PII values a synthetic world planted, recomputed from its manifest (never stored).

A world is deterministic for its config and seed (`pipelines.data.synth`), and `write_world` records
both in `manifest.json`. Regenerating the world in memory gives back every planted value
(`DayBatch.planted`), so a scan can look for exactly those without any file holding them.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.data.pii.detectors import PlantedValue


class ManifestError(ValueError):
    """A world manifest cannot be read; says which file and what to pass instead."""


def planted_values(manifest: Path) -> list[PlantedValue]:
    """Every PII value planted in the world described by `manifest` (its manifest.json)."""
    from pipelines.config import SynthConfig
    from pipelines.data.synth import generate_world

    try:
        recorded = json.loads(Path(manifest).read_text(encoding="utf-8"))
        cfg = SynthConfig.model_validate(recorded["config"])
    except (OSError, ValueError, KeyError) as err:
        raise ManifestError(
            f"{manifest}: not a synthetic world manifest ({err}); pass the manifest.json that "
            "`casepilot data synth` wrote, or scan without one"
        ) from err
    world = generate_world(cfg)
    return [
        PlantedValue(kind=kind, value=value, case_id=case_id)
        for day in world.days
        for case_id, kind, value in day.planted
    ]


def find_manifests(root: Path) -> list[Path]:
    """Every synthetic world manifest under `root` (`…/world/manifest.json`)."""
    return sorted(path for path in Path(root).rglob("manifest.json") if path.parent.name == "world")
