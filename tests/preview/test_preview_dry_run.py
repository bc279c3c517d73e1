"""preview/dry_run.py in this process: every dataset format, the real templates, the numbers against
the training code's own, the warnings, and the refusals start_finetune would give."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from finetune_mcp.config import Settings, build_config
from finetune_mcp.data.chat_tokens import tokenize_with_stats
from finetune_mcp.data.loader import load_examples
from finetune_mcp.errors import DatasetError, FinetuneError, ModelError
from finetune_mcp.model.loading import load_tokenizer
from finetune_mcp.preview.dry_run import preview_training
from finetune_mcp.testing import write_dataset
from finetune_mcp.testing.rank_datagen import write_ranking_dataset
from finetune_mcp.testing.template_tokenizers import FAMILIES
from finetune_mcp.train.preflight import check_start

from .support import chat, snapshot, write_rows

DETECTED = {"alpaca": "alpaca", "messages": "messages", "sharegpt": "sharegpt", "prompt_completion": "prompt_completion",
            "text": "text", "arangodb": "arangodb", "json": "alpaca", "csv": "alpaca", "parquet": "messages"}
SUFFIX = {"json": ".json", "csv": ".csv", "parquet": ".parquet"}
TRAINED = re.compile(r"\[\[(.*?)\]\]", re.S)


def preview(settings: Settings, target: str = "auto", examples: int = 3, **fields):
    return preview_training(build_config(fields), target, settings=settings, examples=examples)


def test_messages_preview_matches_what_training_computes(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_dataset(tmp_path / "train.jsonl", "messages", n=40)
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data))
    config = check_start(build_config({"model": str(tiny_model_dir), "dataset": str(data)}), settings)
    loaded = load_examples(config)
    _, stats = tokenize_with_stats(loaded.train, load_tokenizer(str(tiny_model_dir)), config.max_seq_length)

    assert report.data.format == "messages" and "'messages' list" in report.data.format_reason
    assert (report.data.rows_read, report.data.train_rows, report.data.validation_rows) == (40, 36, 4)
    assert report.lengths.sampled_rows == 36
    assert report.lengths.tokens_per_epoch == stats.tokens
    assert report.lengths.trained_tokens_per_epoch == stats.trainable_tokens
    assert report.lengths.steps_per_epoch == math.ceil(math.ceil(36 / 2) / 4) == report.lengths.total_steps
    assert report.end_of_turn == "<|im_end|>"
    first = report.examples[0]
    reply = loaded.train[0]["messages"][-1]["content"]
    assert TRAINED.findall(first.text) == [f"{reply}<|im_end|>"]  # the reply and its end-of-turn, nothing else
    assert first.text.startswith("<|im_start|>user\n") and first.ends_with_end_of_turn
    assert first.trained_tokens + first.masked_tokens == first.tokens
    assert report.estimate.device == "cpu" and report.estimate.memory_gb is not None
    assert report.estimate.total_seconds is not None and "CPU measurement" in report.estimate.basis
    assert report.settings["learning_rate"] == 2e-4 and "start_finetune" in report.hint


@pytest.mark.parametrize("fmt", sorted(DETECTED))
def test_every_file_format(fmt: str, tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_dataset(tmp_path / f"train{SUFFIX.get(fmt, '.jsonl')}", fmt, n=24)
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data))
    assert report.data.format == DETECTED[fmt]
    assert report.data.kind == ("folder" if fmt == "arangodb" else "file")
    assert report.data.train_rows + report.data.validation_rows == 24
    assert report.examples and all(ex.trained_tokens > 0 for ex in report.examples)
    if fmt == "text":  # every token trained, and the EOS closes the text
        assert all(ex.masked_tokens == 0 and ex.text.endswith("<|im_end|>]]") for ex in report.examples)
    else:
        assert all(TRAINED.search(ex.text) and ex.masked_tokens > 0 for ex in report.examples)
    assert not any(w.code == "not_chat_formatted" for w in report.warnings)  # message lists are rendered


def test_arangodb_filters_are_reported(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_dataset(tmp_path / "export", "arangodb", n=40)
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data),
                     metadata_filters={"min_confidence": 0.8})
    removed = report.data.removed_by_filter["min_confidence=0.8"]
    assert removed > 0 and report.data.rows_kept == 40 - removed == report.data.rows_read - removed
    assert report.data.format_reason.startswith("the rows have 'messages' and a 'metadata' object")


@pytest.mark.parametrize("shape", ["ranking", "triples", "graded"])
def test_ranking_data_previews_the_reranker(shape: str, tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_ranking_dataset(tmp_path / "rank.jsonl", shape, n=20, docs_per_query=4)
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data), task="rerank")
    assert report.task == "rerank" and report.data.format == shape
    answers = [TRAINED.findall(ex.text) for ex in report.examples]
    assert all(a in (["yes"], ["no"]) for a in answers) and ["yes"] in answers
    assert all("<Query>:" in ex.text and "<Document>:" in ex.text for ex in report.examples)
    assert report.lengths.total_steps >= 1


def test_ranking_rows_for_sft_are_refused_as_start_finetune_refuses_them(tiny_model_dir: Path, tmp_path: Path,
                                                                         settings) -> None:
    data = write_ranking_dataset(tmp_path / "rank.jsonl", "triples", n=5)
    with pytest.raises(DatasetError) as previewed:
        preview(settings, model=str(tiny_model_dir), dataset=str(data))
    with pytest.raises(DatasetError) as started:
        check_start(build_config({"model": str(tiny_model_dir), "dataset": str(data)}), settings)
    assert str(previewed.value) == str(started.value) and "set method='rerank'" in str(previewed.value)


def test_bad_rows_missing_files_and_unknown_models_fail_like_start_finetune(tiny_model_dir: Path, tmp_path: Path,
                                                                            settings) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c"}\n')
    cases = [
        ({"model": str(tiny_model_dir), "dataset": str(bad)}, DatasetError, r"bad\.jsonl, line 2: missing field 'output'"),
        ({"model": str(tiny_model_dir), "dataset": str(tmp_path / "nope.jsonl")}, DatasetError, "no such file"),
        ({"model": str(tmp_path / "no-model"), "dataset": str(bad)}, ModelError, "neither a model folder"),
    ]
    for fields, kind, pattern in cases:
        with pytest.raises(kind, match=pattern) as previewed:
            preview(settings, **fields)
        with pytest.raises(FinetuneError) as started:
            check_start(build_config(fields), settings)
        assert str(previewed.value) == str(started.value)


def test_nothing_is_written(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_dataset(tmp_path / "data" / "train.jsonl", "messages", n=20)
    before = snapshot(tmp_path, tiny_model_dir)
    preview(settings, model=str(tiny_model_dir), dataset=str(data))
    assert snapshot(tmp_path, tiny_model_dir) == before
    assert not settings.home.exists()  # no run directory, no job database


def test_truncation_names_what_is_cut(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_rows(tmp_path / "long.jsonl", [
        chat(("user", "what color is the sky?"), ("assistant", " ".join(["blue"] * 40))) for _ in range(30)
    ] + [chat(("user", "hi"), ("assistant", "yes")) for _ in range(10)])
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data), max_seq_length=20, validation_split=0)
    long = [ex for ex in report.examples if ex.truncated]
    assert report.lengths.truncated == 30 and report.lengths.truncated_share == 0.75
    assert report.lengths.trained_tokens_lost > 0 and "end-of-turn token included" in report.lengths.truncated_part
    truncation = next(w for w in report.warnings if w.code == "truncation")
    suggested = 2 ** math.ceil(math.log2(report.lengths.p95))  # the next power of two above the 95th percentile
    assert "75%" in truncation.message and f"raise max_seq_length to ~{suggested} " in truncation.fix
    assert suggested >= report.lengths.p95 > 20
    assert all(ex.tokens == 20 and "cut by max_seq_length=20" in ex.text for ex in long)


def test_warnings_each_with_a_fix(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    rows = [chat(("user", f"say {w}"), ("assistant", w)) for w in ("red", "green", "blue")] * 3
    rows += [chat(("user", "and?"), ("assistant", ""))]
    data = write_rows(tmp_path / "train.jsonl", rows)
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data), learning_rate=0.05, lora_r=8,
                     lora_alpha=512, validation_split=0.2)
    codes = {w.code for w in report.warnings}
    assert {"learning_rate", "lora_alpha", "duplicates", "empty_replies", "few_steps"} <= codes
    assert "truncation" not in codes and "system_prompt_dropped" not in codes
    assert all(w.message and w.fix for w in report.warnings)
    assert "validation_leak" in codes  # the repeats land on both sides of the split


def test_plain_prompt_completion_strings_on_a_chat_model(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    data = write_rows(tmp_path / "pc.jsonl", [{"prompt": f"say {w}:", "completion": f" {w}"} for w in ("red", "blue")] * 4)
    report = preview(settings, model=str(tiny_model_dir), dataset=str(data), validation_split=0)
    assert report.data.format == "prompt_completion"
    assert TRAINED.findall(report.examples[0].text)[0].endswith("<|im_end|>")  # the completion and the EOS
    warning = next(w for w in report.warnings if w.code == "not_chat_formatted")
    assert "8 training rows" in warning.message and "'messages'" in warning.fix


def test_template_without_end_of_turn_is_flagged(tiny_model_dir: Path, tmp_path: Path, settings) -> None:
    import shutil

    model = tmp_path / "no-eot"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns("*.safetensors"))
    config = model / "tokenizer_config.json"
    text = config.read_text()
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    import json

    tok_config = json.loads(text)
    tok_config["chat_template"] = plain
    config.write_text(json.dumps(tok_config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    data = write_dataset(tmp_path / "train.jsonl", "messages", n=20)
    report = preview(settings, model=str(model), dataset=str(data))
    assert report.end_of_turn is None
    assert any(w.code == "no_end_of_turn" for w in report.warnings)
    assert all(not ex.ends_with_end_of_turn for ex in report.examples)


# -------------------------------------------------------------------------------- the real templates

SYSTEM = ("system", "you are helpful.")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_real_templates_train_the_reply_and_its_end_of_turn(family: str, template_models, tmp_path: Path,
                                                            settings) -> None:
    model = template_models(family)
    data = write_rows(tmp_path / "chat.jsonl", [
        chat(SYSTEM, ("user", "what color is the sky?"), ("assistant", "blue"), ("user", "and grass?"),
             ("assistant", "green")),
    ] * 2 + [chat(SYSTEM, ("user", f"say {w}"), ("assistant", w)) for w in ("red", "white", "black", "pink")])
    report = preview(settings, model=str(model), dataset=str(data), validation_split=0, examples=6)
    eot = FAMILIES[family].end_of_turn
    lead = " " if family == "mistral_v0_3" else ""
    spans = [TRAINED.findall(ex.text) for ex in report.examples]
    assert [f"{lead}blue{eot}", f"{lead}green{eot}"] in spans
    assert all(span.endswith(eot) for ex_spans in spans for span in ex_spans)
    assert report.end_of_turn == eot and all(ex.ends_with_end_of_turn for ex in report.examples)
    assert "<think>" not in "".join(s for ex_spans in spans for s in ex_spans)  # Qwen3's empty block is masked
    assert report.estimate.params and report.estimate.params > 5e8  # the checkpoint's real size, from config.json
    assert not any(w.code == "end_of_turn_not_a_stop_token" for w in report.warnings)
    dropped = any(w.code == "system_prompt_dropped" for w in report.warnings)
    assert dropped == (family == "mistral_v0_3")


def test_reasoning_the_template_drops_is_flagged(template_models, tmp_path: Path, settings) -> None:
    thinking = chat(("user", "what color is the sky?"), ("assistant", "<think>\nshort waves\n</think>\n\nblue"))
    data = write_rows(tmp_path / "think.jsonl", [thinking] * 4)
    r1 = preview(settings, model=str(template_models("deepseek_r1_distill")), dataset=str(data), validation_split=0)
    assert any(w.code == "reasoning_dropped" for w in r1.warnings)
    qwen = preview(settings, model=str(template_models("qwen3")), dataset=str(data), validation_split=0)
    assert not any(w.code == "reasoning_dropped" for w in qwen.warnings)
    assert TRAINED.findall(qwen.examples[0].text) == ["<think>\nshort waves\n</think>\n\nblue<|im_end|>"]


def test_a_reply_end_generation_does_not_stop_on_is_flagged(template_models, tmp_path: Path, settings) -> None:
    import shutil

    model = tmp_path / "gemma3-no-stops"
    shutil.copytree(template_models("gemma3"), model)
    (model / "generation_config.json").unlink()  # config.json's eos is <eos>; replies end with <end_of_turn>
    data = write_rows(tmp_path / "chat.jsonl", [chat(("user", "hi"), ("assistant", "yes"))] * 4)
    report = preview(settings, model=str(model), dataset=str(data), validation_split=0)
    warning = next(w for w in report.warnings if w.code == "end_of_turn_not_a_stop_token")
    assert "'<end_of_turn>'" in warning.message and "generation_config.json" in warning.fix


def test_a_run_nowhere_fits_is_reported_not_raised(template_models, tmp_path: Path, settings) -> None:
    data = write_rows(tmp_path / "chat.jsonl", [chat(("user", "hi"), ("assistant", "yes"))] * 4)
    report = preview(settings, model=str(template_models("phi4")), dataset=str(data))
    assert report.estimate.refused and "No place to run this job" in report.estimate.refused
    assert report.estimate.memory_gb and report.estimate.memory_gb > 20  # 14 B parameters in 16 bits
    assert report.hint.startswith("start_finetune would refuse this run")
