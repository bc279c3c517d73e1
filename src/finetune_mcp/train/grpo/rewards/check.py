"""Preflight of GRPO rewards: call each on a few sample rows before a job starts.

The recurring GRPO failures this catches in a second instead of after the model loaded: a reward
that does not take TRL's keywords (`prompts`, `completions`, `completion_ids` and one keyword per
dataset column: the fix is `**kwargs`), one that returns something other than one float (or None)
per completion, one that raises on the rows, and one that reads a column the rows do not have.
It warns when a reward gives the same value to every probe completion (the reference answer, an
empty reply and an unrelated one): every group would then have zero reward variance, zero advantage
and a zero loss.

Probe completions stand in for the model's (none exists yet); completion_ids are character codes,
since the server has no tokenizer. User functions run in a short child process
(`python -m finetune_mcp.train.grpo.rewards.check`), so their module's code never runs inside the
server and a crash or a hang costs the child only.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
from typing import Any

from finetune_mcp.config.preference import ANSWER_REWARDS, RewardSpec
from finetune_mcp.train.grpo.rewards.builtin_rewards import BUILTINS, RewardFn
from finetune_mcp.train.grpo.rewards.combine import load_reward

PROBE_ROWS = 3
CHILD_TIMEOUT_S = 60
TRL_KEYWORDS = ("prompts", "completions", "completion_ids")


class RewardCheckError(ValueError):
    """A reward would fail in training: the message says which, why, and the fix."""


def probe_batch(rows: list[dict[str, Any]], specs: list[RewardSpec]) -> dict[str, Any]:
    """The keyword arguments TRL would pass for a few rows × three probe completions each."""
    answer_column = next((s.column for s in specs if s.function in ANSWER_REWARDS), None)
    prompts, completions, columns = [], [], {}
    for row in rows[:PROBE_ROWS]:
        extra = row.get("columns", {})
        reference = str(extra.get(answer_column, "")) if answer_column else ""
        conversational = isinstance(row["prompt"], list)
        for text in (reference or "42", "", "The weather is nice today."):
            prompts.append(row["prompt"])
            completions.append([{"role": "assistant", "content": text}] if conversational else text)
            for key, value in extra.items():
                columns.setdefault(key, []).append(value)
    ids = [[ord(ch) % 50000 for ch in (c if isinstance(c, str) else c[0]["content"])] for c in completions]
    return {"prompts": prompts, "completions": completions, "completion_ids": ids, **columns}


def check_reward(fn: RewardFn, name: str, batch: dict[str, Any]) -> str | None:
    """Call `fn` as TRL would; RewardCheckError on a failure, a warning (or None) otherwise."""
    _check_signature(fn, name, [k for k in batch if k not in TRL_KEYWORDS])
    try:
        values = fn(**batch)
    except Exception as exc:
        raise RewardCheckError(f"reward {name!r} raised {type(exc).__name__} on the first rows of the dataset: "
                               f"{exc}") from None
    n = len(batch["completions"])
    if not isinstance(values, list | tuple) or len(values) != n:
        got = f"a {type(values).__name__}" + (f" of length {len(values)}" if hasattr(values, "__len__") else "")
        raise RewardCheckError(f"reward {name!r} returned {got}; it must return a list with one float (or None "
                               f"to skip) per completion ({n} here)")
    bad = [v for v in values if v is not None and (isinstance(v, bool) or not isinstance(v, int | float))]
    if bad:
        raise RewardCheckError(f"reward {name!r} returned {type(bad[0]).__name__} values ({bad[0]!r}); return "
                               "float(...) per completion, or None to skip one")
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        return f"reward {name!r} returned NaN or infinity on the probe rows; such completions poison the advantage"
    seen = {v for v in values if v is not None}
    if len(seen) <= 1:
        value = next(iter(seen), None)
        return (f"reward {name!r} gave the same value ({value}) to the reference answer, an empty reply and an "
                "unrelated one on the first rows: if it does so in training every group has zero reward variance, "
                "zero advantage and a zero loss; check its column, pattern or code")
    return None


def check_rewards(specs: list[RewardSpec], rows: list[dict[str, Any]]) -> list[str]:
    """Every reward of `specs` probed on `rows` (normalised prompt-only rows); warnings back,
    RewardCheckError on the first failure. User functions are probed in a child process."""
    batch = probe_batch(rows, specs)
    warnings = []
    for spec in specs:
        if spec.function in BUILTINS:
            warning = check_reward(load_reward(spec), spec.function, batch)
            warnings += [warning] if warning else []
    user = [s for s in specs if s.function not in BUILTINS]
    if user:
        warnings += _check_in_child(user, batch)
    return warnings


def _check_signature(fn: RewardFn, name: str, columns: list[str]) -> None:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return  # a builtin or C callable: the call will tell
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    names = {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    missing = [k for k in (*TRL_KEYWORDS, *columns) if k not in names]
    if missing:
        raise RewardCheckError(
            f"reward {name!r} cannot take the keywords TRL passes ({', '.join(missing)}): TRL calls "
            "f(prompts=..., completions=..., completion_ids=..., **dataset_columns); define it as "
            f"`def {getattr(fn, '__name__', 'reward')}(completions, **kwargs) -> list[float]`")


def _check_in_child(specs: list[RewardSpec], batch: dict[str, Any]) -> list[str]:
    payload = json.dumps({"specs": [s.model_dump() for s in specs], "batch": batch})
    try:
        done = subprocess.run([sys.executable, "-m", "finetune_mcp.train.grpo.rewards.check"], input=payload,
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, env=dict(os.environ))
    except subprocess.TimeoutExpired:
        raise RewardCheckError(f"the reward functions did not answer within {CHILD_TIMEOUT_S} s on "
                               f"{len(batch['completions'])} probe completions; a reward must be fast "
                               "(it runs on every generation batch)") from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise RewardCheckError(f"checking the reward functions failed: {done.stderr.strip()[-600:]}") from None
    if answer.get("error"):
        raise RewardCheckError(answer["error"])
    return answer["warnings"]


def _child() -> None:
    """The child's side: load each user reward (allow-list first), probe it, print one JSON line."""
    request = json.loads(sys.stdin.read())
    warnings, error = [], None
    try:
        for raw in request["specs"]:
            spec = RewardSpec.model_validate(raw)
            warning = check_reward(load_reward(spec), spec.function, request["batch"])
            warnings += [warning] if warning else []
    except ValueError as exc:  # RewardCheckError, UserFunctionError
        error = str(exc)
    print(json.dumps({"error": error, "warnings": warnings}))


if __name__ == "__main__":
    _child()
