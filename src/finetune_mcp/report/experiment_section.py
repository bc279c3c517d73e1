"""The model card's experiment section, for a run trained as one arm × seed of `start_experiment`.

A pure function of files: a run that lives in `<experiment>/runs/<arm>-s<seed>/` reads the
experiment's `experiment/table.json` — its arm, seed, its own held-out metrics beside its arm's and
the baseline's mean ± std over seeds, the verdict and the recommendation — so the card of one run
does not present one seed's numbers as if they were the method's. Other runs get no section (None).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from finetune_mcp.runs.rundir import RunDirectory


def experiment_table(root: Path) -> dict[str, Any] | None:
    """The table of the experiment the run at `root` belongs to, if it belongs to one."""
    parent = RunDirectory(root).parent_experiment()
    if parent is None:
        return None
    try:
        table = json.loads((parent.experiment / "table.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not any(r.get("name") == root.name for r in table.get("runs", [])):
        return None
    return table


def experiment_section(root: Path) -> str | None:
    """Markdown for the card (no heading), or None when the run is not part of an experiment."""
    table = experiment_table(root)
    if table is None:
        return None
    run = next(r for r in table["runs"] if r["name"] == root.name)
    arm = next(a for a in table["arms"] if a["name"] == run["arm"])
    baseline = table["baseline"]
    heldout = table.get("heldout") or {}
    intro = (
        f"This run is arm `{arm['name']}` ({arm['loss']}), seed {run['seed']}, of the experiment "
        f"`{table['experiment']}`: {len(table['arms'])} arms × {len(table['seeds'])} seeds "
        f"({', '.join('`' + a['name'] + '`' for a in table['arms'])}), every other training setting shared, every "
        f"run scored on the same held-out rows ({heldout.get('source', '—')}, {heldout.get('rows', '—')} rows). "
        f"{table['runs_finished']} of {table['runs_total']} runs had finished when this table was written "
        f"(status {table['status']}). One seed's numbers are not the method's: compare with the spread over seeds."
    )
    retain = heldout.get("retain")
    if retain:
        intro += (f" Forgetting check: CE on {retain.get('rows', '—')} retain rows ({retain.get('source', '—')}), "
                  f"the base model's {_num(retain.get('base_ce'))} nats/token; a positive rise is forgetting.")
    columns = [f"This run (seed {run['seed']})", f"`{arm['name']}` over seeds"]
    if arm["name"] != baseline:
        columns.append(f"`{baseline}` (baseline) over seeds")
    rows = []
    for metric in table["metrics"]:
        name = metric["name"]
        cells = [_num(run["metrics"].get(name)), _spread(table["summary"][name][arm["name"]])]
        if arm["name"] != baseline:
            cells.append(_spread(table["summary"][name][baseline]))
        rows.append(f"| {metric['label']} | " + " | ".join(cells) + " |")
    header = "| Held-out metric | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    recommendation = table["recommendation"]
    ending = (f"**Verdict** ({table['primary_metric']}): {table['verdict'] or '—'}\n\n"
              f"**Which arm:** {recommendation['reason']}")
    return f"{intro}\n\n{header}" + "\n".join(rows) + f"\n\n{ending}"


def _num(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)


def _spread(s: dict[str, Any]) -> str:
    if not s.get("n"):
        return "—"
    return f"{_num(s['mean'])} ± {_num(s['std'])} (n = {s['n']})"
