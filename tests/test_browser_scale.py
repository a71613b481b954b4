"""The dashboard of a 1,024-worker run in a real headless Chromium: under 5 MB (plotly.js included: its
basic bundle, 1.2 MB, sim/report/page.py), no console errors, every figure drew its data, and the
timeline's worker selector (its rows deduplicated in the page) adds a worker's own row. Its draw
time is a benchmark (``bench/scale.py --only dashboard_1024``), not asserted here."""

from __future__ import annotations

import pytest

from tests.test_browser import _assert_all_drawn, _open_and_check, browser  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def big_dashboard(tmp_path_factory):
    from bench.scale import LAYER_METHODS, ring_scenario
    from sim.runner import Simulation
    from sim.scenario import parse_scenario
    from sim.writer import run_to_dir

    sim = Simulation(parse_scenario(ring_scenario(1024, 8, LAYER_METHODS["diloco"], {"max_rounds": 2})))
    sim.run()
    out = tmp_path_factory.mktemp("big") / "run"
    run_to_dir(sim, out)
    return out / "dashboard.html"


@pytest.mark.slow
def test_a_1024_worker_dashboard_is_small_and_draws(browser, big_dashboard):  # noqa: F811
    """A 1,024-worker, 8-region layer-grain DiLoCo run's dashboard is under 5,000,000 bytes, opens
    without errors with every figure drawn, and picking a worker in the timeline's selector
    adds that worker's row (its bars drawn, with the region rows)."""
    assert big_dashboard.stat().st_size < 5_000_000
    figures = _open_and_check(browser, big_dashboard, "dashboard_1024.png")
    _assert_all_drawn(figures, {"fig-timeline", "fig-steps", "fig-util-node", "fig-util-region",
                                "fig-throughput-link", "fig-throughput-pair", "fig-bytes-link", "fig-topology"})
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(big_dashboard.resolve().as_uri(), wait_until="load")
        page.wait_for_function("() => document.querySelectorAll('#fig-timeline .main-svg').length > 0")
        options = page.evaluate("() => document.getElementById('fig-timeline-worker').options.length")
        assert options == 1 + 1024
        page.select_option("#fig-timeline-worker", "r3/17")
        rows = page.evaluate("() => document.getElementById('fig-timeline').layout.yaxis.categoryarray")
        bars = page.evaluate("() => document.getElementById('fig-timeline').data.slice(4)"
                             ".reduce((n, t) => n + t.x.length, 0)")
        assert rows[-1] == "r3/17" and len(rows) == 9 and bars > 0
    finally:
        page.close()
