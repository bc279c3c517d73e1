"""run_export on a real finished tiny run (Qwen3 architecture, trained LoRA adapter), offline on the CPU:
merge, llama.cpp's converter and quantiser, llama.cpp loading the file, and the comparison with the
merged model in transformers. The issue's bar: f16 gives identical greedy tokens; q8_0 loads and agrees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.errors import ExportError
from finetune_mcp.export.spec import ExportSpec
from finetune_mcp.export.workflow import run_export
from finetune_mcp.runs.rundir import RunDirectory
from standins.finished_runs import TinyRuns, copy_run

pytestmark = pytest.mark.slow


def _spec(run: RunDirectory, quantization: str, **extra) -> ExportSpec:
    return ExportSpec(source_job=run.root.name, source_run_dir=str(run.root), quantization=quantization, **extra)


def _metadata(path: Path) -> dict:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    wanted = ("general.file_type", "general.architecture", "tokenizer.chat_template", "tokenizer.ggml.eos_token_id",
              "tokenizer.ggml.add_bos_token", "tokenizer.ggml.pre")
    return {key: fields[key].contents() for key in wanted if key in fields}


def test_f16_and_q8_0_files_load_in_llama_cpp_and_match_the_merged_model(runs: TinyRuns, tmp_path: Path) -> None:
    import llama_cpp
    from transformers import AutoTokenizer

    source = copy_run(runs.plain, tmp_path)
    f16 = run_export(_spec(source, "f16"), tmp_path / "export-f16")
    q8 = run_export(_spec(source, "q8_0"), tmp_path / "export-q8_0")

    v = f16["verification"]
    assert v["prompts"] == 6 and v["rows_from"] == "validation", v  # 64 rows, 10% held out
    assert v["tokenizer_identical"] == v["greedy_identical"] == v["prompts"]  # f16: identical tokens
    assert v["greedy_token_agreement"] == 1.0 and v["top1_agreement_clear"] >= 0.99 and v["max_abs_logit_diff"] < 0.1
    assert abs(v["perplexity_delta"]) < 0.01 * v["perplexity_transformers"]
    q = q8["verification"]
    assert q["tokenizer_identical"] == q["prompts"] and q["greedy_token_agreement"] >= 0.9
    assert q["perplexity_gguf"] == pytest.approx(q["perplexity_transformers"], rel=0.05)

    export = source.export
    assert sorted(p.name for p in export.iterdir()) == [
        "exports.json", "tiny-model-f16.Modelfile", "tiny-model-f16.gguf", "tiny-model-q8_0.Modelfile",
        "tiny-model-q8_0.gguf"]
    assert not list(source.root.glob(".export-*"))  # the staging folders are gone
    assert q8["size_bytes"] < f16["size_bytes"]
    assert [e["quantization"] for e in source.read_exports()] == ["f16", "q8_0"]

    tokenizer = AutoTokenizer.from_pretrained(str(source.adapter))
    for result, ftype in ((f16, llama_cpp.LLAMA_FTYPE_MOSTLY_F16), (q8, llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0)):
        meta = _metadata(Path(result["gguf"]))
        assert meta["general.file_type"] == ftype and meta["general.architecture"] == "qwen3"
        assert meta["tokenizer.chat_template"] == tokenizer.chat_template  # the training tokenizer's
        assert meta["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id  # <|im_end|>
        assert meta["tokenizer.ggml.add_bos_token"] is False  # the tiny tokenizer has no BOS
        assert meta["tokenizer.ggml.pre"] == "gpt-2" and result["pre_tokenizer"]["from"] == "tokenizer.json rules"
    assert q8["converted_from"] == "bf16"  # the merged checkpoint is bf16: the quantiser starts from it exactly

    modelfile = Path(q8["modelfile"]).read_text()
    assert modelfile.startswith("# Ollama Modelfile") and "FROM ./tiny-model-q8_0.gguf\n" in modelfile
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "SYSTEM" not in modelfile  # the data has no system turn
    assert q8["ollama_template"] == "measured"
    assert q8["commands"]["ollama"].endswith("ollama create tiny-model-q8_0 -f tiny-model-q8_0.Modelfile && "
                                             "ollama run tiny-model-q8_0")
    assert set(q8["stage_seconds"]) == {"merge", "convert", "modelfile", "verify", "publish"}

    log = RunDirectory(tmp_path / "export-q8_0")
    assert log.read_json(log.result) == q8
    events = [json.loads(line) for line in log.events.read_text().splitlines()]
    assert [e.get("stage") for e in events if e["type"] == "progress"] == ["merge", "convert", "modelfile", "verify",
                                                                        "publish", "done"]
    assert events[-1]["type"] == "end" and events[-1]["metrics"]["export/top1_agreement"] == q["top1_agreement"]


def test_a_tokenizer_llama_cpp_cannot_reproduce_fails_and_leaves_export_as_it_was(runs: TinyRuns,
                                                                                 tmp_path: Path) -> None:
    source = copy_run(runs.plain, tmp_path)
    source.export.mkdir()
    (source.export / "earlier.txt").write_text("kept")
    tokenizer_json = source.adapter / "tokenizer.json"
    data = json.loads(tokenizer_json.read_text())
    data["pre_tokenizer"] = {"type": "Whitespace"}
    tokenizer_json.write_text(json.dumps(data))

    with pytest.raises(ExportError, match=r"llama\.cpp cannot tokenize like this model's tokenizer"):
        run_export(_spec(source, "q8_0"), tmp_path / "export-job")
    assert [p.name for p in source.export.iterdir()] == ["earlier.txt"]
    assert not list(source.root.glob(".export-*"))
    events = RunDirectory(tmp_path / "export-job").events.read_text().splitlines()
    assert json.loads(events[-1])["type"] == "error"


def test_a_file_of_another_model_fails_the_f16_check_with_the_figures(runs: TinyRuns, tmp_path: Path) -> None:
    """The untrained base, converted, compared with the trained merged model: what a wrong export looks like."""
    from finetune_mcp.config import EnhancedTrainingConfig
    from finetune_mcp.data.loader import load_examples
    from finetune_mcp.export.convert import convert_checkpoint
    from finetune_mcp.export.quantization import parse_quantization
    from finetune_mcp.export.verify import verify_gguf
    from finetune_mcp.report.deploy import merge_in_subprocess

    source = copy_run(runs.plain, tmp_path)
    merged = merge_in_subprocess(source)
    wrong = tmp_path / "base-f16.gguf"
    convert_checkpoint(runs.model, wrong, "f16", model_name="base")
    config = EnhancedTrainingConfig.from_file(source.spec)
    rows = load_examples(config).validation[:4]
    check = verify_gguf(wrong, merged, source.adapter, rows, parse_quantization("f16"),
                        max_seq_length=config.max_seq_length, assistant_only_loss=True, max_new_tokens=8)
    assert not check.passed and check.figures["tokenizer_identical"] == 4  # same tokenizer, other weights
    assert any("greedy continuations differ" in f or "top-1" in f for f in check.failures), check.failures
    assert check.figures["max_abs_logit_diff"] > 1 and check.figures["top1_agreement_clear"] < 0.99, check.figures


@pytest.mark.parametrize("style", ["qwen2", "llama3"])
def test_the_qwen2_and_llama3_splitting_rules_tokenize_alike_in_llama_cpp(tmp_path: Path, style: str) -> None:
    """Tokenizers trained anew with Qwen's or Llama 3's regex: the converter does not know their hash;
    the exporter names the pre-tokenizer from the rules and llama.cpp then gives the same ids."""
    from finetune_mcp.export.convert import convert_checkpoint
    from finetune_mcp.export.metadata import TrainingTokenizer
    from finetune_mcp.export.quantization import parse_quantization
    from finetune_mcp.export.verify import verify_gguf
    from finetune_mcp.testing import build_tiny_model

    model = build_tiny_model(tmp_path / "model", pre_tokenizer=style)
    texts = ["what is 12345 plus 678?", "I've been 'told' he's there,\n\n  \tok?", "naïve café — 東京 🚀 x",
             "  leading spaces and trailing   ", "line\r\nbreaks\n\n\nand    gaps"]
    rows = [{"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": t[::-1]}]} for t in texts]

    def tokenizer_identical(gguf_file: Path) -> int:
        check = verify_gguf(gguf_file, model, model, rows, parse_quantization("f16"), max_seq_length=256,
                            assistant_only_loss=True, max_new_tokens=4)
        return check.figures["tokenizer_identical"]

    if style == "llama3":  # llama.cpp's default for this vocabulary adds a BOS the tokenizer does not have
        convert_checkpoint(model, tmp_path / "no-flags.gguf", "f16", model_name="m")
        assert tokenizer_identical(tmp_path / "no-flags.gguf") == 0  # and the verification sees it
    TrainingTokenizer.load(model).write_bos_eos_flags(model)  # what the workflow does to the converter's input
    decided = convert_checkpoint(model, tmp_path / "m.gguf", "f16", model_name="m")
    assert decided["pre_tokenizer_from"] == "tokenizer.json rules"
    assert tokenizer_identical(tmp_path / "m.gguf") == len(texts)


def test_bf16_is_held_to_the_f16_bar_and_q4_k_m_reports_its_loss(runs: TinyRuns, tmp_path: Path) -> None:
    """q4_k_m on the tiny model: its 64-wide rows are not a multiple of 256, so llama.cpp keeps them in
    q5_0 and says so (the job's log); the quantised file passes on its tokenizer and reports the rest."""
    source = copy_run(runs.plain, tmp_path)
    bf16 = run_export(_spec(source, "bf16"), tmp_path / "export-bf16")
    q4 = run_export(_spec(source, "q4_k_m"), tmp_path / "export-q4_k_m")
    b = bf16["verification"]
    assert b["greedy_identical"] == b["prompts"] and b["top1_agreement_clear"] >= 0.99
    q = q4["verification"]
    assert q["tokenizer_identical"] == q["prompts"] and q["perplexity_gguf"] > 0
    assert q4["size_bytes"] < 0.5 * bf16["size_bytes"]
    log = (tmp_path / "export-q4_k_m" / "train.log").read_text()
    assert "not divisible by 256" in log and "falling back to" in log


def test_q4_k_m_in_real_k_quant_blocks_keeps_a_trained_models_answers(tmp_path: Path) -> None:
    """A 256-wide model, so every matrix is quantised in Q4_K / Q6_K blocks (no fallback): a trained
    run's q4_k_m file still gives the merged model's greedy answers and nearly its perplexity."""
    import llama_cpp

    from finetune_mcp.config import build_config
    from finetune_mcp.testing import build_tiny_model, write_dataset
    from finetune_mcp.train.workflow import run_training

    model = build_tiny_model(tmp_path / "tiny-256", hidden_size=256, intermediate_size=512)
    dataset = write_dataset(tmp_path / "qa.jsonl", "messages", n=64)
    run = RunDirectory(tmp_path / "runs" / "ft-0000000000a4")
    run_training(build_config({"model": str(model), "dataset": str(dataset), "num_train_epochs": 4,
                               "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
                               "max_seq_length": 128, "learning_rate": 5e-3, "lora_r": 8}), run.root)

    q4 = run_export(_spec(run, "q4_k_m"), tmp_path / "export-q4_k_m")
    assert _metadata(Path(q4["gguf"]))["general.file_type"] == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert "falling back to" not in (tmp_path / "export-q4_k_m" / "train.log").read_text()
    q = q4["verification"]
    assert q["tokenizer_identical"] == q["prompts"], q
    # 4-bit weights may flip a greedy token where the top two are within rounding, never elsewhere. Measured:
    # 6/6 identical when trained with per-tensor AdamW, 5/6 with the fused one (the difference at a near-tie)
    assert q["greedy_identical"] >= q["prompts"] - 1 and q["greedy_differences_not_at_ties"] == 0, q
    assert q["top1_agreement_clear"] >= 0.9, q  # measured 0.977
    assert q["perplexity_gguf"] == pytest.approx(q["perplexity_transformers"], rel=0.1), q  # 3.047 → 2.993
