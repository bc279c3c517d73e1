"""A training step on a real model, side by side: plain Unsloth, plain transformers + PEFT + TRL, ours.

Every case runs in its own process (Unsloth patches transformers on import; clean CUDA memory
statistics) on the same model, data and settings: chat rows of two-digit addition (~45 tokens with
the model's template), batch 16, accumulation 1, max_seq_length 96, LoRA r 16 on all projections.
A case reports the median time between optimiser steps (steps after the first `--warmup` skipped),
tokens/s, peak memory and the latency from process start to the end of step 1.

    python benchmarks/real_model_step.py --model /root/smol/hf --out $OUT/step.json
    python benchmarks/real_model_step.py --model /root/smol/hf --only ours_hf_off --profile $OUT
    python benchmarks/real_model_step.py --model /root/smol/hf --shape qwen3-0.6b --out $OUT/step-0.6b.json

The step's arithmetic limit is 6 · tokens · trainable-path parameters over the card's bf16 peak: a
floor no launch-bound step of a small model reaches, printed beside the measurements.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

CASES = ["unsloth_plain", "hf_plain", "ours_unsloth_off", "ours_unsloth_on", "ours_hf_off", "ours_hf_on",
         "ours_experiment"]
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0}  # dense bf16, SXM
# Larger shapes (random weights, the real model's tokenizer and chat template): a fix for small models
# must not cost large ones. Qwen3's published configs.
SHAPES = {
    "qwen3-0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
    "qwen3-1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                       num_key_value_heads=8, head_dim=128, vocab_size=151936, tie_word_embeddings=True),
}


def addition_rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"messages": [
            {"role": "user", "content": f"What is {a} + {b}? Answer with the number only."},
            {"role": "assistant", "content": str(a + b)},
        ]})
    return rows


def write_data(path: Path, n: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in addition_rows(n, seed)))
    return path


class StepClock:
    """A TrainerCallback (built lazily: transformers is imported only inside a case's process)."""

    @staticmethod
    def make(process_start: float):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self) -> None:
                self.ends: list[float] = []
                self.first_step_s: float | None = None

            def on_step_end(self, args, state, control, **kwargs):
                import torch

                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                now = time.perf_counter()
                self.ends.append(now)
                if self.first_step_s is None:
                    self.first_step_s = time.time() - process_start

        return _Clock()


def summarise(clock, warmup: int, tokens_per_step: float) -> dict:
    import torch

    gaps = [b - a for a, b in zip(clock.ends, clock.ends[1:], strict=False)][warmup:]
    median = statistics.median(gaps) if gaps else None
    return {
        "median_step_s": round(median, 4) if median else None,
        "steps_timed": len(gaps),
        "tokens_per_s": round(tokens_per_step / median, 1) if median else None,
        "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
        "first_step_s": round(clock.first_step_s, 2) if clock.first_step_s else None,
    }


def plain_case(args, unsloth: bool, process_start: float) -> dict:
    if unsloth:
        import unsloth
        from unsloth import FastLanguageModel
    import torch
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    if unsloth:
        model, tokenizer = FastLanguageModel.from_pretrained(args.model, max_seq_length=args.seq, load_in_4bit=False,
                                                             dtype=None)
        model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, target_modules=TARGETS,
                                                 use_gradient_checkpointing="unsloth", random_state=0)
    else:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.model)
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16, device_map={"": 0})
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=TARGETS, task_type="CAUSAL_LM"))
    data = Dataset.from_list(addition_rows(args.batch * (args.steps + 2), 0))
    clock = StepClock.make(process_start)
    trainer = SFTTrainer(model=model, processing_class=tokenizer, train_dataset=data, callbacks=[clock], args=SFTConfig(
        output_dir=str(args.work / "plain"), per_device_train_batch_size=args.batch, max_steps=args.steps,
        max_length=args.seq, learning_rate=2e-4, logging_steps=1, bf16=True, report_to="none", save_strategy="no",
        disable_tqdm=True))
    torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return summarise(clock, args.warmup, tokens_per_step(tokenizer, args))


