"""The experiment's report: `render_report(table)` (pure: the table in, markdown out) and one plot
(`draw_plot`): the primary metric per arm with every seed's point, and each arm's paired difference
from the baseline with its bootstrap interval. `write_report` writes both beside table.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from finetune_mcp.runs.rundir import write_atomic

_DPI = 110


def write_report(table: dict[str, Any], report: Path, plot: Path) -> None:
    """report.md and plot.png (the plot only once some run finished: there is nothing to draw before)."""
    drawn = table["runs_finished"] > 0
    write_atomic(report, render_report(table, plot.name if drawn else None))  # text first: it is the quick part
    if drawn:
        draw_plot(table, plot)


def fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return str(value)


def signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4g}"


def _retain(retain: dict[str, Any] | None) -> str:
    """The forgetting check's sentence (empty without a retain_dataset)."""
    if not retain:
        return ""
    return (f" Forgetting check: every run's CE on the retain rows ({retain.get('source', '—')}, "
            f"{retain.get('rows', '—')} rows; fingerprint `{retain.get('fingerprint', '—')}`) against the base "
            f"model's CE on them ({fmt(retain.get('base_ce'))} nats/token): a positive retain_ce_rise is forgetting.")


def render_report(table: dict[str, Any], plot_name: str | None = "plot.png") -> str:
    arms = [a["name"] for a in table["arms"]]
    baseline = table["baseline"]
    primary = next(m for m in table["metrics"] if m["name"] == table["primary_metric"])
    seeds = table["seeds"]
    heldout = table["heldout"]
    n = min((c["n"] for c in table["comparisons"]), default=0)
    lines = [
        f"# Experiment `{table['experiment']}`: {' vs '.join(f'`{a}`' for a in arms)}",
        "",
        f"`{Path(table['model']).name}` on `{table['dataset']}` ({table['task']}): {len(arms)} arms × {len(seeds)} seeds "
        f"= {table['runs_total']} runs, {table['runs_finished']} finished; status **{table['status']}**.",
        "Every run shares every training setting but the loss; runs with the same seed share the LoRA "
        "initialisation and the data order; every run is scored on the same held-out rows: "
        f"{heldout.get('source', '—')} ({heldout.get('rows', '—')} rows"
        + (f", {heldout['generated']} answered by greedy generation" if heldout.get("generated") else "")
        + f"; fingerprint `{heldout.get('fingerprint', '—')}`)." + _retain(heldout.get("retain")),
        "",
        f"**Verdict** ({primary['label']}): {table['verdict'] or '—'}",
        "",
        f"**Recommendation:** {table['recommendation']['reason']}",
        "",
        "## Arms",
        "",
        "| Arm | Loss |",
        "|---|---|",
        *(f"| `{a['name']}`{' (baseline)' if a['name'] == baseline else ''} | {a['loss']} |" for a in table["arms"]),
        "",
        "## Held-out results",
        "",
        f"Mean ± standard deviation over seeds, then each seed's value ({', '.join(map(str, seeds))}).",
        "",
        "| Metric | Better | " + " | ".join(f"`{a}`" for a in arms) + " |",
        "|---|---|" + "---|" * len(arms),
    ]
    for metric in table["metrics"]:
        cells = []
        for arm in arms:
            s = table["summary"][metric["name"]][arm]
            each = ", ".join(fmt(s["values"].get(str(seed))) for seed in seeds)
            cells.append(f"{fmt(s['mean'])} ± {fmt(s['std'], 2)} ({each})" if s["n"] else "—")
        unit = f" ({metric['unit']})" if metric["unit"] else ""
        lines.append(f"| {metric['label']}{unit} | {metric['better'] or '—'} | " + " | ".join(cells) + " |")
    for arm in arms:
        if arm == baseline:
            continue
        lines += ["", f"## `{arm}` against `{baseline}`, paired by seed", "",
                  "| Metric | n | Mean difference | 95 % CI | Sign-flip p | Supports |", "|---|---|---|---|---|---|"]
        for c in table["comparisons"]:
            if c["arm"] == arm:
                ci = f"[{signed(c['ci_low'])}, {signed(c['ci_high'])}]" if c["ci_low"] is not None else "—"
                lines.append(f"| {c['metric']} | {c['n']} | {signed(c['mean_difference'])} | {ci} | "
                             f"{fmt(c['p_value'], 2)} | {c['supported']} |")
    stats = table["statistics"]
    lines += [
        "", "## How to read the intervals", "",
        f"n = {n} paired seeds. Each difference is {stats['pairing']}. The interval is a {stats['interval']}. "
        f"With n = {n} the bootstrap can take only a few values and its interval is never wider than the range of "
        "the differences: at n = 2–3 it understates the uncertainty, so read it as the least uncertainty there "
        f"is, not the most. The {stats['test']} says how often chance alone gives differences this consistent: "
        f"with n seeds its p-value cannot go below 2 / 2ⁿ ({fmt(2 / 2 ** n if n else None, 2)} here), so no "
        f"difference can be claimed at the {stats['alpha']:.0%} level with fewer than "
        f"{stats['seeds_needed_for_alpha']} seeds, whatever the interval shows. A verdict of a difference needs "
        f"both: the interval excluding 0 and p ≤ {stats['alpha']}.",
    ]
    lines += _cost(table)
    lines += ["", "## Runs", "", "| Run | Arm | Seed | Status | Run directory |", "|---|---|---|---|---|"]
    lines += [f"| `{r['name']}` | {r['arm']} | {r['seed']} | {r['status']}"
              + (f" ({r['error']})" if r.get("error") else "") + f" | `{r['run_dir']}` |" for r in table["runs"]]
    if plot_name:
        lines += ["", f"![{primary['label']} per arm and seed, with each arm's difference from {baseline}]({plot_name})"]
    return "\n".join(lines) + "\n"


