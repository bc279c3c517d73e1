"""evaluate_model(suite=...) through the real server over stdio: a tiny job trained by a real worker, then
base vs tuned on its held-out rows and on the shipped general set (the forgetting check), each metric with
its interval; get_job shows the figures, the job's model card the table; a reranker or a bare model is
refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.testing.local_server import job_ended

pytestmark = pytest.mark.slow

TRAIN = {"target": "local", "max_steps": 6, "learning_rate": 5e-3, "config_overrides": {
    "max_examples": 24, "max_seq_length": 64, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "validation_split": 0.25, "save_steps": 1000}}




async def test_base_vs_tuned_on_heldout_and_forgetting_suites(server_home, tiny_model: Path, dataset: Path) -> None:
    server = server_home()
    async with server.client() as client:
        trained = await job_ended(client, (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(dataset), **TRAIN})).structured_content["job_id"])
        assert trained["state"] == "succeeded", trained["error"]
        bare = await client.call_tool("evaluate_model", {"model": str(tiny_model), "dataset": str(dataset),
                                                         "suite": "heldout", "metrics": ["loss"]},
                                      raise_on_error=False)
        started = await client.call_tool("evaluate_model", {  # 8 answers of 8 tokens: seconds on a shared CPU
            "job_id": trained["job_id"], "suite": "all", "batch_size": 8,
            "config_overrides": {"generation_examples": 8, "max_new_tokens": 8}})
        done = await job_ended(client, started.structured_content["job_id"], 800)
        card = (await client.call_tool("generate_model_card", {"job_id": trained["job_id"]})).structured_content

    assert bare.is_error and "a suite compares a fine-tune with its base" in bare.content[0].text
    assert started.structured_content["suite"] == "all"
    assert done["state"] == "succeeded", done["error"]
    for suite in ("heldout", "forgetting"):
        for name in ("loss", "token_accuracy", "exact_match", "normalized_match"):
            assert {f"eval/{suite}/{name}/{p}" for p in ("base", "tuned", "delta")} <= set(done["metrics"]), name
    result = json.loads((Path(done["run_dir"]) / "result.json").read_text())
    forgetting = result["suites"]["forgetting"]
    assert forgetting["rows"] == 64 and forgetting["answered"] == 8
    loss = forgetting["metrics"]["loss"]
    assert loss["interval"][0] <= loss["delta"] <= loss["interval"][1] and loss["verdict"] in (
        "better", "worse", "no clear difference")
    heldout = result["suites"]["heldout"]
    assert heldout["rows"] == 6 and "validation rows" in heldout["source"]
    match = heldout["metrics"]["normalized_match"]
    assert 0 <= match["base_interval"][0] <= match["base"] <= match["base_interval"][1] <= 1
    # training moved the tuned model away from the base: the two are scored differently
    assert heldout["metrics"]["loss"]["tuned"] != heldout["metrics"]["loss"]["base"]
    saved = json.loads((Path(trained["run_dir"]) / "evaluation" / "forgetting.json").read_text())
    assert saved["job_id"] == done["job_id"] and saved["metrics"] == forgetting["metrics"]
    assert "## Base model vs fine-tune" in card["markdown"] and "General set (did it forget?)" in card["markdown"]
