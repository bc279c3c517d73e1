"""Checkpoints through the real server over stdio (the offline tiny model trained on the CPU by a real
worker): get_job lists them with their losses; evaluate_model, sample_model and export_model take one by
step; a second job resumes from the first job's checkpoint by id and continues from that step; a step
the job does not keep is refused with the ones it does."""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path

import pytest

from finetune_mcp.testing.local_server import job_ended

pytestmark = pytest.mark.slow

TRAIN = {"target": "local", "config_overrides": {
    "max_examples": 16, "max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
    "validation_split": 0.25, "save_steps": 2, "save_total_limit": 3}}




async def test_checkpoints_are_listed_scored_sampled_exported_and_resumed_by_id(server_home, tiny_model: Path,
                                                                                dataset: Path) -> None:
    server = server_home()
    async with server.client() as client:
        started = await client.call_tool("start_finetune", {"model": str(tiny_model), "dataset": str(dataset),
                                                            "max_steps": 8, **TRAIN})
        first = await job_ended(client, started.structured_content["job_id"], 800)
        assert first["state"] == "succeeded", first["error"]
        listed = (await client.call_tool("list_jobs", {})).structured_content

        async def refused(tool: str, args: dict) -> str:
            result = await client.call_tool(tool, args, raise_on_error=False)
            assert result.is_error, result
            return result.content[0].text

        missing = await refused("evaluate_model", {"job_id": first["job_id"], "checkpoint": 3})
        resume_missing = await refused("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), "max_steps": 8, **TRAIN,
            "config_overrides": {**TRAIN["config_overrides"], "resume_from_checkpoint": f"{first['job_id']}:5"}})

        evaluated = await client.call_tool("evaluate_model", {"job_id": first["job_id"], "checkpoint": 4})
        scored = await job_ended(client, evaluated.structured_content["job_id"], 800)
        sampled = await client.call_tool("sample_model", {"job_id": first["job_id"], "checkpoint": "latest",
                                                          "prompts": ["hello"], "max_new_tokens": 4})
        samples = await job_ended(client, sampled.structured_content["job_id"], 800)

        resumed_start = await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), "max_steps": 8, **TRAIN,
            "config_overrides": {**TRAIN["config_overrides"], "resume_from_checkpoint": f"{first['job_id']}:4"}})
        resumed = await job_ended(client, resumed_start.structured_content["job_id"], 800)

        exported = None
        if find_spec("llama_cpp") is not None and find_spec("conversion") is not None:
            export_start = await client.call_tool("export_model", {"job_id": first["job_id"], "checkpoint": 6,
                                                                   "quantization": "f16"})
            assert export_start.structured_content["file_name"] == f"{tiny_model.name}-step6-f16.gguf"
            exported = await job_ended(client, export_start.structured_content["job_id"], 800)

    steps = [c["step"] for c in first["checkpoints"]]
    assert steps == [4, 6, 8]  # every 2 steps, the last 3 kept (save_total_limit)
    assert all(isinstance(c["train_loss"], float) and c["time"] for c in first["checkpoints"])
    assert all(job.get("checkpoints") is None for job in listed["jobs"])  # list_jobs stays short
    assert f"job {first['job_id']} has no checkpoint at step 3; it keeps steps 4, 6, 8" in missing
    assert "no checkpoint at step 5" in resume_missing

    assert scored["state"] == "succeeded", scored["error"]
    assert evaluated.structured_content["evaluated"].endswith("checkpoint-4")
    assert "eval/loss" in scored["metrics"]
    assert samples["state"] == "succeeded", samples["error"]
    spec = json.loads((Path(samples["run_dir"]) / "spec.json").read_text())
    assert spec["models"][0]["adapter"].endswith("checkpoints/checkpoint-8")

    assert resumed["state"] == "succeeded", resumed["error"]
    events = [json.loads(line) for line in (Path(resumed["run_dir"]) / "events.jsonl").read_text().splitlines()]
    progress = [e["step"] for e in events if e["type"] == "progress"]
    assert progress[0] == 5 and progress[-1] == 8, progress  # it continued from step 4
    resumed_spec = json.loads((Path(resumed["run_dir"]) / "spec.json").read_text())
    assert resumed_spec["resume_from_checkpoint"] == str(Path(first["run_dir"]) / "checkpoints" / "checkpoint-4")

    if exported is not None:
        assert exported["state"] == "succeeded", exported["error"]
        gguf = Path(first["run_dir"]) / "export" / f"{tiny_model.name}-step6-f16.gguf"
        assert gguf.is_file() and (Path(first["run_dir"]) / "merged-step6" / "config.json").is_file()
        record = json.loads((Path(first["run_dir"]) / "export" / "exports.json").read_text())
        assert [e["checkpoint"] for e in record] == [6]
