"""The prompts of a sample job: given inline, or taken from dataset rows read as training read them.

Rows go through `data.loader.load_examples` with the sampled job's own data settings (format,
filters, max_examples, validation_split, seed), so `split="validation"` yields exactly the rows
that job held out (`train`: the rows it trained on), in the order of its seeded split. From a row:
  messages             the turns before the last assistant turn are the prompt; that turn's text
                       is the reference answer
  prompt / completion  the prompt text (no chat template, as in training); the completion is the
                       reference
  text                 no prompt/answer split: skipped (a job trained on plain text is sampled
                       with inline prompts)
Standard library and pydantic only: the server calls this at job start for local datasets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from finetune_mcp.errors import ConfigError, DatasetError
from finetune_mcp.sample.spec import RowSource, SamplePrompt


def inline_prompts(prompts: Sequence[str | Sequence[dict[str, Any]]]) -> list[SamplePrompt]:
    """A user turn per string; a list of {role, content} dicts is a conversation, ending with the user."""
    from pydantic import ValidationError

    out = []
    for index, prompt in enumerate(prompts):
        if isinstance(prompt, str):
            if not prompt.strip():
                raise ConfigError(f"prompt {index} is empty; write the question to ask", field="prompts")
            data: dict[str, Any] = {"messages": [{"role": "user", "content": prompt}]}
        else:
            data = {"messages": list(prompt)}
        try:
            out.append(SamplePrompt.model_validate(data))
        except ValidationError as exc:
            problems = "; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors())
            raise ConfigError(f"prompt {index}: {problems}; give a string, or a list of {{'role': 'system'|'user'|"
                              "'assistant', 'content': str}} turns ending with a user turn", field="prompts") from None
    return out


def row_prompts(rows: RowSource) -> list[SamplePrompt]:
    """`rows.count` prompts (first or seeded) from the rows' split; a DatasetError that says what to
    do when the split has none with a prompt."""
    from finetune_mcp.data.loader import load_examples

    data = load_examples(rows.data)
    pool = {"validation": data.validation, "train": data.train, "all": data.train + data.validation}[rows.split]
    usable = [(i, prompt) for i, row in enumerate(pool) if (prompt := row_prompt(row, i)) is not None]
    if not usable:
        if not pool:
            raise DatasetError(f"the {rows.split} split holds no rows (validation_split={rows.validation_split}, "
                               f"{data.rows_kept} row{'s' if data.rows_kept != 1 else ''} kept); pass prompts, or rows_split='all'", path=data.source)
        raise DatasetError(f"none of the {len(pool)} {rows.split} rows has a prompt and an answer (plain text "
                           "rows); pass prompts instead", path=data.source)
    if rows.order == "seeded" and len(usable) > rows.count:
        picked = sorted(random.Random(rows.order_seed).sample(range(len(usable)), rows.count))
        usable = [usable[i] for i in picked]
    return [prompt for _, prompt in usable[: rows.count]]


def row_prompt(example: dict[str, Any], index: int) -> SamplePrompt | None:
    """The prompt and reference of one normalised example (see the module docstring)."""
    if "messages" in example:
        messages = example["messages"]
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            return None
        return SamplePrompt(messages=messages[:last], reference=messages[last]["content"], row=index)
    if "prompt" in example:
        return SamplePrompt(text=example["prompt"], reference=example.get("completion"), row=index)
    return None
