"""The pipeline's step clock counts the GPU's backlog: a launch-bound step returns before the GPU ran it."""

from __future__ import annotations

import pytest

from finetune_mcp.train.callbacks import PerfCallback


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_step_s_includes_what_the_gpu_still_had_queued_when_the_host_finished():
    clock = FakeClock()
    perf = PerfCallback(clock=clock, warmup_steps=2)
    for _ in range(10):  # the host launches a step in 0.01 s and moves on
        perf.on_step_begin(None, None, None)
        clock.now += 0.01
        perf.on_step_end(None, None, None)
    clock.now += 0.72  # training ends: the synchronisation waits for the queued steps
    perf.on_train_end(None, None, None)
    summary = perf.summary()
    assert summary["median_step_s"] == pytest.approx(0.01)  # the host's view
    assert summary["step_s"] == pytest.approx((0.08 + 0.72) / 8)  # 8 timed steps and the backlog: 0.1 s each
    assert summary["steps_timed"] == 8
    assert summary["steps_total_s"] == pytest.approx(0.10 + 0.72)


def test_a_run_shorter_than_the_warm_up_is_timed_whole():
    clock = FakeClock()
    perf = PerfCallback(clock=clock, warmup_steps=3)
    for _ in range(2):
        perf.on_step_begin(None, None, None)
        clock.now += 0.5
        perf.on_step_end(None, None, None)
    perf.on_train_end(None, None, None)
    summary = perf.summary()
    assert summary["step_s"] == pytest.approx(0.5) and summary["steps_timed"] == 2
