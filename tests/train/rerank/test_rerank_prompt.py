"""The Qwen3-Reranker format and loss: the exact public prompt, truncation that keeps the suffix, the
answer tokens, training rows, scoring from two lm_head rows equal to the full-logit computation, and
the trainer's pointwise / listwise losses (with and without entropy weighting) against hand-written
torch."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from finetune_mcp.errors import ConfigError
from finetune_mcp.train.rerank.prompt import (
    DEFAULT_INSTRUCTION,
    PREFIX,
    SUFFIX,
    RerankPrompt,
    answer_token_ids,
    pad_right,
    score_groups,
    training_rows,
)

GROUPS = [
    {"query": "what is the apple?", "instruction": None, "docs": ["the apple is red", "the sky is blue", "a list"],
     "relevance": [1.0, 0.0, 0.0]},
    {"query": "find the graph", "instruction": "Find nodes", "docs": ["graph node edge", "lemon", "graph of code"],
     "relevance": [2.0, 0.0, 1.0]},
]


def test_prompt_is_the_public_qwen3_reranker_format(tiny_tokenizer) -> None:
    assert PREFIX == ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query '
                      'and the Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n'
                      '<|im_start|>user\n')
    assert SUFFIX == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prompt = RerankPrompt(tiny_tokenizer, 512)
    with_instruction, default = prompt.encode_many([("q", "d", "Find it"), ("q", "d", None)])
    assert tiny_tokenizer.decode(with_instruction) == PREFIX + "<Instruct>: Find it\n<Query>: q\n<Document>: d" + SUFFIX
    assert tiny_tokenizer.decode(default) == (PREFIX + f"<Instruct>: {DEFAULT_INSTRUCTION}\n<Query>: q\n"
                                              "<Document>: d" + SUFFIX)
    assert with_instruction[:len(prompt.prefix_ids)] == prompt.prefix_ids  # <|im_start|> is one special token
    assert tiny_tokenizer.convert_ids_to_tokens(prompt.prefix_ids[0]) == "<|im_start|>"


def test_long_documents_lose_their_end_never_the_suffix(tiny_tokenizer) -> None:
    prompt = RerankPrompt(tiny_tokenizer, 160)
    [ids] = prompt.encode_many([("what is the apple?", "apple " * 200, None)])
    assert len(ids) == 160 and prompt.truncated == 1
    assert ids[-len(prompt.suffix_ids):] == prompt.suffix_ids
    with pytest.raises(ConfigError, match=r"max_seq_length=100 leaves .* raise max_seq_length"):
        RerankPrompt(tiny_tokenizer, 100)


def test_answer_tokens(tiny_tokenizer) -> None:
    no, yes = answer_token_ids(tiny_tokenizer)  # "yes" is two tokens here: its first one stands for it
    assert no == tiny_tokenizer.encode("no", add_special_tokens=False)[0]
    assert yes == tiny_tokenizer.encode("yes", add_special_tokens=False)[0] and yes != no
    tiny_tokenizer.add_tokens(["yes"])  # a vocabulary with the word as one token (Qwen3) uses that token
    assert answer_token_ids(tiny_tokenizer)[1] == tiny_tokenizer.convert_tokens_to_ids("yes")


def test_training_rows(tiny_tokenizer) -> None:
    prompt = RerankPrompt(tiny_tokenizer, 256)
    pointwise = training_rows(GROUPS, prompt, "pointwise", 8, seed=0)
    assert len(pointwise) == 6 and [row["labels"] for row in pointwise] == [[1], [0], [0], [1], [0], [1]]
    listwise = training_rows(GROUPS, prompt, "listwise", 8, seed=0)
    # group 1: the relevant doc + both others; group 2: doc 0 (rel 2) over docs 1, 2; doc 2 (rel 1) over doc 1
    assert [row["labels"] for row in listwise] == [[1, -100, -100], [1, -100, -100], [1, -100]]
    encoded = prompt.encode_groups(GROUPS)
    assert listwise[2]["input_ids"] == [encoded[1][2], encoded[1][1]]
    capped = training_rows(GROUPS, prompt, "listwise", 2, seed=0)
    assert all(len(row["input_ids"]) == 2 for row in capped)
    with pytest.raises(ConfigError, match="no listwise group can be formed"):
        training_rows([{**GROUPS[0], "relevance": [1.0, 1.0, 1.0]}], prompt, "listwise", 8, seed=0)


@pytest.fixture(scope="module")
def tiny_lm(tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval(), AutoTokenizer.from_pretrained(
        str(tiny_model_dir))


def full_logit_p_yes(model, prompt: RerankPrompt, ids: list[int]) -> float:
    """The reference: the whole model's logits at the last position, softmax over [no, yes]."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    return torch.softmax(logits[[prompt.no_id, prompt.yes_id]], -1)[1].item()


