"""Where a job's worker runs: `base` (the Backend protocol every engine implements, and its poll
results), `local` (a worker process group on this machine) and `runpod/` (a worker on a RunPod pod,
or on every node of a RunPod Instant Cluster).

The launcher seam: the job manager and the tools reach engines only through this table and the
`Backend` protocol. A second engine (SkyPilot, HF Jobs, Modal) is one module with a `Backend` class
(and, if it rents machines, a `quote(placement, settings)` the consent step shows) plus one line
here; nothing in the manager changes. Modules are imported on first use, so an engine's SDK is not
loaded at server start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from finetune_mcp.errors import BackendError

if TYPE_CHECKING:
    from finetune_mcp.config import Settings
    from finetune_mcp.jobs.backends.base import Backend
    from finetune_mcp.jobs.placement import Placement

# name (Placement.backend) → (module, Backend class)
BACKENDS: dict[str, tuple[str, str]] = {
    "local": ("finetune_mcp.jobs.backends.local", "LocalBackend"),
    "runpod": ("finetune_mcp.jobs.backends.runpod.backend", "RunPodBackend"),
    "runpod_cluster": ("finetune_mcp.jobs.backends.runpod.cluster", "RunPodClusterBackend"),
}


def _module(name: str) -> Any:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; known: {', '.join(BACKENDS)}")
    module_name, _ = BACKENDS[name]
    try:
        return __import__(module_name, fromlist=["_"])
    except ModuleNotFoundError as exc:
        raise BackendError(f"the {name} backend is not available ({exc}); use target='local'") from None


def create_backend(name: str, settings: Settings) -> Backend:
    """A new instance of the backend called `name`."""
    return getattr(_module(name), BACKENDS[name][1])(settings)


def rents_machines(name: str) -> bool:
    """True for backends whose placement costs money once started (their module has `quote`)."""
    return name in BACKENDS and name != "local" and hasattr(_module(name), "quote")


def quote(placement: Placement, settings: Settings) -> Any:
    """What `placement` would rent and at what price, from its backend's `quote`; nothing is created."""
    module = _module(placement.backend)
    if not hasattr(module, "quote"):
        raise BackendError(f"the {placement.backend} backend rents nothing; there is no price to quote")
    return module.quote(placement, settings)
