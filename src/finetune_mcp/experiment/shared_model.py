"""The model loader an experiment hands to `run_training`: the base model is loaded once and every
later run gets the same model with its LoRA weights re-initialised from the run's own seed.

Why: a fresh load per run costs the model's read from disk (and on a GPU the transfer, and with
Unsloth its patching) every time; re-initialising LoRA costs milliseconds. The runs of an
experiment share every model setting (arms differ only in the loss), so sharing is safe; the key
check below refuses to share anyway if a setting that shapes the model differs. Every run, the
first included, starts from `reset_lora(model, seed)`, so a run's starting point depends on its
seed and not on the runs before it. `share=False` loads the model for every run, as separate
jobs would (the benchmark measures both).
"""

from __future__ import annotations

import gc
import logging
import time
from typing import TYPE_CHECKING, Any

from finetune_mcp.config import EnhancedTrainingConfig

if TYPE_CHECKING:
    from finetune_mcp.model.loading import LoadedModel

log = logging.getLogger("finetune_mcp.experiment")

# Settings that shape the loaded model (everything else may differ between runs)
_MODEL_FIELDS = ("model", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "load_in_4bit",
                 "max_seq_length", "gradient_checkpointing")


class SharedBaseModel:
    """A `train.workflow.ModelLoader` that keeps the model between runs; `last` says what the last
    call did (`model_s`: seconds spent, `model_reused`: whether the model was kept)."""

    def __init__(self, share: bool = True) -> None:
        self.share = share
        self.loaded: LoadedModel | None = None
        self._key: tuple[Any, ...] | None = None
        self.last: dict[str, Any] = {}

    def __call__(self, config: EnhancedTrainingConfig, backend: str) -> LoadedModel:
        from finetune_mcp.train.model import load_with_lora, reset_lora

        started = time.perf_counter()
        key = (backend, *(str(getattr(config, name)) for name in _MODEL_FIELDS))
        reused = self.share and self.loaded is not None and key == self._key
        if not reused:
            self.release()
            self.loaded = load_with_lora(config, backend)
            self._key = key
        assert self.loaded is not None
        layers = reset_lora(self.loaded.model, config.seed)
        self.last = {"model_s": round(time.perf_counter() - started, 4), "model_reused": reused}
        log.info("%s the base model; %d LoRA layers initialised from seed %d (%.2f s)",
                 "kept" if reused else "loaded", layers, config.seed, self.last["model_s"])
        return self.loaded

    def release(self) -> None:
        """Drop the model (and the memory a finished trainer left behind). The run froze the heap
        (`train.workflow.freeze_heap`); unfreeze it so the dropped model's cycles can be collected."""
        self.loaded = None
        gc.unfreeze()
        free_memory()


def free_memory() -> None:
    """Between runs: the finished trainer (optimizer state, callbacks that reference it) is garbage in
    reference cycles; collect it now, and hand the CUDA cache back, before the next run allocates."""
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
