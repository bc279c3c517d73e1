"""Process-wide settings read from the environment (home folder, secrets)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Settings(BaseModel):
    """Process-wide settings from the environment. Secrets stay here and in child environments only."""

    model_config = ConfigDict(frozen=True)

    home: Path
    hf_token: str | None = Field(None, repr=False)
    runpod_api_key: str | None = Field(None, repr=False)

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("FINETUNE_MCP_HOME") or Path.home() / ".finetune-mcp").expanduser()
        return cls(
            home=home,
            hf_token=os.environ.get("HF_TOKEN") or None,
            runpod_api_key=os.environ.get("RUNPOD_API_KEY") or None,
        )

    @property
    def runs_dir(self) -> Path:
        return self.home / "runs"

    @property
    def db_path(self) -> Path:
        return self.home / "jobs.db"

