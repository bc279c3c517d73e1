"""The reward functions of a GRPO run, in the order of its `rewards` list, with their weights.

Built-ins come from `builtin_rewards.make_builtin`; a path 'pkg.mod:fn' loads only when the operator
allowed its module (FINETUNE_MCP_USER_FUNCTIONS, `user_functions.load_callable`, which imports
nothing for a path that is not allowed). TRL sums them as Σ wᵢ·rᵢ (`reward_weights`) and logs each.
"""

from __future__ import annotations

from finetune_mcp.config.preference import RewardSpec
from finetune_mcp.train.grpo.rewards.builtin_rewards import BUILTINS, RewardFn, make_builtin
from finetune_mcp.user_functions import load_callable

WHAT = "GRPO reward function"


def load_reward(spec: RewardSpec) -> RewardFn:
    if spec.function in BUILTINS:
        return make_builtin(spec)
    return load_callable(spec.function, WHAT, builtins=BUILTINS)


def load_rewards(specs: list[RewardSpec]) -> tuple[list[RewardFn], list[float]]:
    """(functions, weights) for TRL's GRPOTrainer(reward_funcs=...) and GRPOConfig(reward_weights=...)."""
    return [load_reward(s) for s in specs], [s.weight for s in specs]
