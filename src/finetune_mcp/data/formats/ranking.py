"""Ranking datasets: recognise and check ranking rows, merge them into query groups.

Three row shapes (in JSONL, JSON, CSV or Parquet, like every format; detected from the keys):

    ranking   {"query", "positive": str | "positives": [str], "negatives": [str], "instruction"?}
    triples   {"query", "positive": str, "negative": str, "instruction"?}       (MS MARCO-style)
    graded    {"query", "docs": [{"text": str, "relevance": number >= 0}, ...], "instruction"?}

Every row becomes one *query group* `{"query", "instruction", "docs": [str], "relevance": [float]}`
(positives 1, negatives 0; graded as given, relevant when > 0). Rows that share a query (and
instruction) are merged into one group before the train/validation split, so MS MARCO triples of
one query never land on both sides and the held-out queries are really unseen.

Three formats, registered in `data.formats` (before the chat formats: a ranking row may carry an
'instruction' too). Standard library only: the server imports this at start-up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NoReturn

from finetune_mcp.data.formats.base import RowFormat
from finetune_mcp.errors import DatasetError

# Keys that make a row with a "query" a ranking row (a bare "query" may be an instruction dataset's field).
RANKING_KEYS = ("positive", "positives", "negative", "negatives", "docs")
# CSV / Parquet cells that hold lists as JSON text.
NESTED_RANKING_FIELDS = frozenset({"positives", "negatives", "docs"})

EXPECTED = {
    "ranking": "ranking rows need 'query' (string), 'positive' (string) or 'positives' (list of strings), "
               "'negatives' (non-empty list of strings), optional 'instruction'",
    "triples": "triple rows need 'query', 'positive' and 'negative' strings, optional 'instruction'",
    "graded": "graded rows need 'query' (string) and 'docs': a list of at least two {'text': string, "
              "'relevance': number >= 0} with at least one relevance > 0, optional 'instruction'",
}


def is_ranking_row(row: dict[str, Any]) -> bool:
    return "query" in row and any(key in row for key in RANKING_KEYS)


def _is_graded(row: dict[str, Any]) -> bool:
    return is_ranking_row(row) and "docs" in row


def _is_triple(row: dict[str, Any]) -> bool:
    return is_ranking_row(row) and "docs" not in row and "negative" in row and "negatives" not in row


def normalize_ranking_row(row: dict[str, Any], fmt: str, *, path: Path | str, line: int) -> dict[str, Any]:
    """Check one ranking row and return its query group; a DatasetError naming the line otherwise."""
    check = _RankingChecker(row, fmt, path, line)
    query = check.text("query")
    instruction = check.optional_text("instruction")
    if fmt == "graded":
        docs, relevance = check.graded_docs()
    elif fmt == "triples":
        docs, relevance = [check.text("positive"), check.text("negative")], [1.0, 0.0]
    else:
        if "positive" in row and "positives" in row:
            check.fail("both 'positive' and 'positives' are given; keep one")
        positives = [check.text("positive")] if "positive" in row else check.text_list("positives")
        negatives = check.text_list("negatives")
        docs, relevance = positives + negatives, [1.0] * len(positives) + [0.0] * len(negatives)
    return {"query": query, "instruction": instruction, "docs": docs, "relevance": relevance}


def merge_query_groups(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One group per (instruction, query), in first-seen order; a document listed twice keeps its
    highest relevance."""
    groups: dict[tuple[str | None, str], dict[str, float]] = {}
    for example in examples:
        docs = groups.setdefault((example["instruction"], example["query"]), {})
        for doc, rel in zip(example["docs"], example["relevance"], strict=True):
            docs[doc] = max(rel, docs.get(doc, rel))
    return [
        {"query": query, "instruction": instruction, "docs": list(docs), "relevance": list(docs.values())}
        for (instruction, query), docs in groups.items()
    ]


def _kind(value: Any) -> str:
    names = {str: "a string", list: "a list", dict: "an object", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _describe(value: Any) -> str:
    """What a bad value is, for a message: missing, empty (a blank string), or its kind."""
    if value is None:
        return "missing"
    return "empty" if isinstance(value, str) else _kind(value)


class _RankingChecker:
    """Field access for one ranking row that fails with the file, the line and the expected shape."""

    def __init__(self, row: dict[str, Any], fmt: str, path: Path | str, line: int) -> None:
        self.row, self.fmt, self.path, self.line = row, fmt, path, line

    def fail(self, message: str) -> NoReturn:
        raise DatasetError(f"{message} ({EXPECTED[self.fmt]}); fix the row", path=self.path, line=self.line)

    def text(self, key: str) -> str:
        if self.row.get(key) is None:
            self.fail(f"missing field {key!r}")
        value = self.row[key]
        if not isinstance(value, str):
            self.fail(f"field {key!r} is {_kind(value)}; expected a string")
        if not value.strip():
            self.fail(f"field {key!r} is empty; expected text")
        return value

    def optional_text(self, key: str) -> str | None:
        value = self.row.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            self.fail(f"field {key!r} is {_kind(value)}; expected a string")
        return value

    def text_list(self, key: str) -> list[str]:
        if self.row.get(key) is None:
            self.fail(f"missing field {key!r}")
        value = self.row[key]
        if not isinstance(value, list) or not value:
            self.fail(f"field {key!r} is {_kind(value) if value != [] else 'an empty list'}; expected a non-empty "
                      "list of strings")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail(f"{key}[{i}] is {_describe(item)}; expected a non-empty string")
        return list(value)

    def graded_docs(self) -> tuple[list[str], list[float]]:
        docs = self.row.get("docs")
        if not isinstance(docs, list) or len(docs) < 2:
            what = "missing" if docs is None else (_kind(docs) if not isinstance(docs, list) else f"{len(docs)} doc(s)")
            self.fail(f"field 'docs' is {what}; expected a list of at least two documents")
        texts, relevance = [], []
        for i, doc in enumerate(docs):
            if not isinstance(doc, dict):
                self.fail(f"docs[{i}] is {_kind(doc)}; expected an object with 'text' and 'relevance'")
            text, rel = doc.get("text"), doc.get("relevance")
            if not isinstance(text, str) or not text.strip():
                self.fail(f"docs[{i}].text is {_describe(text)}; expected a non-empty string")
            if isinstance(rel, bool) or not isinstance(rel, int | float) or not (math.isfinite(rel) and rel >= 0):
                self.fail(f"docs[{i}].relevance is {'missing' if rel is None else repr(rel)}; expected a finite "
                          "number >= 0 (0 = not relevant)")
            texts.append(text)
            relevance.append(float(rel))
        if not any(r > 0 for r in relevance):
            self.fail("no document has relevance > 0, so the row ranks nothing")
        return texts, relevance


def _format(name: str, matches) -> RowFormat:
    return RowFormat(name, EXPECTED[name], matches,
                     lambda row, path, line: normalize_ranking_row(row, name, path=path, line=line),
                     row_extras=False, combine=merge_query_groups, nested_fields=NESTED_RANKING_FIELDS)


# graded and triples first: a row that is neither is a plain ranking row
FORMATS = (_format("graded", _is_graded), _format("triples", _is_triple), _format("ranking", is_ranking_row))
