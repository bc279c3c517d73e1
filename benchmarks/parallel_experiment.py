"""Wall time of one experiment run serially and with `parallel=2`, through the real MCP server (stdio).

The same experiment (2 arms × 2 seeds of the offline tiny model, a few steps a run) goes through
`start_experiment` → `wait_for_job` → `get_experiment` twice per round on each place asked for:

- `cpu`: workers on this machine's CPU slots (FINETUNE_MCP_MAX_CPU_JOBS=2);
- `runpod`: the RunPod stand-in (`tests/standins/runpod_api.py`), whose "pods" are local processes
  running the real pod worker, so a pod's start here costs a process start, an install check and the
  worker's imports, not an image pull — and both pods share this machine's cores. Real pods are
  machines of their own; here each pod gets `--pod-threads` OpenMP threads (default: half the cores,
  as each CPU slot gets), else two pods' torch would each spin a thread per core on the same cores.

Rounds alternate the order (serial first, then parallel first, ...) so a load that drifts on a shared
machine does not favour one; every parallel table is checked against the serial one (the same
per-run metrics), so the speed is not bought with a different result. Wall = start_experiment sent →
wait_for_job answered succeeded.

    python benchmarks/parallel_experiment.py --where cpu runpod --steps 3 20 --rounds 2 \\
        --out benchmarks/results/parallel_experiment_cpu.json

Prints a markdown section for benchmarks/RESULTS.md.
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

from finetune_mcp.jobs.manager import cpu_threads_per_slot

TESTS = Path(__file__).resolve().parent.parent / "tests"
SMALL = {"max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "max_examples": 16,
         "validation_split": 0.25, "max_new_tokens": 4, "save_steps": 100_000}


async def agree(message, response_type, params, context):  # the user accepts the pods' price, with a cap of $5
    return response_type(start=True, max_cost_usd=5.0)


async def run_once(client: Client, model: Path, data: Path, where: str, steps: int, parallel: int) -> dict:
    began = time.perf_counter()
    started = (await client.call_tool("start_experiment", {
        "model": str(model), "dataset": str(data), "seeds": 2, "max_steps": steps, "parallel": parallel,
        "target": "local" if where == "cpu" else "runpod", "config_overrides": SMALL,
    })).structured_content
    job = {"state": "queued"}
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        job = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 300})
               ).structured_content
    wall = time.perf_counter() - began
    if job["state"] != "succeeded":
        raise SystemExit(f"{where} parallel={parallel}: {started['job_id']} {job['state']}: {job['error']}")
    table = (await client.call_tool("get_experiment", {"job_id": started["job_id"]})).structured_content
    return {"where": where, "steps": steps, "parallel": parallel, "job_id": started["job_id"],
            "workers": started.get("workers") or [], "wall_s": round(wall, 2), "cost_usd": job.get("cost_usd"),
            "metrics": {r["name"]: r["metrics"] for r in table["runs"]}}


def same_metrics(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        abs(a[run][m] - b[run][m]) <= 1e-6 + 1e-4 * abs(b[run][m]) for run in a for m in a[run])


async def main(args: argparse.Namespace) -> dict:
    from finetune_mcp.testing.datagen import write_dataset
    from finetune_mcp.testing.local_server import stdio_server
    from finetune_mcp.testing.tiny_model import build_tiny_model

    work = args.workdir or Path(tempfile.mkdtemp(prefix="parallel-experiment-"))
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(work / "model")
    data = write_dataset(work / "train.jsonl", "messages", n=32)
    runs: list[dict] = []
    for where in args.where:
        extra = {"FINETUNE_MCP_MAX_CPU_JOBS": "2"}
        standin = None
        if where == "runpod":
            sys.path.insert(0, str(TESTS))
            from jobs.runpod_support import runpod_env
            from standins.runpod_api import RunPodStandIn

            if args.pod_threads:  # the stand-in's pods inherit this process's environment
                os.environ["OMP_NUM_THREADS"] = str(args.pod_threads)
            standin = RunPodStandIn(work / "runpod").__enter__()
            extra |= {"RUNPOD_API_KEY": standin.api_key, **runpod_env(standin)}
        try:
            transport = stdio_server(work / f"home-{where}", work, log_file=work / f"server-{where}.log", **extra)
            async with Client(transport, timeout=600, elicitation_handler=agree) as client:
                for steps in args.steps:
                    for r in range(args.rounds):
                        for parallel in ((1, 2) if r % 2 == 0 else (2, 1)):
                            runs.append(await run_once(client, model, data, where, steps, parallel))
                            print(f"{where} steps={steps} parallel={parallel}: {runs[-1]['wall_s']:.1f} s",
                                  file=sys.stderr)
        finally:
            if standin is not None:
                standin.__exit__(None, None, None)
    for run in runs:
        serial = next(s for s in runs if (s["where"], s["steps"], s["parallel"]) == (run["where"], run["steps"], 1))
        run["same_metrics_as_serial"] = same_metrics(run["metrics"], serial["metrics"])
    load = os.getloadavg()
    return {"steps": args.steps, "rounds": args.rounds, "pod_threads": args.pod_threads, "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (no GPU), shared with other work",
            "load_average_after": [round(x, 2) for x in load], "python": platform.python_version(), "runs": runs}


def markdown(r: dict) -> str:
    lines = [
        f"`benchmarks/parallel_experiment.py --steps {' '.join(map(str, r['steps']))} --rounds {r['rounds']}` on "
        f"{r['machine']}, {r['date']}: 2 arms × 2 seeds of the offline tiny model (batch 2, ≤ 64 tokens, 16 "
        "examples), through `finetune-mcp serve` over stdio; rounds alternate the order; OpenMP threads a stand-in "
        f"pod: {r['pod_threads'] or 'torch default'}. Load average after: {', '.join(map(str, r['load_average_after']))}.",
        "",
        "| where | steps a run | serial wall (s) | parallel=2 wall (s) | parallel / serial | same metrics |",
        "|---|---|---|---|---|---|",
    ]
    for where in dict.fromkeys(run["where"] for run in r["runs"]):
        for steps in r["steps"]:
            mine = [x for x in r["runs"] if (x["where"], x["steps"]) == (where, steps)]
            if not mine:
                continue
            walls = {p: [x["wall_s"] for x in mine if x["parallel"] == p] for p in (1, 2)}
            med = {p: statistics.median(w) for p, w in walls.items()}
            label = "CPU slots" if where == "cpu" else "RunPod stand-in pods (local processes)"
            lines.append(f"| {label} | {steps} | {med[1]:.1f} ({', '.join(map(str, walls[1]))}) | {med[2]:.1f} "
                         f"({', '.join(map(str, walls[2]))}) | {med[2] / med[1]:.2f} | "
                         f"{'yes' if all(x['same_metrics_as_serial'] for x in mine) else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--where", nargs="+", choices=["cpu", "runpod"], default=["cpu", "runpod"])
    parser.add_argument("--steps", nargs="+", type=int, default=[3, 20], help="optimiser steps per run")
    parser.add_argument("--rounds", type=int, default=2, help="serial + parallel pairs per setting")
    parser.add_argument("--pod-threads", type=int, default=cpu_threads_per_slot(2),
                        help="OMP_NUM_THREADS of each stand-in pod (0: torch's default, a thread per core)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = anyio.run(main, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
