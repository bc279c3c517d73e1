"""EnhancedUnslothTrainer: TRL's SFTTrainer with one loss path for both arms of an entropy A/B.

The loss never builds full logits: the trainer runs the decoder to its last hidden states and hands
them, with the lm_head weight, to `finetune_mcp.kernels.linear_entropy_ce` (fused Triton on CUDA,
chunked torch elsewhere). With weighting off the same call runs with w = 1, so the two arms differ
only in w, and both log entropy. This also sidesteps TRL 1.15's own Triton-only loss on the CPU
and Unsloth's "logits are empty" stub when labels are passed to the model.

Only `compute_loss` and `log` are overridden:
- `compute_loss`: shifted labels (masked at sequence starts in padding-free batches, so no label
  crosses a boundary), only trainable tokens go through the loss head (on a CUDA-graph step every
  position does, ignored ones masked in the kernel: no host sync), and the normaliser is TRL's
  `num_items_in_batch` (tokens across the accumulated batch and ranks).
- `log`: adds the entropy window's metrics (and eval's) to what TRL logs, so callbacks see them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from trl import SFTTrainer

from finetune_mcp.config import EntropyConfig
from finetune_mcp.data.chat_tokens import EXAMPLE_WEIGHT
from finetune_mcp.kernels import WeightSpec, entropy_weights, linear_entropy_ce
from finetune_mcp.train.entropy import EntropyTracker
from finetune_mcp.train.lean_step import LeanStepMixin

IGNORE_INDEX = -100
TOKEN_WEIGHTS = "token_weights"
RIGHT_PADDED = "right_padded"  # set by `RightPaddingCheck` on the host: may the decoder run causal-only?


def weight_spec(entropy: EntropyConfig) -> WeightSpec:
    return WeightSpec(
        fn=entropy.function,
        scale=entropy.scale,
        min_weight=entropy.min_weight,
        max_weight=entropy.max_weight,
        relu_threshold=entropy.relu_threshold,
        quantile=entropy.quantile,
        global_quantile=entropy.global_quantile,
    )


def unwrap_causal_lm(model: Any) -> Any:
    """The causal LM under PEFT / accelerate wrappers (it owns `.model` decoder and `.lm_head`)."""
    while hasattr(model, "module") and not hasattr(model, "lm_head"):
        model = model.module  # DDP / accelerate
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()  # PEFT
    return model


def shift_labels(labels: torch.Tensor, position_ids: torch.Tensor | None) -> torch.Tensor:
    """Labels for next-token prediction at each position: [B, T-1].

    In padding-free batches several sequences share one row; a position whose next token starts a
    new sequence (position id 0) must not be trained to predict it.
    """
    shifted = labels[:, 1:].clone()
    if position_ids is not None:
        shifted[position_ids[:, 1:] == 0] = IGNORE_INDEX
    return shifted


def last_hidden_states(model: Any, causal_lm: Any, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The decoder's output [B, T, d], without computing the N×V logits.

    One process: call the decoder directly. Under DDP the call must go through the wrapper's
    forward, or its gradient all-reduce is never armed; there the full model runs with
    `logits_to_keep=1` (logits for one position only) and a hook takes the decoder's output.
    """
    if not isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return causal_lm.model(**inputs, use_cache=False).last_hidden_state
    captured: dict[str, torch.Tensor] = {}

    def grab(module: Any, args: Any, output: Any) -> None:
        captured["hidden"] = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]

    handle = causal_lm.model.register_forward_hook(grab)
    try:
        model(**inputs, use_cache=False, logits_to_keep=1)
    finally:
        handle.remove()
    return captured["hidden"]


