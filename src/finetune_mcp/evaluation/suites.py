"""Evaluation suites: the base model and the fine-tune, side by side, on the same rows.

  heldout     the job's held-out rows (the validation split training never saw): did it learn?
  forgetting  the general set (`general_set`): did it keep what the data did not teach?

Each suite scores both models with one load: the LoRA adapter is switched off for the base
(`disable_adapter`), on for the tuned model. Per suite:
  loss, token_accuracy   teacher-forced over every row's trained tokens (`train.sft.scoring`); the
                         difference tuned − base with a paired bootstrap interval over rows
  exact_match,           greedy answers (`generate.generate`, as sample_model renders prompts) to
  normalized_match       the rows with a reference answer (conversations ending with the assistant's
                         turn), at most `generation_examples` of them; each rate with its Wilson
                         interval, the difference with a paired bootstrap interval
A difference is called better or worse only when its interval leaves out 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from finetune_mcp.enhance.answer_check import ReferenceChecker
from finetune_mcp.evaluation.intervals import paired_bootstrap, wilson
from finetune_mcp.train.sft.scoring import RowScore, pool

SUITES = ("heldout", "forgetting")
HIGHER_IS_BETTER = {"loss": False, "token_accuracy": True, "exact_match": True, "normalized_match": True}
SAMPLES_KEPT = 5


@dataclass(frozen=True)
class SuiteRows:
    name: str
    rows: list[dict[str, Any]]
    source: str


def checkable(row: dict[str, Any]) -> tuple[list[dict[str, str]], str] | None:
    """(the conversation before the answer, the reference answer) for a conversation that ends with a
    non-empty assistant turn; None for other rows (plain text, prompt/completion, ranking)."""
    messages = row.get("messages")
    if not isinstance(messages, list) or len(messages) < 2:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant" or not str(last.get("content") or "").strip():
        return None
    return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], str(last["content"])


@contextlib.contextmanager
def adapter_off(model: Any) -> Iterator[None]:
    """The base model under a PEFT model: its adapter disabled for the duration."""
    with model.disable_adapter():
        yield


def run_suite(suite: SuiteRows, model: Any, tokenizer: Any, *, max_seq_length: int, assistant_only_loss: bool,
              batch_size: int, generation_examples: int, max_new_tokens: int,
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Base and tuned on the suite's rows: each metric's values, difference, intervals and verdict."""
    from finetune_mcp.model.generate import generate
    from finetune_mcp.model.generation_settings import GenerationSettings
    from finetune_mcp.train.sft.scoring import score_rows

    questions = [q for q in map(checkable, suite.rows) if q is not None][:generation_examples]
    settings = GenerationSettings(max_new_tokens=max_new_tokens, batch_size=min(batch_size, 64), alternatives=0)
    scored: dict[str, list[RowScore]] = {}
    replies: dict[str, list[str]] = {}
    for label in ("base", "tuned"):
        with adapter_off(model) if label == "base" else contextlib.nullcontext():
            scored[label] = score_rows(model, tokenizer, suite.rows, max_seq_length=max_seq_length,
                                       assistant_only_loss=assistant_only_loss, batch_size=batch_size)
            if progress is not None:
                progress(f"{suite.name}: {label} scored")
            replies[label] = [g.text for g in generate(model, tokenizer, [q for q, _ in questions], settings)] \
                if questions else []
            if progress is not None:
                progress(f"{suite.name}: {label} answered")
    metrics = token_comparison(scored["base"], scored["tuned"])
    references = [ref for _, ref in questions]
    if references:
        metrics.update(match_comparison(replies["base"], replies["tuned"], references))
    samples = [{"prompt": q[-1]["content"], "reference": ref, "base": b, "tuned": t}
               for (q, ref), b, t in zip(questions[:SAMPLES_KEPT], replies["base"], replies["tuned"], strict=False)]
    return {"suite": suite.name, "source": suite.source, "rows": len(suite.rows), "answered": len(references),
            "metrics": metrics, "samples": samples, "summary": summarize(suite.name, metrics)}


def token_comparison(base: list[RowScore], tuned: list[RowScore]) -> dict[str, dict[str, Any]]:
    """loss and token_accuracy pooled over tokens, their difference, and its interval over rows (each
    row's tokens weigh as they do in the pooled figure)."""
    pooled = {"base": pool(base), "tuned": pool(tuned)}
    tokens = [b.tokens for b in base]
    out = {}
    for name, per_row in (("loss", lambda s: s.ce), ("token_accuracy", lambda s: s.correct)):
        diffs = [per_row(t) - per_row(b) for b, t in zip(base, tuned, strict=True)]
        out[name] = _compare(name, pooled["base"][name], pooled["tuned"][name],
                             paired_bootstrap(diffs, weights=tokens))
    return out


def match_comparison(base: list[str], tuned: list[str], references: list[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, mode in (("exact_match", "exact"), ("normalized_match", "normalized")):
        checker = ReferenceChecker(mode)
        hits = {label: [int(checker.check(reply, ref).correct) for reply, ref in zip(replies, references, strict=True)]
                for label, replies in (("base", base), ("tuned", tuned))}
        n = len(references)
        entry = _compare(name, sum(hits["base"]) / n, sum(hits["tuned"]) / n,
                         paired_bootstrap([t - b for b, t in zip(hits["base"], hits["tuned"], strict=True)]))
        entry.update(base_interval=wilson(sum(hits["base"]), n), tuned_interval=wilson(sum(hits["tuned"]), n), n=n)
        out[name] = entry
    return out


def _compare(name: str, base: float, tuned: float, interval: tuple[float, float] | None) -> dict[str, Any]:
    higher = HIGHER_IS_BETTER[name]
    if interval is None or interval[0] <= 0 <= interval[1]:
        verdict = "no clear difference"
    else:
        verdict = "better" if (interval[0] > 0) == higher else "worse"
    return {"base": base, "tuned": tuned, "delta": tuned - base, "interval": interval, "verdict": verdict,
            "higher_is_better": higher}


def summarize(suite: str, metrics: dict[str, dict[str, Any]]) -> str:
    """One sentence a reader can act on."""
    worse = [n for n, m in metrics.items() if m["verdict"] == "worse"]
    better = [n for n, m in metrics.items() if m["verdict"] == "better"]
    if suite == "forgetting":
        if worse:
            return f"forgetting measured: the fine-tune is worse than its base on the general set in {', '.join(worse)}"
        return "no forgetting measured on the general set (no interval of a difference shows the fine-tune worse)"
    if better and not worse:
        return f"the fine-tune is better than its base on the held-out rows in {', '.join(better)}"
    if worse:
        return f"the fine-tune is worse than its base on the held-out rows in {', '.join(worse)}"
    return "no clear difference between the fine-tune and its base on the held-out rows"


def tagged(result: dict[str, Any]) -> dict[str, float]:
    """get_job's metrics of one suite: eval/<suite>/<metric>/{base,tuned,delta}."""
    out = {}
    for name, entry in result["metrics"].items():
        for part in ("base", "tuned", "delta"):
            out[f"eval/{result['suite']}/{name}/{part}"] = entry[part]
    return out
