"""The training loop every method shares: a typed `TrainingRun`, `build_trainer` and `fit_and_save`.

A method (SFT in `sft.py`, the reranker in `rerank/workflow.py`) turns the run's examples into
rows, asks `build_trainer` for the trainer and its callbacks (its own trainer class, collator and
SFTConfig overrides where it needs them), and hands both to `fit_and_save`, which trains,
evaluates and writes every artifact once (rank 0): eval.json, the adapter (and the merged model),
hparams, result.json and the `end` event. `workflow.run_training` picks the method.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions

if TYPE_CHECKING:
    from finetune_mcp.data.loader import LoadedData
    from finetune_mcp.train.callbacks import PerfCallback, TensorBoardCallback
    from finetune_mcp.train.model import LoadedModel

log = logging.getLogger("finetune_mcp.run")


@dataclass
class TrainingRun:
    """One run in progress: what every method needs (the spec, where to write, the loaded model
    and data, when it started)."""

    config: EnhancedTrainingConfig
    run: RunDirectory
    loaded: LoadedModel
    data: LoadedData
    started: float


@dataclass
class BuiltTrainer:
    """A trainer with the callbacks `fit_and_save` reads back: TensorBoard (final metrics, hparams)
    and throughput (the result's `perf`)."""

    trainer: Any
    tensorboard: TensorBoardCallback
    perf: PerfCallback


def fit_and_save(training: TrainingRun, built: BuiltTrainer, train_ds: Any, eval_ds: Any | None, *,
                 after_training: Callable[[int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train, evaluate, then write every artifact once (rank 0): eval.json, the adapter (and the
    merged model), hparams, result.json and the `end` event. Shared by every method;
    `after_training(global_step)` runs on rank 0 before the writes and returns the method's own
    entries for result.json (the reranker's before/after ranking metrics)."""
    config, run, loaded, data = training.config, training.run, training.loaded, training.data
    trainer, tb, perf = built.trainer, built.tensorboard, built.perf
    train_output = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint or None)
    eval_metrics = trainer.evaluate() if eval_ds is not None else {}
    trainer.accelerator.wait_for_everyone()
    ranks_in_sync = _check_ranks_in_sync(trainer) if trainer.accelerator.num_processes > 1 else None
    if not trainer.accelerator.is_main_process:  # under DDP every artifact is written once, by rank 0
        return {"status": "succeeded", "rank": trainer.accelerator.process_index}
    task_result = after_training(train_output.global_step) if after_training else {}
    if eval_metrics:
        run.write_json(run.entropy / "eval.json", {
            "mean_entropy": eval_metrics.get("eval_entropy_mean"),
            "high_entropy_share": eval_metrics.get("eval_high_entropy_share"),
            "loss": eval_metrics.get("eval_loss"),
            "num_examples": len(eval_ds),
        })

    loaded.model.save_pretrained(str(run.adapter))
    loaded.tokenizer.save_pretrained(str(run.adapter))
    if config.save_merged:
        _save_merged(loaded, run)

    final = dict(tb.final)
    tb.write_hparams({k: v for k, v in eval_metrics.items() if isinstance(v, int | float)})
    result = {
        "status": "succeeded",
        "task": config.task,
        "metrics": final,
        "eval": eval_metrics,
        **task_result,
        "train_runtime_s": round(time.time() - training.started, 2),
        "perf": perf.summary(),
        "global_step": train_output.global_step,
        "backend": loaded.backend,
        "device": loaded.device,
        "entropy_weighting": config.enable_entropy_weighting,
        "high_entropy_threshold": trainer.entropy_trackers["train"].threshold,
        "num_processes": trainer.accelerator.num_processes,
        "ranks_in_sync": ranks_in_sync,
        "num_train_examples": len(train_ds),
        "num_eval_examples": len(eval_ds) if eval_ds is not None else 0,
        "dataset": {"source": data.source, "format": data.format},
        "versions": library_versions(),
    }
    run.write_json(run.result, result)
    run.write_event("end", status="succeeded", step=train_output.global_step, total_steps=trainer.state.max_steps,
                    metrics=final)
    log.info("done in %.1fs; adapter in %s", result["train_runtime_s"], run.adapter)
    return result


def build_trainer(training: TrainingRun, train_ds: Any, eval_ds: Any | None, *, trainer_cls: type | None = None,
                  args_overrides: dict[str, Any] | None = None, **trainer_kwargs: Any) -> BuiltTrainer:
    """The trainer and its callbacks. The reranker passes its trainer class, SFTConfig overrides
    (its own collator's needs) and extra trainer arguments; SFT uses the defaults."""
    config, run, loaded = training.config, training.run, training.loaded
    import torch
    from transformers import PrinterCallback
    from trl import SFTConfig

    from finetune_mcp.train.callbacks import EventsCallback, PerfCallback, TensorBoardCallback
    from finetune_mcp.train.sft_trainer import EnhancedUnslothTrainer

    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    evaluate = eval_ds is not None
    args = SFTConfig(
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
        report_to="none",
        disable_tqdm=True,
        max_length=config.max_seq_length,
        gradient_checkpointing=config.gradient_checkpointing and loaded.backend == "hf" and cuda,
        dataloader_num_workers=0,
        remove_unused_columns=True,
        **(args_overrides or {}),
    )
    trainer = (trainer_cls or EnhancedUnslothTrainer)(
        model=loaded.model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=loaded.tokenizer,
        entropy_weighting=config.enable_entropy_weighting,
        entropy_config=config.entropy,
        entropy_sample_tokens=config.entropy_sample_tokens,
        loss_implementation=os.environ.get("FINETUNE_MCP_LOSS_IMPL", "auto"),
        **trainer_kwargs,
    )
    hparams = {
        "model": config.model, "entropy_weighting": config.enable_entropy_weighting,
        "entropy_fn": config.entropy.function if config.enable_entropy_weighting else "off",
        "lora_r": config.lora_r, "lora_alpha": config.lora_alpha, "learning_rate": config.learning_rate,
        "batch_size": config.per_device_train_batch_size, "grad_accum": config.gradient_accumulation_steps,
        "max_seq_length": config.max_seq_length, "load_in_4bit": config.load_in_4bit, "seed": config.seed,
        "backend": loaded.backend,
    }
    trainer.remove_callback(PrinterCallback)  # logs go to events.jsonl and train.log, not stdout
    tb = TensorBoardCallback(run, trainer, hparams)
    trainer.add_callback(tb)
    trainer.add_callback(EventsCallback(run, trainer, loaded.tokenizer))
    perf = PerfCallback()
    trainer.add_callback(perf)
    return BuiltTrainer(trainer, tb, perf)


def leave_process_group() -> None:
    """Under DDP, wait until rank 0 has written the artifacts, then close the process group on every
    rank. Without it a rank that finished first exits with its gloo/NCCL pairs still open and was
    seen, now and then, to abort (SIGABRT) and fail a run that had succeeded."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _check_ranks_in_sync(trainer) -> bool:
    """DDP must leave every rank with the same adapter; a mismatch means gradients were not reduced."""
    import torch

    params = [p.detach().float().sum() for p in trainer.model.parameters() if p.requires_grad]
    checksum = torch.stack(params).sum().reshape(1).to(trainer.accelerator.device)
    gathered = trainer.accelerator.gather(checksum)
    if not torch.allclose(gathered, gathered[:1].expand_as(gathered), rtol=1e-5, atol=1e-6):
        raise RuntimeError(f"DDP ranks ended with different adapters (checksums {gathered.tolist()})")
    return True


def _save_merged(loaded, run: RunDirectory) -> None:
    if loaded.backend == "unsloth":
        loaded.model.save_pretrained_merged(str(run.merged), loaded.tokenizer, save_method="merged_16bit")
        return
    merged = loaded.model.merge_and_unload()
    merged.save_pretrained(str(run.merged))
    loaded.tokenizer.save_pretrained(str(run.merged))
