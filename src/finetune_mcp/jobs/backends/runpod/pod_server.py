"""The worker in HTTP mode: what a RunPod pod runs (`finetune-mcp worker serve --port 8000`).

One worker serves one job. The manager, through RunPod's HTTPS proxy, uploads the inputs
(`PUT /files/inputs/...`, in chunks so no request outlives the proxy's timeout), starts the run
(`POST /start` with the spec), follows `events.jsonl` and `train.log` by byte offset (`GET /events`,
`GET /log`; long-polled, so a dropped connection loses nothing), and finally fetches the run
directory as a tar (`GET /artifacts`). The run itself is `finetune-mcp worker run SPEC` in a child
process — the same code path as a local job, with its own memory and a killable process group.

Every request must carry `Authorization: Bearer $FINETUNE_MCP_WORKER_TOKEN` (a random per-job
token the manager put in the pod's environment); the worker will not start without one.

Pods cost money while they exist, so the worker also watches for an absent manager: when no
authenticated request arrived for `idle_timeout` seconds and no training is running, it
terminates its own pod with the pod-scoped key RunPod puts in every pod (RUNPOD_API_KEY +
RUNPOD_POD_ID), then exits. The manager normally terminates the pod long before that.
"""

from __future__ import annotations

import contextlib
import hmac
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from finetune_mcp.config.tracking import TRACKING_VARIABLES
from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.multi_gpu import cluster_command, distributed_command
from finetune_mcp.jobs.worker_env import worker_environment

log = logging.getLogger("finetune_mcp.jobs.backends.runpod.pod_server")

