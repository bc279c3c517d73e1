"""Reranker fine-tuning through the real server over stdio (tiny offline model, CPU): training raises
MRR@10 on held-out queries clearly above the untrained model's; evaluate_model reproduces both numbers
as jobs; the card gets its ranking section; bad ranking data and bad evaluate_model requests are
refused with what to fix, leaving no job behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.testing.local_server import job_ended
from finetune_mcp.testing.rank_datagen import TINY_INSTRUCTION, write_ranking_dataset

pytestmark = pytest.mark.slow

# The same data reading for training and for the evaluations (the held-out split is seeded).
DATA_FIELDS = {"rerank_instruction": TINY_INSTRUCTION, "validation_split": 0.3, "max_seq_length": 256}
# Random order ranks the one relevant document of 8 at MRR@10 = (1 + 1/2 + ... + 1/8) / 8 = 0.34.
RANDOM_MRR = 0.34




async def test_rerank_training_raises_mrr_and_evaluate_model_agrees(server_home, tiny_model: Path,
                                                                    tmp_path: Path) -> None:
    data = write_ranking_dataset(tmp_path / "rank.jsonl", n=100, seed=0)  # 100 queries, 30 held out
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "what color is the sky?"},
                                             {"role": "assistant", "content": "blue"}]}) + "\n")
    server = server_home()
    async with server.client() as client:
        started = (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(data), "task": "rerank", "target": "local", "max_steps": 300,
            "learning_rate": 3e-3, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
            "config_overrides": {**DATA_FIELDS, "rerank_loss": "listwise", "lora_alpha": 16, "logging_steps": 25,
                                 "save_steps": 100_000, "warmup_ratio": 0.05, "lr_scheduler_type": "cosine"},
        })).structured_content
        job_id = started["job_id"]
        done = await job_ended(client, job_id)
        assert done["state"] == "succeeded", done["error"]
        metrics = done["metrics"]

        of_job = (await client.call_tool("evaluate_model", {"job_id": job_id})).structured_content
        of_base = (await client.call_tool("evaluate_model", {
            "model": str(tiny_model), "dataset": str(data), "split": "validation",
            "metrics": ["mrr@10", "ndcg@10", "recall@5", "accuracy"], "config_overrides": DATA_FIELDS,
        })).structured_content
        of_chat = (await client.call_tool("evaluate_model", {
            "model": str(Path(done["run_dir"]) / "adapter"), "dataset": str(chat), "metrics": ["loss", "perplexity"],
        })).structured_content
        evaluated = {name: await job_ended(client, started["job_id"])
                     for name, started in (("job", of_job), ("base", of_base), ("chat", of_chat))}
        card = (await client.call_tool("generate_model_card", {"job_id": job_id})).structured_content["markdown"]

    before, after = metrics["rank/before/mrr@10"], metrics["rank/after/mrr@10"]
    assert after >= before + 0.1 and after > RANDOM_MRR + 0.08, metrics  # clearly above, on unseen queries
    assert metrics["rank/after/ndcg@10"] > metrics["rank/before/ndcg@10"]

    assert of_job["kind"] == "evaluate" and of_job["split"] == "validation" and "+ adapter" in of_job["evaluated"]
    assert of_job["metrics_asked"] == ["mrr@10", "ndcg@10", "recall@5", "accuracy"]
    for job in evaluated.values():
        assert job["state"] == "succeeded" and job["hint"].startswith("done: the results are in `metrics`"), job
    assert evaluated["job"]["metrics"]["rank/eval/mrr@10"] == pytest.approx(after, abs=1e-6)
    assert evaluated["job"]["metrics"]["rank/eval/recall@5"] == pytest.approx(metrics["rank/after/recall@5"])
    assert evaluated["base"]["metrics"]["rank/eval/mrr@10"] == pytest.approx(before, abs=1e-6)  # LoRA starts at 0
    assert evaluated["chat"]["metrics"]["eval/loss"] > 0 and evaluated["chat"]["metrics"]["eval/perplexity"] > 1
    assert "+ adapter" in of_chat["evaluated"]  # an adapter folder loads on the base its config names

    assert "## Ranking evaluation" in card and "pipeline_tag: text-ranking" in card
    assert f"| MRR@10 | {before:.3f} | {after:.3f} |" in card


async def test_bad_ranking_data_and_bad_evaluations_are_refused(server_home, tiny_model: Path, tmp_path: Path) -> None:
    data = write_ranking_dataset(tmp_path / "rank.jsonl", n=10)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"query": "q", "positive": "p", "negatives": ["n"]}) + "\n"
                   + json.dumps({"query": "q2", "positive": "p", "negatives": []}) + "\n")
    chat = tmp_path / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "yo"}]}) + "\n")
    server = server_home()
    async with server.client() as client:
        async def refused(tool: str, arguments: dict) -> str:
            result = await client.call_tool(tool, arguments, raise_on_error=False)
            assert result.is_error, arguments
            return result.content[0].text

        base = {"model": str(tiny_model), "target": "local"}
        message = await refused("start_finetune", {**base, "dataset": str(bad), "task": "rerank"})
        assert f"{bad}, line 2: field 'negatives' is an empty list" in message and message.endswith("fix the row")
        assert "set method='rerank'" in await refused("start_finetune", {**base, "dataset": str(data)})
        assert "exactly one of job_id" in await refused("evaluate_model", {"job_id": "ft-0123456789ab",
                                                                           "model": str(tiny_model)})
        assert "exactly one of job_id" in await refused("evaluate_model", {"dataset": str(data)})
        assert "give the `dataset`" in await refused("evaluate_model", {"model": str(tiny_model)})
        assert "unknown metric 'ndcg'" in await refused("evaluate_model", {
            "model": str(tiny_model), "dataset": str(data), "metrics": ["ndcg"]})
        assert "the data is in messages format, but the training method takes ranking" in await refused(
            "evaluate_model", {"model": str(tiny_model), "dataset": str(chat), "metrics": ["mrr@10"]})
        assert "no job ft-0123456789ab" in await refused("evaluate_model", {"job_id": "ft-0123456789ab"})

        running = (await client.call_tool("start_finetune", {
            **base, "dataset": str(data), "method": "rerank", "max_steps": 100_000,
            "config_overrides": {"rerank_instruction": TINY_INSTRUCTION, "max_seq_length": 256}})).structured_content
        message = await refused("evaluate_model", {"job_id": running["job_id"]})
        assert "needs a succeeded job" in message
        await client.call_tool("cancel_job", {"job_id": running["job_id"]})
        jobs = (await client.call_tool("list_jobs", {})).structured_content
    assert [j["job_id"] for j in jobs["jobs"]] == [running["job_id"]]  # the refused requests left nothing
