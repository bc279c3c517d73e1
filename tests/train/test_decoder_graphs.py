"""The causal-only decoder path (`train.decoder_graphs`) computes what the model's own forward does.

On the CPU the eager form is compared with the model (hidden states at real positions and the LoRA
gradients of a loss over them); the CUDA-graph form is compared with the eager one on a GPU
(`-m gpu`, run on the device machine).
"""

from __future__ import annotations

import pytest
import torch

from finetune_mcp.testing.tiny_model import build_tiny_model
from finetune_mcp.train.decoder_graphs import EagerDecoder, is_right_padded, unsupported_reason


def _lora_model(tmp_path, device="cpu", attn="sdpa"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = build_tiny_model(tmp_path / "m")
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation=attn, dtype=torch.float32).to(device)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                             task_type="CAUSAL_LM"))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # B starts at zero; make the adapter matter
            param.data.normal_(0, 0.05)
    return model


def _right_padded_batch(device="cpu"):
    torch.manual_seed(1)
    lengths = [7, 5, 3]
    ids = torch.randint(5, 500, (3, 8), device=device)
    mask = torch.zeros(3, 8, dtype=torch.long, device=device)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = 0
    return ids, mask


def _real(hidden, mask):
    return hidden[mask.bool()]


def test_causal_only_equals_the_masked_forward_and_its_gradients(tmp_path):
    model = _lora_model(tmp_path)
    lm = model.get_base_model()
    ids, mask = _right_padded_batch()

    expected = lm.model(input_ids=ids, attention_mask=mask).last_hidden_state
    (_real(expected, mask).square().sum()).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()

    got = EagerDecoder(lm)(ids)
    assert torch.allclose(_real(got, mask), _real(expected, mask), atol=1e-5)
    (_real(got, mask).square().sum()).backward()
    for name, param in model.named_parameters():
        if param.requires_grad:
            assert torch.allclose(param.grad, want[name], atol=1e-5, rtol=1e-4), name


def test_right_padding_is_told_from_left_padding():
    assert is_right_padded(torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert not is_right_padded(torch.tensor([[0, 1, 1], [1, 1, 1]]))
    assert is_right_padded(None)


def test_models_it_cannot_run_are_named_with_the_reason(tmp_path):
    model = _lora_model(tmp_path, attn="eager").get_base_model()
    assert "eager" in unsupported_reason(model)
    assert unsupported_reason(_lora_model(tmp_path / "b").get_base_model()) is None


@pytest.mark.gpu
def test_graph_replay_matches_eager_on_cuda(tmp_path):
    from finetune_mcp.train.decoder_graphs import GraphedDecoder

    model = _lora_model(tmp_path, device="cuda")
    lm = model.get_base_model()
    ids, mask = _right_padded_batch("cuda")
    out = EagerDecoder(lm)(ids)
    _real(out, mask).square().sum().backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    eager = out.detach()
    del out  # as in training: no earlier backward's graph alive at capture (see the module docstring)
    model.zero_grad()
    graphed = GraphedDecoder(lm)
    for _ in range(3):  # capture, then replays; gradients of each replay match eager's
        model.zero_grad()
        got = graphed(ids)
        assert torch.allclose(_real(got, mask), _real(eager, mask), atol=1e-4)
        _real(got, mask).square().sum().backward()
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert torch.allclose(param.grad, want[name], atol=1e-4, rtol=1e-3), name
    assert list(graphed.graphs) == [tuple(ids.shape)]


@pytest.mark.gpu
def test_gradients_accumulate_exactly_across_replays(tmp_path):
    """Two micro-batches of one shape, gradients unset before the first (as after an optimiser step):
    the accumulated gradient is the eager sum, not the second replay's buffer counted twice."""
    from finetune_mcp.train.decoder_graphs import GraphedDecoder

    model = _lora_model(tmp_path, device="cuda")
    lm = model.get_base_model()
    ids1, mask = _right_padded_batch("cuda")
    ids2 = (ids1 * 7 + 3) % 500
    ids2[~mask.bool()] = 0
    for ids in (ids1, ids2):
        _real(EagerDecoder(lm)(ids), mask).square().sum().backward()  # nothing of these graphs stays alive
    want = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    graphed = GraphedDecoder.for_model(lm)
    assert GraphedDecoder.for_model(lm) is graphed
    graphed(ids1)  # capture first
    for _ in range(2):  # two "optimiser steps", each of two micro-batches
        model.zero_grad(set_to_none=True)
        for ids in (ids1, ids2):
            _real(graphed(ids), mask).square().sum().backward()
        for name, param in model.named_parameters():
            if param.requires_grad:
                assert torch.allclose(param.grad, want[name], atol=1e-4, rtol=1e-3), name


def test_capture_runs_in_thread_local_mode_and_the_default_comes_back():
    """make_graphed_callables offers no capture mode; ours patches the default for its own capture only."""
    import inspect

    from finetune_mcp.train.decoder_graphs import _thread_local_capture

    def mode() -> str:
        return inspect.signature(torch.cuda.graph.__init__).parameters["capture_error_mode"].default

    assert mode() == "global"
    with _thread_local_capture():
        assert mode() == "thread_local"
    assert mode() == "global"