TOKEN_ENV = "FINETUNE_MCP_WORKER_TOKEN"
MAX_WAIT_S = 25.0  # long-poll bound: well under the RunPod proxy's 100 s request timeout
CHUNK = 1024 * 1024
# events are synced by offset; spec and export/ stay local; checkpoints come by size (`_add_checkpoints`)
ARTIFACT_EXCLUDE = {"checkpoints", "events.jsonl", "spec.json", "export"}
TERMINAL = {"succeeded", "failed", "cancelled"}
# spec fields a start request may point at uploaded inputs (`client.local_inputs`: the model folder, the data files)
INPUT_FIELDS = ("model", "dataset", "eval_dataset", "retain_dataset")
_POD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class WorkerJob:
    """The one job this worker runs: its directories, child process and state."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "job"
        self.inputs = self.root / "inputs"
        self.run_dir = self.root / "run"
        self.lock = threading.Lock()
        self.state = "idle"  # idle → running → succeeded | failed | cancelled
        self.job_id: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.cancel_requested = False

    def start(self, job_id: str, spec: dict[str, Any], inputs: dict[str, str], hf_token: str | None,
              tracking_env: dict[str, str] | None = None) -> None:
        """Write spec.json (input paths resolved on this machine) and start the child, which receives the
        Hub token and the trackers' variables of the request (tracker settings only: any other name is
        refused)."""
        tracking_env = dict(tracking_env or {})
        refused = sorted(k for k in tracking_env if k not in TRACKING_VARIABLES or not isinstance(tracking_env[k], str))
        if refused:
            raise BackendError(f"the start request names variables that are not tracker settings: {refused}")
        with self.lock:
            if self.state != "idle":
                raise BackendError(f"this worker already ran job {self.job_id} ({self.state}); start a new pod")
            spec = {k: v for k, v in spec.items() if k != "run_dir"}
            for field_name, rel in inputs.items():
                if field_name not in INPUT_FIELDS:
                    raise BackendError(f"input field {field_name!r} is not one of {', '.join(INPUT_FIELDS)}; "
                                       "fix the request")
                path = _safe_join(self.root, rel)
                if not path.exists():
                    raise BackendError(f"input {rel!r} was not uploaded; upload it with PUT /files/{rel} first")
                spec[field_name] = str(path)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            spec_path = self.run_dir / "spec.json"
            spec_path.write_text(json.dumps(spec, indent=2), encoding="utf-8")
            # The pod's own environment holds the worker token and RunPod's pod key; the run needs neither.
            extra = {**tracking_env, "FINETUNE_MCP_JOB_ID": job_id, **({"HF_TOKEN": hf_token} if hf_token else {})}
            env = worker_environment(os.environ, extra)
            out = (self.run_dir / "train.log").open("ab")  # as the local backend does
            processes = _gpu_processes(spec.get("num_gpus", 1))
            worker = [sys.executable, "-m", "finetune_mcp.cli", "worker", "run"]
            if int(spec.get("num_nodes") or 1) > 1:  # a node of an Instant Cluster: torchrun across the nodes
                command = cluster_command(worker, processes, os.environ)
            else:
                command = distributed_command(worker, processes)
            self.proc = subprocess.Popen(
                [*command, str(spec_path)],
                stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.root,
            )
            out.close()
            self.job_id, self.state, self.started_at = job_id, "running", time.time()
        threading.Thread(target=self._wait, name="worker-child", daemon=True).start()

    def _wait(self) -> None:
        assert self.proc is not None
        code = self.proc.wait()
        with self.lock:
            self.returncode, self.ended_at = code, time.time()
            if self.cancel_requested:
                self.state = "cancelled"
            else:
                self.state = "succeeded" if code == 0 else "failed"
            if self.state == "failed" and not _has_terminal_event(self.run_dir / "events.jsonl"):
                tail = _tail(self.run_dir / "train.log")
                _append_event(self.run_dir / "events.jsonl", "error",
                              message=f"the training process exited with code {code}: {tail[-500:]}",
                              error_type="WorkerCrash")

    def cancel(self) -> None:
        with self.lock:
            proc = self.proc if self.state == "running" else None
            self.cancel_requested = proc is not None
        if proc is None:
            return
        _signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)

    def status(self) -> dict[str, Any]:
        from finetune_mcp.jobs.router import detect_local_gpus

        with self.lock:
            return {
                "state": self.state, "job_id": self.job_id, "returncode": self.returncode,
                "node_rank": int(os.environ.get("NODE_RANK") or 0),  # which node of a cluster this pod is
                "started_at": self.started_at, "ended_at": self.ended_at,
                "gpus": [g.__dict__ for g in detect_local_gpus()],
            }


class WorkerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], token: str, workdir: Path, idle_timeout: float) -> None:
        super().__init__(address, WorkerHandler)
        self.token = token
        self.job = WorkerJob(workdir)
        self.idle_timeout = idle_timeout
        self.last_seen = time.monotonic()


class WorkerHandler(BaseHTTPRequestHandler):
    server: WorkerServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    # -- plumbing
    def _authorised(self) -> bool:
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {self.server.token}".encode()):
            self.server.last_seen = time.monotonic()
            return True
        self._drain()
        self._send_json({"error": "missing or wrong worker token"}, HTTPStatus.UNAUTHORIZED)
        return False

    def _drain(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        while length > 0:
            data = self.rfile.read(min(length, CHUNK))
            if not data:
                return
            length -= len(data)

    def _send(self, body: bytes, status: int = 200, ctype: str = "application/octet-stream",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, data: Any, status: int = 200) -> None:
        self._send(json.dumps(data).encode(), status, "application/json")

    def _route(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return unquote(parts.path), {k: v[-1] for k, v in parse_qs(parts.query).items()}

    # -- verbs
    def do_GET(self) -> None:
        if not self._authorised():
            return
        path, query = self._route()
        job = self.server.job
        if path == "/status":
            self._send_json(job.status())
        elif path in ("/events", "/log"):
            name = "events.jsonl" if path == "/events" else "train.log"
            wait = min(float(query.get("wait", 0)), MAX_WAIT_S)
            self._tail(job.run_dir / name, int(query.get("offset", 0)), wait)
        elif path == "/artifacts":
            self._artifacts(int(query.get("checkpoint_bytes", 0) or 0))
        else:
            self._send_json({"error": f"no route GET {path}"}, HTTPStatus.NOT_FOUND)

    def do_PUT(self) -> None:
        if not self._authorised():
            return
        path, _ = self._route()
        if not path.startswith("/files/"):
            self._drain()
            self._send_json({"error": f"no route PUT {path}"}, HTTPStatus.NOT_FOUND)
            return
        try:
            target = _safe_join(self.server.job.root, path.removeprefix("/files/"), under="inputs")
        except BackendError as exc:
            self._drain()
            self._send_json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
            return
        offset = int(self.headers.get("X-Offset", 0))
        length = int(self.headers.get("Content-Length") or 0)
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("r+b" if offset and target.exists() else "wb") as fh:
            fh.seek(offset)
            fh.truncate()
            while length > 0:
                data = self.rfile.read(min(length, CHUNK))
                if not data:
                    break
                fh.write(data)
                length -= len(data)
            size = fh.tell()
        self._send_json({"size": size})

    def do_POST(self) -> None:
        if not self._authorised():
            return
        path, _ = self._route()
        job = self.server.job
        if path == "/start":
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                job.start(str(body["job_id"]), dict(body["spec"]), dict(body.get("inputs") or {}),
                          self.headers.get("X-HF-Token") or None, dict(body.get("env") or {}))
            except (ValueError, KeyError, TypeError) as exc:
                self._send_json({"error": f"bad start request: {exc}"}, HTTPStatus.BAD_REQUEST)
                return
            except BackendError as exc:
                self._send_json({"error": str(exc)}, HTTPStatus.CONFLICT)
                return
            self._send_json(job.status())
        elif path == "/cancel":
            self._drain()
            job.cancel()
            self._send_json(job.status())
        else:
            self._drain()
            self._send_json({"error": f"no route POST {path}"}, HTTPStatus.NOT_FOUND)

    def _tail(self, file: Path, offset: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        while True:
            chunk = b""
            if file.exists():
                with file.open("rb") as fh:
                    fh.seek(offset)
                    chunk = fh.read(8 * CHUNK)
                chunk = chunk[: chunk.rfind(b"\n") + 1]
            state = self.server.job.state
            if chunk or state in TERMINAL or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        self._send(chunk, headers={"X-Next-Offset": str(offset + len(chunk)), "X-Job-State": state})

    def _artifacts(self, checkpoint_bytes: int) -> None:
        """The run dir as an uncompressed tar, built on disk and streamed (a merged model is GBs), with
        the newest checkpoints that fit `checkpoint_bytes` and checkpoints/transfer.json saying so."""
        run_dir = self.server.job.run_dir
        with tempfile.TemporaryFile(dir=self.server.job.root if self.server.job.root.exists() else None) as tmp:
            with tarfile.open(fileobj=tmp, mode="w") as tar:
                if run_dir.exists():
                    for child in sorted(run_dir.iterdir()):
                        if child.name not in ARTIFACT_EXCLUDE and not child.name.endswith(".tmp"):
                            tar.add(child, arcname=child.name, filter=_no_links)
                    _add_checkpoints(tar, run_dir / "checkpoints", checkpoint_bytes)
            size = tmp.tell()
            tmp.seek(0)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-tar")
            self.send_header("Content-Length", str(size))
            self.send_header("X-Job-State", self.server.job.state)
            self.end_headers()
            while chunk := tmp.read(CHUNK):
                self.wfile.write(chunk)


def _no_links(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Links stay on the pod (W&B leaves `latest-run` and `debug.log` links to files it also sends): the
    server refuses any archive with a link in it."""
    return None if member.issym() or member.islnk() else member


