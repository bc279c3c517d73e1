"""The export tests' runs: the session's two finished tiny runs (tests/standins/finished_runs.py); each
test exports a private copy, so the shared runs never gain an export/ or merged/ folder."""

from __future__ import annotations

import pytest

from standins.finished_runs import TinyRuns, tiny_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)