class ExampleWeightCollator:
    """Wraps the trainer's collator to turn each example's `example_weight` into per-token weights.

    The weights are laid out exactly like the labels the inner collator builds: one row per example,
    or one flattened row in padding-free batches (padding gets 0; its labels are ignored anyway).
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        weights = [float(example.pop(EXAMPLE_WEIGHT, 1.0)) for example in examples]
        batch = self.inner(examples)
        rows, width = batch["labels"].shape
        if rows == len(examples):
            token_weights = torch.tensor(weights).unsqueeze(1).expand(rows, width).contiguous()
        else:  # padding-free: the examples were concatenated into one row
            flat = torch.cat([torch.full((len(ex["input_ids"]),), w) for ex, w in zip(examples, weights, strict=True)])
            token_weights = torch.zeros(1, width)
            token_weights[0, : flat.numel()] = flat
        batch[TOKEN_WEIGHTS] = token_weights
        return batch


class RightPaddingCheck:
    """Wraps the trainer's collator to mark, on the host, whether the batch is right-padded (no GPU sync):
    only then may `train.decoder_graphs` run attention causal-only."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from finetune_mcp.train.decoder_graphs import is_right_padded

        batch = self.inner(examples)
        batch[RIGHT_PADDED] = "position_ids" not in batch and is_right_padded(batch.get("attention_mask"))
        return batch


