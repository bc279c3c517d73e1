"""The worker process's plumbing, shared by every job kind (training, evaluation, enhancement).

`worker_session` wraps one job's body: train.log gets the log, spec.json the job's spec, and any
failure an `error` event (message + traceback) before it propagates, so the job manager can say why
a job failed however it failed. Under torchrun, rank 0 alone writes; every rank dies with the
launcher (`bind_rank_to_launcher`).

A write failure (a full disk, a read-only or failing one) is named for the user, with the free
space: "disk full at <run dir>: free 0.00 GB; free space or set FINETUNE_MCP_HOME to another disk".
The session keeps the run's 64 KiB space reserve while the body runs, so that error event fits on a
full disk (`RunDirectory.write_event` gives the reserve up for it).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import platform
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from pydantic import BaseModel

from finetune_mcp.errors import FinetuneError
from finetune_mcp.runs.disk import write_failure_message
from finetune_mcp.runs.rundir import RunDirectory

log = logging.getLogger("finetune_mcp.run")


@contextmanager
def worker_session(run: RunDirectory, spec: BaseModel, what: str) -> Iterator[RunDirectory]:
    """Log to the run's train.log, write its spec, and record a failure of the body as an error event."""
    run.create()
    handler = _log_to(run.log)
    reserve = run.space_reserve if is_main_process() else None
    try:
        if reserve is not None:
            reserve.ensure()
        if is_main_process():
            run.write_json(run.spec, spec.model_dump(mode="json"))
        yield run
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt | SystemExit):
            message = write_failure_message(exc, run.root) or str(exc) or type(exc).__name__
            try:  # the event first: on a full disk it is what the manager needs, the log may not fit
                run.write_event("error", message=message, error_type=type(exc).__name__, work=what,
                                traceback=traceback.format_exc(limit=20))
            except OSError as write_exc:
                with contextlib.suppress(OSError):
                    print(f"error: could not record the failure in {run.events}: {write_exc}", file=sys.stderr)
            log.exception("%s failed: %s", what, message)
        raise
    finally:
        if reserve is not None:
            reserve.release()
        logging.getLogger().removeHandler(handler)
        handler.close()


def spec_kind(spec_path: Path) -> str:
    """The job kind a spec.json names (`"kind": "enhance"` / `"evaluate"`); "train" for training
    specs, which have no kind, and for an unreadable file (the training loader then reports it)."""
    try:
        data = json.loads(spec_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "train"
    kind = data.get("kind", "train") if isinstance(data, dict) else "train"
    return kind if isinstance(kind, str) else "train"


def run_worker(spec_path: Path, load: Callable[[Path], BaseModel], body: Callable[[BaseModel, Path], object],
               what: str) -> int:
    """`finetune-mcp worker run SPEC` for any job kind: 0 on success, 1 on failure.

    A spec that does not load is recorded as an `error` event here; a failure of the body already is
    (by `worker_session`), so either way the job manager can say why the job failed."""
    try:
        spec = load(spec_path)
    except FinetuneError as exc:
        RunDirectory(spec_path.parent).write_event("error", message=str(exc), error_type=type(exc).__name__, work=what)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        body(spec, spec_path.parent)
    except Exception as exc:  # recorded as an error event by the body's worker_session
        with contextlib.suppress(OSError):  # stderr is train.log: on a full disk it cannot take more
            print(f"error: {write_failure_message(exc, spec_path.parent) or exc}", file=sys.stderr)
        return 1
    return 0


def is_main_process() -> bool:
    """Rank 0 of a torchrun / accelerate launch, or a plain single process."""
    return os.environ.get("RANK", "0") == "0"


def bind_rank_to_launcher() -> None:
    """Under torchrun, die with the launcher.

    torchrun starts each rank in a session of its own, so the job manager's signal to the worker's
    process group reaches torchrun only. On SIGTERM torchrun stops its ranks itself, but after a
    SIGKILL (cancel's escalation, a crash) they would train on as orphans holding GPU memory. Linux
    can kill a process when its parent dies (PR_SET_PDEATHSIG); each rank asks for that.
    """
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the launcher died before the request took effect
        os._exit(1)


@functools.cache
def library_versions() -> dict[str, str]:
    """Versions that decide a run's numerics, for result.json and the model card (read once per process:
    23 package metadata parses cost ~0.1 s, paid by every run of an experiment otherwise)."""
    versions = {"python": platform.python_version()}
    for name in ("finetune-mcp", "torch", "transformers", "trl", "peft", "datasets", "unsloth", "triton"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _log_to(path: Path) -> logging.Handler:
    """train.log gets rank 0's log; other ranks log to stderr (which the job manager also keeps)."""
    handler = logging.FileHandler(path, encoding="utf-8") if is_main_process() else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    return handler
