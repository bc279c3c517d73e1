"""Allowed roots (`config.roots`): through a real MCP client against `finetune-mcp serve`, every path a
tool takes must resolve inside FINETUNE_MCP_HOME, FINETUNE_MCP_ROOTS or the client's roots (over stdio
without client roots also the home folder and the cwd; over HTTP never); outside, nothing is read or
created and the error names the path and how to allow it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastmcp import Client
from fastmcp.client.transports import StreamableHttpTransport

from finetune_mcp.testing import write_dataset
from server.conftest import ServerHome, http_server_process

TOKEN = "roots-test-token-9f3c2a7b1e5d8046"
SECRET_LINE = "root:$6$SECRETHASHdoNotQuote:19000:0:99999:7:::"


@dataclass
class Layout:
    """tmp/allowed (FINETUNE_MCP_ROOTS) with a model and data; tmp/outside with a secret file;
    tmp/user (the server's HOME) with a model; tmp/client (a client's root) with a model."""

    allowed: Path
    outside: Path
    user: Path
    client_root: Path
    model: Path
    dataset: Path
    secret: Path


@pytest.fixture
def layout(tmp_path: Path, tiny_model: Path) -> Layout:
    allowed, outside, user, client_root = (tmp_path / name for name in ("allowed", "outside", "user", "client"))
    for folder in (allowed, outside, user, client_root):
        folder.mkdir()
    model = allowed / "tiny"
    shutil.copytree(tiny_model, model)
    for other in (user, client_root):
        shutil.copytree(tiny_model, other / "tiny")
    secret = outside / "shadow"
    secret.write_text(SECRET_LINE + "\n")
    return Layout(allowed, outside, user, client_root, model, write_dataset(allowed / "train.jsonl", "messages", n=8),
                  secret)


@pytest.fixture
def server(server_home: Callable[..., ServerHome], layout: Layout) -> ServerHome:
    """stdio, with only tmp/allowed in FINETUNE_MCP_ROOTS and tmp/user as the home folder."""
    return server_home(FINETUNE_MCP_ROOTS=str(layout.allowed), HOME=str(layout.user))


async def call(client: Client, tool: str, args: dict[str, Any]) -> tuple[bool, str, dict[str, Any] | None]:
    result = await client.call_tool(tool, args, raise_on_error=False)
    text = result.content[0].text if result.content else ""
    return result.is_error, text, result.structured_content


def refused(text: str, path: Path | str) -> bool:
    return "outside the folders this server may use" in text and str(path) in text and "FINETUNE_MCP_ROOTS" in text


async def test_run_dir_outside_the_roots_is_refused_and_nothing_is_created(server: ServerHome, layout: Layout) -> None:
    target = layout.outside / "new" / "run"
    escape = layout.allowed / ".." / "escaped" / "run"  # `..` leaves the root
    args = {"model": str(layout.model), "dataset": str(layout.dataset), "max_steps": 1}
    async with server.client() as client:
        for tool, extra in (("start_finetune", {"config_overrides": {"run_dir": str(target)}}),
                            ("start_finetune", {"config_overrides": {"output_dir": str(escape)}}),
                            ("evaluate_model", {"config_overrides": {"output_dir": str(target)}})):
            is_error, text, _ = await call(client, tool, {**args, **extra} if tool == "start_finetune" else
                                           {"model": args["model"], "dataset": args["dataset"], **extra})
            assert is_error and refused(text, target if "escaped" not in text else escape), text
            assert str(layout.allowed) in text  # the allowed roots are listed
        jobs = (await client.call_tool("list_jobs", {})).structured_content
    assert jobs["count"] == 0
    assert not (layout.outside / "new").exists() and not (layout.allowed.parent / "escaped").exists()


async def test_a_symlink_in_a_dataset_folder_pointing_outside_is_refused_unread(server: ServerHome,
                                                                               layout: Layout) -> None:
    folder = layout.allowed / "data"
    folder.mkdir()
    shutil.copy(layout.dataset, folder / "rows.jsonl")
    (folder / "rows.csv").symlink_to(layout.secret)
    linked_file = layout.allowed / "linked.jsonl"
    linked_file.symlink_to(layout.secret)
    async with server.client() as client:
        for tool, dataset in (("start_finetune", folder), ("preview_training", folder),
                              ("start_finetune", linked_file)):
            is_error, text, _ = await call(client, tool, {"model": str(layout.model), "dataset": str(dataset)})
            assert is_error and "outside the folders this server may use" in text, text
            assert str(folder / "rows.csv" if dataset == folder else linked_file) in text
            assert "SECRETHASH" not in text and "root:" not in text
    assert "SECRETHASH" not in server.stderr_log.read_text()


async def test_finetune_mcp_roots_extends_the_allowed_folders(server: ServerHome, layout: Layout) -> None:
    other = layout.outside / "models"
    shutil.copytree(layout.model, other)
    async with server.client() as client:
        is_error, text, _ = await call(client, "detect_gpus", {"model": str(other)})
        assert is_error and refused(text, other), text
    async with server.client(FINETUNE_MCP_ROOTS=os.pathsep.join([str(layout.allowed), str(layout.outside)])) as client:
        is_error, text, report = await call(client, "detect_gpus", {"model": str(other)})
        assert not is_error, text
        assert report["model"] == str(other) and report["estimate"] is not None


@pytest.mark.parametrize("mode", ["auto", "legacy"])  # 2026-07-28 (roots through input-required) and 2025-11-25
async def test_the_clients_declared_roots_are_allowed(server_home: Callable[..., ServerHome], layout: Layout,
                                                      mode: str) -> None:
    """Over stdio without FINETUNE_MCP_ROOTS the client is the user's own app: its roots are the roots."""
    server = server_home(HOME=str(layout.user), FINETUNE_MCP_ROOTS="")
    model = layout.client_root / "tiny"
    async with server.client(mode=mode) as client:  # no roots declared: home (tmp/user) and cwd, not tmp/client
        assert (await call(client, "detect_gpus", {"model": str(layout.user / "tiny")}))[0] is False
        is_error, text, _ = await call(client, "detect_gpus", {"model": str(model)})
        assert is_error and refused(text, model), text
    async with server.client(mode=mode, roots=[layout.client_root.as_uri()]) as client:
        is_error, text, report = await call(client, "detect_gpus", {"model": str(model)})
        assert not is_error and report["estimate"] is not None, text
        # declaring roots replaces the home folder and the cwd
        is_error, text, _ = await call(client, "detect_gpus", {"model": str(layout.user / "tiny")})
        assert is_error and refused(text, layout.user / "tiny"), text


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_once_the_operator_set_roots_client_roots_only_narrow_them(server: ServerHome, layout: Layout,
                                                                         mode: str) -> None:
    """Issue 26 bug 1 (stdio): with FINETUNE_MCP_ROOTS set, a client root `file:///` (or one outside)
    widened the sandbox past it; now a client's roots only narrow what the operator allowed."""
    outside_model = layout.client_root / "tiny"
    async with server.client(mode=mode, roots=["file:///"]) as client:
        for model in (outside_model, layout.secret):
            is_error, text, _ = await call(client, "detect_gpus", {"model": str(model)})
            assert is_error and refused(text, model), text
        assert (await call(client, "detect_gpus", {"model": str(layout.model)}))[0] is False  # still allowed
    async with server.client(mode=mode, roots=[layout.client_root.as_uri(), (layout.allowed / "tiny").as_uri()]) \
            as client:
        is_error, text, _ = await call(client, "detect_gpus", {"model": str(outside_model)})
        assert is_error and refused(text, outside_model), text  # outside the operator's roots
        assert (await call(client, "detect_gpus", {"model": str(layout.model)}))[0] is False  # inside both
        is_error, text, _ = await call(client, "start_finetune", {"model": str(layout.model),
                                                                  "dataset": str(layout.dataset)})
        assert is_error and refused(text, layout.dataset), text  # in the operator's roots, not the client's


