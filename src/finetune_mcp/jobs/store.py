"""The job table: states, allowed transitions and one SQLite file that every process agrees on.

The server, the CLI and a second server on the same `FINETUNE_MCP_HOME` all read and write
`jobs.db`. They never hold state the others cannot see: a state change is one `UPDATE ... WHERE
id = ? AND state = ?` inside a transaction, and a row count other than 1 means another process got
there first (`InvalidTransition`), so two writers cannot both move a job. WAL mode lets readers
(`get_job` while the supervisor writes progress) go on without waiting; the busy timeout makes
writers queue instead of failing.

The clock is injected (`clock() -> seconds since the epoch`) so tests step time instead of sleeping.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from finetune_mcp.errors import DamagedDatabaseError, HomeError, JobError

Clock = Callable[[], float]

JOB_ID_PATTERN = re.compile(r"ft-[0-9a-f]{12}")


def new_job_id() -> str:
    """A fresh id like `ft-3f9a0c1b2d4e`: short enough to type, random enough not to collide."""
    return f"ft-{secrets.token_hex(6)}"


def validate_job_id(job_id: str) -> str:
    """Return `job_id` if it has the `ft-<12 hex>` shape; anything else (`../x`, paths) is refused.

    Every entry point that turns an id into a path or a query calls this first.
    """
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise JobError(
            f"{job_id!r} is not a job id; ids look like 'ft-3f9a0c1b2d4e' (see list_jobs)", job_id=None
        )
    return job_id


class JobState(StrEnum):
    QUEUED = "queued"
    PROVISIONING = "provisioning"  # a backend is getting a machine (RunPod pod) before the worker starts
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES

    @property
    def active(self) -> bool:
        """Holds a slot: a worker (or a machine being provisioned for one) exists."""
        return self in ACTIVE_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.PROVISIONING, JobState.RUNNING})

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.PROVISIONING, JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.PROVISIONING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class InvalidTransition(JobError):
    """The job is not in a state that allows the change (often: another process changed it first)."""


# Columns besides id/state that callers may set; JSON columns are (de)serialised here.
_JSON_COLUMNS = frozenset({"config", "placement", "metrics", "handle"})
_UPDATABLE = frozenset(
    {
        "step", "total_steps", "epoch", "eta_s", "metrics", "error", "handle", "pid", "pgid",
        "cost_usd", "events_offset", "cancel_requested", "heartbeat_at", "started_at", "ended_at",
    }
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    target TEXT NOT NULL,            -- what was asked: auto | local | runpod
    backend TEXT NOT NULL,           -- where it runs: local | runpod
    device TEXT NOT NULL,            -- cpu | cuda
    slot TEXT NOT NULL,              -- queue slot: cpu, gpu:<i>, runpod
    placement TEXT NOT NULL,         -- Placement as JSON (reason, gpu index, ...)
    config TEXT NOT NULL,            -- EnhancedTrainingConfig as JSON, no secrets
    run_dir TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    updated_at REAL NOT NULL,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    epoch REAL,
    eta_s REAL,
    metrics TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    handle TEXT,                     -- the backend's handle as JSON (pid + start time, pod id, ...)
    pid INTEGER,
    pgid INTEGER,
    cost_usd REAL,
    events_offset INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created_at);
CREATE TABLE IF NOT EXISTS state_changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL REFERENCES jobs (id),
    from_state TEXT,
    to_state TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS state_changes_job ON state_changes (job_id, seq);
"""


@dataclass(frozen=True)
class Job:
    """One row of `jobs`, decoded. Immutable: a change returns a new `Job` from the store."""

    id: str
    state: JobState
    target: str
    backend: str
    device: str
    slot: str
    placement: dict[str, Any]
    config: dict[str, Any]
    run_dir: str
    created_at: float
    updated_at: float
    started_at: float | None = None
    ended_at: float | None = None
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    eta_s: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    handle: dict[str, Any] | None = None
    pid: int | None = None
    pgid: int | None = None
    cost_usd: float | None = None
    events_offset: int = 0
    cancel_requested: bool = False
    heartbeat_at: float | None = None

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        data = dict(row)
        for key in _JSON_COLUMNS:
            if data.get(key) is not None:
                data[key] = json.loads(data[key])
        data["state"] = JobState(data["state"])
        data["cancel_requested"] = bool(data["cancel_requested"])
        return cls(**data)


@dataclass(frozen=True)
class StateChange:
    job_id: str
    from_state: JobState | None
    to_state: JobState
    at: float
    reason: str | None


