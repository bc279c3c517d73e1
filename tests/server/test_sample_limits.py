"""sample_model's prompt limits (issue 26 bug 5), through the real server over stdio: prompts are
tokenised before any generation and one longer than max_seq_length is refused with the fix (a 100 KB
prompt took 31.6 s of generation on a model trained with max_seq_length=64), and a request's prompt
text is capped per prompt and in total (a 4 MB conversation kept its worker busy for minutes)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio

from server.conftest import ServerHome


async def test_a_prompt_past_max_seq_length_is_refused_before_generating(server_home: Callable[..., ServerHome],
                                                                        tiny_model: Path) -> None:
    server = server_home()
    long_prompt = "tell me about the weather in the mountains " * 2300  # ~99 KB, thousands of tokens
    async with server.client() as client:
        started = (await client.call_tool("sample_model", {"model": str(tiny_model), "prompts": [long_prompt],
                                                           "max_new_tokens": 4})).structured_content
        began = time.monotonic()
        with anyio.fail_after(240):
            while True:
                job = (await client.call_tool("wait_for_job", {"job_id": started["job_id"], "timeout_s": 30})
                       ).structured_content
                if job["state"] in ("succeeded", "failed", "cancelled"):
                    break
    assert job["state"] == "failed", job
    assert "prompt 0 is" in job["error"] and "longer than max_seq_length=2048" in job["error"], job["error"]
    assert "shorten the prompt" in job["error"]
    assert time.monotonic() - began < 120


async def test_prompt_text_is_capped_per_prompt_and_per_request(server_home: Callable[..., ServerHome],
                                                                tiny_model: Path) -> None:
    server = server_home()
    turn = "x" * 100_000
    conversation = [{"role": "user" if i % 2 == 0 else "assistant", "content": turn} for i in range(41)]
    async with server.client() as client:
        huge = await client.call_tool("sample_model", {"model": str(tiny_model), "prompts": [conversation]},
                                      raise_on_error=False)
        many = await client.call_tool("sample_model", {"model": str(tiny_model), "prompts": ["y" * 90_000] * 12},
                                      raise_on_error=False)
        jobs = (await client.call_tool("list_jobs", {})).structured_content
    assert huge.is_error and "4,100,000 characters, more than 100,000" in huge.content[0].text, huge.content[0].text
    assert many.is_error and "1,080,000 characters together, more than 1,000,000" in many.content[0].text, \
        many.content[0].text
    assert jobs["count"] == 0
