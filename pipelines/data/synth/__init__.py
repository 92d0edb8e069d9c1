"""The synthetic support world of Paylane, a fictional payments company (deterministic by seed).

`generate_world(cfg, seed=…, days=…)` builds it in memory; `write_world(world, out)` writes
taxonomy.json, docs.jsonl, batches/, truth/ and manifest.json (see `store.py` for the layout).
"""

from pipelines.data.synth.catalog import Catalog, Topic, load_catalog
from pipelines.data.synth.store import DayCounts, WorldSummary, write_world
from pipelines.data.synth.world import DayBatch, LabelFlip, TaxonomyTopic, World, generate_world

__all__ = [
    "Catalog",
    "DayBatch",
    "DayCounts",
    "LabelFlip",
    "TaxonomyTopic",
    "Topic",
    "World",
    "WorldSummary",
    "generate_world",
    "load_catalog",
    "write_world",
]