def _cost(table: dict[str, Any]) -> list[str]:
    overhead = table["overhead"]
    if not overhead["per_run"]:
        return []
    lines = ["", "## Cost per run", "",
             "Overhead = the run's wall time (data, model load or LoRA re-initialisation, trainer set-up, evaluation "
             "during training, saving, held-out scoring) minus the time of its training steps.", "",
             "| Run | Wall (s) | Training steps (s) | Overhead (s) | Model (s) | Held-out scoring (s) |",
             "|---|---|---|---|---|---|"]
    for name, t in overhead["per_run"].items():
        model = f"{fmt(t.get('model_s'), 3)} ({'kept, LoRA reset' if t.get('model_reused') else 'loaded'})"
        lines.append(f"| `{name}` | {fmt(t['wall_s'], 4)} | {fmt(t['train_steps_s'], 4)} | {fmt(t['overhead_s'], 4)} | "
                     f"{model} | {fmt(t.get('scoring_s'), 3)} |")
    if overhead["later_runs_mean_s"] is not None:
        lines += ["", f"First run's overhead {fmt(overhead['first_run_s'], 3)} s (it loads the model in "
                  f"{fmt(overhead['model_load_s'], 3)} s); later runs {fmt(overhead['later_runs_mean_s'], 3)} s on average "
                  f"(LoRA re-initialisation {fmt(overhead['lora_reset_mean_s'], 3)} s)."]
    return lines


def draw_plot(table: dict[str, Any], path: Path) -> Path:
    """Left: the primary metric per arm, one point per seed, the arm's mean ± std as a bar. Right:
    each other arm minus the baseline, one point per seed, the mean with its bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = table["primary_metric"]
    label = next(m["label"] for m in table["metrics"] if m["name"] == name)
    arms = [a["name"] for a in table["arms"]]
    baseline = table["baseline"]
    seeds = [str(s) for s in table["seeds"]]
    colours = plt.get_cmap("tab10")
    others = [c for c in table["comparisons"] if c["metric"] == name]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4),
                                      gridspec_kw={"width_ratios": [len(arms), max(1.6, len(others))]})
    for x, arm in enumerate(arms):
        s = table["summary"][name][arm]
        for k, seed in enumerate(seeds):
            if seed in s["values"]:
                left.scatter(x + _jitter(k, len(seeds)), s["values"][seed], color=colours(k % 10), zorder=3,
                             label=f"seed {seed}" if x == 0 else None)
        if s["mean"] is not None:
            left.errorbar(x, s["mean"], yerr=s["std"] or 0.0, fmt="_", color="black", markersize=24, capsize=6, zorder=2)
    left.set_xticks(range(len(arms)), arms)
    left.set_xlim(-0.6, len(arms) - 0.4)
    left.set_title(f"{label}: each seed, mean ± std")
    left.grid(alpha=0.3, axis="y")
    if seeds:
        left.legend(fontsize=8, loc="best")
    for x, c in enumerate(others):
        for k, seed in enumerate(seeds):
            if seed in c["differences"]:
                right.scatter(x + _jitter(k, len(seeds)), c["differences"][seed], color=colours(k % 10), zorder=3)
        if c["ci_low"] is not None:
            mean = c["mean_difference"]
            right.errorbar(x, mean, yerr=[[mean - c["ci_low"]], [c["ci_high"] - mean]], fmt="o", color="black",
                           capsize=8, zorder=2)
    right.axhline(0.0, color="grey", linewidth=1)
    right.set_xticks(range(len(others)), [f"{c['arm']} − {baseline}" for c in others])
    right.set_xlim(-0.6, max(1, len(others)) - 0.4)
    right.set_title(f"arm − {baseline} per seed; mean, 95 % CI (n = {min((c['n'] for c in others), default=0)})")
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(f"experiment {table['experiment']} ({table['status']})", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=_DPI)
    plt.close(fig)
    tmp.replace(path)
    return path


def _jitter(k: int, n: int) -> float:
    return 0.0 if n <= 1 else (k / (n - 1) - 0.5) * 0.3