class EnhancedUnslothTrainer(LeanStepMixin, SFTTrainer):
    """SFTTrainer with opt-in entropy weighting: loss = Σ w·CE / num_items_in_batch, w = f(H) detached."""

    def __init__(
        self,
        *args: Any,
        entropy_weighting: bool = False,
        entropy_config: EntropyConfig | None = None,
        entropy_sample_tokens: int = 20000,
        loss_implementation: str = "auto",
        decoder: str = "model",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.decoder = decoder  # "model" | "graphs" (`train.step_plan`)
        self._graphed = None  # the GraphedDecoder, built at the first training step
        # Which rows go through the loss head: "trained" (labels not ignored; picking them is a host sync)
        # or "all" (ignored ones masked inside the kernel): a launch-bound step — the graph plan's — cannot
        # afford the sync, and its head is small. The loss is the same either way.
        self.head_rows = "all" if decoder == "graphs" else "trained"
        if decoder == "graphs":
            self.data_collator = RightPaddingCheck(self.data_collator)
        # Our loss divides by num_items_in_batch itself, so the Trainer must pass it and not also
        # divide by the accumulation steps (it decides that from the model's forward signature).
        self.model_accepts_loss_kwargs = True
        if EXAMPLE_WEIGHT in (getattr(self.train_dataset, "column_names", None) or []):
            self.data_collator = ExampleWeightCollator(self.data_collator)
        self.entropy_config = entropy_config or EntropyConfig()
        self.entropy_weighting = entropy_weighting
        self.loss_implementation = loss_implementation  # auto | triton | torch | native (benchmarks compare)
        self._weight_spec = weight_spec(self.entropy_config) if entropy_weighting else None
        self._logging_spec = weight_spec(self.entropy_config)  # weighted_loss is logged in both arms
        tracker_args = dict(
            threshold=self.entropy_config.high_entropy_threshold,
            percentile=self.entropy_config.high_entropy_percentile,
            sample_size=entropy_sample_tokens,
            seed=self.args.seed,
        )
        self.entropy_trackers = {"train": EntropyTracker(**tracker_args), "eval": EntropyTracker(**tracker_args)}
        self.last_entropy_window: torch.Tensor | None = None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Why not super(): TRL's loss needs full logits (or Triton on CPU); ours reads hidden states.
        right_padded = inputs.pop(RIGHT_PADDED, False)
        if self.loss_implementation == "native":  # the library's own loss: a benchmark baseline only
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        labels = inputs["labels"]
        position_ids = inputs.get("position_ids")
        causal_lm = unwrap_causal_lm(model)
        graphed = self._graphed_decoder(causal_lm) if right_padded and model.training and torch.is_grad_enabled() else None
        if graphed is not None:
            hidden = graphed(inputs["input_ids"])  # [B, T, d], replayed from CUDA graphs
        else:
            decoder_inputs = {k: v for k, v in inputs.items() if k in ("input_ids", "attention_mask", "position_ids")}
            hidden = last_hidden_states(model, causal_lm, decoder_inputs)  # [B, T, d]
        targets = shift_labels(labels, position_ids).reshape(-1)  # [B·(T-1)]
        valid = targets != IGNORE_INDEX
        hidden = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # [B·(T-1), d]
        token_weights = inputs.get(TOKEN_WEIGHTS)
        if token_weights is not None:
            token_weights = token_weights[:, 1:].reshape(-1)  # the weight of each target's example
        if self.head_rows == "trained":  # selecting the trained rows waits for the GPU once
            hidden, targets = hidden[valid], targets[valid]
            token_weights = token_weights[valid] if token_weights is not None else None
            valid = None
        lm_head = causal_lm.lm_head
        mode = "train" if model.training else "eval"
        out = linear_entropy_ce(
            hidden,
            lm_head.weight,
            targets,
            # eval reports plain CE, so eval losses compare across the two arms of an A/B
            weight_fn=self._weight_spec if mode == "train" else None,
            normalizer=num_items_in_batch,
            bias=lm_head.bias,
            softcap=getattr(causal_lm.config, "final_logit_softcapping", None),
            token_weights=token_weights if mode == "train" else None,
            implementation=self.loss_implementation,
        )
        loss = out.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages; num_items counts every rank's tokens
        weighted_by = None
        if self._weight_spec is None or mode == "eval":  # f(H) not applied: log what it would have given
            weighted_by = entropy_weights(out.entropy, math.log(lm_head.weight.shape[0]), self._logging_spec,
                                          log_prob=-out.ce, valid=valid)
        self.entropy_trackers[mode].update(out.entropy, out.ce, out.weights, targets, weighted_by=weighted_by,
                                           valid=valid)
        return (loss, {"loss": loss}) if return_outputs else loss

    def _graphed_decoder(self, causal_lm: Any) -> Any:
        """The CUDA-graph decoder when the plan chose it and the model allows it (else None, said once)."""
        if self.decoder != "graphs":
            return None
        if self._graphed is None:
            from finetune_mcp.train.decoder_graphs import GraphedDecoder, unsupported_reason

            reason = unsupported_reason(causal_lm)
            if reason:
                import logging

                logging.getLogger("finetune_mcp.run").info("step plan: decoder runs eagerly: %s", reason)
                self.decoder = "model"
                return None
            self._graphed = GraphedDecoder.for_model(causal_lm)
        return self._graphed

    @property
    def _reduce_sum(self):
        """Sum a list of floats over ranks (None on one process): entropy metrics cover every rank's tokens."""
        if self.accelerator.num_processes == 1:
            return None

        def reduce_sum(values: list[float]) -> list[float]:
            tensor = torch.tensor(values, dtype=torch.float64, device=self.accelerator.device)
            return self.accelerator.reduce(tensor, reduction="sum").tolist()

        return reduce_sum

    def _set_signature_columns_if_needed(self):
        # Why: the Trainer drops dataset columns the model's forward does not take; keep the weights.
        super()._set_signature_columns_if_needed()
        if EXAMPLE_WEIGHT not in self._signature_columns:
            self._signature_columns.append(EXAMPLE_WEIGHT)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Why: the entropy window closes exactly when TRL logs, so its means cover the same steps.
        if "eval_loss" in logs:
            eval_tracker = self.entropy_trackers["eval"]
            if eval_tracker.threshold is None:  # one threshold per run: shares compare across train and eval
                eval_tracker.threshold = self.entropy_trackers["train"].threshold
            metrics, _ = eval_tracker.flush(self._reduce_sum)
            logs.update({f"eval_{k}": v for k, v in metrics.items() if k in ("entropy_mean", "high_entropy_share")})
        elif "loss" in logs:
            metrics, window = self.entropy_trackers["train"].flush(self._reduce_sum)
            logs.update(metrics)
            self.last_entropy_window = window
        super().log(logs, start_time)
