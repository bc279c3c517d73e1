"""The manager's side of the worker's HTTP mode (`finetune_mcp.jobs.backends.runpod.pod_server`), through RunPod's proxy.

Keeps the job's LOCAL run directory current: the worker's events.jsonl and train.log are pulled by
byte offset and appended locally (the offsets live in `<run_dir>/.runpod.json`, so a restarted
server continues where the last one stopped and the manager's own lines in events.jsonl never
shift them), and the final artifacts arrive as a tar extracted into the run dir.

The pod is not trusted with the local run directory: the tar is checked whole before anything is
written (`check_members`: every name normalised, then refused if absolute, leaving the folder, a
link, a device, or one of the files only this side writes: spec.json, events.jsonl, .runpod.json,
export/),
extracted into a staging folder, and only then moved into place, entry by entry. A refused archive
changes nothing and fails the job with the reason (`ArtifactsRefused`).
"""

from __future__ import annotations

import json
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx

from finetune_mcp.errors import BackendError
from finetune_mcp.runs.rundir import RunDirectory

UPLOAD_CHUNK = 16 * 1024 * 1024  # one request per 16 MiB: far inside the proxy's 100 s limit
SKIP_DIRS = {".git", ".cache", "__pycache__", ".ipynb_checkpoints"}
SIDECAR = ".runpod.json"
TERMINAL = ("succeeded", "failed", "cancelled")
# Written by this side; a pod never replaces them. export/ holds the GGUF exports deploy_to_hf uploads
# (export_model runs here, never on a pod): a pod's export/exports.json could name any local file.
LOCAL_ONLY = frozenset({"spec.json", "events.jsonl", SIDECAR, "export"})
STAGING_PREFIX = ".artifacts-staging-"


class ArtifactsRefused(BackendError):
    """The pod's artifact archive broke a rule (see the module docstring); nothing was extracted."""


class WorkerUnreachable(Exception):
    """The worker did not answer (connection error, timeout, or the proxy's 404/5xx for a pod port
    with nothing listening)."""


class WorkerClient:
    """HTTP calls to one job's worker. Every request carries the job's bearer token."""

    def __init__(self, url: str, token: str, run_dir: Path, *, timeout_s: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self.run = RunDirectory(run_dir)
        self.timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))

    def __repr__(self) -> str:
        return f"WorkerClient({self.url})"

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            async with httpx.AsyncClient(timeout=kwargs.pop("timeout", self.timeout)) as client:
                response = await client.request(method, self.url + path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise WorkerUnreachable(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 401:
            raise BackendError(f"the worker at {self.url} refused this job's token; the pod is not this job's worker "
                               "— cancel the job and start it again")
        if (response.status_code == 404 and response.headers.get("content-type") != "application/json") \
                or response.status_code >= 500:
            raise WorkerUnreachable(f"HTTP {response.status_code} from {self.url}")
        if response.status_code >= 400:
            raise BackendError(f"the worker answered {method} {path} with {response.status_code}: "
                               f"{response.text[:300]}; this is a bug in finetune-mcp — please report it")
        return response

    # -- lifecycle -------------------------------------------------------------------------------
    async def status(self) -> dict[str, Any]:
        return (await self._request("GET", "/status", timeout=httpx.Timeout(10.0))).json()

    async def upload(self, local: Path, remote: str) -> None:
        """One file, in chunks; a chunk that fails in transit is sent again (the offset makes it idempotent)."""
        size = local.stat().st_size
        offset = 0
        with local.open("rb") as fh:
            while True:
                data = fh.read(UPLOAD_CHUNK)
                for attempt in range(4):
                    try:
                        await self._request("PUT", "/files/" + quote(remote), content=data,
                                            headers={"X-Offset": str(offset)}, timeout=httpx.Timeout(90.0))
                        break
                    except WorkerUnreachable:
                        if attempt == 3:
                            raise
                        await anyio.sleep(2**attempt)
                offset += len(data)
                if offset >= size:
                    return

    async def start(self, job_id: str, spec: dict[str, Any], inputs: dict[str, str], hf_token: str | None,
                    tracking_env: dict[str, str] | None = None) -> None:
        """Start the run. The Hub token and the trackers' variables (a W&B key, MLflow credentials) travel
        in this request to the worker's child process only: never in the pod's environment, which
        RunPod's API shows to anyone with the account's key."""
        headers = {"X-HF-Token": hf_token} if hf_token else {}
        body = {"job_id": job_id, "spec": spec, "inputs": inputs, "env": dict(tracking_env or {})}
        await self._request("POST", "/start", json=body, headers=headers)

    async def cancel(self, timeout_s: float) -> None:
        await self._request("POST", "/cancel", timeout=httpx.Timeout(max(timeout_s, 1.0) + 5))

    # -- keeping the local run dir current -------------------------------------------------------
    def sidecar(self) -> dict[str, Any]:
        return read_sidecar(self.run.root)

    def update_sidecar(self, **values: Any) -> dict[str, Any]:
        return update_sidecar(self.run.root, **values)

    async def pull(self, *, wait_s: float = 0.0, drain: bool = False) -> str:
        """Append the worker's new events and log bytes locally; returns the worker's job state.
        `drain`: repeat until nothing new (used once the worker has ended)."""
        state = "unknown"
        while True:
            new = 0
            for name, local in (("events", self.run.events), ("log", self.run.log)):
                offset = int(self.sidecar().get(f"{name}_offset", 0))
                response = await self._request("GET", f"/{name}", params={"offset": offset, "wait": wait_s if
                                               name == "events" else 0})
                state = response.headers.get("X-Job-State", state)
                body = response.content
                if body:
                    local.parent.mkdir(parents=True, exist_ok=True)
                    with local.open("ab") as fh:
                        fh.write(body)
                    self.update_sidecar(**{f"{name}_offset": int(response.headers.get("X-Next-Offset",
                                                                                       offset + len(body)))})
                    new += len(body)
            if not drain or not new:
                return state
            wait_s = 0.0

    async def download_artifacts(self, timeout_s: float = 600.0, checkpoint_bytes: int = 0) -> list[str]:
        """The worker's run dir (less events.jsonl, spec.json) into the local run dir, with the newest
        checkpoints whose total fits `checkpoint_bytes` (the pod lists what it left in
        checkpoints/transfer.json)."""
        self.run.root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.run.root, prefix=".artifacts-", suffix=".tar") as tmp:
            try:
                async with httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=10.0)) as client, \
                        client.stream("GET", self.url + "/artifacts", headers=self._headers,
                                      params={"checkpoint_bytes": int(checkpoint_bytes)} if checkpoint_bytes > 0
                                      else None) as response:
                    if response.status_code != 200:
                        raise WorkerUnreachable(f"HTTP {response.status_code} while downloading artifacts")
                    async for chunk in response.aiter_bytes(1024 * 1024):
                        tmp.write(chunk)
            except httpx.TransportError as exc:
                raise WorkerUnreachable(f"{type(exc).__name__}: {exc}") from None
            tmp.flush()
            return await anyio.to_thread.run_sync(_extract, Path(tmp.name), self.run.root)


