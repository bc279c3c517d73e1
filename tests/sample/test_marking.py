"""High-entropy spans, the threshold, answers and matches: pure functions on hand-made generations."""

from __future__ import annotations

import pytest

from finetune_mcp.model.generate import Generation
from finetune_mcp.sample.marking import (
    answer_of,
    choose_threshold,
    high_entropy_spans,
    marked_text,
    matches,
    percentile,
)


def generation(tokens: list[str], entropies: list[float], special: list[str | None] | None = None) -> Generation:
    return Generation(text="".join(tokens), token_ids=list(range(len(tokens))), tokens=tokens,
                      special=special or [None] * len(tokens), entropies=entropies,
                      alternatives=[[(t, 0.5), ("x", 0.25)] for t in tokens], finish_reason="stop", prompt_tokens=3)


def test_runs_of_high_entropy_tokens_become_spans_with_offsets_and_alternatives() -> None:
    g = generation(["The", " sky", " is", " blue", "."], [0.1, 2.5, 3.0, 0.2, 4.0])
    spans = high_entropy_spans(g, threshold=1.0)
    assert [(s.start_token, s.end_token, s.text) for s in spans] == [(1, 3, " sky is"), (4, 5, ".")]
    assert (spans[0].start, spans[0].end) == (3, 10) and g.text[3:10] == " sky is"
    assert spans[0].max_entropy == 3.0 and spans[0].mean_entropy == pytest.approx(2.75)
    assert spans[0].alternatives == [(" sky", 0.5), ("x", 0.25)]  # where the uncertainty starts
    assert marked_text(g, spans) == "The⟦ sky is⟧ blue⟦.⟧"
    assert high_entropy_spans(g, threshold=None) == [] and marked_text(g, []) == g.text


def test_a_special_token_in_a_span_shows_by_name_and_an_invisible_span_stays_unmarked() -> None:
    g = generation(["blue", "", ""], [0.1, 5.0, 5.0], special=[None, None, "<|im_end|>"])
    spans = high_entropy_spans(g, threshold=1.0)
    assert [s.text for s in spans] == ["<|im_end|>"] and marked_text(g, spans) == "blue⟦<|im_end|>⟧"
    bytes_only = generation(["a", "", "é"], [0.1, 5.0, 0.1])  # a byte that completes a character later
    spans = high_entropy_spans(bytes_only, threshold=1.0)
    assert len(spans) == 1 and spans[0].text == "" and marked_text(bytes_only, spans) == "aé"


def test_threshold_is_the_given_one_else_a_percentile_of_all_tokens() -> None:
    values = [float(v) for v in range(11)]  # 0..10
    assert percentile(values, 90) == pytest.approx(9.0) and percentile(values, 25) == pytest.approx(2.5)
    assert percentile([], 90) is None
    assert choose_threshold(4.2, "the run's", values, 90) == (4.2, "the run's")
    value, source = choose_threshold(None, "", values, 90)
    assert value == pytest.approx(9.0) and "90th percentile of the 11 tokens" in source


def test_answers_drop_a_leading_think_block_and_match_exactly_or_normalised() -> None:
    assert answer_of("<think>\nhmm\n</think>\n\n Blue. ") == "Blue."
    assert answer_of("no think here") == "no think here"
    assert matches("Blue.", "blue") == (False, True)
    assert matches("blue", "blue") == (True, True)
    assert matches("red", "blue") == (False, False)
    assert matches("blue", "<think>sky</think>blue") == (True, True)  # reasoning in the reference is not the answer
    assert matches("blue", None) == (None, None)
