"""The Ollama Modelfile beside a GGUF: FROM, TEMPLATE, stop parameters and the training system prompt.

Ollama's TEMPLATE is a Go template; the training tokenizer's chat template is Jinja. Rather than
translate Jinja (which has loops, conditions and filters), the turn format is *measured*: the Jinja
template is rendered on probe conversations that end the way inference does (a user turn and the
generation prompt), the text around each probe gives every role's prefix and suffix, and a
held-out conversation must render identically from those parts before they are used. The Go
template is then a plain loop over `.Messages` with one branch per role. ChatML (Qwen), Llama 3 and
other role-wrapped formats pass; Qwen3's think block only appears after the last user turn in
training renders, never in an inference render, so it passes too.

A template that is not role-wrapped (e.g. one that folds the system prompt into the first user turn)
gets no TEMPLATE line: Ollama then reads `tokenizer.chat_template` from the GGUF and picks its
matching built-in template; llama.cpp and LM Studio always use the GGUF's Jinja template itself.
The result says which of the two happened.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

Render = Callable[[list[dict[str, str]], bool], str]

_ROLES = ("system", "user", "assistant")
_PROBES = {name: f"\u2047{name}\u2047" for name in ("s", "u1", "a1", "u2", "a2", "u3")}


class NotRoleWrapped(ValueError):
    """The chat template does not render as prefix + content + suffix per message."""


@dataclass(frozen=True)
class TurnFormat:
    """A role-wrapped chat format: each message is prefix[role] + content + suffix[role]."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation_prompt: str
    preamble: str  # text before the first message (a BOS the tokenizer does not add)
    default_system: str | None  # the system prompt the template inserts when none is given

    def render(self, messages: Sequence[dict[str, str]]) -> str:
        """What the Go template will produce, for checking it against the Jinja template."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        body = "".join(self.prefix[m["role"]] + m["content"] + self.suffix[m["role"]] for m in messages)
        return self.preamble + body + self.generation_prompt

    def go_template(self) -> str:
        """The Ollama TEMPLATE: a loop over .Messages, one branch per role, then the generation prompt."""
        branches = []
        for keyword, role in zip(("if", "else if", "else if"), _ROLES, strict=True):
            branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{_go_text(self.prefix[role])}{{{{ .Content }}}}'
                            f"{_go_text(self.suffix[role])}")
        loop = "{{ range .Messages }}" + "".join(branches) + "{{ end }}{{ end }}"
        return _go_text(self.preamble) + loop + _go_text(self.generation_prompt)

    def stop_strings(self) -> list[str]:
        """The end-of-turn marker: the assistant suffix without its trailing whitespace."""
        marker = self.suffix["assistant"].strip()
        return [marker] if marker else []


def measure_turn_format(render: Render, bos_token: str | None = None) -> TurnFormat:
    """Find prefixes/suffixes from probe renders; raise NotRoleWrapped unless a held-out render matches.

    `render(messages, add_generation_prompt)` is the tokenizer's apply_chat_template(tokenize=False).
    `bos_token`: the BOS text the tokenizer adds by itself; removed from the preamble so that llama.cpp
    / Ollama (which add it when tokenizing) do not see it twice.
    """
    p = _PROBES
    user1 = [{"role": "user", "content": p["u1"]}]
    one = _render(render, user1, True)
    gen = one[len(_render(render, user1, False)):] if one.startswith(_render(render, user1, False)) else None
    if not gen:
        raise NotRoleWrapped("adding the generation prompt does not append text to the render")
    head, after_u1 = _split(one, p["u1"])
    if not after_u1.endswith(gen):
        raise NotRoleWrapped("the generation prompt is not at the end of the render")
    user_suffix = after_u1[: -len(gen)]

    three = _render(render, [*user1, {"role": "assistant", "content": p["a1"]}, {"role": "user", "content": p["u2"]}],
                    True)
    head3, rest = _split(three, p["u1"])
    between_ua, rest = _split(rest, p["a1"])
    between_au, tail = _split(rest, p["u2"])
    if head3 != head or between_ua != user_suffix + gen or tail != user_suffix + gen:
        raise NotRoleWrapped("a user turn renders differently depending on what follows it")
    if between_au.startswith(user_suffix) and head.endswith(between_au[len(user_suffix):]):
        assistant_suffix = user_suffix  # turns end alike whoever speaks (ChatML's <|im_end|>): the natural split
    else:
        assistant_suffix = between_au[: len(between_au) - len(_common_suffix(head, between_au))]
    user_prefix = between_au[len(assistant_suffix):]
    preamble = head[: len(head) - len(user_prefix)]

    with_system = _render(render, [{"role": "system", "content": p["s"]}, *user1], True)
    system_head, rest = _split(with_system, p["s"])
    between_su, tail = _split(rest, p["u1"])
    if not between_su.endswith(user_prefix) or tail != user_suffix + gen:
        raise NotRoleWrapped("the system prompt is not a turn of its own")
    system_suffix = between_su[: len(between_su) - len(user_prefix)]
    if system_head.startswith(preamble):  # nothing inserted without a system prompt (maybe a BOS)
        start, default_system = preamble, None
    else:  # the template inserts a system turn of its own when none is given
        start = bos_token if bos_token and preamble.startswith(bos_token) and system_head.startswith(bos_token) else ""
        inserted, prefix = preamble[len(start):], system_head[len(start):]
        if not (inserted.startswith(prefix) and inserted.endswith(system_suffix)):
            raise NotRoleWrapped("the text before the first user turn is not a system turn")
        default_system = inserted[len(prefix): len(inserted) - len(system_suffix)]
    system_prefix = system_head[len(start):]
    if bos_token and start.startswith(bos_token):
        start = start[len(bos_token):]
    turns = TurnFormat(prefix={"system": system_prefix, "user": user_prefix, "assistant": gen},
                       suffix={"system": system_suffix, "user": user_suffix, "assistant": assistant_suffix},
                       generation_prompt=gen, preamble=start, default_system=default_system)
    _check_held_out(render, turns, bos_token)
    return turns


def _check_held_out(render: Render, turns: TurnFormat, bos_token: str | None) -> None:
    p = _PROBES
    conversation = [{"role": "system", "content": p["s"]}, {"role": "user", "content": p["u1"]},
                    {"role": "assistant", "content": p["a1"]}, {"role": "user", "content": p["u2"]},
                    {"role": "assistant", "content": p["a2"]}, {"role": "user", "content": p["u3"]}]
    expected = _render(render, conversation, True)
    if bos_token and expected.startswith(bos_token) and not turns.preamble.startswith(bos_token):
        expected = expected[len(bos_token):]
    if turns.render(conversation) != expected:
        raise NotRoleWrapped("a three-turn conversation does not render as the sum of its turns")


def modelfile_text(gguf_name: str, *, turns: TurnFormat | None, stops: Sequence[str], system: str | None,
                   parameters: dict[str, Any] | None = None) -> str:
    """The Modelfile: FROM ./<file>, TEMPLATE (when measured), SYSTEM, PARAMETER stop ... ."""
    lines = ["# Ollama Modelfile written by finetune-mcp; use: ollama create NAME -f <this file>", f"FROM ./{gguf_name}"]
    if turns is not None:
        lines.append(f'TEMPLATE """{_triple_quoted(turns.go_template())}"""')
    else:
        lines.append("# No TEMPLATE: Ollama takes the chat template from the GGUF's tokenizer.chat_template.")
    system = system if system is not None else (turns.default_system if turns is not None else None)
    if system:
        lines.append(f'SYSTEM """{_triple_quoted(system)}"""')
    for stop in dict.fromkeys(s for s in stops if s):
        lines.append(f"PARAMETER stop {_quoted(stop)}")
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def constant_system_prompt(examples: Sequence[dict[str, Any]]) -> str | None:
    """The system message every chat example starts with, if there is one and it is the same everywhere."""
    found: set[str] = set()
    for example in examples:
        messages = example.get("messages") or []
        if not messages or messages[0].get("role") != "system":
            return None
        found.add(messages[0]["content"])
        if len(found) > 1:
            return None
    return next(iter(found)) if found else None


def _render(render: Render, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        return render(messages, generation_prompt)
    except Exception as exc:  # a template may raise on a shape it does not accept (e.g. system first)
        raise NotRoleWrapped(f"the template refused a probe conversation: {exc}") from None


def _split(text: str, probe: str) -> tuple[str, str]:
    if text.count(probe) != 1:
        raise NotRoleWrapped("the template does not render each message's content once, unchanged")
    before, after = text.split(probe)
    return before, after


def _common_suffix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[len(a) - 1 - n] == b[len(b) - 1 - n]:
        n += 1
    return a[len(a) - n:] if n else ""


def _go_text(text: str) -> str:
    """Literal text inside a Go template: `{{` would open an action, so it is printed as a string."""
    return text.replace("{{", '{{ "{{" }}')


def _triple_quoted(text: str) -> str:
    return text.replace('"""', '\\"\\"\\"')


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
