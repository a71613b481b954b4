"""Both dashboard pages in a real headless Chromium: no console errors, every figure drew its data, no
chart title under plotly's toolbar or off its figure, no empty plot on timing-only pages, and the
fair-comparison notice shown when the compared runs ended at different budgets.

Needs Playwright's Python package and the system's Chromium (/usr/bin/chromium; no browser is
downloaded). Without them these tests skip with a message, except where LOCOSIM_REQUIRE_BROWSER=1
(CI sets it): there they fail. Screenshots go to $LOCOSIM_ARTIFACTS (default tests/artifacts/);
with LOCOSIM_UPDATE_DOCS_IMG=1 they are also copied to docs/img/ for the README.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from sim.report.compare import write_compare
from tests.conftest import ROOT
from tests.test_report import make_fault_run, make_runs, make_timing_runs, make_warm_runs

CHROMIUM = os.environ.get("LOCOSIM_CHROMIUM", "/usr/bin/chromium")
DOCS_IMG = {"dashboard.png", "dashboard_faults.png", "compare.png", "compare_timing_only.png"}  # shown in the README
ARTIFACTS = Path(os.environ.get("LOCOSIM_ARTIFACTS", ROOT / "tests" / "artifacts"))

# Per figure div: traces, data points plotly computed to draw (calcdata), and SVG trace groups drawn.
PLOT_CHECK = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => ({
  id: gd.id,
  traces: (gd.data || []).length,
  points: (gd.calcdata || []).reduce((n, cd) => n + cd.filter(pt => pt && (pt.x !== undefined || pt.p !== undefined)
                                                                && !Number.isNaN(pt.y ?? pt.s)).length, 0),
  drawn: gd.querySelectorAll('.main-svg .trace, .main-svg .point, .main-svg path.js-line').length,
  hasLayout: !!gd._fullLayout,
}))"""


# Per figure div: the title's box, the toolbar's (plotly's modebar: shown on hover, laid out always) and
# the figure's, in page pixels.
TITLE_CHECK = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const box = el => { if (!el) return null; const r = el.getBoundingClientRect();
                      return {l: r.left, r: r.right, t: r.top, b: r.bottom, w: r.width}; };
  return {id: gd.id, text: (gd.querySelector('.gtitle') || {}).textContent || '',
          title: box(gd.querySelector('.gtitle')), toolbar: box(gd.querySelector('.modebar')),
          fig: box(gd.querySelector('.main-svg'))};
})"""


def _assert_titles_clear(titles: list[dict]) -> None:
    """No chart title is covered by the toolbar or runs past its figure's edges."""
    for f in titles:
        t, m, g = f["title"], f["toolbar"], f["fig"]
        assert t is not None and f["text"], f
        assert g["l"] - 1 <= t["l"] and t["r"] <= g["r"] + 1, f"title of {f['id']} runs off its figure: {f}"
        if m is not None and m["w"] > 0:
            overlap = min(t["r"], m["r"]) > max(t["l"], m["l"]) and min(t["b"], m["b"]) > max(t["t"], m["t"])
            assert not overlap, f"the toolbar covers the title of {f['id']}: {f}"


