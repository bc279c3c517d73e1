"""The Qwen3-Reranker format: prompt, answer tokens, training rows and scoring.

Qwen3-Reranker judges one (query, document) pair at a time. The prompt is fixed ChatML text (the
model card's `format_instruction`, prefix and suffix), the score is P("yes") against P("no") at
the last position, where the assistant's answer would start:

    <|im_start|>system
    Judge whether the Document meets the requirements based on the Query and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>
    <|im_start|>user
    <Instruct>: {instruction}
    <Query>: {query}
    <Document>: {doc}<|im_end|>
    <|im_start|>assistant
    <think>

    </think>

    score = exp(z_yes) / (exp(z_yes) + exp(z_no)) = sigmoid(z_yes − z_no)

Prefix, body and suffix are tokenised separately and concatenated, as the reference code does; a
body that does not fit `max_seq_length` loses its end (the document's tail), never the suffix.

The *answer distribution* is the softmax over (no, yes) at that position: training and scoring use
only those two rows of `lm_head` (full-vocabulary logits are never built), and its entropy (in
[0, log 2]) is what entropy weighting and the entropy metrics see. For a tokenizer where "yes" is
several tokens (the tiny test tokenizer) the first token stands for the word.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from finetune_mcp.errors import ConfigError, ModelError
from finetune_mcp.train.padding import pad_right

if TYPE_CHECKING:
    import datasets
    import torch

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
IGNORE_INDEX = -100
MIN_BODY_TOKENS = 16


def format_body(query: str, doc: str, instruction: str) -> str:
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"


def answer_token_ids(tokenizer: Any) -> tuple[int, int]:
    """(no, yes) token ids: the vocabulary's own "yes"/"no" tokens (Qwen3), else the first token of
    each word's encoding."""
    ids = []
    for word in ("no", "yes"):
        token_id = tokenizer.convert_tokens_to_ids(word)
        if not isinstance(token_id, int) or token_id == tokenizer.unk_token_id:
            encoded = tokenizer.encode(word, add_special_tokens=False)
            token_id = encoded[0] if encoded else None
        if token_id is None:
            raise ModelError(f"the tokenizer cannot encode {word!r}; a Qwen3-Reranker-style model needs it")
        ids.append(token_id)
    if ids[0] == ids[1]:
        raise ModelError("'yes' and 'no' start with the same token in this tokenizer, so P(yes) vs P(no) cannot be "
                         "read from one position; use a tokenizer that tells them apart (any Qwen3 model does)")
    return ids[0], ids[1]


class RerankPrompt:
    """Token ids of the reranker prompt for (query, document, instruction), within `max_length`."""

    def __init__(self, tokenizer: Any, max_length: int, default_instruction: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.default_instruction = default_instruction or DEFAULT_INSTRUCTION
        self.prefix_ids = tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.body_budget = max_length - len(self.prefix_ids) - len(self.suffix_ids)
        if self.body_budget < MIN_BODY_TOKENS:
            raise ConfigError(
                f"max_seq_length={max_length} leaves {self.body_budget} tokens for the query and document after the "
                f"reranker prompt's {len(self.prefix_ids) + len(self.suffix_ids)} fixed tokens; raise max_seq_length "
                f"to at least {len(self.prefix_ids) + len(self.suffix_ids) + 64}",
                field="max_seq_length",
            )
        self.no_id, self.yes_id = answer_token_ids(tokenizer)
        if tokenizer.convert_tokens_to_ids("<|im_start|>") in (None, tokenizer.unk_token_id):
            log.warning("the tokenizer has no <|im_start|> token: the Qwen3-Reranker prompt is tokenised as plain text")
        self.truncated = 0

    def encode_many(self, pairs: list[tuple[str, str, str | None]]) -> list[list[int]]:
        """Prompt ids for each (query, document, instruction); counts truncated bodies in `truncated`."""
        bodies = [format_body(q, d, i or self.default_instruction) for q, d, i in pairs]
        encoded = self.tokenizer(bodies, add_special_tokens=False)["input_ids"] if bodies else []
        out = []
        for body in encoded:
            if len(body) > self.body_budget:
                self.truncated += 1
                body = body[: self.body_budget]
            out.append([*self.prefix_ids, *body, *self.suffix_ids])
        return out

    def encode_groups(self, groups: list[dict[str, Any]]) -> list[list[list[int]]]:
        """Per group, per document: prompt ids (one tokenizer call for all pairs)."""
        pairs = [(g["query"], doc, g.get("instruction")) for g in groups for doc in g["docs"]]
        flat = iter(self.encode_many(pairs))
        return [[next(flat) for _ in g["docs"]] for g in groups]


def training_rows(
    groups: list[dict[str, Any]], prompt: RerankPrompt, loss: str, group_size: int, seed: int
) -> datasets.Dataset:
    """Rows for `RerankTrainer`: `input_ids` (a list of prompts) and `labels` (one per prompt).

    pointwise: one prompt a row, label 1 (yes: relevant) or 0 (no).
    listwise: per relevant document, a group of it and up to `group_size` − 1 less relevant
    documents of the same query (a seeded sample); label 1 on the relevant one, −100 on the others
    (so the Trainer's item count is the number of groups). Queries without a less relevant
    document form no listwise group.
    """
    import datasets

    encoded = prompt.encode_groups(groups)
    rng = random.Random(seed)
    ids: list[list[list[int]]] = []
    labels: list[list[int]] = []
    for group, prompts in zip(groups, encoded, strict=True):
        relevance = group["relevance"]
        if loss == "pointwise":
            for pair_ids, rel in zip(prompts, relevance, strict=True):
                ids.append([pair_ids])
                labels.append([1 if rel > 0 else 0])
            continue
        for pos, rel in enumerate(relevance):
            if rel <= 0:
                continue
            lower = [j for j, other in enumerate(relevance) if other < rel]
            if not lower:
                continue
            rng.shuffle(lower)
            members = [pos, *lower[: group_size - 1]]
            ids.append([prompts[j] for j in members])
            labels.append([1] + [IGNORE_INDEX] * (len(members) - 1))
    if not ids:
        raise ConfigError(
            "no listwise group can be formed: every query needs a relevant document and a less relevant one; "
            "add negatives or use rerank_loss='pointwise'",
            field="rerank_loss",
        )
    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Sequence(datasets.Value("int32"))),
        "labels": datasets.Sequence(datasets.Value("int32")),
    })
    return datasets.Dataset.from_dict({"input_ids": ids, "labels": labels}, features=features)