def _add_checkpoints(tar: tarfile.TarFile, folder: Path, limit: int) -> None:
    """checkpoint-<step>/ folders, newest first, while their total stays within `limit` bytes (a
    checkpoint comes whole or not at all), and checkpoints/transfer.json: what came, what stayed."""
    if not folder.is_dir():
        return
    found = [(int(p.name.removeprefix("checkpoint-")), p) for p in folder.glob("checkpoint-*")
             if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    brought, left, total = [], [], 0
    for step, path in sorted(found, reverse=True):
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if total + size <= limit:
            tar.add(path, arcname=f"checkpoints/{path.name}", filter=_no_links)
            brought.append({"step": step, "bytes": size})
            total += size
        else:
            left.append({"step": step, "bytes": size})
    record = json.dumps({"limit_bytes": limit, "brought_back": brought, "left_on_pod": left}, indent=2).encode()
    info = tarfile.TarInfo("checkpoints/transfer.json")
    info.size, info.mtime = len(record), int(time.time())
    tar.addfile(info, io.BytesIO(record))


def _safe_join(root: Path, rel: str, under: str | None = None) -> Path:
    """`root/rel`, refusing absolute paths, `..` and anything outside `root/under`."""
    parts = PurePosixPath(rel).parts
    if not parts or rel.startswith("/") or ".." in parts or (under and parts[0] != under):
        raise BackendError(f"path {rel!r} must be relative and stay under {under or 'the job folder'}/")
    return root.joinpath(*parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _has_terminal_event(events: Path) -> bool:
    if not events.exists():
        return False
    return any(json.loads(line).get("type") in ("end", "error")
               for line in events.read_text(encoding="utf-8").splitlines() if line.strip())


def _append_event(events: Path, type_: str, **data: Any) -> None:
    events.parent.mkdir(parents=True, exist_ok=True)
    with events.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"type": type_, "time": time.time(), **data}) + "\n")


