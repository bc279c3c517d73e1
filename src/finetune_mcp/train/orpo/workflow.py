"""`train_orpo`: preference pairs → TRL's experimental ORPOTrainer (λ = the `orpo` block's beta) on
the builder's shared base → the shared `fit_and_save`. TRL logs rewards/*, logps/*, nll_loss and
log_odds_ratio."""

from __future__ import annotations

from typing import Any

from finetune_mcp.train.builder import TrainerParts, build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import MethodTrainerMixin, to_dataset


def train_orpo(training: TrainingRun) -> dict[str, Any]:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class ProjectORPOTrainer(MethodTrainerMixin, ORPOTrainer):
        """ORPOTrainer with the attributes the project's sinks read."""

    config, settings = training.config, training.config.orpo
    train_ds = to_dataset(training.data.train)
    eval_ds = to_dataset(training.data.validation) if training.data.validation else None
    parts = TrainerParts(
        ORPOConfig, ProjectORPOTrainer,
        config_kwargs={"max_length": config.max_seq_length, "beta": settings.beta, "prediction_loss_only": False},
        trainer_kwargs={"run_config": config},
        hparams={"beta": settings.beta},
    )
    return fit_and_save(training, build_trainer(training, train_ds, eval_ds, parts), train_ds, eval_ds)
