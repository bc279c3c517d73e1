"""DPO and GRPO through the MCP server on a real model (SmolLM2-135M-Instruct), for the GPU machine.

  python benchmarks/preference_rl.py --model /root/smol/model --out $OUT/preference_rl.json
  python benchmarks/preference_rl.py --tiny --device cpu --dpo-steps 2 --grpo-steps 2 --experiment-steps 1 \
      --seeds 2 --rows 48 --out /tmp/prefrl.json     # the whole path on a CPU (tiny random model: no numbers)

1. DPO on two-digit-addition pairs (chosen = right sum, rejected = off by one): held-out preference
   accuracy (share of pairs with log p(chosen) > log p(rejected)) of the base model vs the tuned one.
2. GRPO with the numeric-answer reward (the reply's last number against the sum) on two-digit addition:
   held-out mean reward (greedy) base vs tuned.
3. start_experiment: plain GRPO vs entropy-masked GRPO (top_entropy_quantile 0.2: top 20 %), `--seeds` seeds each;
   the experiment's verdict as it comes out.
4. Step time and peak memory of the server's GRPO and DPO jobs next to plain TRL's GRPOTrainer and
   DPOTrainer on the same data (sections `plain`, `plain_dpo`), and plain Unsloth's DPOTrainer (section
   `unsloth_dpo`, alone in its process: Unsloth patches TRL on import).
Budget: ≤ 8 minutes on an H100 at the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from finetune_mcp.testing.local_server import job_ended
from finetune_mcp.train.grpo.rewards.builtin_rewards import last_number

SYSTEM = "Answer with the number only."
COMPLETION_TOKENS = 24


def addition_rows(n: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    return [(rng.randint(10, 99), rng.randint(10, 99)) for _ in range(n)]


def prompt(a: int, b: int) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"What is {a}+{b}?"}]


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def call(client, tool: str, args: dict) -> dict:
    return (await client.call_tool(tool, args)).structured_content




def load(model_dir: str, device: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    return AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)


def preference_accuracy(model_dir: str, adapter: str | None, pairs: list[tuple[int, int]], device: str) -> float:
    import torch

    tok, model = load(model_dir, device)
    model.eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()

    def logp(messages: list[dict], answer: str) -> float:
        head = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        ids = tok(head + answer, return_tensors="pt").input_ids.to(device)
        n_head = len(tok(head).input_ids)
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        return lp[n_head - 1:].gather(-1, ids[0, n_head:, None]).sum().item()

    wins = sum(logp(prompt(a, b), str(a + b)) > logp(prompt(a, b), str(a + b + 1)) for a, b in pairs)
    return wins / len(pairs)


def heldout_reward(model_dir: str, adapter: str | None, pairs: list[tuple[int, int]], device: str) -> float:
    import torch

    tok, model = load(model_dir, device)
    tok.padding_side = "left"
    model.eval()
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).eval()
    texts = [tok.apply_chat_template(prompt(a, b), add_generation_prompt=True, tokenize=False) for a, b in pairs]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(texts, return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=COMPLETION_TOKENS, do_sample=False)
    answers = tok.batch_decode(out[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    return sum(last_number(ans) == a + b for ans, (a, b) in zip(answers, pairs, strict=True)) / len(pairs)


def step_timer(times: list[float]):
    """A TrainerCallback appending to `times` the time between synchronised step ends: a step's GPU work
    included, as our jobs' `perf.step_s` (a step's begin-to-end on the host times only the launch when
    nothing in it waits for the GPU). transformers is imported only when a plain run starts."""
    from transformers import TrainerCallback

    class _Timer(TrainerCallback):
        last: float | None = None

        def on_step_end(self, *a, **k):
            import torch

            torch.cuda.synchronize()
            now = time.perf_counter()
            if self.last is not None:
                times.append(now - self.last)
            self.last = now

    return _Timer()


def plain_summary(times: list[float]) -> dict:
    """A plain TRL run's median step (its first 3 skipped) and peak memory."""
    import statistics

    import torch

    return {"median_step_s": round(statistics.median(times[3:] or times), 4),
            "peak_memory_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}


def plain_dpo_config(steps: int):
    """The server's DPO job's settings (batch, β, learning rate, length) as a DPOConfig for the plain runs."""
    from trl import DPOConfig

    return DPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=8,
                     gradient_accumulation_steps=1, learning_rate=5e-5, beta=0.1, max_length=128, bf16=True,
                     report_to="none", logging_steps=10, save_strategy="no")


