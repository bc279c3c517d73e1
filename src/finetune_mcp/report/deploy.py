"""Publish a finished run to the Hugging Face Hub, only when someone asks: `deploy_run(run, repo_id)`.

What lands, in ONE commit (`HfApi.create_commit`): the LoRA adapter (or, with `merge=True`, a merged
16-bit model), the model card with its plots, and the run's metrics (`training/result.json`,
`training/events.jsonl`). Large files are uploaded (LFS/Xet) before the commit, and the commit is
what makes anything visible: a failure at any step leaves the repo as it was, and the error says so.

The token comes from the argument, `HF_TOKEN`, or a `hf auth login`; it is handed to `HfApi` and
never written, logged or returned. Every error message is passed through `_redact` as a last guard.
The Hub address is `HF_ENDPOINT` read at call time (tests point it at a local stand-in).

The merge runs in a child process (`python -m finetune_mcp.report.deploy merge RUN_DIR`) so that
the MCP server never imports torch and a crash or out-of-memory in the merge cannot take it down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune_mcp.errors import DeployError
from finetune_mcp.report.card import write_model_card
from finetune_mcp.runs.artifacts import RunArtifacts
from finetune_mcp.runs.facts import RunFacts
from finetune_mcp.runs.rundir import RunDirectory

DEFAULT_ENDPOINT = "https://huggingface.co"
MERGE_TIMEOUT_S = 3600
_SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "RUNPOD_API_KEY")


@dataclass
class DeployResult:
    repo_id: str
    url: str
    commit_oid: str
    commit_url: str
    private: bool | None
    merged: bool
    files: list[str]
    bytes_uploaded: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_token(token: str | None) -> str:
    """The token to use: the argument, else HF_TOKEN, else the one saved by `hf auth login`."""
    if token:
        return token
    from huggingface_hub import get_token

    found = os.environ.get("HF_TOKEN") or get_token()
    if not found:
        raise DeployError("no Hugging Face token: set HF_TOKEN to a token with write access "
                          "(https://huggingface.co/settings/tokens), run `hf auth login`, or pass token=")
    return found


def validate_repo_id(repo_id: str) -> str:
    """`owner/name` (or a bare `name`, resolved to the token's user) in the Hub's allowed characters."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id as hub_validate

    try:
        hub_validate(repo_id)
    except HFValidationError as exc:
        raise DeployError(f"invalid repo id {repo_id!r}: {exc}; use 'your-name/model-name' "
                          "(letters, digits, '-', '_', '.'; at most 96 characters)") from None
    return repo_id


@dataclass
class DeployPlan:
    """What a deploy would upload, worked out before anything leaves the machine: what the user is
    asked to agree to (`deploy_to_hf` asks first; see `tools.consent`). Every file is listed with its
    size, and `include_gguf` is part of the terms: an answer binds exactly this upload."""

    repo_id: str
    private: bool
    merge: bool
    include_gguf: bool
    files: list[dict[str, Any]]  # {"path": in the repo, "bytes": size or None (made during the deploy)}
    weights_bytes: int | None  # None with merge=True: the merged model does not exist yet

    def summary(self) -> str:
        owner = self.repo_id if "/" in self.repo_id else f"{self.repo_id} (under the token's account)"
        visibility = ("private (a new repo is created private; an existing repo keeps its visibility)" if self.private
                      else "PUBLIC: anyone can download it (an existing repo keeps its visibility)")
        size = ("the MERGED WEIGHTS (the base model with the adapter merged in, 16-bit), made first (several GB for "
                "billion-parameter models)" if self.merge
                else f"the LoRA adapter, {(self.weights_bytes or 0) / 1e6:.1f} MB")
        gguf = [f["path"] for f in self.files if f["path"].endswith(".gguf")]
        extra = (f", and GGUF file(s) holding the MERGED WEIGHTS (the full base model with the adapter merged in) "
                 f"with their Ollama Modelfiles ({', '.join(gguf)})" if gguf else "")
        listed = ", ".join(f"{f['path']} ({_size(f['bytes'])})" for f in self.files)
        return (f"Upload to the Hugging Face Hub repo {owner}, {visibility}: {size}{extra}, the model card with its "
                f"plots and the training metrics, in one commit. Files: {listed}.")

    def terms(self) -> dict[str, Any]:
        return {"repo_id": self.repo_id, "private": self.private, "merge": self.merge,
                "include_gguf": self.include_gguf, "files": self.files, "weights_bytes": self.weights_bytes}


def _size(n: int | None) -> str:
    return "made during the deploy" if n is None else f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n:,} bytes"


