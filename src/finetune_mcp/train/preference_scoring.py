"""How well a model prefers the chosen reply: the held-out metrics of DPO, KTO and ORPO.

For each row the summed log-probability of the reply's tokens given the prompt, rendered as TRL
renders it (a message list through the chat template, a string prompt + reply as they are):
  pref_accuracy  paired rows: share of pairs with log p(chosen) > log p(rejected); unpaired (KTO)
                 rows: the chance that a desirable row scores above an undesirable one (AUC)
  logp_margin    mean log p(chosen / desirable) − mean log p(rejected / undesirable)
  logp_chosen, logp_rejected   the two means
Sums, not per-token means, as DPO compares them. Runs in the worker (torch inside the functions).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

BATCH_SIZE = 16


def render(tokenizer: Any, prompt: Any, reply: Any) -> tuple[str, str]:
    """(prompt text, reply text) as the trainer sees them; the reply text starts where the prompt ends."""
    if isinstance(prompt, list):
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(prompt + reply, tokenize=False)
        return head, full[len(head):] if full.startswith(head) else reply[-1]["content"]
    return prompt, reply


def reply_logps(model: Any, tokenizer: Any, pairs: list[tuple[Any, Any]], max_length: int,
                on_batch: Callable[[int, int], None] | None = None) -> list[float]:
    """Σ log p(reply token) for each (prompt, reply), cut to `max_length` tokens (the end goes)."""
    import torch

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(pairs), BATCH_SIZE):
        seqs, starts = [], []
        for prompt, reply in pairs[start:start + BATCH_SIZE]:
            head, tail = render(tokenizer, prompt, reply)
            head_ids = tokenizer(head, add_special_tokens=False).input_ids
            ids = (head_ids + tokenizer(tail, add_special_tokens=False).input_ids)[:max_length]
            seqs.append(ids)
            starts.append(min(len(head_ids), len(ids) - 1))
        width = max(map(len, seqs))
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
        attention = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        with torch.no_grad():
            logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)  # [B, T-1]
        for row, (seq, first) in enumerate(zip(seqs, starts, strict=True)):
            out.append(logp[row, max(first - 1, 0):len(seq) - 1].sum().item())
        if on_batch:
            on_batch(min(start + BATCH_SIZE, len(pairs)), len(pairs))
    return out


def preference_metrics(model: Any, tokenizer: Any, rows: list[dict[str, Any]], max_length: int,
                       on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """The module docstring's metrics on normalised preference rows (paired or unpaired)."""
    was_training = model.training
    model.eval()
    try:
        if all("chosen" in r for r in rows):
            chosen = reply_logps(model, tokenizer, [(r["prompt"], r["chosen"]) for r in rows], max_length)
            rejected = reply_logps(model, tokenizer, [(r["prompt"], r["rejected"]) for r in rows], max_length,
                                   on_batch)
            accuracy = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(rows)
        else:
            scores = reply_logps(model, tokenizer, [(r["prompt"], r["completion"]) for r in rows], max_length,
                                 on_batch)
            chosen = [s for s, r in zip(scores, rows, strict=True) if r["label"]]
            rejected = [s for s, r in zip(scores, rows, strict=True) if not r["label"]]
            accuracy = _auc(chosen, rejected)
    finally:
        model.train(was_training)
    mean_c = sum(chosen) / len(chosen) if chosen else float("nan")
    mean_r = sum(rejected) / len(rejected) if rejected else float("nan")
    return {"pref_accuracy": accuracy, "logp_margin": mean_c - mean_r, "logp_chosen": mean_c,
            "logp_rejected": mean_r}


def _auc(good: list[float], bad: list[float]) -> float:
    if not good or not bad:
        return float("nan")
    wins = sum((g > b) + 0.5 * (g == b) for g in good for b in bad)
    return wins / (len(good) * len(bad))


def evaluate_rows(spec: Any, model: Any, tokenizer: Any, rows: list[dict[str, Any]],
                  progress: Callable[[int, int], None]) -> tuple[dict[str, float], dict[str, float], dict[str, Any]]:
    """The preference methods' `evaluate` hook: the asked metrics, tagged eval/<name>."""
    values = preference_metrics(model, tokenizer, rows, spec.max_seq_length, progress)
    asked = {k: values[k] for k in spec.metrics}
    return asked, {f"eval/{k}": v for k, v in asked.items()}, {"rows_scored": len(rows)}


def score_heldout_rows(model: Any, tokenizer: Any, rows: list[dict[str, Any]],
                       spec: Any) -> tuple[dict[str, float], dict[str, Any]]:
    """The preference methods' `score_heldout` hook."""
    return preference_metrics(model, tokenizer, rows, spec.max_seq_length), {"rows_scored": len(rows)}
