"""The synthetic support world: determinism, contents, PII, label noise, drift and the CLI."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli.main import app
from pipelines.config import SynthConfig
from pipelines.data.contract import KnowledgeDoc, LabeledCase, read_jsonl
from pipelines.data.synth import LabelFlip, generate_world, load_catalog, write_world
from pipelines.data.synth.messages import add_typos

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
MENU_STEP = re.compile(r"(\w+) → (\w+)")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
CARD = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")
PHONE = re.compile(
    r"\+\d{1,3}(?: \(?\d{1,4}\)?)(?:[ -]\d{2,8}){1,3}\b"  # +1 415 555 0134, +44 20 7946 0321
    r"|\(\d{3,4}\) ?\d{3,4}[ -]\d{4}\b"  # (415) 555-0134, (020) 7946 0958
    r"|\b\d{3}-\d{3}-\d{4}\b|\b0\d{2,3} \d{4} \d{4}\b"  # 415-555-0134, 020 7946 0958
)
NAME = re.compile(r"(?:My name is|This is|Thanks,) [A-Z][a-zA-Z'-]+ [A-Z][a-zA-Z'-]+")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def iban_valid(code: str) -> bool:
    code = code.replace(" ", "")
    rearranged = code[4:] + code[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def pii_found(message: str) -> set[str]:
    """The kinds of PII a simple scanner finds in a message."""
    kinds = set()
    if EMAIL.search(message):
        kinds.add("email")
    for match in CARD.finditer(message):
        digits = re.sub(r"\D", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            kinds.add("card")
    if any(iban_valid(match.group()) for match in IBAN.finditer(message)):
        kinds.add("iban")
    if PHONE.search(message):
        kinds.add("phone")
    if NAME.search(message):
        kinds.add("name")
    return kinds


def facts(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The numbers and menu steps ("Settings → Payouts") a reply states."""
    return set(NUMBER.findall(text)), set(MENU_STEP.findall(text))


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default world (14 days x 300 cases, drift from day 8), written once."""
    out = tmp_path_factory.mktemp("world")
    write_world(generate_world(SynthConfig()), out)
    return out


@pytest.fixture(scope="module")
def cases(world_dir: Path) -> dict[int, list[LabeledCase]]:
    paths = sorted((world_dir / "batches").glob("day-*.jsonl"))
    return {int(path.stem[4:]): read_jsonl(path, LabeledCase) for path in paths}


@pytest.fixture(scope="module")
def flips(world_dir: Path) -> dict[str, LabelFlip]:
    paths = sorted((world_dir / "truth").glob("day-*.jsonl"))
    return {flip.case_id: flip for path in paths for flip in read_jsonl(path, LabelFlip)}


def all_cases(cases: dict[int, list[LabeledCase]]) -> list[LabeledCase]:
    return [case for day in sorted(cases) for case in cases[day]]


def small(**changes: object) -> SynthConfig:
    return SynthConfig(**{"days": 3, "cases_per_day": 60, "drift_from_day": 2, **changes})


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        write_world(generate_world(small(), seed=seed), tmp_path / name)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert len(files) == 3 + 2 * 3
    for relative in files:
        assert (tmp_path / "a" / relative).read_bytes() == (tmp_path / "b" / relative).read_bytes()
    batch = Path("batches/day-001.jsonl")
    assert (tmp_path / "a" / batch).read_bytes() != (tmp_path / "c" / batch).read_bytes()


def test_a_day_does_not_depend_on_how_many_days_are_generated(tmp_path: Path) -> None:
    short, long = generate_world(small(), days=2), generate_world(small(), days=3)
    assert short.days[1].cases == long.days[1].cases


def test_catalog_has_enough_topics_each_with_a_doc_templates_and_macros(world_dir: Path) -> None:
    catalog = load_catalog()
    assert len(catalog.topics) >= 32
    taxonomy = json.loads((world_dir / "taxonomy.json").read_text())["topics"]
    docs = read_jsonl(world_dir / "docs.jsonl", KnowledgeDoc)
    assert len(taxonomy) == 33  # 32 base topics + the drift topic
    assert sorted(doc.topic for doc in docs) == sorted(topic["name"] for topic in taxonomy)
    for topic in catalog.all_topics:
        assert len(topic.templates) >= 8 and 2 <= len(topic.macros) <= 4
        assert len(set(topic.templates)) == len(topic.templates)


def test_asking_for_more_topics_than_the_catalog_has_fails_clearly() -> None:
    too_many = len(load_catalog().topics) + 1
    with pytest.raises(ValueError, match=r"data\.synth\.topics.*at most"):
        generate_world(small(topics=too_many))


def test_every_line_is_a_labeled_case_with_unique_ids(cases: dict[int, list[LabeledCase]]) -> None:
    everything = all_cases(cases)
    assert len(cases) == 14 and len(everything) == 14 * 300
    assert len({case.case_id for case in everything}) == len(everything)
    assert {(case.label_source, case.labeler) for case in everything} == {("synthetic", "synth")}
    for day, day_cases in cases.items():
        assert all(case.created_at.date() == day_cases[0].created_at.date() for case in day_cases)
        assert [case.created_at for case in day_cases] == sorted(c.created_at for c in day_cases)
        assert day_cases[0].case_id.startswith(f"d{day:03d}-")


def test_not_answerable_share_and_kinds(cases: dict[int, list[LabeledCase]]) -> None:
    everything = all_cases(cases)
    unanswerable = [case for case in everything if not case.answerable]
    assert 0.05 <= len(unanswerable) / len(everything) <= 0.5
    kinds = Counter(case.unanswerable_kind for case in unanswerable)
    assert set(kinds) == {"chit_chat", "thanks", "missing_context", "out_of_scope"}
    assert all(case.topic is None and case.reply_draft is None for case in unanswerable)
    missing = [case for case in unanswerable if case.unanswerable_kind == "missing_context"]
    assert not any(case.context for case in missing)


def test_replies_are_macros_and_drafts_state_the_same_facts(
    world_dir: Path, cases: dict[int, list[LabeledCase]], flips: dict[str, LabelFlip]
) -> None:
    taxonomy = json.loads((world_dir / "taxonomy.json").read_text())["topics"]
    macros = {topic["name"]: set(topic["macros"]) for topic in taxonomy}
    for case in all_cases(cases):
        if not case.answerable:
            continue
        true_topic = flips[case.case_id].true_topic if case.case_id in flips else case.topic
        assert case.agent_reply in macros[true_topic]
        assert case.reply_draft and case.reply_draft != case.agent_reply
        assert facts(case.reply_draft) == facts(case.agent_reply)


def test_every_macro_is_grounded_in_its_topics_doc() -> None:
    for topic in load_catalog().all_topics:
        numbers, steps = facts(topic.doc.body)
        for macro in topic.macros:
            reply_numbers, reply_steps = facts(macro.reply)
            assert (reply_numbers, reply_steps) == facts(macro.draft), topic.name
            assert reply_numbers <= numbers and reply_steps <= steps, topic.name


def test_planted_pii_is_found_at_about_pii_share(
    world_dir: Path, cases: dict[int, list[LabeledCase]]
) -> None:
    everything = all_cases(cases)
    found = [pii_found(case.message) for case in everything]
    planted = sum(
        day["pii_cases"] for day in json.loads((world_dir / "manifest.json").read_text())["counts"]
    )
    with_pii = sum(1 for kinds in found if kinds)
    assert planted == round(0.1 * 300) * 14
    assert 0.97 * planted <= with_pii <= 1.03 * planted
    assert 0.08 <= with_pii / len(everything) <= 0.12
    by_kind = Counter(kind for kinds in found for kind in kinds)
    assert all(by_kind[kind] >= 40 for kind in ("email", "card", "iban", "phone", "name")), by_kind


def test_label_noise_rate_matches_config_and_truth(
    cases: dict[int, list[LabeledCase]], flips: dict[str, LabelFlip]
) -> None:
    answerable = {case.case_id: case for case in all_cases(cases) if case.answerable}
    assert abs(len(flips) / len(answerable) - 0.02) < 0.005
    for flip in flips.values():
        assert flip.noisy_topic != flip.true_topic
        assert answerable[flip.case_id].topic == flip.noisy_topic


def test_followups_carry_the_earlier_exchange(
    cases: dict[int, list[LabeledCase]], flips: dict[str, LabelFlip]
) -> None:
    catalog = load_catalog()
    macros = {t.name: {m.reply for m in t.macros} for t in catalog.all_topics}
    followups = [case for case in all_cases(cases) if case.answerable and case.context]
    assert 0.08 <= len(followups) / sum(1 for c in all_cases(cases) if c.answerable) <= 0.16
    for case in followups:
        customer, agent = case.context
        assert (customer.role, agent.role) == ("customer", "agent") and customer.text
        true_topic = flips[case.case_id].true_topic if case.case_id in flips else case.topic
        assert agent.text in macros[true_topic] and agent.text != case.agent_reply
        assert len(case.message) < 90  # "and how long does that usually take?"


def test_messages_vary_and_mix_several_sentences(cases: dict[int, list[LabeledCase]]) -> None:
    first = [c.message for c in all_cases(cases) if c.answerable and not c.context]
    assert len(set(first)) / len(first) > 0.9
    several = sum(1 for message in first if len(re.findall(r"[.!?,](?:\s|$)", message)) >= 2)
    assert several / len(first) > 0.3


def test_drift_adds_a_topic_and_shifts_vocabulary(
    world_dir: Path, cases: dict[int, list[LabeledCase]]
) -> None:
    manifest = json.loads((world_dir / "manifest.json").read_text())
    drift_day, drift_topic = manifest["drift_day"], manifest["drift_topic"]
    assert drift_day == 8
    before = [c for day in range(1, 8) for c in cases[day] if c.answerable]
    after = [c for day in range(8, 15) for c in cases[day] if c.answerable]
    assert not any(c.topic == drift_topic for c in before)
    assert 0.1 <= sum(c.topic == drift_topic for c in after) / len(after) <= 0.2

    def app_share(batch: list[LabeledCase]) -> float:
        base = [c for c in batch if c.topic != drift_topic]
        return sum(bool(re.search(r"\bapp\b", c.message, re.I)) for c in base) / len(base)

    assert app_share(after) - app_share(before) > 0.15
    doc = next(
        d for d in read_jsonl(world_dir / "docs.jsonl", KnowledgeDoc) if d.topic == drift_topic
    )
    assert doc.updated_at.date() == cases[drift_day][0].created_at.date()


def test_no_drift_when_switched_off() -> None:
    world = generate_world(small(drift_from_day=None))
    drift_topic = load_catalog().drift_topic.name
    assert world.drift_day is None and drift_topic not in {t.name for t in world.topics}
    assert not any(case.topic == drift_topic for day in world.days for case in day.cases)


def test_topics_are_learnable_from_vocabulary_but_overlap(
    cases: dict[int, list[LabeledCase]], flips: dict[str, LabelFlip]
) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    def split(days: range) -> tuple[list[str], list[str]]:
        rows = [c for d in days for c in cases[d] if c.answerable and not c.context]
        labels = [flips[c.case_id].true_topic if c.case_id in flips else c.topic for c in rows]
        return [c.message for c in rows], labels

    (train_x, train_y), (test_x, test_y) = split(range(1, 6)), split(range(6, 8))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LinearSVC().fit(vectorizer.fit_transform(train_x), train_y)
    accuracy = (model.predict(vectorizer.transform(test_x)) == test_y).mean()
    assert 0.8 <= accuracy < 1.0


def test_the_reply_is_determined_by_what_the_customer_asked(
    cases: dict[int, list[LabeledCase]], flips: dict[str, LabelFlip]
) -> None:
    """Each intent has its canonical reply: a bag-of-words model predicts the exact reply."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.svm import LinearSVC

    def split(days: range) -> tuple[list[str], list[str]]:
        rows = [c for d in days for c in cases[d] if c.answerable and c.case_id not in flips]
        return [c.message for c in rows], [c.agent_reply or "" for c in rows]

    (train_x, train_y), (test_x, test_y) = split(range(1, 6)), split(range(6, 8))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LinearSVC().fit(vectorizer.fit_transform(train_x), train_y)
    accuracy = (model.predict(vectorizer.transform(test_x)) == test_y).mean()
    assert accuracy >= 0.9  # a reply drawn at random among a topic's macros gave ~0.4
    for topic in load_catalog().all_topics:
        assert len({m.reply for m in topic.macros}) == len(topic.macros) >= 2
        assert sum(bool(m.followups) for m in topic.macros) >= 1