def export_files(run: RunDirectory) -> list[tuple[str, Path]]:
    """(name in the repo, local file) for each GGUF and Modelfile of export/exports.json. The record
    is only a list of names: each must resolve to a regular file (no link) directly in the run's
    export/, or the deploy stops (a forged record named /etc/hostname and files outside the roots)."""
    folder = run.export.resolve()
    files = []
    for entry in run.read_exports():
        for key in ("gguf", "modelfile"):
            named = Path(str(entry.get(key)))
            local = folder / named.name
            if named.is_symlink() or local.is_symlink() or named.resolve() != local or not local.is_file():
                raise DeployError(f"{run.exports_record} names {str(named)[:200]!r} as a {key}, which is not a regular "
                                  f"file in {folder}; nothing was uploaded. Delete that record (or the export/ "
                                  f"folder) and run export_model(job_id='{run.root.name}') again")
            files.append((local.name, local))
    return files


def plan_deploy(run: RunDirectory, repo_id: str, *, token: str | None = None, private: bool = True,
                merge: bool = False, include_gguf: bool = False) -> DeployPlan:
    """Every check `deploy_run` makes before the network (repo id, a succeeded run, a token, not
    offline, weights to upload, the GGUF exports), and the list of what it would upload. Writes nothing."""
    from huggingface_hub.constants import is_offline_mode

    validate_repo_id(repo_id)
    RunFacts.load(run)
    exports = _exports_to_include(run) if include_gguf else []
    resolve_token(token)
    if is_offline_mode():
        raise DeployError("HF_HUB_OFFLINE is set, so the Hugging Face client makes no network calls; unset "
                          "HF_HUB_OFFLINE in the environment of the server (or CLI) that deploys")
    if merge:
        weights: list[tuple[str, Path | None]] = [("config.json, model*.safetensors, tokenizer files", None)]
        size = None
    else:
        adapter = [p for p in sorted(run.adapter.iterdir()) if p.is_file() and p.name != "README.md"] \
            if run.adapter.is_dir() else []
        if not adapter:
            raise DeployError(f"{run.adapter} is empty; the run saved no weights to upload; retrain or check its "
                              "train.log")
        weights, size = [(p.name, p) for p in adapter], sum(p.stat().st_size for p in adapter)
    metrics: list[tuple[str, Path | None]] = [(f"training/{p.name}", p) for p in (run.result, run.events)
                                              if p.is_file()]
    if (run.entropy / "eval.json").is_file():
        metrics.append(("training/entropy_eval.json", run.entropy / "eval.json"))
    listed = [*weights, ("README.md", None), ("plots/*.png", None), *metrics, *exports]
    files = [{"path": name, "bytes": path.stat().st_size if path is not None else None} for name, path in listed]
    return DeployPlan(repo_id, private, merge, include_gguf, files, size)


def _exports_to_include(run: RunDirectory) -> list[tuple[str, Path]]:
    exports = export_files(run)
    if not exports:
        raise DeployError(f"{run.root.name} has no GGUF export to include; run export_model(job_id="
                          f"'{run.root.name}', quantization='q8_0') (CLI: finetune-mcp export {run.root.name}) "
                          "first, or deploy without include_gguf")
    return exports