def plain_trl_dpo(model_dir: str, data: Path, steps: int) -> dict:
    """The server's DPO run in plain TRL (DPOTrainer, same data, batch, β and LoRA), for step time and memory."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import DPOTrainer

    times: list[float] = []
    torch.cuda.reset_peak_memory_stats()
    args = plain_dpo_config(steps)
    trainer = DPOTrainer(model=model_dir, args=args, train_dataset=load_dataset("json", data_files=str(data))["train"],
                         peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
                         callbacks=[step_timer(times)])
    trainer.train()
    return plain_summary(times)


def plain_trl_grpo(model_dir: str, data: Path, steps: int) -> dict:
    """The same GRPO run in plain TRL (its own Triton loss), for step time and peak memory."""
    import torch
    from datasets import load_dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    def numeric(completions, answer, **_):  # the same reward as the server's run
        return [1.0 if last_number(c[0]["content"]) == float(a) else 0.0 for c, a in zip(completions, answer, strict=True)]

    times: list[float] = []
    torch.cuda.reset_peak_memory_stats()
    args = GRPOConfig(output_dir=tempfile.mkdtemp(), max_steps=steps, per_device_train_batch_size=16,
                      gradient_accumulation_steps=1, num_generations=8, max_completion_length=COMPLETION_TOKENS, learning_rate=5e-5,
                      bf16=True, report_to="none", logging_steps=10, save_strategy="no")
    trainer = GRPOTrainer(model=model_dir, reward_funcs=numeric, args=args, train_dataset=load_dataset("json", data_files=str(data))["train"],
                          peft_config=LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
                          callbacks=[step_timer(times)])
    trainer.train()
    return plain_summary(times)


def plain_unsloth_dpo(model_dir: str, data: Path, steps: int) -> dict:
    """The same DPO run in plain Unsloth (its patched DPOTrainer, its LoRA and gradient checkpointing), as a
    user's notebook runs it. Unsloth patches TRL on import: run this section in a process of its own."""
    from unsloth import FastLanguageModel, PatchDPOTrainer  # first, so that its patches take

    PatchDPOTrainer()
    import torch
    from datasets import load_dataset
    from trl import DPOTrainer

    model, tokenizer = FastLanguageModel.from_pretrained(model_dir, max_seq_length=128, load_in_4bit=False, dtype=None)
    model = FastLanguageModel.get_peft_model(model, r=16, lora_alpha=32, random_state=0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"],
                                             use_gradient_checkpointing="unsloth")
    times: list[float] = []
    torch.cuda.reset_peak_memory_stats()
    args = plain_dpo_config(steps)
    trainer = DPOTrainer(model=model, ref_model=None, args=args, processing_class=tokenizer,
                         train_dataset=load_dataset("json", data_files=str(data))["train"],
                         callbacks=[step_timer(times)])
    trainer.train()
    return plain_summary(times)


async def main(args: argparse.Namespace) -> dict:
    from fastmcp import Client

    from finetune_mcp.testing.local_server import stdio_server

    work = Path(tempfile.mkdtemp(prefix="prefrl-"))
    train_pairs, held = addition_rows(args.rows, 0), addition_rows(64, 1)
    dpo_data = write(work / "dpo.jsonl", [{"prompt": prompt(a, b), "chosen": [{"role": "assistant", "content": str(a + b)}],
                                           "rejected": [{"role": "assistant", "content": str(a + b + 1)}]}
                                          for a, b in train_pairs])
    grpo_data = write(work / "grpo.jsonl", [{"prompt": prompt(a, b), "answer": str(a + b)} for a, b in train_pairs])
    common = {"model": args.model, "target": "local", "learning_rate": 5e-5, "max_seq_length": 128}
    # numeric: the last number of the reply against the sum. The base model answers in sentences ("12 + 34 is
    # 46."): with an exact-answer reward and 8 tokens every reward was 0 on the H100 (2026-12-06), so no group
    # had any variance and GRPO had nothing to learn from.
    grpo_block = {"num_generations": 8, "max_completion_length": COMPLETION_TOKENS,
                  "rewards": [{"function": "numeric", "column": "answer"}]}
    result: dict = {"model": args.model}

    def save() -> None:  # after every section: a run cut short by a time limit keeps what it measured
        args.out.write_text(json.dumps(result, indent=2, default=str))
    roots = f"{work}:{Path(args.model).resolve().parent}"  # the data here, and the model's folder
    sections = set(args.sections.split(","))
    async with Client(stdio_server(work / "home", work, FINETUNE_MCP_ROOTS=roots), timeout=600) as client:
        if "dpo" in sections:
            await dpo_section(client, args, common, dpo_data, held, result, save)
        if "grpo" in sections:
            await grpo_section(client, args, common, grpo_data, grpo_block, held, result, save)
        if "experiment" in sections:
            await experiment_section(client, args, common, grpo_data, grpo_block, result, save)
    # plain TRL computes its GRPO loss with a Triton kernel: CUDA only
    if "plain" in sections:
        result["plain_trl_grpo"] = (plain_trl_grpo(args.model, grpo_data, args.grpo_steps) if args.device == "cuda"
                                    else "skipped: plain TRL's GRPO loss needs CUDA")
    if "unsloth_dpo" in sections:
        result["plain_unsloth_dpo"] = (plain_unsloth_dpo(args.model, dpo_data, args.dpo_steps) if args.device == "cuda"
                                       else "skipped: Unsloth needs CUDA")
    if "plain_dpo" in sections:
        result["plain_trl_dpo"] = (plain_trl_dpo(args.model, dpo_data, args.dpo_steps) if args.device == "cuda"
                                   else "skipped: a CUDA timing")
    return result


