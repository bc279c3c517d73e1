"""Stable metric names: TensorBoard tags, events.jsonl keys, and what tools and cards read.

Changing one of these breaks users' dashboards and the comparison of old runs: add, don't rename.
"""

LOSS = "train/loss"  # the optimised loss: Σ w·CE / normaliser (equals CE when weighting is off)
CE_LOSS = "train/ce_loss"  # unweighted cross-entropy over the same tokens
WEIGHTED_LOSS = "train/weighted_loss"  # Σ f(H)·CE / Σ valid tokens with the configured f, in both arms of an A/B
ENTROPY_MEAN = "train/entropy_mean"  # mean predictive entropy (nats) of valid tokens
HIGH_ENTROPY_SHARE = "train/high_entropy_share"  # share of tokens with H above the threshold
WEIGHT_MEAN = "train/entropy_weight_mean"  # mean w (1.0 when weighting is off)
LEARNING_RATE = "train/learning_rate"
GRAD_NORM = "train/grad_norm"
EPOCH = "train/epoch"

EVAL_LOSS = "eval/loss"
EVAL_ENTROPY_MEAN = "eval/entropy_mean"
EVAL_HIGH_ENTROPY_SHARE = "eval/high_entropy_share"

ENTROPY_HISTOGRAM = "entropy/token_entropy"  # TensorBoard histogram of per-token entropy
WEIGHT_HISTOGRAM = "entropy/token_weight"

DEFAULT_SCREENSHOT_TAGS = (LOSS, CE_LOSS, WEIGHTED_LOSS, ENTROPY_MEAN, HIGH_ENTROPY_SHARE)
