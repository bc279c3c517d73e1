"""The reranker's settings (method="rerank"; see `train/rerank/`): loss, instruction, group size."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class RerankConfig(BaseModel):
    """Qwen3-Reranker fine-tuning settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    rerank_loss: Literal["pointwise", "listwise"] = Field(
        "pointwise", description="pointwise: yes/no cross-entropy per (query, document); listwise: softmax over the "
        "yes-vs-no log-odds of one query's documents, cross-entropy on the relevant one.",
    )
    rerank_instruction: str | None = Field(
        None, max_length=2000, description="The <Instruct> line for rows without an 'instruction' (default: "
        "Qwen3-Reranker's 'Given a web search query, retrieve relevant passages that answer the query').",
    )
    rerank_group_size: int = Field(
        8, ge=2, le=256, description="listwise: documents per group (one relevant + up to this many - 1 less relevant).",
    )
