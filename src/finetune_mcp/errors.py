"""The project's errors: one base class, a few kinds that carry the fields a user needs to act.

Every message ends with the next action. The MCP server turns a `FinetuneError` into a tool error
(`ToolError(str(err))`), the CLI into a red line and exit code 2; nothing else catches them.
"""

from __future__ import annotations

from pathlib import Path


class FinetuneError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ConfigError(FinetuneError):
    """A configuration value breaks a rule; `field` names it."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class DatasetError(FinetuneError):
    """A dataset cannot be read or a row is malformed; `path` and `line` point at it."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}" + (f", line {line}" if line is not None else "") + ": "
        super().__init__(where + message)


class ModelError(FinetuneError):
    """A model cannot be found or loaded as asked."""


class JobError(FinetuneError):
    """A job id is unknown or a job is in the wrong state for the request."""

    def __init__(self, message: str, *, job_id: str | None = None) -> None:
        self.job_id = job_id
        super().__init__(message)


class BackendError(FinetuneError):
    """A place to run the job (local GPU, RunPod) is missing or failed."""


class DeployError(FinetuneError):
    """Publishing to the Hugging Face Hub failed; nothing is presented as uploaded."""


class ExperimentError(FinetuneError):
    """A run of an experiment failed; `run` names it (its run directory keeps the details)."""

    def __init__(self, message: str, *, run: str | None = None) -> None:
        self.run = run
        super().__init__(message)


class ConsentError(FinetuneError):
    """Spending or publishing needs the user's agreement, which was refused or could not be asked
    for; nothing was started or uploaded."""


class ExportError(FinetuneError):
    """A GGUF export cannot run, or its file failed verification; nothing is left half-written."""


class DiskFullError(FinetuneError):
    """A write failed because the disk (or quota) is full; `path` is where, `free_bytes` what is left."""

    def __init__(self, message: str, *, path: str | Path, free_bytes: int | None = None) -> None:
        self.path = str(path)
        self.free_bytes = free_bytes
        super().__init__(message)


class HomeError(FinetuneError):
    """The server's home (FINETUNE_MCP_HOME: the job database, run directories) cannot be written."""


class DamagedDatabaseError(HomeError):
    """jobs.db cannot be read as a database (garbage, an overwritten header, a damaged page)."""


class PathAccessError(ConfigError):
    """A path a tool was given lies outside the folders the server may use (`config.roots`);
    nothing was read or created."""
