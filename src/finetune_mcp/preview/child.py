"""Run the dry run in a child process (`finetune-mcp preview --spec-stdin --json`) from the server.

The dry run needs transformers (the model's tokenizer and chat template), and transformers imports
torch: neither may enter the server process, which must stay as light as a bare FastMCP server.
The child gets the config on stdin and answers one JSON object on stdout; a refusal comes back
as its message, raised here as a `FinetuneError` with the same text start_finetune would give.
Nothing is written: the child only reads, and its stdout is a pipe.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import anyio

from finetune_mcp.config import EnhancedTrainingConfig
from finetune_mcp.errors import FinetuneError
from finetune_mcp.preview.report import PreviewReport

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 300.0  # a hub dataset or tokenizer may need a download first


class PreviewFailed(RuntimeError):
    """The child crashed (a bug, not bad input): its last output lines say where."""


async def preview_in_child(config: EnhancedTrainingConfig, target: str, examples: int) -> PreviewReport:
    timeout = float(os.environ.get("FINETUNE_MCP_PREVIEW_TIMEOUT_S") or DEFAULT_TIMEOUT_S)
    command = [sys.executable, "-m", "finetune_mcp.cli", "preview", "--spec-stdin", "--json",
               "--target", target, "--examples", str(examples)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error"}
    try:
        with anyio.fail_after(timeout):
            done = await anyio.run_process(command, input=config.model_dump_json().encode(), check=False, env=env)
    except TimeoutError:
        raise FinetuneError(
            f"the preview took longer than {timeout:g} s (FINETUNE_MCP_PREVIEW_TIMEOUT_S); a hub model or dataset may "
            "be downloading: try again, or pass local paths"
        ) from None
    answer = _last_json_line(done.stdout.decode(errors="replace"))
    if answer is not None and "report" in answer:
        return PreviewReport.model_validate(answer["report"])
    if answer is not None and "error" in answer:
        raise FinetuneError(answer["error"])
    tail = done.stderr.decode(errors="replace").strip().splitlines()[-15:]
    raise PreviewFailed(f"the preview process exited with code {done.returncode}: " + "\n".join(tail))


def _last_json_line(stdout: str) -> dict | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
