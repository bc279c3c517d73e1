"""`sample.gguf`'s entropy from raw logits and its sampler: the figures the GGUF column reports."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finetune_mcp.model.generation_settings import GenerationSettings
from finetune_mcp.sample.gguf import entropy_from_logits, sampler


def test_uniform_logits_have_log_v_entropy() -> None:
    entropy, ids, probs = entropy_from_logits(np.zeros(1000, dtype=np.float32), 3)
    assert entropy == pytest.approx(math.log(1000), abs=1e-9)
    assert len(set(ids)) == 3 and probs == pytest.approx([1e-3] * 3)


def test_a_peaked_distribution_matches_torch_and_is_shift_invariant() -> None:
    import torch

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(50_000) * 4).astype(np.float32)
    logits[123] = 40.0
    entropy, ids, probs = entropy_from_logits(logits, 2)
    logp = torch.log_softmax(torch.tensor(logits), -1)
    assert entropy == pytest.approx(float(-(logp.exp() * logp).sum()), abs=1e-5)
    assert ids[0] == 123 and probs[0] == pytest.approx(float(logp[123].exp()), rel=1e-5)
    assert entropy_from_logits(logits + 1000.0)[0] == pytest.approx(entropy, abs=1e-9)


def test_minus_infinity_logits_count_as_zero_probability() -> None:
    entropy, _, probs = entropy_from_logits(np.array([0.0, 0.0, -np.inf, -np.inf]), 4)
    assert entropy == pytest.approx(math.log(2)) and probs[:2] == pytest.approx([0.5, 0.5]) and probs[2:] == [0, 0]
    assert entropy_from_logits(np.array([5.0, -np.inf]))[0] == 0.0


def test_greedy_takes_the_argmax_and_sampling_is_seeded_and_respects_top_p() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    assert sampler(GenerationSettings())(logits) == 0
    hot = GenerationSettings(temperature=1.0, seed=7)
    draws = [sampler(hot) for _ in range(2)]
    first, second = ([d(logits) for _ in range(200)] for d in draws)
    assert first == second and set(first) == {0, 1, 2, 3}
    nucleus = sampler(GenerationSettings(temperature=1.0, top_p=0.7, seed=1))
    assert {nucleus(logits) for _ in range(300)} == {0, 1}
