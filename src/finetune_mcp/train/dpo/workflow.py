"""`train_dpo`: preference pairs → TRL DPOTrainer (settings from the `dpo` block) on the builder's
shared base → the shared `fit_and_save`. TRL logs rewards/{chosen,rejected,margins,accuracies} and
logps/{chosen,rejected}, on held-out pairs as eval_*; the callbacks keep them (the descriptor's
`logged_metrics`) for events, TensorBoard and the card."""

from __future__ import annotations

from typing import Any

from finetune_mcp.train.builder import TrainerParts, build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import MethodTrainerMixin, to_dataset


def train_dpo(training: TrainingRun) -> dict[str, Any]:
    from trl import DPOConfig, DPOTrainer

    class ProjectDPOTrainer(MethodTrainerMixin, DPOTrainer):
        """DPOTrainer with the attributes the project's sinks read."""

    config, settings = training.config, training.config.dpo
    train_ds = to_dataset(training.data.train)
    eval_ds = to_dataset(training.data.validation) if training.data.validation else None
    parts = TrainerParts(
        DPOConfig, ProjectDPOTrainer,
        config_kwargs={"max_length": config.max_seq_length, "beta": settings.beta,
                       "loss_type": list(settings.loss_type), "loss_weights": settings.loss_weights,
                       "label_smoothing": settings.label_smoothing,
                       "prediction_loss_only": False},  # eval_rewards/* come from the evaluation's own step
        trainer_kwargs={"run_config": config},
        hparams={"beta": settings.beta, "loss_type": ",".join(settings.loss_type)},
    )
    return fit_and_save(training, build_trainer(training, train_ds, eval_ds, parts), train_ds, eval_ds)
