"""How well a model predicts the trained tokens of SFT rows: held-out CE, perplexity, entropy and
token accuracy, scored the way training's eval loss is. `evaluate_model` and experiments both call
`score_examples` (through the method's hooks), so they score the same way."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from finetune_mcp.errors import DatasetError

ARGMAX_CHUNK = 1024  # tokens per lm_head product when finding the argmax: [1024, V] logits, 0.3 GB at V = 152k bf16


def score_examples(model: Any, tokenizer: Any, examples: list[dict[str, Any]], *, max_seq_length: int,
                   assistant_only_loss: bool = True, batch_size: int = 16,
                   on_batch: Callable[[int, int], None] | None = None) -> dict[str, float]:
    """Mean CE per trained token (as training's eval loss, unweighted), its exp (perplexity), the mean
    predictive entropy and the token accuracy (argmax = target) of `model` on normalised examples,
    over the tokens training would put loss on. Shared by `evaluate_model` and experiments, so both
    score the same way. `tokens` is how many tokens were scored."""
    import torch

    from finetune_mcp.data.chat_tokens import tokenize_examples
    from finetune_mcp.kernels import linear_entropy_ce
    from finetune_mcp.train.padding import pad_right
    from finetune_mcp.train.sft.trainer import IGNORE_INDEX, shift_labels, unwrap_causal_lm

    dataset = tokenize_examples(examples, tokenizer, max_seq_length, assistant_only_loss)
    causal_lm = unwrap_causal_lm(model)
    device = next(causal_lm.parameters()).device
    head = causal_lm.lm_head
    ce_sum = entropy_sum = 0.0
    tokens = correct = 0
    batches = math.ceil(len(dataset) / batch_size)
    with torch.no_grad():
        for index, start in enumerate(range(0, len(dataset), batch_size), 1):
            rows = dataset[start : start + batch_size]
            ids, mask = pad_right(rows["input_ids"], tokenizer.pad_token_id or 0, device)
            labels, _ = pad_right(rows["labels"], IGNORE_INDEX, device)
            hidden = causal_lm.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            targets = shift_labels(labels, None).reshape(-1)
            valid = targets != IGNORE_INDEX
            scored, wanted = hidden[:, :-1].reshape(-1, hidden.shape[-1])[valid], targets[valid]  # [N, d], [N]
            out = linear_entropy_ce(scored, head.weight, wanted, weight_fn=None, bias=head.bias)
            ce_sum += float(out.ce.sum())
            entropy_sum += float(out.entropy.sum())
            for chunk in range(0, scored.shape[0], ARGMAX_CHUNK):  # never [N, V] logits at once
                predicted = head(scored[chunk : chunk + ARGMAX_CHUNK]).argmax(-1)  # [n]
                correct += int((predicted == wanted[chunk : chunk + ARGMAX_CHUNK]).sum())
            tokens += int(valid.sum())
            if on_batch is not None:
                on_batch(index, batches)
    if not tokens:
        raise DatasetError("no example has a token to score (every label is masked); check the data's assistant "
                           "turns or set assistant_only_loss=false")
    loss = ce_sum / tokens
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "entropy": entropy_sum / tokens,
            "token_accuracy": correct / tokens, "tokens": tokens}
