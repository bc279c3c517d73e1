"""The local backend: each job is `finetune-mcp worker run SPEC` in its own process group.

Why a process per job: the worker owns its GPU memory (freed when it exits), can be killed as a
whole (SIGTERM to the group reaches dataloader children too), and a crash in CUDA or a tokenizer
cannot take the server down. `start_new_session=True` also detaches it from the server: a server
that stops or restarts leaves the worker training, and the next server re-attaches by pid.

A pid alone can be recycled, so the handle also stores the process start time from /proc; a
process with the same pid but a different start time is not our worker. Zombies (exited, not yet
reaped by whoever is their parent now) count as gone. Off Linux, without /proc, liveness falls back
to `kill(pid, 0)` and the start-time check is skipped.

The worker's stdout and stderr go to <run_dir>/train.log, never to the server's stdout (which is the
MCP channel on stdio). Its environment is an allow-list of the server's (`jobs.worker_env`) plus the
variables the manager hands over, never the server's whole environment.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from finetune_mcp.errors import BackendError
from finetune_mcp.jobs.backends.base import Handle, PollResult, SaveHandle
from finetune_mcp.jobs.multi_gpu import distributed_command
from finetune_mcp.jobs.placement import Placement, gpu_indices
from finetune_mcp.jobs.worker_env import worker_environment

if TYPE_CHECKING:
    from finetune_mcp.config import Settings
    from finetune_mcp.jobs.store import Job, JobState

_PROC = Path("/proc")


def worker_command() -> list[str]:
    """`python -m finetune_mcp.cli worker run` with this interpreter, so the worker sees the same
    packages as the server whether or not the `finetune-mcp` script is on PATH."""
    return [sys.executable, "-m", "finetune_mcp.cli", "worker", "run"]


class LocalBackend:
    """Runs workers as detached local process groups. `command` + [spec path] is what gets run."""

    name = "local"
    provisions = False
    stop_on_shutdown = False  # detached process groups: the next server re-attaches them

    def __init__(self, settings: Settings | None = None, *, command: Sequence[str] | None = None) -> None:
        self.command = list(command) if command is not None else worker_command()
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # workers this process spawned

    async def launch(self, job: Job, spec_path: Path, *, env: Mapping[str, str], save_handle: SaveHandle) -> Handle:
        run_dir = spec_path.parent
        processes = len(gpu_indices(Placement.from_json(job.placement))) if job.placement else 0
        command = distributed_command(self.command, processes)  # torchrun when the job owns several GPUs
        child_env = worker_environment(os.environ, env)
        try:
            with (run_dir / "train.log").open("ab") as log:
                proc = subprocess.Popen(
                    [*command, str(spec_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=run_dir,
                    env=child_env,
                    start_new_session=True,  # own session and process group: survives the server
                    close_fds=True,
                )
        except OSError as exc:
            raise BackendError(
                f"could not start the worker ({self.command[0]}): {exc.strerror}; check that the "
                "finetune-mcp package is installed in the server's Python environment"
            ) from None
        self._children[proc.pid] = proc
        handle = {
            "pid": proc.pid,
            "pgid": proc.pid,  # session leader: its pid is the group id
            "start_ticks": _start_ticks(proc.pid),
            "host": socket.gethostname(),
        }
        await save_handle(handle)
        return handle

    async def poll(self, handle: Handle) -> PollResult:
        pid = handle["pid"]
        child = self._children.get(pid)
        if child is not None:  # ours: reap it and learn the exit code
            code = child.poll()
            if code is None:
                return PollResult(alive=True)
            del self._children[pid]
            return PollResult(alive=False, exit_code=code, detail=_describe_exit(code))
        if _is_our_process(handle):
            return PollResult(alive=True)
        return PollResult(alive=False, detail="the worker process is gone")

    async def cancel(self, handle: Handle, grace_s: float) -> None:
        pgid = handle["pgid"]
        if not self._group_alive(handle):
            return
        _signal_group(pgid, signal.SIGTERM)
        with anyio.move_on_after(grace_s):
            while self._group_alive(handle):
                await anyio.sleep(0.05)
        if self._group_alive(handle):
            _signal_group(pgid, signal.SIGKILL)
            with anyio.move_on_after(10):
                while self._group_alive(handle):
                    await anyio.sleep(0.05)

    async def reattach(self, handle: Handle) -> bool:
        return handle.get("host") == socket.gethostname() and _is_our_process(handle)

    async def finalize(self, handle: Handle, state: JobState) -> float | None:
        # The worker is gone; children it left in its group (dataloader workers) must not linger.
        if self._group_alive(handle):
            _signal_group(handle["pgid"], signal.SIGKILL)
        child = self._children.pop(handle["pid"], None)
        if child is not None:
            child.poll()
        return None

    def public_info(self, handle: Handle) -> dict[str, Any]:
        return {"pid": handle.get("pid"), "pgid": handle.get("pgid")}

    def _group_alive(self, handle: Handle) -> bool:
        """True while our worker's group has live members. A group id can be reused once all its
        members are gone: if a process now holds the leader's pid with another start time, the
        group is a stranger's and is never signalled."""
        child = self._children.get(handle["pid"])
        if child is not None:
            child.poll()  # reap the leader if it exited, so it does not count as a zombie member
        if handle.get("host") not in (None, socket.gethostname()):
            return False
        leader = _read_stat(handle["pgid"])
        if leader is not None and handle.get("start_ticks") is not None and leader[2] != handle["start_ticks"]:
            return False
        return process_group_alive(handle["pgid"])


def process_group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in group `pgid`.

    Group ids are not recycled while a member lives, so this cannot hit a stranger's group.
    """
    if not _PROC.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None and stat[1] == pgid and stat[0] != "Z":
            return True
    return False


def _is_our_process(handle: Handle) -> bool:
    pid = handle["pid"]
    if not _PROC.is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    stat = _read_stat(pid)
    if stat is None or stat[0] == "Z":
        return False
    expected = handle.get("start_ticks")
    return expected is None or stat[2] == expected


def _read_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) from /proc/<pid>/stat."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[2]), int(fields[19])


def _start_ticks(pid: int) -> int | None:
    stat = _read_stat(pid)
    return stat[2] if stat else None


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        hint = " (out of memory? the kernel's OOM killer sends SIGKILL)" if -code == signal.SIGKILL else ""
        return f"the worker was killed by {name}{hint}"
    return f"the worker exited with code {code}"
