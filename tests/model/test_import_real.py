"""The GGUF import on the real model: SmolLM2-135M-Instruct's Q4_1 file becomes a Hugging Face folder that
answers as llama.cpp answers from the file itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune_mcp.model.cache import SOURCE_RECORD


@pytest.mark.slow
def test_the_imported_folder_is_complete_and_says_where_it_came_from(smollm2_dir: Path, smol_gguf: Path):
    from transformers import AutoTokenizer

    record = json.loads((smollm2_dir / SOURCE_RECORD).read_text())
    # the cache is keyed by content: the record names the file that was imported first (this one, or a copy)
    assert Path(record["file"]).name == smol_gguf.name
    assert {k: record[k] for k in ("quantization", "weights", "dtype")} == {
        "quantization": "Q4_1", "weights": "dequantised", "dtype": "bfloat16"}
    assert record["chat_template"] is True
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert (config["eos_token_id"], config["bos_token_id"], config["tie_word_embeddings"]) == (2, 1, True)
    assert "quantization_config" not in config
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    # the file's end of sequence (transformers' GGUF tokenizer alone gives <|im_start|>) and pad = eos
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|im_end|>",
                                                                               "<|im_start|>")
    # a byte-level BPE as SmolLM2 was trained (digits one by one), which llama.cpp's converter exports as "smollm"
    tokenizer_json = json.loads((smollm2_dir / "tokenizer.json").read_text())
    assert tokenizer_json["decoder"]["type"] == "ByteLevel"
    assert tokenizer.tokenize("2025") == ["2", "0", "2", "5"]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # its default


@pytest.mark.slow
def test_the_imported_model_predicts_what_llama_cpp_predicts_from_the_file(smollm2_dir: Path, smol_gguf: Path):
    import numpy as np
    import torch
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    # a byte-level BPE as SmolLM2 was trained (digits one by one), which llama.cpp's converter exports as "smollm"
    tokenizer_json = json.loads((smollm2_dir / "tokenizer.json").read_text())
    assert tokenizer_json["decoder"]["type"] == "ByteLevel"
    assert tokenizer.tokenize("2025") == ["2", "0", "2", "5"]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         tokenize=False, add_generation_prompt=True)
    ids = tokenizer(text)["input_ids"]
    with torch.no_grad():
        ours = model(torch.tensor([ids])).logits[0].numpy()
    llm = Llama(model_path=str(smol_gguf), logits_all=True, verbose=False, n_ctx=128, n_threads=2)
    try:
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)])
    finally:
        llm.close()
    same = ours.argmax(-1) == theirs.argmax(-1)
    top2 = np.sort(ours, axis=-1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]
    # llama.cpp multiplies Q4_1 blocks by 8-bit-quantised activations, the import by bf16 weights: the two
    # differ by up to a few logits, so only near-ties may change their top token (seen: 1 of 37 positions)
    assert same.mean() >= 0.95 and same[margin > 1.0].all(), (same.mean(), margin[~same])
    answer = model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0][len(ids):]
    assert "Paris" in tokenizer.decode(answer) and answer[-1].item() == tokenizer.eos_token_id  # stops at <|im_end|>
