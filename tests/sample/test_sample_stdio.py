"""sample_model end to end: the real `finetune-mcp serve` over stdio (a real MCP client), the real
worker, the offline tiny model trained on the CPU through the server once for this module.

What it shows: the tuned model answers its training rows with their targets where the base model
does not; the merged model gives the adapter's greedy answers; the job's f16 GGUF export, run by
llama.cpp, gives the merged model's greedy answers token for token with entropies within 0.01 nats; get_job / wait_for_job / get_samples
/ the model card show the results; the CLI samples a job's held-out rows; bad requests are refused
with the fix and leave no job and no run directory behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

from finetune_mcp.config import build_config
from finetune_mcp.data.loader import load_examples
from finetune_mcp.jobs.backends.local import process_group_alive
from finetune_mcp.testing import write_dataset
from finetune_mcp.testing.local_server import job_ended
from server.conftest import ServerHome

pytestmark = pytest.mark.slow

# 12 training rows, 4 held out; 50 steps of 8 rows is enough for the tiny model to learn them by heart.
TRAINING = {"max_steps": 50, "learning_rate": 1e-2, "target": "local", "config_overrides": {
    "validation_split": 0.25, "max_seq_length": 64, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
    "lora_r": 16, "lora_alpha": 16, "logging_steps": 10, "save_steps": 1000, "save_merged": True}}
TRAIN_ROWS = {"rows_split": "train", "num_rows": 12, "max_new_tokens": 8}


@dataclass
class Trained:
    server: ServerHome
    job_id: str
    model: Path
    dataset: Path
    run_dir: Path




def call(server: ServerHome, tool: str, args: dict[str, Any]) -> dict[str, Any]:
    """One tool call on a fresh server (sync, for module fixtures); a job it starts is waited for."""

    async def go() -> dict[str, Any]:
        async with server.client() as client:
            result = (await client.call_tool(tool, args)).structured_content
            return await job_ended(client, result["job_id"]) if result.get("state") == "queued" else result

    return anyio.run(go)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Trained]:
    root = tmp_path_factory.mktemp("sample-stdio")
    server = ServerHome(root)
    dataset = write_dataset(root / "qa.jsonl", "messages", n=16)
    job = call(server, "start_finetune", {"model": str(tiny_model_dir), "dataset": str(dataset), **TRAINING})
    assert job["state"] == "succeeded", job["error"]
    yield Trained(server, job["job_id"], tiny_model_dir, dataset, Path(job["run_dir"]))
    store = server.store()
    for left in store.list(limit=1000):  # no test leaves a worker running
        if left.pgid and process_group_alive(left.pgid):
            os.killpg(left.pgid, signal.SIGKILL)
    store.close()


@pytest.fixture(scope="module")
def adapter_samples(trained: Trained) -> dict[str, Any]:
    """The job's adapter and its base on the 12 rows it trained on, as wait_for_job returns it."""
    done = call(trained.server, "sample_model", {"job_id": trained.job_id, **TRAIN_ROWS})
    assert done["state"] == "succeeded", done["error"]
    return done


async def test_the_tuned_model_answers_its_training_targets_where_the_base_does_not(trained: Trained,
                                                                                   adapter_samples) -> None:
    done = adapter_samples
    assert done["kind"] == "sample" and "get_samples" in done["hint"]
    models = {m["label"]: m for m in done["result"]["models"]}
    assert models["tuned"]["normalized_match_rate"] >= 0.75 and models["base"]["normalized_match_rate"] == 0.0
    assert done["metrics"]["sample/tuned/normalized_match_rate"] == pytest.approx(models["tuned"]["normalized_match_rate"],
                                                                           abs=1e-4)  # metrics are rounded
    samples = done["result"]["samples"]
    assert len(samples) == 10 and done["result"]["num_prompts"] == 12  # get_job shows the first 10
    for sample in samples:
        tuned, base = sample["outputs"]["tuned"], sample["outputs"]["base"]
        assert sample["reference"] and base["answer"] != sample["reference"]
        if tuned["normalized_match"]:
            assert tuned["answer"].lower() == sample["reference"].lower()
    assert models["tuned"]["mean_entropy"] < models["base"]["mean_entropy"]  # it became surer of its answers

    async with trained.server.client() as client:
        full = (await client.call_tool("get_samples", {"job_id": done["job_id"]})).structured_content
        short = (await client.call_tool("get_samples", {"job_id": done["job_id"], "include_tokens": False})
                 ).structured_content
        listed = (await client.call_tool("list_jobs", {})).structured_content
        card = (await client.call_tool("generate_model_card", {"job_id": trained.job_id})).structured_content
    training = json.loads((trained.run_dir / "result.json").read_text())
    assert full["threshold"] == pytest.approx(training["high_entropy_threshold"], abs=1e-4)
    assert trained.job_id in full["threshold_source"]
    # each model is warmed up before it is timed, so the one sampled first is not charged the start-up
    assert all(m["warmup_s"] > 0 and m["ttft_s"] > 0 for m in full["models"])
    output = full["samples"][0]["outputs"]["tuned"]
    assert output["tokens"] and len(output["tokens"]) == output["num_tokens"]
    assert output["tokens"][-1]["special"] == "<|im_end|>" or output["finish_reason"] == "length"
    assert all(t["entropy"] >= 0 and len(t["alternatives"]) == 3 for t in output["tokens"])
    assert all(not o["tokens"] for s in short["samples"] for o in s["outputs"].values())
    spans = [s for row in full["samples"] for o in row["outputs"].values() for s in o["spans"]]
    assert all(s["max_entropy"] > full["threshold"] for s in spans)
    assert all(j["result"] is None for j in listed["jobs"])  # list_jobs stays short
    assert "## Sample generations" in card["markdown"] and "| Prompt | Reference | Base | Fine-tuned |" in card["markdown"]
    assert done["job_id"] in card["markdown"] and "✓" in card["markdown"]


