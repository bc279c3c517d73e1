"""Screenshots of the real TensorBoard page for a run (or several, to compare), taken by headless Chromium.

The page is TensorBoard's Time Series dashboard, filtered by URL query parameters that its
frontend reads (TensorBoard 2.21 `index.js`: `tagFilter` and `runFilter`, regexes; the view is
the `#timeseries` hash). It draws scalar cards (line charts in a canvas) and histogram cards (SVG).
Cards outside the viewport are not rendered, so the viewport is grown to the page's scroll height
before the capture. "Drawn" means: the expected number of cards, no loading spinner, every scalar
card with its data-table rows and every histogram card with its SVG paths.

Chromium is Debian's (`apt-get install chromium`), driven by Playwright with `executable_path`;
Playwright never downloads a browser here. The flags keep a browser on a machine without network
from trying to reach one. When Chromium is missing, `take_screenshot(fallback=True)` renders the
same scalars from the event files with matplotlib and says so in `renderer`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from finetune_mcp.errors import FinetuneError
from finetune_mcp.report.tensorboard_server import TensorBoardError, TensorBoardServer
from finetune_mcp.runs import metric_names as M
from finetune_mcp.runs.rundir import RunDirectory

View = Literal["scalars", "histograms"]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]
DEFAULT_HISTOGRAM_TAGS = (M.ENTROPY_HISTOGRAM, M.WEIGHT_HISTOGRAM)
_VIEWPORT_WIDTH = 1920
_COLUMNS, _CARD_HEIGHT = 3, 460  # cards per row at this width (min card width 480) and a card's height
_MAX_HEIGHT = 8000

# Runs in the page; True once every card the filters select has drawn: `expected` cards, and in each
# scalar card one data-table row per run that logged its tag (`rows`: tag -> runs), which appears
# only when that run's series has arrived.
_DRAWN_JS = """
({kind, expected, rows}) => {
  if (document.querySelector('metrics-dashboard mat-spinner, card-view mat-spinner')) return false;
  const cards = [...document.querySelectorAll(kind === 'scalars' ? 'scalar-card' : 'histogram-card')];
  if (cards.length < expected) return false;
  return cards.every(card => {
    if (kind !== 'scalars') return card.querySelectorAll('tb-histogram svg path').length > 2;
    const tag = (card.querySelector('tb-truncated-path') || {getAttribute: () => ''}).getAttribute('title');
    return card.querySelector('line-chart canvas, line-chart svg')
      && card.querySelectorAll('tb-data-table-content-row').length >= (rows[tag] || 1);
  });
}
"""
# TensorBoard's own persisted UI settings (what its settings pane writes to localStorage), seeded
# before the app loads: settings pane closed, cards wide enough that run names stay on one line and
# a chart's data table shows every run's row.
_SETTINGS_JS = """
window.localStorage.setItem('_tb_global_settings', JSON.stringify({
  timeSeriesSettingsPaneOpened: false, timeSeriesCardMinWidth: 480, sideBarWidthInPercent: 15}));
"""
# Extra height the page needs to show everything (its scroll containers' overflow).
_OVERFLOW_JS = """
() => Math.max(0, ...[...document.querySelectorAll('*')]
  .filter(e => ['auto', 'scroll'].includes(getComputedStyle(e).overflowY))
  .map(e => e.scrollHeight - e.clientHeight))