def deploy_run(
    run: RunDirectory,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = True,
    merge: bool = False,
    compare_with: RunDirectory | None = None,
    include_gguf: bool = False,
) -> DeployResult:
    """Upload a succeeded run to `repo_id` (created if needed, private by default) in one commit;
    `include_gguf`: with the run's verified GGUF exports and their Modelfiles (export_model)."""
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    validate_repo_id(repo_id)
    RunFacts.load(run)  # refuses a run that has not succeeded, before anything touches the network
    exports = _exports_to_include(run) if include_gguf else []
    secret = resolve_token(token)
    if is_offline_mode():
        raise DeployError("HF_HUB_OFFLINE is set, so the Hugging Face client makes no network calls; unset "
                          "HF_HUB_OFFLINE in the environment of the server (or CLI) that deploys")
    endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    api = HfApi(endpoint=endpoint, token=secret)
    created = False
    quiet = not are_progress_bars_disabled()
    if quiet:  # progress bars would land on the MCP server's stderr, one line per file
        disable_progress_bars()
    try:
        user = _call(api.whoami, secret, endpoint, repo_id)["name"]
        if "/" not in repo_id:
            repo_id = f"{user}/{repo_id}"
        write_model_card(run, compare_with, repo_id=repo_id, with_gguf=include_gguf)
        weights = merge_in_subprocess(run) if merge else run.adapter
        files = _files_to_upload(run, weights) + exports
        if not _call(lambda: api.repo_exists(repo_id), secret, endpoint, repo_id):
            _call(lambda: api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model"), secret,
                  endpoint, repo_id)
            created = True
        operations = [CommitOperationAdd(path_in_repo=dest, path_or_fileobj=str(src)) for dest, src in files]
        commit = _call(lambda: api.create_commit(
            repo_id, operations, commit_message=f"Upload {run.root.name} (finetune-mcp)",
            commit_description=f"{'Merged 16-bit model' if merge else 'LoRA adapter'}, "
                               f"{'GGUF file(s) with Ollama Modelfiles, ' if exports else ''}model card and "
                               f"metrics of run {run.root.name}."), secret, endpoint, repo_id, created=created)
        visible = _call(lambda: api.model_info(repo_id), secret, endpoint, repo_id, committed=commit.oid)
    except DeployError:
        raise
    except Exception as exc:  # the Hub client's own errors (validation, malformed answers)
        raise DeployError(_redact(f"upload to {repo_id} failed: {exc}; nothing was committed", secret)) from None
    finally:
        if quiet:
            enable_progress_bars()
    result = DeployResult(
        repo_id=repo_id, url=f"{endpoint.rstrip('/')}/{repo_id}", commit_oid=commit.oid,
        commit_url=commit.commit_url, private=visible.private, merged=merge, files=[d for d, _ in files],
        bytes_uploaded=sum(src.stat().st_size for _, src in files),
    )
    _record(run, result)
    return result


def _files_to_upload(run: RunDirectory, weights: Path) -> list[tuple[str, Path]]:
    """(path in repo, local file): weights at the root, README.md + plots/, training/ metrics."""
    if not weights.is_dir() or not any(weights.iterdir()):
        raise DeployError(f"{weights} is empty; the run saved no weights to upload; retrain or check its train.log")
    files = [(p.name, p) for p in sorted(weights.iterdir()) if p.is_file() and p.name != "README.md"]
    files.append(("README.md", run.card / "README.md"))
    files += [(f"plots/{p.name}", p) for p in sorted((run.card / "plots").glob("*.png"))]
    files += [(f"training/{p.name}", p) for p in (run.result, run.events) if p.is_file()]
    eval_entropy = run.entropy / "eval.json"
    if eval_entropy.is_file():
        files.append(("training/entropy_eval.json", eval_entropy))
    return files


def _call(fn, secret: str, endpoint: str, repo_id: str, *, created: bool = False, committed: str | None = None):
    """Run one Hub call; turn its failure into a DeployError that says what happened and what to do."""
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    after = (f"the commit {committed[:12]} landed, but reading it back failed" if committed
             else "the repo was created but nothing was committed" if created else "nothing was committed")
    try:
        return fn()
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        server = exc.server_message or str(exc).splitlines()[0]
        if status == 401:
            message = (f"the Hub refused the token (401: {server}); it is invalid or expired; create a token with "
                       "write access at https://huggingface.co/settings/tokens and set HF_TOKEN")
        elif status == 403:
            message = (f"the token may not write to {repo_id} (403: {server}); the repo belongs to another user or "
                       "organisation, or the token is read-only; choose a repo under your own namespace or use a "
                       f"token with write access to it; {after}")
        elif status == 404:
            message = f"{repo_id} was not found or is not visible to this token (404: {server}); {after}"
        elif status is not None and status >= 500:
            message = f"the Hub failed with {status} ({server}); {after}; retry in a few minutes"
        else:
            message = f"the Hub answered {status} ({server}); {after}"
        raise DeployError(_redact(message, secret)) from None
    except httpx.TransportError as exc:
        raise DeployError(_redact(f"cannot reach the Hub at {endpoint} ({type(exc).__name__}: {exc}); {after}; "
                                  "check the network connection and HF_ENDPOINT", secret)) from None


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _record(run: RunDirectory, result: DeployResult) -> None:
    """Append the deployment to run_dir/deployments.json (no token in it)."""
    path = run.root / "deployments.json"
    history = run.read_json(path) if path.is_file() else []
    history.append({**result.to_dict(), "time": time.time()})
    run.write_json(path, history)