def _tail(path: Path, size: int = 4000) -> str:
    if not path.exists():
        return "(no output)"
    data = path.read_bytes()[-size:]
    return data.decode("utf-8", errors="replace").strip() or "(no output)"


def _self_terminate() -> None:
    """Terminate this pod through RunPod's pod-scoped key; without one (a local run), just exit."""
    pod_id, key = os.environ.get("RUNPOD_POD_ID", ""), os.environ.get("RUNPOD_API_KEY", "")
    if not (pod_id and key and _POD_ID.match(pod_id)):
        log.warning("idle: not on a RunPod pod (no RUNPOD_POD_ID/RUNPOD_API_KEY); exiting")
        return
    import runpod

    runpod.api_key = key
    try:
        runpod.terminate_pod(pod_id)
        log.warning("idle: terminated pod %s", pod_id)
    except Exception as exc:  # the SDK raises requests and RunPod errors alike; exiting is all that is left
        log.error("idle: could not terminate pod %s: %s", pod_id, type(exc).__name__)


def _watch_idle(server: WorkerServer) -> None:
    while True:
        time.sleep(min(1.0, server.idle_timeout / 4))
        idle = time.monotonic() - server.last_seen
        if server.job.state != "running" and idle > server.idle_timeout:
            log.warning("no request from the manager for %.0f s and no training running", idle)
            _self_terminate()
            server.shutdown()
            return


def serve(host: str, port: int, workdir: Path, idle_timeout: float) -> None:
    """Serve until idle (see the module docstring) or interrupted."""
    token = os.environ.get(TOKEN_ENV, "")
    if len(token) < 16:
        raise BackendError(f"{TOKEN_ENV} is unset or shorter than 16 characters; the manager sets it per job "
                           "(for a manual run: export it to a long random string)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    workdir.mkdir(parents=True, exist_ok=True)
    server = WorkerServer((host, port), token, workdir, idle_timeout)
    threading.Thread(target=_watch_idle, args=(server,), name="worker-idle", daemon=True).start()
    print(f"finetune-mcp worker listening on {host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.job.cancel()
        server.server_close()


def _gpu_processes(num_gpus: int | str) -> int:
    """Worker processes for the spec's num_gpus on this pod: one per GPU under DDP ('auto': all of them)."""
    if num_gpus == 1:
        return 1
    from finetune_mcp.jobs.router import detect_local_gpus

    available = max(1, len(detect_local_gpus()))
    return available if num_gpus == "auto" else min(int(num_gpus), available)
