"""The model card's ranking section for method="rerank" runs: metrics before and after training on the
held-out queries, weighted vs unweighted side by side with `compare_with`, and how to score.

`ranking_section(result, spec, other_result, labels)` is pure (result.json / spec.json dicts in,
markdown out); card.py puts it under "Ranking evaluation" when it returns text.
"""

from __future__ import annotations

from typing import Any

_NAMES = {"mrr": "MRR", "ndcg": "NDCG", "recall": "Recall", "precision": "Precision", "map": "MAP",
          "accuracy": "Accuracy (yes/no at 0.5)"}


def metric_label(name: str) -> str:
    kind, _, k = name.partition("@")
    return f"{_NAMES.get(kind, kind)}@{k}" if k else _NAMES.get(kind, kind)


def ranking_section(result: dict[str, Any], spec: dict[str, Any], other: dict[str, Any] | None = None,
                    labels: tuple[str, str] = ("this run", "other run")) -> str | None:
    """Markdown for a rerank run's ranking results; None for any other run."""
    ranking = result.get("ranking")
    if not ranking:
        return None
    before, after = ranking.get("before") or {}, ranking.get("after") or {}
    loss = ranking.get("loss", spec.get("rerank_loss", "pointwise"))
    how = ("pointwise: cross-entropy of P(yes) vs P(no) per (query, document)" if loss == "pointwise" else
           "listwise: softmax over the yes-vs-no log-odds of one query's documents, cross-entropy on the relevant one")
    parts = [
        f"A reranker in the Qwen3-Reranker format: each (query, document) pair is scored as P(\"yes\") against "
        f"P(\"no\") at the end of the fixed judge prompt, and a query's documents are ranked by that score. "
        f"Trained {how}. Instruction: \"{ranking.get('instruction', '')}\"."
    ]
    if not after:
        parts.append("No validation queries were held out, so no ranking metrics were measured.")
    else:
        parts.append(f"On the {ranking.get('num_queries')} held-out validation queries "
                     f"({ranking.get('num_documents')} documents; relevant = relevance > 0; ties ranked against "
                     "the relevant documents), with the base model (before) and the fine-tuned adapter (after):")
        rows = ["| Metric | Before training | After training | Change |", "|---|---|---|---|"]
        for name, value in after.items():
            old = before.get(name)
            change = f"{value - old:+.3f}" if old is not None else "—"
            rows.append(f"| {metric_label(name)} | {_num(old)} | {_num(value)} | {change} |")
        parts.append("\n".join(rows))
    theirs = (other or {}).get("ranking") or {}
    if after and theirs.get("after"):
        rows = [f"| Metric | {labels[0]} | {labels[1]} | Difference |", "|---|---|---|---|"]
        for name, value in after.items():
            b = theirs["after"].get(name)
            rows.append(f"| {metric_label(name)} (after) | {_num(value)} | {_num(b)} | "
                        f"{f'{value - b:+.3f}' if b is not None else '—'} |")
        same_data = theirs.get("num_queries") == ranking.get("num_queries")
        parts.append("Side by side with the compared run" + (" (same validation queries)" if same_data else
                                                             " (different validation queries: compare with care)")
                     + ":\n\n" + "\n".join(rows))
    parts.append("Scoring with the adapter (the prompt must be exactly this):\n\n```python\n"
                 + _snippet(spec, ranking) + "\n```")
    return "\n\n".join(parts)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def _snippet(spec: dict[str, Any], ranking: dict[str, Any]) -> str:
    base = spec.get("model", "<base model>")
    return f'''import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("<this adapter>")
model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained({base!r}), "<this adapter>").eval()
no_id, yes_id = {ranking.get("answer_tokens", {}).get("no")}, {ranking.get("answer_tokens", {}).get("yes")}
prefix = ('<|im_start|>system\\nJudge whether the Document meets the requirements based on the Query and the '
          'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\\n<|im_start|>user\\n')
suffix = "<|im_end|>\\n<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n"

def score(query, doc, instruction={ranking.get("instruction", "")!r}):
    text = prefix + f"<Instruct>: {{instruction}}\\n<Query>: {{query}}\\n<Document>: {{doc}}" + suffix
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        logits = model(**ids).logits[0, -1, [no_id, yes_id]]
    return torch.softmax(logits.float(), -1)[1].item()  # P(yes)'''
