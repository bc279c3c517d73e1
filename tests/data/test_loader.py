"""data/loader.py: every format and file type, the metadata filters, subset/split, and each kind of bad input."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.data.loader import load_examples, resolve_dataset_source, subset_and_split, validate_dataset
from finetune_mcp.errors import DatasetError
from finetune_mcp.testing import FILE_FORMATS, synthetic_examples, write_dataset

EXPECTED_FORMAT = {"json": "alpaca", "csv": "alpaca", "parquet": "messages"}
SUFFIX = {"json": ".json", "csv": ".csv", "parquet": ".parquet", "arangodb": ""}


def cfg(dataset: Path | str, **overrides: Any) -> EnhancedTrainingConfig:
    return EnhancedTrainingConfig(model="tiny", dataset=str(dataset), **overrides)


def write_lines(path: Path, lines: list[Any]) -> Path:
    """JSON Lines from objects (dumped) or raw strings (written as they are)."""
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def qa_pairs(example: dict[str, Any]) -> tuple[str, str]:
    if "messages" in example:
        user = next(m["content"] for m in example["messages"] if m["role"] == "user")
        return user, example["messages"][-1]["content"]
    question, _, answer = example["text"].rpartition(" ")
    return question, answer


# ------------------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", FILE_FORMATS)
def test_every_generated_format_loads_to_the_same_examples(tmp_path: Path, fmt: str) -> None:
    path = write_dataset(tmp_path / f"data{SUFFIX.get(fmt, '.jsonl')}", fmt, n=30, seed=5)
    data = load_examples(cfg(path, validation_split=0.2))
    assert data.format == EXPECTED_FORMAT.get(fmt, fmt)
    assert (data.rows_read, data.rows_kept, len(data.train), len(data.validation)) == (30, 30, 24, 6)
    got = sorted(qa_pairs(ex) for ex in data.train + data.validation)
    assert got == sorted((ex["question"], ex["answer"]) for ex in synthetic_examples(30, seed=5))
    if fmt != "text":
        assert all([m["role"] for m in ex["messages"]] == ["user", "assistant"] for ex in data.train)


def test_alpaca_input_and_system_become_messages(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", [
        {"instruction": "add the numbers", "input": "2 3", "output": "5", "system": "you are a calculator"},
        {"instruction": "say yes", "output": "yes"},
        {"instruction": "say no", "input": None, "output": "no"},
    ])
    data = load_examples(cfg(path, validation_split=0))
    by_answer = {ex["messages"][-1]["content"]: ex["messages"] for ex in data.train}
    assert by_answer["5"] == [
        {"role": "system", "content": "you are a calculator"},
        {"role": "user", "content": "add the numbers\n\n2 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert by_answer["yes"] == [{"role": "user", "content": "say yes"}, {"role": "assistant", "content": "yes"}]
    assert by_answer["no"][0] == {"role": "user", "content": "say no"}


def test_sharegpt_roles_are_mapped(tmp_path: Path) -> None:
    turns = [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    data = load_examples(cfg(write_lines(tmp_path / "s.jsonl", [{"conversations": turns}]), validation_split=0))
    assert data.train == [{"messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
    ]}]


def test_prompt_completion_strings_and_message_lists(tmp_path: Path) -> None:
    strings = write_lines(tmp_path / "s.jsonl", [{"prompt": "the sky is", "completion": " blue"}])
    assert load_examples(cfg(strings)).train == [{"prompt": "the sky is", "completion": " blue"}]
    lists = write_lines(tmp_path / "l.jsonl", [{
        "prompt": [{"role": "user", "content": "sky?"}], "completion": [{"role": "assistant", "content": "blue"}],
    }])
    assert load_examples(cfg(lists)).train == [
        {"messages": [{"role": "user", "content": "sky?"}, {"role": "assistant", "content": "blue"}]}
    ]


def test_json_variants_data_key_and_json_lines_named_json(tmp_path: Path) -> None:
    rows = [{"text": "one"}, {"text": "two"}]
    (tmp_path / "d.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "l.json").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("d.json", "l.json"):
        data = load_examples(cfg(tmp_path / name, validation_split=0))
        assert sorted(ex["text"] for ex in data.train) == ["one", "two"]


def test_csv_with_messages_as_json_text(tmp_path: Path) -> None:
    import csv

    path = tmp_path / "m.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["messages"])
        writer.writerow([json.dumps([{"role": "user", "content": "hi, you"}, {"role": "assistant", "content": "yes"}])])
    assert load_examples(cfg(path)).train[0]["messages"][1] == {"role": "assistant", "content": "yes"}


def test_forced_format_that_does_not_match(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "a.jsonl", "alpaca", n=3)
    with pytest.raises(DatasetError, match=r"line 1: missing field 'messages'") as err:
        load_examples(cfg(path, dataset_format="messages"))
    assert err.value.line == 1 and err.value.path == str(path)


def test_forced_format_reads_rows_that_auto_detect_calls_otherwise(tmp_path: Path) -> None:
    # 'text' is present, but so is 'instruction': auto picks alpaca; forcing text uses 'text'.
    path = write_lines(tmp_path / "t.jsonl", [{"text": "plain", "instruction": "x", "output": "y"}])
    assert load_examples(cfg(path)).format == "alpaca"
    assert load_examples(cfg(path, dataset_format="text")).train == [{"text": "plain"}]


# ------------------------------------------------------------------------------------------ ArangoDB


def _arango_rows(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(folder.glob("qa_unsloth_*.jsonl")) for line in f.read_text().splitlines()]


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        ({}, lambda m: True),
        ({"min_confidence": 0.8}, lambda m: m["confidence"] >= 0.8),
        ({"validated_only": True}, lambda m: m["validated"] is True),
        ({"question_types": ["arithmetic", "factual"]}, lambda m: m["question_type"] in ("arithmetic", "factual")),
        ({"min_confidence": 0.7, "validated_only": True}, lambda m: m["confidence"] >= 0.7 and m["validated"]),
    ],
)
def test_arangodb_folder_with_each_metadata_filter(tmp_path: Path, filters: dict, keep) -> None:
    folder = write_dataset(tmp_path / "export", "arangodb", n=60, seed=1)
    rows = _arango_rows(folder)
    expected = [r for r in rows if keep(r["metadata"])]
    assert 0 < len(expected) <= 60
    data = load_examples(cfg(folder, metadata_filters=filters, validation_split=0))
    assert data.format == "arangodb" and data.rows_read == 60 and data.rows_kept == len(expected)
    assert len(data.files) == 2
    assert sum(data.removed_by_filter.values()) == 60 - len(expected)
    assert sorted(json.dumps(ex["metadata"], sort_keys=True) for ex in data.train) == sorted(
        json.dumps(r["metadata"], sort_keys=True) for r in expected
    )


def test_empty_after_filters_says_which_filter_removed_what(tmp_path: Path) -> None:
    folder = write_dataset(tmp_path / "export", "arangodb", n=12)
    with pytest.raises(DatasetError, match=r"all 12 rows were removed .*12 by metadata_filters\.min_confidence=1\.0"):
        load_examples(cfg(folder, metadata_filters={"min_confidence": 1.0}))


def test_metadata_filters_on_data_without_metadata_is_an_error(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "a.jsonl", "alpaca", n=3)
    with pytest.raises(DatasetError, match=r"metadata_filters apply to rows with a 'metadata' object.*line 1 has none"):
        load_examples(cfg(path, metadata_filters={"validated_only": True}))


def test_granger_export_folder_shapes(tmp_path: Path) -> None:
    """The two row shapes GRANGER's exporters write, beside their `.stats.json` summaries."""
    folder = tmp_path / "qa_output"
    folder.mkdir()
    meta = {"question_type": "factual", "confidence": 0.9, "validation_score": 0.8, "validated": True}
    write_lines(folder / "qa_unsloth_20250519_120000.jsonl", [
        {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1", "thinking": "t"}],
         "metadata": meta},
        {"messages": [{"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}],
         "metadata": {**meta, "confidence": 0.2}},
    ])
    write_lines(folder / "qa_unsloth_20250519_130000.jsonl", [
        {"instruction": "q3", "input": "", "output": "a3", "metadata": {"question_type": "factual", "confidence": 0.95}},
    ])
    (folder / "qa_unsloth_20250519_120000.stats.json").write_text(json.dumps({"total_pairs": 2}))
    (folder / "validation_results.json").write_text(json.dumps({"passing_qa_pairs": 2}))
    data = load_examples(cfg(folder, metadata_filters={"min_confidence": 0.5}, validation_split=0))
    assert [Path(f).name for f in data.files] == ["qa_unsloth_20250519_120000.jsonl", "qa_unsloth_20250519_130000.jsonl"]
    assert data.format == "mixed" and data.rows_read == 3 and data.removed_by_filter == {"min_confidence=0.5": 1}
    assert sorted(ex["messages"][-1]["content"] for ex in data.train) == ["a1", "a3"]
    assert all(set(m) == {"role", "content"} for ex in data.train for m in ex["messages"])


def test_metadata_field_of_the_wrong_type(tmp_path: Path) -> None:
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    path = write_lines(tmp_path / "qa_unsloth_x.jsonl", [
        {"messages": msgs, "metadata": {"confidence": 0.9}},
        {"messages": msgs, "metadata": {"confidence": "high"}},
    ])
    with pytest.raises(DatasetError, match=r"line 2: metadata.confidence is 'high'; expected a number"):
        load_examples(cfg(path, metadata_filters={"min_confidence": 0.5}))


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        (['{"text": "ok"}', "", '{"text": "broken"'], 3, r"invalid JSON .*each line must be one JSON object"),
        ([{"instruction": "q", "output": "a"}, {"instruction": "q"}], 2, r"missing field 'output'"),
        ([{"instruction": "q", "output": ["a"]}], 1, r"field 'output' is a list; expected a string"),
        ([{"instruction": "  ", "output": "a"}], 1, r"field 'instruction' is empty"),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "bot", "content": "a"}]}],
            1, r"messages\[1\]\.role is 'bot'; expected one of system, user, assistant",
        ),
        ([{"messages": [{"role": "user", "content": 3}]}], 1, r"messages\[0\]\.content is a number; expected a string"),
        ([{"messages": [{"role": "user", "content": "q"}]}], 1, r"'messages' has no assistant turn"),
        ([{"messages": []}], 1, r"'messages' is an empty list"),
        ([{"conversations": [{"from": "robot", "value": "x"}]}], 1, r"conversations\[0\]\.from is 'robot'"),
        ([{"prompt": "p", "completion": [{"role": "assistant", "content": "a"}]}], 1, r"'prompt' is a string and"),
        ([["not", "an", "object"]], 1, r"the row is a list; expected a JSON object"),
        ([{"question": "q", "answer": "a"}], 1, r"cannot tell the format from the keys \['answer', 'question'\]"),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
             {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}],
            2, r"in sharegpt format but the file starts in messages format",
        ),
        (
            [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "metadata": []}],
            1, r"field 'metadata' is a list; expected an object",
        ),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path: Path, lines: list, line: int, message: str) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(DatasetError, match=message) as err:
        load_examples(cfg(path))
    assert (err.value.path, err.value.line) == (str(path), line)
    assert str(err.value).startswith(f"{path}, line {line}: ")


