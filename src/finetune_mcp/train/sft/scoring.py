"""How well a model predicts the trained tokens of SFT rows, scored the way training's eval loss is.

`score_rows` gives each example's CE sum, entropy sum, correct argmax count and token count, so an
evaluation suite can pair base and tuned example by example (a bootstrap over rows); `score_examples`
pools them into what `evaluate_model` and experiments report (through the method's hooks): loss
(mean CE per trained token, as training's eval loss, unweighted), perplexity (its exp), entropy
(mean predictive entropy, nats) and token_accuracy (share of trained tokens whose most likely token is the target). The fused
kernel computes CE and entropy without N × V logits; the argmax goes through the head in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from finetune_mcp.errors import DatasetError

ARGMAX_CHUNK = 1024  # tokens per lm_head product when finding the argmax: [1024, V] logits, 0.3 GB at V = 152k bf16


@dataclass(frozen=True)
class RowScore:
    """One example's sums over its trained tokens."""

    ce: float
    entropy: float
    correct: int
    tokens: int

    @property
    def loss(self) -> float | None:
        return self.ce / self.tokens if self.tokens else None


def score_rows(model: Any, tokenizer: Any, examples: list[dict[str, Any]], *, max_seq_length: int,
               assistant_only_loss: bool = True, batch_size: int = 16,
               on_batch: Callable[[int, int], None] | None = None) -> list[RowScore]:
    """One `RowScore` per example, in order (an example with no trained token scores 0 tokens)."""
    import torch

    from finetune_mcp.data.chat_tokens import tokenize_examples
    from finetune_mcp.kernels import linear_entropy_ce
    from finetune_mcp.train.padding import pad_right
    from finetune_mcp.train.sft.trainer import IGNORE_INDEX, shift_labels, unwrap_causal_lm

    dataset = tokenize_examples(examples, tokenizer, max_seq_length, assistant_only_loss)
    causal_lm = unwrap_causal_lm(model)
    device = next(causal_lm.parameters()).device
    head = causal_lm.lm_head
    scores: list[RowScore] = []
    batches = math.ceil(len(dataset) / batch_size)
    with torch.no_grad():
        for index, start in enumerate(range(0, len(dataset), batch_size), 1):
            rows = dataset[start : start + batch_size]
            ids, mask = pad_right(rows["input_ids"], tokenizer.pad_token_id or 0, device)
            labels, _ = pad_right(rows["labels"], IGNORE_INDEX, device)
            hidden = causal_lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            targets = shift_labels(labels, None)  # [B, T-1]
            valid = targets != IGNORE_INDEX
            row_of = valid.nonzero()[:, 0]  # [N]: the example each scored token belongs to
            scored, wanted = hidden[:, :-1][valid], targets[valid]  # [N, d], [N]
            out = linear_entropy_ce(scored, head.weight, wanted, weight_fn=None, bias=head.bias)
            hits = torch.zeros_like(wanted)
            for chunk in range(0, scored.shape[0], ARGMAX_CHUNK):  # never [N, V] logits at once
                predicted = head(scored[chunk : chunk + ARGMAX_CHUNK]).argmax(-1)  # [n]
                hits[chunk : chunk + ARGMAX_CHUNK] = predicted == wanted[chunk : chunk + ARGMAX_CHUNK]
            count = len(rows["input_ids"])
            sums = [torch.zeros(count, dtype=torch.float64, device=device).index_add_(0, row_of, values.double())
                    for values in (out.ce.detach(), out.entropy.detach(), hits, torch.ones_like(wanted))]
            scores += [RowScore(ce=float(c), entropy=float(e), correct=int(h), tokens=int(n))
                       for c, e, h, n in zip(*(s.tolist() for s in sums), strict=True)]
            if on_batch is not None:
                on_batch(index, batches)
    return scores


def pool(scores: list[RowScore]) -> dict[str, float]:
    """loss, perplexity, entropy, token_accuracy over every scored token, and `tokens`."""
    tokens = sum(s.tokens for s in scores)
    if not tokens:
        raise DatasetError("no example has a token to score (every label is masked); check the data's assistant "
                           "turns or set assistant_only_loss=false")
    loss = sum(s.ce for s in scores) / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "entropy": sum(s.entropy for s in scores) / tokens,
            "token_accuracy": sum(s.correct for s in scores) / tokens, "tokens": tokens}


def score_examples(model: Any, tokenizer: Any, examples: list[dict[str, Any]], *, max_seq_length: int,
                   assistant_only_loss: bool = True, batch_size: int = 16,
                   on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """The pooled metrics of `model` on `examples` (shared by `evaluate_model` and experiments, so both
    score the same way); `tokens` is how many tokens were scored."""
    return pool(score_rows(model, tokenizer, examples, max_seq_length=max_seq_length,
                           assistant_only_loss=assistant_only_loss, batch_size=batch_size, on_batch=on_batch))