def _browser_or_skip():
    missing = []
    try:
        from playwright.sync_api import sync_playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright Python package (pip install -e '.[browser]')")
    if not Path(CHROMIUM).is_file():
        missing.append(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    if missing:
        msg = "browser test needs " + " and ".join(missing)
        if os.environ.get("LOCOSIM_REQUIRE_BROWSER") == "1":
            pytest.fail(msg + " (LOCOSIM_REQUIRE_BROWSER=1)")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    _browser_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


def _open_and_check(browser, page_path: Path, shot: str) -> list[dict]:
    """Load a page from disk, fail on any console error or page error, return the per-figure check,
    and save a full-page screenshot."""
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
    page.wait_for_timeout(500)
    figures = page.evaluate(PLOT_CHECK)
    titles = page.evaluate(TITLE_CHECK)
    notice = page.evaluate("() => { const n = document.getElementById('fair-notice');"
                           " return n && n.offsetHeight > 0 ? n.textContent : null; }")
    for f in figures:
        f["notice"] = notice
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / shot), full_page=True)
    if os.environ.get("LOCOSIM_UPDATE_DOCS_IMG") == "1" and shot in DOCS_IMG:
        (ROOT / "docs" / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(ARTIFACTS / shot, ROOT / "docs" / "img" / shot)
    page.close()
    assert errors == [], errors
    assert overflow <= 0, f"{page_path.name} is {overflow} px wider than the window: a table or figure overflows"
    _assert_titles_clear(titles)
    return figures


def _assert_all_drawn(figures: list[dict], expected: set[str]) -> None:
    by_id = {f["id"]: f for f in figures}
    assert expected <= set(by_id), expected - set(by_id)
    for f in figures:
        assert f["hasLayout"] and f["traces"] > 0 and f["points"] > 0 and f["drawn"] > 0, f


def test_run_dashboard_in_chromium(browser, tmp_path_factory):
    """The run dashboard opens without console errors and every figure div drew a plot with data."""
    _, runs = make_runs(tmp_path_factory)
    figures = _open_and_check(browser, runs["noloco"] / "dashboard.html", "dashboard.png")
    _assert_all_drawn(figures, {"fig-timeline", "fig-util-node", "fig-util-region", "fig-throughput-link",
                                "fig-throughput-pair", "fig-bytes-link", "fig-bandwidth-peak", "fig-topology",
                                "fig-loss-time", "fig-loss-tokens", "fig-loss-bytes", "fig-diagnostics"})


def test_fault_run_dashboard_in_chromium(browser, tmp_path_factory):
    """A run with failures, churn and dropped contributions (and every replica evaluated) draws its
    Faults panel and its per-replica eval lines without console errors."""
    figures = _open_and_check(browser, make_fault_run(tmp_path_factory) / "dashboard.html", "dashboard_faults.png")
    _assert_all_drawn(figures, {"fig-timeline", "fig-loss-time", "fig-faults"})


def test_compare_page_in_chromium(browser, tmp_path_factory):
    """The comparison of all five methods (DiLoCo with two seeds) opens without console errors and
    every figure div drew a plot with data."""
    root, _ = make_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("cmp") / "compare.html"
    write_compare([root], out, baseline="ddp")
    figures = _open_and_check(browser, out, "compare.png")
    _assert_all_drawn(figures, {"cmp-fair", "cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens", "cmp-cu",
                                "cmp-states", "cmp-bytes", "cmp-diagnostics"})
    # ddp (16 steps, a WAN all-reduce each) ends long after the DiLoCo family: the page says so, visibly
    notice = figures[0]["notice"]
    assert notice and "different budgets" in notice and "equal tokens" in notice and "equal simulated time" in notice


def test_timing_only_pages_in_chromium(browser, tmp_path_factory):
    """Timing-only runs (wan_1b's 1B proxy) compared: no empty plot (every figure drawn has data), no
    loss or time-to-target figure, the proxy named in the header; their run dashboards the same."""
    root = make_timing_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("cmp-timing") / "compare.html"
    write_compare([root], out, baseline="ddp")
    figures = _open_and_check(browser, out, "compare_timing_only.png")
    _assert_all_drawn(figures, {"cmp-cu", "cmp-states", "cmp-bytes"})
    assert not {f["id"] for f in figures} & {"cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens",
                                              "cmp-time-to-target", "cmp-fair"}
    assert "1e+09 parameters, 24 layers" in out.read_text()
    figures = _open_and_check(browser, root / "noloco" / "dashboard.html", "dashboard_timing_only.png")
    _assert_all_drawn(figures, {"fig-timeline", "fig-util-node", "fig-throughput-link", "fig-topology"})
    assert not any(f["id"].startswith("fig-loss") for f in figures)


def test_png_export_with_system_chromium(tmp_path_factory):
    """With kaleido and the system Chromium, --png's export writes one real PNG per dashboard figure."""
    _browser_or_skip()
    try:
        import kaleido  # noqa: F401
    except ImportError:
        if os.environ.get("LOCOSIM_REQUIRE_BROWSER") == "1":
            pytest.fail("kaleido is not installed (pip install -e '.[browser]')")
        pytest.skip("PNG export needs kaleido (pip install -e '.[browser]')")
    from sim.report.dashboard import export_run_pngs, run_figures
    from sim.report.runs import load_run

    _, runs = make_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("png")
    written, note = export_run_pngs(runs["diloco"], out)
    assert note is None, note
    assert {p.stem for p in written} == set(run_figures(load_run(runs["diloco"]))[0])
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000, p


# Per figure div: the warm-up markers plotly laid out (shapes named 'warm-up end') and its y axes.
LAYOUT_CHECK = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const fl = gd._fullLayout;
  const yaxes = Object.keys(fl).filter(k => /^yaxis\\d*$/.test(k)).map(k => ({
    name: k, overlaying: fl[k].overlaying || null, range: fl[k].range, side: fl[k].side}));
  return {id: gd.id, warm: (fl.shapes || []).filter(s => s.name === 'warm-up end').map(s => s.x0),
          shapesDrawn: gd.querySelectorAll('.shapelayer path').length, yaxes: yaxes,
          traces: (gd.data || []).map(t => ({type: t.type, n: (t.x || []).length, yaxis: t.yaxis || 'y'}))};
})"""

# The differences table's box and scroll extent, and the window's width.
TABLE_CHECK = """() => { const t = document.getElementById('diff-table'); const r = t.getBoundingClientRect();
  return {left: r.left, right: r.right, scroll: t.scrollWidth, client: t.clientWidth, window: window.innerWidth,
          docScroll: document.documentElement.scrollWidth}; }"""


def _open(browser, page_path: Path, width: int = 1400, media: str | None = None):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    if media:
        page.emulate_media(media=media)
    page.goto(page_path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
    page.wait_for_timeout(500)
    return page


def test_warm_up_marked_and_diagnostics_as_small_multiples_in_chromium(browser, tmp_path_factory):
    """A run with warm-up: every time-axis figure of its dashboard lays out and draws the line where
    warm-up ends (at summary.json's phases.warm_up.end_s); its diagnostics panel has one y axis per
    trace, none overlaying another, starting at zero; and the page opens without errors."""
    import json

    from sim.report.dashboard import TIME_AXIS_FIGURES

    root = make_warm_runs(tmp_path_factory)
    t_w = json.loads((root / "noloco" / "summary.json").read_text())["phases"]["warm_up"]["end_s"]
    figures = _open_and_check(browser, root / "noloco" / "dashboard.html", "dashboard_warm_up.png")
    _assert_all_drawn(figures, {"fig-timeline", "fig-steps", "fig-loss-time", "fig-diagnostics"})
    page = _open(browser, root / "noloco" / "dashboard.html")
    layout = {f["id"]: f for f in page.evaluate(LAYOUT_CHECK)}
    page.close()
    timed = [i for i in TIME_AXIS_FIGURES if i in layout]
    assert {"fig-timeline", "fig-loss-time", "fig-steps", "fig-diagnostics"} <= set(timed)
    for fig_id in timed:
        f = layout[fig_id]
        assert f["warm"] and all(abs(x - t_w) < 1e-9 for x in f["warm"]), f
        assert f["shapesDrawn"] >= len(f["warm"]), f
    diag = layout["fig-diagnostics"]
    assert all(y["overlaying"] is None for y in diag["yaxes"]), diag
    assert len({t["yaxis"] for t in diag["traces"]}) == len(diag["yaxes"]), diag
    assert all(y["range"][0] == 0 for y in diag["yaxes"]), diag


def test_compare_after_warm_up_in_chromium(browser, tmp_path_factory):
    """The comparison of methods after warm-up: the trade-off scatter, the exposed-communication bars
    and one round of each method side by side are drawn with data; the loss-vs-time figure marks
    where warm-up ends; the diagnostics are separate panels; the differences table fits the window
    (no horizontal scroll, inside the page) and still fits in print at a letter page's width."""
    root = make_warm_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("cmp-warm") / "compare.html"
    write_compare([root], out, baseline="ddp")
    figures = _open_and_check(browser, out, "compare_warm_up.png")
    _assert_all_drawn(figures, {"cmp-tradeoff", "cmp-exposed", "cmp-rounds", "cmp-loss-time", "cmp-diagnostics"})
    for f in figures:
        if f["id"] in ("cmp-tradeoff", "cmp-exposed", "cmp-rounds"):
            assert f["points"] >= 5, f  # a point or bar per method, not an empty frame
    page = _open(browser, out)
    layout = {f["id"]: f for f in page.evaluate(LAYOUT_CHECK)}
    table = page.evaluate(TABLE_CHECK)
    page.close()
    assert layout["cmp-loss-time"]["warm"], layout["cmp-loss-time"]
    diag = layout["cmp-diagnostics"]
    assert len(diag["yaxes"]) == 2 and all(y["overlaying"] is None for y in diag["yaxes"]), diag
    assert table["scroll"] <= table["client"] + 1 and table["right"] <= table["window"], table
    assert table["docScroll"] <= table["window"], table
    page = _open(browser, out, width=816, media="print")  # US letter at 96 dpi
    printed = page.evaluate(TABLE_CHECK)
    page.close()
    assert printed["scroll"] <= printed["client"] + 1 and printed["right"] <= printed["window"], printed


def test_no_fairness_notice_for_equal_budgets_in_chromium(browser, tmp_path_factory):
    """Two runs that end at the same tokens and simulated time with different final losses: the page
    shows no fairness notice."""
    from sim.runner import Simulation
    from sim.scenario import load_scenario
    from sim.writer import run_to_dir
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("equal")
    for name, lr in (("a", 0.7), ("b", 0.3)):
        sc = load_scenario(ROOT / "scenarios" / "quickstart.yaml",
                           TINY + [f"algorithm={{name: diloco, inner_steps: 4, outer_lr: {lr}}}", "run.max_rounds=3"])
        run_to_dir(Simulation(sc), root / name)
    out = root / "compare.html"
    write_compare([root], out)
    figures = _open_and_check(browser, out, "compare_equal_budgets.png")
    assert figures[0]["notice"] is None
