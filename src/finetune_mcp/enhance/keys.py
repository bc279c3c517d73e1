"""Which teacher/judge key may go to which endpoint: keys are bound to the endpoints the operator allowed.

An agent chooses the teacher's base URL and the NAME of the variable whose value is sent as its
bearer token. Without a binding, that is a way to read any variable of the server: point the URL at
a server you control and name `HF_TOKEN`. So a key is sent only when all of these hold:

- the variable is not one of finetune-mcp's own secrets (`PROJECT_SECRETS`: the Hub token, the
  RunPod key, the HTTP and worker tokens) — no setting can allow those;
- the variable is bound to endpoints, by `DEFAULT_BINDINGS` (well-known providers, each key to its
  own provider) or by the operator's `FINETUNE_MCP_TEACHER_KEYS`, e.g.
  `FINETUNE_MCP_TEACHER_KEYS="TEACHER_KEY=https://llm.example.com/v1,LOCAL_KEY=http://127.0.0.1:8000/v1"`
  (an entry for a variable replaces its default; repeat a variable to allow several URLs);
- the endpoint's base URL is one of those URLs or below it (same scheme, host and port; the path
  equal or under it, on a `/` boundary);
- the URL is https, or http to a loopback address (127.0.0.0/8, ::1, localhost), where nothing
  crosses a network;
- the path has no dot segments, before or after percent-decoding: `…/v1/../../evil` (or
  `…/v1/%2e%2e/%2e%2e/evil`) starts with the bound `…/v1` as text but reaches `/evil` once the
  HTTP client normalises it, so such a URL is refused, never matched.

Endpoints without a key (`api_key_env=None`) carry no secret, but the server still makes the
request and reads the answer (a request forgery aimed at the server's network): they too must be
https or loopback, with no credentials, query, fragment or dot segments, and their error bodies
are never copied into a job's error (`enhance.teachers`). The server checks at job start
(`enhance.start`), and the worker checks again right before it builds a client (`enhance.teachers`),
so a spec.json written by hand cannot skip the rule. Messages name variables and URLs, never values.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from finetune_mcp.errors import ConfigError

KEYS_ENV = "FINETUNE_MCP_TEACHER_KEYS"
PROJECT_SECRETS = frozenset({
    "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RUNPOD_API_KEY", "FINETUNE_MCP_TOKEN", "FINETUNE_MCP_WORKER_TOKEN",
})
# Each provider's key goes to that provider's OpenAI-compatible base URL, and nowhere else.
DEFAULT_BINDINGS: dict[str, tuple[str, ...]] = {
    "OPENAI_API_KEY": ("https://api.openai.com/v1",),
    "ANTHROPIC_API_KEY": ("https://api.anthropic.com/v1",),
    "GEMINI_API_KEY": ("https://generativelanguage.googleapis.com/v1beta/openai",),
    "OPENROUTER_API_KEY": ("https://openrouter.ai/api/v1",),
    "GROQ_API_KEY": ("https://api.groq.com/openai/v1",),
    "TOGETHER_API_KEY": ("https://api.together.xyz/v1",),
    "MISTRAL_API_KEY": ("https://api.mistral.ai/v1",),
    "DEEPSEEK_API_KEY": ("https://api.deepseek.com",),
    "FIREWORKS_API_KEY": ("https://api.fireworks.ai/inference/v1",),
}
EXAMPLE = f"{KEYS_ENV}='TEACHER_KEY=https://llm.example.com/v1'"


@dataclass(frozen=True)
class Origin:
    """A URL reduced to what decides where bytes go: scheme, host, port, and the path below it."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http(s) URL")
        if parts.username or parts.password:
            raise ValueError(f"{url!r} holds credentials; keys go in environment variables, not URLs")
        if parts.query or parts.fragment:
            raise ValueError(f"{url!r} has a query or fragment; give the plain base URL (…/v1)")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"{url!r} has an invalid port") from None
        path = unquote(parts.path)
        if any(segment in (".", "..") for segment in path.replace("\\", "/").split("/")) or "%" in path:
            raise ValueError(f"{url!r} has '.' or '..' path segments (or percent-encoded ones); give the plain "
                             "base URL (…/v1)")
        return cls(parts.scheme, parts.hostname.lower(), port, path.rstrip("/"))

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def safe_for_keys(self) -> bool:
        """https, or plain http that never leaves this machine."""
        return self.scheme == "https" or self.is_loopback

    def within(self, allowed: Origin) -> bool:
        same_place = (self.scheme, self.host, self.port) == (allowed.scheme, allowed.host, allowed.port)
        return same_place and (self.path == allowed.path or self.path.startswith(allowed.path + "/"))


