"""The Ollama Modelfile: the turn format measured from real Jinja chat templates (rendered by
transformers' tokenizer, as the exporter does), the Go TEMPLATE written from it, stops and SYSTEM."""

from __future__ import annotations

import pytest

from finetune_mcp.export.modelfile import (
    NotRoleWrapped,
    constant_system_prompt,
    measure_turn_format,
    modelfile_text,
)
from finetune_mcp.testing.tiny_model import CHATML_TEMPLATE

# The published templates' shapes: Qwen2.5 (a default system prompt), Llama 3 (BOS in the template),
# Qwen3 (an empty think block on the *last* assistant turn of a training render), Gemma (no system
# turn; the assistant speaks as "model").
QWEN25 = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    "<|im_end|>\\n' }}{%- endif %}{%- for message in messages %}{%- if message.role != 'system' %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
QWEN3 = (
    "{%- set ns = namespace(last_query=0) %}{%- for m in messages %}{%- if m.role == 'user' %}"
    "{%- set ns.last_query = loop.index0 %}{%- endif %}{%- endfor %}"
    "{%- for m in messages %}{%- if m.role == 'assistant' and loop.index0 > ns.last_query %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")
GEMMA = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")

CHATML_MODELFILE = '''\
# Ollama Modelfile written by finetune-mcp; use: ollama create NAME -f <this file>
FROM ./tiny-q8_0.gguf
TEMPLATE """{{ range .Messages }}{{ if eq .Role "system" }}<|im_start|>system
{{ .Content }}<|im_end|>
{{ else if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ .Content }}<|im_end|>
{{ end }}{{ end }}<|im_start|>assistant
"""
SYSTEM """Answer in one word."""
PARAMETER stop "<|im_end|>"
'''


def _render(tokenizer, template: str, bos: str | None = None):
    tokenizer.chat_template = template
    if bos is not None:
        tokenizer.bos_token = bos

    def render(messages, add_generation_prompt):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    return render


def test_chatml_gives_the_modelfile_ollama_users_write(tiny_tokenizer) -> None:
    turns = measure_turn_format(_render(tiny_tokenizer, CHATML_TEMPLATE))
    text = modelfile_text("tiny-q8_0.gguf", turns=turns, stops=[*turns.stop_strings(), "<|im_end|>"],
                          system="Answer in one word.")
    assert text == CHATML_MODELFILE


def test_a_default_system_prompt_becomes_the_modelfile_system(tiny_tokenizer) -> None:
    turns = measure_turn_format(_render(tiny_tokenizer, QWEN25))
    assert turns.default_system == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert turns.prefix["user"] == "<|im_start|>user\n" and turns.suffix["assistant"] == "<|im_end|>\n"
    text = modelfile_text("m.gguf", turns=turns, stops=turns.stop_strings(), system=None)
    assert 'SYSTEM """You are Qwen, created by Alibaba Cloud. You are a helpful assistant."""' in text
    data_prompt = modelfile_text("m.gguf", turns=turns, stops=[], system="Be brief.")
    assert 'SYSTEM """Be brief."""' in data_prompt  # the training data's own prompt wins


def test_a_bos_the_tokenizer_adds_is_not_in_the_template(tiny_tokenizer) -> None:
    turns = measure_turn_format(_render(tiny_tokenizer, LLAMA3, bos="<|endoftext|>"), bos_token="<|endoftext|>")
    assert turns.preamble == "" and turns.stop_strings() == ["<|eot_id|>"]
    assert turns.generation_prompt == "<|start_header_id|>assistant<|end_header_id|>\n\n"
    kept = measure_turn_format(_render(tiny_tokenizer, LLAMA3, bos="<|endoftext|>"))  # llama.cpp adds no BOS
    assert kept.preamble == "<|endoftext|>"


def test_qwen3s_think_block_never_reaches_an_inference_render(tiny_tokenizer) -> None:
    turns = measure_turn_format(_render(tiny_tokenizer, QWEN3))
    assert turns.prefix["assistant"] == "<|im_start|>assistant\n" and turns.default_system is None


def test_a_template_that_is_not_role_wrapped_gets_no_template_line(tiny_tokenizer) -> None:
    with pytest.raises(NotRoleWrapped):
        measure_turn_format(_render(tiny_tokenizer, GEMMA, bos="<|endoftext|>"))
    text = modelfile_text("m.gguf", turns=None, stops=["<end_of_turn>"], system=None)
    assert "TEMPLATE" not in text.replace("# No TEMPLATE", "") and 'PARAMETER stop "<end_of_turn>"' in text


def test_go_actions_in_literal_text_are_escaped() -> None:
    from finetune_mcp.export.modelfile import TurnFormat

    turns = TurnFormat(prefix={"system": "{{sys}}", "user": "U:", "assistant": "A:"},
                       suffix={"system": "\n", "user": "\n", "assistant": "\n"}, generation_prompt="A:",
                       preamble="", default_system=None)
    assert '{{ "{{" }}sys}}' in turns.go_template()


def test_constant_system_prompt_only_when_every_row_has_the_same() -> None:
    rows = [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": str(i)}]} for i in range(3)]
    assert constant_system_prompt(rows) == "S"
    assert constant_system_prompt([*rows, {"messages": [{"role": "user", "content": "x"}]}]) is None
    assert constant_system_prompt([*rows, {"messages": [{"role": "system", "content": "T"}]}]) is None
    assert constant_system_prompt([{"prompt": "p", "completion": "c"}]) is None
