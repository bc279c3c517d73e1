"""Generation speed of sample jobs: time to first token and tokens/s, Unsloth's fast generation vs
plain transformers `generate`, on a random-initialised Qwen3 built offline; then one sample job
through the real MCP server over stdio.

The model has Qwen3-0.6B's shape (hidden 1024, 28 layers, 16 / 8 heads, vocabulary 151,936) with the
tiny offline tokenizer (ids beyond its 512 tokens decode to nothing, which does not change the
timing). Every configuration runs the production path — `sample.loading.load_group` (Unsloth's
`from_pretrained` + `for_inference`, or transformers in bf16) and `model.generate.generate`
(greedy, per-token entropy recorded, end-of-turn stops) — in its own process, because importing
Unsloth patches transformers. A random model rarely emits an end-of-turn token, so each answer
runs to `--new-tokens`. Each configuration is run once to warm up (kernels, caches), then timed.

    python benchmarks/sample_generation.py --out benchmarks/results/sample_generation_h100.json
    python benchmarks/sample_generation.py --preset tiny --backends hf --new-tokens 16   # CPU smoke run
    python benchmarks/sample_generation.py --backends "" --new-tokens 128                # the server job only

Reported per backend and batch size: time to first token (prefill of the batch + one step, mean
over batches), tokens/s (all generated tokens of the batch over the generate call's wall time) and
the model's load time; then the server run's job wall time and its worker's numbers.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PRESETS = {
    "qwen3-0.6b": dict(hidden_size=1024, num_layers=28, num_heads=16, num_kv_heads=8, intermediate_size=3072,
                       model_vocab_size=151936),
    "tiny": dict(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128,
                 model_vocab_size=None),
}
PROMPT = "what color is the sky? answer with one word, then explain why in a few sentences."


def measure(model_dir: Path, backend: str, batch: int, new_tokens: int, repeats: int) -> dict[str, Any]:
    """One configuration in this process: load, warm up, then `repeats` timed batches."""
    if backend == "unsloth":
        import unsloth  # noqa: F401  (patches transformers; must precede its import)
    from finetune_mcp.model.generate import GenerationStats, generate
    from finetune_mcp.model.generation_settings import GenerationSettings
    from finetune_mcp.model.plan import plan_load
    from finetune_mcp.sample.loading import group_models, load_group
    from finetune_mcp.sample.spec import build_sample_spec

    spec = build_sample_spec({"model": str(model_dir), "models": [{"label": "model", "model": str(model_dir),
                                                                   "weights": "model"}],
                              "prompts": [{"messages": [{"role": "user", "content": PROMPT}]}],
                              "backend": backend, "max_seq_length": 4096})
    loaded = load_group(group_models(spec.models)[0], spec, plan_load(spec))
    settings = GenerationSettings(max_new_tokens=new_tokens, batch_size=batch)
    prompts = [PROMPT] * batch
    tokenizer = loaded.tokenizers["model"]
    generate(loaded.model, tokenizer, prompts, settings)  # warm-up
    stats = GenerationStats()
    for _ in range(repeats):
        generate(loaded.model, tokenizer, prompts, settings, stats=stats)
    import torch

    return {"backend": backend, "batch": batch, "new_tokens": new_tokens, "device": loaded.device,
            "load_s": round(loaded.load_s, 2), **stats.summary(),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20) if torch.cuda.is_available() else None}


def through_server(model_dir: Path, home: Path, batch: int, new_tokens: int) -> dict[str, Any]:
    """One sample_model job on the real server over stdio (the backend the worker picks: Unsloth on CUDA
    when installed)."""
    import anyio
    from fastmcp import Client

    from finetune_mcp.testing.local_server import stdio_server

    async def go() -> dict[str, Any]:
        async with Client(stdio_server(home, model_dir.parent), timeout=900) as client:
            started = time.perf_counter()
            job = (await client.call_tool("sample_model", {
                "model": str(model_dir), "prompts": [PROMPT] * batch, "max_new_tokens": new_tokens,
                "batch_size": batch})).structured_content
            done = (await client.call_tool("wait_for_job", {"job_id": job["job_id"], "timeout_s": 600})
                    ).structured_content
            wall = time.perf_counter() - started
            if done["state"] != "succeeded":
                raise SystemExit(f"the sample job {done['state']}: {done['error']}")
            result = (await client.call_tool("get_samples", {"job_id": job["job_id"], "include_tokens": False})
                      ).structured_content
        model = result["models"][0]
        return {"job_id": job["job_id"], "job_wall_s": round(wall, 2), "placement": done["placement_reason"],
                **{k: model[k] for k in ("backend", "device", "load_s", "warmup_s", "ttft_s", "tokens_per_s",
                                         "generated_tokens")}}

    return anyio.run(go)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen3-0.6b")
    parser.add_argument("--backends", default="hf,unsloth",
                        help='comma-separated: hf, unsloth; "" measures only the job through the server')
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="timed generate calls per configuration")
    parser.add_argument("--no-server", action="store_true", help="skip the run through the MCP server")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ftmcp-bench/sample"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: backend:batch in this process
    args = parser.parse_args()

    from finetune_mcp.testing.tiny_model import build_tiny_model

    model_dir = build_tiny_model(args.workdir / args.preset / "model", **PRESETS[args.preset])
    if args.one:
        backend, batch = args.one.split(":")
        print(json.dumps(measure(model_dir, backend, int(batch), args.new_tokens, args.repeats)))
        return

    rows = []
    for backend in filter(None, args.backends.split(",")):
        if backend == "unsloth" and importlib.util.find_spec("unsloth") is None:
            print("unsloth is not installed: skipping its rows", file=sys.stderr)
            continue
        for batch in args.batches.split(","):
            ran = subprocess.run([sys.executable, __file__, "--preset", args.preset, "--new-tokens",
                                  str(args.new_tokens), "--repeats", str(args.repeats), "--workdir", str(args.workdir),
                                  "--one", f"{backend}:{batch}"], capture_output=True, text=True, check=False)
            if ran.returncode != 0:
                raise SystemExit(f"{backend} batch {batch} failed:\n{ran.stderr[-4000:]}")
            rows.append(json.loads(ran.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    server = None
    if not args.no_server:
        home = args.workdir / "home" / time.strftime("%Y%m%d-%H%M%S")
        server = through_server(model_dir, home, int(args.batches.split(",")[-1]), args.new_tokens)
    print(f"\n{args.preset}, {args.new_tokens} new tokens per answer, greedy, mean of {args.repeats} timed calls\n")
    print("| backend | batch | time to first token (ms) | tokens/s | load (s) | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['batch']} | {r['ttft_s'] * 1000:.1f} | {r['tokens_per_s']:.1f} | "
              f"{r['load_s']:.1f} | {r['peak_memory_mib'] if r['peak_memory_mib'] is not None else '—'} |")
    if server:
        print(f"\nthrough the MCP server ({server['job_id']}, {server['backend']} on {server['device']}): job "
              f"{server['job_wall_s']:.1f} s wall (queue, worker start, load {server['load_s']:.1f} s, generation), "
              f"time to first token {server['ttft_s'] * 1000:.1f} ms, {server['tokens_per_s']:.1f} tokens/s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"preset": args.preset, "rows": rows, "server": server}, indent=2))


if __name__ == "__main__":
    main()
