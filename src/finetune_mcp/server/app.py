"""The FastMCP application: tools, prompts, resources, and the job manager in its lifespan.

`create_app()` builds the server; `finetune-mcp serve` runs it over stdio (default) or streamable
HTTP. Nothing heavy is imported here or by any tool module at import time (no torch, transformers,
TRL, datasets): the server is ready about as fast as a bare FastMCP server, and tests check it.

On stdio, stdout is the protocol channel: logging goes to stderr (or FINETUNE_MCP_LOG_FILE), and
workers write to their run's train.log, never to the server's stdout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastmcp import FastMCP
from fastmcp.exceptions import PromptError, ResourceError, ToolError
from fastmcp.exceptions import ValidationError as ArgumentError
from fastmcp.server.auth import AuthProvider
from fastmcp.server.middleware import Middleware
from pydantic import ValidationError

from finetune_mcp.config.validation import format_argument_error
from finetune_mcp.errors import ConfigError, DamagedDatabaseError, FinetuneError, HomeError
from finetune_mcp.tools import (
    MANAGER_KEY,
    card,
    deploy,
    enhance,
    evaluate,
    experiment,
    export,
    gpu,
    metrics,
    preview,
    sample,
    tensorboard,
    training,
)

log = logging.getLogger(__name__)

# Each module lists its tools (module-level functions marked with FastMCP's standalone `@tool`) in
# `TOOLS`; this order is the order tools are listed in. Imported normally, so the import graph (and
# the layer contract in pyproject.toml) shows server -> tools.
TOOL_MODULES = (training, preview, metrics, gpu, tensorboard, card, deploy, enhance, evaluate, sample, experiment, export)

INSTRUCTIONS = """\
Fine-tune LLMs (LoRA/QLoRA, optional entropy-aware loss) as background jobs.
Flow: preview_training (dry run: rendered examples, estimate) → start_finetune → wait_for_job / get_job
until succeeded → get_entropy_metrics, tensorboard_screenshot, generate_model_card. deploy_to_hf only when the user explicitly asks.
Optional before training: enhance_dataset (student–teacher, entropy-driven hints) → train on its output.
Rerankers: start_finetune(method="rerank") on ranking data; evaluate_model scores any model or job.
Try a finished job: sample_model(job_id) → wait_for_job: its answers beside the base model's, with the
tokens where it is unsure marked; get_samples for every token's entropy.
Does a loss setting help? start_experiment(arms, seeds) → get_experiment: a table with intervals and a verdict.
Run it locally: export_model(job_id, quantization="q8_0") → a verified GGUF + Ollama Modelfile.
Jobs survive server restarts; list_jobs finds them again. Errors say what to change."""


@asynccontextmanager
async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
    """Own the JobManager for the server's life: supervise jobs in the background, close on exit.
    Workers are separate process groups and keep running when the server stops."""
    from finetune_mcp.jobs.manager import JobManager
    from finetune_mcp.report.tensorboard_server import TensorBoardServer
    from finetune_mcp.tools.tensorboard import TENSORBOARD_KEY

    tensorboard = TensorBoardServer()  # started by the first screenshot, stopped with the server
    try:
        manager = _start_manager(JobManager)
    except HomeError as exc:  # a read-only home: the server still answers, every job tool says why and what to do
        log.error("%s", exc)
        try:
            yield {MANAGER_KEY: _NoManager(exc), TENSORBOARD_KEY: tensorboard}
        finally:
            tensorboard.stop()
        return
    # A plain task, not a task group: FastMCP may leave the lifespan from another cancel scope
    # than it entered it in, which anyio task groups refuse.
    supervisor = asyncio.get_running_loop().create_task(manager.run(), name="job-supervisor")
    try:
        yield {MANAGER_KEY: manager, TENSORBOARD_KEY: tensorboard}
    finally:
        supervisor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await supervisor
        manager.close()
        tensorboard.stop()


def _start_manager(make: Callable[[], Any]) -> Any:
    """The JobManager; over a damaged jobs.db, after moving it aside and rebuilding the job list from
    the run directories (`jobs.recovery`). A failed rebuild raises the DamagedDatabaseError, which
    every job tool then reports (what happened, what to do) while the server stays up."""
    from finetune_mcp.config.settings import Settings
    from finetune_mcp.jobs.recovery import rebuild_from_runs

    try:
        return make()
    except DamagedDatabaseError as exc:
        log.error("%s", exc)
        settings = Settings.from_env()
        try:
            rebuild_from_runs(settings.db_path, settings.runs_dir)
        except (OSError, sqlite3.Error, FinetuneError) as failed:
            log.error("rebuilding the job list failed: %s", failed)
            raise exc from None
        return make()


class _NoManager:
    """Stands in for the JobManager when the home cannot be written: any use raises that error."""

    def __init__(self, error: HomeError) -> None:
        self._error = error

    def __getattr__(self, name: str) -> Any:
        raise HomeError(str(self._error))


class FinetuneErrorMiddleware(Middleware):
    """The one place a FinetuneError becomes an MCP error: its message (which says what to fix),
    without FastMCP's "Error calling tool ..." prefix and without a traceback in the log. Arguments
    that break a typed parameter's rule (FastMCP validates them before the tool runs) come back the
    same way: the parameter, the rule and the value in one sentence, not pydantic's report."""

    async def on_call_tool(self, context, call_next):  # type: ignore[override]
        try:
            return await call_next(context)
        except ArgumentError as exc:
            if isinstance(exc.__cause__, ValidationError):
                raise ToolError(format_argument_error(exc.__cause__, context.message.name),
                                log_level=logging.INFO) from None
            raise
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, FinetuneError):
                raise ToolError(str(cause), log_level=logging.INFO) from None
            if isinstance(cause, sqlite3.DatabaseError) and not isinstance(cause, sqlite3.OperationalError):
                raise ToolError(_damaged(cause)) from None
            raise
        except sqlite3.DatabaseError as exc:  # reached a damaged page after the start check passed
            if isinstance(exc, sqlite3.OperationalError):
                raise
            raise ToolError(_damaged(exc)) from None

    async def on_read_resource(self, context, call_next):  # type: ignore[override]
        try:
            return await call_next(context)
        except FinetuneError as exc:
            raise ResourceError(str(exc)) from None
        except ResourceError as exc:
            if isinstance(exc.__cause__, FinetuneError):
                raise ResourceError(str(exc.__cause__)) from None
            raise

    async def on_get_prompt(self, context, call_next):  # type: ignore[override]
        try:
            return await call_next(context)
        except FinetuneError as exc:
            raise PromptError(str(exc)) from None


