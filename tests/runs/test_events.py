"""The events reader and writer (runs/rundir.py): torn lines, forged steps, unknown types, a full disk."""

from __future__ import annotations

import errno
import json
import logging
from pathlib import Path

import pytest

from finetune_mcp.runs.rundir import RunDirectory


def write_lines(run: RunDirectory, *lines: str | dict) -> None:
    run.create()
    with run.events.open("a", encoding="utf-8") as fh:
        for line in lines:
            fh.write((json.dumps(line) if isinstance(line, dict) else line) + "\n")


def progress(step: int, total: int = 10, **extra: object) -> dict:
    return {"type": "progress", "step": step, "total_steps": total, **extra}


def test_a_forged_step_past_the_total_is_ignored_with_a_warning(tmp_path: Path, caplog) -> None:
    run = RunDirectory(tmp_path)
    write_lines(run, {"type": "start", "step": 0, "total_steps": 10}, progress(9),
                {"type": "progress", "step": 999_999}, progress(10),
                {"type": "end", "status": "succeeded", "step": 10, "total_steps": 10})
    with caplog.at_level(logging.WARNING):
        events, _ = run.read_events()
    assert [e.get("step") for e in events] == [0, 9, 10, 10]
    assert "step 999999 exceeds total_steps 10" in caplog.text


def test_steps_never_go_backwards_and_the_total_does_not_move(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    write_lines(run, progress(5), progress(3), progress(6, total=1_000_000), progress(6),
                {"type": "progress", "step": "7", "total_steps": 10}, {"type": "progress", "step": True},
                {"type": "eval", "step": 0, "metrics": {}},  # an evaluation logs its summary at step 0: fine
                {"type": "epoch_end", "step": 2, "epoch": 1.0})
    events, _ = run.read_events()
    assert [(e["type"], e["step"]) for e in events] == [("progress", 5), ("progress", 6), ("eval", 0)]


def test_a_reader_that_continues_passes_what_it_applied(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    write_lines(run, progress(4))
    first, offset = run.read_events()
    write_lines(run, progress(2), progress(11), progress(5))
    later, _ = run.read_events(offset, after_step=4, total_steps=10)
    assert [e["step"] for e in first] == [4] and [e["step"] for e in later] == [5]


def test_unknown_types_and_non_objects_are_ignored(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    write_lines(run, {"type": "rm -rf", "step": 1}, "[1, 2]", '"text"', {"no": "type"}, progress(1))
    assert [e["type"] for e in run.read_events()[0]] == ["progress"]


def test_end_and_error_always_count(tmp_path: Path) -> None:
    """How a run ended is never lost for its numbers (the manager's own end carries the row's step)."""
    run = RunDirectory(tmp_path)
    write_lines(run, progress(8), {"type": "error", "message": "boom", "step": 3},
                {"type": "end", "status": "failed", "step": 99, "total_steps": 10})
    assert [e["type"] for e in run.read_events()[0]] == ["progress", "error", "end"]


def test_a_damaged_line_costs_only_itself(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path)
    write_lines(run, progress(1), "{not json", "Traceback: a stray print", progress(2))
    assert [e["step"] for e in run.read_events()[0]] == [1, 2]


def test_a_torn_line_does_not_swallow_the_next_event(tmp_path: Path) -> None:
    """A worker killed mid-write leaves a fragment without its newline; whoever writes next (the
    manager's `end`) used to land on the same line, and the whole line, the end included, was
    skipped as damaged. The reader now finds the event after the fragment."""
    run = RunDirectory(tmp_path)
    write_lines(run, progress(1))
    with run.events.open("a") as fh:
        fh.write('{"type": "progress", "step": 2, "metrics": {"train/lo')  # torn: no newline
        fh.write(json.dumps({"type": "end", "status": "cancelled", "step": 1}) + "\n")  # an old writer
    events, offset = run.read_events()
    assert [(e["type"], e.get("status")) for e in events] == [("progress", None), ("end", "cancelled")]
    assert offset == run.events.stat().st_size


def test_write_event_starts_a_new_line_after_a_torn_one(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path).create()
    run.write_event("progress", step=1, total_steps=3)
    with run.events.open("a") as fh:
        fh.write('{"type": "progress", "st')
    run.write_event("end", status="failed", step=1)
    lines = run.events.read_text().splitlines()
    assert lines[1] == '{"type": "progress", "st'  # the fragment stays alone on its line
    assert [e["type"] for e in run.read_events()[0]] == ["progress", "end"]


def test_a_partial_last_line_waits_for_the_next_read(tmp_path: Path) -> None:
    run = RunDirectory(tmp_path).create()
    run.write_event("progress", step=1, total_steps=3)
    with run.events.open("a") as fh:
        fh.write('{"type": "progress", "step": 2')
    events, offset = run.read_events()
    with run.events.open("a") as fh:
        fh.write(', "total_steps": 3}\n')
    more, _ = run.read_events(offset, after_step=1, total_steps=3)
    assert [e["step"] for e in events] == [1] and [e["step"] for e in more] == [2]


def test_on_a_full_disk_the_reserve_makes_room_for_the_last_event(tmp_path: Path, monkeypatch) -> None:
    run = RunDirectory(tmp_path).create()
    assert run.space_reserve.ensure() and (tmp_path / ".space-reserve").stat().st_size == 64 * 1024
    real_append, calls = RunDirectory._append, []

    def append(self, line: bytes) -> None:  # the disk is full until the reserve goes
        calls.append(line)
        if (self.root / ".space-reserve").exists():
            raise OSError(errno.ENOSPC, "No space left on device")
        real_append(self, line)

    monkeypatch.setattr(RunDirectory, "_append", append)
    run.write_event("error", message="disk full")
    assert len(calls) == 2 and not (tmp_path / ".space-reserve").exists()
    assert run.read_events()[0][0]["message"] == "disk full"
    with pytest.raises(OSError):  # no reserve left: the error is the caller's
        monkeypatch.setattr(RunDirectory, "_append", lambda self, line: (_ for _ in ()).throw(
            OSError(errno.ENOSPC, "No space left on device")))
        run.write_event("error", message="again")