def test_scores_equal_the_full_logit_computation(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    prompt = RerankPrompt(tokenizer, 256)
    scores = score_groups(model, prompt, GROUPS, batch_size=4)  # mixed lengths in a batch: right padding
    encoded = prompt.encode_groups(GROUPS)
    for group_scores, group_ids in zip(scores, encoded, strict=True):
        for score, ids in zip(group_scores, group_ids, strict=True):
            assert score == pytest.approx(full_logit_p_yes(model, prompt, ids), abs=1e-5)
    assert len({round(s, 6) for g in scores for s in g}) == 6  # the documents really differ


def make_trainer(model_dir: Path, rows, listwise: bool, weighting: bool, tmp_path: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from finetune_mcp.train.rerank.trainer import RerankCollator, RerankTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(model_dir)),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", per_device_train_batch_size=2,
                     dataset_kwargs={"skip_prepare_dataset": True}, padding_free=False, disable_tqdm=True)
    prompt = RerankPrompt(tokenizer, 256)
    return RerankTrainer(model=model, args=args, train_dataset=rows, processing_class=tokenizer,
                         data_collator=RerankCollator(tokenizer.pad_token_id), answer_ids=(prompt.no_id, prompt.yes_id),
                         listwise=listwise, entropy_weighting=weighting), prompt


def answer_logits(model, prompt: RerankPrompt, sequences: list[list[int]]) -> torch.Tensor:
    """[n, 2] logits of (no, yes) at each sequence's last token, from the full model (the reference)."""
    rows = []
    for ids in sequences:
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
        rows.append(logits[[prompt.no_id, prompt.yes_id]])
    return torch.stack(rows)


@pytest.mark.parametrize("weighting", [False, True], ids=["plain", "entropy-weighted"])
def test_pointwise_loss_by_hand(tiny_model_dir: Path, tiny_tokenizer, tmp_path: Path, weighting: bool) -> None:
    prompt = RerankPrompt(tiny_tokenizer, 256)
    rows = training_rows(GROUPS, prompt, "pointwise", 8, seed=0)
    trainer, prompt = make_trainer(tiny_model_dir, rows, listwise=False, weighting=weighting, tmp_path=tmp_path)
    batch = trainer.data_collator([rows[i] for i in range(4)])
    _, num_items = trainer.get_batch_samples(iter([batch, batch]), 2, "cpu")
    assert int(num_items) == 8  # one item per prompt, over both accumulated batches
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=torch.tensor(4))
    sequences = [rows[i]["input_ids"][0] for i in range(4)]
    logp = torch.log_softmax(answer_logits(trainer.model, prompt, sequences).float(), -1)
    labels = torch.tensor([rows[i]["labels"][0] for i in range(4)])
    ce = -logp[torch.arange(4), labels]
    entropy = -(logp.exp() * logp).sum(-1)
    weights = 1 + entropy / math.log(2) if weighting else torch.ones(4)
    assert loss.item() == pytest.approx((weights * ce).sum().item() / 4, rel=1e-4)
    assert (entropy <= math.log(2) + 1e-6).all()  # the answer distribution's entropy, not the vocabulary's
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in trainer.model.named_parameters()
               if "lora_" in n)


@pytest.mark.parametrize("weighting", [False, True], ids=["plain", "entropy-weighted"])
def test_listwise_loss_by_hand(tiny_model_dir: Path, tiny_tokenizer, tmp_path: Path, weighting: bool) -> None:
    prompt = RerankPrompt(tiny_tokenizer, 256)
    rows = training_rows(GROUPS, prompt, "listwise", 8, seed=0)  # groups of 3, 3 and 2 prompts
    trainer, prompt = make_trainer(tiny_model_dir, rows, listwise=True, weighting=weighting, tmp_path=tmp_path)
    batch = trainer.data_collator([rows[i] for i in range(3)])
    assert batch["group_index"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
    _, num_items = trainer.get_batch_samples(iter([batch]), 1, "cpu")
    assert int(num_items) == 3  # one item per group
    loss = trainer.compute_loss(trainer.model, batch, num_items_in_batch=num_items)
    expected = []
    for row in (rows[i] for i in range(3)):
        z = answer_logits(trainer.model, prompt, row["input_ids"]).float()
        logp = torch.log_softmax(z[:, 1] - z[:, 0], -1)  # over the group's yes-vs-no log-odds
        entropy = -(logp.exp() * logp).sum()
        weight = 1 + entropy / math.log(len(row["input_ids"])) if weighting else 1.0
        expected.append(weight * -logp[0])  # the relevant prompt is first
    assert loss.item() == pytest.approx(sum(expected).item() / 3, rel=1e-4)


def test_pad_right() -> None:
    ids, mask = pad_right([[5, 6, 7], [8]], 0, width=4)
    assert ids.tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]] and mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
