"""Pydantic validation errors as one sentence per problem, worded for the caller's context."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(exc: ValidationError, what: str = "training config",
                            fields_of: str = "EnhancedTrainingConfig") -> str:
    """One line per problem: the field, the rule it broke, and the value given. `what` names the
    thing validated ("training config", "evaluation"), `fields_of` where its fields are listed."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "config"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; check the spelling (see {fields_of} fields)"
        given = f" (got {err['input']!r})" if "input" in err and err["type"] != "missing" else ""
        lines.append(f"{loc}: {msg}{given}")
    return f"invalid {what}: " + "; ".join(lines)


def format_argument_error(exc: ValidationError, tool: str) -> str:
    """A tool call's arguments that broke their typed parameters' rules, as one sentence: each
    parameter, the rule and the value given ("start_finetune: max_steps must be greater than or
    equal to 1 (got -3)"), without pydantic's report and links."""
    parts = []
    for err in exc.errors(include_url=False):
        name = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = err["msg"].removeprefix("Value error, ")
        missing = err["type"] in ("missing", "missing_argument")
        if missing:
            rule = "is required"
        elif err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
            rule = f"is not a parameter of {tool}; check the spelling against the tool's parameters"
        elif msg.startswith("Input should be "):
            rule = "must be " + msg.removeprefix("Input should be ")
        else:
            rule = f"is invalid: {msg[:1].lower()}{msg[1:]}"
        given = f" (got {err['input']!r})" if "input" in err and not missing else ""
        parts.append(f"{name} {rule}{given}")
    return f"{tool}: " + "; ".join(parts)
