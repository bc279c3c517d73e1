"""RunPod's GraphQL API through the official `runpod` SDK: settings, safe values, retries, GPU choice.

Three things the SDK leaves to its caller, done here once:

* The key. The SDK reads a module global (`runpod.api_key`), not RUNPOD_API_KEY; it is set just
  before each call from the key this client was given, and never logged, stored or put in an error.
* The values. The SDK builds its mutations by pasting Python strings between double quotes, so a
  quote, backslash or newline in an env value or a start command would end the string and could
  inject GraphQL. Every string the SDK interpolates goes through `gql_string`, which escapes it the
  way GraphQL (and JSON) string literals are escaped; env names and enum-like values that are not
  quoted at all must match strict patterns or are refused.
* Transient failures. The SDK makes one `requests.post` (30 s timeout) and does not look at 5xx
  status codes. Each call here runs under its own deadline (`api_timeout_s`) and is retried with
  exponential backoff on connection errors, timeouts, 5xx pages (non-JSON bodies) and malformed
  answers; after `api_retries` it fails with a message that says what was tried.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from finetune_mcp.errors import BackendError, ConfigError

log = logging.getLogger("finetune_mcp.runpod")

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
POD_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_VALUE_CHARS = 16_384
NO_CAPACITY = ("no longer any instances available", "not enough", "no instances", "unavailable")

DEFAULT_IMAGE = "pytorch/pytorch:2.8.0-cuda12.8-cudnn9-devel"
DEFAULT_INSTALL = 'pip install --no-cache-dir "finetune-mcp[unsloth]"'
DEFAULT_PROXY = "https://{pod_id}-{port}.proxy.runpod.net"
# The start command is constant; what it runs travels in FINETUNE_MCP_BOOTSTRAP (an env value, escaped
# like every other), so the install command may hold any quotes without a second layer of shell quoting.
START_COMMAND = "bash -c 'eval \"$FINETUNE_MCP_BOOTSTRAP\"'"


class RunPodSettings(BaseModel):
    """Everything about pods that a user may want to change, read from FINETUNE_MCP_RUNPOD_* variables."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(DEFAULT_IMAGE, description="Docker image of the pod (CUDA + Python ≥ 3.11).")
    install_command: str = Field(DEFAULT_INSTALL, description="Shell command that installs finetune-mcp in the pod.")
    gpu_type: str | None = Field(None, description="RunPod GPU type id to use instead of the cheapest that fits.")
    cloud_type: str = Field("ALL", description="ALL, SECURE or COMMUNITY.")
    container_disk_gb: int = Field(60, ge=10, le=2000)
    max_price_per_hr: float | None = Field(None, gt=0, description="Refuse GPU types above this $/h.")
    max_cost_usd: float | None = Field(None, gt=0, description="Default spending cap of one job (the pod is "
                                       "stopped and the job fails when it is reached); a job's own cap wins.")
    port: int = Field(8000, ge=1, le=65535)
    proxy_url: str = Field(DEFAULT_PROXY, description="URL of the worker; {pod_id} and {port} are filled in.")
    provision_timeout_s: float = Field(1200, gt=0, description="Pod created → worker answering (image pull + install).")
    idle_timeout_s: float = Field(900, gt=0, description="The worker terminates its own pod after this long unheard.")
    unreachable_timeout_s: float = Field(300, gt=0, description="A running worker unreachable this long → job failed.")
    max_runtime_s: float = Field(24 * 3600, gt=0, description="Wall-clock cap of one job on RunPod.")
    api_timeout_s: float = Field(30, gt=0, description="Deadline of one GraphQL call.")
    api_retries: int = Field(4, ge=0, le=20)
    backoff_s: float = Field(1.0, ge=0)
    status_interval_s: float = Field(30, gt=0, description="How often a running pod's status is re-read.")
    ready_poll_s: float = Field(3, gt=0, description="How often a starting pod's worker is asked if it is up.")
    keep_on_shutdown: bool = Field(False, description="Leave pods training when the server stops (re-attached on "
                                   "restart; an unattended pod terminates itself after idle_timeout_s).")
    checkpoints_max_mb: float = Field(2048, ge=0, description="Checkpoints brought back from a pod, newest first, "
                                      "while their total stays under this many MB (0: none); the job's result says "
                                      "which came back and which stayed on the pod.")

    @field_validator("cloud_type")
    @classmethod
    def _cloud(cls, value: str) -> str:
        if value not in ("ALL", "SECURE", "COMMUNITY"):
            raise ValueError(f"{value!r} is not ALL, SECURE or COMMUNITY")
        return value

    @field_validator("proxy_url")
    @classmethod
    def _proxy(cls, value: str) -> str:
        if "{pod_id}" not in value or not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must be an http(s) URL containing {{pod_id}} (and usually {{port}})")
        return value

    @classmethod
    def from_env(cls) -> RunPodSettings:
        fields = {
            "image": "IMAGE", "install_command": "INSTALL", "gpu_type": "GPU", "cloud_type": "CLOUD",
            "container_disk_gb": "DISK_GB", "max_price_per_hr": "MAX_PRICE", "max_cost_usd": "MAX_COST_USD",
            "port": "PORT", "proxy_url": "PROXY_URL",
            "provision_timeout_s": "PROVISION_TIMEOUT_S", "idle_timeout_s": "IDLE_TIMEOUT_S",
            "unreachable_timeout_s": "UNREACHABLE_TIMEOUT_S", "max_runtime_s": "MAX_RUNTIME_S",
            "api_timeout_s": "API_TIMEOUT_S", "api_retries": "API_RETRIES", "backoff_s": "BACKOFF_S",
            "status_interval_s": "STATUS_INTERVAL_S", "ready_poll_s": "READY_POLL_S",
            "keep_on_shutdown": "KEEP_ON_SHUTDOWN", "checkpoints_max_mb": "CHECKPOINTS_MAX_MB",
        }
        data = {f: os.environ[f"FINETUNE_MCP_RUNPOD_{e}"] for f, e in fields.items()
                if os.environ.get(f"FINETUNE_MCP_RUNPOD_{e}")}
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"FINETUNE_MCP_RUNPOD_{fields[str(e['loc'][0])]}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid RunPod settings: {problems}; fix or unset those variables") from None

    def worker_url(self, pod_id: str) -> str:
        return self.proxy_url.format(pod_id=check_pod_id(pod_id), port=self.port).rstrip("/")


