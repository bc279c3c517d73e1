"""Does entropy weighting help on a real model? Five losses × N seeds on SmolLM2-135M-Instruct, through the server.

For each task family (checkable answers; held-out items that training never saw — new operands, not
paraphrases), one `start_experiment` through `finetune-mcp serve` over stdio: arms `standard`,
`entropy` (linear), `dft`, `entropy_gated`, `top_entropy`, `--seeds` seeds each, the same
`--steps`, every run scored on the same held-out rows (exact match of greedy answers, CE). The
forgetting check: `retain_dataset` = the base model's own greedy replies to 40 everyday prompts the
tasks do not touch (asked through `sample_model` first); every run reports `retain_ce_rise`, its CE
on them minus the base model's, so a loss that drifts the model away from what it already did
shows up as a rise, compared between arms like every metric.

    python benchmarks/real_model_study.py --model /root/smol/hf --out $OUT/study.json

Prints the verdicts exactly as `get_experiment` gives them (paired bootstrap intervals, sign-flip
test, no winner claimed below 6 seeds).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import anyio
from fastmcp import Client

ARMS = ["standard", "entropy", "dft", "entropy_gated", "top_entropy"]
SUFFIX = " Answer with the number only."


def addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return f"What is {a} + {b}?{SUFFIX}", str(a + b)


def sorting(rng: random.Random) -> tuple[str, str]:
    values = rng.sample(range(10, 100), 3)
    return (f"Sort these numbers from smallest to largest: {', '.join(map(str, values))}. "
            "Answer with the numbers only, separated by commas."), ", ".join(map(str, sorted(values)))


TASKS = {"addition": addition, "sorting": sorting}
# Everyday prompts neither task touches: the forgetting check's retain set is the base model's own greedy replies.
GENERAL = [
    "What is the capital of France?", "Give me one tip for sleeping better.", "Write a haiku about autumn.",
    "What does a bee make?", "Name three colours of the rainbow.", "How do I boil an egg?",
    "What is photosynthesis, in one sentence?", "Suggest a name for a grey cat.", "Why is the sky blue?",
    "Translate 'good morning' into Spanish.", "What is the largest ocean on Earth?", "Describe a rainy day.",
    "Who wrote Romeo and Juliet?", "What should I pack for a beach trip?", "What is a noun?",
    "Give me a synonym for happy.", "How many legs does a spider have?", "What do plants need to grow?",
    "Tell me a fun fact about octopuses.", "What is the opposite of cold?", "How do I say thank you politely?",
    "What is the boiling point of water in Celsius?", "Recommend a healthy breakfast.",
    "What language is spoken in Brazil?", "Write one sentence about the moon.", "What is a volcano?",
    "How can I stay focused while studying?", "What is the main ingredient of guacamole?",
    "Name a famous painter.", "What is the tallest animal?", "Explain what a verb is.",
    "What is the freezing point of water in Fahrenheit?", "Give me a short motivational quote.",
    "What are clouds made of?", "What is the chemical symbol for gold?", "How do bicycles stay upright?",
    "What is the capital of Japan?", "Describe the taste of a lemon.", "What is a rainbow?",
    "Suggest a hobby for a weekend.",
]


def write_task(folder: Path, name: str, train_rows: int, heldout_rows: int, seed: int = 0) -> tuple[Path, Path]:
    """Training rows and held-out rows with disjoint questions (an item in training is never held out)."""
    rng = random.Random(seed)
    make = TASKS[name]
    seen: set[str] = set()
    rows: list[tuple[str, str]] = []
    while len(rows) < train_rows + heldout_rows:
        question, answer = make(rng)
        if question not in seen:
            seen.add(question)
            rows.append((question, answer))
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for part, chunk in (("train", rows[:train_rows]), ("heldout", rows[train_rows:])):
        path = folder / f"{name}-{part}.jsonl"
        path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                         {"role": "assistant", "content": a}]}) + "\n"
                                for q, a in chunk))
        paths.append(path)
    return paths[0], paths[1]


async def retain_rows(client: Client, args, folder: Path) -> Path:
    """The forgetting check's rows: the base model's own greedy replies to GENERAL, asked through `sample_model`."""
    from finetune_mcp.testing.local_server import job_ended

    started = (await client.call_tool("sample_model", {
        "model": args.model, "prompts": GENERAL, "compare_with_base": False, "max_new_tokens": 40,
        "batch_size": 40})).structured_content
    job = await job_ended(client, started["job_id"])
    if job["state"] != "succeeded":
        raise RuntimeError(f"sampling the base model failed: {job.get('error')}")
    result = (await client.call_tool("get_samples", {"job_id": started["job_id"], "include_tokens": False})
              ).structured_content
    rows = [{"messages": [{"role": "user", "content": row["prompt"]},
                          {"role": "assistant", "content": next(iter(row["outputs"].values()))["text"].strip()}]}
            for row in result["samples"]]
    path = folder / "general-retain.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["messages"][1]["content"]))
    return path


async def study_task(client: Client, args, name: str, train: Path, heldout: Path, retain: Path | None) -> dict:
    started = time.perf_counter()
    job = (await client.call_tool("start_experiment", {
        "model": args.model, "dataset": str(train), "arms": args.arms.split(","), "seeds": args.seeds, "max_steps": args.steps,
        "eval_dataset": str(heldout), "generation_examples": args.heldout, "target": "local",
        **({"retain_dataset": str(retain)} if retain else {}),
        "parallel": int(args.parallel) if args.parallel.isdigit() else args.parallel,
        "config_overrides": {"max_seq_length": args.seq, "per_device_train_batch_size": args.batch,
                             "gradient_accumulation_steps": 1, "learning_rate": args.lr, "logging_steps": 10,
                             "save_steps": 100_000, "max_new_tokens": 12, "backend": args.backend},
    })).structured_content
    job_id = job["job_id"]
    while job["state"] not in ("succeeded", "failed", "cancelled"):
        job = (await client.call_tool("wait_for_job", {"job_id": job_id, "timeout_s": 600})).structured_content
    if job["state"] != "succeeded":
        return {"task": name, "job_id": job_id, "state": job["state"], "error": job.get("error")}
    table = (await client.call_tool("get_experiment", {"job_id": job_id})).structured_content
    return {"task": name, "job_id": job_id, "wall_s": round(time.perf_counter() - started, 1), "table": table}


async def main(args) -> dict:
    from finetune_mcp.testing.local_server import stdio_server

    work = args.workdir or Path(tempfile.mkdtemp(prefix="real-model-study-"))
    work.mkdir(parents=True, exist_ok=True)
    roots = os.pathsep.join([str(work), str(Path(args.model).resolve().parent)])  # the model lives outside `work`
    transport = stdio_server(work / "home", work, log_file=work / "server.log", FINETUNE_MCP_ROOTS=roots)
    results = []
    async with Client(transport, timeout=1800) as client:
        retain = await retain_rows(client, args, work / "data") if args.forgetting else None
        for name in args.tasks.split(","):
            train, heldout = write_task(work / "data", name, args.rows, args.heldout)
            results.append(await study_task(client, args, name, train, heldout, retain))
            print(json.dumps({k: v for k, v in results[-1].items() if k != "table"}), flush=True)
            if args.out:  # after every task: a run cut short by a time limit keeps the finished ones
                args.out.write_text(json.dumps({"partial": True, "tasks": results}, indent=2))
    return {"model": args.model, "arms": args.arms.split(","), "seeds": args.seeds, "steps": args.steps, "batch": args.batch,
            "date": time.strftime("%Y-%m-%d"), "retain_rows": len(retain.read_text().splitlines()) if retain else 0,
            "tasks": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--tasks", default="addition,sorting")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--rows", type=int, default=2400)
    parser.add_argument("--heldout", type=int, default=90)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--parallel", default="auto", help="workers at once (packed onto one GPU for a small model)")
    parser.add_argument("--forgetting", action=argparse.BooleanOptionalAction, default=True,
                        help="score every run on the base model's replies to everyday prompts (retain_dataset)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = anyio.run(main, args)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    for task in out["tasks"]:
        print(task["task"], task.get("wall_s"), (task.get("table") or {}).get("verdict"))
