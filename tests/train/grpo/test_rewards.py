"""Built-in GRPO rewards and their preflight (no model: the server runs these before a job exists)."""

from __future__ import annotations

import pytest

from finetune_mcp.config.preference import REWARD_BUILTINS, RewardSpec
from finetune_mcp.train.grpo.rewards.builtin_rewards import BUILTINS, make_builtin
from finetune_mcp.train.grpo.rewards.check import RewardCheckError, check_reward, check_rewards, probe_batch

ROWS = [{"prompt": "12+30=", "columns": {"answer": "42"}}, {"prompt": "1+1=", "columns": {"answer": "2"}}]


def test_config_names_every_builtin():
    assert REWARD_BUILTINS == BUILTINS


@pytest.mark.parametrize("spec,completion,answer,expected", [
    ({"function": "exact"}, " 42 ", "42", 1.0),
    ({"function": "exact"}, "<think>hm</think><answer>41</answer>", "42", 0.0),
    ({"function": "normalized"}, "Paris.", "paris", 1.0),
    ({"function": "numeric", "tolerance": 0.01}, "it is 1,000.5", "1000", 1.0),
    ({"function": "numeric"}, "no number", "3", 0.0),
    ({"function": "regex", "pattern": r"^\d+$"}, "17", "", 1.0),
    ({"function": "think_format"}, "<think>a</think> 5", "", 1.0),
    ({"function": "think_format"}, "5", "", 0.0),
    ({"function": "length_penalty", "target_length": 4}, "12345678", "", -1.0),
])
def test_builtin_values(spec, completion, answer, expected):
    fn = make_builtin(RewardSpec.model_validate(spec))
    assert fn(completions=[completion], prompts=["p"], answer=[answer]) == [expected]


def test_conversational_completions_are_read():
    fn = make_builtin(RewardSpec(function="exact"))
    assert fn(completions=[[{"role": "assistant", "content": "42"}]], answer=["42"]) == [1.0]


def test_preflight_refuses_what_training_would_trip_on():
    batch = probe_batch(ROWS, [RewardSpec(function="exact")])

    def no_kwargs(completions):
        return [0.0] * len(completions)

    def wrong_type(completions, **kwargs):
        return 1.0

    with pytest.raises(RewardCheckError, match=r"\*\*kwargs"):
        check_reward(no_kwargs, "no_kwargs", batch)
    with pytest.raises(RewardCheckError, match="must return a list"):
        check_reward(wrong_type, "wrong_type", batch)
    with pytest.raises(RewardCheckError, match="column 'solution'"):
        check_rewards([RewardSpec(function="exact", column="solution")], ROWS)


def test_preflight_warns_on_a_constant_reward():
    assert check_rewards([RewardSpec(function="exact")], ROWS) == []
    warnings = check_rewards([RewardSpec(function="regex", pattern="never-there")], ROWS)
    assert len(warnings) == 1 and "zero reward variance" in warnings[0]


def test_zero_loss_note_only_for_grpo_without_kl():
    from finetune_mcp.config.preference import zero_loss_note

    assert "beta = 0" in zero_loss_note({"task": "grpo", "grpo": {"beta": 0.0}})
    assert zero_loss_note({"task": "grpo", "grpo": {"beta": 0.04}}) is None
    assert zero_loss_note({"task": "sft"}) is None
