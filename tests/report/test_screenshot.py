"""TensorBoard screenshots: a real `tensorboard` process over real event files, real headless Chromium.

One TensorBoard server for the module, as the MCP server shares one; each test captures through it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from finetune_mcp.report.screenshot import ChromiumMissingError, find_chromium, take_screenshot
from finetune_mcp.report.tensorboard_server import TensorBoardError, TensorBoardServer
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory
from standins.finished_runs import TinyRuns, copy_run, tiny_runs

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="needs Debian chromium (make browser)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> TinyRuns:
    return tiny_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def server():
    with TensorBoardServer() as tb:
        yield tb


def _assert_is_a_drawn_page(path: Path, min_size: tuple[int, int] = (1200, 400)) -> np.ndarray:
    image = Image.open(path)
    assert image.format == "PNG"
    assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    assert pixels.std() > 20  # not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # text, chart lines, anti-aliasing
    return pixels


@needs_chromium
def test_scalars_page_of_a_run_shows_the_default_tags_drawn(runs: TinyRuns, server: TensorBoardServer) -> None:
    run = runs.weighted
    shot = take_screenshot([run], server=server)

    assert shot.renderer == "tensorboard" and shot.path.parent == run.root / "screenshots"
    assert shot.tags == list(M.DEFAULT_SCREENSHOT_TAGS)
    pixels = _assert_is_a_drawn_page(shot.path)
    # TensorBoard's orange header bar is at the top: this is its page, not an error page
    top = pixels[5:40, 5:200].mean(axis=(0, 1))
    assert top[0] > 200 and 90 < top[1] < 180 and top[2] < 60
    page = json.loads(shot.path.with_suffix(".json").read_text())["page"]
    assert sorted(page["tags"]) == sorted(M.DEFAULT_SCREENSHOT_TAGS)  # one drawn card per tag
    assert "TIME SERIES" in page["text"] and run.root.name in page["text"]
    assert shot.url is not None and shot.url.startswith(server.url)


@needs_chromium
def test_compare_two_runs_and_the_histogram_view(runs: TinyRuns, server: TensorBoardServer) -> None:
    url_before = server.start()
    shot = take_screenshot([runs.weighted, runs.plain], server=server, tags=[M.CE_LOSS, M.ENTROPY_MEAN])
    assert shot.runs == [runs.weighted.root.name, runs.plain.root.name]
    assert shot.path.name.endswith(f"-vs-{runs.plain.root.name}.png")
    page = json.loads(shot.path.with_suffix(".json").read_text())["page"]
    assert sorted(page["tags"]) == sorted([M.CE_LOSS, M.ENTROPY_MEAN])
    assert {runs.weighted.root.name, runs.plain.root.name} <= set(page["runs"])  # both in every chart's table
    _assert_is_a_drawn_page(shot.path)

    hist = take_screenshot([runs.weighted, runs.plain], server=server, view="histograms")
    assert hist.tags == [M.ENTROPY_HISTOGRAM] and hist.view == "histograms"
    page = json.loads(hist.path.with_suffix(".json").read_text())["page"]
    assert page["tags"] == [M.ENTROPY_HISTOGRAM]
    _assert_is_a_drawn_page(hist.path)
    assert server.url == url_before  # one server, reused


@needs_chromium
def test_unknown_tags_and_runs_without_events_are_refused(runs: TinyRuns, server: TensorBoardServer,
                                                          tmp_path: Path) -> None:
    with pytest.raises(TensorBoardError, match=r"unknown scalars tag\(s\) train/nope.*train/loss"):
        take_screenshot([runs.weighted], server=server, tags=["train/nope"])
    empty = RunDirectory(tmp_path / "ft-000000000000").create()
    with pytest.raises(TensorBoardError, match="no TensorBoard event files yet"):
        take_screenshot([empty], server=server)


def test_without_chromium_it_says_how_to_install_or_draws_with_matplotlib(
    runs: TinyRuns, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINETUNE_MCP_CHROMIUM", str(tmp_path / "no-such-chromium"))
    run = copy_run(runs.weighted, tmp_path)
    with pytest.raises(ChromiumMissingError, match="apt-get install chromium"):
        take_screenshot([run], server=None)
    shot = take_screenshot([run, runs.plain], server=None, fallback=True)
    assert shot.renderer == "matplotlib" and shot.url is None
    assert shot.tags == list(M.DEFAULT_SCREENSHOT_TAGS) and len(shot.runs) == 2
    _assert_is_a_drawn_page(shot.path, min_size=(1000, 600))


def test_server_stops_and_restarts_with_its_runs(runs: TinyRuns) -> None:
    server = TensorBoardServer()
    name = server.add_run(runs.weighted.root.name, runs.weighted.tensorboard)
    url = server.start()
    assert server.wait_for_tags([name], "scalars")[name]
    server.stop()
    assert not server.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "data/environment", timeout=2)
    server.start()  # a fresh process, same runs
    try:
        assert M.LOSS in server.wait_for_tags([name], "scalars")[name]
    finally:
        server.stop()


def test_tensorboard_ends_when_its_owner_is_killed_hard(tmp_path: Path) -> None:
    """A SIGKILLed MCP server runs no shutdown; the TensorBoard it started must not outlive it."""
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\n"
         "from finetune_mcp.report.tensorboard_server import TensorBoardServer\n"
         "tb = TensorBoardServer(); print(tb.start(), tb._proc.pid, flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    url, pid = owner.stdout.readline().split()
    urllib.request.urlopen(url + "data/environment", timeout=5).close()
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(int(pid)):
        time.sleep(0.2)
    assert not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@needs_chromium
def test_a_run_compared_with_itself_is_shown_once(runs: TinyRuns, server: TensorBoardServer) -> None:
    """Was: each chart waited for a second data-table row of the same run, 60 s, then failed."""
    run = runs.weighted
    again = RunDirectory(run.root / ".." / run.root.name)  # the same folder, spelled differently
    started = time.monotonic()
    shot = take_screenshot([run, again, run], server=server, tags=[M.CE_LOSS])
    seconds = time.monotonic() - started
    assert shot.runs == [run.root.name] and shot.tags == [M.CE_LOSS]
    assert seconds < 30, seconds
    print(f"compare_with itself: {seconds:.1f} s")
