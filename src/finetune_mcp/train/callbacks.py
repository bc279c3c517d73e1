"""Side effects of training, each written once on the main process: TensorBoard, events, entropy files.

- `TensorBoardCallback`: scalars under the stable tags of `metric_names`, a token-entropy histogram
  per logging window, hparams with the final metrics.
- `EventsCallback`: events.jsonl lines (progress, eval, epoch ends) that the job manager tails,
  and entropy/epoch_<k>.json for the model card.
Entropy is used where the trainer keeps it (`entropy_tracker`): SFT's and the reranker's trainers
do; a TRL trainer without entropy bookkeeping (DPO, GRPO, ...) gets the same events and scalars
without the entropy parts. Observers must not break a run, but a run whose progress nobody can see is not fine either: write
errors propagate (disk full is a real failure).
"""

from __future__ import annotations

import itertools
import math
import time
from typing import Any

from transformers import TrainerCallback

from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory

# TRL/transformers log keys → our tags (train-side keys arrive without prefix, eval ones with eval_)
_TRAIN_TAGS = {
    "loss": M.LOSS,
    "ce_loss": M.CE_LOSS,
    "weighted_loss": M.WEIGHTED_LOSS,
    "entropy_mean": M.ENTROPY_MEAN,
    "high_entropy_share": M.HIGH_ENTROPY_SHARE,
    "entropy_weight_mean": M.WEIGHT_MEAN,
    "learning_rate": M.LEARNING_RATE,
    "grad_norm": M.GRAD_NORM,
    "epoch": M.EPOCH,
}
_EVAL_TAGS = {
    "eval_loss": M.EVAL_LOSS,
    "eval_entropy_mean": M.EVAL_ENTROPY_MEAN,
    "eval_high_entropy_share": M.EVAL_HIGH_ENTROPY_SHARE,
}


def entropy_tracker(trainer: Any, mode: str = "train") -> Any | None:
    """The trainer's entropy tracker for `mode`, or None for a trainer that keeps none."""
    trackers = getattr(trainer, "entropy_trackers", None)
    return trackers.get(mode) if trackers else None


def _logged_key(key: str, logged: tuple[str, ...]) -> bool:
    return any(key == k or (k.endswith("/") and key.startswith(k)) for k in logged)


def tagged_metrics(logs: dict[str, Any], logged: tuple[str, ...] = ()) -> dict[str, float]:
    """Map a Trainer log dict onto our metric names, dropping anything non-numeric or unknown.

    `logged`: the method's own log keys as its TRL trainer names them (the descriptor's
    `logged_metrics`; a key ending in "/" is a prefix), kept as train/<key> and eval/<key>.

    Only training-step logs (with `loss`) and evaluations (with `eval_loss`) count; the Trainer's
    end-of-training summary (train_runtime, ...) is not a step.
    """
    if "loss" not in logs and "eval_loss" not in logs:
        return {}
    table = _EVAL_TAGS if "eval_loss" in logs else _TRAIN_TAGS
    out = {}
    for key, tag in table.items():
        value = logs.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            out[tag] = float(value)
    prefix = "eval_" if "eval_loss" in logs else ""
    for key, value in logs.items():
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name and _logged_key(name, logged) and isinstance(value, int | float) and math.isfinite(value):
            out.setdefault(f"{'eval' if prefix else 'train'}/{name}", float(value))
    return out


