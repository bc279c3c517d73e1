"""A stand-in for RunPod on 127.0.0.1: its GraphQL API (what the `runpod` SDK sends) and its pod proxy.

Point the SDK at it with RUNPOD_API_BASE_URL=<url> and the backend's proxy template at
`<url>/proxy/{pod_id}-{port}`. A created pod is real: the stand-in runs the pod's start command
(`dockerArgs`, split like a shell would) with the pod's env — so the install command and
`finetune-mcp worker serve` run exactly as the backend wrote them — on a free loopback port, plus
what RunPod adds to every pod (RUNPOD_POD_ID and a pod-scoped RUNPOD_API_KEY). Terminating a pod
kills its whole process tree.

Instant Clusters (RunPod's REST `/v2/clusters`) are served too: a cluster's pods are pods like the
others, started with the rendezvous variables RunPod sets on every node, so a multi-node job's nodes
really rendezvous over gloo on 127.0.0.1 and train together (`handle_rest`).

The GraphQL text is parsed (a small recursive-descent parser for the subset the SDK emits), so a
value that breaks out of its string literal shows up as a parse error or a wrong value, as it would
on the real API. Every call is recorded in `calls`; faults are switched on per operation.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GPU_TYPES = [
    # id, displayName, memoryInGb, securePrice, communityPrice, available
    ("NVIDIA GeForce RTX 3090", "RTX 3090", 24, 0.43, 0.22, True),
    ("NVIDIA GeForce RTX 4090", "RTX 4090", 24, 0.69, 0.34, True),
    ("NVIDIA RTX A6000", "RTX A6000", 48, 0.76, 0.33, True),
    ("NVIDIA A40", "A40", 48, 0.40, 0.35, True),
    ("NVIDIA A100 80GB PCIe", "A100 PCIe", 80, 1.64, 1.19, True),
    ("NVIDIA H100 80GB HBM3", "H100 SXM", 80, 2.99, 2.69, False),
]


# -- GraphQL subset ----------------------------------------------------------------------------
_TOKEN = re.compile(r'\s*(?:(?P<punct>[{}()\[\]:,])|(?P<string>"(?:[^"\\\n]|\\.)*")|(?P<name>[A-Za-z_][A-Za-z0-9_]*)'
                    r'|(?P<number>-?\d+(?:\.\d+)?))')


class GraphQLSyntaxError(ValueError):
    pass


def _tokens(text: str) -> list[tuple[str, Any]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise GraphQLSyntaxError(f"unexpected character at {pos}: {text[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        value = m.group(kind)
        if kind == "string":
            value = json.loads(value)  # GraphQL string escapes are JSON's; raw newlines were refused above
        elif kind == "number":
            value = float(value) if "." in value else int(value)
        out.append((kind, value))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokens(text)
        self.i = 0

    def peek(self) -> tuple[str, Any] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, kind: str, value: Any = None) -> Any:
        tok = self.peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            raise GraphQLSyntaxError(f"expected {value or kind}, got {tok}")
        self.i += 1
        return tok[1]

    def document(self) -> list[dict[str, Any]]:
        if self.peek() and self.peek()[0] == "name" and self.peek()[1] in ("query", "mutation"):
            self.i += 1
            if self.peek() and self.peek()[0] == "name":
                self.i += 1
        fields = self.selection()
        if self.peek() is not None:
            raise GraphQLSyntaxError(f"trailing tokens after the operation: {self.toks[self.i:self.i + 5]}")
        return fields

    def selection(self) -> list[dict[str, Any]]:
        self.take("punct", "{")
        fields = []
        while self.peek() != ("punct", "}"):
            name = self.take("name")
            args = {}
            if self.peek() == ("punct", "("):
                self.i += 1
                while self.peek() != ("punct", ")"):
                    key = self.take("name")
                    self.take("punct", ":")
                    args[key] = self.value()
                    if self.peek() == ("punct", ","):
                        self.i += 1
                self.take("punct", ")")
            sub = self.selection() if self.peek() == ("punct", "{") else None
            fields.append({"name": name, "args": args, "fields": sub})
        self.take("punct", "}")
        return fields

    def value(self) -> Any:
        kind, val = self.peek() or ("eof", None)
        if kind == "punct" and val == "{":
            self.i += 1
            obj = {}
            while self.peek() != ("punct", "}"):
                key = self.take("name")
                self.take("punct", ":")
                obj[key] = self.value()
                if self.peek() == ("punct", ","):
                    self.i += 1
            self.take("punct", "}")
            return obj
        if kind == "punct" and val == "[":
            self.i += 1
            items = []
            while self.peek() != ("punct", "]"):
                items.append(self.value())
                if self.peek() == ("punct", ","):
                    self.i += 1
            self.take("punct", "]")
            return items
        self.i += 1
        if kind == "name":
            return {"true": True, "false": False, "null": None}.get(val, val)  # enums stay names
        if kind in ("string", "number"):
            return val
        raise GraphQLSyntaxError(f"unexpected {kind} {val!r}")


def parse_operation(query: str) -> dict[str, Any]:
    fields = _Parser(query).document()
    if len(fields) != 1:
        raise GraphQLSyntaxError(f"expected one top-level field, got {[f['name'] for f in fields]}")
    return fields[0]


# -- pods ---------------------------------------------------------------------------------------
@dataclass
class Pod:
    id: str
    name: str
    gpu_type_id: str
    image: str
    docker_args: str
    env: dict[str, str]
    ports: str
    created_at: float
    scoped_key: str
    status: str = "RUNNING"  # desiredStatus: RUNNING, EXITED, TERMINATED
    worker_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    terminated_at: float | None = None
    system_env: dict[str, str] = field(default_factory=dict)  # what RunPod itself sets (a cluster's rendezvous)
    cluster_id: str | None = None

    def record(self) -> dict[str, Any]:
        price = next(g[3] for g in GPU_TYPES if g[0] == self.gpu_type_id)
        uptime = int(time.time() - self.created_at)
        return {
            "id": self.id, "name": self.name, "desiredStatus": self.status, "imageName": self.image,
            "dockerArgs": self.docker_args, "env": [f"{k}={v}" for k, v in self.env.items()],
            "costPerHr": price, "gpuCount": 1, "uptimeSeconds": uptime, "ports": self.ports,
            "machine": {"gpuDisplayName": self.gpu_type_id},
            "runtime": {"uptimeInSeconds": uptime, "ports": []} if self.worker_port else None,
        }


@dataclass
class Faults:
    """Switch faults on per GraphQL operation name (podFindAndDeployOnDemand, pod, podTerminate, ...)."""

    errors: dict[str, list[int]] = field(default_factory=dict)  # op → HTTP statuses to answer, in order
    delays: dict[str, list[float]] = field(default_factory=dict)  # op → seconds to stall, in order
    never_ready: bool = False  # pods are created but their container never starts
    no_capacity: set[str] = field(default_factory=set)  # GPU type ids that cannot be rented


class RunPodStandIn:
    """`with RunPodStandIn(tmp) as rp:` → rp.url, rp.api_key, rp.calls, rp.pods, rp.faults."""

    def __init__(self, workdir: Path, api_key: str | None = None) -> None:
        self.workdir = Path(workdir)
        self.api_key = api_key or "rpa_" + secrets.token_hex(20)
        self.calls: list[dict[str, Any]] = []
        self.pods: dict[str, Pod] = {}
        self.clusters: dict[str, dict[str, Any]] = {}  # id → {"name", "pods": [ids], "deleted": bool}
        self.faults = Faults()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.daemon_threads = True
        self.server.standin = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.proxy_url = self.url + "/proxy/{pod_id}-{port}"

    def __enter__(self) -> RunPodStandIn:
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for pod in list(self.pods.values()):
            _kill_tree(pod)
        self.server.shutdown()
        self.server.server_close()

    # -- what tests ask ---------------------------------------------------------------------------
    def ops(self, name: str) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["op"] == name]

    def terminated(self) -> set[str]:
        return {c["args"].get("input", {}).get("podId") for c in self.ops("podTerminate") if c.get("ok")}

    def running_pods(self) -> list[Pod]:
        return [p for p in self.pods.values() if p.status != "TERMINATED"]

    def live_clusters(self) -> list[str]:
        return [cid for cid, c in self.clusters.items() if not c["deleted"]]

    def kill_worker(self, pod_id: str) -> None:
        """The container's processes die (the pod itself stays, as after an OOM or a crash)."""
        _kill_tree(self.pods[pod_id])

    def wait_for(self, predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; calls: {[c['op'] for c in self.calls]}")

    # -- GraphQL ---------------------------------------------------------------------------------
    def handle_graphql(self, auth: str, body: bytes) -> tuple[int, Any]:
        query = json.loads(body)["query"]
        try:
            op = parse_operation(query)
        except GraphQLSyntaxError as exc:
            self.calls.append({"op": "syntax-error", "query": query, "error": str(exc), "time": time.time()})
            return 200, {"errors": [{"message": f"Syntax Error: {exc}"}]}
        name, args = op["name"], op["args"]
        if name == "myself":
            name = "myself." + (op["fields"] or [{}])[0].get("name", "")
        call = {"op": name, "args": args, "time": time.time(), "ok": False}
        with self.lock:
            self.calls.append(call)
            status = self.faults.errors.get(name, []).pop(0) if self.faults.errors.get(name) else None
            delay = self.faults.delays.get(name, []).pop(0) if self.faults.delays.get(name) else None
        scope = self._scope(auth)
        if scope is None:
            return 401, {"errors": [{"message": "Unauthorized"}]}
        if delay:
            time.sleep(delay)  # the call still happens afterwards, as a slow real API would do
        if status:
            return status, f"<html><body>{status} upstream error</body></html>"
        try:
            data = self._dispatch(name, args, scope)
        except LookupError as exc:
            return 200, {"errors": [{"message": str(exc)}]}
        call["ok"] = True
        return 200, {"data": {op["name"]: data}}

    def _scope(self, auth: str) -> str | None:
        """'account' for the account key; a pod id for that pod's scoped key; None otherwise."""
        token = auth.removeprefix("Bearer ")
        if token == self.api_key:
            return "account"
        return next((p.id for p in self.pods.values() if p.scoped_key == token), None)

    def _dispatch(self, name: str, args: dict[str, Any], scope: str) -> Any:
        if scope != "account" and not (name == "podTerminate" and args["input"]["podId"] == scope):
            raise LookupError("a pod-scoped key may only act on its own pod")
        inp = args.get("input", {})
        if name == "gpuTypes":
            types = [g for g in GPU_TYPES if "id" not in inp or g[0] == inp["id"]]
            return [_gpu_record(g) for g in types]
        if name == "podFindAndDeployOnDemand":
            return self._deploy(inp)
        if name == "pod":
            pod = self.pods.get(inp["podId"])
            return pod.record() if pod and pod.status != "TERMINATED" else None
        if name == "myself.pods":
            return {"pods": [p.record() for p in self.running_pods()]}  # under "myself"
        if name in ("podTerminate", "podStop"):
            pod = self.pods.get(inp["podId"])
            if pod is None or pod.status == "TERMINATED":
                raise LookupError(f"pod {inp['podId']} not found")
            if scope == pod.id:  # a pod ending itself: answer first, then its container dies
                threading.Timer(0.3, _kill_tree, args=(pod,)).start()
            else:
                _kill_tree(pod)
            pod.status = "TERMINATED" if name == "podTerminate" else "EXITED"
            pod.terminated_at = time.time()
            return None if name == "podTerminate" else {"id": pod.id, "desiredStatus": pod.status}
        raise LookupError(f"the stand-in does not implement {name}")

    def _deploy(self, inp: dict[str, Any]) -> dict[str, Any]:
        gpu = inp["gpuTypeId"]
        if gpu in self.faults.no_capacity:
            raise LookupError("There are no longer any instances available with the requested specifications. "
                              "Please refresh and try again.")
        env = {item["key"]: item["value"] for item in inp.get("env", [])}
        pod = Pod(id=secrets.token_hex(7), name=inp["name"], gpu_type_id=gpu, image=inp["imageName"],
                  docker_args=inp.get("dockerArgs", ""), env=env, ports=inp.get("ports", ""),
                  created_at=time.time(), scoped_key="pod_" + secrets.token_hex(16))
        self.pods[pod.id] = pod
        if not self.faults.never_ready:
            self._start_container(pod)
        return {"id": pod.id, "imageName": pod.image, "env": pod.record()["env"], "machineId": "m1",
                "machine": {"podHostId": f"{pod.id}-host"}}

    def _start_container(self, pod: Pod) -> None:
        pod.workdir = self.workdir / "pods" / pod.id
        pod.workdir.mkdir(parents=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            pod.worker_port = s.getsockname()[1]
        # This machine's environment stands in for the image's, less what no image holds: the server's
        # own settings (FINETUNE_MCP_*, e.g. the user-function allow-list) reach a pod only through the
        # create request's env, as on RunPod.
        env = {k: v for k, v in os.environ.items() if k != "RUNPOD_API_KEY" and not k.startswith("FINETUNE_MCP_")}
        env.update(pod.env)
        env.update({
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "FINETUNE_MCP_WORKER_PORT": str(pod.worker_port),  # RunPod maps the port; here we choose it
            "FINETUNE_MCP_WORKER_HOST": "127.0.0.1",
            "FINETUNE_MCP_WORKER_DIR": str(pod.workdir / "workspace"),
            "RUNPOD_POD_ID": pod.id, "RUNPOD_API_KEY": pod.scoped_key, "RUNPOD_API_BASE_URL": self.url,
            **pod.system_env,
        })
        with (pod.workdir / "container.log").open("ab") as log:
            pod.proc = subprocess.Popen(shlex.split(pod.docker_args), env=env, stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=pod.workdir, start_new_session=True)

    # -- REST: Instant Clusters (POST/GET /v2/clusters, GET /v2/clusters/{id}/pods, DELETE /v2/clusters/{id})
    def handle_rest(self, method: str, path: str, auth: str, body: bytes) -> tuple[int, Any]:
        """A cluster's pods are real pods here: local processes with the rendezvous variables RunPod sets on
        every node (MASTER_ADDR / MASTER_PORT of node 0 — 127.0.0.1 and a free port —, NODE_RANK, NUM_NODES,
        NUM_TRAINERS, WORLD_SIZE), so their workers' torchrun really rendezvous (gloo) and train together."""
        parts = [p for p in path.removeprefix("/v2/clusters").split("/") if p]
        op = {("POST", 0): "clusterCreate", ("GET", 0): "clusterList", ("GET", 2): "clusterPods",
              ("DELETE", 1): "clusterDelete", ("GET", 1): "clusterGet"}.get((method, len(parts)), "clusterUnknown")
        call = {"op": op, "args": {"path": parts}, "time": time.time(), "ok": False}
        with self.lock:
            self.calls.append(call)
            status = self.faults.errors.get(op, []).pop(0) if self.faults.errors.get(op) else None
        if auth.removeprefix("Bearer ") != self.api_key:
            return 401, {"error": "Unauthorized"}
        if status:
            return status, f"<html><body>{status} upstream error</body></html>"
        cluster = self.clusters.get(parts[0]) if parts else None
        if parts and (cluster is None or cluster["deleted"]):
            return 404, {"error": f"cluster {parts[0]} not found"}
        if op == "clusterCreate":
            data = self._create_cluster(json.loads(body))
        elif op == "clusterList":
            data = [{"id": cid, "name": c["name"], "podCount": len(c["pods"])} for cid, c in self.clusters.items()
                    if not c["deleted"]]
        elif op == "clusterPods":
            data = [self.pods[pid].record() for pid in cluster["pods"]]
        elif op == "clusterGet":
            data = {"id": parts[0], "name": cluster["name"], "podCount": len(cluster["pods"])}
        elif op == "clusterDelete":
            for pid in cluster["pods"]:
                pod = self.pods[pid]
                _kill_tree(pod)
                pod.status, pod.terminated_at = "TERMINATED", time.time()
            cluster["deleted"] = True
            data = None
        else:
            return 404, {"error": f"no route {method} {path}"}
        call["ok"] = True
        return (204, None) if data is None else (200, data)

    def _create_cluster(self, body: dict[str, Any]) -> dict[str, Any]:
        compute = body["compute"]
        nodes, gpus = int(compute["podCount"]), int(compute["gpuCountPerPod"])
        cluster_id = "c" + secrets.token_hex(6)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            master_port = s.getsockname()[1]
        ports = body.get("ports") or []
        pods = []
        for rank in range(nodes):
            pod = Pod(id=secrets.token_hex(7), name=f"{body['name']}-{rank}", gpu_type_id=compute["gpuTypeId"],
                      image=body.get("image", ""), docker_args=body.get("args", ""), env=dict(body.get("env") or {}),
                      ports=",".join(ports) if isinstance(ports, list) else str(ports), created_at=time.time(),
                      scoped_key="pod_" + secrets.token_hex(16), cluster_id=cluster_id, system_env={
                          "MASTER_ADDR": "127.0.0.1", "PRIMARY_ADDR": "127.0.0.1", "MASTER_PORT": str(master_port),
                          "PRIMARY_PORT": str(master_port), "NODE_ADDR": "127.0.0.1", "NODE_RANK": str(rank),
                          "NUM_NODES": str(nodes), "NUM_TRAINERS": str(gpus), "WORLD_SIZE": str(nodes * gpus)})
            self.pods[pod.id] = pod
            pods.append(pod.id)
        self.clusters[cluster_id] = {"name": body["name"], "pods": pods, "deleted": False}
        for pid in pods:
            self._start_container(self.pods[pid])
        return {"id": cluster_id, "name": body["name"], "podCount": nodes}

    # -- proxy -----------------------------------------------------------------------------------
    def proxy_target(self, pod_and_port: str) -> int | None:
        pod_id, _, port = pod_and_port.rpartition("-")
        pod = self.pods.get(pod_id)
        if pod is None or pod.status != "RUNNING" or not pod.worker_port or f"{port}/http" not in pod.ports:
            return None
        return pod.worker_port


def _gpu_record(g: tuple[Any, ...]) -> dict[str, Any]:
    gid, display, mem, secure, community, available = g
    return {
        "id": gid, "displayName": display, "memoryInGb": mem, "manufacturer": "Nvidia", "maxGpuCount": 8,
        "cudaCores": 0, "secureCloud": True, "communityCloud": True, "securePrice": secure,
        "communityPrice": community, "oneMonthPrice": None, "threeMonthPrice": None, "oneWeekPrice": None,
        "communitySpotPrice": community / 2, "secureSpotPrice": secure / 2,
        "lowestPrice": {"minimumBidPrice": community / 2,
                        "uninterruptablePrice": min(secure, community) if available else None},
    }


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _kill_tree(pod: Pod) -> None:
    if pod.proc is None or pod.proc.poll() is not None:
        return
    for pid in _descendants(pod.proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pod.proc.wait(timeout=10)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def standin(self) -> RunPodStandIn:
        return self.server.standin  # type: ignore[attr-defined]

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _rest(self, method: str) -> None:
        status, data = self.standin.handle_rest(method, self.path, self.headers.get("Authorization", ""), self._body())
        if isinstance(data, str):
            return self._send(status, data.encode(), "text/html")
        return self._send(status, b"" if data is None else json.dumps(data).encode(), "application/json")

    def do_DELETE(self) -> None:
        return self._rest("DELETE") if self.path.startswith("/v2/clusters") else self._send(404, b"", "text/plain")

    def do_POST(self) -> None:
        if self.path.startswith("/v2/clusters"):
            return self._rest("POST")
        if self.path.startswith("/proxy/"):
            return self._proxy("POST")
        if self.path != "/graphql":
            return self._send(404, b"not found", "text/plain")
        status, data = self.standin.handle_graphql(self.headers.get("Authorization", ""), self._body())
        if isinstance(data, str):
            return self._send(status, data.encode(), "text/html")
        return self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path.startswith("/v2/clusters"):
            return self._rest("GET")
        return self._proxy("GET") if self.path.startswith("/proxy/") else self._send(404, b"", "text/plain")

    def do_PUT(self) -> None:
        return self._proxy("PUT") if self.path.startswith("/proxy/") else self._send(404, b"", "text/plain")

    def _proxy(self, method: str) -> None:
        """Forward to the pod's worker, like https://{pod_id}-{port}.proxy.runpod.net; 502 when nothing listens."""
        rest = self.path.removeprefix("/proxy/")
        target, _, path = rest.partition("/")
        body = self._body()
        port = self.standin.proxy_target(target)
        if port is None:
            return self._send(404, b"pod not found or not running", "text/plain")
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("authorization", "content-type", "x-offset",
                                                                           "x-hf-token")}
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request(method, "/" + path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            conn.close()
        except OSError:
            return self._send(502, b"Bad Gateway", "text/html")
        keep = {k: v for k, v in resp.getheaders() if k.lower().startswith("x-")}
        self._send(resp.status, data, resp.getheader("Content-Type", "application/octet-stream"), keep)
