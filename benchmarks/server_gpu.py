"""The product on a GPU, as a user drives it: `finetune-mcp serve` over stdio and a real MCP client.

Builds a Qwen3-shaped random model offline (`--preset qwen3-0.6b`: hidden 1024, 28 layers, vocab
151,936; `tiny` for a smoke run), writes synthetic chat data with checkable answers, then calls the
tools in order and times each: detect_gpus, start_finetune (Unsloth on the local GPU), wait_for_job,
get_entropy_metrics, generate_model_card, plus every later tool named in `--tools` that the server
serves (sample_model, start_experiment, export_model: each is skipped with a note when the server
does not list it). Prints one JSON document and writes it to `--out`.

    python benchmarks/server_gpu.py --preset qwen3-0.6b --steps 40 --out $OUT/server_gpu.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from fastmcp import Client

from finetune_mcp.testing import build_tiny_model, write_dataset
from finetune_mcp.testing.local_server import stdio_server

PRESETS = {
    "tiny": {},
    "qwen3-0.6b": dict(hidden_size=1024, num_layers=28, num_heads=16, num_kv_heads=8, intermediate_size=3072,
                       model_vocab_size=151_936),
}


async def call(client: Client, timings: dict[str, float], name: str, args: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    result = await client.call_tool(name, args, raise_on_error=False)
    timings[name] = round(time.perf_counter() - started, 3)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"{name} failed: {text}")
    return result.structured_content or {}


async def until_done(client: Client, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 60})).structured_content
        if job["state"] not in ("queued", "provisioning", "running") or time.monotonic() > deadline:
            return job


async def drive(args: argparse.Namespace, model: Path, dataset: Path, home: Path) -> dict[str, Any]:
    transport = stdio_server(home, home.parent, log_file=home.parent / "server-stderr.log", TRANSFORMERS_OFFLINE="1")
    timings: dict[str, float] = {}
    report: dict[str, Any] = {"preset": args.preset, "steps": args.steps, "timings_s": timings}
    async with Client(transport, timeout=600) as client:
        served = {tool.name for tool in await client.list_tools()}
        report["tools_served"] = sorted(served)
        report["detect_gpus"] = await call(client, timings, "detect_gpus", {"model": str(model)})
        train = {"model": str(model), "dataset": str(dataset), "target": "local", "max_steps": args.steps,
                 "entropy_weighting": True, "per_device_train_batch_size": args.batch,
                 "config_overrides": {"gradient_accumulation_steps": 1, "max_seq_length": 256, "logging_steps": 5,
                                      "learning_rate": 1e-3, "validation_split": 0.1}}
        started = await call(client, timings, "start_finetune", train)
        job = await until_done(client, started["job_id"], args.timeout)
        report["train"] = {k: job.get(k) for k in ("state", "backend", "device", "placement_reason", "step",
                                                    "total_steps", "elapsed_s", "error", "metrics")}
        if job["state"] != "succeeded":
            return report
        job_id = job["job_id"]
        result = json.loads((Path(job["run_dir"]) / "result.json").read_text())
        report["train"]["result"] = {k: result.get(k) for k in ("backend", "device", "train_runtime_s", "perf",
                                                                 "global_step", "versions")}
        metrics = await call(client, timings, "get_entropy_metrics", {"job_id": job_id})
        report["entropy"] = {k: metrics.get(k) for k in ("mean_entropy", "high_entropy_share")}
        card = await call(client, timings, "generate_model_card", {"job_id": job_id})
        report["card_bytes"] = card.get("size_bytes")
        for tool, tool_args in later_tools(args, model, dataset, job_id):
            if tool not in args.tools.split(","):
                continue
            if tool not in served:
                report[tool] = "not served by this server"
                continue
            try:
                report[tool] = await run_later_tool(client, timings, tool, tool_args, args.timeout)
            except Exception as exc:  # one tool failing must not hide the others' figures
                report[tool] = {"error": str(exc)}
    return report


def later_tools(args: argparse.Namespace, model: Path, dataset: Path, job_id: str) -> list[tuple[str, dict]]:
    return [
        ("sample_model", {"job_id": job_id, "max_new_tokens": 64}),
        ("start_experiment", {"model": str(model), "dataset": str(dataset), "seeds": 2, "max_steps": args.steps // 2,
                              "config_overrides": {"per_device_train_batch_size": args.batch,
                                                   "gradient_accumulation_steps": 1, "max_seq_length": 256}}),
        ("export_model", {"job_id": job_id, "quantization": "q8_0"}),
    ]


async def run_later_tool(client: Client, timings: dict[str, float], tool: str, tool_args: dict, timeout: float) -> dict:
    started = await call(client, timings, tool, tool_args)
    if "job_id" not in started or started.get("state") in ("succeeded", "failed"):
        return started
    t0 = time.perf_counter()
    job = await until_done(client, started["job_id"], timeout)
    timings[f"{tool}_job"] = round(time.perf_counter() - t0, 3)
    out = {k: job.get(k) for k in ("state", "elapsed_s", "error", "metrics")}
    result_path = Path(job["run_dir"]) / "result.json"
    if result_path.is_file():
        out["result"] = json.loads(result_path.read_text())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tools", default="sample_model,start_experiment,export_model",
                        help="later tools to call after training, comma-separated")
    parser.add_argument("--timeout", type=float, default=480.0, help="seconds to wait for each job")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ftmcp-server-gpu"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(args.workdir / f"model-{args.preset}", **PRESETS[args.preset])
    dataset = write_dataset(args.workdir / "train.jsonl", "messages", n=400)
    report = asyncio.run(drive(args, model, dataset, args.workdir / "home"))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
