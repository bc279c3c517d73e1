"""The trainer's loss: by hand on a small packed batch, and the entropy bookkeeping."""

from __future__ import annotations

import math

import pytest
import torch

from finetune_mcp.train.entropy import EntropyTracker
from finetune_mcp.train.sft.trainer import IGNORE_INDEX, shift_labels


def test_shift_labels_masks_sequence_starts_in_packed_rows():
    labels = torch.tensor([[5, 6, 7, 8, 9, 10]])
    position_ids = torch.tensor([[0, 1, 2, 0, 1, 2]])  # two sequences packed in one row
    shifted = shift_labels(labels, position_ids)
    # position 2 would predict token 8, the first token of the next sequence: ignored
    assert shifted.tolist() == [[6, 7, IGNORE_INDEX, 9, 10]]
    assert shift_labels(labels, None).tolist() == [[6, 7, 8, 9, 10]]


@pytest.fixture(scope="module")
def trainer_and_model(tiny_model_dir, tmp_path_factory):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    from finetune_mcp.config import EntropyConfig
    from finetune_mcp.train.sft.trainer import EnhancedUnslothTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    data = Dataset.from_list([{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}])
    args = SFTConfig(output_dir=str(tmp_path_factory.mktemp("out")), use_cpu=True, bf16=False, report_to="none")
    trainer = EnhancedUnslothTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                                     entropy_weighting=True, entropy_config=EntropyConfig())
    return trainer, model


def test_weighted_loss_matches_a_hand_computation_on_a_packed_batch(trainer_and_model):
    trainer, model = trainer_and_model
    torch.manual_seed(0)
    vocab = model.get_base_model().config.vocab_size
    input_ids = torch.randint(3, vocab, (1, 12))
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 6]])
    labels = input_ids.clone()
    labels[0, :2] = IGNORE_INDEX  # a prompt
    labels[0, 5:7] = IGNORE_INDEX  # the second sequence's prompt
    model.train()
    num_items = torch.tensor(9)
    inputs = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
    loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=num_items)

    with torch.no_grad():
        logits = model(input_ids=input_ids, position_ids=position_ids).logits[0, :-1].double()
    targets = labels[0, 1:].clone()
    targets[position_ids[0, 1:] == 0] = IGNORE_INDEX
    valid = targets != IGNORE_INDEX
    logp = logits.log_softmax(-1)
    entropy = -(logp.exp() * logp).sum(-1)
    ce = -logp[torch.arange(11), targets.clamp(min=0)]
    weights = 1 + entropy / math.log(vocab)
    expected = (weights * ce)[valid].sum() / 9
    assert valid.sum() == 8  # 11 positions - 2 prompt labels - 1 boundary
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)

    loss.backward()  # gradients reach the LoRA weights
    grads = [p.grad for n, p in model.named_parameters() if "lora_" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad()


def test_weighting_off_is_plain_ce_and_eval_reports_plain_ce(trainer_and_model):
    trainer, model = trainer_and_model
    input_ids = torch.randint(3, 100, (2, 6))
    inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}
    model.eval()
    with torch.no_grad():
        eval_loss = trainer.compute_loss(model, dict(inputs))
        logits = model(input_ids=input_ids).logits[:, :-1]
        plain = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))
    assert eval_loss.item() == pytest.approx(plain.item(), rel=1e-4)
    model.train()


def test_tracker_threshold_share_sample_and_top_tokens():
    tracker = EntropyTracker(threshold=None, percentile=90, sample_size=50, seed=0)
    entropy = torch.linspace(0, 9.9, 100)
    ids = torch.tensor([7 if h > 8.95 else 3 for h in entropy.tolist()])
    tracker.update(entropy, ce=torch.ones(100), weights=torch.full((100,), 2.0), labels=ids)
    metrics, window = tracker.flush()
    assert tracker.threshold == pytest.approx(float(torch.quantile(entropy, 0.9)))
    assert metrics["high_entropy_share"] == pytest.approx(0.10)
    assert metrics["entropy_mean"] == pytest.approx(4.95)
    assert metrics["weighted_loss"] == pytest.approx(2.0) and metrics["ce_loss"] == pytest.approx(1.0)
    assert window.numel() == 100
    summary = tracker.epoch_summary(1, decode=lambda i: f"tok{i}")
    assert len(summary["entropies"]) == 50  # reservoir-bounded
    assert summary["top_tokens"][0]["token"] == "tok7"
    assert summary["top_tokens"][0]["count"] == 10
    assert tracker.flush() == ({}, None)  # the window was closed


