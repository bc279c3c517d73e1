"""Student–teacher enhancement against a real HTTP teacher (the loopback OpenAI-compatible stand-in,
backed by the tiny offline model) with the reference checker as judge, on synthetic questions with
checkable answers. Half the rows are "easy": their `metadata.answer_regex` is `.*`, so any answer
passes; the others need the exact answer, which the untrained tiny student never writes. That
makes the rounds, hints and weights predictable without faking the student or the teacher."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from finetune_mcp.enhance.answer_check import ReferenceChecker, parse_judge_score, split_reply
from finetune_mcp.enhance.config import ExampleWeightConfig, build_enhance_config
from finetune_mcp.enhance.student import high_entropy_spans
from finetune_mcp.enhance.teachers import TeacherError
from finetune_mcp.enhance.workflow import example_weight, run_enhancement
from finetune_mcp.errors import ConfigError
from finetune_mcp.testing import synthetic_examples
from standins.openai_compat import OpenAICompatStandIn

KEY = "sk-test-teacherKEY-0123456789abcdef"


@pytest.fixture(scope="module")
def teacher_server(tiny_model_dir: Path):
    with OpenAICompatStandIn(tiny_model_dir, api_key=KEY) as server:
        yield server


@pytest.fixture
def teacher(teacher_server: OpenAICompatStandIn, monkeypatch: pytest.MonkeyPatch) -> OpenAICompatStandIn:
    teacher_server.reset()
    monkeypatch.setenv("TEACHER_KEY", KEY)
    monkeypatch.setenv("FINETUNE_MCP_TEACHER_KEYS", f"TEACHER_KEY={teacher_server.url}")  # the operator's binding
    return teacher_server


def write_qa(path: Path, n: int = 8) -> Path:
    rows = []
    for i, ex in enumerate(synthetic_examples(n, seed=3)):
        rows.append({"messages": [{"role": "user", "content": ex["question"]},
                                  {"role": "assistant", "content": ex["answer"]}],
                     "metadata": {"answer_regex": ".*"} if i % 2 == 0 else {"task": ex["task"]}})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(tiny: Path, server: OpenAICompatStandIn, dataset: Path, **overrides):
    data = {
        "model": str(tiny), "dataset": str(dataset), "judge": "reference:regex", "hint_rule": "wrong",
        "teacher": {"model": "tiny-teacher", "base_url": server.url, "api_key_env": "TEACHER_KEY",
                    "max_tokens": 8, "timeout_s": 30},
        "student_max_new_tokens": 10, "batch_size": 4, "retry_backoff_s": 0.01, "seed": 0,
    }
    data.update(overrides)
    return build_enhance_config(data)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def events(run: Path) -> list[dict]:
    return read_jsonl(run / "events.jsonl")


def assert_no_secret(run: Path, secret: str = KEY) -> None:
    for path in run.rglob("*"):
        if path.is_file():
            assert secret not in path.read_text(errors="replace"), f"key leaked into {path}"


def test_rounds_entropy_hints_and_weights(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    dataset = write_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    summary = run_enhancement(make_config(tiny_model_dir, teacher, dataset, max_iterations=3), run)

    out = run / "enhance"
    rows, logs = read_jsonl(out / "enhanced.jsonl"), read_jsonl(out / "iterations.jsonl")
    assert len(rows) == len(logs) == 8
    easy = [log for log in logs if len(log["rounds"]) == 1]
    hard = [log for log in logs if len(log["rounds"]) == 3]
    assert len(easy) == len(hard) == 4
    for log in easy:  # any answer passes: converged in round 1, no hint asked
        (only,) = log["rounds"]
        assert only["judge"]["correct"] and only["converged"] and not only["hint_requested"]
    for log in hard:  # never right: a hint after rounds 1 and 2, none after the last
        assert [r["hint_requested"] for r in log["rounds"]] == [True, True, False]
        assert all(not r["judge"]["correct"] and r["hint_triggers"] == ["wrong"] for r in log["rounds"])
        assert not log["converged"] and log["hints"] == 2
    for log in logs:  # the entropy profile of every round agrees with its token entropies
        for record in log["rounds"]:
            profile, values = record["entropy"], record["entropy"]["token_entropies"]
            assert 0 < len(values) == profile["tokens"] <= 10
            assert profile["mean"] == pytest.approx(sum(values) / len(values), abs=1e-3)
            assert profile["max"] == pytest.approx(max(values), abs=1e-3)
            assert 0 < profile["mean"] <= math.log(512) + 1e-3
            spans = [(s["start"], s["end"]) for s in profile["spans"]]
            assert spans == high_entropy_spans(values, 2.5)

    # The teacher got exactly the hint requests the log shows, over HTTP, with the key.
    assert len(teacher.requests) == summary["hints_given"] == 8 == summary["calls_used"]
    assert all(r["authorized"] and r["model"] == "tiny-teacher" for r in teacher.requests)
    asked = sorted(r["messages"][-1]["content"] for r in teacher.requests)
    assert asked == sorted(r["hint_request"] for log in hard for r in log["rounds"][:2])

    references = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in read_jsonl(dataset)}
    for log in logs:
        stats = {k: log[k] for k in ("quality", "entropy_first", "log_vocab")}
        expected = example_weight(stats, ExampleWeightConfig())
        row = next(r for r in rows if r["metadata"]["student_teacher"]["example_key"] == log["key"])
        assert row["weight"] == pytest.approx(expected) == pytest.approx(log["weight"])
        reply = row["messages"][-1]["content"]
        assert reply.startswith("<think>\n") and "\n</think>\n\n" in reply
        if log in hard:  # never right: the reference answer, weight 0, the hints in the thinking
            assert row["weight"] == 0 and row["metadata"]["student_teacher"]["answer_source"] == "reference"
            assert reply.split("</think>\n\n")[1] == references[row["messages"][0]["content"]]
            for record in log["rounds"][:2]:  # each attempt, then the hint that followed it
                assert record["answer"] in reply and (not record["hint"] or
                                                      f"Wait, let me reconsider. {record['hint']}" in reply)
        else:  # right at once while unsure: weight 1 + H/log V, close to 2 for this near-uniform model
            assert 1.9 < row["weight"] <= 2 and row["metadata"]["thinking_converged"] is True
    assert summary["convergence_rate"] == 0.5 and summary["mean_iterations"] == 2.0
    assert summary["zero_weight_examples"] == 4 and summary["examples_with_hints"] == 4
    assert summary["entropy_before_hints_mean"] is not None and summary["entropy_after_hints_mean"] is not None
    assert json.loads((out / "summary.json").read_text())["hints_given"] == 8

    kinds = [e["type"] for e in events(run)]
    assert kinds[0] == "start" and kinds[-1] == "end" and kinds.count("progress") == 2
    steps = [(e["step"], e["total_steps"]) for e in events(run) if e["type"] == "progress"]
    assert steps == [(4, 8), (8, 8)]
    assert_no_secret(run)


def test_reference_answers_and_weights_reach_the_trainer_format(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    """The enhanced rows load as chat data with their weight (the trainer multiplies by it)."""
    from transformers import AutoTokenizer

    from finetune_mcp.config import EnhancedTrainingConfig
    from finetune_mcp.data.chat_tokens import EXAMPLE_WEIGHT, tokenize_examples
    from finetune_mcp.data.loader import load_examples

    dataset = write_qa(tmp_path / "qa.jsonl", n=4)
    run = tmp_path / "run"
    run_enhancement(make_config(tiny_model_dir, teacher, dataset, max_iterations=2), run)
    enhanced = run / "enhance" / "enhanced.jsonl"
    references = {json.loads(line)["messages"][0]["content"]: json.loads(line)["messages"][1]["content"]
                  for line in dataset.read_text().splitlines()}
    for row in read_jsonl(enhanced):
        if row["metadata"]["student_teacher"]["answer_source"] == "reference":
            assert row["messages"][-1]["content"].endswith("</think>\n\n" + references[row["messages"][0]["content"]])
    data = load_examples(EnhancedTrainingConfig(model=str(tiny_model_dir), dataset=str(enhanced), validation_split=0))
    assert sorted(ex["weight"] for ex in data.train) == sorted(r["weight"] for r in read_jsonl(enhanced))
    tokenized = tokenize_examples(data.train, AutoTokenizer.from_pretrained(str(tiny_model_dir)), 256)
    assert sorted(tokenized[EXAMPLE_WEIGHT]) == pytest.approx(sorted(ex["weight"] for ex in data.train))


def test_hints_follow_the_entropy_rule(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    """hint_rule=wrong_or_entropy with a threshold inside the tiny model's entropy range: every round's
    spans are exactly the runs above the threshold, and a hint is asked iff the answer was wrong or a
    span was long enough (except after the last round)."""
    dataset = write_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    threshold, min_span = 5.93, 3
    run_enhancement(make_config(tiny_model_dir, teacher, dataset, hint_rule="wrong_or_entropy", max_iterations=2,
                                entropy_threshold=threshold, min_span_tokens=min_span), run)
    rounds = [r for log in read_jsonl(run / "enhance" / "iterations.jsonl") for r in log["rounds"]]
    outcomes = set()
    for record in rounds:
        values = record["entropy"]["token_entropies"]
        spans = [(s["start"], s["end"]) for s in record["entropy"]["spans"]]
        # token entropies are logged to 3 decimals: a value that close to the threshold may round across it
        assert spans == high_entropy_spans(values, threshold) or any(abs(v - threshold) < 1e-3 for v in values)
        assert all(s["mean"] > threshold and s["text"] is not None for s in record["entropy"]["spans"])
        uncertain = any(e - s >= min_span for s, e in spans)
        expected = [t for t, on in (("wrong", not record["judge"]["correct"]), ("entropy", uncertain)) if on]
        assert record["hint_triggers"] == expected
        assert record["converged"] == (not expected)
        assert record["hint_requested"] == (bool(expected) and record["round"] < 2)
        outcomes.add((record["judge"]["correct"], uncertain))
    assert (False, True) in outcomes or (False, False) in outcomes  # hard rows: wrong answers fire
    asked = [r for r in rounds if r["hint_requested"]]
    assert asked and all("The student was uncertain while writing" in r["hint_request"]
                         for r in asked if "entropy" in r["hint_triggers"])


def test_llm_judge_on_the_teachers_endpoint(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    """judge_model inherits the teacher's URL and key name and runs at temperature 0; every round's
    verdict is its parsed score (the tiny model rarely writes one: then 0, saying why)."""
    dataset = write_qa(tmp_path / "qa.jsonl", n=4)
    run = tmp_path / "run"
    summary = run_enhancement(make_config(tiny_model_dir, teacher, dataset, judge="tiny-teacher", max_iterations=2), run)
    rounds = [r for log in read_jsonl(run / "enhance" / "iterations.jsonl") for r in log["rounds"]]
    judged = [r for r in teacher.requests if r["messages"][0]["content"].startswith("You grade answers")]
    assert len(judged) == len(rounds) == summary["judge_calls"] and all(r["temperature"] == 0 for r in judged)
    for record in rounds:
        verdict = record["judge"]
        assert verdict["calls"] == 1 and verdict["tokens"] > 0 and 0 <= verdict["score"] <= 1
        assert verdict["correct"] == (verdict["score"] >= 0.5)
        assert verdict["detail"].startswith(("judge: ", "unreadable judge reply"))
    hints = len(teacher.requests) - len(judged)
    assert summary["calls_used"] == len(teacher.requests) and summary["hints_given"] == hints
    assert summary["tokens_used"] == sum(log["tokens"] for log in read_jsonl(run / "enhance" / "iterations.jsonl"))


def test_local_hf_teacher(tiny_model_dir: Path, tmp_path: Path) -> None:
    """teacher='hf:<model>' runs the teacher in the worker, no endpoint, no key."""
    dataset = write_qa(tmp_path / "qa.jsonl", n=4)
    run = tmp_path / "run"
    config = build_enhance_config({"model": str(tiny_model_dir), "dataset": str(dataset), "judge": "reference:regex",
                                   "hint_rule": "wrong", "max_iterations": 2, "student_max_new_tokens": 6,
                                   "teacher": {"model": f"hf:{tiny_model_dir}", "max_tokens": 6}})
    summary = run_enhancement(config, run)
    hinted = [r for log in read_jsonl(run / "enhance" / "iterations.jsonl") for r in log["rounds"] if r["hint_requested"]]
    assert len(hinted) == 2 == summary["hints_given"] == summary["calls_used"]
    assert all(isinstance(r["hint"], str) and r["teacher_tokens"] > 0 for r in hinted)
    assert summary["config"]["teacher"] == f"hf:{tiny_model_dir} (local)"


def test_teacher_5xx_is_retried_with_backoff(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    teacher.fail_next(2, 503)
    dataset = write_qa(tmp_path / "qa.jsonl", n=2)
    run = tmp_path / "run"
    summary = run_enhancement(make_config(tiny_model_dir, teacher, dataset, max_iterations=2), run)
    (hard,) = [log for log in read_jsonl(run / "enhance" / "iterations.jsonl") if log["hints"]]
    assert hard["rounds"][0]["teacher_calls"] == 3  # two 503s, then the hint
    assert summary["calls_used"] == 3 == len(teacher.requests) and summary["examples_failed"] == 0
    assert "503" in (run / "train.log").read_text()


def test_teacher_down_fails_the_job_and_keeps_what_finished(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    teacher.always(status=503)
    dataset = write_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    config = make_config(tiny_model_dir, teacher, dataset, max_retries=1, max_consecutive_failures=2)
    with pytest.raises(TeacherError) as failure:
        run_enhancement(config, run)
    message = str(failure.value)
    assert "tiny-teacher at http://127.0.0.1" in message and "HTTP 503" in message and "check that the endpoint" in message
    error = events(run)[-1]
    assert error["type"] == "error" and error["error_type"] == "TeacherError"
    summary = json.loads((run / "enhance" / "summary.json").read_text())
    assert summary["examples_failed"] >= 2
    rows = read_jsonl(run / "enhance" / "enhanced.jsonl")
    assert len(rows) == summary["enhanced_examples"] and all(r["metadata"]["thinking_converged"] for r in rows)
    assert len(teacher.requests) == 2 * summary["examples_failed"]  # 1 + 1 retry each
    assert_no_secret(run)


def test_timeout_then_resume_from_the_earlier_run(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    teacher.delay_next(1, 2.0)  # the first hint request outlives the client's timeout
    dataset = write_qa(tmp_path / "qa.jsonl")
    teacher_cfg = {"model": "tiny-teacher", "base_url": teacher.url, "api_key_env": "TEACHER_KEY",
                   "max_tokens": 8, "timeout_s": 0.5}
    first = tmp_path / "first"
    with pytest.raises(TeacherError, match=r"1 of 8 examples could not be enhanced .*no reply within 0.5 s.*resume_from"):
        run_enhancement(make_config(tiny_model_dir, teacher, dataset, teacher=teacher_cfg, max_retries=0,
                                    max_iterations=2), first)
    assert len(read_jsonl(first / "enhance" / "enhanced.jsonl")) == 7
    teacher.reset()
    second = tmp_path / "second"
    summary = run_enhancement(make_config(tiny_model_dir, teacher, dataset, teacher=teacher_cfg, max_iterations=2,
                                          resume_from=str(first / "enhance" / "progress.jsonl")), second)
    start = events(second)[0]
    assert start["resumed"] == 7 and summary["resumed_examples"] == 7 and summary["enhanced_examples"] == 8
    assert len(teacher.requests) == 1  # only the example that failed was redone (hint after round 1)
    assert len(read_jsonl(second / "enhance" / "enhanced.jsonl")) == 8


def test_budget_cap_stops_asking_and_ends_cleanly(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    dataset = write_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    summary = run_enhancement(make_config(tiny_model_dir, teacher, dataset, budget_max_calls=1,
                                          save_iterations=False), run)
    assert not (run / "enhance" / "iterations.jsonl").exists()
    assert summary["calls_used"] == 1 == len(teacher.requests)
    assert summary["stopped_by_budget"] is True and summary["enhanced_examples"] == 2  # the easy ones of batch 1
    assert summary["examples_unfinished"] == 6 and events(run)[-1]["status"] == "succeeded"


def test_wrong_key_is_refused_at_once_and_never_written(tiny_model_dir: Path, teacher, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "sk-wrong-KEY-fedcba9876543210"
    monkeypatch.setenv("TEACHER_KEY", wrong)
    run = tmp_path / "run"
    with pytest.raises(TeacherError) as failure:
        run_enhancement(make_config(tiny_model_dir, teacher, write_qa(tmp_path / "qa.jsonl"),
                                    max_consecutive_failures=1), run)
    assert "HTTP 401" in str(failure.value) and "check the key in TEACHER_KEY" in str(failure.value)
    assert wrong not in str(failure.value)  # the stand-in echoes the key it got; the client redacts it
    assert all(not r["authorized"] for r in teacher.requests) and len(teacher.requests) == 2  # no retries
    assert_no_secret(run, wrong)


@pytest.mark.slow
def test_resume_after_the_worker_is_killed(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    """The real worker (`finetune-mcp worker run SPEC`), SIGKILLed mid-run, then started again on the
    same spec: finished examples are skipped, none is lost or written twice."""
    teacher.always(delay_s=0.4)  # slow teacher: the kill lands mid-run
    dataset = write_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    run.mkdir()
    config = make_config(tiny_model_dir, teacher, dataset, batch_size=2, max_iterations=2)
    spec = run / "spec.json"
    spec.write_text(config.model_dump_json())
    command = [sys.executable, "-m", "finetune_mcp.cli", "worker", "run", str(spec)]
    env = {**os.environ, "TEACHER_KEY": KEY}
    progress = run / "enhance" / "progress.jsonl"
    worker = subprocess.Popen(command, cwd=run, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        while not (progress.exists() and len(read_jsonl(progress)) >= 2):
            assert worker.poll() is None and time.time() < deadline, "the worker ended or stalled before the kill"
            time.sleep(0.1)
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
    finished = read_jsonl(progress)
    assert 2 <= len(finished) < 8
    with progress.open("a") as fh:  # as if killed mid-write: half a line
        fh.write('{"key": "partial", "row": {"mess')
    teacher.always(delay_s=0.0)
    done = subprocess.run(command, cwd=run, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    starts = [e for e in events(run) if e["type"] == "start"]
    assert [s["resumed"] for s in starts] == [0, len(finished)]
    assert events(run)[-1]["type"] == "end" and events(run)[-1]["step"] == 8
    keys = [r["key"] for r in read_jsonl(run / "enhance" / "iterations.jsonl")]
    assert len(keys) == len(set(keys)) == 8 and {r["key"] for r in finished} <= set(keys)
    assert len(read_jsonl(run / "enhance" / "enhanced.jsonl")) == 8
    assert_no_secret(run)


@pytest.mark.slow
def test_examples_with_weight_zero_do_not_train(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    """The trainer multiplies each example's token losses by its weight: on rows whose final answers
    stayed wrong (weight 0) the loss is 0 and the LoRA update stays exactly zero."""
    from safetensors.torch import load_file

    from finetune_mcp.config import EnhancedTrainingConfig
    from finetune_mcp.train.workflow import run_training

    dataset = write_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "enhance-run"
    run_enhancement(make_config(tiny_model_dir, teacher, dataset, max_iterations=1), run)
    zero = tmp_path / "zero.jsonl"
    rows = [r for r in read_jsonl(run / "enhance" / "enhanced.jsonl") if r["weight"] == 0]
    assert len(rows) == 4
    zero.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_training(EnhancedTrainingConfig(
        model=str(tiny_model_dir), dataset=str(zero), max_steps=2, validation_split=0, max_seq_length=128,
        per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=1e-2), tmp_path / "train")
    assert result["metrics"]["train/loss"] == 0
    adapter = load_file(str(tmp_path / "train" / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(float(t.abs().max()) == 0 for t in lora_b)


def test_cli_enhance_from_a_granger_yaml_with_flags(tiny_model_dir: Path, teacher, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from finetune_mcp.cli import app

    dataset = write_qa(tmp_path / "qa.jsonl", n=4)
    config = tmp_path / "st.yaml"
    config.write_text(f"student_model: {tiny_model_dir}\nteacher_model: gpt-4o-mini\nmax_iterations: 2\n"
                      "student_max_new_tokens: 6\nbatch_size: 4\nthinking_format: final\nhint_rule: wrong\n")
    run = tmp_path / "run"
    args = ["enhance", "-c", str(config), "--dataset", str(dataset), "--teacher", "tiny-teacher", "--teacher-base-url",
            teacher.url, "--teacher-api-key-env", "TEACHER_KEY", "--judge", "reference:regex", "--run-dir", str(run)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(run / "enhance" / "enhanced.jsonl")
    rows = read_jsonl(run / "enhance" / "enhanced.jsonl")
    assert len(rows) == 4 and all("Wait, let me reconsider" not in r["messages"][-1]["content"] for r in rows)
    assert len(teacher.requests) == 2  # the two hard rows: one hint each (2 rounds)
    refused = CliRunner().invoke(app, [*args[:-2], "--run-dir", str(tmp_path / "other"), "--teacher-api-key-env",
                                       "sk-oops-a-pasted-key"])
    assert refused.exit_code == 2 and "NAME of an environment variable" in " ".join(refused.output.split())
    assert "sk-oops-a-pasted-key" not in refused.output


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_student_entropy_equals_a_forward_pass_over_its_tokens(tiny_model_dir: Path, temperature: float) -> None:
    """The entropy recorded while generating (batched, left-padded, sampled or greedy) is the entropy
    of the model's own distribution at each generated position, as a plain forward pass gives it."""
    import torch

    from finetune_mcp.enhance.student import Student

    config = build_enhance_config({"model": str(tiny_model_dir), "dataset": "unused.jsonl", "teacher": "t",
                                   "student_max_new_tokens": 12, "student_temperature": temperature,
                                   "entropy_threshold": 5.93})
    student = Student(config)
    conversations = [[{"role": "user", "content": "what color is the sky?"}],
                     [{"role": "user", "content": "what is 2 plus 3? think first, then answer."}]]
    for conversation, attempt in zip(conversations, student.generate(conversations, seed=1), strict=True):
        text = student.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        prompt = student.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        ids = torch.cat([prompt, torch.tensor([attempt.token_ids])], dim=1)
        with torch.no_grad():
            logits = student.model(input_ids=ids).logits[0, prompt.shape[1] - 1:-1]
        expected = torch.special.entr(torch.softmax(logits.float(), dim=-1)).sum(-1)
        assert len(attempt.entropies) == len(attempt.token_ids) == 12 or attempt.token_ids[-1] in student.eos_ids
        assert torch.allclose(torch.tensor(attempt.entropies), expected, atol=1e-4)
        assert attempt.text == student.tokenizer.decode(attempt.token_ids, skip_special_tokens=True).strip()
        spans = [(s["start"], s["end"]) for s in attempt.spans]
        assert spans == high_entropy_spans(attempt.entropies, 5.93)


