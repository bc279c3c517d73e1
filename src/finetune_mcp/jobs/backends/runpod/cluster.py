"""Multi-node training on a RunPod Instant Cluster: N pods that start together on one network, each
with the rendezvous variables set (MASTER_ADDR / MASTER_PORT of the primary node, NODE_RANK,
NUM_NODES), so every node runs the same worker under torchrun and DDP reduces across all of them.

Life of a job here (as a pod's, `backend.py`, whose worker, sync, spending cap and cost this reuses):

    launch    the cheapest GPU type that fits (≤ the $/h agreed to), a handle naming the cluster
              `finetune-mcp-<job id>`, `POST /v2/clusters` (every pod: the image, the worker's bootstrap,
              port 8000/http, a per-job worker token), `GET /v2/clusters/{id}/pods` until all pods
              are listed, wait until each pod's worker answers and says its NODE_RANK, upload the
              inputs to every node and start the same spec on every node (the pod's worker then runs
              `torch.distributed.run --nnodes ... --node_rank ...`, `jobs.multi_gpu.cluster_command`).
    poll      node 0 (global rank 0 writes events.jsonl and the run directory, as DDP on one machine
              does) is synced like a pod; the other nodes are asked for their state, and a node that
              failed or vanished ends the job.
    cancel    every node's worker is asked to stop, node 0's run collected, the cluster deleted.
    finalize  node 0's artifacts collected, `DELETE /v2/clusters/{id}` (and every other cluster with
              the job's name: a create that timed out may still have made one), cost into result.json.

Every ending goes through finalize, and launch deletes its own cluster on any error or cancellation
before re-raising, so no path leaves a cluster billing. Cost = $/h of all GPUs of all nodes × time
since the cluster was created.

Backends: the HF/PEFT path (transformers Trainer + DDP); `backend='auto'` is sent to the nodes as
'hf'. Unsloth documents no multi-node training, so the router refuses it at start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from finetune_mcp.config import Settings
from finetune_mcp.config.tracking import TRACKING_VARIABLES
from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.backends.base import Handle, PollResult, SaveHandle
from finetune_mcp.jobs.backends.runpod.api import START_COMMAND, GpuChoice, RunPodSettings, check_pod_id
from finetune_mcp.jobs.backends.runpod.backend import (
    POD_PREFIX,
    PodQuote,
    RunPodBackend,
    _no_gpu_message,
)
from finetune_mcp.jobs.backends.runpod.backend import quote as quote_pod
from finetune_mcp.jobs.backends.runpod.client import WorkerClient, WorkerUnreachable, local_inputs
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.router import DEFAULT_RUNPOD_MIN_GPU_GB

if TYPE_CHECKING:
    from finetune_mcp.jobs.store import Job

log = logging.getLogger("finetune_mcp.runpod")

DEFAULT_REST_URL = "https://api.runpod.io"


def quote(placement: Placement, settings: Settings | None = None, runpod: RunPodSettings | None = None) -> PodQuote:
    """What the cluster would rent now: the pod quote for one node's GPUs, times the nodes."""
    one = quote_pod(placement, settings, runpod)
    nodes = int(placement.details.get("num_nodes") or 1)
    return PodQuote(one.gpu_type_id, one.gpu_name, one.gpu_count, round(one.price_per_hr * nodes, 4), one.cloud_type,
                    one.max_runtime_s, one.default_cap_usd, nodes)


