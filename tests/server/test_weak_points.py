"""Issue 26's weak points that are fixed in code, through the real server over stdio: experiment seeds
outside 0…2**32−1 are refused at start (they failed in the worker), and a model card cannot compare a
job with itself."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from server.conftest import ServerHome


async def test_seeds_out_of_range_and_compare_with_itself_are_refused(server_home: Callable[..., ServerHome],
                                                                      tiny_model: Path, dataset: Path) -> None:
    server = server_home()
    async with server.client() as client:
        seeds = await client.call_tool("start_experiment", {
            "model": str(tiny_model), "dataset": str(dataset), "arms": ["standard", "entropy"],
            "seeds": [1, 2**32], "target": "local"}, raise_on_error=False)
        itself = await client.call_tool("generate_model_card", {"job_id": "ft-0123456789ab",
                                                                "compare_with": "ft-0123456789ab"},
                                        raise_on_error=False)
        jobs = (await client.call_tool("list_jobs", {})).structured_content
    assert seeds.is_error and "seeds must lie in 0…4294967295" in seeds.content[0].text, seeds.content[0].text
    assert itself.is_error and "names ft-0123456789ab itself" in itself.content[0].text, itself.content[0].text
    assert jobs["count"] == 0


async def test_get_experiment_after_its_worker_was_killed_says_failed(server_home: Callable[..., ServerHome],
                                                                      tiny_model: Path, dataset: Path) -> None:
    """Issue 26 weak point: the table said "running" forever once the worker was killed mid-experiment."""
    import os
    import signal

    import anyio

    server = server_home()
    overrides = {"max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                 "max_examples": 16, "validation_split": 0.25, "max_new_tokens": 4, "save_steps": 100_000}
    async with server.client() as client:
        job_id = (await client.call_tool("start_experiment", {
            "model": str(tiny_model), "dataset": str(dataset), "arms": ["standard", "entropy"], "seeds": 3,
            "target": "local", "max_steps": 4, "config_overrides": overrides})).structured_content["job_id"]
        with anyio.fail_after(240):
            while (await client.call_tool("get_experiment", {"job_id": job_id})).structured_content[
                    "status"] != "running":
                await anyio.sleep(0.5)
        store = server.store()
        os.killpg(store.get(job_id).pgid, signal.SIGKILL)
        store.close()
        with anyio.fail_after(120):
            while (await client.call_tool("get_job", {"job_id": job_id})).structured_content["state"] == "running":
                await anyio.sleep(0.5)
        result = (await client.call_tool("get_experiment", {"job_id": job_id})).structured_content
    assert result["state"] == "failed" and result["status"] == "failed", result


async def test_brackets_in_the_data_are_told_apart_from_the_trained_markers(server_home: Callable[..., ServerHome],
                                                                            tiny_model: Path, tmp_path: Path) -> None:
    """Issue 26 weak point: `[[…]]` in a user turn looked exactly like the trained-token markers."""
    import json

    rows = [{"messages": [{"role": "user", "content": f"Is [[this]] trained? {i}"},
                          {"role": "assistant", "content": f"No, answer {i}."}]} for i in range(8)]
    data = tmp_path / "brackets.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    server = server_home()
    async with server.client() as client:
        report = (await client.call_tool("preview_training", {"model": str(tiny_model), "dataset": str(data),
                                                              "examples": 1})).structured_content
    [example] = report["examples"]
    assert example["markers_in_data"] is True and "[[this]]" in example["text"]
    pieces = [example["text"][a:b] for a, b in example["trained_spans"]]
    assert pieces and all("this" not in p for p in pieces) and any("No, answer" in p for p in pieces), pieces
