"""Tool parameters that name a run's weights, shared by evaluate_model, sample_model and export_model."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

CheckpointArg = Annotated[int | Literal["latest"] | None, Field(
    description="One of the job's checkpoints instead of its final adapter: a step (get_job lists them under "
    "`checkpoints`) or 'latest'.")]
