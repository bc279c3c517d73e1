"""The dataset formats: one small module per format, registered once in `REGISTRY` below.

A format module defines one `RowFormat` (`base.py`): its name, what a row needs, how its keys are
recognised, how a row is checked and normalised, and (ranking) how rows combine after loading.
`detect_format` walks the registry once, in order, so precedence is the order of `REGISTRY`: ranking
rows before chat rows (they may carry an 'instruction'), ArangoDB exports before plain chat rows,
prompt/completion after alpaca. Every row becomes {"messages"}, {"prompt", "completion"}, {"text"}
or a ranking query group, plus its `metadata` object and `weight` where it has them.

Preference pairs and KTO rows (`preference.py`) and GRPO's prompt-only rows (`prompt_only.py`) are
registered like the rest. Adding a format: a module here with its `FORMAT`, one
entry in `REGISTRY`, its name in `config.data.DatasetFormat` and in the `formats` of the method
that trains on it (`config.methods`). `data/` never sees a method: the loader receives the formats
the method accepts (`check_accepted`). Standard library only: the server imports this at start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune_mcp.config.methods import method_for_format
from finetune_mcp.data.formats import (
    alpaca,
    arangodb,
    chat,
    preference,
    prompt_completion,
    prompt_only,
    ranking,
    sharegpt,
    text,
)
from finetune_mcp.data.formats.base import (
    Checker,
    RowFormat,
    as_object,
    example_weight,
    kind,
    passes_filters,
    short_keys,
)
from finetune_mcp.errors import DatasetError

REGISTRY: tuple[RowFormat, ...] = (
    *ranking.FORMATS,
    arangodb.FORMAT,
    chat.FORMAT,
    sharegpt.FORMAT,
    alpaca.FORMAT,
    *preference.FORMATS,  # before prompt/completion: {"prompt", "completion", "label"} is a KTO row
    prompt_completion.FORMAT,
    prompt_only.FORMAT,
    text.FORMAT,
)
FORMATS: dict[str, RowFormat] = {fmt.name: fmt for fmt in REGISTRY}
NESTED_FIELDS = frozenset().union(*(fmt.nested_fields for fmt in REGISTRY))  # JSON text in CSV / Parquet cells


def detect_format(row: Any, *, path: Path | str, line: int, accepted: tuple[str, ...] = ()) -> str:
    """The format a row's keys announce; an error listing every format's needs when none matches.
    The formats the method takes (`accepted`) are asked first, in registry order, then the rest: a
    {"prompt"} row is prompt-only for GRPO, a prompt/completion row missing its completion for SFT,
    and {"prompt", "completion", "label"} a KTO row for KTO only."""
    row = as_object(row, path=path, line=line)
    for fmt in sorted(REGISTRY, key=lambda f: f.name not in accepted):
        if fmt.matches(row):
            return fmt.name
    raise DatasetError(
        f"cannot tell the format from the keys {short_keys(sorted(row))}; expected one of: "
        + "; ".join(fmt.expected for fmt in REGISTRY) + ". Rename the fields or set dataset_format",
        path=path,
        line=line,
    )


def normalize_row(row: Any, fmt: str, *, path: Path | str, line: int) -> dict[str, Any]:
    """Check one row of format `fmt` and return it normalised, plus the row's `metadata` object when
    it has one (GRANGER also exports alpaca rows with metadata) and its `weight` (a per-example loss
    multiplier) when it has one."""
    row = as_object(row, path=path, line=line)
    spec = FORMATS.get(fmt)
    if spec is None:
        raise DatasetError(f"unknown dataset_format {fmt!r}; use one of {', '.join(FORMATS)} or auto")
    example = spec.normalize(row, path, line)
    if not spec.row_extras:
        return example
    if spec.requires_metadata or row.get("metadata") is not None:
        check = Checker(row, spec.expected, path, line)
        metadata = check.require("metadata")
        if not isinstance(metadata, dict):
            check.fail(f"field 'metadata' is {kind(metadata)}; expected an object (confidence, validated, ...)")
        example["metadata"] = metadata
    if row.get("weight") is not None:
        example["weight"] = example_weight(row["weight"], path=path, line=line)
    return example


def check_accepted(accepted: tuple[str, ...], examples: list[dict[str, Any]], formats: set[str],
                   source: str) -> list[dict[str, Any]]:
    """Refuse a dataset whose formats the training method does not take (`accepted`, from its
    descriptor), then let the formats combine their rows (ranking: one group per query). Returns
    the examples to split."""
    refused = sorted(formats - set(accepted))
    if refused:
        hint = method_for_format(refused[0])
        raise DatasetError(
            f"the data is in {', '.join(refused)} format, but the training method takes "
            f"{', '.join(accepted)} rows; "
            + (f"set method={hint.name!r} to train on {refused[0]} rows, or give such rows" if hint
               else "give such rows"),
            path=source,
        )
    for combine in dict.fromkeys(FORMATS[f].combine for f in sorted(formats) if FORMATS[f].combine):
        examples = combine(examples)
    return examples


__all__ = ["FORMATS", "NESTED_FIELDS", "REGISTRY", "RowFormat", "check_accepted", "detect_format", "normalize_row",
           "passes_filters", "short_keys"]