class JobStore:
    """SQLite-backed job table. Thread-safe within a process; safe across processes via SQLite locks."""

    def __init__(self, db_path: str | Path, *, clock: Clock = time.time, busy_timeout_s: float = 10.0) -> None:
        self.db_path = Path(db_path)
        self.clock = clock
        try:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a read-check-write is atomic.
            self._conn = sqlite3.connect(
                str(self.db_path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            self._conn.row_factory = sqlite3.Row
            self._lock = threading.Lock()  # one connection, shared by the event loop and tool threads
            with self._lock:
                self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
                self._conn.executescript(_SCHEMA)
                problem = self._conn.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":  # page damage: reads work until they reach it
                raise sqlite3.DatabaseError(f"quick_check: {problem}")
        except (OSError, sqlite3.OperationalError) as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _is_unwritable(exc):
                raise
            raise unwritable_home(self.db_path, exc) from exc
        except sqlite3.DatabaseError as exc:  # garbage, an overwritten header, a damaged page
            with contextlib.suppress(Exception):
                self._conn.close()
            raise damaged_database(self.db_path, exc) from exc

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- reads -----------------------------------------------------------------------------------

    def find(self, job_id: str) -> Job | None:
        validate_job_id(job_id)
        with self._lock:
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row) if row else None

    def get(self, job_id: str) -> Job:
        job = self.find(job_id)
        if job is None:
            raise JobError(f"no job {job_id}; list_jobs shows the known ids", job_id=job_id)
        return job

    def list(self, state: JobState | str | None = None, limit: int = 20) -> list[Job]:
        """Newest first."""
        sql, args = "SELECT * FROM jobs", []
        if state is not None:
            sql += " WHERE state = ?"
            args.append(JobState(state).value)
        sql += " ORDER BY created_at DESC, rowid DESC LIMIT ?"
        args.append(int(limit))
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [Job.from_row(r) for r in rows]

    def in_states(self, states: Iterable[JobState]) -> list[Job]:
        """Jobs in any of `states`, oldest first (queue order)."""
        states = [JobState(s).value for s in states]
        marks = ",".join("?" * len(states))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at, rowid", states
            ).fetchall()
        return [Job.from_row(r) for r in rows]

    def active_by_slot(self) -> dict[str, int]:
        """How many jobs hold each slot (provisioning or running)."""
        marks = ",".join("?" * len(ACTIVE_STATES))
        with self._lock:
            rows = self._conn.execute(
                f"SELECT slot, COUNT(*) FROM jobs WHERE state IN ({marks}) GROUP BY slot",
                [s.value for s in ACTIVE_STATES],
            ).fetchall()
        return {slot: count for slot, count in rows}

    def state_changes(self, job_id: str) -> list[StateChange]:
        validate_job_id(job_id)
        with self._lock:
            rows = self._conn.execute(
                "SELECT * FROM state_changes WHERE job_id = ? ORDER BY seq", (job_id,)
            ).fetchall()
        return [
            StateChange(
                r["job_id"], JobState(r["from_state"]) if r["from_state"] else None,
                JobState(r["to_state"]), r["at"], r["reason"],
            )
            for r in rows
        ]

    # -- writes ----------------------------------------------------------------------------------

    def insert(self, job: Job) -> Job:
        """Add a new job (state queued) and its first state change, in one transaction."""
        validate_job_id(job.id)
        if job.state is not JobState.QUEUED:
            raise InvalidTransition(f"a new job starts queued, not {job.state}", job_id=job.id)
        row = _encode(
            {k: getattr(job, k) for k in Job.__dataclass_fields__}  # every column
        )
        cols = ",".join(row)
        with self._lock, _transaction(self._conn, self.db_path):
            self._conn.execute(f"INSERT INTO jobs ({cols}) VALUES ({','.join('?' * len(row))})", list(row.values()))
            self._conn.execute(
                "INSERT INTO state_changes (job_id, from_state, to_state, at, reason) VALUES (?, NULL, ?, ?, ?)",
                (job.id, JobState.QUEUED.value, job.created_at, "submitted"),
            )
        return job

    def delete(self, job_id: str) -> None:
        """Remove a job that never started (used to undo a half-made start)."""
        validate_job_id(job_id)
        with self._lock, _transaction(self._conn, self.db_path):
            self._conn.execute("DELETE FROM state_changes WHERE job_id = ?", (job_id,))
            self._conn.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def transition(
        self,
        job_id: str,
        to: JobState,
        *,
        expected: Iterable[JobState] | JobState | None = None,
        reason: str | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to state `to` (and set `fields`) atomically, or raise `InvalidTransition`.

        `expected`: the states the caller believes the job is in; if it moved on meanwhile (another
        process cancelled it, the worker finished), nothing is written. Start and end times are set
        here, so every path records them the same way.
        """
        to = JobState(to)
        if isinstance(expected, JobState):
            expected = {expected}
        _check_fields(fields)
        now = self.clock()
        with self._lock, _transaction(self._conn, self.db_path):
            row = self._conn.execute("SELECT state, started_at FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobError(f"no job {job_id}; list_jobs shows the known ids", job_id=job_id)
            current = JobState(row["state"])
            if expected is not None and current not in set(expected):
                raise InvalidTransition(
                    f"job {job_id} is {current}, not {'/'.join(sorted(expected))}", job_id=job_id
                )
            if to not in ALLOWED_TRANSITIONS[current]:
                raise InvalidTransition(f"job {job_id} is {current} and cannot become {to}", job_id=job_id)
            updates = dict(fields, state=to, updated_at=now)
            if to is JobState.RUNNING and row["started_at"] is None:
                updates.setdefault("started_at", now)
            if to.terminal:
                updates.setdefault("ended_at", now)
                updates.setdefault("eta_s", None)
            encoded = _encode(updates)
            sets = ", ".join(f"{k} = ?" for k in encoded)
            cur = self._conn.execute(
                f"UPDATE jobs SET {sets} WHERE id = ? AND state = ?", [*encoded.values(), job_id, current.value]
            )
            if cur.rowcount != 1:  # cannot happen inside BEGIN IMMEDIATE; kept as the guard huey keeps
                raise InvalidTransition(f"job {job_id} changed while moving to {to}", job_id=job_id)
            self._conn.execute(
                "INSERT INTO state_changes (job_id, from_state, to_state, at, reason) VALUES (?, ?, ?, ?, ?)",
                (job_id, current.value, to.value, now, reason),
            )
            new = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(new)

    def update(self, job_id: str, *, only_in: Iterable[JobState] | None = None, **fields: Any) -> Job | None:
        """Set non-state fields (progress, handle, ...). With `only_in`, only while the job is in one
        of those states; returns None when it is not (e.g. progress arriving after the end)."""
        _check_fields(fields)
        encoded = _encode(dict(fields, updated_at=self.clock()))
        sets = ", ".join(f"{k} = ?" for k in encoded)
        sql, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*encoded.values(), job_id]
        if only_in is not None:
            states = [JobState(s).value for s in only_in]
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        with self._lock, _transaction(self._conn, self.db_path):
            cur = self._conn.execute(sql, args)
            if cur.rowcount != 1:
                return None
            row = self._conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.from_row(row)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, ROLLBACK on error: the write lock is taken before the read."""

    def __init__(self, conn: sqlite3.Connection, db_path: Path) -> None:
        self.conn, self.db_path = conn, db_path

    def __enter__(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if _is_unwritable(exc):
                raise unwritable_home(self.db_path, exc) from exc
            raise

    def __exit__(self, exc_type: object, exc: object, _tb: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
            return
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")
        if isinstance(exc, sqlite3.OperationalError) and _is_unwritable(exc):
            raise unwritable_home(self.db_path, exc) from exc


def _is_unwritable(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def damaged_database(path: Path, exc: BaseException) -> DamagedDatabaseError:
    """The plain message for a jobs.db SQLite cannot read: what happened and what to do."""
    return DamagedDatabaseError(
        f"the job database {path} is damaged ({str(exc)[:120]}); move it aside (mv {path} {path}.damaged) and "
        "restart the server: the run directories are kept, and the job list is rebuilt from them")


def unwritable_home(path: Path, exc: BaseException, what: str = "the job database", home: Path | None = None
                    ) -> HomeError:
    """The plain message for a job database or run folder in the home this process may not write."""
    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split(": ", 1)[-1]
    home = home or path.parent
    return HomeError(
        f"cannot write {what} {path} ({detail}): the server's user needs write access to {home} and the files in "
        f"it; check the permissions (ls -ld {home} {path}) and fix them (chown / chmod), or set FINETUNE_MCP_HOME "
        "to a writable folder and restart the server"
    )


def _check_fields(fields: dict[str, Any]) -> None:
    unknown = set(fields) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable job fields: {sorted(unknown)}")


def _encode(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key in _JSON_COLUMNS and value is not None:
            value = json.dumps(value)
        elif isinstance(value, JobState):
            value = value.value
        elif isinstance(value, bool):
            value = int(value)
        out[key] = value
    return out