def test_csv_and_parquet_rows_are_numbered(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    csv_path = tmp_path / "a.csv"
    csv_path.write_text("instruction,input,output\nq1,,a1\nq2,,\n")
    with pytest.raises(DatasetError, match=r"a\.csv, line 3: field 'output' is empty"):
        load_examples(cfg(csv_path))
    csv_path.write_text("instruction,output\nq1,a1,extra\n")
    with pytest.raises(DatasetError, match=r"line 2: row has more cells than the header"):
        load_examples(cfg(csv_path))
    pq_path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist([{"instruction": "q", "output": "a"}, {"instruction": "q", "output": None}]), pq_path)
    with pytest.raises(DatasetError, match=r"a\.parquet, line 2: missing field 'output'"):
        load_examples(cfg(pq_path))


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("\n" if name.endswith("jsonl") else "")
    with pytest.raises(DatasetError, match="the file is empty"):
        load_examples(cfg(tmp_path / name))


def test_missing_paths_unsupported_files_and_empty_folders(tmp_path: Path) -> None:
    for missing in (tmp_path / "nope.jsonl", "data/train.jsonl", "./owner/name", "justaname"):
        with pytest.raises(DatasetError, match="no such file or folder"):
            resolve_dataset_source(str(missing))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"unsupported file type '\.txt'"):
        load_examples(cfg(tmp_path / "notes.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match=r"the folder holds no \.jsonl"):
        validate_dataset(cfg(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(DatasetError, match=r"top level is a dict; expected a list"):
        load_examples(cfg(tmp_path / "bad.json"))


def test_hub_id_offline_says_it_could_not_be_reached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    source = resolve_dataset_source("someone/some-dataset")
    assert (source.kind, source.location) == ("hub", "someone/some-dataset")
    for call in (load_examples, validate_dataset):
        with pytest.raises(DatasetError, match=r"'someone/some-dataset' could not be reached .*pass a local file"):
            call(cfg("someone/some-dataset"))


def test_hub_id_prepared_by_datasets_before_passes_offline_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    (tmp_path / "hf" / "datasets" / "someone___cached").mkdir(parents=True)
    summary = validate_dataset(cfg("someone/cached"))
    assert summary == {"source": "someone/cached", "kind": "hub", "cached": True, "split": "train"}


# ------------------------------------------------------------------------------------------ subset / split


def test_seeded_subset_is_deterministic_and_nested(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "m.jsonl", "messages", n=100, seed=2)

    def picked(max_examples: int, seed: int) -> list:
        data = load_examples(cfg(path, max_examples=max_examples, seed=seed, validation_split=0.1))
        assert data.rows_read == 100 and data.rows_kept == min(max_examples, 100)
        return data.validation + data.train

    assert picked(20, seed=1) == picked(20, seed=1)
    assert picked(20, seed=1) != picked(20, seed=2)
    # The shuffle is shared: a smaller subset holds the same examples as the start of a larger one.
    examples = [{"i": i} for i in range(100)]
    small, _ = subset_and_split(examples, 20, 0.0, seed=7)
    large, _ = subset_and_split(examples, 50, 0.0, seed=7)
    assert small == large[:20]
    assert len(picked(500, seed=1)) == 100


@pytest.mark.parametrize(
    ("n", "split", "sizes"),
    [(10, 0.1, (9, 1)), (10, 0.0, (10, 0)), (1, 0.5, (1, 0)), (3, 0.5, (2, 1)), (2, 0.5, (1, 1)), (9, 0.1, (9, 0))],
)
def test_split_sizes(n: int, split: float, sizes: tuple[int, int]) -> None:
    train, validation = subset_and_split([{"i": i} for i in range(n)], None, split, seed=0)
    assert (len(train), len(validation)) == sizes
    assert sorted(x["i"] for x in train + validation) == list(range(n))


def test_validate_dataset_summarises_local_data(tmp_path: Path) -> None:
    path = write_dataset(tmp_path / "s.jsonl", "sharegpt", n=20)
    summary = validate_dataset(cfg(path, max_examples=10, validation_split=0.2))
    assert summary == {
        "source": str(path), "kind": "file", "format": "sharegpt", "rows_read": 20, "rows_kept": 10,
        "train_rows": 8, "validation_rows": 2, "removed_by_filter": {}, "files": [str(path)],
    }


def test_module_imports_no_heavy_libraries() -> None:
    code = (
        "import sys, finetune_mcp.data.loader as d; "
        "heavy = [m for m in ('torch', 'datasets', 'pyarrow', 'transformers', 'pandas') if m in sys.modules]; "
        "sys.exit(', '.join(heavy) or None)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"heavy imports at module level: {result.stderr.strip()}"


class _HubStandIn(BaseHTTPRequestHandler):
    """Answers every Hub API call as the Hub does for a repository that does not exist."""

    def do_GET(self) -> None:
        body = b'{"error": "Repository not found"}'
        self.send_response(404)
        self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def online_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    # huggingface_hub reads HF_HUB_OFFLINE once, at import (the root conftest sets it for every test)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return monkeypatch


def test_hub_id_unreachable_online_fails_fast(online_hub: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    online_hub.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for call in (validate_dataset, load_examples):
        with pytest.raises(DatasetError, match=r"could not be reached .*check the network connection and the id"):
            call(cfg("someone/some-dataset"))


def test_hub_id_that_does_not_exist(online_hub: pytest.MonkeyPatch) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HubStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        online_hub.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(DatasetError, match=r"'someone/missing' does not exist \(or is private\)"):
            validate_dataset(cfg("someone/missing"))
    finally:
        server.shutdown()
        server.server_close()


def test_hub_snapshot_in_the_offline_cache_is_read_like_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dataset fetched with `hf download --repo-type dataset` trains offline; the split picks the files."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    repo = tmp_path / "hf" / "hub" / "datasets--someone--tiny"
    snapshot = repo / "snapshots" / "0123abcd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    write_dataset(snapshot / "data" / "train-00000-of-00001.parquet", "parquet", n=12)
    write_lines(snapshot / "data" / "test.jsonl", [{"text": "held out"}, {"broken": True}])
    (snapshot / "README.md").write_text("# tiny")
    data = load_examples(cfg("someone/tiny", validation_split=0))
    assert (data.format, data.rows_read, data.source) == ("messages", 12, "someone/tiny")
    assert validate_dataset(cfg("someone/tiny"))["cached"] is True
    with pytest.raises(DatasetError, match=r"test\.jsonl, line 2: cannot tell the format"):
        load_examples(cfg("someone/tiny", dataset_split="test"))
    with pytest.raises(DatasetError, match=r"no files for split 'validation'"):
        load_examples(cfg("someone/tiny", dataset_split="validation"))


def test_a_row_weight_is_kept_and_checked(tmp_path):
    import json

    from finetune_mcp.config import build_config
    from finetune_mcp.data.loader import load_examples
    from finetune_mcp.errors import DatasetError

    rows = [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], "weight": w}
            for w in (0.5, 2, 1)]
    path = tmp_path / "weighted.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    data = load_examples(build_config({"model": "m", "dataset": str(path), "validation_split": 0}))
    assert sorted(ex["weight"] for ex in data.train) == [0.5, 1.0, 2.0]
    rows[1]["weight"] = -1
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DatasetError, match=r"line 2.*'weight' is -1"):
        load_examples(build_config({"model": "m", "dataset": str(path), "validation_split": 0}))
