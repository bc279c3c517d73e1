"""Who may talk to the HTTP transport: one bearer token, and only through the addresses we serve.

Token: one shared secret from FINETUNE_MCP_TOKEN, compared in constant time (FastMCP's
`StaticTokenVerifier` is meant for tests: a plain dict lookup). The server refuses to start with a
token that is empty, holds whitespace (a header cannot carry it as written; "16 spaces" is not a
secret), is shorter than MIN_TOKEN_LENGTH, or has too little entropy (`token_problem`: "aaaa…",
"0123456789abcdef"); the message says how to make a good one. Requests without
`Authorization: Bearer <token>` get 401 before they reach any tool.

Host and Origin (`HostOriginGuard`, an ASGI middleware in front of everything): the MCP transport
spec asks servers to validate Origin, against DNS rebinding — a web page on evil.example whose name
is re-pointed at 127.0.0.1 can make the browser send requests here. So:

- `Host` must name the address the server is bound to (and, bound to loopback, any loopback
  name: 127.0.0.1, localhost, ::1), or an entry of FINETUNE_MCP_ALLOWED_HOSTS (the names clients
  use behind a reverse proxy: `mcp.example.com` or `mcp.example.com:443`); else 421.
- `Origin`, when a browser sends one, must be the server's own origin (http(s)://<Host>) or an
  entry of FINETUNE_MCP_ALLOWED_ORIGINS (`https://app.example.com`); else 403. Clients that are not
  browsers send no Origin and are not affected.

Bound to every interface (0.0.0.0, ::) there is no one address to check against, so the server
refuses to start until FINETUNE_MCP_ALLOWED_HOSTS names the addresses clients use.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from fastmcp.server.auth import AccessToken, TokenVerifier
from starlette.types import ASGIApp, Receive, Scope, Send

from finetune_mcp.errors import ConfigError

TOKEN_ENV = "FINETUNE_MCP_TOKEN"
ALLOWED_HOSTS_ENV = "FINETUNE_MCP_ALLOWED_HOSTS"
ALLOWED_ORIGINS_ENV = "FINETUNE_MCP_ALLOWED_ORIGINS"
MIN_TOKEN_LENGTH = 16
MIN_TOKEN_BITS = 72  # estimated from the token's own characters; token_urlsafe(32) has ~200
MIN_DISTINCT_CHARS = 8
MAKE_TOKEN = f"export {TOKEN_ENV}=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class SharedTokenVerifier(TokenVerifier):
    """Accepts exactly one bearer token."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token.encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if not hmac.compare_digest(token.encode(), self._token):
            return None
        return AccessToken(token=token, client_id="finetune-mcp-client", scopes=[])


def token_problem(token: str) -> str | None:
    """What is wrong with `token` as the server's secret, or None. The entropy estimate is the
    token's length times the Shannon entropy of its characters: a lower bound on nothing, but it
    catches the tokens people type by hand (repeats, short alphabets, counting)."""
    if not token:
        return "is not set"
    if any(c.isspace() or not c.isprintable() for c in token):
        return "contains whitespace or control characters"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"is shorter than {MIN_TOKEN_LENGTH} characters"
    kept = _without_runs(token)
    counts = Counter(kept)
    bits = -len(kept) * sum(n / len(kept) * math.log2(n / len(kept)) for n in counts.values())
    if len(counts) < MIN_DISTINCT_CHARS or bits < MIN_TOKEN_BITS:
        return f"is too easy to guess (about {bits:.0f} bits; at least {MIN_TOKEN_BITS} are needed)"
    return None


def _without_runs(token: str) -> str:
    """`token` without the characters that only continue a counting run (`abcdefgh`, `9876`): a run
    is as easy to guess as its first two characters, however long, and `abcdefghijklmnopqrstuvwx`
    has 24 distinct characters and passed the entropy estimate as if it were random."""
    kept = token[:2]
    for i in range(2, len(token)):
        step = ord(token[i]) - ord(token[i - 1])
        if not (abs(step) == 1 and step == ord(token[i - 1]) - ord(token[i - 2])):
            kept += token[i]
    return kept


def token_from_env(environ: Mapping[str, str] | None = None) -> str:
    """The HTTP token, or a ConfigError that says how to make a good one."""
    token = (os.environ if environ is None else environ).get(TOKEN_ENV, "")
    problem = token_problem(token)
    if problem is not None:
        raise ConfigError(f"{TOKEN_ENV} {problem}; the HTTP transport needs a random bearer token. Make one with: "
                          f"{MAKE_TOKEN}")
    return token