def merge_in_subprocess(run: RunDirectory, checkpoint: int | None = None) -> Path:
    """The adapter (or the checkpoint at step `checkpoint`) merged into its base, saved in 16 bits in
    `RunArtifacts.merged_folder` (merged/, or merged-step<N>/). One already in 16 bits (an earlier
    deploy or export) is reused; one in another dtype (`save_merged` of an fp32 base) is redone."""
    folder = RunArtifacts(run).merged_folder(checkpoint)
    config = folder / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("dtype") in ("bfloat16", "float16"):
        return folder
    env = {k: v for k, v in os.environ.items() if k not in _SECRET_ENV}
    command = [sys.executable, "-m", "finetune_mcp.report.deploy", "merge", str(run.root)]
    proc = subprocess.run(command + ([str(checkpoint)] if checkpoint is not None else []),
                          capture_output=True, text=True, env=env, timeout=MERGE_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-8:])
        raise DeployError(f"merging the adapter into its base model failed (exit {proc.returncode}):\n{tail}\n"
                          "deploy without merge=True to upload the adapter alone, or fix the cause above")
    return folder


def merge_adapter(run: RunDirectory, checkpoint: int | None = None) -> Path:
    """Merge in this process, loaded by the project's loader for a merge (`model.plan`): Unsloth's merged
    16-bit save for Unsloth runs on CUDA, PEFT `merge_and_unload` otherwise (merged in fp32, saved in
    bf16 unless the base is fp16)."""
    from finetune_mcp.model.loading import load_model
    from finetune_mcp.model.plan import LoadRequest, plan_load

    artifacts = RunArtifacts(run)
    adapter, folder = artifacts.adapter(checkpoint), artifacts.merged_folder(checkpoint)
    spec, result = run.read_json(run.spec), run.read_json(run.result)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    request = LoadRequest(str(result.get("backend", "hf")), bool(spec.get("load_in_4bit")),
                          int(spec.get("max_seq_length", 2048)))
    loaded = load_model(spec["model"], plan_load(request, "merge"), adapters={"default": str(adapter)},
                        tokenizer=str(adapter))
    if loaded.backend == "unsloth":
        loaded.model.save_pretrained_merged(str(tmp), loaded.tokenizer, save_method="merged_16bit")
        # Unsloth merges into the base checkpoint's own dtype: an fp32 base (seen on an H100 with
        # the tiny test model) comes out fp32, so cast what is still 32-bit.
        _cast_floats(tmp, _target_dtype(spec["model"]))
    else:
        loaded.model.merge_and_unload().to(_target_dtype(spec["model"])).save_pretrained(str(tmp))
        loaded.tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)
    return folder


def _target_dtype(base_model: str):
    """fp16 when the base model is fp16, else bf16."""
    import torch
    from transformers import AutoConfig

    base_dtype = getattr(AutoConfig.from_pretrained(base_model), "dtype", None)
    return torch.float16 if base_dtype in (torch.float16, "float16") else torch.bfloat16


def _cast_floats(folder: Path, dtype) -> None:
    """Rewrite each safetensors shard with its fp32 tensors cast to `dtype`; set config.json's dtype."""
    import torch
    from safetensors.torch import load_file, save_file

    for shard in folder.glob("*.safetensors"):
        tensors = load_file(str(shard))
        if any(t.dtype == torch.float32 for t in tensors.values()):
            save_file({k: t.to(dtype) if t.dtype == torch.float32 else t for k, t in tensors.items()}, str(shard),
                      metadata={"format": "pt"})
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    config["dtype"] = str(dtype).removeprefix("torch.")
    config_path.write_text(json.dumps(config, indent=2))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "merge":
        sys.exit("usage: python -m finetune_mcp.report.deploy merge RUN_DIR [CHECKPOINT_STEP]")
    print(merge_adapter(RunDirectory(Path(sys.argv[2])), int(sys.argv[3]) if len(sys.argv) == 4 else None))
