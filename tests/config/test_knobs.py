"""Training settings are declared once: the CLI's training flags are generated from the config fields,
and the tools (whose parameters are the MCP contract, pinned in tests/server/tool_contract.json) expose
the same knobs as the CLI commands that mirror them — a knob added to one surface and not the other
fails here."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from finetune_mcp.cli import app
from finetune_mcp.cli.options import flag
from finetune_mcp.config.knobs import TYPED_KNOBS, knob_field, knob_of

CONTRACT = json.loads((Path(__file__).parents[1] / "server" / "tool_contract.json").read_text(encoding="utf-8"))
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
# Flags of `train` that start_finetune takes through config_overrides (adding them to its typed
# parameters would change the MCP contract), and --run-dir (a job's run directory is the server's choice).
TRAIN_ONLY_FLAGS = {"backend", "seed", "run_dir"}


def tool_knobs(tool: str) -> set[str]:
    return {k for p in CONTRACT[tool]["parameters"] if (k := knob_of(p)) is not None}


def command_knobs(command: str) -> set[str]:
    return {k for p in COMMANDS[command].params if p.name and (k := knob_of(p.name)) is not None}


def test_tools_and_cli_expose_the_same_training_knobs() -> None:
    knobs = {"model", "dataset", *TYPED_KNOBS}
    assert tool_knobs("start_finetune") == tool_knobs("preview_training") == knobs
    assert command_knobs("preview") == knobs
    assert command_knobs("train") == knobs | TRAIN_ONLY_FLAGS


def test_cli_flags_take_type_help_and_default_from_the_config_fields() -> None:
    train = {p.name: p for p in COMMANDS["train"].params}
    for name in ("model", "dataset", *TYPED_KNOBS):
        option = train[name]
        field = knob_field(name)
        assert option.default is None, name  # unset: the config decides
        assert field.description and option.help.startswith(field.description), name
        assert flag(name).split("/")[0].split()[0] in option.opts, name
    not_a_number = CliRunner().invoke(app, ["train", "--model", "m", "--dataset", "d", "--lora-r", "x"])
    assert not_a_number.exit_code == 2 and "--lora-r" in not_a_number.output  # typed by the field: int
    assert train["enable_entropy_weighting"].is_bool_flag and train["enable_entropy_weighting"].secondary_opts


def test_a_generated_flag_reaches_the_config_and_its_rule() -> None:
    result = CliRunner().invoke(app, ["preview", "--json", "--model", "m", "--dataset", "d.jsonl", "--lr", "2",
                                      "--num-gpus", "auto"])
    assert result.exit_code == 2
    answer = json.loads(result.output)
    assert answer["kind"] == "ConfigError" and "learning_rate" in answer["error"] and "2" in answer["error"]
    missing = CliRunner().invoke(app, ["train", "--model", "m"])
    assert missing.exit_code == 2 and "missing --dataset" in missing.output
