"""The model card's PNG plots, drawn with matplotlib from what a run wrote (events.jsonl, entropy/).

Which plots a card gets depends on the data: `plot_names(run_facts, compare)` is the one rule, used
by the card text (which images to reference) and by `make_plots` (which files to draw), so the card
never points at a missing file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from finetune_mcp.runs import metric_names as M

if TYPE_CHECKING:
    from finetune_mcp.runs.facts import RunFacts

LOSS = "loss.png"
ENTROPY_CURVE = "entropy.png"
ENTROPY_BOXPLOT = "entropy_boxplot.png"
COMPARISON = "comparison.png"
_DPI = 110


def plot_names(run: RunFacts, compare: RunFacts | None = None) -> list[str]:
    """The plots this run's data supports, in the order the card shows them."""
    names = []
    if run.series(M.LOSS):
        names.append(LOSS)
    if run.series(M.ENTROPY_MEAN):
        names.append(ENTROPY_CURVE)
    if any(epoch.get("entropies") for epoch in run.entropy_epochs):
        names.append(ENTROPY_BOXPLOT)
    if compare is not None and (run.series(M.CE_LOSS) or run.series(M.LOSS)):
        names.append(COMPARISON)
    return names


def make_plots(run: RunFacts, out_dir: Path, compare: RunFacts | None = None) -> dict[str, Path]:
    """Draw every plot in `plot_names` into `out_dir`; returns name → path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    drawers = {LOSS: _loss, ENTROPY_CURVE: _entropy_curve, ENTROPY_BOXPLOT: _boxplot, COMPARISON: _comparison}
    written = {}
    for name in plot_names(run, compare):
        fig = drawers[name](plt, run, compare)
        path = out_dir / name
        fig.savefig(path, dpi=_DPI, bbox_inches="tight")
        plt.close(fig)
        written[name] = path
    return written


def _loss(plt, run: RunFacts, _compare):
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = {
        M.LOSS: "optimised loss" + (" (Σ w·CE / N)" if run.entropy_on else " (CE)"),
        M.CE_LOSS: "unweighted CE",
        M.WEIGHTED_LOSS: "entropy-weighted CE (Σ w·CE / N)",
    }
    for tag, label in labels.items():
        steps, values = run.series(tag)
        if steps and not (tag == M.WEIGHTED_LOSS and run.entropy_on):  # equals train/loss when on
            ax.plot(steps, values, label=label, linewidth=1.6)
    steps, values = run.series(M.EVAL_LOSS)
    if steps:
        ax.plot(steps, values, "o--", label="eval CE", linewidth=1.2)
    ax.set(xlabel="step", ylabel="loss (nats/token)", title=f"Loss — {run.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def _entropy_curve(plt, run: RunFacts, _compare):
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, values = run.series(M.ENTROPY_MEAN)
    ax.plot(steps, values, label="mean token entropy (train)", color="tab:purple")
    steps, values = run.series(M.EVAL_ENTROPY_MEAN)
    if steps:
        ax.plot(steps, values, "o--", label="mean token entropy (eval)", color="tab:green")
    ax.set(xlabel="step", ylabel="entropy (nats)", title=f"Token entropy — {run.name}")
    ax.grid(alpha=0.3)
    steps, values = run.series(M.HIGH_ENTROPY_SHARE)
    if steps:
        share = ax.twinx()
        share.plot(steps, values, color="tab:orange", alpha=0.7, label="high-entropy share")
        share.set_ylabel("high-entropy token share")
        share.legend(loc="upper right")
    ax.legend(loc="upper left")
    return fig


def _boxplot(plt, run: RunFacts, _compare):
    epochs = [e for e in run.entropy_epochs if e.get("entropies")]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(epochs) + 3), 4))
    ax.boxplot([e["entropies"] for e in epochs], showfliers=False)
    ax.set_xticks(range(1, len(epochs) + 1), [f"epoch {e['epoch']}" for e in epochs])
    threshold = next((e.get("threshold") for e in epochs if e.get("threshold") is not None), None)
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle=":", label=f"high-entropy threshold {threshold:.3g}")
        ax.legend()
    ax.set(ylabel="token entropy (nats)", title=f"Token entropy per epoch (sampled tokens) — {run.name}")
    ax.grid(alpha=0.3, axis="y")
    return fig


def _comparison(plt, run: RunFacts, compare: RunFacts):
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    for facts, style in ((run, "-"), (compare, "--")):
        label = f"{facts.name} ({'entropy-weighted' if facts.entropy_on else 'unweighted'})"
        tag = M.CE_LOSS if facts.series(M.CE_LOSS) else M.LOSS
        left.plot(*facts.series(tag), style, label=label)
        steps, values = facts.series(M.ENTROPY_MEAN)
        if steps:
            right.plot(steps, values, style, label=label)
    left.set(xlabel="step", ylabel="unweighted CE (nats/token)", title="Cross-entropy, both runs")
    right.set(xlabel="step", ylabel="entropy (nats)", title="Mean token entropy, both runs")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend()
    return fig