@pytest.mark.parametrize("padding_free", [False, True])
def test_example_weights_follow_the_labels_layout(padding_free):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from finetune_mcp.train.sft.trainer import ExampleWeightCollator

    collate = ExampleWeightCollator(DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free))
    batch = collate([
        {"input_ids": [5, 6, 7], "labels": [5, 6, 7], "example_weight": 0.5},
        {"input_ids": [8, 9], "labels": [8, 9], "example_weight": 2.0},
    ])
    if padding_free:
        assert batch["token_weights"].tolist() == [[0.5, 0.5, 0.5, 2.0, 2.0]]
    else:
        assert batch["token_weights"].tolist() == [[0.5, 0.5, 0.5], [2.0, 2.0, 2.0]]


def test_an_example_with_weight_zero_adds_nothing_to_the_loss(trainer_and_model):
    trainer, model = trainer_and_model
    torch.manual_seed(1)
    ids = torch.randint(3, 100, (2, 7))
    mask = torch.ones_like(ids)
    model.train()
    both = {"input_ids": ids, "attention_mask": mask, "labels": ids.clone(),
            "token_weights": torch.tensor([[0.0] * 7, [1.0] * 7])}
    only_second = {"input_ids": ids, "attention_mask": mask, "labels": ids.clone()}
    only_second["labels"][0] = IGNORE_INDEX
    normalizer = torch.tensor(12)
    weighted = trainer.compute_loss(model, both, num_items_in_batch=normalizer)
    reference = trainer.compute_loss(model, only_second, num_items_in_batch=normalizer)
    assert weighted.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize("function", ["linear", "top_entropy"])
def test_all_rows_through_the_head_give_the_same_loss_gradients_and_metrics(trainer_and_model, function):
    """A graph step sends every position through the head (no host sync), masking ignored ones in the
    kernel; an eager step selects the trained rows first. Same loss, same gradients, same logged metrics."""
    from finetune_mcp.config import EntropyConfig
    from finetune_mcp.train.sft.trainer import weight_spec

    trainer, model = trainer_and_model
    trainer._weight_spec = weight_spec(EntropyConfig(function=function))
    torch.manual_seed(2)
    ids = torch.randint(3, 100, (2, 9))
    labels = ids.clone()
    labels[:, :4] = IGNORE_INDEX  # prompts
    labels[1, 7:] = IGNORE_INDEX  # padding
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels,
              "token_weights": torch.tensor([[0.5] * 9, [2.0] * 9])}
    model.train()
    trainer.entropy_trackers["train"].flush()  # what earlier tests left in the window
    results = {}
    try:
        for rows in ("trained", "all"):
            trainer.head_rows = rows
            loss = trainer.compute_loss(model, dict(inputs), num_items_in_batch=torch.tensor(8))
            loss.backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
            model.zero_grad()
            metrics, window = trainer.entropy_trackers["train"].flush()
            results[rows] = (loss.detach(), grads, metrics, window)
    finally:
        trainer.head_rows = "trained"
        trainer._weight_spec = weight_spec(EntropyConfig())
    (loss_t, grads_t, metrics_t, window_t), (loss_a, grads_a, metrics_a, window_a) = results["trained"], results["all"]
    assert loss_a.item() == pytest.approx(loss_t.item(), rel=1e-5)
    assert grads_t.keys() == grads_a.keys() and grads_t
    for name, grad in grads_t.items():
        torch.testing.assert_close(grads_a[name], grad, rtol=1e-4, atol=1e-6)
    assert window_a.numel() == window_t.numel() == 8  # only trained tokens are logged
    assert metrics_a == pytest.approx(metrics_t, rel=1e-5)