def is_project_secret(name: str) -> bool:
    """finetune-mcp's own secrets (and anything in its FINETUNE_MCP_ namespace) are never teacher keys."""
    return name in PROJECT_SECRETS or name.startswith("FINETUNE_MCP_")


def key_bindings(environ: Mapping[str, str] | None = None) -> dict[str, tuple[str, ...]]:
    """The variable → allowed base URLs table: the defaults, with the operator's entries on top.
    A malformed setting is a ConfigError naming the entry and the fix."""
    env = os.environ if environ is None else environ
    raw = env.get(KEYS_ENV, "").strip()
    given: dict[str, list[str]] = {}
    for entry in filter(None, (e.strip() for e in raw.split(","))):
        name, sep, url = (p.strip() for p in entry.partition("="))
        if not sep or not name.isidentifier() or not url:
            raise ConfigError(f"{KEYS_ENV}: entry {entry!r} is not VARIABLE=URL; write e.g. {EXAMPLE}")
        if is_project_secret(name):
            raise ConfigError(f"{KEYS_ENV}: {name} is one of finetune-mcp's own secrets and is never sent to a "
                              "teacher or judge; put the endpoint's key in a variable of its own and bind that")
        try:
            origin = Origin.parse(url)
        except ValueError as exc:
            raise ConfigError(f"{KEYS_ENV}: entry {name}: {exc}") from None
        if not origin.safe_for_keys:
            raise ConfigError(f"{KEYS_ENV}: {name}={url} would send the key unencrypted over the network; use "
                              "https, or http only to a loopback address (127.0.0.1, ::1, localhost)")
        given.setdefault(name, []).append(url)
    return {**DEFAULT_BINDINGS, **{name: tuple(urls) for name, urls in given.items()}}


def check_key_binding(key_env: str | None, url: str, describe: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse to send the variable `key_env` to `url` unless the operator allowed exactly that (see
    the module docstring). `describe` names the endpoint in messages ("tiny-teacher at http://…")."""
    if not key_env:
        check_keyless_endpoint(url, describe)
        return
    if is_project_secret(key_env):
        raise ConfigError(f"{key_env} is one of finetune-mcp's own secrets and is never sent to a teacher or judge "
                          f"({describe}); put that endpoint's key in a variable of its own, allow it with "
                          f"{EXAMPLE}, and pass its name as teacher_api_key_env")
    try:
        origin = Origin.parse(url)
    except ValueError as exc:
        raise ConfigError(f"{describe}: {exc}") from None
    if not origin.safe_for_keys:
        raise ConfigError(f"{describe}: a key is sent only over https (or plain http to a loopback address such as "
                          f"127.0.0.1); use an https:// base URL, or teacher_api_key_env='' for an endpoint without "
                          "a key")
    allowed = key_bindings(environ).get(key_env)
    if allowed is None:
        raise ConfigError(f"{key_env} is not a teacher key the operator allowed, so it is not sent to {describe}; "
                          f"the operator binds it to its endpoint in the server's environment ({KEYS_ENV}="
                          f"'{key_env}={url}') and restarts the server, or pass teacher_api_key_env='' for an "
                          "endpoint without a key")
    if not any(origin.within(Origin.parse(a)) for a in allowed):
        raise ConfigError(f"the key in {key_env} may only be sent to {', '.join(allowed)}, not to {describe}; use "
                          f"that base URL, or the operator adds '{key_env}={url}' to {KEYS_ENV} and restarts the "
                          "server")


def check_keyless_endpoint(url: str, describe: str) -> None:
    """An endpoint without a key: https or loopback, and a plain base URL (see the module docstring)."""
    try:
        origin = Origin.parse(url)
    except ValueError as exc:
        raise ConfigError(f"{describe}: {exc}") from None
    if not origin.safe_for_keys:
        raise ConfigError(f"{describe}: an endpoint is reached only over https or on this machine (http to "
                          "127.0.0.1, ::1 or localhost); use its https:// URL, or an SSH tunnel to a loopback port")