async def test_a_server_started_in_slash_does_not_allow_the_file_system(server_home: Callable[..., ServerHome],
                                                                       layout: Layout) -> None:
    """Issue 26 bug 2: desktop clients may start every MCP server with cwd `/`; the cwd fallback made
    `/` a root, so a run directory anywhere was queued and /etc/passwd passed the roots check."""
    server = server_home(HOME=str(layout.user), FINETUNE_MCP_ROOTS="")
    async with server.client(cwd="/") as client:
        for model in (layout.model, layout.secret):
            is_error, text, _ = await call(client, "detect_gpus", {"model": str(model)})
            assert is_error and refused(text, model), text
        is_error, text, _ = await call(client, "start_finetune", {"model": str(layout.user / "tiny"),
                                                                  "dataset": "/etc/passwd"})
        assert is_error and refused(text, "/etc/passwd"), text
        is_error, text, _ = await call(client, "start_finetune", {
            "model": str(layout.user / "tiny"), "dataset": str(layout.dataset),
            "config_overrides": {"run_dir": str(layout.outside / "run")}})
        assert is_error and "outside the folders this server may use" in text, text
        assert (await call(client, "detect_gpus", {"model": str(layout.user / "tiny")}))[0] is False  # home: fine
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    log = server.stderr_log.read_text()
    assert "allowed roots: FINETUNE_MCP_HOME" in log and "(not /: too broad to be a root)" in log, log[-2000:]
    assert not (layout.outside / "run").exists()


