"""`train_orpo`: preference pairs → TRL's experimental ORPOTrainer (λ = the `orpo` block's beta) →
the shared `fit_and_save`. TRL logs rewards/*, logps/*, nll_loss and log_odds_ratio."""

from __future__ import annotations

from typing import Any

from finetune_mcp.train.loop import TrainingRun, fit_and_save
from finetune_mcp.train.trl_method import MethodTrainerMixin, attach_sinks, base_args, prepare_trl, to_dataset


def train_orpo(training: TrainingRun) -> dict[str, Any]:
    prepare_trl()
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    class ProjectORPOTrainer(MethodTrainerMixin, ORPOTrainer):
        """ORPOTrainer with the attributes the project's sinks read."""

    config, settings = training.config, training.config.orpo
    train_ds = to_dataset(training.data.train)
    eval_ds = to_dataset(training.data.validation) if training.data.validation else None
    args = ORPOConfig(**base_args(training, eval_ds is not None), max_length=config.max_seq_length, beta=settings.beta)
    trainer = ProjectORPOTrainer(model=training.loaded.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                 processing_class=training.loaded.tokenizer)
    trainer._init_trackers(config)
    built = attach_sinks(trainer, training, {"beta": settings.beta})
    return fit_and_save(training, built, train_ds, eval_ds)
