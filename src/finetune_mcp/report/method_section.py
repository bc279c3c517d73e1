"""The model card's section for runs of a method with its own settings (DPO, KTO, ORPO, GRPO): what
the method optimised, its settings as the run used them, and the metrics its trainer logged (the
descriptor's `logged_metrics`: TRL's names), last value of each, train and held-out side by side.

`method_section(result, spec)` is pure (result.json / spec.json dicts in, markdown out); card.py
puts it under "Training method" when it returns text (None for SFT and the reranker, whose cards
say it elsewhere).
"""

from __future__ import annotations

from typing import Any

from finetune_mcp.config.methods import method_of
from finetune_mcp.config.preference import zero_loss_note

# What TRL's log keys measure (DPO / KTO / ORPO / GRPO); a key not listed is shown without a note.
MEANINGS = {
    "rewards/accuracies": "share of pairs whose implicit reward ranks chosen above rejected",
    "rewards/margins": "mean implicit reward of chosen minus rejected (β·log-ratio to the reference)",
    "rewards/chosen": "mean implicit reward of the chosen replies",
    "rewards/rejected": "mean implicit reward of the rejected replies",
    "logps/chosen": "mean log-probability of the chosen replies",
    "logps/rejected": "mean log-probability of the rejected replies",
    "kl": "KL estimate to the reference model",
    "nll_loss": "the SFT part of ORPO's loss (chosen replies)",
    "log_odds_ratio": "mean log odds ratio of chosen vs rejected",
    "reward": "mean combined reward of the generated completions",
    "reward_std": "spread of the reward within a group (0: nothing to learn from that group)",
    "frac_reward_zero_std": "share of groups whose completions all got one reward (zero advantage)",
    "completions/mean_length": "mean completion length (tokens)",
    "entropy": "mean entropy of the completion tokens",
    "entropy/masked_in": "mean entropy of the tokens the top-entropy mask trains",
    "entropy/masked_out": "mean entropy of the tokens it leaves out",
    "entropy/mask_share": "share of completion tokens the mask trains",
}


def _logged(name: str, keys: tuple[str, ...]) -> bool:
    return any(name == k or (k.endswith("/") and name.startswith(k)) for k in keys)


def method_section(result: dict[str, Any], spec: dict[str, Any]) -> str | None:
    """Markdown for a run whose method has a settings block; None for any other run."""
    method = method_of(spec)
    if not method.settings_block:
        return None
    settings = spec.get(method.settings_block) or {}
    parts = [f"Method `{method.name}`: {method.summary}. Its settings in this run "
             f"(`{method.settings_block}` block; the defaults are {method.settings_help}):"]
    rows = ["| Setting | Value |", "|---|---|"]
    rows += [f"| {key} | {_value(value)} |" for key, value in settings.items()]
    parts.append("\n".join(rows))
    metrics = result.get("metrics") or {}
    names = sorted({tag.split("/", 1)[1] for tag in metrics
                    if tag.startswith(("train/", "eval/")) and _logged(tag.split("/", 1)[1], method.logged_metrics)})
    if names:
        rows = ["| Metric | Last training value | Held-out | What it measures |", "|---|---|---|---|"]
        for name in names:
            rows.append(f"| `{name}` | {_num(metrics.get(f'train/{name}'))} | {_num(metrics.get(f'eval/{name}'))} | "
                        f"{MEANINGS.get(name, '')} |")
        parts.append(f"What the trainer logged (TRL's names; {method.primary_metric!r} is the method's primary "
                     "held-out metric in experiments and evaluate_model):\n\n" + "\n".join(rows))
    else:
        parts.append("The trainer logged none of the method's metrics (a run too short to log?).")
    note = zero_loss_note(spec)
    if note:
        parts.append(f"Reading the loss: {note}.")
    return "\n\n".join(parts)


def _value(value: Any) -> str:
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return "; ".join(", ".join(f"{k}={v}" for k, v in item.items() if v is not None) for item in value)
    return str(value)


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "—"
