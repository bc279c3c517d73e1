"""Host work the Trainer repeats at every step, done once where its answer cannot change during a run.

On a launch-bound step (a small model, short rows, CUDA graphs) the GPU waits for the host, so each
millisecond of Python per step is a millisecond of step. For SmolLM2-135M's shape with LoRA on all
seven projections (2,559 modules, 753 parameters, 420 trainable) the transformers Trainer spent, per
step, on the 2-core CI machine: `model.train()` 6.2 ms (it walks every module, though nothing left
training mode), `num_parameters()` for the FLOP count 5.3 ms (it walks every parameter), and
`model.zero_grad()` 3.2 ms (every parameter, though only the LoRA ones ever get a gradient).

`LeanStepMixin` (for Trainer subclasses) keeps the answers the same and the cost constant:
- the FLOP count multiplies by a parameter count taken once (parameters do not change in a run);
- `model.train()` walks the modules only when the model is not known to be all in training mode:
  every mode change made through the model itself (`train(False)`, `eval()`) is seen and resets that;
- `model.zero_grad()` clears the trainable parameters only: a frozen one never gets a gradient.
"""

from __future__ import annotations

from typing import Any

MARK = "_finetune_mcp_lean"


def make_mode_switches_lean(model: Any) -> None:
    """Give `model` an O(1) `train()` while it is all in training mode and a `zero_grad()` over its
    trainable parameters; idempotent."""
    if getattr(model, MARK, False):
        return
    walk_train = model.train
    state = {"all_training": False}
    trainable = [p for p in model.parameters() if p.requires_grad]

    def train(mode: bool = True) -> Any:
        if mode and state["all_training"] and model.training:
            return model
        walk_train(mode)
        state["all_training"] = bool(mode)
        return model

    def zero_grad(set_to_none: bool = True) -> None:
        for param in trainable:
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            else:
                param.grad.detach_().zero_()

    # instance attributes: nn.Module.__setattr__ stores plain functions in the instance dict
    model.train = train
    model.zero_grad = zero_grad
    object.__setattr__(model, MARK, True)


class LeanStepMixin:
    """Put before the Trainer class in the bases: `class T(LeanStepMixin, SFTTrainer)`."""

    _flop_parameters: int | None = None

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """The Trainer's estimate (6 · tokens · non-embedding parameters), its parameter count taken once."""
        model = self.model  # type: ignore[attr-defined]
        main_input = getattr(model, "main_input_name", "input_ids")
        if main_input not in inputs or not hasattr(model, "num_parameters"):
            return 0
        if self._flop_parameters is None:
            self._flop_parameters = model.num_parameters(exclude_embeddings=True)
        return 6 * inputs[main_input].numel() * self._flop_parameters