def test_follow_ups_without_their_context_are_missing_context(
    cases: dict[int, list[LabeledCase]],
) -> None:
    """The same follow-up words are answerable in context and missing_context without it."""
    everything = all_cases(cases)
    answered = {c.message.lower().rstrip("?") for c in everything if c.answerable and c.context}
    missing = [c for c in everything if c.unanswerable_kind == "missing_context"]
    context_free = [c for c in missing if c.message.lower().rstrip("?") in answered]
    assert 0.15 <= len(context_free) / len(missing) <= 0.6
    assert not any(c.context or c.agent_reply in _all_macro_replies() for c in context_free)


def _all_macro_replies() -> set[str]:
    return {m.reply for t in load_catalog().all_topics for m in t.macros}


def test_typos_keep_the_message_readable() -> None:
    import random

    rng = random.Random(3)
    text = "Where can I see the status of my payouts in the dashboard?"
    changed = [add_typos(text, rng) for _ in range(50)]
    assert sum(variant != text for variant in changed) == 50
    for variant in changed:
        words, original = variant.split(), text.split()
        assert len(words) == len(original)
        assert sum(a != b for a, b in zip(words, original, strict=True)) <= 2


def test_cli_writes_the_world(tmp_path: Path) -> None:
    out = tmp_path / "world"
    result = CliRunner().invoke(
        app,
        [
            "data",
            "synth",
            "--out",
            str(out),
            "--seed",
            "7",
            "--days",
            "2",
            "--params",
            str(tmp_path / "absent.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "total" in result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["seed"], manifest["days"]) == (7, 2)
    assert len(read_jsonl(out / "batches" / "day-002.jsonl", LabeledCase)) == 300
    assert (out / "truth" / "day-001.jsonl").exists() and (out / "taxonomy.json").exists()
