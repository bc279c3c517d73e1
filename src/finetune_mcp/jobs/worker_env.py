"""The environment a worker starts with: an allow-list of the server's variables, not the whole of it.

A worker runs user-chosen models, datasets and (for enhancement) requests to user-chosen URLs, so
it should hold only what its job needs. A deny-list ("everything but RUNPOD_API_KEY") leaks every
secret nobody thought of (`AWS_SECRET_ACCESS_KEY`, `OPENAI_API_KEY` in a training job, ...); here
a variable reaches the worker only when it is

- one the process and its libraries need to run (`BASE_NAMES`: PATH, HOME, locale, temp dirs,
  proxies and CA bundles), or in a namespace that configures them (`BASE_PREFIXES`: Python, CUDA,
  NCCL, Hugging Face caches and offline flags, torch, Triton, transformers/accelerate/PEFT/TRL,
  matplotlib, thread counts, finetune-mcp's own settings), and its name does not look like a secret (`looks_secret`: ..._TOKEN, ..._KEY,
  ...SECRET..., ...PASSWORD...), or
- handed over explicitly by the job manager (`extra`: FINETUNE_MCP_HOME, CUDA_VISIBLE_DEVICES,
  HF_TOKEN for Hub downloads, and the variables the job's placement names — an enhancement
  job's teacher key, already checked against its endpoint at start).

The local backend builds its child's environment with this, and so does the pod's worker server
for the child it starts (a pod's own environment holds RunPod's pod key).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

BASE_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP",
    "LD_LIBRARY_PATH", "LIBRARY_PATH", "CPATH", "CC", "CXX", "VIRTUAL_ENV", "CONDA_PREFIX", "CONDA_DEFAULT_ENV",
    "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "TOKENIZERS_PARALLELISM", "SAFETENSORS_FAST_GPU",
})
BASE_PREFIXES = (
    "LC_", "XDG_", "PYTHON", "CUDA_", "NCCL_", "NVIDIA_", "TORCH", "PYTORCH_", "TRITON_", "UNSLOTH_", "HF_",
    "TRANSFORMERS_", "ACCELERATE_", "PEFT_", "TRL_", "BNB_", "MPL", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "GLOO_",
    "COVERAGE_", "FINETUNE_MCP_",
)
_SECRET_WORDS = re.compile(r"(^|_)(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?|AUTH)(S?)(_|$)", re.IGNORECASE)
# Settings whose names contain a secret word but hold none (names and URLs of teacher keys).
NOT_SECRET = frozenset({"FINETUNE_MCP_TEACHER_KEYS"})


def looks_secret(name: str) -> bool:
    """True for names like HF_TOKEN, FINETUNE_MCP_WORKER_TOKEN, NCCL_SOCKET_KEY, DB_PASSWORD."""
    return name not in NOT_SECRET and bool(_SECRET_WORDS.search(name))


def is_base_variable(name: str) -> bool:
    """A variable every worker may inherit (see the module docstring)."""
    if looks_secret(name):
        return False
    return name in BASE_NAMES or name.startswith(BASE_PREFIXES)


def worker_environment(source: Mapping[str, str], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The worker's environment: the base variables of `source`, with `extra` (the manager's) on top."""
    env = {k: v for k, v in source.items() if is_base_variable(k)}
    env.update(extra or {})
    return env
