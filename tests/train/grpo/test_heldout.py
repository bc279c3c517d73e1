"""GRPO's held-out rewards on the offline tiny model: the run's rewards scored on the greedy replies of the
project's one generate (prompted as a chat client: `chat_prompt`), the model's training mode given back."""

from __future__ import annotations

from pathlib import Path

from finetune_mcp.config.preference import GRPOSettings
from finetune_mcp.model.generate import chat_prompt, generate
from finetune_mcp.model.generation_settings import GenerationSettings
from finetune_mcp.model.loading import load_model
from finetune_mcp.model.plan import LoadRequest, plan_load
from finetune_mcp.train.grpo.method import heldout_rewards


def test_heldout_rewards_score_the_greedy_replies_of_the_one_generate(tiny_model_dir: Path) -> None:
    loaded = load_model(str(tiny_model_dir), plan_load(LoadRequest(), "train"))
    prompts = ["what color is the sky?", [{"role": "system", "content": "be brief"},
                                          {"role": "user", "content": "add 2 and 3."}], "say node."]
    greedy = GenerationSettings(max_new_tokens=5, alternatives=0)
    expected = [g.text.strip() for g in generate(loaded.model, loaded.tokenizer,
                                                 [chat_prompt(loaded.tokenizer, p) for p in prompts], greedy)]
    assert all(expected), expected  # the untrained model says something to each
    # the exact reward against those replies: 1 for the first two rows, 0 for the third (a wrong reference)
    rows = [{"prompt": p, "columns": {"answer": a}} for p, a in zip(prompts, [*expected[:2], "no such reply"],
                                                                     strict=True)]
    settings = GRPOSettings(max_completion_length=5, rewards=[{"function": "exact", "column": "answer"}])
    loaded.model.train()
    scores = heldout_rewards(loaded.model, loaded.tokenizer, rows, settings)
    assert scores["mean_reward"] == 2 / 3 and abs(scores["reward_std"] - (2 / 9) ** 0.5) < 1e-9
    assert loaded.model.training
