"""`train_dpo`: preference pairs → TRL DPOTrainer (settings from the `dpo` block) → the shared
`fit_and_save`. TRL logs rewards/{chosen,rejected,margins,accuracies} and logps/{chosen,rejected},
on held-out pairs as eval_*; the project's callbacks carry them to events, TensorBoard and the card."""

from __future__ import annotations

from typing import Any

from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import MethodTrainerMixin, attach_sinks, base_args, prepare_trl, to_dataset


def train_dpo(training: TrainingRun) -> dict[str, Any]:
    prepare_trl()
    from trl import DPOConfig, DPOTrainer

    class ProjectDPOTrainer(MethodTrainerMixin, DPOTrainer):
        """DPOTrainer with the attributes the project's sinks read."""

    config, settings = training.config, training.config.dpo
    train_ds = to_dataset(training.data.train)
    eval_ds = to_dataset(training.data.validation) if training.data.validation else None
    args = DPOConfig(**base_args(training, eval_ds is not None), max_length=config.max_seq_length,
                     beta=settings.beta, loss_type=list(settings.loss_type), loss_weights=settings.loss_weights,
                     label_smoothing=settings.label_smoothing)
    trainer = ProjectDPOTrainer(model=training.loaded.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                processing_class=training.loaded.tokenizer)
    trainer._init_trackers(config)
    built = attach_sinks(trainer, training, {"beta": settings.beta, "loss_type": ",".join(settings.loss_type)})
    return fit_and_save(training, built, train_ds, eval_ds)
