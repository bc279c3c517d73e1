"""`train_kto`: unpaired rows (paired ones split: chosen → label true, rejected → false) → TRL
KTOTrainer (settings from the `kto` block) → the shared `fit_and_save`."""

from __future__ import annotations

from typing import Any

from finetune_mcp.data.preference import to_unpaired
from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import MethodTrainerMixin, attach_sinks, base_args, prepare_trl, to_dataset


def train_kto(training: TrainingRun) -> dict[str, Any]:
    prepare_trl()
    from trl import KTOConfig, KTOTrainer

    class ProjectKTOTrainer(MethodTrainerMixin, KTOTrainer):
        """KTOTrainer with the attributes the project's sinks read."""

    config, settings = training.config, training.config.kto
    train_ds = to_dataset(to_unpaired(training.data.train))
    eval_ds = to_dataset(to_unpaired(training.data.validation)) if training.data.validation else None
    args = KTOConfig(**base_args(training, eval_ds is not None), max_length=config.max_seq_length, beta=settings.beta,
                     desirable_weight=settings.desirable_weight, undesirable_weight=settings.undesirable_weight,
                     loss_type=settings.loss_type)
    trainer = ProjectKTOTrainer(model=training.loaded.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=training.loaded.tokenizer)
    trainer._init_trackers(config)
    built = attach_sinks(trainer, training, {"beta": settings.beta, "loss_type": settings.loss_type})
    return fit_and_save(training, built, train_ds, eval_ds)
