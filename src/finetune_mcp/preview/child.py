"""Run the dry run in a child process (`finetune-mcp preview --serve`) that the server keeps warm;
both halves of that exchange live here: `PreviewChild` (the server's side) and `serve_previews`
(the child's loop, which the CLI command only calls).

The dry run needs transformers (the model's tokenizer and chat template), and transformers imports
torch: neither may enter the server process, which must stay as light as a bare FastMCP server.
Starting a fresh Python for every call would pay that import (seconds) each time, so the server
starts one child on the first preview and keeps it: each request is one JSON line on the child's
stdin ({"config", "target", "examples"}), each answer one JSON line on its stdout — {"report": ...}
or {"error": "...", "kind": ...}, a refusal raised here as a `FinetuneError` with the text
start_finetune would give. Each child answers one request at a time; a small pool
(`PreviewPool`, FINETUNE_MCP_PREVIEW_CHILDREN, default 2) lets a second preview go on while one hangs
(a hub download that never ends held every other preview for the 300 s timeout); the extra
children start only when previews overlap. A child that dies or outlives the timeout is killed and
the next call starts another. Nothing is written: the child
only reads. It exits when its stdin closes, so it never outlives the server.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
from typing import IO, Any

import anyio

from finetune_mcp.config import EnhancedTrainingConfig, build_config
from finetune_mcp.errors import FinetuneError
from finetune_mcp.preview.report import PreviewReport

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 300.0  # a hub dataset or tokenizer may need a download first


class PreviewFailed(RuntimeError):
    """The child crashed (a bug, not bad input): its last stderr lines say where."""


class PreviewChild:
    """One warm `finetune-mcp preview --serve` process, started on first use, replaced when it dies."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Send one request and wait for its answer line (blocking: call it from a worker thread)."""
        with self._lock:
            process = self._running()
            assert process.stdin is not None and process.stdout is not None
            expired = threading.Event()

            def expire() -> None:  # a stuck child is killed; readline then ends
                expired.set()
                process.kill()

            watchdog = threading.Timer(timeout, expire)
            watchdog.start()
            try:
                process.stdin.write(json.dumps(payload).encode() + b"\n")
                process.stdin.flush()
                line = process.stdout.readline()
            except OSError:  # the child died before reading (broken pipe)
                line = b""
            finally:
                watchdog.cancel()
            if line:
                return json.loads(line)
            tail = self._stderr_tail()
            self.close()
            if expired.is_set():
                raise TimeoutError
            raise PreviewFailed(f"the preview process exited with code {process.returncode}: {tail}")

    def close(self) -> None:
        """Stop the child (its stdin closes, it exits; killed if it does not)."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _running(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self.close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the child; close() closes it)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "finetune_mcp.cli", "preview", "--serve"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env, start_new_session=True,
        )
        log.info("started the preview child (pid %d)", self._process.pid)
        return self._process

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return "\n".join(self._stderr.read().decode(errors="replace").strip().splitlines()[-15:])


class PreviewPool:
    """Up to `size` warm children: a request takes an idle one (started on first use), or when all are
    busy the one with the fewest waiting. One hung preview then holds one child, not every preview."""

    def __init__(self, size: int) -> None:
        self._children = [PreviewChild() for _ in range(max(1, size))]
        self._waiting = [0] * len(self._children)
        self._choose = threading.Lock()

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        with self._choose:
            index = min(range(len(self._children)), key=self._waiting.__getitem__)
            self._waiting[index] += 1
        try:
            return self._children[index].request(payload, timeout)
        finally:
            with self._choose:
                self._waiting[index] -= 1

    def close(self) -> None:
        for child in self._children:
            child.close()


def serve_previews() -> None:
    """The child's half (`finetune-mcp preview --serve`): one JSON request per stdin line, one answer per
    stdout line, exactly what `PreviewChild.request` writes and reads.

    Library output must not corrupt the answers, so the real stdout is kept for them alone and
    file descriptor 1 points at stderr from here on; the loop ends when stdin closes.
    """
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    from finetune_mcp.preview.dry_run import preview_training

    for line in sys.stdin:
        try:
            request = json.loads(line)
            config = build_config(request["config"])
            report = preview_training(config, request["target"], examples=int(request["examples"]))
            answer: dict[str, Any] = {"report": report.model_dump(mode="json")}
        except FinetuneError as exc:
            answer = {"error": str(exc), "kind": type(exc).__name__}
        answers.write(json.dumps(answer) + "\n")


_child: PreviewChild | PreviewPool = PreviewPool(int(os.environ.get("FINETUNE_MCP_PREVIEW_CHILDREN") or 2))


async def preview_in_child(config: EnhancedTrainingConfig, target: str, examples: int) -> PreviewReport:
    timeout = float(os.environ.get("FINETUNE_MCP_PREVIEW_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
    payload = {"config": config.model_dump(mode="json"), "target": target, "examples": examples}
    try:
        answer = await anyio.to_thread.run_sync(_child.request, payload, timeout)
    except TimeoutError:
        raise FinetuneError(
            f"the preview took longer than {timeout:g} s (FINETUNE_MCP_PREVIEW_TIMEOUT_S); a hub model or dataset may "
            "be downloading: try again, or pass local paths"
        ) from None
    if "report" in answer:
        return PreviewReport.model_validate(answer["report"])
    raise FinetuneError(answer["error"])
