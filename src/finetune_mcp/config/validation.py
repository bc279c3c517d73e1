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