async def test_a_hub_id_is_not_a_path_but_a_path_shaped_value_is(server: ServerHome, layout: Layout) -> None:
    async with server.client() as client:
        is_error, text, _ = await call(client, "start_finetune", {"model": str(layout.model),
                                                                  "dataset": "someone/missing-dataset"})
        assert is_error and "the Hugging Face dataset 'someone/missing-dataset' could not be reached" in text, text
        escape = f"{layout.allowed}/../outside/shadow"
        is_error, text, _ = await call(client, "start_finetune", {"model": str(layout.model), "dataset": escape})
        assert is_error and refused(text, escape), text


@pytest.fixture
def http_server(tmp_path: Path, layout: Layout) -> Iterator[str]:
    """`serve --transport http` with tmp/allowed in FINETUNE_MCP_ROOTS and tmp/user as HOME."""
    env = {**os.environ, "FINETUNE_MCP_HOME": str(tmp_path / "home"), "FINETUNE_MCP_TOKEN": TOKEN,
           "FINETUNE_MCP_ROOTS": str(layout.allowed), "HOME": str(layout.user), "HF_HUB_OFFLINE": "1"}
    with http_server_process(env, tmp_path / "http-server.log", cwd=layout.user) as url:
        yield url


async def test_over_http_the_home_folder_and_cwd_are_not_allowed(http_server: str, layout: Layout) -> None:
    async with Client(StreamableHttpTransport(http_server, auth=TOKEN)) as client:
        home_model = layout.user / "tiny"  # the server's HOME and its cwd
        is_error, text, _ = await call(client, "detect_gpus", {"model": str(home_model)})
        assert is_error and refused(text, home_model), text
        is_error, text, _ = await call(client, "detect_gpus", {"model": "tiny"})  # relative to the cwd
        assert is_error and refused(text, "tiny"), text
        is_error, text, report = await call(client, "detect_gpus", {"model": str(layout.model)})
        assert not is_error and report["estimate"] is not None, text


async def test_over_http_client_roots_cannot_widen_the_sandbox(http_server: str, layout: Layout) -> None:
    """Issue 26 bug 1 (HTTP): a client declaring `file:///` got a run_dir outside the roots queued and a
    CSV outside quoted in an error; over HTTP the client's roots only narrow FINETUNE_MCP_ROOTS."""
    csv = layout.outside / "secret.csv"
    csv.write_text("SECRETCELL,other\n1,2\n")
    async with Client(StreamableHttpTransport(http_server, auth=TOKEN), roots=["file:///"]) as client:
        is_error, text, _ = await call(client, "start_finetune", {
            "model": str(layout.model), "dataset": str(layout.dataset),
            "config_overrides": {"run_dir": str(layout.outside / "run")}})
        assert is_error and "outside the folders this server may use" in text, text
        is_error, text, _ = await call(client, "start_finetune", {"model": str(layout.model), "dataset": str(csv)})
        assert is_error and refused(text, csv) and "SECRETCELL" not in text, text
        assert (await call(client, "detect_gpus", {"model": str(layout.model)}))[0] is False
        assert (await client.call_tool("list_jobs", {})).structured_content["count"] == 0
    assert not (layout.outside / "run").exists()