"""
_CARDS_BOTTOM_JS = """
() => Math.max(0, ...[...document.querySelectorAll('card-view')].map(e => e.getBoundingClientRect().bottom))
"""
_PAGE_FACTS_JS = """
() => ({
  tags: [...new Set([...document.querySelectorAll('scalar-card tb-truncated-path, histogram-card tb-truncated-path')]
          .map(e => e.getAttribute('title')))],
  runs: [...new Set([
    ...[...document.querySelectorAll('histogram-card card-run-name-component')].map(e => e.getAttribute('title')),
    ...[...document.querySelectorAll('scalar-card tb-data-table-content-row')]  // cells: colour, run, values
      .map(row => (row.querySelectorAll('tb-data-table-content-cell')[1] || {}).innerText),
  ].map(name => (name || '').trim()).filter(Boolean))],
  text: document.body.innerText,
})
"""


class ChromiumMissingError(FinetuneError):
    """No Chromium binary to drive."""


@dataclass
class Screenshot:
    """A captured PNG and what it shows; `renderer` says whether it is TensorBoard itself."""

    path: Path
    renderer: Literal["tensorboard", "matplotlib"]
    view: View
    tags: list[str]
    runs: list[str]
    width: int
    height: int
    seconds: float
    url: str | None = None

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def find_chromium() -> Path | None:
    """The Chromium to drive: $FINETUNE_MCP_CHROMIUM, a Debian/Ubuntu path, or `chromium` on PATH."""
    explicit = os.environ.get("FINETUNE_MCP_CHROMIUM")
    if explicit:
        return Path(explicit) if Path(explicit).is_file() else None
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).is_file():
            return Path(candidate)
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    return Path(found) if found else None


def default_tags(view: View) -> tuple[str, ...]:
    return M.DEFAULT_SCREENSHOT_TAGS if view == "scalars" else DEFAULT_HISTOGRAM_TAGS


def take_screenshot(
    runs: Sequence[RunDirectory],
    *,
    server: TensorBoardServer | None,
    tags: Sequence[str] | None = None,
    view: View = "scalars",
    fallback: bool = False,
    timeout: float = 60.0,
    out_dir: Path | None = None,
) -> Screenshot:
    """The TensorBoard page for `runs` (the first is the job; the rest are compared), saved as a PNG
    under the first run's `screenshots/` (or `out_dir`: an experiment's own folder).
    Without Chromium: matplotlib when `fallback`, else an error. A run given twice (the job in its
    own comparison) is shown once: each chart would otherwise wait for a second table row that
    TensorBoard never draws."""
    runs = unique_runs(runs)
    if find_chromium() is None:
        if not fallback:
            raise ChromiumMissingError(
                "headless Chromium is needed for TensorBoard screenshots and was not found; install it with "
                "`apt-get install chromium` (Debian/Ubuntu) or set FINETUNE_MCP_CHROMIUM to a Chromium binary"
            )
        return render_matplotlib(runs, tags=tags, view=view, out_dir=out_dir)
    if server is None:
        with TensorBoardServer() as own:
            return capture_tensorboard(own, runs, tags=tags, view=view, timeout=timeout, out_dir=out_dir)
    return capture_tensorboard(server, runs, tags=tags, view=view, timeout=timeout, out_dir=out_dir)


def unique_runs(runs: Sequence[RunDirectory]) -> list[RunDirectory]:
    """`runs` without repeats (the same folder, however spelled), in their order."""
    seen: set[Path] = set()
    unique = []
    for run in runs:
        key = run.root.expanduser().resolve()
        if key not in seen:
            seen.add(key)
            unique.append(run)
    return unique


def capture_tensorboard(
    server: TensorBoardServer,
    runs: Sequence[RunDirectory],
    *,
    tags: Sequence[str] | None = None,
    view: View = "scalars",
    timeout: float = 60.0,
    out_dir: Path | None = None,
) -> Screenshot:
    """Open the filtered Time Series page in headless Chromium, wait for the charts, capture it."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    started = time.monotonic()
    chromium = find_chromium()
    if chromium is None:
        raise ChromiumMissingError("Chromium not found; install it with `apt-get install chromium`")
    names = [server.add_run(run.root.name, _tensorboard_dir(run)) for run in runs]
    base_url = server.start()
    available = server.wait_for_tags(names, view, timeout=timeout)  # plugin names = view names
    shown = _select_tags(tags, view, available)
    url = base_url + "?" + urllib.parse.urlencode({
        "tagFilter": "^(" + "|".join(re.escape(t) for t in shown) + ")$",
        "runFilter": "^(" + "|".join(re.escape(n) for n in names) + ")$",
    }) + "#timeseries"
    rows = {tag: sum(tag in available[n] for n in names) for tag in shown}
    expected = len(shown) if view == "scalars" else sum(rows.values())
    out = _output_path(runs, view, "png", out_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "RUNPOD_API_KEY")}
    try:
        with sync_playwright() as pw:
            # Playwright gives each launch a fresh temporary profile (--user-data-dir), removed on close.
            browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_FLAGS,
                                         env=env, timeout=timeout * 1000)
            try:
                # tall enough for every card from the start: cards off-screen are never drawn, and a
                # resize makes every chart draw again
                height = min(_MAX_HEIGHT, 200 + math.ceil(expected / _COLUMNS) * _CARD_HEIGHT)
                page = browser.new_page(viewport={"width": _VIEWPORT_WIDTH, "height": height})
                page.add_init_script(_SETTINGS_JS)
                page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
                _wait_drawn(page, view, expected, rows, timeout)
                overflow = int(page.evaluate(_OVERFLOW_JS))
                if overflow > 0:  # taller cards than planned (long run names): grow once and wait again
                    height = min(_MAX_HEIGHT, height + overflow)
                    page.set_viewport_size({"width": _VIEWPORT_WIDTH, "height": height})
                    _wait_drawn(page, view, expected, rows, timeout)
                # down to the last card: no empty grey below the charts
                bottom = int(page.evaluate(_CARDS_BOTTOM_JS)) + 24
                size = {"width": _VIEWPORT_WIDTH, "height": max(400, min(height, bottom))}
                out.write_bytes(_settled_screenshot(page, size, timeout))
                facts = page.evaluate(_PAGE_FACTS_JS)
            finally:
                browser.close()
    except PlaywrightError as exc:
        raise TensorBoardError(f"headless Chromium failed on {url}: {str(exc).splitlines()[0]}; "
                               f"check that {chromium} starts (`{chromium} --headless --version`)") from exc
    shot = Screenshot(path=out, renderer="tensorboard", view=view, tags=list(shown), runs=names,
                      width=size["width"], height=size["height"], seconds=round(time.monotonic() - started, 2),
                      url=url)
    out.with_suffix(".json").write_text(json.dumps({**shot.to_dict(), "page": facts}, indent=2))
    return shot