def _damaged(exc: sqlite3.DatabaseError) -> str:
    from finetune_mcp.config.settings import Settings

    db = Settings.from_env().db_path
    return (f"the job database {db} is damaged ({exc}); stop the server, move it aside (mv {db} {db}.damaged) and "
            "start the server again: the run directories are kept, and the job list is rebuilt from them")


class _QuietUserErrors(logging.Filter):
    """FastMCP logs a tool's exception with its traceback before the middleware sees it; for a
    FinetuneError (a user mistake with a message) one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FinetuneError):
            record.msg = f"{record.getMessage()}: {record.exc_info[1]}"
            record.args = ()
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def create_app(auth: AuthProvider | None = None) -> FastMCP:
    """Build the server with every tool module, the prompts and the resources. `auth` guards the
    HTTP transport (see `serve`)."""
    from finetune_mcp.server import prompts, resources

    logging.getLogger("fastmcp.server.server").addFilter(_QuietUserErrors())
    mcp = FastMCP(
        "finetune-mcp",
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        middleware=[FinetuneErrorMiddleware()],
        mask_error_details=False,
        auth=auth,
    )
    for module in TOOL_MODULES:
        for tool in module.TOOLS:
            mcp.add_tool(tool)
    prompts.register(mcp)
    resources.register(mcp)
    return mcp


def serve(transport: str = "stdio", host: str = "127.0.0.1", port: int = 8765, path: str = "/mcp",
          log_level: str = "INFO") -> None:
    """Run the server until interrupted. stdio: for Claude Code / Desktop (stdout is the protocol).
    http: streamable HTTP on host:port/path; every request needs `Authorization: Bearer
    $FINETUNE_MCP_TOKEN` and a Host (and, from browsers, an Origin) of this server (`server.auth`).
    Both are checked before the server starts: a weak token or an unchecked bind fails with the fix."""
    _configure_logging(log_level)
    _log_roots(local=transport == "stdio")
    if transport == "stdio":
        create_app().run(transport="stdio", show_banner=False)
        return
    if transport != "http":
        raise ConfigError(f"transport must be stdio or http (got {transport!r})", field="transport")
    from starlette.middleware import Middleware as ASGIMiddleware

    from finetune_mcp.server.auth import HostOriginGuard, HostOriginPolicy, SharedTokenVerifier, token_from_env

    auth = SharedTokenVerifier(token_from_env())
    policy = HostOriginPolicy.for_bind(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines; put TLS in front of it", host)
    create_app(auth=auth).run(transport="http", host=host, port=port, path=path, show_banner=False,
                              log_level=log_level.lower(),
                              middleware=[ASGIMiddleware(HostOriginGuard, policy=policy)])


def _log_roots(*, local: bool) -> None:
    """Say at start which folders clients may reach (and which fallback was too broad to take)."""
    from finetune_mcp.config.roots import describe_operator_roots
    from finetune_mcp.config.settings import Settings

    log.info("%s", describe_operator_roots(Settings.from_env().home, local=local))


def _configure_logging(level: str) -> None:
    """Our logs to stderr, or to FINETUNE_MCP_LOG_FILE when set: never stdout."""
    log_file = os.environ.get("FINETUNE_MCP_LOG_FILE")
    handler: logging.Handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package_log = logging.getLogger("finetune_mcp")
    package_log.addHandler(handler)
    package_log.setLevel(level.upper())
