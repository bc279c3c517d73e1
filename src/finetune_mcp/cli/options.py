"""Training flags generated from the config groups: one typed option per knob of
`config.knobs.TYPED_KNOBS` (and any other TrainingConfig field a command asks for), its type,
help and default read from the pydantic field. Only the spelling of a flag is chosen here (the
short, established `--lr`, `--epochs`, ...); nothing about the setting itself is retyped.

A command takes the generated options as `**knobs` (keyed by field name):

    @app.command()
    @training_options("model", "dataset", *TYPED_KNOBS)
    def train(run_dir: ... = None, **knobs: Any) -> None:
        config = config_from(config_file, knobs)
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from pydantic_core import PydanticUndefined

from finetune_mcp.config import EnhancedTrainingConfig, build_config
from finetune_mcp.config.knobs import knob_field
from finetune_mcp.errors import ConfigError

# Flags spelled otherwise than --field-name (kept as users know them).
FLAGS: dict[str, str] = {
    "enable_entropy_weighting": "--entropy-weight/--no-entropy-weight",
    "entropy_weight_fn": "--entropy-fn",
    "num_train_epochs": "--epochs",
    "learning_rate": "--lr",
    "per_device_train_batch_size": "--batch-size",
    "gradient_accumulation_steps": "--grad-accum",
    "load_in_4bit": "--load-in-4bit/--no-load-in-4bit",
    "method": "--method --task",  # --task: the method's older name
}


def flag(name: str) -> str:
    """The command-line spelling of a knob (aliases separated by spaces)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


def option_type(annotation: Any) -> type:
    """The type Typer parses a field's value as: bool, int, float, else str (a Literal, or a union
    such as `int | 'auto'`, is checked by the config itself, with its own message)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    return annotation if annotation in (bool, int, float) else str


def option_help(name: str, override: str | None = None) -> str:
    field = knob_field(name)
    text = override or field.description or ""
    if typing.get_origin(field.annotation) is Literal:
        text += f" ({' | '.join(map(str, typing.get_args(field.annotation)))})"
    if field.default is not PydanticUndefined and field.default is not None:
        text += f" (default {field.default})"
    return text.strip()


def training_options(*names: str, helps: dict[str, str] | None = None) -> Callable[[Callable[..., Any]], Any]:
    """Replace the command's `**knobs` with one optional flag per name (default None: the config's
    own default applies); the command receives the flags given as `knobs` keyed by field name."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        generated = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
                option_type(knob_field(name).annotation) | None,
                typer.Option(*flag(name).split(), help=option_help(name, (helps or {}).get(name)))])
            for name in names
        ]

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            return fn(**values)

        parameters = [*own, *generated]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command

    return decorate


def config_from(config_file: Path | None, knobs: dict[str, Any]) -> EnhancedTrainingConfig:
    """The training config of a command: the --config file (if any) with the flags given on top."""
    overrides = {k: v for k, v in knobs.items() if v is not None}
    if config_file is not None:
        return EnhancedTrainingConfig.from_file(config_file, **overrides)
    missing = [name for name in ("model", "dataset") if name not in overrides]
    if missing:
        raise ConfigError(f"missing {' and '.join('--' + m for m in missing)}; pass them or --config FILE")
    return build_config(overrides)
