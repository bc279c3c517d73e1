"""DPO, KTO, ORPO and GRPO through the real server over stdio (tiny offline model, CPU): each method
trains a few steps and reports its own metrics in get_job; bad preference rows, a reward with the
wrong signature, a batch not divisible by num_generations and a reward module the operator did not
allow are each refused before a job exists."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from fastmcp.exceptions import ToolError

from finetune_mcp.testing.local_server import job_ended

pytestmark = pytest.mark.slow

FAST = {"max_steps": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_seq_length": 64,
        "target": "local"}
OVERRIDES = {"logging_steps": 1, "validation_split": 0.25, "save_steps": 100_000}
REWARDS = [{"function": "numeric", "column": "answer"}, {"function": "length_penalty", "target_length": 4,
                                                          "weight": 0.1}]


def _rows(kind: str, n: int = 16) -> list[dict]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        prompt = [{"role": "user", "content": f"{a}+{b}="}]
        if kind == "grpo":
            out.append({"prompt": prompt, "answer": str(a + b)})
        else:
            out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": str(a + b)}],
                        "rejected": [{"role": "assistant", "content": str(a + b + 1)}]})
    return out


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path




@pytest.mark.parametrize("method,expected", [
    ("dpo", ("train/rewards/accuracies", "train/rewards/margins", "train/logps/chosen", "train/logps/rejected",
             "eval/rewards/accuracies")),
    ("kto", ("train/kl", "eval/loss")),
    ("orpo", ("train/rewards/accuracies", "train/log_odds_ratio", "eval/rewards/margins")),
    ("grpo", ("train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/completions/mean_length",
              "train/entropy", "train/entropy/masked_in", "train/entropy/masked_out")),
])
async def test_each_method_trains_and_reports_its_metrics(server_home, tiny_model: Path, tmp_path: Path, method: str,
                                                          expected: tuple[str, ...]) -> None:
    data = _write(tmp_path / f"{method}.jsonl", _rows(method))
    overrides = dict(OVERRIDES)
    if method == "grpo":
        overrides["grpo"] = {"num_generations": 4, "max_completion_length": 6, "rewards": REWARDS,
                             "top_entropy_quantile": 0.8}
    async with server_home().client() as client:
        started = (await client.call_tool("start_finetune", {
            "model": str(tiny_model), "dataset": str(data), "method": method, **FAST, "config_overrides": overrides,
        })).structured_content
        done = await job_ended(client, started["job_id"])
        card = (await client.call_tool("generate_model_card", {"job_id": started["job_id"]})).structured_content \
            if done["state"] == "succeeded" else None
    assert done["state"] == "succeeded", done["error"]
    missing = [tag for tag in expected if tag not in done["metrics"]]
    assert not missing, f"{method}: {missing} not in {sorted(done['metrics'])}"
    section = card["markdown"].split("## Training method", 1)[1].split("\n## ", 1)[0]
    summary = card["markdown"].split("\n## ")[0]
    assert f"Method `{method}`" in section and "supervised fine-tuning" not in summary and "Optimisation" in summary
    for tag in (t for t in expected if t != "eval/loss"):  # each method metric, in the card's table
        assert f"| `{tag.split('/', 1)[1]}` |" in section, (tag, section)


async def test_bad_starts_are_refused_before_a_job_exists(server_home, tiny_model: Path, tmp_path: Path) -> None:
    pairs = _rows("dpo", 6)
    pairs[3] = {"prompt": pairs[3]["prompt"], "chosen": pairs[3]["chosen"]}  # no 'rejected'
    bad_pairs = _write(tmp_path / "bad.jsonl", pairs)
    prompts = _write(tmp_path / "prompts.jsonl", _rows("grpo", 8))
    module = tmp_path / "my_rewards.py"
    module.write_text("def positional_only(completions):\n    return [1.0 for _ in completions]\n")
    server = server_home(PYTHONPATH=f"{tmp_path}:{__import__('os').environ.get('PYTHONPATH', '')}",
                         FINETUNE_MCP_USER_FUNCTIONS="my_rewards")
    base = {"model": str(tiny_model), **FAST}
    cases = {
        "line 4": {"dataset": str(bad_pairs), "method": "dpo"},
        "**kwargs": {"dataset": str(prompts), "method": "grpo", "config_overrides": {
            "grpo": {"rewards": [{"function": "my_rewards:positional_only"}]}}},
        "not divisible": {"dataset": str(prompts), "method": "grpo", "per_device_train_batch_size": 3,
                          "config_overrides": {"grpo": {"num_generations": 4, "rewards": REWARDS}}},
        "FINETUNE_MCP_USER_FUNCTIONS": {"dataset": str(prompts), "method": "grpo", "config_overrides": {
            "grpo": {"rewards": [{"function": "os.path:exists"}]}}},
    }
    async with server.client() as client:
        for needle, args in cases.items():
            with pytest.raises(ToolError) as refused:
                await client.call_tool("start_finetune", {**base, **args})
            assert needle in str(refused.value), (needle, str(refused.value))
        jobs = (await client.call_tool("list_jobs", {})).structured_content
    assert jobs["count"] == 0


async def test_preview_shows_pairs_and_prompts_and_the_reward_warning(server_home, tiny_model: Path,
                                                                     tmp_path: Path) -> None:
    pairs = _write(tmp_path / "pairs.jsonl", _rows("dpo", 8))
    prompts = _write(tmp_path / "prompts.jsonl", _rows("grpo", 8))
    never = [{"function": "regex", "pattern": "^never matches$"}]  # 0 for every probe: a constant reward
    base = {"model": str(tiny_model), **FAST}
    async with server_home().client() as client:
        dpo = (await client.call_tool("preview_training", {**base, "dataset": str(pairs), "method": "dpo",
                                                           "examples": 2})).structured_content
        kto = (await client.call_tool("preview_training", {**base, "dataset": str(pairs), "method": "kto",
                                                           "examples": 1})).structured_content
        grpo = (await client.call_tool("preview_training", {
            **base, "dataset": str(prompts), "method": "grpo", "examples": 2,
            "config_overrides": {"grpo": {"num_generations": 4, "max_completion_length": 6, "rewards": never}},
        })).structured_content
        started = (await client.call_tool("start_finetune", {
            **base, "dataset": str(prompts), "method": "grpo",
            "config_overrides": {"grpo": {"num_generations": 4, "max_completion_length": 6, "rewards": never}},
        })).structured_content
        await client.call_tool("cancel_job", {"job_id": started["job_id"]})

    assert dpo["task"] == "dpo" and dpo["data"]["format"] == "preference"
    first = [ex for ex in dpo["examples"] if ex["row"] == 0]
    assert [ex["side"] for ex in first] == ["chosen", "rejected"]
    a, b = (int(x) for x in first[0]["text"].split("user\n")[1].split("=")[0].split("+"))
    chosen, rejected = (re.findall(r"\[\[(.*?)\]\]", ex["text"], re.S)[0] for ex in first)
    assert str(a + b) in chosen and str(a + b + 1) in rejected and "+" not in chosen  # the prompt is masked
    assert all(ex["trained_tokens"] > 0 and ex["masked_tokens"] > 0 for ex in first)
    assert [ex["side"] for ex in kto["examples"]] == ["chosen", "rejected"]  # pairs, split by the trainer
    shown = grpo["examples"][0]
    a, b = (int(x) for x in shown["text"].split("user\n")[1].split("=")[0].split("+"))
    assert shown["reward_columns"] == {"answer": str(a + b)} and "regex" in shown["text"]
    assert grpo["lengths"]["steps_per_epoch"] >= 1
    reward_warnings = [w for w in grpo["warnings"] if w["code"] == "method_start_check"]
    assert reward_warnings and "same value" in reward_warnings[0]["message"]
    assert started["warnings"] and "same value" in started["warnings"][0]
