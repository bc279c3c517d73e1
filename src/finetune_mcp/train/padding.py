"""Right-padding of token id lists into a batch: shared by the SFT scorer and the reranker."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def pad_right(
    sequences: list[list[int]], pad_id: int, device: Any = None, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, T] input ids padded on the right with `pad_id` (T = the longest, or `width`), and the mask."""
    import torch

    width = max(width or 0, max(len(s) for s in sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    return (ids.to(device), mask.to(device)) if device is not None else (ids, mask)
