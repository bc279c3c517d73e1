"""Held-out evaluation of a just-trained model, the same rows for every run of the experiment.

The held-out rows are read once (`load_heldout`): `eval_dataset` whole, or the validation split
of `dataset` taken with the fixed `split_seed` every run uses. Each run is scored right after
training on the model still in memory (no reload), by the method's `score_heldout` hook
(`train/<method>/method.py`, what `evaluate_model` uses too):
  sft     eval_ce (mean unweighted CE per trained token), perplexity, token_accuracy (argmax =
          target on the trained tokens), entropy (mean predictive entropy, nats) — all from
          `train.sft.scoring.score_examples`; and, for a method that generates, when rows have a
          checkable answer (conversations whose last turn is the assistant's: that reply is the
          reference), exact_match and
          normalized_match of greedy replies (`model.generate.generate`) to the first
          `generation_examples` of them, judged as `enhance_dataset`'s reference checker does
  rerank  MRR@10, NDCG@10, Recall@5, accuracy on the held-out query groups (P(yes) ranking)
With a `retain_dataset` (methods scored by held-out CE: sft), the forgetting check: the retain rows
are read once too, the base model's CE on them is computed once per worker (the first run's model
with its LoRA adapter disabled, `Heldout.retain_base_ce`), and every run adds `retain_ce` (its CE on
them, by the same scorer) and `retain_ce_rise` (retain_ce − the base CE; positive = forgetting).
Runs in the worker (torch is imported inside the functions).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from finetune_mcp.enhance.answer_check import ReferenceChecker
from finetune_mcp.errors import DatasetError
from finetune_mcp.evaluation.suites import checkable
from finetune_mcp.experiment.spec import NO_RETAIN_ROWS, ExperimentSpec

if TYPE_CHECKING:
    from finetune_mcp.model.loading import LoadedModel

SAMPLES_KEPT = 5  # replies written to each run's heldout.json, for a reader to see what was judged


@dataclass
class Heldout:
    """The rows every run is scored on, and the checkable ones answered by generation."""

    rows: list[dict[str, Any]]
    source: str
    questions: list[tuple[list[dict[str, str]], str]] = field(default_factory=list)  # (conversation, reference)
    retain: list[dict[str, Any]] | None = None  # the retain rows (None: no forgetting check)
    retain_source: str = ""
    retain_base_ce: float | None = None  # the base model's CE on the retain rows, once per worker (`score_run`)

    def describe(self) -> dict[str, Any]:
        described = {"source": self.source, "rows": len(self.rows), "generated": len(self.questions),
                     "fingerprint": _fingerprint(self.rows)}
        if self.retain is not None:
            described["retain"] = {"source": self.retain_source, "rows": len(self.retain),
                                   "fingerprint": _fingerprint(self.retain), "base_ce": self.retain_base_ce}
        return described


def _fingerprint(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()[:16]


def load_heldout(spec: ExperimentSpec) -> Heldout:
    from finetune_mcp.data.loader import load_examples

    data = load_examples(spec.heldout_config())
    rows = data.train + data.validation if spec.eval_dataset else data.validation
    source = (f"all of {spec.eval_dataset}" if spec.eval_dataset else
              f"the validation split of {spec.dataset} ({spec.validation_split:.0%}, split seed {spec.data_split_seed})")
    questions = [q for q in map(checkable, rows) if q is not None] if spec.training_method.generates else []
    heldout = Heldout(rows=rows, source=source, questions=questions[: spec.generation_examples])
    retain = spec.retain_config()
    if retain is not None:
        read = load_examples(retain)
        heldout.retain, heldout.retain_source = read.train + read.validation, f"all of {spec.retain_dataset}"
        if not heldout.retain:  # a local file's rows were counted at start; a Hub dataset's only here
            raise DatasetError(NO_RETAIN_ROWS, path=spec.retain_dataset)
    return heldout


def score_run(loaded: LoadedModel, heldout: Heldout, spec: ExperimentSpec) -> tuple[dict[str, float], dict[str, Any]]:
    """The run's held-out metrics, and what else a reader needs (samples of the replies, timings)."""
    started = time.perf_counter()
    model, tokenizer = loaded.model, loaded.tokenizer
    model.eval()
    from finetune_mcp.train.methods import implementation

    hooks = implementation(spec.method)
    metrics, extra = hooks.score_heldout(model, tokenizer, heldout.rows, spec)
    if heldout.retain is not None:
        if heldout.retain_base_ce is None:  # the first run of this worker: the same model, adapter off
            with model.disable_adapter():
                heldout.retain_base_ce = retain_ce(hooks, model, tokenizer, heldout.retain, spec)
        metrics["retain_ce"] = retain_ce(hooks, model, tokenizer, heldout.retain, spec)
        metrics["retain_ce_rise"] = metrics["retain_ce"] - heldout.retain_base_ce
    if heldout.questions:  # only a method that generates has questions (`load_heldout`)
        replies = _greedy_replies(loaded, [q for q, _ in heldout.questions], spec.max_new_tokens)
        references = [ref for _, ref in heldout.questions]
        exact, normalized = ReferenceChecker("exact"), ReferenceChecker("normalized")
        metrics["exact_match"] = _share(exact, replies, references)
        metrics["normalized_match"] = _share(normalized, replies, references)
        extra["samples"] = [{"prompt": q[-1]["content"] if q else "", "reply": r, "reference": ref}
                            for (q, ref), r in zip(heldout.questions[:SAMPLES_KEPT], replies, strict=False)]
    extra["scoring_s"] = round(time.perf_counter() - started, 3)
    return metrics, extra


def retain_ce(hooks: Any, model: Any, tokenizer: Any, rows: list[dict[str, Any]], spec: ExperimentSpec) -> float:
    """The mean CE of `model` on the retain rows, by the method's own held-out scorer (its eval_ce)."""
    return float(hooks.score_heldout(model, tokenizer, rows, spec)[0]["eval_ce"])


def _share(checker: ReferenceChecker, replies: list[str], references: list[str]) -> float:
    return sum(checker.check(r, ref).correct for r, ref in zip(replies, references, strict=True)) / len(references)


def _greedy_replies(loaded: LoadedModel, conversations: list[list[dict[str, str]]], max_new_tokens: int) -> list[str]:
    from finetune_mcp.model.generate import generate
    from finetune_mcp.model.generation_settings import GenerationSettings

    # 64 prompts a batch: 90 short held-out answers one at a time took 26-30 s on an H100 for a 135M
    # model, one batch of them well under a second.
    settings = GenerationSettings(max_new_tokens=max_new_tokens, alternatives=0, batch_size=64)
    with _inference_mode(loaded):
        return [g.text.strip() for g in generate(loaded.model, loaded.tokenizer, conversations, settings)]


@contextlib.contextmanager
def _inference_mode(loaded: LoadedModel) -> Iterator[None]:
    """Unsloth generates through its own fast path only after `for_inference`, and must be switched
    back with `for_training` before the next run trains the same model; transformers needs nothing."""
    if loaded.backend != "unsloth":
        yield
        return
    from unsloth import FastLanguageModel

    FastLanguageModel.for_inference(loaded.model)
    try:
        yield
    finally:
        FastLanguageModel.for_training(loaded.model)