class TensorBoardCallback(TrainerCallback):
    def __init__(self, run: RunDirectory, trainer_ref: Any, hparams: dict[str, Any],
                 logged: tuple[str, ...] = ()) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.tensorboard))
        self.trainer = trainer_ref
        self.hparams = hparams
        self.logged = logged
        self.final: dict[str, float] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = tagged_metrics(logs, self.logged)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, state.global_step)
        self.final.update(metrics)
        window = getattr(self.trainer, "last_entropy_window", None)
        if "loss" in logs and window is not None and window.numel():
            self.writer.add_histogram(M.ENTROPY_HISTOGRAM, window, state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.writer.flush()

    def write_hparams(self, final_metrics: dict[str, float]) -> None:
        """hparams + final metrics, written once after the final evaluation."""
        hparams = {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in self.hparams.items()}
        metrics = {f"hparam/{k}": v for k, v in {**self.final, **final_metrics}.items()}
        self.writer.add_hparams(hparams, metrics, run_name=".")
        self.writer.close()


class EventsCallback(TrainerCallback):
    """Progress for the job manager (events.jsonl) and per-epoch entropy files for the card."""

    def __init__(self, run: RunDirectory, trainer_ref: Any, tokenizer: Any, clock=time.monotonic,
                 logged: tuple[str, ...] = ()) -> None:
        self.run = run
        self.logged = logged
        self.trainer = trainer_ref
        self.tokenizer = tokenizer
        self.clock = clock
        self._start = clock()
        self._epoch_index = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self._start = self.clock()
        if state.is_world_process_zero:
            self.run.write_event("start", step=state.global_step, total_steps=state.max_steps,
                                 num_train_epochs=args.num_train_epochs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        metrics = tagged_metrics(logs, self.logged)
        if not metrics:  # e.g. the final train_runtime summary
            return
        kind = "eval" if "eval_loss" in logs else "progress"
        self.run.write_event(kind, step=state.global_step, total_steps=state.max_steps,
                             epoch=state.epoch, eta_s=self._eta(state), metrics=metrics)

    def on_epoch_end(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self._epoch_index += 1
        tracker = entropy_tracker(self.trainer)
        if tracker is None:  # a trainer without entropy bookkeeping: the epoch end alone
            self.run.write_event("epoch_end", step=state.global_step, total_steps=state.max_steps,
                                 epoch=self._epoch_index)
            return
        summary = tracker.epoch_summary(self._epoch_index, self._decode)
        self.run.write_json(self.run.entropy / f"epoch_{self._epoch_index}.json", summary)
        self.run.write_event("epoch_end", step=state.global_step, total_steps=state.max_steps,
                             epoch=self._epoch_index, entropy_mean=summary["mean"],
                             high_entropy_share=summary["high_entropy_share"])

    def _decode(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def _eta(self, state) -> float | None:
        if state.global_step <= 0 or not state.max_steps:
            return None
        elapsed = self.clock() - self._start
        return round(elapsed / state.global_step * max(0, state.max_steps - state.global_step), 1)


class PerfCallback(TrainerCallback):
    """Step times and peak accelerator memory, for result.json, the card and the benchmarks.

    Why the clock is read at step ends and synchronised once, at the end of training: a launch-bound
    step (CUDA graphs, no host sync) returns to the host before the GPU has run it, so the host's
    time from step begin to step end is only the launch; the GPU's backlog shows when training ends.
    `step_s` (the time a step costs: wall clock from the end of the warm-up steps to the synchronised
    end of training, per step) is therefore the figure to compare; `median_step_s` is the median
    interval between step ends on the host's clock (the same when the host waits for the GPU every
    step, lower when it runs ahead). The first steps include compilation and allocator warm-up, so
    both skip them.
    """

    def __init__(self, clock=time.perf_counter, warmup_steps: int = 3) -> None:
        self.clock = clock
        self.warmup_steps = warmup_steps
        self.step_ends: list[float] = []  # host clock
        self._first_begin: float | None = None
        self._finished: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._first_begin is None:
            self._first_begin = self.clock()

    def on_step_end(self, args, state, control, **kwargs):
        self.step_ends.append(self.clock())

    def on_train_end(self, args, state, control, **kwargs):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()  # the steps still queued on the GPU belong to the last step's time
        self._finished = self.clock()

    def summary(self) -> dict[str, float | None]:
        import statistics

        import torch

        peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        ends = self.step_ends
        if not ends or self._first_begin is None:
            return {"step_s": None, "median_step_s": None, "steps_timed": 0, "steps_total_s": 0.0,
                    "peak_memory_mib": round(peak, 1) if peak is not None else None}
        finished = max(self._finished or 0.0, ends[-1])
        skip = self.warmup_steps if len(ends) > self.warmup_steps else 0
        marks = [self._first_begin, *ends][skip:]  # the timed steps' starts and ends
        intervals = [b - a for a, b in itertools.pairwise(marks)]
        return {
            "step_s": round((finished - marks[0]) / len(intervals), 4),
            "median_step_s": round(statistics.median(intervals), 4),
            "steps_timed": len(intervals),
            # every step, wall clock, GPU work included: what a run costs beyond its set-up
            "steps_total_s": round(finished - self._first_begin, 3),
            "peak_memory_mib": round(peak, 1) if peak is not None else None,
        }
