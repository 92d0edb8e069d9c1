"""`casepilot demo` end to end on a tiny world: the real flows, registry, service and monitors.

The overlay shrinks everything (a tiny BERT built from the world's vocabulary instead of MiniLM,
one-layer decoders, ~100 cases a day) and lowers the offline gates to what such tiny models
reach; every step still runs for real: Prefect flows, MLflow registry, `bentoml serve` on a free
127.0.0.1 port, HTTP traffic with feedback, Evidently drift, a page to a local webhook receiver,
retraining, shadow traffic, the promotion decision, request, approval and alias move.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from pipelines.home import Home

# drift on day 3: days 1-2 train, 3-4 drift traffic, 5 shadow traffic
SYNTH = {"days": 5, "cases_per_day": 300, "drift_from_day": 3}


def tiny_overlay(folder: Path) -> Path:
    """A demo overlay with a tiny encoder (vocabulary of the same world) and tiny generators."""
    from pipelines.config import SynthConfig
    from pipelines.stages.classifier import build_tiny_encoder
    from pipelines.synth.world import generate_world

    world = generate_world(SynthConfig(**SYNTH))
    texts = [c.message for day in world.days for c in day.cases]
    texts += [t.text for day in world.days for c in day.cases for t in c.context]
    words = {w for text in texts for w in re.findall(r"\w+|[^\w\s]", text.lower())}
    vocabulary = sorted(words | {"agent", "customer"})
    base = build_tiny_encoder(folder / "encoder", vocabulary, hidden=64, layers=1)
    classifier = {
        "base_model": str(base),
        "max_length": 48,
        "batch_size": 32,
        "learning_rate": 1.0e-3,
        "warmup_ratio": 0.0,
        "metric_for_best_model": "loss",
        "early_stopping_patience": 100,
        "torch_threads": 1,
    }
    generator = {
        "tiny_layers": 1,
        "tiny_hidden": 32,
        "tiny_heads": 2,
        "vocab_size": 300,
        "max_length": 128,
        "max_new_tokens": 12,
        "epochs": 1.0,
        "batch_size": 16,
    }
    overlay = {
        "demo": {"train_days": 2, "traffic_per_day": 100, "shadow_traffic": 250, "concurrency": 8},
        "data": {"synth": SYNTH},
        # a tiny encoder is far less sure than MiniLM: lower precision targets let it answer
        "trigger": {**classifier, "max_steps": 200, "target_precision": 0.7},
        "topic": {**classifier, "max_steps": 600, "target_precision": 0.3},
        "answer": {**generator, "retrieved_match_similarity": 0.9},
        "tone": {**generator, "lora": False},
        "register": {
            "gates": {
                "trigger": {"auroc": 0.6},
                "topic": {"accuracy": 0.3},
                "retrieve": {"recall_at_k": 0.3},
                "answer": {"rouge_l": 0.0},
                "tone": {"faithfulness": 0.0},
            }
        },
        "quantize": {"method": "none"},  # measured in tests/test_quantize*.py, not here
        "monitor": {"window_cases": 100, "breach_n": 2, "breach_m": 3},
        "promote": {"min_cases": 40},
    }
    path = folder / "tiny-demo.yaml"
    path.write_text(yaml.safe_dump(overlay, sort_keys=False), encoding="utf-8")
    return path


def test_overlay_merges_into_params_and_plans_the_days(home: Home, tmp_path: Path) -> None:
    from flows.demo_params import DEMO_OVERLAY, demo_setup

    setup = demo_setup(Path("params.yaml"), (DEMO_OVERLAY,), home=home)
    assert setup.params.topic.max_steps == 100 and setup.params.topic.base_model == "minilm"
    assert setup.params.promote.approval_tag == "casepilot.approved_by"  # from params.yaml
    assert setup.params_file.parent == home.root
    days = setup.timeline
    assert (days.train, days.normal, days.drift, days.shadow) == ((1, 2), (3, 4), (5, 6), (7,))


@pytest.mark.parametrize(
    ("overlay", "names"),
    [
        ({"data": {"synth": {"drift_from_day": None}}}, "data.synth.drift_from_day"),
        ({"demo": {"train_days": 5}}, "demo.train_days"),
        ({"data": {"synth": {"days": 5}}}, "data.synth.days"),
        ({"demo": {"retrain_stages": ["topik"]}}, "demo.retrain_stages"),
        ({"demo": {"reviewer": ""}}, "demo.reviewer"),
    ],
)
def test_bad_demo_settings_name_the_key(home: Home, tmp_path: Path, overlay, names) -> None:
    from flows.demo_params import DEMO_OVERLAY, demo_setup
    from pipelines.config import ConfigError

    extra = tmp_path / "bad.yaml"
    extra.write_text(yaml.safe_dump(overlay), encoding="utf-8")
    with pytest.raises(ConfigError, match=names.replace(".", r"\.")):
        demo_setup(Path("params.yaml"), (DEMO_OVERLAY, extra), home=home)


def test_page_receiver_gets_a_real_webhook_page(home: Home) -> None:
    from flows.demo_receiver import page_receiver
    from monitoring.paging import PageEvent, page
    from pipelines.config import params_from_mapping

    with page_receiver() as receiver:
        params = params_from_mapping(
            {"monitor": {"pager": {"kind": "webhook", "url": receiver.url}}}
        )
        event = PageEvent(summary="drift", dedup_key="k1", link="http://127.0.0.1:8000/x")
        assert page(event, params).status == "sent"
        received = receiver.received()
    assert [body["dedup_key"] for body in received] == ["k1"]
    assert received[0]["links"][0]["href"] == "http://127.0.0.1:8000/x"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # took 15+ min on the shared 2-core box at load average ~20
def test_demo_runs_the_whole_lifecycle(home: Home, tmp_path: Path) -> None:
    from flows.demo import run_demo
    from flows.demo_params import DEMO_OVERLAY, DEMO_REVIEWER

    console = Console(record=True, width=160)
    summary = run_demo(
        Path("params.yaml"), console, overlays=(DEMO_OVERLAY, tiny_overlay(tmp_path))
    )
    failed = [(s.name, s.result) for s in summary.steps if s.status == "failed"]
    assert not failed, failed

    champion = summary.find("bootstrap champion")
    assert champion is not None and set(champion.data["champion"]) == {
        "trigger", "topic", "retrieve", "answer", "tone"
    }  # fmt: skip
    for stage in champion.data["forced"]:  # a stage that missed its gates is forced, and said so
        assert stage in champion.result and "forced past failed offline gates" in champion.result

    page = summary.find("page")
    assert page is not None and page.status == "done", page
    body = page.data["pages"][-1]
    assert "evidence" in page.result and body["links"][0]["href"].startswith("http://127.0.0.1")
    drift_days = [s for s in summary.steps if s.name.startswith("monitor day") and s.data["breach"]]
    assert drift_days, "no monitoring window breached"

    retrained = summary.find("automated retraining")
    assert retrained is not None and retrained.status == "done"
    challengers = [s for s, info in retrained.data["registered"].items() if info["challenger"]]
    assert challengers, retrained.result

    decision = summary.find("promotion decision")
    assert decision is not None and decision.data["promote"], decision.result
    approval = summary.find("approval (automated demo reviewer)")
    assert approval is not None and approval.data["approvals"][0].by == DEMO_REVIEWER
    assert "AUTOMATED DEMO APPROVAL" in console.export_text()

    promoted = summary.find("promotion")
    assert promoted is not None
    outcomes = promoted.data["outcomes"]
    for stage in challengers:
        assert outcomes[stage]["status"] == "promoted", outcomes
    served = summary.find("service reload").data["champion"]
    before = champion.data["champion"]
    for stage in challengers:
        assert served[stage] != f"casepilot-{stage}/{before[stage]}", served
    assert "Prefect UI" in " ".join(summary.links) and "MLflow UI" in " ".join(summary.links)