@dataclass
class AnswerHead:
    """The two lm_head rows that make the answer distribution: [no, yes]."""

    weight: torch.Tensor  # [2, d]
    bias: torch.Tensor | None  # [2] or None

    @classmethod
    def of(cls, causal_lm: Any, no_id: int, yes_id: int) -> AnswerHead:
        import torch

        lm_head = causal_lm.lm_head
        index = torch.tensor([no_id, yes_id], device=lm_head.weight.device)
        bias = lm_head.bias.index_select(0, index) if getattr(lm_head, "bias", None) is not None else None
        return cls(lm_head.weight.index_select(0, index), bias)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """[n, 2] fp32 answer logits from last-position hidden states [n, d]."""
        z = hidden.float() @ self.weight.float().t()
        return z + self.bias.float() if self.bias is not None else z


def last_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each right-padded sequence's last real token: where the answer is predicted."""
    return attention_mask.sum(dim=1) - 1


def score_groups(
    model: Any, prompt: RerankPrompt, groups: list[dict[str, Any]], batch_size: int = 16,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[float]]:
    """P(yes) for every document of every group, in the groups' order (the model is put in eval mode
    for the call and restored). Pairs go in batches of similar length to waste little padding;
    `on_batch(done, total)` is called after each batch (progress events)."""
    import torch

    from finetune_mcp.train.sft.trainer import unwrap_causal_lm

    encoded = prompt.encode_groups(groups)
    flat = [(gi, di, ids) for gi, prompts in enumerate(encoded) for di, ids in enumerate(prompts)]
    flat.sort(key=lambda item: len(item[2]))
    causal_lm = unwrap_causal_lm(model)
    device = next(causal_lm.parameters()).device
    head = AnswerHead.of(causal_lm, prompt.no_id, prompt.yes_id)
    pad = prompt.tokenizer.pad_token_id or 0
    scores: list[list[float]] = [[0.0] * len(g["docs"]) for g in groups]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(flat), batch_size):
                batch = flat[start : start + batch_size]
                input_ids, mask = pad_right([ids for _, _, ids in batch], pad, device)
                hidden = causal_lm.model(input_ids=input_ids, attention_mask=mask, use_cache=False).last_hidden_state
                last = hidden[torch.arange(len(batch), device=device), last_positions(mask)]
                p_yes = torch.softmax(head.logits(last), dim=-1)[:, 1].tolist()
                for (gi, di, _), p in zip(batch, p_yes, strict=True):
                    scores[gi][di] = p
                if on_batch is not None:
                    on_batch(start // batch_size + 1, -(-len(flat) // batch_size))
    finally:
        model.train(was_training)
    return scores