async def dpo_section(client, args, common, dpo_data, held, result, save) -> None:
    started = await call(client, "start_finetune", {**common, "dataset": str(dpo_data), "method": "dpo",
                                                     "max_steps": args.dpo_steps, "per_device_train_batch_size": 8,
                                                     "gradient_accumulation_steps": 1,
                                                     "config_overrides": {"validation_split": 0.1, "logging_steps": 10}})
    dpo = await job_ended(client, started["job_id"])
    assert dpo["state"] == "succeeded", dpo["error"]
    run = json.loads(Path(dpo["run_dir"], "result.json").read_text())
    result["dpo_job"] = {"metrics": dpo["metrics"], "perf": run["perf"]}
    save()
    result["dpo"] = {"metrics": dpo["metrics"],
                     "heldout_pref_acc_base": preference_accuracy(args.model, None, held, args.device),
                     "heldout_pref_acc_tuned": preference_accuracy(args.model, dpo["run_dir"] + "/adapter", held,
                                                                   args.device)}
    save()


async def grpo_section(client, args, common, grpo_data, grpo_block, held, result, save) -> None:
    t0 = time.time()
    started = await call(client, "start_finetune", {**common, "dataset": str(grpo_data), "method": "grpo",
                                                     "max_steps": args.grpo_steps, "per_device_train_batch_size": 16,
                                                     "gradient_accumulation_steps": 1,
                                                     "config_overrides": {"validation_split": 0.0, "logging_steps": 10,
                                                                          "grpo": grpo_block}})
    grpo = await job_ended(client, started["job_id"])
    assert grpo["state"] == "succeeded", grpo["error"]
    run = json.loads(Path(grpo["run_dir"], "result.json").read_text())
    result["grpo"] = {"metrics": grpo["metrics"], "job_s": round(time.time() - t0, 1), "perf": run["perf"],
                      "heldout_reward_base": heldout_reward(args.model, None, held, args.device),
                      "heldout_reward_tuned": heldout_reward(args.model, grpo["run_dir"] + "/adapter", held,
                                                             args.device)}
    save()


async def experiment_section(client, args, common, grpo_data, grpo_block, result, save) -> None:
    started = await call(client, "start_experiment", {
        "model": args.model, "dataset": str(grpo_data), "seeds": args.seeds, "method": "grpo",
        "parallel": int(args.parallel) if args.parallel.isdigit() else args.parallel,
        "arms": [{"name": "plain"}, {"name": "top20", "method_settings": {"grpo": {"top_entropy_quantile": 0.2}}}],
        "config_overrides": {"learning_rate": common["learning_rate"], "max_seq_length": common["max_seq_length"],
                             "max_steps": args.experiment_steps, "per_device_train_batch_size": 16,
                             "gradient_accumulation_steps": 1, "validation_split": 0.1, "grpo": grpo_block}})
    experiment = await job_ended(client, started["job_id"])
    result["experiment"] = {"state": experiment["state"], "error": experiment.get("error"),
                            "report": await call(client, "get_experiment", {"job_id": started["job_id"]})
                            if experiment["state"] == "succeeded" else None}
    save()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a local model folder (SmolLM2-135M-Instruct on the GPU)")
    parser.add_argument("--tiny", action="store_true", help="build the tiny offline test model and use it")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--rows", type=int, default=400, help="training rows (two-digit additions)")
    parser.add_argument("--out", type=Path, default=Path("preference_rl.json"))
    parser.add_argument("--dpo-steps", type=int, default=60)
    parser.add_argument("--grpo-steps", type=int, default=60)
    parser.add_argument("--experiment-steps", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--sections", default="dpo,grpo,experiment,plain,plain_dpo",
                        help="which parts to run (a GPU call's time limit may need two calls)")
    parser.add_argument("--parallel", default="auto", help="the experiment's workers (1: one after another)")
    args = parser.parse_args()
    if args.tiny:
        from finetune_mcp.testing.tiny_model import build_tiny_model

        args.model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="tiny-")) / "model"))
    if not args.model:
        parser.error("give --model DIR or --tiny")
    out = asyncio.run(main(args))
    args.out.write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(out, indent=2, default=str)[:6000])
