"""The lean mode switches and FLOP count give the Trainer the same answers at a constant cost."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture()
def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return get_peft_model(model, LoraConfig(r=4, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                                            task_type="CAUSAL_LM"))


def test_train_after_eval_puts_every_module_back_in_training_mode(lora_model):
    from finetune_mcp.train.lean_step import make_mode_switches_lean

    make_mode_switches_lean(lora_model)
    make_mode_switches_lean(lora_model)  # idempotent: one wrapper, not two
    lora_model.train()
    assert all(m.training for m in lora_model.modules())
    lora_model.eval()  # e.g. evaluation or generation between steps
    assert not any(m.training for m in lora_model.modules())
    lora_model.train()
    assert all(m.training for m in lora_model.modules())
    lora_model.train(False)
    assert not any(m.training for m in lora_model.modules())


def test_repeated_train_calls_skip_the_walk(lora_model):
    from finetune_mcp.train.lean_step import make_mode_switches_lean

    make_mode_switches_lean(lora_model)
    lora_model.train()
    walked = []
    first_child = next(lora_model.children())
    original = first_child.train
    first_child.train = lambda mode=True: walked.append(mode) or original(mode)
    lora_model.train()
    lora_model.train()
    assert walked == []  # nothing changed mode since the last walk
    lora_model.eval()
    lora_model.train()
    assert walked == [False, True]


def test_zero_grad_clears_the_trainable_gradients(lora_model):
    from finetune_mcp.train.lean_step import make_mode_switches_lean

    make_mode_switches_lean(lora_model)
    ids = torch.randint(3, 100, (2, 6))
    lora_model(input_ids=ids, labels=ids).loss.backward()
    trainable = [p for p in lora_model.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in trainable)
    lora_model.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in trainable)
    lora_model.zero_grad()
    assert all(p.grad is None for p in lora_model.parameters())


def test_the_flop_count_is_the_trainers(lora_model, tmp_path):
    from transformers import Trainer, TrainingArguments

    from finetune_mcp.train.lean_step import LeanStepMixin

    class Lean(LeanStepMixin, Trainer):
        pass

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    inputs = {"input_ids": torch.zeros(4, 10, dtype=torch.long)}
    expected = Trainer(model=lora_model, args=args).floating_point_ops(inputs)
    lean = Lean(model=lora_model, args=args)
    assert expected > 0
    assert lean.floating_point_ops(inputs) == lean.floating_point_ops(inputs) == expected