def _settled_screenshot(page, size: dict[str, int], timeout: float) -> bytes:
    """Capture until two captures 250 ms apart are identical: the line charts are painted by a web
    worker on an OffscreenCanvas, which the DOM cannot observe, so "drawn" is "no longer changing"."""
    deadline = time.monotonic() + timeout
    previous = None
    while True:
        png = page.screenshot(clip={"x": 0, "y": 0, **size})
        if png == previous or time.monotonic() > deadline:
            return png
        previous = png
        page.wait_for_timeout(250)


def _wait_drawn(page, view: View, expected: int, rows: dict[str, int], timeout: float) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(_DRAWN_JS, arg={"kind": view, "expected": expected, "rows": rows},
                               timeout=timeout * 1000, polling=100)
    except PlaywrightTimeout as exc:
        raise TensorBoardError(
            f"TensorBoard did not draw {expected} {view} card(s) within {timeout:.0f} s; "
            "retry, or pass fewer tags"
        ) from exc


def _select_tags(tags: Sequence[str] | None, view: View, available: dict[str, list[str]]) -> list[str]:
    """The asked tags that some run has; an error naming the available ones when none or an unknown one."""
    have = sorted({t for run_tags in available.values() for t in run_tags if not t.startswith("hparam/")})
    if tags:
        unknown = [t for t in tags if t not in have]
        if unknown:
            raise TensorBoardError(f"unknown {view} tag(s) {', '.join(unknown)}; this run has: {', '.join(have)}; "
                                   "pass some of those as `tags`")
        return list(dict.fromkeys(tags))
    shown = [t for t in default_tags(view) if t in have]
    if not shown:
        raise TensorBoardError(f"none of the default {view} tags is logged yet; this run has: "
                               f"{', '.join(have) or 'nothing'}; pass `tags` or retry after more steps")
    return shown


def _tensorboard_dir(run: RunDirectory) -> Path:
    if not run.tensorboard.is_dir() or not any(run.tensorboard.iterdir()):
        raise TensorBoardError(f"{run.tensorboard} holds no TensorBoard event files yet; the job has not logged a "
                               "step; retry once get_job reports progress")
    return run.tensorboard


def _output_path(runs: Sequence[RunDirectory], view: View, suffix: str, out_dir: Path | None = None) -> Path:
    folder = out_dir or runs[0].root / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    others = "".join(f"-vs-{run.root.name}" for run in runs[1:]) if out_dir is None else f"-{len(runs)}-runs"
    path = folder / f"{view}-{stamp}{others}.{suffix}"
    n = 2
    while path.exists():
        path = folder / f"{view}-{stamp}{others}-{n}.{suffix}"
        n += 1
    return path


def render_matplotlib(runs: Sequence[RunDirectory], *, tags: Sequence[str] | None = None,
                      view: View = "scalars", out_dir: Path | None = None) -> Screenshot:
    """The same data drawn by matplotlib from the event files: not TensorBoard, and labelled so."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    started = time.monotonic()
    accs = {}
    for run in runs:
        acc = EventAccumulator(str(_tensorboard_dir(run)), size_guidance={"scalars": 0, "histograms": 0})
        acc.Reload()
        accs[run.root.name] = acc
    key = "scalars" if view == "scalars" else "histograms"
    available = {name: acc.Tags()[key] for name, acc in accs.items()}
    shown = _select_tags(tags, view, available)
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, shown, strict=False):
        for name, acc in accs.items():
            if tag not in available[name]:
                continue
            if view == "scalars":
                points = acc.Scalars(tag)
                ax.plot([p.step for p in points], [p.value for p in points], label=name)
            else:
                last = acc.Histograms(tag)[-1].histogram_value  # buckets: counts with right edges
                limits = [min(edge, last.max) for edge in last.bucket_limit]
                ax.stairs(last.bucket, [last.min, *limits], label=name)
        ax.set_title(tag)
        ax.set_xlabel("step" if view == "scalars" else "entropy (nats), last window")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.suptitle("matplotlib rendering (Chromium not installed)", fontsize=10)
    fig.tight_layout()
    out = _output_path(runs, view, "png", out_dir)
    fig.savefig(out, dpi=100)
    width, height = (int(v) for v in fig.get_size_inches() * 100)
    plt.close(fig)
    return Screenshot(path=out, renderer="matplotlib", view=view, tags=shown, runs=list(accs), width=width,
                      height=height, seconds=round(time.monotonic() - started, 2))
