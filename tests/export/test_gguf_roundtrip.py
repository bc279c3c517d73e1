"""Export then import: the f16 GGUF that export_model writes from a trained tiny run, imported back as a
model source, gives the merged model's logits (the round trip a user makes when they tune a GGUF again)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.export.spec import ExportSpec
from finetune_mcp.export.workflow import run_export
from finetune_mcp.model.imports import import_gguf
from standins.finished_runs import TinyRuns, copy_run

pytestmark = pytest.mark.slow


def test_an_f16_export_imports_back_to_the_merged_models_logits(runs: TinyRuns, tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = copy_run(runs.plain, tmp_path)
    exported = run_export(ExportSpec(source_job=source.root.name, source_run_dir=str(source.root),
                                     quantization="f16"), tmp_path / "export-f16")
    folder = import_gguf(Path(exported["gguf"]), tmp_path / "home")
    record = json.loads((folder / "gguf_source.json").read_text())
    assert (record["quantization"], record["weights"], record["dtype"]) == ("F16", "exact", "float16")

    merged = AutoModelForCausalLM.from_pretrained(source.merged, dtype=torch.float32).eval()
    imported = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer, training_tokenizer = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(source.adapter)
    text = training_tokenizer.apply_chat_template([{"role": "user", "content": "what color is the sky?"}],
                                                  tokenize=False, add_generation_prompt=True)
    ids = training_tokenizer(text)["input_ids"]
    assert tokenizer(text)["input_ids"] == ids  # the GGUF's tokenizer is the training tokenizer
    with torch.no_grad():
        want = merged(torch.tensor([ids])).logits
        got = imported(torch.tensor([ids])).logits
    # the merged checkpoint is bf16, the file f16: every bf16 weight of this model is exact in f16
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert tokenizer.eos_token == training_tokenizer.eos_token
