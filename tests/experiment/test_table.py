"""The table with a forgetting check (`retain_dataset`): the retain metrics are in its metrics and
comparisons, the held-out description names the retain rows and the base model's CE, and the report
and the card section say so. A pure function of the records: no model, no training."""

from __future__ import annotations

import pytest

from finetune_mcp.experiment.report import render_report
from finetune_mcp.experiment.spec import build_experiment_spec
from finetune_mcp.experiment.table import RunRecord, build_table

HELDOUT = {"source": "the validation split", "rows": 8, "generated": 0, "fingerprint": "0123456789abcdef",
           "retain": {"source": "all of retain.jsonl", "rows": 5, "fingerprint": "fedcba9876543210", "base_ce": 2.5}}


def records() -> list[RunRecord]:
    rise = {("standard", 1): 0.30, ("entropy", 1): 0.10, ("standard", 2): 0.25, ("entropy", 2): 0.05}
    return [RunRecord(name=f"{arm}-s{seed}", arm=arm, seed=seed, status="succeeded",
                      metrics={"eval_ce": 1.0, "perplexity": 2.7, "token_accuracy": 0.5, "entropy": 1.0,
                               "retain_ce": 2.5 + value, "retain_ce_rise": value})
            for (arm, seed), value in rise.items()]


def test_a_retain_dataset_adds_the_forgetting_metrics_to_the_table_and_the_report() -> None:
    spec = build_experiment_spec({"model": "m", "dataset": "d.jsonl", "seeds": [1, 2], "retain_dataset": "retain.jsonl"})
    table = build_table(spec, records(), status="succeeded", heldout=HELDOUT, experiment="exp")
    names = [m["name"] for m in table["metrics"]]
    assert names[-2:] == ["retain_ce", "retain_ce_rise"] and table["primary_metric"] == "eval_ce"
    rise = next(m for m in table["metrics"] if m["name"] == "retain_ce_rise")
    assert (rise["better"], rise["unit"]) == ("lower", "nats/token") and rise["label"].startswith("forgetting")
    compared = next(c for c in table["comparisons"] if c["metric"] == "retain_ce_rise")
    assert compared["differences"] == pytest.approx({"1": -0.2, "2": -0.2})  # entropy forgets less here
    assert table["summary"]["retain_ce_rise"]["entropy"]["n"] == 2
    assert table["heldout"]["retain"] == HELDOUT["retain"]
    report = render_report(table, plot_name=None)
    assert "forgetting: CE rise on the retain rows over the base model (nats/token) | lower |" in report
    assert "Forgetting check" in report and "5 rows; fingerprint `fedcba9876543210`" in report and "(2.5 nats/token)" in report


def test_without_a_retain_dataset_the_table_has_no_retain_metrics() -> None:
    spec = build_experiment_spec({"model": "m", "dataset": "d.jsonl", "seeds": [1, 2]})
    table = build_table(spec, records(), status="succeeded", heldout={**HELDOUT, "retain": None}, experiment="exp")
    assert not {"retain_ce", "retain_ce_rise"} & {m["name"] for m in table["metrics"]}
    assert "Forgetting check" not in render_report(table, plot_name=None)
