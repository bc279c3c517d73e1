"""A training method's implementation, found through its registry entry (`config.methods`).

The descriptor names the method's folder (`implementation`, a dotted module path); that module
defines the hooks below as plain functions. Callers in the worker ask here for the method of a
config and call a hook; nothing outside a method's own folder branches on its name.

Hooks (each method module defines all of them):
    train(training: TrainingRun) -> dict                    the `train` kind's body for the method
    evaluate(spec, model, tokenizer, rows, progress)        evaluate_model's scoring of its rows:
        -> (values, tagged_metrics, extra)                  metrics, their event/TensorBoard tags, extra result entries
    score_heldout(model, tokenizer, rows, spec)             an experiment run's held-out metrics
        -> (metrics, extra)                                 (named as the descriptor's `heldout_metrics`)
Optional:
    check_start(config) -> list[str]                        the method's own start check in the server
                                                            (no torch): a FinetuneError, or warnings
"""

from __future__ import annotations

import importlib
from functools import cache
from types import ModuleType
from typing import Any

from finetune_mcp.config.methods import TrainingMethod, get_method

HOOKS = ("train", "evaluate", "score_heldout")


@cache
def implementation(method: str | TrainingMethod) -> ModuleType:
    """The module that implements `method` (a name or a descriptor), checked to define every hook."""
    descriptor = method if isinstance(method, TrainingMethod) else get_method(method)
    module = importlib.import_module(descriptor.implementation)
    missing = [hook for hook in HOOKS if not callable(getattr(module, hook, None))]
    if missing:
        raise TypeError(f"{descriptor.implementation} (method {descriptor.name!r}) lacks the hooks {missing}")
    return module


def check_method_start(config: Any) -> list[str]:
    """The method's own start check (its optional `check_start` hook), run by the server after the
    model and data checks: a FinetuneError that says what to fix, or the warnings to return."""
    check = getattr(implementation(config.training_method), "check_start", None)
    return list(check(config)) if check is not None else []
