"""SmolLM2-135M-Instruct through the MCP server over stdio, from its GGUF file: preview, a short LoRA run,
base vs tuned answers, the model card, then GGUF exports (f16, q8_0, q4_k_m) verified by llama.cpp on a
real model. One test, one training run: the tier must stay within ~3 minutes on 2 CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.testing.local_server import job_ended

pytestmark = pytest.mark.slow

SHORT = {"max_seq_length": 64, "per_device_train_batch_size": 2, "gradient_checkpointing": False, "gradient_accumulation_steps": 1,
         "learning_rate": 1e-3, "lora_r": 8, "validation_split": 0.0, "logging_steps": 1}




async def test_a_gguf_model_previews_trains_samples_and_is_reported(real_server, smol_file: Path, capitals: Path):
    async with real_server.client() as client:
        preview = (await client.call_tool("preview_training", {
            "model": str(smol_file), "dataset": str(capitals), "examples": 8, "config_overrides": SHORT,
        })).structured_content
        started = (await client.call_tool("start_finetune", {
            "model": str(smol_file), "dataset": str(capitals), "max_steps": 2, "target": "local",
            "config_overrides": SHORT,
        })).structured_content
        done = await job_ended(client, started["job_id"])
        assert done["state"] == "succeeded", done["error"]
        sampled = (await client.call_tool("sample_model", {
            "job_id": started["job_id"], "compare_with_base": True, "max_new_tokens": 6,
            "prompts": [[{"role": "user", "content": "Capital of Japan? One word."}]],
        })).structured_content
        samples = await job_ended(client, sampled["job_id"])
        card = (await client.call_tool("generate_model_card", {"job_id": started["job_id"]})).structured_content
        exports = {}
        for quantization in ("f16", "q8_0", "q4_k_m"):
            export = (await client.call_tool("export_model", {"job_id": started["job_id"], "quantization": quantization,
                                                              "verify_prompts": 4 if quantization == "f16" else 2})).structured_content
            exports[quantization] = await job_ended(client, export["job_id"])

    source = {"file": str(smol_file), "quantization": "Q4_1", "architecture": "llama", "weights": "dequantised"}
    assert preview["gguf_source"].items() >= source.items()
    # rows without a system turn show the template's default one; rows with one show theirs instead
    texts = [e["text"] for e in preview["examples"]]
    assert any("You are a helpful AI assistant named SmolLM" in t for t in texts)
    assert any("Answer with one word." in t and "named SmolLM" not in t for t in texts)
    assert preview["end_of_turn"] == "<|im_end|>"
    assert all(e["ends_with_end_of_turn"] and e["text"].rstrip().endswith("<|im_end|>]]") for e in preview["examples"])

    assert done["gguf_source"].items() >= source.items() and done["model"] == str(smol_file)
    result = json.loads((Path(done["run_dir"]) / "result.json").read_text())
    assert result["gguf_source"]["weights"] == "dequantised" and result["global_step"] == 2
    spec = json.loads((Path(done["run_dir"]) / "spec.json").read_text())
    assert (Path(spec["model"]) / "config.json").is_file()  # the worker trained the imported folder

    assert samples["state"] == "succeeded", samples["error"]
    outputs = samples["result"]["samples"][0]["outputs"]
    assert set(outputs) == {"tuned", "base"} and all(o["answer"].strip() for o in outputs.values())
    assert "`SmolLM2-135M-Instruct.Q4_1.gguf`" in card["markdown"] and "a Q4_1 GGUF file" in card["markdown"]
    assert "weights dequantised" in card["markdown"]

    # llama.cpp against the merged model on a real model: the f16 file agrees at clear positions (>= 0.99, the
    # export's own rule) and gives the same greedy answers. At every position it agreed 1.000 in one run and
    # 0.986 in another (2026-12-06, greedy 4/4 identical): a real model still has near-ties, so the
    # clear-positions rule stays, and every position is held to 0.97.
    for quantization, job in exports.items():
        assert job["state"] == "succeeded", (quantization, job["error"])
        assert Path(job["result"]["gguf"]).name == f"SmolLM2-135M-Instruct.Q4_1-{quantization}.gguf"
    f16 = exports["f16"]["result"]["verification"]
    assert f16["tokenizer_identical"] == f16["prompts"] == f16["greedy_identical"], f16
    assert f16["top1_agreement_clear"] >= 0.99 and f16["top1_agreement"] >= 0.97, f16
    deltas = {q: exports[q]["result"]["verification"]["perplexity_delta"] for q in exports}
    print(f"\nSmolLM2 (Q4_1 import) perplexity delta vs the merged model: {deltas}; f16 top-1 "
          f"{f16['top1_agreement']} over {f16['positions_compared']} positions ({f16['top1_agreement_clear']} at "
          f"{f16['positions_clear']} clear ones), max |Δ logit| {f16['max_abs_logit_diff']}")
    assert all(isinstance(d, float) for d in deltas.values()) and abs(deltas["f16"]) < 0.05
