"""Importers: the generic table importer, the dataset mappings and `casepilot data import`."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from flows.cli.main import app
from pipelines.data.contract import KnowledgeDoc, LabeledCase, read_jsonl, write_jsonl
from pipelines.data.importers import (
    CLINC_EVAL,
    CLINC_TRAIN,
    DATASETS,
    DEFAULT_CREATED_AT,
    ColumnMapping,
    DataImportError,
    import_abcd_docs,
    import_banking77,
    import_bitext,
    import_clinc150,
    import_dataset,
    import_table,
    import_tweetsumm,
    load_mapping,
    mapping_from_dict,
    summarize,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "importers"
SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
TICKETS = FIXTURES / "generic" / "tickets.csv"


def by_id(cases: list[LabeledCase]) -> dict[str, LabeledCase]:
    return {case.case_id: case for case in cases}


# ---------------------------------------------------------------- generic importer


def test_generic_mapping_applies_value_map_not_answerable_labels_and_columns() -> None:
    cases = by_id(import_table(TICKETS, load_mapping(FIXTURES / "generic" / "tickets.yaml")))
    assert list(cases) == ["T-1", "T-2", "T-3", "T-4", "T-5", "T-6"]
    assert cases["T-1"].topic == "refund_status" and cases["T-1"].answerable
    assert cases["T-5"].topic == "delivery_address"
    assert (cases["T-2"].answerable, cases["T-2"].topic) == (False, None)
    assert cases["T-2"].unanswerable_kind == "thanks"
    assert cases["T-3"].unanswerable_kind == "out_of_scope"
    # not answerable by the answerable column alone: no label, no kind
    assert (cases["T-6"].answerable, cases["T-6"].unanswerable_kind) == (False, None)
    assert cases["T-1"].agent_reply.startswith("Refunds take 5 days")
    assert cases["T-2"].agent_reply is None
    assert [turn.role for turn in cases["T-4"].context] == ["customer", "agent"]
    assert cases["T-2"].created_at == datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
    assert {case.label_source for case in cases.values()} == {"review"}
    assert cases["T-1"].labeler == "helpdesk-export"


def test_generic_ids_and_times_without_columns_are_deterministic() -> None:
    mapping = ColumnMapping(message_column="body", topic_column="label")
    first = import_table(TICKETS, mapping)
    again = import_table(TICKETS, mapping)
    assert [case.case_id for case in first] == [case.case_id for case in again]
    assert first[0].case_id.startswith("tickets-1-") and first[1].case_id.startswith("tickets-2-")
    assert len({case.case_id for case in first}) == len(first)
    assert {case.created_at for case in first} == {DEFAULT_CREATED_AT}
    later = datetime(2027, 5, 1, tzinfo=UTC)
    assert {case.created_at for case in import_table(TICKETS, mapping, created_at=later)} == {later}
    # without not-answerable labels or an answerable column every row is answerable
    assert all(case.answerable for case in first)
    assert first[5].topic is None  # empty label cell


def test_jsonl_and_parquet_tables_import_like_the_csv(tmp_path: Path) -> None:
    mapping = load_mapping(FIXTURES / "generic" / "tickets.yaml")
    frame = pd.read_csv(TICKETS, dtype=str, keep_default_na=False)
    frame["is_question"] = frame["is_question"].str.lower().isin(["yes", "true"])
    frame["history"] = [json.loads(h) if h else None for h in frame["history"]]
    frame.to_json(tmp_path / "tickets.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "tickets.parquet")
    expected = import_table(TICKETS, mapping)
    assert import_table(tmp_path / "tickets.jsonl", mapping) == expected
    assert import_table(tmp_path / "tickets.parquet", mapping) == expected


def test_missing_column_names_the_file_the_columns_and_the_fix() -> None:
    with pytest.raises(DataImportError) as err:
        import_table(TICKETS, ColumnMapping(message_column="text"))
    message = str(err.value)
    assert f"column 'text' not found in {TICKETS}" in message
    assert "columns are: ticket_id, opened, body" in message
    assert "set mapping.message_column" in message


def test_bad_mapping_key_suggests_the_closest_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("mesage_column: body\n")
    with pytest.raises(DataImportError, match="unknown key 'mesage_column'.*'message_column'"):
        load_mapping(path)
    with pytest.raises(DataImportError, match="unanswerable_kind"):
        mapping_from_dict({"message_column": "body", "unanswerable_kind": "rude"})


def test_mapping_rejects_a_label_in_both_maps_and_accepts_a_list_of_labels() -> None:
    with pytest.raises(DataImportError, match="both topic_map and not_answerable_labels"):
        mapping_from_dict(
            {
                "message_column": "m",
                "topic_column": "t",
                "topic_map": {"spam": "x"},
                "not_answerable_labels": ["spam"],
            }
        )
    mapping = mapping_from_dict(
        {
            "message_column": "body",
            "topic_column": "label",
            "not_answerable_labels": ["spam", "thanks"],
            "unanswerable_kind": "chit_chat",
        }
    )
    kinds = {c.case_id: c.unanswerable_kind for c in import_table(TICKETS, mapping)}
    assert list(kinds.values()) == [None, "chit_chat", "chit_chat", None, None, None]


def test_bad_cells_fail_with_row_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("text,ok\nhello,maybe\n,yes\n")
    with pytest.raises(DataImportError, match=r"row 1: answerable column 'ok' holds 'maybe'"):
        import_table(path, ColumnMapping(message_column="text", answerable_column="ok"))
    with pytest.raises(DataImportError, match=r"row 2: .*empty.*drop_empty_messages"):
        import_table(path, ColumnMapping(message_column="text"))
    kept = import_table(path, ColumnMapping(message_column="text", drop_empty_messages=True))
    assert [case.message for case in kept] == ["hello"]
    (tmp_path / "rows.txt").write_text("text\nhello\n")
    with pytest.raises(DataImportError, match="cannot tell the format"):
        import_table(tmp_path / "rows.txt", ColumnMapping(message_column="text"))


# ---------------------------------------------------------------- dataset mappings


def test_banking77_every_row_answerable_with_its_category() -> None:
    cases = import_banking77(FIXTURES / "banking77")
    assert len(cases) == 7
    assert all(case.answerable for case in cases)
    assert {case.topic for case in cases} == {
        "card_arrival",
        "lost_or_stolen_card",
        "exchange_rate",
    }
    assert cases[1].message == "how long, roughly, until the card arrives?"
    assert cases[0].case_id.startswith("banking77-1-")


def test_clinc150_domain_rule() -> None:
    cases = import_clinc150(FIXTURES / "clinc150", splits=CLINC_EVAL)
    assert len(cases) == 8
    label = {case.message: (case.answerable, case.topic, case.unanswerable_kind) for case in cases}
    assert label["tell me my savings balance"] == (True, "balance", None)
    assert label["how high is my credit limit now"] == (True, "credit_limit", None)
    assert label["good morning to you"] == (False, None, "chit_chat")
    assert label["thanks a bunch"] == (False, None, "thanks")
    assert label["say that one more time"] == (False, None, "out_of_scope")  # meta
    assert label["book a seat on the morning flight to oslo"] == (False, None, "out_of_scope")
    assert label["play some jazz in the kitchen"] == (False, None, "out_of_scope")  # oos
    assert cases[0].case_id == "clinc150:val:0" and cases[-1].case_id == "clinc150:oos_val:1"


def test_clinc150_splits_and_answerable_domains() -> None:
    root = FIXTURES / "clinc150"
    assert len(import_clinc150(root)) == 14  # every split in the file
    train = import_clinc150(root, splits=CLINC_TRAIN)
    assert [case.answerable for case in train] == [True, True, True, False, False, False]
    travel = import_clinc150(root, splits=["train"], answerable_domains=["travel"])
    assert [case.topic for case in travel if case.answerable] == ["book_flight"]
    with pytest.raises(DataImportError, match="choose from train, val, oos_train, oos_val"):
        import_clinc150(root, splits=["test"])
    with pytest.raises(DataImportError, match="not in domains.json"):
        import_clinc150(root, answerable_domains=["banking", "pets"])


def test_bitext_cases_keep_replies_and_docs_take_the_most_typical_reply() -> None:
    cases, docs = import_bitext(FIXTURES / "bitext")
    assert len(cases) == 5 and all(case.answerable for case in cases)
    assert {case.topic for case in cases} == {"cancel_order", "get_refund"}
    assert {case.label_source for case in cases} == {"synthetic"}
    assert "{{Website Name}}" in cases[0].agent_reply and "\n" in cases[0].agent_reply
    assert [doc.doc_id for doc in docs] == ["bitext:cancel_order", "bitext:get_refund"]
    cancel = docs[0]
    assert cancel.topic == "cancel_order" and cancel.title == "Cancel order (order)"
    replies = {case.agent_reply for case in cases if case.topic == "cancel_order"}
    assert cancel.body in replies and "sorry to see you go" not in cancel.body


def test_tweetsumm_cases_pair_customer_turns_with_the_next_agent_turn() -> None:
    cases = import_tweetsumm(FIXTURES / "tweetsumm")
    assert [case.case_id for case in cases] == [
        "tweetsumm:conv-a:1",
        "tweetsumm:conv-a:3",
        "tweetsumm:conv-b:0",
        "tweetsumm:conv-c:0",
    ]
    second = cases[1]
    assert second.message == "@ShopCo sent it in DM just now"
    assert [turn.role for turn in second.context] == ["customer", "customer", "agent"]
    assert second.context[0].text.startswith("@ShopCo my parcel")
    assert second.agent_reply.startswith("@cust1 Thanks, we have opened a claim")
    assert all(c.answerable and c.topic is None and c.label_source == "weak" for c in cases)
    assert [c.case_id for c in import_tweetsumm(FIXTURES / "tweetsumm", ["valid"])] == [
        "tweetsumm:conv-c:0"
    ]


def test_abcd_docs_one_per_subflow() -> None:
    docs = import_abcd_docs(FIXTURES / "abcd_policies")
    assert [doc.doc_id for doc in docs] == [
        "abcd:product_defect.initiate_refund",
        "abcd:product_defect.return_due_to_size",
        "abcd:single_item_query.boots_faq",
    ]
    assert [doc.topic for doc in docs] == ["product_defect", "product_defect", "single_item_query"]
    body = docs[0].body
    assert body.index("Start by asking why") < body.index("Steps:") < body.index("2. Enter the")
    assert "[Offer Refund]" in body and "   - If unsure" in body
    fine = import_abcd_docs(FIXTURES / "abcd_policies", topic_level="subflow")
    assert fine[2].topic == "single_item_query.boots_faq"


def test_registry_imports_every_dataset_and_rejects_bad_requests() -> None:
    for name, dataset in DATASETS.items():
        result = import_dataset(name, FIXTURES / name)
        assert result.cases or result.docs, name
        assert dataset.licence
    summary = summarize(import_dataset("clinc150", FIXTURES / "clinc150", splits=["val"]))
    assert (summary.cases, summary.answerable) == (6, 2)
    assert summary.not_answerable_share == pytest.approx(4 / 6)
    with pytest.raises(DataImportError, match="has no splits"):
        import_dataset("banking77", FIXTURES / "banking77", splits=["val"])
    with pytest.raises(DataImportError, match="unknown dataset 'bank77'; choose from banking77"):
        import_dataset("bank77", FIXTURES / "banking77")
    with pytest.raises(DataImportError, match="train.csv not found"):
        import_dataset("banking77", FIXTURES / "clinc150")


def test_jsonl_round_trip(tmp_path: Path) -> None:
    cases, docs = import_bitext(FIXTURES / "bitext")
    cases += import_tweetsumm(FIXTURES / "tweetsumm") + import_clinc150(FIXTURES / "clinc150")
    write_jsonl(cases, tmp_path / "cases.jsonl")
    write_jsonl(docs, tmp_path / "docs.jsonl")
    assert read_jsonl(tmp_path / "cases.jsonl", LabeledCase) == cases
    assert read_jsonl(tmp_path / "docs.jsonl", KnowledgeDoc) == docs


# ---------------------------------------------------------------- CLI


def test_cli_imports_a_table_with_a_mapping(tmp_path: Path) -> None:
    out = tmp_path / "cases.jsonl"
    args = ["data", "import", str(TICKETS), "--mapping", str(FIXTURES / "generic" / "tickets.yaml")]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [case.case_id for case in read_jsonl(out, LabeledCase)][:2] == ["T-1", "T-2"]
    assert "not answerable" in result.output and "50.0%" in result.output


def test_cli_imports_a_dataset_into_a_folder(tmp_path: Path) -> None:
    args = ["data", "import", "--dataset", "bitext", "--source", str(FIXTURES / "bitext")]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bitext")])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "bitext" / "cases.jsonl", LabeledCase)) == 5
    assert len(read_jsonl(tmp_path / "bitext" / "docs.jsonl", KnowledgeDoc)) == 2
    clinc = ["--dataset", "clinc150", "--source", str(FIXTURES / "clinc150"), "--split", "val"]
    result = CliRunner().invoke(app, ["data", "import", *clinc, "--out", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(tmp_path / "c" / "cases.jsonl", LabeledCase)) == 6
    assert not (tmp_path / "c" / "docs.jsonl").exists()


def test_cli_errors_exit_2_with_the_fix(tmp_path: Path) -> None:
    runner = CliRunner()
    both = ["data", "import", str(TICKETS), "--dataset", "bitext", "--out", str(tmp_path)]
    result = runner.invoke(app, both)
    assert result.exit_code == 2 and "exactly one" in result.output
    no_mapping = runner.invoke(app, ["data", "import", str(TICKETS), "--out", str(tmp_path / "x")])
    assert no_mapping.exit_code == 2 and "needs --mapping" in no_mapping.output
    bad = ["data", "import", "--dataset", "banking77", "--source", str(FIXTURES / "bitext")]
    result = runner.invoke(app, [*bad, "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "train.csv" in result.output


# ---------------------------------------------------------------- real shared data


def shared(name: str) -> Path:
    root = SHARED_DATA / name
    if not root.is_dir():
        pytest.skip(f"{root} is absent (the shared public datasets live beside the repo)")
    return root


def test_real_banking77_has_10003_cases_in_77_topics() -> None:
    root = shared("banking77")
    cases = import_banking77(root)
    assert len(cases) == 10_003
    topics = {case.topic for case in cases}
    assert len(topics) == 77
    assert topics == set(json.loads((root / "categories.json").read_text()))


def test_real_clinc150_eval_split_follows_the_domain_rule() -> None:
    root = shared("clinc150")
    domains = json.loads((root / "domains.json").read_text())
    intents = [intent for group in domains.values() for intent in group]
    assert len(intents) == len(set(intents)) == 150
    answerable_intents = set(domains["banking"]) | set(domains["credit_cards"])
    assert len(answerable_intents) == 30
    cases = import_clinc150(root, splits=CLINC_EVAL)
    # the published val split: 20 queries per intent, plus 100 out-of-scope queries
    answerable = [case for case in cases if case.answerable]
    assert (len(cases), len(answerable)) == (3_100, 600)
    assert {case.topic for case in answerable} == answerable_intents
    kinds = summarize(import_dataset("clinc150", root, splits=CLINC_EVAL)).unanswerable_kinds
    assert kinds["thanks"] == 20 and kinds["chit_chat"] == 14 * 20
    train = import_clinc150(root, splits=CLINC_TRAIN)
    assert (len(train), sum(case.answerable for case in train)) == (15_100, 3_000)


def test_real_bitext_abcd_and_tweetsumm() -> None:
    cases, docs = import_bitext(shared("bitext"))
    assert (len(cases), len(docs), len({case.topic for case in cases})) == (4_514, 27, 27)
    assert len(import_abcd_docs(shared("abcd_policies"))) == 55
    dialogues = import_tweetsumm(shared("tweetsumm"))
    assert dialogues and all(case.context or case.case_id.endswith(":0") for case in dialogues)
    assert len({case.case_id for case in dialogues}) == len(dialogues)