def tokens_per_step(tokenizer, args) -> float:
    rows = addition_rows(64, 0)
    # transformers 5 returns a BatchEncoding here: count its input_ids, not its keys
    lengths = [len(tokenizer(tokenizer.apply_chat_template(r["messages"], tokenize=False),
                             add_special_tokens=False)["input_ids"]) for r in rows]
    return args.batch * min(statistics.mean(lengths), args.seq)


def ours_case(args, backend: str, entropy: bool, process_start: float) -> dict:
    from finetune_mcp.config import build_config
    from finetune_mcp.train import builder

    clock = StepClock.make(process_start)
    profiler = {}
    original = builder.build_trainer

    def build_with_clock(*a, **k):
        built = original(*a, **k)
        built.trainer.add_callback(clock)
        if args.profile:
            built.trainer.add_callback(_profile_callback(args.profile, profiler))
        return built

    builder.build_trainer = build_with_clock
    from finetune_mcp.train.sft import workflow as sft_workflow

    sft_workflow.build_trainer = build_with_clock
    from finetune_mcp.train.workflow import run_training

    data = write_data(args.work / "data.jsonl", args.batch * (args.steps + 2))
    config = build_config({
        "model": args.model, "dataset": str(data), "max_steps": args.steps, "per_device_train_batch_size": args.batch,
        **ours_settings(args), "backend": backend, "enable_entropy_weighting": entropy,
    })
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
    result = run_training(config, args.work / f"run-{backend}-{int(entropy)}-{time.time_ns()}")
    if args.profile:
        prof.disable()
        with open(Path(args.profile) / f"cprofile-{backend}-{int(entropy)}.txt", "w") as fh:
            pstats.Stats(prof, stream=fh).sort_stats("cumulative").print_stats(60)
            pstats.Stats(prof, stream=fh).sort_stats("tottime").print_stats(40)
    from transformers import AutoTokenizer

    out = summarise(clock, args.warmup, tokens_per_step(AutoTokenizer.from_pretrained(args.model), args))
    out["pipeline_perf"] = result.get("perf")
    return out


def ours_settings(args) -> dict:
    """Our config for the benchmark's setting. Accumulation 1 as the plain cases (the config's default is 4:
    a step of four micro-batches, which an earlier version of this benchmark timed against plain's one)."""
    return {"max_seq_length": args.seq, "per_device_train_batch_size": args.batch, "gradient_accumulation_steps": 1,
            "lora_r": 16, "lora_alpha": 16, "target_modules": TARGETS, "logging_steps": 1, "validation_split": 0.0,
            "learning_rate": 2e-4}


def experiment_case(args, process_start: float) -> dict:
    """2 arms (standard, entropy) × 2 seeds inside one experiment worker, as `start_experiment` runs them:
    per-step cost of each run (its training steps' time / steps), each run's overhead beyond its steps, and
    the held-out scoring of `--heldout` rows by batched generation."""
    from finetune_mcp.experiment.spec import ExperimentSpec
    from finetune_mcp.experiment.workflow import run_experiment

    data = write_data(args.work / "data.jsonl", args.batch * (args.steps + 2))
    heldout = write_data(args.work / "heldout.jsonl", args.heldout, seed=1)
    spec = ExperimentSpec(model=args.model, dataset=str(data), eval_dataset=str(heldout), arms=["standard", "entropy"],
                          seeds=[0, 1], max_steps=args.steps, generation_examples=args.heldout, max_new_tokens=8,
                          **{**ours_settings(args), "logging_steps": 10})
    started = time.time()  # the same clock as process_start (BENCH_PROCESS_START)
    run_dir = args.work / f"experiment-{time.time_ns()}"
    run_experiment(spec, run_dir)
    wall = time.time() - started
    table = json.loads(next(run_dir.glob("**/table.json")).read_text())
    runs = table.get("runs") or []
    per_run = [{"run": r.get("name"), **(r.get("timing") or {})} for r in runs]
    mean_step_s = [t["train_steps_s"] / t["steps"] for t in per_run if t.get("steps")]
    step_s = [t["step_s"] for t in per_run if t.get("step_s")]
    return {"wall_s": round(wall, 1), "runs": per_run, "first_run_start_s": round(started - process_start, 1),
            # the pipeline's step cost (`perf.step_s`: wall clock after warm-up, GPU work included), as the
            # single-run cases' pipeline_perf reports it ...
            "step_s": round(statistics.median(step_s), 4) if step_s else None,
            # ... and every step's share of train_steps_s, one-off first-step costs included
            "mean_step_s": round(statistics.median(mean_step_s), 4) if mean_step_s else None,
            "later_runs_overhead_s": [round(t["overhead_s"] - (t.get("scoring_s") or 0.0), 2) for t in per_run[1:]],
            "scoring_s": [t.get("scoring_s") for t in per_run]}