class ClusterAPI:
    """RunPod's REST clusters API (`/v2/clusters`), blocking; run it in a worker thread. The key goes
    only into the Authorization header and never into an error or log line."""

    def __init__(self, api_key: str, settings: RunPodSettings) -> None:
        self._key = api_key
        self.settings = settings
        self.base = os.environ.get("RUNPOD_API_BASE_URL", DEFAULT_REST_URL).rstrip("/") + "/v2/clusters"

    def __repr__(self) -> str:
        return f"ClusterAPI({self.base})"

    def _call(self, method: str, path: str = "", *, what: str, retry: bool = True, **kwargs: Any) -> Any:
        attempts = 1 + (self.settings.api_retries if retry else 0)
        last = ""
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            try:
                response = httpx.request(method, self.base + path, headers={"Authorization": f"Bearer {self._key}"},
                                         timeout=self.settings.api_timeout_s, **kwargs)
            except httpx.TransportError as exc:
                last = type(exc).__name__
                continue
            if response.status_code == 401:
                raise BackendError("RunPod rejected the API key (401); check RUNPOD_API_KEY")
            if response.status_code >= 500:
                last = f"HTTP {response.status_code}"
                continue
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                raise BackendError(f"RunPod refused to {what}: HTTP {response.status_code} {response.text[:300]}")
            return response.json() if response.content else None
        hint = "" if retry else " (not retried here: creating twice could start two clusters)"
        raise BackendError(f"RunPod API: could not {what} after {attempts} attempt(s): {last}{hint}; check RunPod's "
                           "status page and your network")

    def create(self, *, name: str, gpu_type_id: str, nodes: int, gpus_per_node: int,
               env: dict[str, str]) -> dict[str, Any]:
        s = self.settings
        body = {"name": name, "type": "TRAINING",
                "compute": {"podCount": nodes, "gpuCountPerPod": gpus_per_node, "gpuTypeId": gpu_type_id},
                "image": s.image, "args": START_COMMAND, "env": env, "ports": [f"{s.port}/http"],
                "containerDiskInGb": s.container_disk_gb}
        cluster = self._call("POST", json=body, what=f"create cluster {name}", retry=False)
        if not isinstance(cluster, dict) or not cluster.get("id"):
            raise BackendError(f"RunPod answered the create request for cluster {name} without an id; check the console")
        check_pod_id(cluster["id"])
        return cluster

    def pods(self, cluster_id: str) -> list[dict[str, Any]] | None:
        """The cluster's pods; None when the cluster is gone."""
        data = self._call("GET", f"/{check_pod_id(cluster_id)}/pods", what=f"list the pods of cluster {cluster_id}")
        if data is None:
            return None
        pods = data.get("pods", data) if isinstance(data, dict) else data
        return [p for p in pods if isinstance(p, dict) and p.get("id")]

    def named(self, name: str) -> list[dict[str, Any]]:
        data = self._call("GET", what="list clusters") or []
        clusters = data.get("clusters", data) if isinstance(data, dict) else data
        return [c for c in clusters if isinstance(c, dict) and c.get("name") == name and c.get("id")]

    def delete(self, cluster_id: str) -> None:
        """Delete (every pod terminated); a cluster that no longer exists counts as deleted."""
        self._call("DELETE", f"/{check_pod_id(cluster_id)}", what=f"delete cluster {cluster_id}")