def read_sidecar(run_dir: Path) -> dict[str, Any]:
    """What this backend remembers about a job beside the handle: stream offsets, collected,
    terminated_at, cost_per_hr. A missing or damaged file means "nothing yet"."""
    try:
        return json.loads((Path(run_dir) / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def update_sidecar(run_dir: Path, **values: Any) -> dict[str, Any]:
    data = {**read_sidecar(run_dir), **values}
    RunDirectory(Path(run_dir)).write_json(Path(run_dir) / SIDECAR, data)
    return data


def member_path(name: str) -> str:
    """A tar member's name as the path it would land on: `./a//b/../c` → `a/c`; '' for the folder itself.
    Raises ArtifactsRefused for an absolute name or one that climbs out of the folder."""
    if name.startswith("/") or "\\" in name or "\0" in name:
        raise ArtifactsRefused(f"the member {name!r} is an absolute or malformed path")
    normal = posixpath.normpath(name)
    if normal == ".":
        return ""
    if normal == ".." or normal.startswith("../"):
        raise ArtifactsRefused(f"the member {name!r} points outside the run directory")
    return normal


def check_members(members: list[tarfile.TarInfo]) -> list[str]:
    """The top-level names the archive would create, once every member passed: regular files and
    folders only, inside the folder, none of the LOCAL_ONLY files. ArtifactsRefused otherwise."""
    tops: set[str] = set()
    for member in members:
        path = member_path(member.name)
        if not (member.isfile() or member.isdir()):
            kind = "a link" if member.issym() or member.islnk() else "not a regular file or folder"
            raise ArtifactsRefused(f"the member {member.name!r} is {kind}")
        if not path:
            if member.isfile():
                raise ArtifactsRefused(f"the member {member.name!r} is a file named like the folder")
            continue
        top = path.split("/")[0]
        if top in LOCAL_ONLY:
            raise ArtifactsRefused(f"the member {member.name!r} would replace {top}, which only this side writes")
        tops.add(top)
    return sorted(tops)


def _extract(tar_path: Path, dest: Path) -> list[str]:
    """Check the whole archive, extract it into a staging folder beside `dest` (the 'data' filter on
    top), then move each top-level entry into place. Returns the top-level names placed."""
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))
    try:
        try:
            with tarfile.open(tar_path) as tar:
                members = tar.getmembers()
                tops = check_members(members)
                tar.extractall(staging, members=members, filter="data")
        except tarfile.FilterError as exc:
            raise ArtifactsRefused(f"the archive broke the extraction filter ({exc})") from None
        except (tarfile.TarError, OSError) as exc:
            raise ArtifactsRefused(f"the archive could not be extracted ({type(exc).__name__}: {exc})") from None
        for top in tops:
            target = dest / top
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            (staging / top).replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return tops


def local_inputs(spec: dict[str, Any]) -> tuple[list[tuple[Path, str]], dict[str, str]]:
    """Files to upload and how the spec's fields point at them on the pod.

    A local model folder goes to inputs/model/, a local dataset file or folder to inputs/dataset/ (an
    experiment's held-out and retain rows to inputs/eval_dataset/ and inputs/retain_dataset/);
    Hub ids are left alone (the pod downloads them).
    """
    files: list[tuple[Path, str]] = []
    fields: dict[str, str] = {}
    model = Path(str(spec.get("model", ""))).expanduser()
    if spec.get("model") and model.is_dir():
        files += [(p, f"inputs/model/{rel}") for p, rel in _walk(model)]
        fields["model"] = "inputs/model"
    for name in DATA_INPUTS:
        data = Path(str(spec.get(name) or "")).expanduser()
        if spec.get(name) and data.exists():
            if data.is_dir():
                files += [(p, f"inputs/{name}/{data.name}/{rel}") for p, rel in _walk(data)]
            else:
                files.append((data, f"inputs/{name}/{data.name}"))
            fields[name] = f"inputs/{name}/{data.name}"
    return files, fields


DATA_INPUTS = ("dataset", "eval_dataset", "retain_dataset")  # spec fields whose local files a pod receives


def _walk(folder: Path) -> Iterator[tuple[Path, str]]:
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if path.is_file() and not any(part in SKIP_DIRS for part in rel.parts):
            yield path, rel.as_posix()