def _profile_callback(folder: str, holder: dict):
    from transformers import TrainerCallback

    class _Prof(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            import torch

            if state.global_step == 10:
                holder["p"] = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                                 torch.profiler.ProfilerActivity.CUDA])
                holder["p"].__enter__()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 15 and "p" in holder:
                p = holder.pop("p")
                p.__exit__(None, None, None)
                Path(folder, f"torch-profile-{os.getpid()}.txt").write_text(
                    p.key_averages().table(sort_by="cuda_time_total", row_limit=30) + "\n\n"
                    + p.key_averages().table(sort_by="cpu_time_total", row_limit=40))

    return _Prof()


def shaped_model(tokenizer_dir: str, shape: str, work: Path) -> str:
    """A random-weight Qwen3 of `shape` (bf16) with `tokenizer_dir`'s tokenizer, written once under `work`."""
    folder = work / f"shape-{shape}"
    if (folder / "model.safetensors").exists():
        return str(folder)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen3Config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen3Config(**SHAPES[shape], max_position_embeddings=4096, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def run_case(args) -> None:
    start = float(os.environ.get("BENCH_PROCESS_START", time.time()))
    case = args.case
    if case == "unsloth_plain":
        out = plain_case(args, True, start)
    elif case == "hf_plain":
        out = plain_case(args, False, start)
    elif case == "ours_experiment":
        out = experiment_case(args, start)
    else:
        _, backend, entropy = case.split("_")
        out = ours_case(args, backend, entropy == "on", start)
    print("RESULT " + json.dumps(out), flush=True)


def arithmetic_limit(model: str, args) -> dict:
    cfg = json.loads((Path(model) / "config.json").read_text())
    h, layers, inter, vocab = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["intermediate_size"], cfg["vocab_size"]
    head_dim = cfg.get("head_dim") or h // cfg["num_attention_heads"]
    q = cfg["num_attention_heads"] * head_dim
    kv = cfg.get("num_key_value_heads", cfg["num_attention_heads"]) * head_dim
    params = layers * (2 * h * q + 2 * h * kv + 3 * h * inter) + vocab * h
    tokens = args.batch * 45
    flops = 6 * tokens * params
    import torch

    name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    return {"params_in_step": params, "tokens_per_step": tokens, "tflop_per_step": round(flops / 1e12, 3),
            "limit_ms_at_peak": round(flops / (peak * 1e12) * 1e3, 3) if peak else None, "device": name}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--only", default=",".join(CASES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--heldout", type=int, default=90, help="held-out rows scored by generation (experiment)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=96)
    parser.add_argument("--work", type=Path, default=Path("/tmp/real-model-step"))
    parser.add_argument("--profile", default=None, help="folder for cProfile + torch.profiler tables (ours cases)")
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="time a larger random-weight model of this shape (the --model's tokenizer)")
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.shape:
        args.model = shaped_model(args.model, args.shape, args.work)
    if args.case:
        run_case(args)
        return
    results = {"limit": arithmetic_limit(args.model, args), "cases": {}}
    for case in args.only.split(","):
        env = {**os.environ, "BENCH_PROCESS_START": str(time.time())}
        cmd = [sys.executable, __file__, "--case", case, *sys.argv[1:]]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        results["cases"][case] = json.loads(line[7:]) if line else {"error": (proc.stderr or proc.stdout)[-3000:]}
        print(case, json.dumps(results["cases"][case]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