class RunPodClusterBackend(RunPodBackend):
    """Runs each multi-node job on its own Instant Cluster; see the module docstring."""

    name = "runpod_cluster"

    def __init__(self, settings: Settings | None = None, *, runpod: RunPodSettings | None = None,
                 clock: Any = time.time) -> None:
        super().__init__(settings, runpod=runpod, clock=clock)
        self._clusters: ClusterAPI | None = None

    def clusters(self) -> ClusterAPI:
        if self._clusters is None:
            self._clusters = ClusterAPI(self._key(), self.rp)
        return self._clusters

    def public_info(self, handle: Handle) -> dict[str, Any]:
        return {**super().public_info(handle), "cluster_id": handle.get("cluster_id"),
                "num_nodes": handle.get("num_nodes"), "node_pods": handle.get("node_pods")}

    def _cost(self, handle: Handle, end: float | None = None) -> float | None:
        """Every node bills: the handle's $/h covers all GPUs of all nodes (a pod's own costPerHr does not)."""
        price, created = handle.get("price_per_hr"), handle.get("created_at")
        if price is None or created is None:
            return None
        from finetune_mcp.jobs.backends.runpod.client import read_sidecar

        end = end or read_sidecar(Path(handle["run_dir"])).get("terminated_at") or self.clock()
        return round(float(price) * max(0.0, end - created) / 3600.0, 4)

    def _node(self, handle: Handle, pod_id: str) -> WorkerClient:
        """A client for one node's worker. Only node 0's run is synced into the local run directory."""
        return WorkerClient(self.rp.worker_url(pod_id), self.worker_token(handle["job_id"], handle["nonce"]),
                            Path(handle["run_dir"]))

    # -- launch ----------------------------------------------------------------------------------
    async def launch(self, job: Job, spec_path: Path, *, env: Mapping[str, str], save_handle: SaveHandle) -> Handle:
        api, clusters = self.api(), self.clusters()
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        if spec.get("backend", "auto") == "auto":
            spec["backend"] = "hf"  # the multi-node path (module docstring)
        files, fields = local_inputs(spec)
        placement = Placement.from_json(job.placement)
        required = float(placement.details.get("required_gb") or DEFAULT_RUNPOD_MIN_GPU_GB)
        gpus = int(placement.details.get("gpu_count") or 1)
        nodes = int(placement.details.get("num_nodes") or 2)
        choices: list[GpuChoice] = await self._in_thread(api.choose_gpu, required)
        agreed = placement.details.get("max_price_per_hr")  # $/h of the whole cluster
        if agreed is not None:
            choices = [c for c in choices if c.price_per_hr is not None
                       and c.price_per_hr * gpus * nodes <= float(agreed) + 1e-9]
        if not choices:
            raise BackendError(_no_gpu_message(required, self.rp, None if agreed is None else float(agreed)))
        choice = choices[0]
        nonce = secrets.token_hex(16)
        cap = placement.details.get("max_cost_usd", self.rp.max_cost_usd)
        handle: Handle = {
            "job_id": job.id, "run_dir": str(spec_path.parent), "pod_name": POD_PREFIX + job.id, "pod_id": None,
            "cluster_id": None, "node_pods": [], "num_nodes": nodes, "nonce": nonce, "cloud_type": self.rp.cloud_type,
            "started": False, "max_cost_usd": None if cap is None else float(cap),
        }
        await save_handle(dict(handle))  # from here on, a restart finds the cluster by its name
        try:
            with anyio.CancelScope(shield=True):  # a cluster id must never be lost between create and save
                handle["created_at"] = self.clock()
                cluster = await self._in_thread(lambda: clusters.create(
                    name=handle["pod_name"], gpu_type_id=choice.id, nodes=nodes, gpus_per_node=gpus,
                    env=self.pod_env(job.id, nonce)))
                handle.update(cluster_id=cluster["id"], gpu_type_id=choice.id, gpu_name=choice.display_name,
                              gpu_count=gpus, price_per_hr=round(float(choice.price_per_hr or 0) * gpus * nodes, 4))
                await save_handle(dict(handle))
            log.info("job %s: cluster %s, %d nodes of %d× %s", job.id, cluster["id"], nodes, gpus, choice.display_name)
            ranks = await self._wait_for_nodes(handle, nodes)
            handle.update(node_pods=[ranks[r] for r in range(nodes)], pod_id=ranks[0],
                          worker_url=self.rp.worker_url(ranks[0]))
            await save_handle(dict(handle))
            for pod_id in handle["node_pods"]:
                node = self._node(handle, pod_id)
                for local, remote in files:
                    await node.upload(local, remote)
            # as for a pod: the start check's file identities name this machine's files, not the uploaded
            # copies; the trackers' variables travel in the start request only
            tracking = {k: v for k, v in env.items() if k in TRACKING_VARIABLES}
            for pod_id in handle["node_pods"]:
                await self._node(handle, pod_id).start(job.id, {**spec, "dataset_files": None}, fields,
                                                       env.get("HF_TOKEN"), tracking)
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.rp.api_timeout_s * 4 + 30):
                try:
                    await self._terminate_all(handle)
                except BackendError as exc:
                    log.error("job %s: %s", job.id, exc)
            raise
        handle["started"] = True
        return handle

    async def _wait_for_nodes(self, handle: Handle, nodes: int) -> dict[int, str]:
        """Node rank → pod id, once every node's worker answers (each says its NODE_RANK)."""
        deadline = handle["created_at"] + self.rp.provision_timeout_s
        ranks: dict[int, str] = {}
        last = "no pods listed yet"
        while True:
            capped = self._cap_reached(handle)
            if capped:
                raise BackendError(f"{capped} while cluster {handle['cluster_id']} was starting (it is deleted); "
                                   "raise max_cost_usd")
            pods = await self._in_thread(self.clusters().pods, handle["cluster_id"])
            if pods is None:
                raise BackendError(f"cluster {handle['cluster_id']} vanished while starting; see the RunPod console "
                                   "and start the job again")
            for pod in pods:
                if pod["id"] in ranks.values():
                    continue
                try:
                    status = await self._node(handle, pod["id"]).status()
                except WorkerUnreachable as exc:
                    last = f"pod {pod['id']}: {exc}"
                    continue
                if status.get("state") != "idle":
                    raise BackendError(f"pod {pod['id']}'s worker is already {status.get('state')}; start again")
                ranks[int(status.get("node_rank") or 0)] = pod["id"]
            if len(ranks) == nodes and set(ranks) == set(range(nodes)):
                return ranks
            if self.clock() >= deadline:
                raise BackendError(f"cluster {handle['cluster_id']}: {len(ranks)} of {nodes} nodes ready within "
                                   f"{self.rp.provision_timeout_s:g} s (last: {last}); see the pods' logs in the "
                                   "RunPod console, or raise FINETUNE_MCP_RUNPOD_PROVISION_TIMEOUT_S")
            await anyio.sleep(self.rp.ready_poll_s)

    # -- poll / cancel ---------------------------------------------------------------------------
    async def poll(self, handle: Handle) -> PollResult:
        result = await super().poll(handle)  # node 0: events, log, cap, runtime, reachability
        if not result.alive or not handle.get("started"):
            return result
        for rank, pod_id in enumerate(handle.get("node_pods") or []):
            if rank == 0:
                continue
            try:
                state = (await self._node(handle, pod_id).status()).get("state")
            except WorkerUnreachable:
                continue  # node 0's torchrun notices a lost peer; the unreachable timeout covers node 0
            if state in ("failed", "cancelled", "idle"):
                return PollResult(alive=False, cost_usd=result.cost_usd,
                                  detail=f"node {rank} (pod {pod_id}) {'lost its run' if state == 'idle' else state}")
        return result

    async def cancel(self, handle: Handle, grace_s: float) -> None:
        if handle.get("started"):
            for pod_id in (handle.get("node_pods") or [])[1:]:  # node 0 last: super() collects its run
                with anyio.move_on_after(grace_s + 10):
                    with contextlib.suppress(WorkerUnreachable, BackendError):
                        await self._node(handle, pod_id).cancel(grace_s)
        await super().cancel(handle, grace_s)

    async def _terminate_all(self, handle: Handle) -> None:
        """Delete the handle's cluster and any other cluster with the job's name; raise if one may be left."""
        clusters = self.clusters()
        ids = {handle["cluster_id"]} if handle.get("cluster_id") else set()
        try:
            ids |= {c["id"] for c in await self._in_thread(clusters.named, handle["pod_name"])}
        except BackendError as exc:
            if not ids:
                raise BackendError(f"could not look up cluster {handle['pod_name']} to delete it ({exc}); check the "
                                   "RunPod console (https://www.runpod.io/console/instant-clusters)") from None
        for cluster_id in sorted(ids):
            try:
                await self._in_thread(clusters.delete, cluster_id)
            except BackendError as exc:
                raise BackendError(f"could not delete cluster {cluster_id} ({exc}); delete it in the RunPod console "
                                   "(https://www.runpod.io/console/instant-clusters) to stop the billing") from None
            log.info("job %s: cluster %s deleted", handle["job_id"], cluster_id)
