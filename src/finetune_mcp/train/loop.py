"""The training loop every method shares: a typed `TrainingRun` and `fit_and_save`.

A method (`sft/`, `rerank/`, ...) turns the run's examples into rows, asks `builder.build_trainer`
for the trainer and its callbacks (the shared base plus its own `TrainerParts`), and hands both to
`fit_and_save`, which trains, evaluates and writes every artifact once (rank 0): eval.json, the
adapter (and the merged model), hparams, result.json and the `end` event. `workflow.run_training`
picks the method from the registry (`config.methods`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.runs.session import library_versions

if TYPE_CHECKING:
    from finetune_mcp.data.loader import LoadedData
    from finetune_mcp.model.loading import LoadedModel
    from finetune_mcp.train.callbacks import PerfCallback, TensorBoardCallback
    from finetune_mcp.train.step_plan import StepPlan

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
    plan: StepPlan | None = None  # how the step runs (`train.step_plan`); None: the model's own forward


@dataclass
class BuiltTrainer:
    """A trainer with the callbacks `fit_and_save` reads back: TensorBoard (final metrics, hparams)
    and throughput (the result's `perf`); `builder.build_trainer` makes it."""

    trainer: Any
    tensorboard: TensorBoardCallback
    perf: PerfCallback


def fit_and_save(training: TrainingRun, built: BuiltTrainer, train_ds: Any, eval_ds: Any | None, *,
                 after_training: Callable[[int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train, evaluate, then write every artifact once (rank 0): eval.json, the adapter (and the
    merged model), hparams, result.json and the `end` event. Shared by every method;
    `after_training(global_step)` runs on rank 0 before the writes and returns the method's own
    entries for result.json (the reranker's before/after ranking metrics)."""
    from finetune_mcp.train.callbacks import entropy_tracker
    from finetune_mcp.train.tracking import close_trackers

    config, run, loaded, data = training.config, training.run, training.loaded, training.data
    trainer, tb, perf = built.trainer, built.tensorboard, built.perf
    train_output = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint or None)
    if trainer.accelerator.is_main_process:
        close_trackers(trainer, run)
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
        "method": config.method,
        "task": config.method,  # the name results had before methods were named; readers still use it
        "metrics": final,
        "eval": eval_metrics,
        **task_result,
        "train_runtime_s": round(time.time() - training.started, 2),
        "perf": perf.summary(),
        "step_plan": training.plan.describe() if training.plan else None,
        "global_step": train_output.global_step,
        "backend": loaded.backend,
        "device": loaded.device,
        "entropy_weighting": config.enable_entropy_weighting,
        "high_entropy_threshold": tracker.threshold if (tracker := entropy_tracker(trainer)) else None,
        "num_processes": trainer.accelerator.num_processes,
        "ranks_in_sync": ranks_in_sync,
        "num_train_examples": len(train_ds),
        "num_eval_examples": len(eval_ds) if eval_ds is not None else 0,
        "dataset": {"source": data.source, "format": data.format},
        "versions": library_versions(),
        **({"gguf_source": config.gguf_source} if config.gguf_source else {}),
    }
    run.write_json(run.result, result)
    run.write_event("end", status="succeeded", step=train_output.global_step, total_steps=trainer.state.max_steps,
                    metrics=final)
    log.info("done in %.1fs; adapter in %s", result["train_runtime_s"], run.adapter)
    return result


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
