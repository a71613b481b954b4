"""The report's shortcuts for 1,024-worker runs give what the plain paths give: the timeline
selector's rows from a grid rounded once, and from the slices' own bins when the selector's
grid is the same grid."""

from __future__ import annotations

import numpy as np


def test_majority_runs_with_the_grid_rounded_once_equal_the_plain_ones():
    """``majority_runs`` given its edges rounded to 6 decimals beforehand returns the same rows
    (values and types) as rounding each run's ends itself: 2,000 random bin tables on grids of
    non-round edges."""
    from sim.report.timeline import majority_runs
    from tests.test_fast_paths import random_bin_table

    r = np.random.default_rng(1)
    for trial in range(2000):
        t = random_bin_table(r, 40)
        nb = t.shape[1]
        edges = np.linspace(0.0, float(r.random() * 1e4), nb + 1) if trial % 2 else np.sort(r.random(nb + 1)) * 77.7
        rounded = [round(x, 6) for x in edges.tolist()]
        plain = majority_runs(t, edges)
        once = majority_runs(t, edges, rounded)
        assert once == plain
        assert [type(x) for row in once for x in row] == [type(x) for row in plain for x in row]


def test_the_selector_of_a_large_run_equals_binning_its_workers_again():
    """Above ``MAX_GANTT_ROWS`` workers, the timeline's selector rows (built from the slices'
    own per-worker bins) equal each worker's spans binned afresh on the selector's grid and
    merged by ``segments_from_bins``, rounded to 6 decimals."""
    import pandas as pd

    from sim.report.runs import RunData
    from sim.report.style import MAX_GANTT_ROWS, STATES
    from sim.report.timeline import segments_from_bins, state_times_by_node, timeline

    r = np.random.default_rng(7)
    nodes = [f"r{i % 3}/{i}" for i in range(MAX_GANTT_ROWS + 9)]
    rows = []
    for n in nodes:
        t = 0.0
        while t < 50.0:
            d = float(r.exponential(0.7))
            rows.append({"kind": "state", "node": n, "state": STATES[int(r.integers(0, len(STATES)))],
                         "start_s": t, "end_s": min(t + d, 50.0), "step": 0})
            t += d
    events = pd.DataFrame(rows)
    summary = {"per_node": dict.fromkeys(nodes, {}), "sim_duration_s": 50.0}
    run = RunData(None, {}, summary, events, pd.DataFrame(), label="x")
    _fig, selector = timeline(run)
    edges = np.linspace(0.0, 50.0, 201)
    binned = state_times_by_node(events, nodes, edges)
    for n in nodes:
        merged = [[round(a, 6), round(b, 6), s] for a, b, s, _ in segments_from_bins(binned[n], edges)]
        assert selector["workers"][n] == merged


def test_the_page_template_built_once_per_trace_types_is_each_figures_own_copy():
    """A figure placed on a page gets plotly_white with only its own trace types' defaults (the
    same JSON as building the template afresh), and changing one figure's template changes
    neither another figure's nor the next page's."""
    import plotly.graph_objects as go
    import plotly.io as pio

    from sim.report.page import Page

    def fresh(types):
        base = pio.templates["plotly_white"]
        return go.layout.Template(layout=base.layout,
                                  data={k: v for k, v in base.data.to_plotly_json().items() if k in types})

    page = Page("t")
    a = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    b = go.Figure([go.Scatter(x=[1], y=[2]), go.Bar(x=[1], y=[2])])
    page.figure("a", a)
    page.figure("b", b)
    assert a.layout.template.to_plotly_json() == fresh({"scatter"}).to_plotly_json()
    assert b.layout.template.to_plotly_json() == fresh({"scatter", "bar"}).to_plotly_json()
    a.layout.template.layout.font.size = 99
    c = go.Figure(go.Scatter(x=[1], y=[2]))
    Page("u").figure("c", c)
    assert c.layout.template.layout.font.size != 99
    assert c.layout.template.to_plotly_json() == fresh({"scatter"}).to_plotly_json()
