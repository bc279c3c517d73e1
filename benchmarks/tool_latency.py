"""MCP tool latency and server start-up, measured through a real client over stdio.

1. Ready time: spawn the server and time until `list_tools` answers (process start, imports,
   lifespan, initialize), for `finetune-mcp serve` and for a bare FastMCP server with one tool,
   alternating, `--starts` times each; median and min.
2. Latency while a job trains: start a long job on the offline tiny model (CPU), wait until it
   logs steps, then call `get_job` and `list_jobs` `--calls` times each, one after another; p50 /
   p99 / max in milliseconds (client-side round trip, JSON-RPC over pipes included). The job is
   cancelled at the end.

Usage: .venv/bin/python benchmarks/tool_latency.py [--calls 1000] [--starts 10] [--json out.json]
Prints a markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import anyio
from fastmcp import Client
from fastmcp.client.transports import StdioTransport

BARE_SERVER = '''
from fastmcp import FastMCP
mcp = FastMCP("bare")

@mcp.tool
def ping(x: int) -> int:
    return x

mcp.run(show_banner=False)
'''


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def ready_time(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    transport = StdioTransport(command[0], command[1:], env=env, keep_alive=False, log_file=Path(os.devnull))
    async with Client(transport) as client:
        await client.list_tools()
        return time.perf_counter() - started


async def timed_calls(client: Client, tool: str, args: dict, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await client.call_tool(tool, args)
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def main(args: argparse.Namespace) -> dict:
    from finetune_mcp.testing.datagen import write_dataset
    from finetune_mcp.testing.local_server import SERVE_COMMAND, server_env, stdio_server
    from finetune_mcp.testing.tiny_model import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="tool-latency-"))
    env = server_env(work / "home", work)
    bare = work / "bare_server.py"
    bare.write_text(BARE_SERVER)
    ours_cmd = list(SERVE_COMMAND)
    bare_cmd = [sys.executable, str(bare)]

    await ready_time(ours_cmd, env)  # warm the page cache for both before measuring
    await ready_time(bare_cmd, env)
    ours, base = [], []
    for _ in range(args.starts):
        ours.append(await ready_time(ours_cmd, env))
        base.append(await ready_time(bare_cmd, env))

    model = build_tiny_model(work / "tiny")
    dataset = write_dataset(work / "train.jsonl", "messages", n=64)
    async with Client(stdio_server(work / "home", work, log_file=work / "server.log"), timeout=120) as client:
        started = await client.call_tool("start_finetune", {
            "model": str(model), "dataset": str(dataset), "entropy_weighting": True, "target": "local",
            "max_steps": 1_000_000, "max_seq_length": 64, "config_overrides": {"gradient_accumulation_steps": 1},
        })
        job_id = started.structured_content["job_id"]
        with anyio.fail_after(120):
            while (job := (await client.call_tool("get_job", {"job_id": job_id})).structured_content)["step"] < 2:
                await anyio.sleep(0.2)
        step_before = job["step"]
        get_job = await timed_calls(client, "get_job", {"job_id": job_id}, args.calls)
        list_jobs = await timed_calls(client, "list_jobs", {}, args.calls)
        job = (await client.call_tool("get_job", {"job_id": job_id})).structured_content
        await client.call_tool("cancel_job", {"job_id": job_id})

    def summary(values: list[float]) -> dict[str, float]:
        return {"p50_ms": round(percentile(values, 50), 2), "p99_ms": round(percentile(values, 99), 2),
                "max_ms": round(max(values), 2), "mean_ms": round(statistics.fmean(values), 2)}

    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "calls": args.calls,
        "steps_trained_during_measurement": job["step"] - step_before,
        "get_job": summary(get_job),
        "list_jobs": summary(list_jobs),
        "ready_s": {
            "finetune_mcp": {"median": round(statistics.median(ours), 3), "min": round(min(ours), 3)},
            "bare_fastmcp": {"median": round(statistics.median(base), 3), "min": round(min(base), 3)},
            "ratio_median": round(statistics.median(ours) / statistics.median(base), 2),
            "starts": args.starts,
        },
    }


def markdown(r: dict) -> str:
    g, lj, ready = r["get_job"], r["list_jobs"], r["ready_s"]
    return "\n".join([
        f"Machine: {r['machine']}. {r['calls']} sequential calls per tool over stdio while a CPU job trained "
        f"({r['steps_trained_during_measurement']} optimiser steps during the measurement).",
        "",
        "| tool | p50 (ms) | p99 (ms) | max (ms) |",
        "|---|---|---|---|",
        f"| get_job | {g['p50_ms']} | {g['p99_ms']} | {g['max_ms']} |",
        f"| list_jobs | {lj['p50_ms']} | {lj['p99_ms']} | {lj['max_ms']} |",
        "",
        f"Ready time (spawn → `list_tools` answered), median of {ready['starts']} starts: finetune-mcp "
        f"{ready['finetune_mcp']['median']} s, bare FastMCP server {ready['bare_fastmcp']['median']} s "
        f"(ratio {ready['ratio_median']}).",
    ])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--json", type=Path, help="Also write the raw numbers here.")
    options = parser.parse_args()
    result = anyio.run(main, options)
    if options.json:
        options.json.write_text(json.dumps(result, indent=2))
    print(markdown(result))
