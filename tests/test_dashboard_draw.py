"""Figures laid out once (sim/report/margins.py): each figure's margins are worked out in Python from
its axis labels, so that plotly draws it without a second, automargin layout pass.

In a real headless Chromium at the page's full width (a 1400 px window): on a run dashboard, a fault
run's dashboard, a comparison and (slow) the 1,024-worker dashboard, every figure is drawn, every tick
label lies inside its figure's div, and no figure that ``fit_margins`` models took a
second layout pass; the tick labels plotly drew on linear axes are among those the module estimated.
Without a browser: the estimated automatic tick labels of a linear axis (worked by hand from
plotly's rule), margins only ever raised, and figures the module does not model left alone.

The browser tests need Playwright and the system's Chromium, as tests/test_browser.py (they skip
without them, or fail under LOCOSIM_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import pytest

from sim.report.compare import write_compare
from sim.report.dashboard import run_figures
from sim.report.margins import auto_tick_labels, axis_labels, fit_margins, text_px
from sim.report.page import Page
from sim.report.runs import load_run
from sim.report.style import FIGURE_PX
from tests.test_browser import browser  # noqa: F401 (a fixture)
from tests.test_browser_scale import big_dashboard  # noqa: F401 (a fixture)
from tests.test_report import make_fault_run, make_runs

# Per figure div: its box; the boxes of its visible tick labels; its tick labels per axis; whether
# plotly redrew it for its margins (automargin); how far its axes' labels pushed each margin and the
# margins it was given; whether its x axis is linear and autoranged; whether margins.fit_margins models
# it (one x and one y axis, scatter and bar traces only).
LABELS_CHECK = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(gd => {
  const r = gd.getBoundingClientRect(), fl = gd._fullLayout;
  const boxes = Array.from(gd.querySelectorAll('.xtick text, .ytick text'))
    .filter(t => t.style.display !== 'none' && t.textContent)
    .map(t => { const b = t.getBoundingClientRect();
                return {text: t.textContent, l: b.left, r: b.right, t: b.top, b: b.bottom}; });
  const axes = Object.keys(fl).filter(k => /^[xy]axis\\d*$/.test(k));
  const ticks = {};
  for (const k of axes) ticks[k] = Array.from(gd.querySelectorAll('.' + fl[k]._id + 'tick text'))
    .map(t => t.textContent);
  const pm = fl._pushmargin || {}, push = {l: 0, b: 0, r: 0};
  for (const k of ['x.automargin', 'y.automargin']) if (pm[k]) for (const side of ['l', 'b', 'r'])
    push[side] = Math.max(push[side], pm[k][side].size);
  return {id: gd.id, div: {l: r.left, r: r.right, t: r.top, b: r.bottom}, boxes: boxes, ticks: ticks,
          drawn: !!gd.querySelector('.main-svg') && !!fl,
          redrawn: '_redrawFromAutoMarginCount' in fl, push: push, margin: fl.margin,
          xAutorangedLinear: !!fl.xaxis && fl.xaxis.type === 'linear' && !!fl.xaxis.autorange,
          modelled: axes.length === 2 && axes.includes('xaxis') && axes.includes('yaxis')
                    && gd.data.every(t => (t.type || 'scatter') === 'scatter' || t.type === 'bar')};
})"""


def _draw(browser, page_path: Path) -> list[dict]:  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.wait_for_function("() => { const d = document.querySelectorAll('.js-plotly-plot');"
                               " return d.length > 0 && Array.from(d).every(g => g.querySelector('.main-svg')"
                               " && g._fullLayout); }")
        page.wait_for_timeout(300)
        return page.evaluate(LABELS_CHECK)
    finally:
        page.close()


def _assert_laid_out_once(figures: list[dict], expected: set[str]) -> None:
    """Every expected figure drawn; every tick label inside its div; the labels of every modelled
    figure pushed its left and bottom margins no further than they were given (1 px is plotly's
    tolerance), and no modelled figure was redrawn, except for its right margin on an autoranged
    linear x axis (where its last tick falls is left to plotly)."""
    by_id = {f["id"]: f for f in figures}
    assert expected <= set(by_id), expected - set(by_id)
    for f in figures:
        assert f["drawn"], f["id"]
        d = f["div"]
        for b in f["boxes"]:
            inside = d["l"] - 1 <= b["l"] and b["r"] <= d["r"] + 1 and d["t"] - 1 <= b["t"] and b["b"] <= d["b"] + 1
            assert inside, f"label {b['text']!r} of {f['id']} lies outside its figure: {b} vs {d}"
        assert f["boxes"] or not f["ticks"].get("xaxis"), f["id"]
        if f["modelled"]:
            for side in ("l", "b") + (() if f["xAutorangedLinear"] else ("r",)):
                assert f["push"][side] <= f["margin"][side] + 1, (f["id"], side, f["push"], f["margin"])
            assert f["xAutorangedLinear"] or not f["redrawn"], f"{f['id']} took a second (automargin) layout pass"


def _assert_ticks_estimated(figures: list[dict], figs: dict[str, go.Figure]) -> None:
    """The tick labels plotly drew on each modelled linear axis are among those ``axis_labels`` estimated."""
    checked = 0
    for f in figures:
        fig = figs.get(f["id"])
        if fig is None or not f["modelled"]:
            continue
        for letter in "xy":
            est = axis_labels(fig, letter)
            if est is None or est[1] != "linear":
                continue
            drawn = set(f["ticks"].get(f"{letter}axis", []))
            assert drawn <= set(est[0]), (f["id"], letter, drawn - set(est[0]), est[0])
            checked += bool(drawn)
    assert checked > 0


