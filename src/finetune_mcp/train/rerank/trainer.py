"""RerankTrainer: the EnhancedUnslothTrainer with the reranker's loss on the answer distribution.

Every prompt is scored at its last position from the decoder's hidden state and the two lm_head
rows of "no" and "yes" (`AnswerHead`); no full-vocabulary logits exist.

- pointwise: per prompt, cross-entropy of the (no, yes) softmax against the label (yes = relevant),
  through `linear_entropy_ce` with the 2-row head — the same entry point as SFT, so entropy
  weighting is w = f(H) with H the answer distribution's entropy and h = H / log 2.
- listwise: per group (one relevant document and less relevant ones of the same query), the
  scores are the log-odds s = z_yes − z_no (the quantity P(yes) = sigmoid(s) ranks by); loss =
  cross-entropy of softmax(s over the group) on the relevant document. Entropy weighting uses the
  group distribution's entropy, h = H / log(group size).
Both normalise by TRL's `num_items_in_batch` (prompts, or groups: the labels that are not −100).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from finetune_mcp.kernels import entropy_weights, linear_entropy_ce
from finetune_mcp.train.padding import pad_right
from finetune_mcp.train.rerank.prompt import IGNORE_INDEX, AnswerHead, last_positions
from finetune_mcp.train.sft.trainer import EnhancedUnslothTrainer, last_hidden_states, unwrap_causal_lm


@dataclass
class RerankCollator:
    """Flattens a batch of rows (each a list of prompts) into one right-padded [n, T] batch, with
    `labels` [n] and `group_index` [n] (which row each prompt came from)."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences, labels, groups = [], [], []
        for index, feature in enumerate(features):
            for ids, label in zip(feature["input_ids"], feature["labels"], strict=True):
                sequences.append(list(ids))
                labels.append(int(label))
                groups.append(index)
        width = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:  # tensor-core friendly shapes on the GPU
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids, mask = pad_right(sequences, self.pad_token_id, width=width)
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "labels": torch.tensor(labels, dtype=torch.long),
            "group_index": torch.tensor(groups, dtype=torch.long),
        }


class RerankTrainer(EnhancedUnslothTrainer):
    """The reranker's loss (see the module docstring); logging, entropy trackers and callbacks are
    the parent's."""

    def __init__(self, *args: Any, answer_ids: tuple[int, int], listwise: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.no_id, self.yes_id = answer_ids
        self.listwise = listwise

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        # Why: the Trainer (and Unsloth's patch of it) counts labels[..., 1:], the next-token
        # convention, which would drop one prompt per batch here: a reranker has one label per
        # prompt (pointwise) or per group (listwise), and counts those over the accumulated batches.
        batch_samples = []
        for _ in range(num_batches):
            try:
                batch_samples.append(next(epoch_iterator))
            except StopIteration:
                break
        count = sum(int((batch["labels"] != IGNORE_INDEX).sum()) for batch in batch_samples)
        num_items = torch.tensor(count, device=device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            num_items = self.accelerator.gather(num_items.reshape(1)).sum()
        return batch_samples, num_items

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Why not super(): the loss is on the answer distribution at one position per prompt.
        causal_lm = unwrap_causal_lm(model)
        mask = inputs["attention_mask"]
        hidden = last_hidden_states(model, causal_lm, {"input_ids": inputs["input_ids"], "attention_mask": mask})
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), last_positions(mask)]  # [n, d]
        head = AnswerHead.of(causal_lm, self.no_id, self.yes_id)
        mode = "train" if model.training else "eval"
        spec = self._weight_spec if mode == "train" else None  # eval reports plain CE (A/B arms compare)
        labels = inputs["labels"]
        if self.listwise:
            ce, entropy, sizes = self._listwise(head.logits(last), labels, inputs["group_index"])
            weights = _group_weights(entropy, -ce.detach(), sizes, spec)
            loss = (weights * ce).sum() / (num_items_in_batch if num_items_in_batch is not None else ce.numel())
            ce, tracked = ce.detach(), torch.full_like(entropy, self.yes_id, dtype=torch.long)
        else:
            out = linear_entropy_ce(last, head.weight, labels, weight_fn=spec, normalizer=num_items_in_batch,
                                    bias=head.bias, implementation=self.loss_implementation)
            loss, ce, entropy, weights = out.loss, out.ce, out.entropy, out.weights
            sizes = torch.full_like(labels, 2)  # the answer distribution: no, yes
            tracked = torch.where(labels == 1, self.yes_id, self.no_id)
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes  # DDP averages; num_items counts every rank's groups
        # f(H) not applied (weighting off, or eval): log what it would have made of the loss, as SFT does
        weighted_by = _group_weights(entropy, -ce, sizes, self._logging_spec) if spec is None else None
        self.entropy_trackers[mode].update(entropy, ce, weights, tracked, weighted_by=weighted_by)
        return (loss, {"loss": loss}) if return_outputs else loss

    @staticmethod
    def _listwise(
        answer_logits: torch.Tensor, labels: torch.Tensor, group_index: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Softmax over each group's log-odds; per group: CE on its relevant prompt (differentiable),
        the distribution's entropy, and the group's size."""
        scores = answer_logits[:, 1] - answer_logits[:, 0]  # [n] log-odds of yes
        sizes = torch.bincount(group_index)  # [G]
        slot = _slot_in_group(group_index)
        grid = scores.new_full((sizes.numel(), int(sizes.max())), float("-inf"))
        grid[group_index, slot] = scores  # [G, width], −inf where a group is shorter
        log_p = torch.log_softmax(grid, dim=-1)
        target = labels != IGNORE_INDEX
        ce = -log_p[group_index[target], slot[target]]  # [G] (one relevant prompt per group)
        with torch.no_grad():
            entropy = -(log_p.exp() * log_p.masked_fill(grid == float("-inf"), 0.0)).sum(-1)
        return ce, entropy, sizes


def _group_weights(entropy: torch.Tensor, log_prob: torch.Tensor, sizes: torch.Tensor, spec) -> torch.Tensor:
    """w = f(H, log p(y)) with h = H / log(number of choices), per distinct number (2 pointwise;
    group sizes). Batch-level functions (top_entropy) take their quantile within each size."""
    weights = torch.ones_like(entropy, dtype=torch.float32)
    if spec is None:
        return weights
    for size in sizes.unique().tolist():
        rows = sizes == size
        weights[rows] = entropy_weights(entropy[rows], math.log(size), spec, log_prob=log_prob[rows])
    return weights


def _slot_in_group(group_index: torch.Tensor) -> torch.Tensor:
    """Position of each prompt inside its group (groups are contiguous and in order)."""
    counts = torch.bincount(group_index)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(group_index.numel(), device=group_index.device) - starts[group_index]
