"""The `dpo` method's hooks (see `train.methods`): what its registry entry points at. Held-out
scoring is the preference methods' shared one (`train.preference_scoring`)."""

from __future__ import annotations

from finetune_mcp.train.dpo.workflow import train_dpo as train
from finetune_mcp.train.preference_scoring import evaluate_rows as evaluate
from finetune_mcp.train.preference_scoring import score_heldout_rows as score_heldout

__all__ = ["evaluate", "score_heldout", "train"]