def gql_string(value: str, what: str) -> str:
    """`value` escaped for a GraphQL string literal (the SDK adds the surrounding quotes).

    JSON's escapes (\\" \\\\ \\n \\t \\uXXXX for control characters) are GraphQL's, so json.dumps does it;
    a GraphQL server decodes the literal back to exactly `value`.
    """
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise ConfigError(f"{what} contains a NUL character, which no environment or command can hold; remove it")
    if len(value) > MAX_VALUE_CHARS:
        raise ConfigError(f"{what} is {len(value)} characters long; keep it under {MAX_VALUE_CHARS}")
    return json.dumps(value, ensure_ascii=False)[1:-1]


def gql_env(env: dict[str, str]) -> dict[str, str]:
    """Env names checked (they are quoted too, but a strange name is always a mistake), values escaped."""
    out = {}
    for name, value in env.items():
        if not ENV_NAME.match(name):
            raise ConfigError(f"pod environment variable name {name!r} is not a shell identifier; rename it")
        out[name] = gql_string(value, f"value of pod environment variable {name}")
    return out


def check_pod_id(pod_id: str) -> str:
    if not isinstance(pod_id, str) or not POD_ID.match(pod_id):
        raise BackendError(f"{pod_id!r} is not a RunPod pod id; the stored handle is corrupt — check the RunPod console")
    return pod_id


@dataclass(frozen=True)
class GpuChoice:
    id: str
    display_name: str
    memory_gb: float
    price_per_hr: float | None

    def describe(self) -> str:
        price = f"${self.price_per_hr:.2f}/h" if self.price_per_hr is not None else "price unknown"
        return f"{self.display_name} ({self.memory_gb:g} GB, {price})"


