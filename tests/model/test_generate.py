"""`generate` on the offline tiny model: prompts as training renders them, greedy = argmax of the model
(whatever its own sampling defaults), the entropy of each step equal to the one computed by hand,
stops at the end of the turn, batches equal to one-by-one, seeded sampling, an untimed warm-up."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from finetune_mcp.data.chat_tokens import IGNORE_INDEX, tokenize_examples
from finetune_mcp.model.generate import GenerationStats, generate, prompt_ids, stop_token_ids, warm_up
from finetune_mcp.model.generation_settings import GenerationSettings, PlainText

QUESTIONS = ["what color is the sky?", "repeat the word apple.", "add 2 and 3.", "say node."]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval(), AutoTokenizer.from_pretrained(
        str(tiny_model_dir))


def test_the_prompt_ends_exactly_where_training_labels_begin(tiny_tokenizer) -> None:
    row = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "what is 2 plus 2?"},
                        {"role": "assistant", "content": "4"}]}
    trained = tokenize_examples([row], tiny_tokenizer, 128)[0]
    prompt = prompt_ids(tiny_tokenizer, row["messages"][:2])
    assert trained["input_ids"][: len(prompt)] == prompt
    assert set(trained["labels"][: len(prompt)]) == {IGNORE_INDEX} and trained["labels"][len(prompt)] != IGNORE_INDEX
    assert prompt_ids(tiny_tokenizer, PlainText("1 + 2 =")) == tiny_tokenizer("1 + 2 =")["input_ids"]


def test_greedy_is_the_argmax_of_the_model_and_the_entropy_is_the_models(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    model.generation_config.do_sample, model.generation_config.temperature, model.generation_config.top_k = True, 0.6, 20
    stats = GenerationStats()
    [out] = generate(model, tokenizer, QUESTIONS[:1], GenerationSettings(max_new_tokens=6), stats=stats)
    assert model.generation_config.do_sample is True  # the model's own config is back afterwards

    ids = torch.tensor([prompt_ids(tokenizer, QUESTIONS[0])])
    expected_ids, expected_h = [], []
    with torch.no_grad():
        for _ in range(6):
            logits = model(input_ids=ids).logits[0, -1].float()
            p = torch.softmax(logits, -1)
            expected_h.append(float(-(p * torch.log_softmax(logits, -1)).sum()))
            expected_ids.append(int(logits.argmax()))
            ids = torch.cat([ids, logits.argmax().view(1, 1)], dim=1)
    assert out.token_ids == expected_ids and out.finish_reason == "length"
    assert out.entropies == pytest.approx(expected_h, abs=1e-4)
    assert out.text == tokenizer.decode(expected_ids, skip_special_tokens=True) == "".join(out.tokens)
    assert out.alternatives[0][0][0] == tokenizer.decode([expected_ids[0]]) and len(out.alternatives[0]) == 3
    assert stats.generated_tokens == 6 and stats.ttft_s > 0 and stats.tokens_per_s > 0


def test_the_warm_up_is_timed_apart_and_changes_no_answer(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    settings = GenerationSettings(max_new_tokens=5, batch_size=2)
    cold = generate(model, tokenizer, QUESTIONS, settings)
    stats = GenerationStats()
    warm_up(model, tokenizer, QUESTIONS, settings, stats)
    assert stats.warmup_s > 0 and stats.batches == stats.generated_tokens == 0 and not stats.first_token_s
    warm = generate(model, tokenizer, QUESTIONS, settings, stats=stats)
    assert [g.token_ids for g in warm] == [g.token_ids for g in cold] and stats.batches == 2
    assert stats.summary()["warmup_s"] == round(stats.warmup_s, 4)


def test_batches_give_the_answers_of_one_prompt_at_a_time(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    settings = GenerationSettings(max_new_tokens=5, batch_size=3)
    batched = generate(model, tokenizer, QUESTIONS, settings)
    alone = [generate(model, tokenizer, [q], settings.model_copy(update={"batch_size": 1}))[0] for q in QUESTIONS]
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    flat = [h for g in batched for h in g.entropies]
    assert flat == pytest.approx([h for g in alone for h in g.entropies], abs=1e-3)


def test_it_stops_at_the_end_of_the_turn(model_and_tokenizer, tiny_tokenizer) -> None:
    model, _ = model_and_tokenizer
    [free] = generate(model, tiny_tokenizer, QUESTIONS[:1], GenerationSettings(max_new_tokens=4))
    stop = free.token_ids[2]
    tiny_tokenizer.eos_token = tiny_tokenizer.convert_ids_to_tokens(stop)  # that token now ends the turn
    [stopped] = generate(model, tiny_tokenizer, QUESTIONS[:1], GenerationSettings(max_new_tokens=4))
    first = free.token_ids.index(stop)
    assert stopped.token_ids == free.token_ids[: first + 1] and stopped.finish_reason == "stop"
    assert stopped.special[-1] == tiny_tokenizer.eos_token and stopped.tokens[-1] == ""
    # the template's end-of-turn marker stops generation whatever the tokenizer's EOS is
    tiny_tokenizer.eos_token = "<|endoftext|>"
    assert tiny_tokenizer.convert_tokens_to_ids("<|im_end|>") in stop_token_ids(tiny_tokenizer, model)


def test_sampling_is_reproducible_with_its_seed(model_and_tokenizer) -> None:
    model, tokenizer = model_and_tokenizer
    hot = GenerationSettings(max_new_tokens=6, temperature=1.0, seed=1)
    first = [g.token_ids for g in generate(model, tokenizer, QUESTIONS[:2], hot)]
    assert first == [g.token_ids for g in generate(model, tokenizer, QUESTIONS[:2], hot)]
    other = [g.token_ids for g in generate(model, tokenizer, QUESTIONS[:2], hot.model_copy(update={"seed": 2}))]
    greedy = [g.token_ids for g in generate(model, tokenizer, QUESTIONS[:2], GenerationSettings(max_new_tokens=6))]
    assert other != first and greedy != first


def test_a_chat_prompt_is_the_template_with_its_generation_prompt_and_one_bos() -> None:
    """What GRPO's held-out rewards, the enhance student and a local teacher send: the chat template's own
    rendering, its BOS once (a Llama tokenizer adds one itself: the template's would be doubled)."""
    from finetune_mcp.model.generate import chat_prompt
    from finetune_mcp.testing.template_tokenizers import build_template_tokenizer

    tokenizer = build_template_tokenizer("llama3_1")
    messages = [{"role": "user", "content": "what color is the sky?"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt = chat_prompt(tokenizer, messages)
    assert prompt == PlainText(rendered, special_tokens=False) == chat_prompt(tokenizer, messages[0]["content"])
    ids = prompt_ids(tokenizer, prompt)
    assert ids == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids.count(tokenizer.bos_token_id) == 1 and ids[0] == tokenizer.bos_token_id
    assert prompt_ids(tokenizer, PlainText(rendered)).count(tokenizer.bos_token_id) == 2  # why the flag exists
