"""`tensorboard_screenshot`: a PNG of the real TensorBoard page for a job, as MCP image content.

One TensorBoard server serves every screenshot while the MCP server runs: the lifespan owns it
(`server.app.lifespan` puts a `TensorBoardServer` under TENSORBOARD_KEY and stops it at shutdown);
it starts on the first screenshot. The capture (Chromium via Playwright's sync API) runs in a worker
thread so the event loop keeps serving other tools meanwhile.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import anyio
from fastmcp.dependencies import Depends
from fastmcp.tools import tool
from fastmcp.tools.base import ToolResult
from fastmcp.utilities.types import Image
from mcp_types import TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from finetune_mcp.jobs.manager import JobManager
from finetune_mcp.report.screenshot import take_screenshot
from finetune_mcp.report.tensorboard_server import TensorBoardError, TensorBoardServer
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.tools import get_manager

TENSORBOARD_KEY = "tensorboard"
MAX_COMPARE = 4
TagName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]{1,128}$")]
JobId = Annotated[str, Field(description="Job id, e.g. 'ft-3f9a0c1b2d4e'.", max_length=64)]


class ScreenshotResult(BaseModel):
    job_id: str
    path: str = Field(description="The PNG under the job's run directory (screenshots/).")
    renderer: Literal["tensorboard", "matplotlib"] = Field(
        description="'tensorboard': the real TensorBoard page in headless Chromium; 'matplotlib': a "
        "stand-in drawing of the same event files, only when allow_matplotlib and Chromium is missing.")
    view: Literal["scalars", "histograms"]
    tags: list[str] = Field(description="The tags shown.")
    runs: list[str] = Field(description="The runs shown (the job first, then compare_with; each run once).")
    width: int
    height: int
    seconds: float = Field(description="Time to capture, including waiting for the charts to draw.")
    url: str | None = Field(None, description="The TensorBoard page captured (127.0.0.1, while the server runs).")


@dataclass(frozen=True)
class Board:
    """The lifespan's TensorBoard server, handed to a tool call. Why a holder: FastMCP enters a dependency
    that is a context manager and exits it after the call, and `TensorBoardServer.__exit__` stops the
    server, so every screenshot restarted TensorBoard on a new port instead of reusing one."""

    server: TensorBoardServer


def tensorboard_server() -> Board:
    """The lifespan's TensorBoard server (in a `Board`)."""
    from fastmcp.server.dependencies import get_context

    return Board(get_context().lifespan_context[TENSORBOARD_KEY])


def _runs_to_show(manager, job_id: str, compare_with: list[str]) -> tuple[list[RunDirectory], Path | None]:
    """The job's run directory and those compared; an experiment's runs (all of them, one chart each
    tag) with its own screenshots/ folder for the PNG."""
    from finetune_mcp import kinds

    job = manager.get(job_id)
    run = manager.run_dir(job_id)
    # The job itself is not compared with itself (an experiment's root holds no run); take_screenshot drops repeats.
    compare_with = [other for other in compare_with if other != job_id]
    others = [manager.run_dir(other) for other in compare_with]
    if kinds.kind_of(job).name != "experiment":
        return [run, *others], None
    from finetune_mcp.experiment.workflow import experiment_runs

    runs = experiment_runs(run)
    if not runs:
        raise TensorBoardError(f"experiment {job_id} has no run with TensorBoard logs yet; retry once get_job "
                               "reports progress")
    return [*runs, *others], run.root / "screenshots"


@tool(
    annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, idempotentHint=False),
    output_schema=ScreenshotResult.model_json_schema(),
)
async def tensorboard_screenshot(
    job_id: JobId,
    tags: Annotated[list[TagName] | None, Field(
        description="TensorBoard tags to show; default for scalars: " + ", ".join(M.DEFAULT_SCREENSHOT_TAGS)
        + f"; for histograms: {M.ENTROPY_HISTOGRAM}.", max_length=12)] = None,
    view: Annotated[Literal["scalars", "histograms"], Field(
        description="'scalars': line charts; 'histograms': the token-entropy histogram over steps.")] = "scalars",
    compare_with: Annotated[list[JobId] | None, Field(
        description="Other job ids drawn on the same charts (e.g. the unweighted run of an A/B).",
        max_length=MAX_COMPARE)] = None,
    allow_matplotlib: Annotated[bool, Field(
        description="If headless Chromium is not installed, draw the same scalars with matplotlib "
        "instead of failing (the result then says renderer='matplotlib').")] = False,
    manager: JobManager = Depends(get_manager),
    board: Board = Depends(tensorboard_server),
) -> ToolResult:
    """Screenshot of the job's real TensorBoard page (headless Chromium), filtered to the asked
    tags, after the charts have drawn. Returns the PNG as image content plus its path. Works while
    the job runs (once it has logged a step) and after it ended.
    Example: tensorboard_screenshot("ft-3f9a0c1b2d4e", compare_with=["ft-0a1b2c3d4e5f"]) →
    image + {"path": ".../screenshots/scalars-20260101-120000-vs-ft-0a1b2c3d4e5f.png",
    "renderer": "tensorboard", "tags": ["train/loss", ...], "runs": ["ft-3f9a0c1b2d4e", "ft-0a1b2c3d4e5f"]}."""
    runs, out_dir = _runs_to_show(manager, job_id, compare_with or [])
    shot = await anyio.to_thread.run_sync(functools.partial(
        take_screenshot, runs, server=board.server, tags=tags, view=view, fallback=allow_matplotlib,
        out_dir=out_dir))
    result = ScreenshotResult(job_id=job_id, **shot.to_dict())
    caption = (f"{'TensorBoard' if shot.renderer == 'tensorboard' else 'matplotlib (not TensorBoard)'} "
               f"{view} of {', '.join(shot.runs)}: {', '.join(shot.tags)} — saved to {shot.path}")
    return ToolResult(
        content=[Image(path=shot.path).to_image_content(), TextContent(type="text", text=caption)],
        structured_content=result.model_dump(),
    )


TOOLS = (tensorboard_screenshot,)
