"""Which plotly.js a page inlines (sim/report/page.py): plotly.js's basic bundle (scatter, bar, pie;
sim/report/assets) for pages whose figures need nothing else, of the same plotly.js version as the
plotly package's own full bundle; the full bundle otherwise. In a real headless Chromium, every figure
of a run dashboard, a fault run's dashboard, a comparison, a sweep's comparison and a bandwidth chart
draws with the basic bundle, pixel for pixel as with the full bundle, and a page with another trace
type draws with the full one.

The browser tests need Playwright and the system's Chromium, as tests/test_browser.py (they skip
without them, or fail under LOCOSIM_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go
import plotly.offline
import pytest

from sim.report.page import (BASIC_TRACES, PLOTLY_CONFIG_JS, Page, basic_bundle, plotlyjs_for,
                             split_figure_html)
from tests.conftest import ROOT, TINY
from tests.test_browser import browser  # noqa: F401 (a fixture)

FULL_BANNER = f"plotly.js v{plotly.offline.get_plotlyjs_version()}"  # the first line of the full bundle
BASIC_BANNER = "plotly.js (basic - minified) v"


def _figure(kind: str) -> go.Figure:
    if kind == "heatmap":
        return go.Figure(go.Heatmap(z=[[1, 2], [3, 4]]))
    if kind == "bar":
        return go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    return go.Figure(go.Scatter(x=[0, 1, 2], y=[2, 0, 1], mode="lines+markers"))


def _page(tmp_path: Path, kinds: list[str], name: str = "page.html") -> tuple[Page, str]:
    page = Page("bundle test")
    page.html("<h1>bundle test</h1>")
    for i, kind in enumerate(kinds):
        page.figure(f"fig-{i}-{kind}", _figure(kind))
    page.write(tmp_path / name)
    return page, (tmp_path / name).read_text(encoding="utf-8")


def test_the_basic_bundle_is_the_plotly_packages_plotlyjs_version():
    """The shipped basic bundle is the plotly.js version that the installed plotly package embeds
    (an upgrade of plotly fails here until the bundle is refreshed: sim/report/assets/README.md),
    and its MIT license ships beside it."""
    version, text = basic_bundle()
    assert version and version == plotly.offline.get_plotlyjs_version(), (version, FULL_BANNER)
    assert text.lstrip("/* \n").startswith(BASIC_BANNER + version)
    assert "MIT License" in (ROOT / "sim" / "report" / "assets" / "LICENSE").read_text()
    assert "</script" not in text  # inlined as is inside a <script> element


def test_a_page_of_scatter_and_bar_figures_inlines_the_basic_bundle_once(tmp_path):
    """A page whose figures are scatter and bar traces holds the basic bundle once, before its first
    figure is drawn, and not the full bundle."""
    page, text = _page(tmp_path, ["scatter", "bar", "scatter"])
    assert page.plotlyjs()[0] == "basic"
    assert text.count(BASIC_BANNER) == 1 and FULL_BANNER not in text
    assert text.index("<h1>bundle test</h1>") < text.index(BASIC_BANNER) < text.index("Plotly.newPlot")


def test_a_page_with_another_trace_type_inlines_the_full_bundle(tmp_path):
    """One heatmap among bars makes the whole page carry plotly.js's full bundle (once), not the basic one."""
    page, text = _page(tmp_path, ["bar", "heatmap"])
    assert page.plotlyjs()[0] == "full"
    assert text.count(FULL_BANNER) == 1 and BASIC_BANNER not in text
    assert plotlyjs_for({"scatter", "bar", "pie"})[0] == "basic" and plotlyjs_for({"scatter", "histogram"})[0] == "full"


def test_a_plotly_of_another_plotlyjs_version_gets_the_full_bundle(tmp_path, monkeypatch):
    """Under a plotly package whose plotly.js is not the basic bundle's version, pages inline that
    package's full bundle, whose figures' JSON it reads as it wrote them."""
    monkeypatch.setattr(plotly.offline, "get_plotlyjs_version", lambda: "0.0.0-other")
    page, text = _page(tmp_path, ["scatter", "bar"])
    assert page.plotlyjs()[0] == "full" and BASIC_BANNER not in text and text.count(FULL_BANNER) == 1


def test_a_page_without_figures_inlines_no_plotlyjs(tmp_path):
    """A page with no figure carries no plotly.js at all."""
    _, text = _page(tmp_path, [])
    assert BASIC_BANNER not in text and FULL_BANNER not in text


