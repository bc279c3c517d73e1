"""The trainer builder: a shared base every method gets, and the parts a method brings.

As axolotl's `core/builders` and TRL's base config split it:
- the base: the `TrainingArguments` fields every TRL config shares, read from the run's config in
  one place (`base_arguments`: schedule, precision, evaluation and checkpoint cadence, the
  checkpoint limit and `report_to`, which later config groups fill), the always-on sinks
  (events.jsonl, TensorBoard, throughput: `train.callbacks`) and, on the transformers backend,
  constant-time mode switches (`train.lean_step`);
- the parts (`TrainerParts`): the method's config class (SFTConfig, DPOConfig, GRPOConfig, ...), its
  trainer class and the method arguments of each (SFT's `max_length` and entropy settings, a
  collator, DPO's `beta`, ...).

A method builds its parts (`train/<method>/`) and calls `build_trainer`; nothing here knows a
method. Callbacks and `loop.fit_and_save` work with any TRL trainer: entropy bookkeeping is used
where the trainer has it (`callbacks.entropy_tracker`), never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finetune_mcp.train.lean_step import make_mode_switches_lean
from finetune_mcp.train.loop import BuiltTrainer
from finetune_mcp.train.tracking import tracker_arguments

if TYPE_CHECKING:
    from finetune_mcp.train.loop import TrainingRun


@dataclass
class TrainerParts:
    """What a method adds to the base: its TRL config and trainer classes and their arguments."""

    config_class: type
    trainer_class: type
    config_kwargs: dict[str, Any] = field(default_factory=dict)  # method fields of config_class (override the base)
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)  # e.g. data_collator, the trainer's own options
    hparams: dict[str, Any] = field(default_factory=dict)  # the method's settings for TensorBoard's hparams view


def base_arguments(training: TrainingRun, *, evaluate: bool) -> dict[str, Any]:
    """The `TrainingArguments` fields every TRL config shares, from the run's config: the one place
    the schedule, precision, cadence, checkpoint limit and reporting are decided."""
    import torch

    config, run, loaded = training.config, training.run, training.loaded
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    return dict(
        output_dir=str(run.checkpoints),
        num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        per_device_eval_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type,
        # transformers 5: an int is a step count, a float in [0, 1) a ratio of the total steps
        warmup_steps=config.warmup_steps or config.warmup_ratio,
        weight_decay=config.weight_decay,
        max_grad_norm=config.max_grad_norm,
        optim=config.resolved_optim,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=config.logging_steps,
        eval_strategy=("steps" if config.eval_steps else "epoch") if evaluate else "no",
        eval_steps=config.eval_steps,
        save_strategy="steps" if config.save_steps else "epoch",
        save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        prediction_loss_only=True,
        bf16=bf16,
        fp16=cuda and not bf16,
        use_cpu=not cuda,
        # events, TensorBoard and progress are our own callbacks (below); Trackio / W&B / MLflow are
        # transformers' integrations, called on the same logs
        **tracker_arguments(config, run),
        disable_tqdm=True,
        # resolved by the step plan (`train.step_plan`) before the model was loaded: True or False here
        gradient_checkpointing=config.gradient_checkpointing is True and loaded.backend == "hf" and cuda,
        dataloader_num_workers=0,
        remove_unused_columns=True,
    )


def hparams(training: TrainingRun) -> dict[str, Any]:
    """The run's hyperparameters as TensorBoard's hparams view shows them."""
    config = training.config
    return {
        "model": config.model, "method": config.method, "entropy_weighting": config.enable_entropy_weighting,
        "entropy_fn": config.entropy.function if config.enable_entropy_weighting else "off",
        "lora_r": config.lora_r, "lora_alpha": config.lora_alpha, "learning_rate": config.learning_rate,
        "batch_size": config.per_device_train_batch_size, "grad_accum": config.gradient_accumulation_steps,
        "max_seq_length": config.max_seq_length, "load_in_4bit": config.load_in_4bit, "seed": config.seed,
        "backend": training.loaded.backend,
    }


def build_trainer(training: TrainingRun, train_ds: Any, eval_ds: Any | None, parts: TrainerParts) -> BuiltTrainer:
    """The method's trainer on the shared base, with the always-on sinks attached."""
    from transformers import PrinterCallback

    from finetune_mcp.train.callbacks import EventsCallback, PerfCallback, TensorBoardCallback

    run, loaded = training.run, training.loaded
    if loaded.backend == "hf":  # Unsloth manages its model's modes itself
        make_mode_switches_lean(loaded.model)
    args = parts.config_class(**{**base_arguments(training, evaluate=eval_ds is not None), **parts.config_kwargs})
    trainer = parts.trainer_class(
        model=loaded.model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=loaded.tokenizer,
        **parts.trainer_kwargs,
    )
    trainer.remove_callback(PrinterCallback)  # logs go to events.jsonl and train.log, not stdout
    logged = training.config.training_method.logged_metrics  # the method's own TRL log keys
    tb = TensorBoardCallback(run, trainer, {**hparams(training), **parts.hparams}, logged=logged)
    trainer.add_callback(tb)
    trainer.add_callback(EventsCallback(run, trainer, loaded.tokenizer, logged=logged))
    perf = PerfCallback()
    trainer.add_callback(perf)
    return BuiltTrainer(trainer, tb, perf)