# -- pure parts: config, answer checks, weights --------------------------------------------------------


def test_config_accepts_granger_names_and_refuses_pasted_keys() -> None:
    config = build_enhance_config({
        "student_model": "m", "dataset_path": "d.jsonl", "teacher_model": "gpt-4o-mini", "judge_model": "gpt-4o",
        "max_iterations": 2, "student_temperature": 0.2, "teacher_temperature": 0.3, "batch_size": 8,
        "save_iterations": False, "thinking_format": "final", "max_samples": 5,
    })
    assert (config.model, config.teacher.model, config.teacher.temperature) == ("m", "gpt-4o-mini", 0.3)
    assert config.judge is not None and config.judge.temperature == 0 and config.judge.api_key_env == "OPENAI_API_KEY"
    assert config.thinking_style == "final" and "{thinking}" in config.thinking_format and config.max_examples == 5
    assert build_enhance_config({"model": "m", "dataset": "d", "teacher": "t", "judge": "reference:exact"}).judge is None
    with pytest.raises(ConfigError, match="NAME of an environment variable") as bad:
        build_enhance_config({"model": "m", "dataset": "d", "teacher": {"model": "t", "api_key_env": "sk-live-abc"}})
    assert "sk-live-abc" not in str(bad.value)
    with pytest.raises(ConfigError, match=r"must contain \{answer\}"):
        build_enhance_config({"model": "m", "dataset": "d", "teacher": "t", "thinking_format": "<think>{thinking}"})
    with pytest.raises(ConfigError, match="credentials"):
        build_enhance_config({"model": "m", "dataset": "d", "teacher": {"model": "t", "base_url": "http://u:p@h/v1"}})


