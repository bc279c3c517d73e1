"""The RunPod backend: one pod per job, running the worker in HTTP mode; the pod always goes away.

Life of a job here (the manager's protocol is in `base.py`):

    launch    pick the GPU type (cheapest on-demand type with ≥ the estimated memory, or
              FINETUNE_MCP_RUNPOD_GPU), save a handle naming the pod `finetune-mcp-<job id>`,
              create the pod (image + install command + `finetune-mcp worker serve`, port 8000/http,
              a per-job worker token in its env), save the pod id, wait until the worker answers
              through the proxy (≤ provision_timeout_s), upload the spec's local inputs, start.
    poll      pull new events.jsonl / train.log bytes into the local run dir; the worker's state says
              when it ended; an unreachable worker (≥ unreachable_timeout_s), a vanished pod,
              max_runtime_s or the spending cap ends the job. Cost = $/h × time since the pod was created.
    cancel    ask the worker to stop, collect what it has, terminate the pod.
    finalize  collect (events, log, adapter/, tensorboard/, entropy/, result.json) if the pod is
              still there, terminate it and every other pod with the job's name (a create that
              timed out may still have made one), write `cost_usd` into result.json.
    reattach  after a restart: the stored pod id (or, for a launch cut short, the pod name) leads
              back to the pod; a finished worker is collected and settled.

Spending: what the user agreed to at start (`quote` shows the GPU type and $/h first; the tool asks)
travels in the placement: `max_price_per_hr` (no GPU type above it is rented, even if the quoted
one is gone by launch) and `max_cost_usd` (else FINETUNE_MCP_RUNPOD_MAX_COST_USD). The cap is
checked while the pod starts and on every poll; when the cost, plus the minute it takes to stop,
reaches it, the job fails with "spending cap reached: $X of $Y" and the pod is terminated.

Every ending goes through finalize, and launch terminates its own pod on any error or cancellation
before re-raising, so no path leaves a pod running. As a last line, the worker terminates its own
pod when no manager has spoken to it for idle_timeout_s and it is not training.

The worker token is HMAC(RUNPOD_API_KEY, job id + a random nonce): per job, never stored (the handle
keeps only the nonce), and recomputable after a restart by whoever holds the key — who could read
the pod's environment through the API anyway. The HF token goes to the worker in the start
request's header, never into the pod's environment (which RunPod's API returns to anyone with the key).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from finetune_mcp.config import Settings
from finetune_mcp.config.tracking import TRACKING_VARIABLES
from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.backends.base import Handle, PollResult, SaveHandle
from finetune_mcp.jobs.backends.runpod.api import (
    GpuChoice,
    RunPodAPI,
    RunPodSettings,
    TransientAPIError,
    is_no_capacity,
)
from finetune_mcp.jobs.backends.runpod.client import (
    TERMINAL,
    ArtifactsRefused,
    WorkerClient,
    WorkerUnreachable,
    local_inputs,
    read_sidecar,
    update_sidecar,
)
from finetune_mcp.jobs.placement import Placement
from finetune_mcp.jobs.router import DEFAULT_RUNPOD_MIN_GPU_GB
from finetune_mcp.runs.artifacts import RunArtifacts
from finetune_mcp.runs.rundir import RunDirectory
from finetune_mcp.user_functions import ENV as USER_FUNCTIONS_ENV
from finetune_mcp.user_functions import allowed_modules

if TYPE_CHECKING:
    from finetune_mcp.jobs.store import Job, JobState

log = logging.getLogger("finetune_mcp.runpod")

POD_PREFIX = "finetune-mcp-"
GONE = ("TERMINATED", "EXITED")
MAX_CREATE_CHOICES = 3
STOP_MARGIN_S = 60.0  # billed while a capped job is stopped (collect, terminate): stop this much early


@dataclass(frozen=True)
class PodQuote:
    """What a job would rent, before anything is rented: shown to the user for consent."""

    gpu_type_id: str
    gpu_name: str
    gpu_count: int
    price_per_hr: float  # for all gpu_count GPUs
    cloud_type: str
    max_runtime_s: float
    default_cap_usd: float | None  # FINETUNE_MCP_RUNPOD_MAX_COST_USD
    nodes: int = 1  # > 1: an Instant Cluster of this many pods (price_per_hr covers them all)

    @property
    def worst_case_usd(self) -> float:
        return round(self.price_per_hr * self.max_runtime_s / 3600.0, 2)


def quote(placement: Placement, settings: Settings | None = None, runpod: RunPodSettings | None = None) -> PodQuote:
    """The GPU type `launch` would pick now for `placement` (the cheapest on-demand type that fits,
    or FINETUNE_MCP_RUNPOD_GPU) and its price. One RunPod API read; nothing is created."""
    settings = settings or Settings.from_env()
    rp = runpod or RunPodSettings.from_env()
    if not settings.runpod_api_key:
        raise BackendError("RUNPOD_API_KEY is not set; set it in the server's environment to use RunPod")
    required = float(placement.details.get("required_gb") or DEFAULT_RUNPOD_MIN_GPU_GB)
    count = int(placement.details.get("gpu_count") or 1)
    choices = RunPodAPI(settings.runpod_api_key, rp).choose_gpu(required)
    priced = [c for c in choices if c.price_per_hr is not None]
    if not priced:
        raise BackendError(_no_gpu_message(required, rp))
    best = priced[0]
    return PodQuote(best.id, best.display_name, count, round(float(best.price_per_hr) * count, 4), rp.cloud_type,
                    rp.max_runtime_s, rp.max_cost_usd)


def _no_gpu_message(required: float, rp: RunPodSettings, agreed: float | None = None) -> str:
    cap = f" at ≤ ${rp.max_price_per_hr}/h" if rp.max_price_per_hr else ""
    if agreed is not None:
        cap = f" at or below the ${agreed:.2f}/h agreed to when the job started"
    return (f"no RunPod GPU type with ≥ {required:.1f} GB can be rented now in cloud {rp.cloud_type}{cap}; try again "
            "later (start_finetune shows the current price), set FINETUNE_MCP_RUNPOD_GPU / FINETUNE_MCP_RUNPOD_CLOUD, "
            "or use load_in_4bit=True")


class RunPodBackend:
    """Runs each job in its own RunPod pod; see the module docstring."""

    name = "runpod"
    provisions = True

    def __init__(self, settings: Settings | None = None, *, runpod: RunPodSettings | None = None,
                 clock: Any = time.time) -> None:
        self.settings = settings or Settings.from_env()
        self.rp = runpod or RunPodSettings.from_env()
        self.clock = clock
        self.stop_on_shutdown = not self.rp.keep_on_shutdown
        self._api: RunPodAPI | None = None
        self._unreachable_since: dict[str, float] = {}
        self._checked_at: dict[str, float] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _key(self) -> str:
        if not self.settings.runpod_api_key:
            raise BackendError("RUNPOD_API_KEY is not set; set it in the server's environment to use RunPod")
        return self.settings.runpod_api_key

    def api(self) -> RunPodAPI:
        if self._api is None:
            self._api = RunPodAPI(self._key(), self.rp)
        return self._api

    async def _in_thread(self, fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)

    def worker_token(self, job_id: str, nonce: str) -> str:
        return hmac.new(self._key().encode(), f"finetune-mcp-worker:{job_id}:{nonce}".encode(),
                        hashlib.sha256).hexdigest()

    def pod_env(self, job_id: str, nonce: str) -> dict[str, str]:
        """The environment of a pod that serves this job's worker (no secret but the per-job token)."""
        env = {
            "FINETUNE_MCP_WORKER_TOKEN": self.worker_token(job_id, nonce),
            "FINETUNE_MCP_WORKER_PORT": str(self.rp.port),
            "FINETUNE_MCP_WORKER_IDLE_TIMEOUT_S": f"{self.rp.idle_timeout_s:g}",
            "FINETUNE_MCP_BOOTSTRAP": f"{self.rp.install_command} && exec finetune-mcp worker serve",
            "PYTHONUNBUFFERED": "1",
        }
        if allowed := allowed_modules():  # the pod's worker asks the same question the server's start checks did
            env[USER_FUNCTIONS_ENV] = ",".join(allowed)
        return env

    def _worker(self, handle: Handle) -> WorkerClient:
        return WorkerClient(self.rp.worker_url(handle["pod_id"]), self.worker_token(handle["job_id"], handle["nonce"]),
                            Path(handle["run_dir"]))

    def _cost(self, handle: Handle, end: float | None = None) -> float | None:
        price, created = handle.get("price_per_hr"), handle.get("created_at")
        if price is None or created is None:
            return None
        sidecar = read_sidecar(Path(handle["run_dir"]))
        price = sidecar.get("cost_per_hr") or price
        end = end or sidecar.get("terminated_at") or self.clock()
        return round(float(price) * max(0.0, end - created) / 3600.0, 4)

    def public_info(self, handle: Handle) -> dict[str, Any]:
        return {k: handle.get(k) for k in ("pod_id", "pod_name", "gpu_type_id", "gpu_name", "price_per_hr",
                                            "cloud_type", "max_cost_usd")} | {"cost_usd": self._cost(handle)}

    # -- launch ----------------------------------------------------------------------------------
    async def launch(self, job: Job, spec_path: Path, *, env: Mapping[str, str], save_handle: SaveHandle) -> Handle:
        api = self.api()
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
        files, fields = local_inputs(spec)
        placement = Placement.from_json(job.placement)
        required = float(placement.details.get("required_gb") or DEFAULT_RUNPOD_MIN_GPU_GB)
        gpu_count = int(placement.details.get("gpu_count") or 1)  # > 1: DDP on the pod (num_gpus)
        choices: list[GpuChoice] = await self._in_thread(api.choose_gpu, required)
        agreed = placement.details.get("max_price_per_hr")  # the $/h the user agreed to (all GPUs)
        if agreed is not None:
            choices = [c for c in choices if c.price_per_hr is not None
                       and c.price_per_hr * gpu_count <= float(agreed) + 1e-9]
        if not choices:
            raise BackendError(_no_gpu_message(required, self.rp, None if agreed is None else float(agreed)))
        nonce = secrets.token_hex(16)
        cap = placement.details.get("max_cost_usd", self.rp.max_cost_usd)
        handle: Handle = {
            "job_id": job.id, "run_dir": str(spec_path.parent), "pod_name": POD_PREFIX + job.id, "pod_id": None,
            "nonce": nonce, "cloud_type": self.rp.cloud_type, "started": False,
            "max_cost_usd": None if cap is None else float(cap),
        }
        await save_handle(dict(handle))  # from here on, a restart finds the pod by its name
        pod_env = self.pod_env(job.id, nonce)
        try:
            with anyio.CancelScope(shield=True):  # a pod id must never be lost between create and save
                handle["created_at"] = self.clock()
                pod, choice = await anyio.to_thread.run_sync(
                    self._create, api, handle["pod_name"], choices, pod_env, gpu_count)
                handle.update(pod_id=pod["id"], gpu_type_id=choice.id, gpu_name=choice.display_name,
                              gpu_count=gpu_count, price_per_hr=choice.price_per_hr * gpu_count,
                              worker_url=self.rp.worker_url(pod["id"]))
                await save_handle(dict(handle))
            log.info("job %s: pod %s on %s", job.id, pod["id"], choice.describe())
            worker = self._worker(handle)
            await self._wait_ready(api, handle, worker)
            for local, remote in files:
                await worker.upload(local, remote)
            # the start check's file identities name this machine's files; the pod reads its uploaded copies
            await worker.start(job.id, {**spec, "dataset_files": None}, fields, env.get("HF_TOKEN"),
                               {k: v for k, v in env.items() if k in TRACKING_VARIABLES})
        except BaseException:
            with anyio.CancelScope(shield=True), anyio.move_on_after(self.rp.api_timeout_s * 4 + 30):
                try:
                    await self._terminate_all(handle)
                except BackendError as exc:  # finalize tries again and reports it; the first error stays
                    log.error("job %s: %s", job.id, exc)
            raise
        handle["started"] = True
        return handle

    def _create(self, api: RunPodAPI, name: str, choices: list[GpuChoice],
                env: dict[str, str], gpu_count: int = 1) -> tuple[dict[str, Any], GpuChoice]:
        """Create on the cheapest type with capacity. A create that failed in transit may still have
        made the pod, so before trying again the pod is looked up by name."""
        last: BackendError | None = None
        for choice in choices[:MAX_CREATE_CHOICES]:
            for attempt in range(1 + self.rp.api_retries):
                try:
                    return api.create_pod(name=name, gpu_type_id=choice.id, env=env, gpu_count=gpu_count), choice
                except TransientAPIError as exc:
                    last = exc
                    existing = _safe(lambda: api.pods_named(name)) or []
                    if existing:
                        return existing[0], choice
                    time.sleep(self.rp.backoff_s * 2**attempt)
                except BackendError as exc:
                    if not is_no_capacity(exc):
                        raise
                    last = exc
                    log.info("no capacity for %s; trying the next GPU type", choice.display_name)
                    break
        raise BackendError(f"could not create a RunPod pod: {last}")

    def _cap_reached(self, handle: Handle) -> str | None:
        """'spending cap reached: $X of $Y' once the cost so far, plus what stopping costs, reaches the
        job's cap; None while under it (or without a cap)."""
        cap, cost = handle.get("max_cost_usd"), self._cost(handle)
        if cap is None or cost is None:
            return None
        price = float(read_sidecar(Path(handle["run_dir"])).get("cost_per_hr") or handle.get("price_per_hr") or 0)
        if cost + price * STOP_MARGIN_S / 3600.0 < float(cap):
            return None
        return f"spending cap reached: ${cost:.2f} of ${float(cap):.2f}"

    async def _wait_ready(self, api: RunPodAPI, handle: Handle, worker: WorkerClient) -> None:
        deadline = handle["created_at"] + self.rp.provision_timeout_s
        last, checked = "no answer yet", 0.0
        while True:
            now = self.clock()
            capped = self._cap_reached(handle)
            if capped:
                raise BackendError(f"{capped} while pod {handle['pod_id']} was starting (the pod is terminated); "
                                   "raise max_cost_usd, or try another time or GPU type if starting is slow")
            if now - checked >= max(self.rp.ready_poll_s * 3, 5.0):
                checked = now
                pod = await self._in_thread(api.pod, handle["pod_id"])
                if not pod or pod.get("desiredStatus") in GONE:
                    raise BackendError(f"pod {handle['pod_id']} stopped while starting "
                                       f"({(pod or {}).get('desiredStatus', 'gone')}); see its logs in the RunPod "
                                       "console, check FINETUNE_MCP_RUNPOD_IMAGE / _INSTALL, and start the job again")
            try:
                status = await worker.status()
                if status.get("state") == "idle":
                    return
                raise BackendError(f"pod {handle['pod_id']}'s worker is already {status.get('state')}; start again")
            except WorkerUnreachable as exc:
                last = str(exc)
            if now >= deadline:
                raise BackendError(
                    f"pod {handle['pod_id']} ({handle.get('gpu_name')}) did not become ready within "
                    f"{self.rp.provision_timeout_s:g} s (last: {last}); the image pull or the install command may be "
                    "slow or failing — see the pod's logs in the RunPod console, or raise "
                    "FINETUNE_MCP_RUNPOD_PROVISION_TIMEOUT_S"
                )
            await anyio.sleep(self.rp.ready_poll_s)

    # -- poll / cancel / reattach / finalize -----------------------------------------------------
    async def poll(self, handle: Handle) -> PollResult:
        job_id, cost = handle["job_id"], self._cost(handle)
        if not handle.get("pod_id"):
            return PollResult(alive=False, detail="the pod was never created", cost_usd=cost)
        if self.clock() - handle["created_at"] > self.rp.max_runtime_s:
            return PollResult(alive=False, cost_usd=cost, detail=f"the job ran past FINETUNE_MCP_RUNPOD_MAX_RUNTIME_S="
                              f"{self.rp.max_runtime_s:g} s and was stopped")
        capped = self._cap_reached(handle)
        if capped:
            return PollResult(alive=False, cost_usd=cost, detail=f"{capped}; the pod was stopped (raise max_cost_usd "
                              "to let a run like this finish)")
        worker = self._worker(handle)
        try:
            state = await worker.pull()
        except WorkerUnreachable as exc:
            since = self._unreachable_since.setdefault(job_id, self.clock())
            if self.clock() - since < self.rp.unreachable_timeout_s:
                return PollResult(alive=True, cost_usd=cost)
            pod = await self._in_thread(_safe, lambda: self.api().pod(handle["pod_id"]))
            gone = pod is None or pod.get("desiredStatus") in GONE
            detail = (f"pod {handle['pod_id']} is gone ({(pod or {}).get('desiredStatus', 'not found')})" if gone else
                      f"the worker on pod {handle['pod_id']} did not answer for {self.rp.unreachable_timeout_s:g} s "
                      f"({exc}); it may have crashed")
            return PollResult(alive=False, detail=detail, cost_usd=cost)
        self._unreachable_since.pop(job_id, None)
        if state in TERMINAL:
            await worker.pull(drain=True)
            return PollResult(alive=False, exit_code=0 if state == "succeeded" else 1,
                              detail=f"the worker reported {state}", cost_usd=cost)
        if state == "idle":
            return PollResult(alive=False, detail=f"the worker on pod {handle['pod_id']} restarted and lost the run",
                              cost_usd=cost)
        if self.clock() - self._checked_at.get(job_id, 0.0) >= self.rp.status_interval_s:
            self._checked_at[job_id] = self.clock()
            pod = await self._in_thread(_safe, lambda: self.api().pod(handle["pod_id"]))
            if pod and pod.get("costPerHr"):
                worker.update_sidecar(cost_per_hr=float(pod["costPerHr"]))
        return PollResult(alive=True, cost_usd=cost)

    async def cancel(self, handle: Handle, grace_s: float) -> None:
        if handle.get("pod_id") and handle.get("started"):
            worker = self._worker(handle)
            with anyio.move_on_after(grace_s + 10):
                try:
                    await worker.cancel(grace_s)
                except (WorkerUnreachable, BackendError) as exc:
                    log.info("cancel: worker of %s did not answer (%s); terminating its pod", handle["job_id"], exc)
            await self._collect(handle)
        await self._terminate_all(handle)

    async def reattach(self, handle: Handle) -> bool:
        if not handle.get("started") or not handle.get("pod_id"):
            return False  # the launch was cut short: finalize terminates whatever it made
        pod = await self._in_thread(_safe, lambda: self.api().pod(handle["pod_id"]))
        if not pod or pod.get("desiredStatus") in GONE:
            return False
        try:
            state = await self._worker(handle).pull(drain=True)
        except WorkerUnreachable:
            return True  # the pod exists; poll's unreachable timeout decides
        return state == "running"

    async def finalize(self, handle: Handle, state: JobState) -> float | None:
        try:
            await self._collect(handle)
        finally:
            await self._terminate_all(handle)
        run_dir = Path(handle["run_dir"])
        ended = read_sidecar(run_dir).get("terminated_at") or self.clock()
        update_sidecar(run_dir, terminated_at=ended)
        cost = self._cost(handle, ended)
        run = RunDirectory(run_dir)
        transfer = RunArtifacts(run).checkpoint_transfer()
        if transfer is not None and run.result.exists():
            run.write_json(run.result, {**run.read_json(run.result), "checkpoints_from_pod": transfer})
        if cost is not None and run.result.exists():
            data = run.read_json(run.result)
            data["cost_usd"] = cost
            data["compute"] = {"provider": "runpod", "billed_s": round(ended - handle["created_at"], 1),
                               **{k: handle.get(k) for k in ("pod_id", "gpu_name", "price_per_hr")},
                               **{k: handle[k] for k in ("cluster_id", "num_nodes") if handle.get(k)}}  # clusters
            run.write_json(run.result, data)
        refused = read_sidecar(run_dir).get("artifacts_refused")
        if refused:
            raise BackendError(f"the artifacts of pod {handle.get('pod_id')} were refused: {refused}; nothing from "
                               "the pod was written into the run directory (the pod is terminated); start the job "
                               "again, and report it if it happens again with the default image")
        return cost

    async def _collect(self, handle: Handle) -> None:
        """Bring the last events, the log and the artifacts home, once, if the worker still answers."""
        if not handle.get("pod_id") or not handle.get("started"):
            return
        worker = self._worker(handle)
        if worker.sidecar().get("collected"):
            return
        with anyio.move_on_after(max(self.rp.unreachable_timeout_s, 60) + 600):
            try:
                await worker.pull(drain=True)
                names = await worker.download_artifacts(
                    checkpoint_bytes=int(self.rp.checkpoints_max_mb * 1024 * 1024))
                worker.update_sidecar(collected=True)
                log.info("job %s: artifacts from pod %s: %s", handle["job_id"], handle["pod_id"], ", ".join(names))
            except ArtifactsRefused as exc:  # a hostile or broken pod: never asked again; finalize fails the job
                worker.update_sidecar(collected=True, artifacts_refused=str(exc))
                log.error("job %s: artifacts from pod %s refused: %s", handle["job_id"], handle["pod_id"], exc)
            except (WorkerUnreachable, BackendError) as exc:
                log.warning("job %s: could not collect artifacts from pod %s: %s", handle["job_id"],
                            handle["pod_id"], exc)

    async def _terminate_all(self, handle: Handle) -> None:
        """Terminate the handle's pod and any other pod with the job's name; raise if one may be left."""
        api = self.api()
        ids = {handle["pod_id"]} if handle.get("pod_id") else set()
        try:
            ids |= {p["id"] for p in await self._in_thread(api.pods_named, handle["pod_name"])}
        except BackendError as exc:
            if not ids:
                raise BackendError(f"could not look up pod {handle['pod_name']} to terminate it ({exc}); check the "
                                   "RunPod console (https://www.runpod.io/console/pods) and terminate it there") from None
        for pod_id in sorted(ids):
            try:
                await self._in_thread(api.terminate, pod_id)
            except BackendError as exc:
                raise BackendError(f"could not terminate pod {pod_id} ({exc}); terminate it in the RunPod console "
                                   "(https://www.runpod.io/console/pods) to stop the billing") from None
            log.info("job %s: pod %s terminated", handle["job_id"], pod_id)


def _safe(fn: Any) -> Any:
    """For look-ups whose failure only means "unknown": None instead of an exception."""
    try:
        return fn()
    except BackendError:
        return None