class RetryableError(Exception):
    """A failure worth another try (timeouts, connection errors, 5xx pages, malformed answers)."""


class TransientAPIError(BackendError):
    """Transient failures (RetryableError) went on through every attempt."""


class RunPodAPI:
    """Blocking calls into the SDK with deadlines and retries; run them in a worker thread."""

    def __init__(self, api_key: str, settings: RunPodSettings, *, sleep: Any = time.sleep) -> None:
        if not api_key:
            raise BackendError("RUNPOD_API_KEY is not set; set it in the server's environment to use RunPod")
        self._key = api_key
        self.settings = settings
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"RunPodAPI(base={os.environ.get('RUNPOD_API_BASE_URL', 'https://api.runpod.io')})"

    # -- the calls -------------------------------------------------------------------------------
    def gpu_types(self) -> list[dict[str, Any]]:
        return self._call("list GPU types", lambda rp: rp.get_gpus())

    def gpu(self, gpu_id: str) -> dict[str, Any]:
        escaped = gql_string(gpu_id, "GPU type id")
        return self._call(f"read GPU type {gpu_id!r}", lambda rp: rp.get_gpu(escaped))

    def create_pod(self, *, name: str, gpu_type_id: str, env: dict[str, str], gpu_count: int = 1) -> dict[str, Any]:
        s = self.settings
        kwargs = {
            "name": gql_string(name, "pod name"),
            "image_name": gql_string(s.image, "FINETUNE_MCP_RUNPOD_IMAGE"),
            "gpu_type_id": gql_string(gpu_type_id, "GPU type id"),
            "cloud_type": s.cloud_type,
            "gpu_count": int(gpu_count),  # > 1: the pod's worker trains with DDP over all of them
            "volume_in_gb": 0,
            "container_disk_in_gb": s.container_disk_gb,
            "docker_args": gql_string(START_COMMAND, "start command"),
            "ports": f"{s.port}/http",
            "env": gql_env(env),
        }
        pod = self._call(f"create pod {name}", lambda rp: rp.create_pod(**kwargs), retry=False)
        if not isinstance(pod, dict) or not pod.get("id"):
            raise BackendError(f"RunPod answered the create request for {name} without a pod id; check the console")
        check_pod_id(pod["id"])
        return pod

    def pod(self, pod_id: str) -> dict[str, Any] | None:
        check_pod_id(pod_id)
        return self._call(f"read pod {pod_id}", lambda rp: rp.get_pod(pod_id))

    def pods_named(self, name: str) -> list[dict[str, Any]]:
        pods = self._call("list pods", lambda rp: rp.get_pods()) or []
        return [p for p in pods if isinstance(p, dict) and p.get("name") == name and p.get("id")]

    def terminate(self, pod_id: str) -> None:
        """Terminate; a pod that no longer exists counts as terminated."""
        check_pod_id(pod_id)
        try:
            self._call(f"terminate pod {pod_id}", lambda rp: rp.terminate_pod(pod_id))
        except BackendError as exc:
            if "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
                return
            raise

    # -- GPU choice ------------------------------------------------------------------------------
    def choose_gpu(self, required_gb: float) -> list[GpuChoice]:
        """GPU types with ≥ `required_gb` that can be rented now, cheapest first (the override alone
        when FINETUNE_MCP_RUNPOD_GPU is set). Empty list → nothing fits."""
        s = self.settings
        if s.gpu_type:
            info = self.gpu(s.gpu_type)
            return [GpuChoice(info.get("id") or s.gpu_type, info.get("displayName") or s.gpu_type,
                              float(info.get("memoryInGb") or 0), _price(info, s.cloud_type))]
        candidates = [t for t in self.gpu_types() if float(t.get("memoryInGb") or 0) >= required_gb]
        choices = []
        for gpu_type in candidates:
            info = self.gpu(gpu_type["id"])
            price = _price(info, s.cloud_type)
            if price is None or (s.max_price_per_hr is not None and price > s.max_price_per_hr):
                continue
            choices.append(GpuChoice(gpu_type["id"], info.get("displayName") or gpu_type["id"],
                                     float(info.get("memoryInGb") or gpu_type["memoryInGb"]), price))
        return sorted(choices, key=lambda c: (c.price_per_hr, c.memory_gb))

    # -- plumbing --------------------------------------------------------------------------------
    def _call(self, what: str, fn: Any, *, retry: bool = True) -> Any:
        """Run `fn(runpod)` under the deadline; retry transient failures with backoff."""
        import runpod  # noqa: F401  (1-2 s on first import: kept outside the deadline)

        attempts = 1 + (self.settings.api_retries if retry else 0)
        last = ""
        for attempt in range(attempts):
            if attempt:
                self._sleep(self.settings.backoff_s * 2 ** (attempt - 1))
            try:
                return self._with_deadline(fn)
            except TimeoutError:
                last = f"no answer within {self.settings.api_timeout_s:g} s"
            except RetryableError as exc:
                last = str(exc)
            log.warning("RunPod API: %s failed (attempt %d/%d): %s", what, attempt + 1, attempts, last)
        hint = "" if retry else " (not retried here: creating twice could start two pods)"
        raise TransientAPIError(
            f"RunPod API: could not {what} after {attempts} attempt(s): {last}{hint}; check RunPod's status "
            "page and your network, then start the job again"
        )

    def _with_deadline(self, fn: Any) -> Any:
        """`_invoke(fn)` in a daemon thread; give up waiting after `api_timeout_s` (the thread ends
        when the SDK's own 30 s timeout fires, and never holds the process open at exit)."""
        box: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=1)

        def target() -> None:
            try:
                box.put((True, self._invoke(fn)))
            except BaseException as exc:  # handed to the caller's thread as is
                box.put((False, exc))

        threading.Thread(target=target, name="runpod-api", daemon=True).start()
        try:
            ok, value = box.get(timeout=self.settings.api_timeout_s)
        except queue.Empty:
            raise TimeoutError from None
        if ok:
            return value
        raise value

    def _invoke(self, fn: Any) -> Any:
        import requests
        import runpod
        from runpod import error as rp_error

        runpod.api_key = self._key
        try:
            return fn(runpod)
        except rp_error.AuthenticationError:
            raise BackendError("RunPod rejected the API key (401); check RUNPOD_API_KEY") from None
        except rp_error.QueryError as exc:
            message = exc.message or "no message"
            if any(m in message.lower() for m in ("internal", "timeout", "temporarily")):
                raise RetryableError(f"RunPod error: {message}") from None
            raise BackendError(f"RunPod refused the request: {message}") from None
        except requests.exceptions.JSONDecodeError:
            raise RetryableError("RunPod answered with a non-JSON page (a 5xx error)") from None
        except requests.exceptions.RequestException as exc:
            raise RetryableError(f"{type(exc).__name__}: {_first_line(exc)}") from None
        except (KeyError, TypeError, IndexError) as exc:
            raise RetryableError(f"unexpected answer shape ({type(exc).__name__}: {exc})") from None


def _price(info: dict[str, Any], cloud_type: str) -> float | None:
    """On-demand $/h for one GPU now; None when it cannot be rented in that cloud."""
    secure = info.get("securePrice") if info.get("secureCloud") else None
    community = info.get("communityPrice") if info.get("communityCloud") else None
    lowest = (info.get("lowestPrice") or {}).get("uninterruptablePrice")
    if cloud_type == "SECURE":
        return secure or None
    if cloud_type == "COMMUNITY":
        return community or None
    if lowest is None:  # RunPod reports no stock in any cloud
        return None
    prices = [p for p in (lowest, secure, community) if p]
    return min(prices) if prices else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:300]


def is_no_capacity(exc: BackendError) -> bool:
    """A create refused for lack of machines: worth trying the next GPU type."""
    return any(m in str(exc).lower() for m in NO_CAPACITY)