async def test_the_merged_model_gives_the_adapters_greedy_answers(trained: Trained, adapter_samples) -> None:
    async with trained.server.client() as client:
        started = (await client.call_tool("sample_model", {"job_id": trained.job_id, "weights": "merged",
                                                           "compare_with_base": False, **TRAIN_ROWS})).structured_content
        done = await job_ended(client, started["job_id"])
        merged = (await client.call_tool("get_samples", {"job_id": done["job_id"]})).structured_content
        adapter = (await client.call_tool("get_samples", {"job_id": adapter_samples["job_id"]})).structured_content
    assert started["sampled"] == [f"tuned: {trained.run_dir / 'merged'}"]
    assert done["state"] == "succeeded", done["error"]
    assert [m["weights"] for m in merged["models"]] == ["merged"]
    texts = [row["outputs"]["tuned"]["text"] for row in merged["samples"]]
    assert texts == [row["outputs"]["tuned"]["text"] for row in adapter["samples"]]
    entropies = [t["entropy"] for row in merged["samples"] for t in row["outputs"]["tuned"]["tokens"]]
    assert entropies == pytest.approx([t["entropy"] for row in adapter["samples"]
                                       for t in row["outputs"]["tuned"]["tokens"]], abs=1e-3)


async def test_bad_requests_are_refused_with_the_fix_and_leave_nothing_behind(trained: Trained, adapter_samples,
                                                                              tmp_path: Path) -> None:
    one_row = write_dataset(tmp_path / "one.jsonl", "messages", n=1)
    job, model = trained.job_id, str(trained.model)
    async with trained.server.client() as client:
        cancelled = (await client.call_tool("start_finetune", {
            "model": model, "dataset": str(trained.dataset), "target": "local",
            "config_overrides": {"max_steps": 100_000, "max_seq_length": 64}})).structured_content["job_id"]
        await client.call_tool("cancel_job", {"job_id": cancelled})
        before = (await client.call_tool("list_jobs", {"limit": 200})).structured_content["count"]
        runs = sorted((trained.server.home / "runs").iterdir())

        async def refused(args: dict[str, Any]) -> str:
            result = await client.call_tool("sample_model", args, raise_on_error=False)
            assert result.is_error, args
            return result.content[0].text

        assert "no job ft-ffffffffffff; list_jobs" in await refused({"job_id": "ft-ffffffffffff"})
        assert "not a job id" in await refused({"job_id": "../runs"})
        assert ("is a sample job (generations side by side with entropy marks (result.json)); sampling its model "
                "needs a training job") in await refused({"job_id": adapter_samples["job_id"]})
        assert "is cancelled; sampling its model needs a succeeded job" in await refused({"job_id": cancelled})
        assert "give exactly one of job_id" in await refused({"job_id": job, "model": model})
        assert "with `model`, give prompts, or a dataset" in await refused({"model": model})
        assert "validation split holds no rows" in await refused(
            {"model": model, "dataset": str(one_row), "rows_split": "validation"})
        assert "greater than or equal to 0" in await refused({"job_id": job, "temperature": -1})
        assert "top_p=0.5 applies only when sampling; set temperature > 0" in await refused(
            {"job_id": job, "top_p": 0.5})
        assert "give prompts or num_rows" in await refused({"job_id": job, "prompts": ["hi"], "num_rows": 3})
        assert "ends with an assistant turn" in await refused(
            {"job_id": job, "prompts": [[{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]]})
        missing = str(tmp_path / "no" / "such" / "model")  # inside the allowed roots; outside, the roots refuse it
        assert "neither a model folder nor a Hub id" in await refused({"model": missing, "prompts": ["hi"]})
        assert "outside the folders this server may use" in await refused({"model": "/no/such/model", "prompts": ["hi"]})
        assert "no such GGUF file" in await refused(
            {"model": str(tmp_path / "model.gguf"), "prompts": ["hi"]})
        assert "the comparison needs a training job" in await refused(
            {"job_id": job, "compare_with": adapter_samples["job_id"]})
        after = (await client.call_tool("list_jobs", {"limit": 200})).structured_content["count"]
    assert after == before and sorted((trained.server.home / "runs").iterdir()) == runs


def test_the_cli_samples_the_held_out_rows_of_a_job(trained: Trained, adapter_samples) -> None:
    cli = [sys.executable, "-m", "finetune_mcp.cli"]
    env = {**trained.server.env, "COLUMNS": "200"}
    ran = subprocess.run([*cli, "sample", trained.job_id, "--no-base", "--json", "--max-new-tokens", "6"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(ran.stdout)
    spec = json.loads((trained.run_dir / "spec.json").read_text())
    held_out = load_examples(build_config(spec)).validation
    assert [s["reference"] for s in result["samples"]] == [ex["messages"][-1]["content"] for ex in held_out]
    assert [s["prompt"] for s in result["samples"]] == [ex["messages"][-2]["content"] for ex in held_out]
    assert [m["label"] for m in result["models"]] == ["tuned"] and "succeeded" in ran.stderr
    status = subprocess.run([*cli, "status", result["job_id"]], env=env, capture_output=True, text=True, timeout=60)
    view = json.loads(status.stdout)
    assert view["kind"] == "sample" and len(view["result"]["samples"]) == len(held_out)
    shown = subprocess.run([*cli, "sample", "ft-ffffffffffff", "hi"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 2 and "no job ft-ffffffffffff" in shown.stderr


# f16 weights against the merged model's fp32: measured |ΔH| ≤ GGUF_ENTROPY_TOLERANCE nats per token on these rows.
GGUF_ENTROPY_TOLERANCE = 0.01


async def test_the_f16_gguf_gives_the_merged_models_greedy_answers(trained: Trained, adapter_samples) -> None:
    async with trained.server.client() as client:
        no_export = await client.call_tool("sample_model", {"job_id": trained.job_id, "weights": "gguf"},
                                           raise_on_error=False)
        exported = (await client.call_tool("export_model", {"job_id": trained.job_id, "quantization": "f16"})
                    ).structured_content
        export_done = await job_ended(client, exported["job_id"])
        assert export_done["state"] == "succeeded", export_done["error"]
        assert Path(export_done["result"]["gguf"]).parent == trained.run_dir / "export"
        wrong_quant = await client.call_tool("sample_model", {"job_id": trained.job_id, "weights": "gguf",
                                                              "quantization": "q4_k_m"}, raise_on_error=False)
        started = (await client.call_tool("sample_model", {
            "job_id": trained.job_id, "weights": ["merged", "gguf"], "quantization": "f16", "compare_with_base": False,
            **TRAIN_ROWS})).structured_content
        done = await job_ended(client, started["job_id"])
        both = (await client.call_tool("get_samples", {"job_id": done["job_id"]})).structured_content
        adapter = (await client.call_tool("get_samples", {"job_id": adapter_samples["job_id"]})).structured_content
        gguf_file = Path(export_done["result"]["gguf"])
        by_path = await job_ended(client, (await client.call_tool("sample_model", {
            "model": str(gguf_file), "prompts": ["hello"], "max_new_tokens": 4})).structured_content["job_id"])

    assert no_export.is_error and f"job {trained.job_id} has no exported GGUF yet; run export_model" in \
        no_export.content[0].text
    assert wrong_quant.is_error and "has no q4_k_m export (it has: f16)" in wrong_quant.content[0].text
    assert started["sampled"][1].startswith(f"gguf: {gguf_file} (GGUF, llama.cpp")
    assert "the GGUF runs on the CPU through llama.cpp" in started["placement_reason"]
    assert done["state"] == "succeeded", done["error"]
    models = {m["label"]: m for m in both["models"]}
    assert models["tuned"]["weights"] == "merged" and models["gguf"]["weights"] == "gguf"
    assert models["gguf"]["backend"] == "llama.cpp" and models["gguf"]["device"] == "cpu"
    assert models["gguf"]["model"] == str(gguf_file) and models["gguf"]["tokens_per_s"] > 0
    assert models["gguf"]["ttft_s"] > 0 and models["gguf"]["warmup_s"] is None
    worst = 0.0
    for row, adapter_row in zip(both["samples"], adapter["samples"], strict=True):
        merged, gguf = row["outputs"]["tuned"], row["outputs"]["gguf"]
        assert [t["text"] for t in gguf["tokens"]] == [t["text"] for t in merged["tokens"]]  # token for token
        assert [t["special"] for t in gguf["tokens"]] == [t["special"] for t in merged["tokens"]]
        assert gguf["text"] == merged["text"] == adapter_row["outputs"]["tuned"]["text"]
        assert gguf["finish_reason"] == merged["finish_reason"]
        assert [a["token"] for a in gguf["tokens"][0]["alternatives"]] == \
            [a["token"] for a in merged["tokens"][0]["alternatives"]]
        worst = max([worst, *(abs(g["entropy"] - m["entropy"]) for g, m in zip(gguf["tokens"], merged["tokens"],
                                                                                  strict=True))])
    assert worst <= GGUF_ENTROPY_TOLERANCE, worst
    print(f"max |ΔH| f16 GGUF vs merged: {worst:.5f} nats")
    assert by_path["state"] == "succeeded", by_path["error"]
    assert [m["label"] for m in by_path["result"]["models"]] == ["model"]  # a GGUF given by path: no base
    assert by_path["result"]["samples"][0]["outputs"]["model"]["answer"] is not None