def test_answer_checks_and_judge_scores() -> None:
    reply = split_reply("<think>add them</think>\nsome working\nAnswer: 7")
    assert (reply.reasoning, reply.answer) == ("add them\nsome working", "7")
    assert split_reply("blue").answer == "blue" and split_reply("").answer == ""
    normalized, exact, regex = ReferenceChecker("normalized"), ReferenceChecker("exact"), ReferenceChecker("regex")
    assert normalized.check("Blue!", "blue").correct and not exact.check("Blue!", "blue").correct
    assert regex.check("3 apples", "3", {"answer_regex": r"3\b.*"}).correct and not regex.check("4", "3").correct
    assert not normalized.check("", "").correct  # nothing to compare: never right
    assert parse_judge_score("Score: 7/10") == 0.7 and parse_judge_score("8") == 0.8
    assert parse_judge_score("1/1") == 1.0 and parse_judge_score("no idea") is None


def test_weight_formula_and_custom_function(monkeypatch) -> None:
    monkeypatch.setenv("FINETUNE_MCP_USER_FUNCTIONS", "operator")
    stats = {"quality": 1.0, "entropy_first": 3.0, "log_vocab": 6.0}
    assert example_weight(stats, ExampleWeightConfig()) == 1.5
    assert example_weight({**stats, "quality": 0.0}, ExampleWeightConfig(min_weight=0.1)) == 0.1
    assert example_weight(stats, ExampleWeightConfig(entropy_scale=2, max_weight=1.8)) == 1.8
    # a user function gets the stats dict (here: how many fields it has), clipped like the default
    assert example_weight(stats, ExampleWeightConfig(function="operator:length_hint")) == 3.0
    assert example_weight(stats, ExampleWeightConfig(function="operator:length_hint", max_weight=2)) == 2.0
    monkeypatch.setenv("FINETUNE_MCP_USER_FUNCTIONS", "my_pkg")  # only modules the operator allowed
    with pytest.raises(ValueError, match=r"'operator:length_hint' is not allowed.*FINETUNE_MCP_USER_FUNCTIONS=my_pkg,operator"):
        example_weight(stats, ExampleWeightConfig(function="operator:length_hint"))
