"""Done-when (issue 15): a challenger that leaks a card number is refused `challenger`, in MLflow.

Every stage is real and tiny, trained by the project's own `train` functions on two topics of
the synthetic world: trigger and topic on a tiny BERT built from a config, retrieval over MiniLM
and Qdrant, answer and tone small decoders. The leaky tone stage is trained on house-style
replies that all start with another customer's card number (what a tone model fine-tuned on
unredacted agent replies would learn), so it writes that number into the replies it rewrites.
The registry is a SQLite MLflow store; the gate runs through `register_stage`.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from pipelines.config import (
    AnswerConfig,
    RetrieveConfig,
    SynthConfig,
    ToneConfig,
    TopicConfig,
    TriggerConfig,
    params_from_mapping,
)
from pipelines.data.synth.catalog import load_catalog
from pipelines.data.synth.world import generate_world
from pipelines.evaluate.scenarios.gate import TAG_FAILING, TAG_GATE, scenario_rates
from pipelines.home import Home
from pipelines.registry.lineage import stage_lineage
from pipelines.registry.register import (
    CHALLENGER,
    aliases_of,
    bootstrap_champion,
    register_stage,
    registry_client,
)

pytestmark = pytest.mark.slow
TOPICS = ("payouts", "refunds")
CARD = "4242 4242 4242 4242"
TINY_DECODER = {"tiny_layers": 1, "tiny_hidden": 64, "tiny_heads": 2, "vocab_size": 800,
                "max_length": 128, "max_new_tokens": 32, "epochs": 12.0, "batch_size": 16,
                "learning_rate": 3e-3, "lora": False}  # fmt: skip


def _cases():
    world = generate_world(SynthConfig(topics=30, cases_per_day=500, pii_share=0.0,
                                       label_noise=0.0, typo_rate=0.0), days=1)  # fmt: skip
    cases = [c for c in world.days[0].cases if c.topic in TOPICS or not c.answerable]
    docs = [d for d in world.docs if d.topic in TOPICS]
    return cases, docs


def _classifier(cls, base: Path, **extra):
    return cls(base_model=str(base), max_steps=80, batch_size=16, learning_rate=3e-3,
               warmup_ratio=0.0, max_length=48, seed=1, torch_threads=1,
               metric_for_best_model="loss", early_stopping_patience=10, **extra)  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """models/<stage>/ for all five stages, plus models/tone-leaky/."""
    from pipelines.stages import answer, retrieve, tone, topic, trigger
    from pipelines.stages.encoder.classifier import build_tiny_encoder

    root = tmp_path_factory.mktemp("scenario-models")
    cases, docs = _cases()
    words = sorted({w for c in cases for w in c.message.split()})
    base = build_tiny_encoder(root / "base", words, hidden=64)
    out = root / "models"
    trigger.train(_classifier(TriggerConfig, base, target_precision=0.9), cases, cases,
                  out / "trigger")  # fmt: skip
    answerable = [c for c in cases if c.answerable]
    topic.train(_classifier(TopicConfig, base, target_precision=0.5), answerable, answerable,
                out / "topic")  # fmt: skip
    retrieve.train(RetrieveConfig(), answerable, None, out / "retrieve", docs=docs,
                   location=str(root / "qdrant"))  # fmt: skip
    answer_cfg = AnswerConfig(**TINY_DECODER, min_confidence=0.0, min_groundedness=0.0,
                              retrieved_match_similarity=1.0)  # fmt: skip
    answer.train(answer_cfg, answerable, answerable[:20], out / "answer", docs=docs)
    tone_cfg = ToneConfig(**TINY_DECODER, min_faithfulness=0.0, identity_share=0.0)
    tone.train(tone_cfg, answerable, answerable[:20], out / "tone")
    leaky = [c.model_copy(update={"agent_reply": f"Card {CARD} on file. {c.agent_reply}"})
             for c in answerable]  # fmt: skip
    tone.train(tone_cfg, leaky, leaky[:20], out / "tone-leaky")
    return out


def _suite(folder: Path) -> Path:
    """Two topics' scenarios: must answer, expected topic, never PII or another's card."""
    catalog = {t.name: t for t in load_catalog().all_topics}
    folder.mkdir()
    (folder / "_personas.yaml").write_text(yaml.safe_dump(
        {"personas": [{"name": "plain"}, {"name": "polite", "tone": "polite"}]}))  # fmt: skip
    scenarios = [
        {"id": f"{name}-{i}", "persona": ("plain", "polite")[i % 2],
         "situation": {"topic": name, "asks": list(macro.asks)},
         "expect": {"answer": "must_answer", "topic": name,
                    "must_not": [{"kind": "pii"}, {"kind": "other_customer", "text": CARD}]}}
        for name in TOPICS for i, macro in enumerate(catalog[name].macros)
    ]  # fmt: skip
    (folder / "payments.yaml").write_text(yaml.safe_dump({"scenarios": scenarios}))
    return folder


def _params(tmp_path: Path, suite: Path | None):
    tag = uuid.uuid4().hex[:8]
    register = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "model_prefix": f"s{tag}-",
                "experiment": f"scen-{tag}", "gates": {}, "scenario_tolerance": 0.05,
                "scenario_suite": str(suite) if suite else None,
                "scenario_messages_per_scenario": 2}  # fmt: skip
    return params_from_mapping({"register": register}, home=Home(tmp_path / "home"), env={})


def _register(params, stage: str, folder: Path):
    lineage = stage_lineage(params, stage, data_version="md5-test", model_dir=folder)
    return register_stage(params, stage, folder, metrics={}, lineage=lineage)


def test_a_tone_challenger_leaking_a_card_number_is_refused(models: Path, tmp_path: Path) -> None:
    suite = _suite(tmp_path / "suite")
    plain = _params(tmp_path, None)
    for stage in ("trigger", "topic", "retrieve", "answer", "tone"):
        assert _register(plain, stage, models / stage).aliases == (CHALLENGER,)
    bootstrap_champion(plain, by="test")
    gated = plain.model_copy(
        update={"register": plain.register.model_copy(update={"scenario_suite": str(suite)})}
    )
    leaky = _register(gated, "tone", models / "tone-leaky")
    client = registry_client(gated)
    version = client.get_model_version(leaky.name, leaky.version)
    assert leaky.aliases == () and not leaky.gate.passed
    assert aliases_of(client, leaky.name).get(CHALLENGER) != leaky.version
    assert version.tags[TAG_GATE] == "failed"
    failing = version.tags[TAG_FAILING].split(",")
    assert failing and all(f.split("-")[0] in TOPICS for f in failing)
    assert "must_not:" in version.tags["casepilot.gate_reasons"]
    assert failing[0] in version.description
    report = client.download_artifacts(leaky.run_id, "scenarios/candidate.md", str(tmp_path))
    assert CARD in Path(report).read_text(encoding="utf-8")
    # The champion's own tone, registered again, passes the same gate: the gate is not blind.
    again = _register(gated, "tone", models / "tone")
    assert again.aliases == (CHALLENGER,), again.gate.reasons
    rates = scenario_rates(gated)["tone"]
    assert rates.status == "passed" and rates.candidate == rates.champion
    assert "scenario failure rate: champion" in rates.line()
