"""`train_kto`: unpaired rows (paired ones split: chosen → label true, rejected → false) → TRL
KTOTrainer (settings from the `kto` block) on the builder's shared base → the shared `fit_and_save`."""

from __future__ import annotations

from typing import Any

from finetune_mcp.data.formats.preference import to_unpaired
from finetune_mcp.train.builder import TrainerParts, build_trainer
from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import MethodTrainerMixin, to_dataset


def train_kto(training: TrainingRun) -> dict[str, Any]:
    from trl import KTOConfig, KTOTrainer

    class ProjectKTOTrainer(MethodTrainerMixin, KTOTrainer):
        """KTOTrainer with the attributes the project's sinks read."""

    config, settings = training.config, training.config.kto
    train_ds = to_dataset(to_unpaired(training.data.train))
    eval_ds = to_dataset(to_unpaired(training.data.validation)) if training.data.validation else None
    parts = TrainerParts(
        KTOConfig, ProjectKTOTrainer,
        config_kwargs={"max_length": config.max_seq_length, "beta": settings.beta,
                       "desirable_weight": settings.desirable_weight,
                       "undesirable_weight": settings.undesirable_weight, "loss_type": settings.loss_type,
                       "prediction_loss_only": False},
        trainer_kwargs={"run_config": config},
        hparams={"beta": settings.beta, "loss_type": settings.loss_type},
    )
    return fit_and_save(training, build_trainer(training, train_ds, eval_ds, parts), train_ds, eval_ds)
