"""preview_training through a real MCP client over stdio against `python -m finetune_mcp.cli serve`:
the report, the same refusals as start_finetune, nothing left behind; (slow) every dataset format,
every real template, and a real run whose steps and mask match the preview."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from finetune_mcp.testing import write_dataset
from finetune_mcp.testing.rank_datagen import write_ranking_dataset
from finetune_mcp.testing.template_tokenizers import FAMILIES
from server.conftest import SECRET, ServerHome

from .support import chat, snapshot, write_rows

TRAINED = re.compile(r"\[\[(.*?)\]\]", re.S)


def new_server(tmp_path: Path) -> ServerHome:
    """A server home of its own, without a RunPod key (placement: this machine)."""
    (tmp_path / "server").mkdir()
    return ServerHome(tmp_path / "server", RUNPOD_API_KEY="")


def left_behind(server: ServerHome) -> list[Path]:
    runs = server.home / "runs"
    return list(runs.iterdir()) if runs.exists() else []


async def test_preview_over_stdio_and_the_refusals_of_start_finetune(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = write_dataset(tmp_path / "data" / "train.jsonl", "messages", n=40)
    malformed = tmp_path / "data" / "malformed.jsonl"
    malformed.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output"\n')
    good = {"model": str(tiny_model_dir), "dataset": str(data)}
    bad = [
        ({**good, "dataset": str(tmp_path / "missing.jsonl")}, "no such file or folder"),
        ({**good, "dataset": str(malformed)}, "malformed.jsonl, line 2"),
        ({**good, "model": str(tmp_path / "no-model")}, "is neither a model folder nor a Hub id"),
        ({**good, "model": "nobody/no-such-model-xyz"}, "no-such-model-xyz"),
        ({**good, "config_overrides": {"lora_alfa": 8}}, "lora_alfa: unknown field"),
    ]
    server = new_server(tmp_path)
    before = snapshot(tmp_path / "data", tiny_model_dir)
    async with server.client() as client:
        tool = next(t for t in await client.list_tools() if t.name == "preview_training")
        start = next(t for t in await client.list_tools() if t.name == "start_finetune")
        result = await client.call_tool("preview_training", {**good, "max_steps": 3, "examples": 2})
        refusals = []
        for arguments, expected in bad:
            previewed = await client.call_tool("preview_training", arguments, raise_on_error=False)
            started = await client.call_tool("start_finetune", arguments, raise_on_error=False)
            refusals.append((expected, previewed, started))
        prompt = await client.get_prompt("finetune", {"model": "unsloth/Qwen3-4B"})
        listed = await client.call_tool("list_jobs", {})

    assert tool.annotations.read_only_hint is True
    # the same arguments + examples; not the consent ones (confirm, max_cost_usd): a dry run spends nothing
    consent = {"confirm", "max_cost_usd"}
    assert set(start.input_schema["properties"]) - consent < set(tool.input_schema["properties"])
    assert tool.output_schema and "estimate" in tool.output_schema["properties"]
    report = result.structured_content
    assert report["data"]["format"] == "messages" and report["data"]["train_rows"] == 36
    assert len(report["examples"]) == 2 and report["lengths"]["total_steps"] == 3
    for example in report["examples"]:
        spans = TRAINED.findall(example["text"])
        assert len(spans) == 1 and spans[0].endswith("<|im_end|>") and example["ends_with_end_of_turn"]
    assert report["estimate"]["device"] == "cpu" and report["estimate"]["total_seconds"] > 0
    for expected, previewed, started in refusals:
        assert previewed.is_error and started.is_error, expected
        assert expected in previewed.content[0].text, (expected, previewed.content[0].text)
        assert previewed.content[0].text == started.content[0].text  # the same words, the same fix
    text = prompt.messages[0].content.text
    assert text.index("preview_training") < text.index("start_finetune(") and "[[...]]" in text
    assert listed.structured_content["count"] == 0 and not left_behind(server)
    assert snapshot(tmp_path / "data", tiny_model_dir) == before
    assert SECRET not in json.dumps(server.stdout_messages())


FORMATS = {"alpaca": ".jsonl", "messages": ".jsonl", "sharegpt": ".jsonl", "prompt_completion": ".jsonl",
           "text": ".jsonl", "arangodb": "", "json": ".json", "csv": ".csv", "parquet": ".parquet"}


@pytest.mark.slow
async def test_every_format_and_every_real_template_over_stdio(tiny_model_dir: Path, template_models,
                                                               tmp_path: Path) -> None:
    files = {fmt: write_dataset(tmp_path / "data" / f"train-{fmt}{suffix}", fmt, n=24) for fmt, suffix in FORMATS.items()}
    ranking = {shape: write_ranking_dataset(tmp_path / "data" / f"{shape}.jsonl", shape, n=12, docs_per_query=4)
               for shape in ("ranking", "triples", "graded")}
    conversation = write_rows(tmp_path / "data" / "chat.jsonl", [
        chat(("system", "you are helpful."), ("user", "what color is the sky?"), ("assistant", "blue"),
             ("user", "and grass?"), ("assistant", "green")),
    ] * 6)
    models = {family: template_models(family) for family in FAMILIES}
    server = new_server(tmp_path)
    async with server.client() as client:
        by_format = {fmt: (await client.call_tool("preview_training", {"model": str(tiny_model_dir),
                                                                       "dataset": str(path)})).structured_content
                     for fmt, path in files.items()}
        by_shape = {shape: (await client.call_tool("preview_training", {
            "model": str(tiny_model_dir), "dataset": str(path), "task": "rerank"})).structured_content
            for shape, path in ranking.items()}
        by_family = {family: (await client.call_tool("preview_training", {
            "model": str(path), "dataset": str(conversation), "examples": 1,
            "config_overrides": {"validation_split": 0}})).structured_content for family, path in models.items()}
    for fmt, report in by_format.items():
        assert report["data"]["train_rows"] + report["data"]["validation_rows"] == 24, fmt
        assert all(TRAINED.search(ex["text"]) for ex in report["examples"]), fmt
    for shape, report in by_shape.items():
        assert report["data"]["format"] == shape and report["task"] == "rerank"
        assert all(TRAINED.findall(ex["text"])[0] in ("yes", "no") for ex in report["examples"])
    for family, report in by_family.items():
        eot = FAMILIES[family].end_of_turn
        lead = " " if family == "mistral_v0_3" else ""
        assert TRAINED.findall(report["examples"][0]["text"]) == [f"{lead}blue{eot}", f"{lead}green{eot}"], family
        assert report["end_of_turn"] == eot
    assert not left_behind(server)


@pytest.mark.slow
async def test_the_run_does_what_the_preview_said(tiny_model_dir: Path, tmp_path: Path) -> None:
    """A real (tiny, CPU) run: its step count and its trained tokens are the preview's."""
    data = write_dataset(tmp_path / "train.jsonl", "messages", n=30)
    arguments = {"model": str(tiny_model_dir), "dataset": str(data), "num_train_epochs": 2.0,
                 "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2}
    server = new_server(tmp_path)
    async with server.client() as client:
        preview = (await client.call_tool("preview_training", arguments)).structured_content
        job = (await client.call_tool("start_finetune", arguments)).structured_content
        done = (await client.call_tool("wait_for_job", {"job_id": job["job_id"], "timeout_s": 600})).structured_content
    assert done["state"] == "succeeded", done["error"]
    assert done["total_steps"] == preview["lengths"]["total_steps"] == 2 * 4  # ceil(ceil(27 / 4) / 2) × 2 epochs
    log = (Path(done["run_dir"]) / "train.log").read_text()
    assert f"{preview['data']['train_rows']} train" in log