def _split_host(value: str) -> tuple[str, int | None]:
    """`name:port`, `[::1]:8765`, `::1` → (lowercase name without brackets, port or None)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":")
    elif value.count(":") == 1:
        name, _, port = value.partition(":")
    else:
        name, port = value, ""
    return name, int(port) if port.isdigit() else None


def _unspecified(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(value: str) -> str:
    """`HTTP://Example.com:443/` → `http://example.com:443`: scheme://host[:port], lowercase, no path."""
    parts = urlsplit(value.strip())
    host = parts.hostname or ""
    bracketed = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{bracketed}" + (f":{parts.port}" if parts.port else "")


def _listed(environ: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in environ.get(name, "").split(",") if item.strip()]


@dataclass(frozen=True)
class HostOriginPolicy:
    """The Host names and browser Origins the server answers (see the module docstring)."""

    hosts: tuple[tuple[str, int | None], ...]  # (name, port or None = any port)
    origins: frozenset[str]

    @classmethod
    def for_bind(cls, host: str, port: int, environ: Mapping[str, str] | None = None) -> HostOriginPolicy:
        env = os.environ if environ is None else environ
        extra_hosts = [_split_host(h) for h in _listed(env, ALLOWED_HOSTS_ENV)]
        origins = []
        for entry in _listed(env, ALLOWED_ORIGINS_ENV):
            try:
                parts = urlsplit(entry)
                normal = _origin(entry) if parts.scheme in ("http", "https") and parts.hostname else ""
            except ValueError:  # `http://[::1`, a port past 65535
                normal = ""
            if not normal or parts.path.strip("/"):
                raise ConfigError(f"{ALLOWED_ORIGINS_ENV}: {entry!r} is not an origin; write scheme://host[:port], "
                                  "e.g. https://app.example.com")
            origins.append(normal)
        bound = _split_host(host)[0] if host.startswith("[") else host.strip().lower()
        if _unspecified(bound):
            if not extra_hosts:
                raise ConfigError(f"serving on {host} (every interface) leaves no address to check the Host header "
                                  f"against (DNS rebinding); set {ALLOWED_HOSTS_ENV} to the names clients use, e.g. "
                                  f"{ALLOWED_HOSTS_ENV}='gpu-box.lan,10.0.0.5', or bind one address with --host")
            names: Iterable[str] = ()
        elif _loopback(bound):
            names = {bound, *LOOPBACK_NAMES}
        else:
            names = {bound}
        return cls(tuple((n, port) for n in names) + tuple(extra_hosts), frozenset(origins))

    def host_allowed(self, header: str) -> bool:
        name, port = _split_host(header)
        return bool(name) and any(name == n and (p is None or port == p or (port is None and p in (80, 443)))
                                  for n, p in self.hosts)

    def origin_allowed(self, origin: str, host_header: str) -> bool:
        """Whether a browser's Origin may call; one that does not parse (`http://[::1`, a port past
        65535) is not ours either: refused like a foreign one, never a 500."""
        if origin.strip().lower() == "null":
            return False
        try:
            normal = _origin(origin)
        except ValueError:
            return False
        if normal in self.origins:
            return True
        try:
            same = {_origin(f"{scheme}://{host_header.strip()}") for scheme in ("http", "https")}
        except ValueError:
            return False
        return normal in same


class HostOriginGuard:
    """ASGI middleware: refuse HTTP requests whose Host or Origin is not ours, before auth and routing."""

    def __init__(self, app: ASGIApp, policy: HostOriginPolicy) -> None:
        self.app, self.policy = app, policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            host, origin = headers.get("host", ""), headers.get("origin")
            if not self.policy.host_allowed(host):
                await _refuse(send, 421, f"Host {host!r} is not an address of this server; if clients reach it under "
                                         f"that name (a reverse proxy), add it to {ALLOWED_HOSTS_ENV}")
                return
            if origin is not None and not self.policy.origin_allowed(origin, host):
                await _refuse(send, 403, f"Origin {origin!r} may not call this server; if that web app should, add "
                                         f"it to {ALLOWED_ORIGINS_ENV}")
                return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, message: str) -> None:
    body = message.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