def test_every_figure_is_drawn_by_one_script_after_plotlyjs_at_the_end_of_the_page(tmp_path):
    """A page's figure divs and HTML all come before plotly.js, and after plotly.js one script draws
    every figure, in page order: the browser lays the page out once and draws the figures in one
    task (no rendering pass between figures)."""
    page, text = _page(tmp_path, ["scatter", "bar", "scatter"])
    ids = list(page.figures)
    bundle_at = text.index(BASIC_BANNER)
    assert all(text.index(f'id="{i}"') < bundle_at for i in ids)
    scripts = re.findall(r"<script>(.*?)</script>", text[bundle_at:], re.S)  # the ones after the bundle's own
    assert len(scripts) == 1
    calls = re.findall(r'Plotly\.newPlot\(\s*"([^"]+)"', scripts[0])
    assert calls == ids and text.count("Plotly.newPlot(") == len(ids)
    assert text[text.index(scripts[0]) + len(scripts[0]):] == "</script>\n</body></html>\n"


def test_split_figure_html_refuses_plotly_html_without_exactly_one_script():
    """The div/script split of plotly's figure HTML names what it found when plotly's output is not
    one div and one script (another plotly version's layout would otherwise drop a figure silently)."""
    with pytest.raises(ValueError, match="found 0"):
        split_figure_html("<div id='a'></div>")
    div, draw = split_figure_html(go.Figure().to_html(full_html=False, include_plotlyjs=False, div_id="f"))
    assert 'id="f"' in div and "<script" not in div and draw.count("Plotly.newPlot(") == 1


# ------------------------------------------------------------------------------------------- in Chromium
# Per page: the plotly.js loaded (version, registered trace types) and, per figure div, whether it drew.
BUNDLE_CHECK = """() => ({
  version: window.Plotly && Plotly.version,
  traces: window.Plotly ? Object.keys(Plotly.PlotSchema.get().traces).sort() : [],
  figures: Array.from(document.querySelectorAll('.plotly-graph-div')).map(gd => ({
    id: gd.id, svg: !!gd.querySelector('.main-svg'), layout: !!gd._fullLayout,
    types: (gd._fullData || []).map(t => t.type)})),
})"""


def _draw(browser, path: Path) -> dict:  # noqa: F811
    """Open ``path``; wait until every figure div has drawn; fail on any console or page error."""
    errors: list[str] = []
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                           ".every(d => d.querySelector('.main-svg') && d._fullLayout)", timeout=120_000)
    out = page.evaluate(BUNDLE_CHECK)
    page.close()
    assert errors == [], errors
    return out


def _assert_drawn_with(check: dict, path: Path, bundle: str) -> None:
    """Every figure div of the file drew, under the plotly package's plotly.js version, with the
    bundle named (basic: exactly the basic trace types registered)."""
    text = path.read_text(encoding="utf-8")
    assert check["version"] == plotly.offline.get_plotlyjs_version()
    ids = {f["id"] for f in check["figures"]}
    assert len(ids) == text.count('class="plotly-graph-div"') > 0, (ids, path)
    assert all(f["svg"] and f["layout"] for f in check["figures"]), check["figures"]
    if bundle == "basic":
        assert check["traces"] == sorted(BASIC_TRACES) and text.count(BASIC_BANNER) == 1 and FULL_BANNER not in text
    else:
        assert set(check["traces"]) > BASIC_TRACES and text.count(FULL_BANNER) == 1 and BASIC_BANNER not in text


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> dict[str, Path]:
    """The pages locosim writes, each from real runs: dashboards (with losses; with faults), the
    comparison of five methods, the comparison of a sweep (its metric-vs-parameter figures) and a
    bandwidth chart."""
    import yaml

    from sim.cli import main
    from sim.report.compare import write_compare
    from sim.sweep.plan import plan_sweep
    from sim.sweep.run import run_sweep
    from tests.test_bandwidth_cli import _pair
    from tests.test_report import make_fault_run, make_runs

    out = tmp_path_factory.mktemp("bundle-pages")
    root, runs = make_runs(tmp_path_factory)
    write_compare([root], out / "compare.html", baseline="ddp")
    plan = plan_sweep(ROOT / "scenarios" / "quickstart.yaml", {"algorithm.inner_steps": [2, 4]}, [0, 1],
                      TINY + ["run.max_rounds=1", "run.eval_every_steps=null"])
    run_sweep(plan, out / "sweep")
    write_compare([out / "sweep"], out / "sweep.html")
    scenario = out / "pair.yaml"
    scenario.write_text(yaml.safe_dump(_pair(run={"max_rounds": 4}, variants={
        "ddp": {"algorithm": {"name": "ddp", "payload_dtype": "bf16"}}, "diloco": {}}), sort_keys=False))
    assert main(["bandwidth", str(scenario), "--cu", "0.5,0.999", "--grid-min", "0.5", "--grid-max", "8",
                 "--grid-points", "5", "-o", str(out / "bandwidth.html")]) == 0
    return {"dashboard": runs["diloco"] / "dashboard.html",
            "faults": make_fault_run(tmp_path_factory) / "dashboard.html", "compare": out / "compare.html", "sweep": out / "sweep.html", "bandwidth": out / "bandwidth.html"}


