"""`train_grpo`: prompt-only rows (their other columns go to the rewards) → `FusedGRPOTrainer` with
the `grpo` block's rewards and settings → the shared `fit_and_save`.

The fused path is exact for on-policy GRPO (TRL's num_iterations = 1, one generation batch per
optimiser step), which is what this method configures; generation is plain `generate` (no vLLM).
"""

from __future__ import annotations

import os
from typing import Any

from finetune_mcp.train.builder import TrainerParts, build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import to_dataset


def grpo_rows(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalised prompt-only rows as TRL's dataset rows: prompt plus every reward column."""
    return [{"prompt": ex["prompt"], **ex.get("columns", {})} for ex in examples]


def train_grpo(training: TrainingRun) -> dict[str, Any]:
    from trl import GRPOConfig

    from finetune_mcp.train.grpo.rewards.combine import load_rewards
    from finetune_mcp.train.grpo.trainer import FusedGRPOTrainer

    config, settings = training.config, training.config.grpo
    reward_funcs, weights = load_rewards(settings.rewards)
    train_ds = to_dataset(grpo_rows(training.data.train))
    eval_ds = to_dataset(grpo_rows(training.data.validation)) if training.data.validation else None
    parts = TrainerParts(
        GRPOConfig, FusedGRPOTrainer,
        config_kwargs={
            "per_device_eval_batch_size": settings.num_generations,  # one prompt's group per eval batch
            "num_generations": settings.num_generations, "max_completion_length": settings.max_completion_length,
            "temperature": settings.temperature, "beta": settings.beta, "loss_type": settings.loss_type,
            "scale_rewards": settings.scale_rewards, "reward_weights": weights, "num_iterations": 1,
            "remove_unused_columns": False, "log_completions": False,
            "prediction_loss_only": False,
        },
        trainer_kwargs={"reward_funcs": reward_funcs, "settings": settings, "run_config": config,
                        "loss_implementation": os.environ.get("FINETUNE_MCP_LOSS_IMPL", "auto")},
        hparams={"num_generations": settings.num_generations, "beta": settings.beta, "loss_type": settings.loss_type,
                 "top_entropy_quantile": settings.top_entropy_quantile, "entropy_bonus": settings.entropy_bonus,
                 "rewards": ",".join(f"{r.function}×{r.weight:g}" for r in settings.rewards)},
    )
    return fit_and_save(training, build_trainer(training, train_ds, eval_ds, parts), train_ds, eval_ds)
