"""Entropy bookkeeping: per-window means for logging, per-epoch samples and top tokens for the card.

The trainer hands every micro-batch's per-token entropy / CE / weights (valid tokens only) to an
`EntropyTracker`. It keeps running sums for the current logging window (cheap), a uniform
reservoir sample of token entropies per epoch (bounded memory whatever the run length), and, per
epoch, how often each target token was predicted with high entropy.

The high-entropy threshold is either absolute (config) or the given percentile of the first
logging window's entropies, then frozen, so shares stay comparable across a run and between an
A/B pair with the same data. The top high-entropy tokens are counted against each window's own
percentile instead (the hardest 10 % of that window's tokens), so they stay informative after the
model has learned and few tokens remain above the frozen threshold.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import torch


@dataclass
class _Window:
    tokens: int = 0
    entropy_sum: float = 0.0
    ce_sum: float = 0.0
    weighted_ce_sum: float = 0.0
    weight_sum: float = 0.0
    high: int = 0
    entropies: list[torch.Tensor] = field(default_factory=list)
    # token-level data not yet counted into high-entropy stats and the epoch sample
    pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = field(default_factory=list)


class EntropyTracker:
    """Accumulates entropy statistics for one mode ("train" or "eval")."""

    MAX_ON_DEVICE = 2_000_000  # tokens held on the accelerator before an early copy to the CPU

    def __init__(self, *, threshold: float | None, percentile: float, sample_size: int, seed: int = 0) -> None:
        self.threshold = threshold
        self.percentile = percentile
        self.sample_size = sample_size
        self._rng = random.Random(seed)
        self._window = _Window()
        self._on_device: list[tuple[torch.Tensor, ...]] = []  # micro-batches not yet copied to the CPU
        self._on_device_tokens = 0
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._epoch_seen = 0
        self._epoch_sample: list[float] = []
        self._epoch_weight_sample: list[float] = []
        self._high_counts: Counter[int] = Counter()
        self._high_entropy_sums: dict[int, float] = defaultdict(float)
        self._token_counts: Counter[int] = Counter()

    @torch.no_grad()
    def update(
        self, entropy: torch.Tensor, ce: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor,
        weighted_by: torch.Tensor | None = None, valid: torch.Tensor | None = None,
    ) -> None:
        """Record one micro-batch: all arguments are [n], over valid (non-ignored) tokens only, or over
        every position with `valid` [n] bool marking the trained ones.

        `weights` are the ones applied to the loss; `weighted_by` (default: the same) are the ones
        `weighted_loss` uses, so an unweighted run still logs what f(H) would have made of its loss.
        Nothing here waits for the GPU: the tensors stay where they are until the window closes
        (`_to_host`, one copy per logging step; `valid` is applied there, on the CPU), so the host
        goes on launching the backward.
        """
        if entropy.numel() == 0:
            return
        shadow = weights if weighted_by is None else weighted_by
        if valid is None:
            valid = torch.ones_like(labels, dtype=torch.bool)
        self._on_device.append(tuple(t.detach() for t in (entropy, ce, weights, shadow, labels, valid)))
        self._on_device_tokens += entropy.numel()
        if self._on_device_tokens >= self.MAX_ON_DEVICE:  # bounded memory over long logging windows
            self._to_host()

    def _to_host(self) -> None:
        """Move the recorded micro-batches to the CPU in one copy and add them to the window's sums."""
        if not self._on_device:
            return
        ent, ce, w, shadow, ids, valid = (torch.cat(column).cpu() for column in zip(*self._on_device, strict=True))
        ent, ce, w, shadow, ids = (t[valid] for t in (ent, ce, w, shadow, ids))
        self._on_device.clear()
        self._on_device_tokens = 0
        ent, ce, w, shadow = ent.float(), ce.float(), w.float(), shadow.float()
        win = self._window
        win.tokens += ent.numel()
        win.entropy_sum += float(ent.sum())
        win.ce_sum += float(ce.sum())
        win.weighted_ce_sum += float((shadow * ce).sum())
        win.weight_sum += float(w.sum())
        win.entropies.append(ent)
        win.pending.append((ent, ids, w))

    def _drain(self) -> None:
        """Count pending tokens into high-entropy stats and the epoch sample (fixing the threshold first)."""
        self._to_host()
        pending = self._window.pending
        if not pending:
            return
        window = torch.cat([ent for ent, _, _ in pending])[:1_000_000]
        relative = float(torch.quantile(window, self.percentile / 100.0))
        if self.threshold is None:
            self.threshold = relative
        for ent, ids, w in pending:
            self._window.high += int((ent > self.threshold).sum())
            self._token_counts.update(ids.tolist())
            # Top tokens use the window's own percentile: once the model has learned, few tokens stay
            # above the run's first-window threshold, but the card still wants the hardest 10 %.
            top = ent >= relative
            for token, h in zip(ids[top].tolist(), ent[top].tolist(), strict=True):
                self._high_counts[token] += 1
                self._high_entropy_sums[token] += h
            self._sample(ent, w)
        pending.clear()

    def _sample(self, ent: torch.Tensor, w: torch.Tensor) -> None:
        """Reservoir sampling (Algorithm R) of token entropies and weights for this epoch."""
        for h, wt in zip(ent.tolist(), w.tolist(), strict=True):
            self._epoch_seen += 1
            if len(self._epoch_sample) < self.sample_size:
                self._epoch_sample.append(h)
                self._epoch_weight_sample.append(wt)
            else:
                j = self._rng.randrange(self._epoch_seen)
                if j < self.sample_size:
                    self._epoch_sample[j] = h
                    self._epoch_weight_sample[j] = wt

    def flush(self, reduce_sum=None) -> tuple[dict[str, float], torch.Tensor | None]:
        """Close the logging window: its metrics (short keys, e.g. entropy_mean) and its token entropies.

        `reduce_sum(list[float]) -> list[float]` sums over ranks (DDP); every rank calls it once per
        window, so the metrics cover all ranks' tokens and the ranks agree on one threshold (the mean
        of their first-window percentiles; the first window's share uses each rank's own).
        """
        self._drain()
        win = self._window
        sums = [win.tokens, win.entropy_sum, win.ce_sum, win.weighted_ce_sum, win.weight_sum, win.high,
                self.threshold or 0.0, 0.0 if self.threshold is None else 1.0]
        if reduce_sum is not None:
            sums = reduce_sum(sums)
            if sums[7]:
                self.threshold = sums[6] / sums[7]
        tokens, entropy_sum, ce_sum, weighted_ce_sum, weight_sum, high = sums[:6]
        self._window = _Window()
        if tokens == 0:
            return {}, None
        metrics = {
            "entropy_mean": entropy_sum / tokens,
            "high_entropy_share": high / tokens,
            "ce_loss": ce_sum / tokens,
            "weighted_loss": weighted_ce_sum / tokens,
            "entropy_weight_mean": weight_sum / tokens,
        }
        return metrics, torch.cat(win.entropies) if win.entropies else None

    def epoch_summary(self, epoch: int, decode, top_fraction: float = 0.1, max_tokens: int = 50) -> dict:
        """The epoch's entropy sample and its top high-entropy target tokens; resets the epoch state."""
        self._drain()
        ranked = self._high_counts.most_common()
        keep = max(1, min(max_tokens, int(len(ranked) * top_fraction) or len(ranked)))
        top = [
            {
                "token": decode(token),
                "id": token,
                "count": count,
                "occurrences": self._token_counts[token],
                "mean_entropy": self._high_entropy_sums[token] / count,
            }
            for token, count in ranked[:keep]
        ]
        sample = list(self._epoch_sample)
        summary = {
            "epoch": epoch,
            "threshold": self.threshold,
            "tokens_seen": self._epoch_seen,
            "mean": sum(sample) / len(sample) if sample else None,
            "high_entropy_share": (
                sum(h > self.threshold for h in sample) / len(sample) if sample and self.threshold is not None else None
            ),
            "entropies": sample,
            "weights": list(self._epoch_weight_sample),
            "top_tokens": top,
            "top_tokens_rule": f"target tokens in the top {100 - self.percentile:g} % of entropy within their "
            "logging window, most frequent first",
        }
        self._reset_epoch()
        return summary