@pytest.mark.parametrize("name", ["dashboard", "faults", "compare", "sweep", "bandwidth"])
def test_every_page_draws_every_figure_with_the_basic_bundle(browser, pages, name):  # noqa: F811
    """Each kind of page locosim writes inlines the basic bundle, and in Chromium every one of its
    figure divs draws (an SVG and plotly's full layout) with no console error."""
    path = pages[name]
    check = _draw(browser, path)
    _assert_drawn_with(check, path, "basic")
    if name == "sweep":
        assert any(f["id"].startswith("sweep-") for f in check["figures"]), check["figures"]


def test_a_page_with_another_trace_type_draws_with_the_full_bundle(browser, tmp_path):  # noqa: F811
    """A page with a heatmap inlines the full bundle, and in Chromium its heatmap and its bar chart
    both draw."""
    _, _ = _page(tmp_path, ["bar", "heatmap"])
    check = _draw(browser, tmp_path / "page.html")
    _assert_drawn_with(check, tmp_path / "page.html", "full")
    assert [f["types"] for f in check["figures"]] == [["bar"], ["heatmap"]]


def test_a_figure_whose_drawing_throws_leaves_the_others_drawn(browser, tmp_path):  # noqa: F811
    """One script draws every figure, yet a figure whose drawing throws does not stop the figures
    after it: they draw, and the error reaches the browser's console."""
    page = Page("throwing figure")
    for i in range(3):
        page.figure(f"fig-{i}", _figure("bar"))
    page.draws[1] = "throw new Error('figure 1 failed');"
    page.write(tmp_path / "page.html")
    errors: list[str] = []
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.goto((tmp_path / "page.html").resolve().as_uri(), wait_until="load")
    drawn = tab.evaluate("() => ['fig-0', 'fig-1', 'fig-2'].map(i => !!document.querySelector('#' + i + ' .main-svg'))")
    tab.close()
    assert drawn == [True, False, True] and any("figure 1 failed" in e for e in errors), (drawn, errors)


def _screenshot(browser, path: Path) -> bytes:  # noqa: F811
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => Array.from(document.querySelectorAll('.plotly-graph-div'))"
                           ".every(d => d.querySelector('.main-svg') && d._fullLayout)", timeout=120_000)
    page.wait_for_timeout(300)
    shot = page.screenshot(full_page=True)
    page.close()
    return shot


@pytest.mark.parametrize("name", ["dashboard", "compare", "bandwidth"])
def test_the_basic_bundle_draws_the_same_pixels_as_the_full_one(browser, pages, name, tmp_path):  # noqa: F811
    """A page drawn with the basic bundle is pixel for pixel the page drawn with plotly's full bundle
    (the same file with the full bundle put in its place): the smaller bundle changes nothing visible."""
    path = pages[name]
    text = path.read_text(encoding="utf-8")
    basic = basic_bundle()[1]
    assert text.count(basic) == 1
    full = tmp_path / f"{name}-full.html"
    full.write_text(text.replace(basic, plotly.offline.get_plotlyjs()), encoding="utf-8")
    assert _screenshot(browser, path) == _screenshot(browser, full)


def _drawn_where_they_stand(text: str) -> str:
    """The same page laid out as plotly's own ``to_html`` does: plotly.js just before the first
    figure and each figure's script right after its div (drawn one at a time as the page loads)."""
    head, _, tail = text.partition(PLOTLY_CONFIG_JS + "\n<script>")
    bundle, _, rest = tail.partition("</script>\n<script>\n")
    draws, _, end = rest.partition("\n</script>")
    assert bundle and draws and end == "\n</body></html>\n"
    for n, draw in enumerate(draws.split("\n")):
        fig_id = re.search(r'Plotly\.newPlot\(\s*"([^"]+)"', draw).group(1)
        div = re.search(r'<div id="%s" class="plotly-graph-div"[^>]*></div>' % re.escape(fig_id), head).group(0)
        before = f"{PLOTLY_CONFIG_JS}\n<script>{bundle}</script>" if n == 0 else ""
        head = head.replace(div, f"{before}{div}<script>{draw}</script>", 1)
    return head + end


@pytest.mark.parametrize("name", ["dashboard", "faults", "compare"])
def test_one_drawing_script_draws_the_same_pixels_as_one_script_per_figure(browser, pages, name, tmp_path):  # noqa: F811
    """Drawing every figure from one script at the end of the page shows, once drawn, exactly the
    pixels of the same page with plotly.js before its first figure and each figure drawn by its own
    script where it stands (plotly's to_html layout, which pages had before)."""
    path = pages[name]
    old = tmp_path / f"{name}-per-figure.html"
    old.write_text(_drawn_where_they_stand(path.read_text(encoding="utf-8")), encoding="utf-8")
    assert old.read_text(encoding="utf-8").count("Plotly.newPlot(") == path.read_text(encoding="utf-8").count(
        "Plotly.newPlot(") > 0
    assert _screenshot(browser, path) == _screenshot(browser, old)
