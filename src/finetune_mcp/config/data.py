"""What data to read and how: `DataConfig`, shared by every kind of job that reads a dataset
(training, evaluation, enhancement, the preview), and the ArangoDB `MetadataFilters`.

`data.loader.load_examples` takes a `DataConfig` (or any config composed of it): the format
detection, filters, seeded subset and train/validation split are the same for every consumer, so
the rows an evaluation calls "held out" are exactly the rows training did not see.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from finetune_mcp.config.methods import DEFAULT_METHOD, METHODS, TrainingMethod, get_method

DatasetFormat = Literal[
    "auto", "alpaca", "messages", "sharegpt", "prompt_completion", "text", "arangodb", "ranking", "triples", "graded",
    "preference", "implicit_preference", "unpaired_preference", "prompt_only",
]


class MetadataFilters(BaseModel):
    """Row filters for ArangoDB Q&A exports (their `metadata` object)."""

    model_config = ConfigDict(extra="forbid")

    min_confidence: float | None = Field(None, ge=0, le=1, description="Keep rows with metadata.confidence >= this.")
    validated_only: bool = Field(False, description="Keep only rows with metadata.validated == true.")
    question_types: list[str] | None = Field(None, description="Keep only these metadata.question_type values.")


class DataConfig(BaseModel):
    """The dataset, its format and split, and how examples become tokens."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)

    dataset: str = Field(
        validation_alias=AliasChoices("dataset", "dataset_path", "dataset_name"),
        min_length=1,
        description="Local file/folder (JSONL, JSON, CSV, Parquet) or a Hugging Face dataset id.",
    )
    method: str = Field(
        DEFAULT_METHOD, validation_alias=AliasChoices("method", "task"),
        description="Training method: " + "; ".join(f"{m.name} ({m.summary})" for m in METHODS.values())
        + ". `task` is its older name.",
    )
    dataset_format: DatasetFormat = "auto"
    dataset_split: str = Field("train", description="Split to read from a hub dataset.")
    metadata_filters: MetadataFilters = Field(default_factory=MetadataFilters)
    max_examples: int | None = Field(
        None, ge=1, validation_alias=AliasChoices("max_examples", "max_samples"),
        description="Seeded random subset of this many examples.",
    )
    validation_split: float = Field(0.1, ge=0, le=0.5, description="Fraction held out for evaluation.")
    max_seq_length: int = Field(2048, ge=16, le=131072, description="Tokens per example; longer ones are cut.")
    assistant_only_loss: bool = Field(True, description="Compute loss on assistant tokens only.")
    seed: int = Field(3407, validation_alias=AliasChoices("seed", "random_state"),
                      description="Seeds the subset, the split and training.")
    split_seed: int | None = Field(
        None, description="Seed of the subset and train/validation split instead of `seed`. An experiment fixes it, "
        "so runs with different seeds are scored on the same held-out rows.",
    )

    dataset_files: dict[str, dict[str, int | str]] | None = Field(
        None, description="Set by the server's start check, not by callers: each local data file it read, with its "
        "device, inode, size, mtime and SHA-256. The worker reads exactly these files, without following links, "
        "and refuses one that changed since (`data.loader`).",
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown training method {value!r}; use one of {', '.join(METHODS)}")
        return value

    @property
    def task(self) -> str:
        """The method under its older name (results and job views still say `task`)."""
        return self.method

    @property
    def training_method(self) -> TrainingMethod:
        """This config's method descriptor (`config.methods`)."""
        return get_method(self.method)

    @property
    def accepted_formats(self) -> tuple[str, ...]:
        """The dataset formats the method trains on: what `data.loader` checks rows against."""
        return self.training_method.formats

    @property
    def data_split_seed(self) -> int:
        """The seed that picks the subset and the validation rows."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def data(self) -> DataConfig:
        """This config's data group on its own (what `load_examples` needs)."""
        return DataConfig.model_validate({name: getattr(self, name) for name in DataConfig.model_fields})
