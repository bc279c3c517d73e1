"""The forgetting check's scoring on the offline tiny model: the base model's CE on the retain rows is
computed once per worker, with the LoRA adapter disabled, and every run's rise is measured against it."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune_mcp.experiment import scoring
from finetune_mcp.experiment.spec import build_experiment_spec
from finetune_mcp.testing import write_dataset

pytestmark = pytest.mark.slow


def test_the_base_ce_is_computed_once_with_the_adapter_disabled(tiny_model_dir: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from finetune_mcp.train.model import load_with_lora, reset_lora

    retain = write_dataset(tmp_path / "retain.jsonl", "messages", n=6, seed=1)
    spec = build_experiment_spec({
        "model": str(tiny_model_dir), "dataset": str(write_dataset(tmp_path / "train.jsonl", "messages", n=16)),
        "retain_dataset": str(retain), "seeds": 1, "max_seq_length": 64, "validation_split": 0.25,
        "generation_examples": 0, "lora_r": 4, "backend": "hf"})
    heldout = scoring.load_heldout(spec)
    loaded = load_with_lora(spec.run_config(spec.arms[0], spec.seeds[0]), "hf")
    reset_lora(loaded.model, 1)
    calls: list[bool] = []
    measure = scoring.retain_ce
    monkeypatch.setattr(scoring, "retain_ce", lambda *args: calls.append(True) or measure(*args))

    untrained, _ = scoring.score_run(loaded, heldout, spec)
    base = heldout.retain_base_ce
    assert len(heldout.retain) == 6 and len(calls) == 2  # the base once, this run once
    assert untrained["retain_ce"] > 0 and untrained["retain_ce_rise"] == pytest.approx(0.0, abs=1e-6)  # B starts at 0

    torch.manual_seed(0)
    with torch.no_grad():  # an adapter that changes the model, as training does
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    trained, _ = scoring.score_run(loaded, heldout, spec)
    assert len(calls) == 3 and heldout.retain_base_ce == base  # cached: not scored again for the next run
    assert abs(trained["retain_ce"] - untrained["retain_ce"]) > 1e-3
    assert trained["retain_ce_rise"] == pytest.approx(trained["retain_ce"] - base)

    heldout.retain_base_ce = None  # as a fresh worker: the base scored on this changed model, adapter off
    scoring.score_run(loaded, heldout, spec)
    assert heldout.retain_base_ce == pytest.approx(base, abs=1e-5)
    described = heldout.describe()["retain"]
    assert (described["source"], described["rows"], len(described["fingerprint"])) == (f"all of {retain}", 6, 16)
