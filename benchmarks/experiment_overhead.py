"""An experiment through the real MCP server (stdio), and what each run costs beyond its training steps.

Builds a random-initialised Qwen3 offline (`--preset qwen3-0.6b`: Qwen3-0.6B's shape, vocabulary
151,936; `tiny` for a CPU smoke run), synthetic chat rows with checkable answers and held-out
paraphrases, starts `finetune-mcp serve`, and runs `start_experiment` (2 arms × 2 seeds, short)
until it ends; then `get_experiment` and `tensorboard_screenshot` of all runs. With `--fresh` (the
default) a second experiment with `share_model=false` loads the model for every run, as separate
jobs would, so the saving of loading the base once and re-initialising LoRA per run is measured,
not assumed. Overhead per run = its wall time (data, model load or LoRA reset, trainer set-up,
evaluation, saving, held-out scoring) − the time of its training steps.

    python benchmarks/experiment_overhead.py --preset qwen3-0.6b --out benchmarks/results/experiment_overhead_h200.json
    python benchmarks/experiment_overhead.py --preset tiny --steps 5 --no-fresh      # CPU smoke run

Prints a markdown section for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import anyio
from fastmcp import Client

PRESETS = {
    "tiny": dict(hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, intermediate_size=256, model_vocab_size=None),
    # Qwen3-0.6B's shape: hidden 1024, 28 layers, 16 heads / 8 kv heads, vocab 151,936
    "qwen3-0.6b": dict(hidden_size=1024, num_layers=28, num_heads=16, num_kv_heads=8, intermediate_size=3072,
                       model_vocab_size=151936),
}


async def run_experiment(client: Client, args: argparse.Namespace, model: Path, data: Path, heldout: Path,
                         share: bool, deadline_s: float) -> dict:
    started = time.perf_counter()
    job = (await client.call_tool("start_experiment", {
        "model": str(model), "dataset": str(data), "arms": ["standard", "entropy"], "seeds": 2,
        "max_steps": args.steps, "eval_dataset": str(heldout), "generation_examples": args.generate,
        "target": "local", "config_overrides": {
            "max_seq_length": args.seq, "per_device_train_batch_size": args.batch, "gradient_accumulation_steps": 1,
            "learning_rate": 2e-4, "logging_steps": 5, "save_steps": 100_000, "max_new_tokens": 8,
            "share_model": share,
        },
    })).structured_content
    job_id = job["job_id"]
    with anyio.fail_after(deadline_s):
        while job["state"] not in ("succeeded", "failed", "cancelled"):
            job = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 300})).structured_content
    if job["state"] != "succeeded":
        raise SystemExit(f"experiment {job_id} {job['state']}: {job['error']}")
    result = (await client.call_tool("get_experiment", {"job_id": job_id})).structured_content
    shot = await client.call_tool("tensorboard_screenshot", {"job_id": job_id, "allow_matplotlib": True},
                                  raise_on_error=False)
    return {"job_id": job_id, "share_model": share, "wall_s": round(time.perf_counter() - started, 2),
            "device": job["device"], "placement": job["placement_reason"], "table": result,
            "screenshot": None if shot.is_error else shot.structured_content}


async def main(args: argparse.Namespace) -> dict:
    from finetune_mcp.demo import write_heldout
    from finetune_mcp.testing.datagen import write_dataset
    from finetune_mcp.testing.local_server import stdio_server
    from finetune_mcp.testing.tiny_model import build_tiny_model

    work = args.workdir or Path(tempfile.mkdtemp(prefix="experiment-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    model = build_tiny_model(work / f"model-{args.preset}", **PRESETS[args.preset])
    data = write_dataset(work / "train.jsonl", "messages", n=args.rows, seed=0)
    heldout = write_heldout(work / "heldout.jsonl", n=60)
    transport = stdio_server(work / "home", work, log_file=work / "server.log")
    experiments = []
    async with Client(transport, timeout=600) as client:
        experiments.append(await run_experiment(client, args, model, data, heldout, True, args.deadline))
        if args.fresh:
            experiments.append(await run_experiment(client, args, model, data, heldout, False, args.deadline))
    import torch

    return {
        "preset": args.preset, "steps": args.steps, "batch": args.batch, "seq": args.seq, "rows": args.rows,
        "machine": (torch.cuda.get_device_name(0) if torch.cuda.is_available() else
                    f"{platform.machine()}, {os.cpu_count()} CPUs (no GPU)"),
        "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
        "experiments": experiments,
    }


def markdown(r: dict) -> str:
    lines = [
        f"`benchmarks/experiment_overhead.py --preset {r['preset']} --steps {r['steps']}` on {r['machine']}, "
        f"{r['date']}: a random Qwen3 of the `{r['preset']}` shape, {r['rows']} synthetic chat rows (batch "
        f"{r['batch']}, ≤ {r['seq']} tokens), 2 arms (standard, entropy) × 2 seeds, {r['steps']} steps per run, every "
        "run scored on 60 held-out paraphrases, all through `finetune-mcp serve` over stdio (start_experiment → "
        "wait_for_job → get_experiment → tensorboard_screenshot).",
        "",
        "| experiment | run | wall (s) | training steps (s) | overhead (s) | model (s) | held-out scoring (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in r["experiments"]:
        mode = "base loaded once" if e["share_model"] else "base loaded per run"
        for name, t in e["table"]["overhead"]["per_run"].items():
            model = f"{t.get('model_s', 0):.2f} ({'LoRA reset' if t.get('model_reused') else 'load'})"
            lines.append(f"| {mode} | {name} | {t['wall_s']:.1f} | {t['train_steps_s']:.1f} | {t['overhead_s']:.1f} | "
                         f"{model} | {t.get('scoring_s') or 0:.1f} |")
    lines.append("")
    for e in r["experiments"]:
        o = e["table"]["overhead"]
        mode = "loaded once" if e["share_model"] else "loaded per run"
        lines.append(f"- base {mode} (job `{e['job_id']}`, {e['device']}): overhead of the first run "
                     f"{o['first_run_s']:.1f} s (model load {o['model_load_s']:.1f} s), of later runs "
                     f"{o['later_runs_mean_s']:.1f} s on average; whole experiment {e['wall_s']:.0f} s. Verdict: "
                     f"{e['table']['verdict']}")
    if len(r["experiments"]) == 2:
        shared, fresh = (e["table"]["overhead"]["later_runs_mean_s"] for e in r["experiments"])
        lines.append(f"- sharing the base saves {fresh - shared:.1f} s per run after the first "
                     f"({fresh:.1f} → {shared:.1f} s).")
    shot = r["experiments"][0]["screenshot"]
    if shot:
        lines.append(f"- screenshot of all 4 runs ({shot['renderer']}): `{shot['path']}`")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen3-0.6b")
    parser.add_argument("--steps", type=int, default=40, help="optimiser steps per run")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=256, help="max_seq_length")
    parser.add_argument("--rows", type=int, default=800, help="training rows")
    parser.add_argument("--generate", type=int, default=60, help="held-out rows answered by greedy generation")
    parser.add_argument("--fresh", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the experiment with share_model=false (the model loaded per run)")
    parser.add_argument("--deadline", type=float, default=1800, help="seconds per experiment before giving up")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()
    results = anyio.run(main, args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(markdown(results))
