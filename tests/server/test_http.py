"""Streamable HTTP transport, over real HTTP to a real `finetune-mcp serve --transport http`: a bearer
token from FINETUNE_MCP_TOKEN is required for every request, a weak token stops the server at start,
and a request whose Host or Origin is not the server's is refused even with the right token (DNS
rebinding, issue 16 finding 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from server.conftest import free_port, http_server_process

TOKEN = "test-token-9f3c2a7b1e5d8046xq"


ALLOWED_APP = "https://app.example.com"
BODY = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[str]:
    env = {**os.environ, "FINETUNE_MCP_HOME": str(tmp_path / "home"), "FINETUNE_MCP_TOKEN": TOKEN,
           "FINETUNE_MCP_ALLOWED_ORIGINS": ALLOWED_APP}
    with http_server_process(env, tmp_path / "http-server.log") as url:
        yield url


async def test_requests_without_the_token_are_refused(http_server: str) -> None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with httpx.AsyncClient() as http:
        missing = await http.post(http_server, json=body, headers=headers)
        wrong = await http.post(http_server, json=body, headers={**headers, "Authorization": "Bearer nope"})
    assert missing.status_code == wrong.status_code == 401
    async with Client(http_server, auth=TOKEN) as client:
        names = {t.name for t in await client.list_tools()}
        jobs = await client.call_tool("list_jobs", {})
    assert "start_finetune" in names and jobs.structured_content["count"] == 0


async def test_a_foreign_origin_or_host_is_refused_even_with_the_token(http_server: str) -> None:
    """A page on evil.example that got the browser to talk to 127.0.0.1 (DNS rebinding) carries its
    Origin, or our port under its own Host name: both are refused, whatever the token."""
    port = http_server.split(":")[2].split("/")[0]
    auth = {**HEADERS, "Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as http:
        async def post(**headers: str) -> httpx.Response:
            return await http.post(http_server, json=BODY, headers={**auth, **headers})

        evil = await post(Origin="http://evil.example")
        evil_port = await post(Origin=f"http://evil.example:{port}")
        null = await post(Origin="null")
        other_local = await post(Origin="http://localhost:9999")  # another local web app
        rebound = await post(Host=f"evil.example:{port}")
        no_token = await http.post(http_server, json=BODY, headers={**HEADERS, "Origin": "http://evil.example"})
        same = await post(Origin=f"http://127.0.0.1:{port}")
        listed = await post(Origin=ALLOWED_APP)
        plain = await post()  # not a browser: no Origin
    assert evil.status_code == evil_port.status_code == null.status_code == other_local.status_code == 403
    assert "FINETUNE_MCP_ALLOWED_ORIGINS" in evil.text
    assert rebound.status_code == 421 and "FINETUNE_MCP_ALLOWED_HOSTS" in rebound.text
    assert no_token.status_code == 403
    for ok in (same, listed, plain):  # past the guard: the MCP layer answers (it wants a session first)
        assert ok.status_code not in (403, 421) and ok.json()["jsonrpc"] == "2.0", ok.text
    for origin in (ALLOWED_APP, f"http://127.0.0.1:{port}"):  # a whole MCP session, as a browser app would send it
        transport = StreamableHttpTransport(http_server, headers={"Origin": origin}, auth=TOKEN)
        async with Client(transport) as client:
            assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    with pytest.raises(Exception, match="error response"):  # the client is refused too (403 above)
        async with Client(StreamableHttpTransport(http_server, headers={"Origin": "http://evil.example"},
                                                  auth=TOKEN)) as client:
            await client.list_tools()


def serve_http(tmp_path: Path, *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `serve --transport http` expecting it to refuse to start."""
    base = {k: v for k, v in os.environ.items() if k != "FINETUNE_MCP_TOKEN"}
    return subprocess.run([sys.executable, "-m", "finetune_mcp.cli", "serve", "--transport", "http",
                           "--port", str(free_port()), *extra], env={**base, "FINETUNE_MCP_HOME": str(tmp_path), **env},
                          capture_output=True, text=True, timeout=60)


def test_http_without_a_good_token_does_not_start(tmp_path: Path) -> None:
    out = serve_http(tmp_path)
    assert out.returncode == 2
    assert "FINETUNE_MCP_TOKEN is not set" in out.stderr
    for weak, problem in ((" " * 16, "whitespace"), ("a" * 40, "too easy to guess"), ("0123456789abcdef", "too easy"),
                          ("short-Tok3n", "shorter than 16"), ("good-looking token", "whitespace"),
                          ("abcdefghijklmnopqrstuvwx", "too easy"), ("tok-0123456789abcdefghijk", "too easy")):
        out = serve_http(tmp_path, FINETUNE_MCP_TOKEN=weak)
        assert out.returncode == 2 and problem in out.stderr, (weak, out.stderr)
        assert "secrets.token_urlsafe(32)" in " ".join(out.stderr.split())


def test_every_interface_needs_the_allowed_hosts(tmp_path: Path) -> None:
    out = serve_http(tmp_path, "--host", "0.0.0.0", FINETUNE_MCP_TOKEN=TOKEN)
    assert out.returncode == 2 and "FINETUNE_MCP_ALLOWED_HOSTS" in out.stderr


async def test_a_malformed_origin_is_refused_with_403_not_500(http_server: str) -> None:
    """Issue 26 bug 9: an Origin that does not parse (an unclosed IPv6 bracket, a port past 65535)
    raised inside the guard, before authentication: a 500 and a traceback in the log."""
    auth = {**HEADERS, "Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as http:
        for origin in ("http://[::1", "http://127.0.0.1:99999", "http://[not-an-ip]:1", "http://a:-1"):
            answer = await http.post(http_server, json=BODY, headers={**auth, "Origin": origin})
            assert answer.status_code == 403, (origin, answer.status_code, answer.text)
            assert "FINETUNE_MCP_ALLOWED_ORIGINS" in answer.text
        plain = await http.post(http_server, json=BODY, headers=auth)  # the server is still fine
    assert plain.status_code not in (403, 421, 500) and plain.json()["jsonrpc"] == "2.0"
