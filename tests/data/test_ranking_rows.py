"""Ranking datasets: each shape detected and normalised, rows of one query merged before the split,
malformed rows refused with the file and line named, and data that does not fit the task refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.config import build_config
from finetune_mcp.data.loader import load_examples, validate_dataset
from finetune_mcp.errors import DatasetError
from finetune_mcp.testing.rank_datagen import write_ranking_dataset


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def load(path: Path, **overrides):
    return load_examples(build_config({"model": "m", "dataset": str(path), "task": "rerank",
                                       "validation_split": 0, **overrides}))


def test_query_positives_negatives_with_instruction(tmp_path: Path) -> None:
    # 'instruction' is also alpaca's key: the ranking keys must win
    data = load(write_jsonl(tmp_path / "r.jsonl", [
        {"query": "q1", "positive": "p", "negatives": ["n1", "n2"], "instruction": "Find code"},
        {"query": "q2", "positives": ["p1", "p2"], "negatives": ["n"]},
    ]))
    assert data.format == "ranking"
    assert sorted(data.train, key=lambda g: g["query"]) == [
        {"query": "q1", "instruction": "Find code", "docs": ["p", "n1", "n2"], "relevance": [1.0, 0.0, 0.0]},
        {"query": "q2", "instruction": None, "docs": ["p1", "p2", "n"], "relevance": [1.0, 1.0, 0.0]},
    ]


def test_triples_of_one_query_merge_into_one_group(tmp_path: Path) -> None:
    data = load(write_jsonl(tmp_path / "t.jsonl", [
        {"query": "q", "positive": "p", "negative": "n1"},
        {"query": "other", "positive": "x", "negative": "y"},
        {"query": "q", "positive": "p", "negative": "n2"},
        {"query": "q", "positive": "n1", "negative": "n3"},  # listed as negative before: the highest relevance wins
    ]))
    assert data.format == "triples" and data.rows_read == 4 and data.rows_kept == 2
    group = next(g for g in data.train if g["query"] == "q")
    assert dict(zip(group["docs"], group["relevance"], strict=True)) == {"p": 1.0, "n1": 1.0, "n2": 0.0, "n3": 0.0}


def test_graded_docs(tmp_path: Path) -> None:
    data = load(write_jsonl(tmp_path / "g.jsonl", [
        {"query": "q", "docs": [{"text": "a", "relevance": 3}, {"text": "b", "relevance": 0.5},
                                {"text": "c", "relevance": 0}]},
    ]))
    assert data.format == "graded"
    assert data.train[0]["relevance"] == [3.0, 0.5, 0.0]


def test_csv_cells_hold_the_lists_as_json(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    path.write_text('query,positive,negatives\nq,p,"[""n1"", ""n2""]"\n', encoding="utf-8")
    assert load(path).train[0]["docs"] == ["p", "n1", "n2"]


def test_the_validation_split_holds_whole_queries(tmp_path: Path) -> None:
    path = write_ranking_dataset(tmp_path / "t.jsonl", shape="triples", n=40)  # 7 rows per query
    data = load(path, validation_split=0.25)
    assert len(data.train) == 30 and len(data.validation) == 10
    assert not {g["query"] for g in data.train} & {g["query"] for g in data.validation}
    assert all(len(g["docs"]) == 8 and sum(g["relevance"]) == 1 for g in data.train + data.validation)


BAD_ROWS = [
    ({"query": "q", "positive": "p", "negatives": []}, "field 'negatives' is an empty list"),
    ({"query": "q", "positive": 3, "negatives": ["n"]}, "field 'positive' is a number; expected a string"),
    ({"query": " ", "positive": "p", "negatives": ["n"]}, "field 'query' is empty"),
    ({"query": "q", "positive": "p", "positives": ["p2"], "negatives": ["n"]}, "both 'positive' and 'positives'"),
    ({"query": "q", "positive": "p", "negatives": ["n", 7]}, "negatives[1] is a number"),
    ({"query": "q", "positive": "p", "negative": None}, "missing field 'negative'"),
    ({"query": "q", "docs": [{"text": "a", "relevance": 1}]}, "field 'docs' is 1 doc(s)"),
    ({"query": "q", "docs": [{"text": "a", "relevance": 1}, {"text": "b"}]}, "docs[1].relevance is missing"),
    ({"query": "q", "docs": [{"text": "a", "relevance": 1}, {"text": "b", "relevance": -1}]},
     "docs[1].relevance is -1"),
    ({"query": "q", "docs": [{"text": "a", "relevance": 0}, {"text": "b", "relevance": 0}]},
     "no document has relevance > 0"),
    ({"query": "q", "docs": ["a", "b"]}, "docs[0] is a string; expected an object"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS, ids=[m for _, m in BAD_ROWS])
def test_malformed_rows_are_refused_with_the_line(tmp_path: Path, row: dict, message: str) -> None:
    good = {"query": "ok", "positive": "p", "negatives": ["n"]} if "docs" not in row else \
        {"query": "ok", "docs": [{"text": "a", "relevance": 1}, {"text": "b", "relevance": 0}]}
    if "negative" in row and "negatives" not in row:
        good = {"query": "ok", "positive": "p", "negative": "n"}
    path = write_jsonl(tmp_path / "bad.jsonl", [good, row])
    with pytest.raises(DatasetError) as err:
        load(path)
    assert err.value.line == 2 and f"{path}, line 2: " in str(err.value)
    assert message in str(err.value) and str(err.value).endswith("fix the row")


def test_ranking_rows_need_task_rerank(tmp_path: Path) -> None:
    path = write_ranking_dataset(tmp_path / "r.jsonl", n=5)
    with pytest.raises(DatasetError, match=r"the data is in ranking format.*set method='rerank'"):
        validate_dataset(build_config({"model": "m", "dataset": str(path)}))


def test_task_rerank_refuses_chat_data(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"},
                                                               {"role": "assistant", "content": "yo"}]}])
    with pytest.raises(DatasetError, match=r"the data is in messages format, but the training method takes "
                       r"ranking, triples, graded rows; set method='sft'"):
        load(path)


def test_a_query_with_other_keys_is_still_an_instruction_row(tmp_path: Path) -> None:
    # Only 'query' + a ranking key makes a ranking row; an alpaca row with a 'query' field stays alpaca.
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "i", "output": "o", "query": "x"}])
    data = load_examples(build_config({"model": "m", "dataset": str(path), "validation_split": 0}))
    assert data.format == "alpaca"