def _placed(figs: dict) -> dict[str, go.Figure]:
    """The figures of ``run_figures`` as a page places them (titles, margins)."""
    page = Page("t")
    for fig_id, (fig, wide) in figs.items():
        page.figure(fig_id, fig, wide=wide)
    return {k: f for k, (f, _w) in figs.items()}


def test_a_run_dashboards_figures_are_laid_out_once_with_their_labels_inside(browser, tmp_path_factory):  # noqa: F811
    """Every figure of a tiny NoLoCo run's dashboard and of a fault run's dashboard is drawn with every
    tick label inside its div, no modelled figure took an automargin redraw, and the
    labels drawn on linear axes are among those estimated."""
    _, runs = make_runs(tmp_path_factory)
    for run_dir, expected in ((runs["noloco"], {"fig-timeline", "fig-util-node", "fig-bytes-link", "fig-loss-time"}),
                              (make_fault_run(tmp_path_factory), {"fig-timeline", "fig-faults"})):
        figures = _draw(browser, run_dir / "dashboard.html")
        _assert_laid_out_once(figures, expected)
        _assert_ticks_estimated(figures, _placed(run_figures(load_run(run_dir))[0]))
        assert sum(f["modelled"] for f in figures) >= 5


def test_a_comparisons_figures_keep_their_labels_inside(browser, tmp_path_factory):  # noqa: F811
    """The comparison page of the tiny runs: every figure drawn with its labels inside its div, and no
    modelled figure redrawn for its margins."""
    root, _ = make_runs(tmp_path_factory)
    out = tmp_path_factory.mktemp("cmp-draw") / "compare.html"
    write_compare([root], out, baseline="ddp")
    _assert_laid_out_once(_draw(browser, out), {"cmp-cu", "cmp-states", "cmp-bytes"})


@pytest.mark.slow
def test_the_1024_worker_dashboard_is_laid_out_once(browser, big_dashboard):  # noqa: F811
    """Every figure of the 1,024-worker layer-grain dashboard (the benchmark's page) is drawn in one
    layout pass with every label inside its div, and its linear axes' labels are among those estimated."""
    figures = _draw(browser, big_dashboard)
    _assert_laid_out_once(figures, {"fig-timeline", "fig-steps", "fig-util-node", "fig-util-region",
                                    "fig-throughput-link", "fig-throughput-pair", "fig-bytes-link",
                                    "fig-topology"})
    assert all(f["modelled"] for f in figures if f["id"] != "fig-topology")
    _assert_ticks_estimated(figures, _placed(run_figures(load_run(big_dashboard.parent))[0]))


def test_auto_tick_labels_follow_plotlys_rule():
    """A linear axis' estimated labels are plotly's automatic ticks, worked by hand: 0 to 1012 over 6
    ticks steps by 200 (1012 / 6 = 169, rounded up to 2 x 100), 0 to 0.37 over 5 by 0.1, 0 to 100000
    over 5 by 20000 written with plotly's k (zero without it); percent formats written as percents."""
    assert auto_tick_labels(0, 1012, (6,)) == ["0", "200", "400", "600", "800", "1000"]
    assert auto_tick_labels(0, 0.37, (5,)) == ["0", "0.1", "0.2", "0.3"]
    assert auto_tick_labels(0, 100000, (5,)) == ["0", "20k", "40k", "60k", "80k", "100k"]
    assert auto_tick_labels(-3, 3, (5,)) == ["\u22122", "0", "2"]
    assert auto_tick_labels(0, 1.0001, (6,), ".0%") == ["0%", "20%", "40%", "60%", "80%", "100%"]
    assert auto_tick_labels(0, 1.0001, (5,), ".0%") == ["0%", "50%", "100%"]  # 0.2 rounds up to 5 x 0.1
    assert text_px("10") == pytest.approx(2 * 0.6362 * 12) and text_px("\u2603") == 12


def test_margins_are_only_raised_and_unmodelled_figures_left_alone():
    """fit_margins raises a figure's left margin to its widest y label (a category 12 characters
    longer than another's moves it right by at least their width) and never lowers a margin; a pie
    and a figure with two y axes keep their margins."""
    short, long_ = go.Figure(go.Bar(x=[1], y=["a"], orientation="h")), \
        go.Figure(go.Bar(x=[1], y=["a" + "w" * 12], orientation="h"))
    for f in (short, long_):
        f.update_layout(margin={"l": 10, "r": 300, "t": 10, "b": 10}, height=300)
        fit_margins(f, FIGURE_PX[False])
    assert long_.layout.margin.l - short.layout.margin.l >= text_px("w" * 12) - 1
    assert short.layout.margin.r == 300 and short.layout.margin.b >= 10
    wide = go.Figure(go.Scatter(x=[0, 1], y=[0, 1]))
    wide.update_layout(margin={"l": 400, "r": 20, "t": 30, "b": 200})
    fit_margins(wide, FIGURE_PX[True])
    assert (wide.layout.margin.l, wide.layout.margin.b) == (400, 200)
    pie = go.Figure(go.Pie(values=[1, 2]))
    pie.update_layout(margin={"l": 1, "r": 1, "t": 1, "b": 1})
    two = go.Figure([go.Scatter(x=[0, 1], y=[0, 1]), go.Scatter(x=[0, 1], y=[0, 99999], yaxis="y2")])
    two.update_layout(margin={"l": 1, "r": 1, "t": 1, "b": 1}, yaxis2={"overlaying": "y", "side": "right"})
    for f in (pie, two):
        fit_margins(f, FIGURE_PX[False])
        assert (f.layout.margin.l, f.layout.margin.r, f.layout.margin.t, f.layout.margin.b) == (1, 1, 1, 1)
