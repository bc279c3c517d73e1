"""Which verification figures fail an export: the rules alone, on figures written out by hand."""

from __future__ import annotations

from finetune_mcp.export.quantization import parse_quantization
from finetune_mcp.export.verify import _failures

PASSING = {"prompts": 6, "tokenizer_identical": 6, "greedy_differences_not_at_ties": 0,
           "top1_agreement": 1.0, "top1_agreement_clear": 1.0, "positions_clear": 200, "max_abs_logit_diff": 0.01}


def test_near_ties_flipping_at_16_bit_do_not_fail_a_float_file() -> None:
    """An untrained model's flat logits: 0.9894 over all positions, every clear position agrees."""
    assert _failures({**PASSING, "top1_agreement": 0.9894}, parse_quantization("f16")) == []


def test_flips_where_the_choice_was_clear_fail_a_float_file_with_the_count() -> None:
    failures = _failures({**PASSING, "top1_agreement_clear": 0.95}, parse_quantization("f16"))
    assert len(failures) == 1 and "0.9500 at the 200 positions with a clear choice" in failures[0]


def test_a_quantised_file_is_judged_on_its_tokenizer_only() -> None:
    figures = {**PASSING, "top1_agreement_clear": 0.5, "greedy_differences_not_at_ties": 3}
    assert _failures(figures, parse_quantization("q4_k_m")) == []
    assert "tokenises 1 of 6" in _failures({**figures, "tokenizer_identical": 5}, parse_quantization("q4_k_m"))[0]
