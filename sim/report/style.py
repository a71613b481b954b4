"""The report's one look: colours (worker states, methods, links), fonts, figure and page
layout defaults, and how numbers are written (bytes, seconds, Gbit/s).

Every page (run dashboard, comparison, sweep, bandwidth) takes its colours and layout from
here, so that a colour means one thing on every page: green compute, red comm-blocked,
orange straggler-wait, grey down, and no method or link colour is a state colour. No plotly
here (plain values and string formatting), so that modules which only compute numbers for
a page (``compare_analysis``, ``phases``) can import the state vocabulary without plotly;
the plotly side of the look (an empty figure with this layout) is ``sim.report.figure``.
"""

from __future__ import annotations

import numpy as np

from sim.metrics.records import STATES as RECORDED_STATES

# ---------------------------------------------------------------------- colours
# One look for every page: compute green, comm red, waiting orange, down grey.
STATE_COLORS = {"compute": "#2ca02c", "comm_blocked": "#d62728", "straggler_wait": "#ff7f0e", "down": "#7f7f7f"}
STATE_LABELS = {"compute": "compute", "comm_blocked": "comm-blocked", "straggler_wait": "straggler-wait",
                "down": "down"}
STATES = list(RECORDED_STATES)  # the order the records name them in

# Colours of methods (runs) on the comparison, sweep and bandwidth pages: none of them is a state
# colour, so a colour means one thing on the whole page.
PALETTE = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#7b4173", "#6b6ecf",
           "#8c6d31"]
# Colours of links and region pairs: none is a state colour, none a compare-page method colour.
SERIES_PALETTE = ["#1f77b4", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#393b79", "#7b4173"]

# Fault spans and fetches on the faults chart: tag -> (legend label, colour).
FAULT_STYLE = {
    "failure": ("node down (failure)", "#d62728"), "churn": ("node absent (churn)", "#9467bd"),
    "slow_period": ("slow period", "#ff7f0e"), "link_outage": ("link outage", "#8c564b"),
    "link_degraded": ("link degraded", "#e377c2"), "recovery": ("parameter fetch from a peer", "#17becf"),
}
DROPPED_SYMBOLS = {"late": "x", "down": "circle-x", "rejoined": "diamond-x"}
DROPPED_COLOR = "#111111"
UNKNOWN_COLOR = "#7f7f7f"  # a fault tag this module does not know

# Single-run curves and bars (blues: a run's own page has no method colours).
EVAL_COLOR = "#08519c"  # eval loss of the global model; peak bandwidth; region outlines
TRAIN_COLOR = "#9ecae1"  # train loss, mean of the workers
REPLICA_COLOR = "#fdae6b"  # each replica's own eval loss
MEAN_BW_COLOR = "#6baed6"  # mean bandwidth over the run
REGION_FILL = "#deebf7"  # a region's circle on the topology picture
WAN_COLOR = "#6a51a3"  # WAN links (bytes per link, topology picture)
INTRA_COLOR = "#bcbddc"  # intra-region links
WARM_UP_COLOR = "#444"  # the warm-up line; error bars
REFERENCE_COLOR = "#888"  # capacity and target lines
FAIR_COLOR = "#555"  # the compare page's equal-time / equal-tokens lines
FLOOR_COLOR = "black"  # the loss floor; a link's capacity marker
OUTLINE_COLOR = "#333"  # outlines of markers and patterned bars
STALENESS_COLOR = "#1f77b4"
SERVER_COLOR = "#2ca02c"
BANDWIDTH_TARGET_COLOR = "#999"

# ---------------------------------------------------------------------- fonts and layout
TITLE_FONT_SIZE = 15  # a figure's title
PANEL_FONT_SIZE = 12  # subplot titles (smaller than the figure's); the page's font
FIGURE_HEIGHT = 380
FIGURE_MARGIN = {"t": 60, "b": 50, "l": 60, "r": 20}
LEGEND = {"orientation": "h", "y": -0.18}  # below the plot, out of the curves' way
PLAIN_MARGIN = {"l": 60, "r": 20, "t": 50, "b": 50}  # the asynchrony and sweep figures
CONFIG = {"displaylogo": False, "responsive": True}  # plotly's toolbar on every page

MAX_GANTT_ROWS = 64  # above this many workers, per-worker figures show one row per region (or a sample)

TOOLBAR_PX = 44  # plotly's toolbar (modebar) fills the top ~27 px at the right; a title anchored this far down
# (plotly puts the text box ~14 px above its anchor) starts below it
TITLE_CHARS = {False: 70, True: 150}  # characters per title line in a half-width / full-width figure

# A figure's width in pixels on a page at its full width (CSS below: body at most 1400 px with 1em padding,
# two columns 1em apart): what sim.report.margins lays its x labels out for.
FIGURE_PX = {False: 676, True: 1368}

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.2em auto;max-width:1400px;padding:0 1em;
color:#222}
h1{margin-bottom:.2em} h2{margin-top:1.4em;border-bottom:1px solid #ddd;padding-bottom:.2em}
p.desc{color:#555;margin-top:0}
table.kv th{text-align:left;padding:2px 1.5em 2px 0;color:#444;font-weight:600;vertical-align:top}
table.kv td{padding:2px 0}
table.grid{border-collapse:collapse;font-size:.92em;display:block;max-width:100%;overflow-x:auto} table.grid th,table.grid td{border:1px solid #ddd;padding:3px 8px}
table.grid th{background:#f4f4f4} table.grid td.num{text-align:right;font-variant-numeric:tabular-nums}
table.grid.fit{display:table;width:100%;table-layout:fixed;overflow:visible} table.grid.fit td,table.grid.fit th{overflow-wrap:anywhere}
table.grid.fit th.measure{text-align:left;font-weight:600;width:15em} .delta{color:#666;font-size:.85em} .algo{color:#666;font-weight:400}
#runs-table{display:table;width:100%;overflow:visible} #runs-table td{overflow-wrap:anywhere}
@media print{table.grid{display:table;overflow:visible;max-width:none} .cols{display:block}}
.cols{display:grid;grid-template-columns:minmax(0,1fr) minmax(0,1fr);gap:1em}
.cols>.wide{grid-column:1 / span 2} .fig{min-height:200px}
.note{color:#666;font-size:.9em}
.notice{background:#fff4d6;border-left:4px solid #b8860b;padding:.5em .8em;margin:.8em 0}
.swatch{display:inline-block;width:.9em;height:.9em;border-radius:2px;
vertical-align:middle;margin-right:.4em}
"""


def rgba(hex_color: str, alpha: float) -> str:
    """A ``#rrggbb`` colour with opacity ``alpha`` (a band's fill, a lighter bar)."""
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def wrap_title(text: str, width: int) -> list[str]:
    """A figure title cut at spaces into lines of at most ``width`` characters (plotly does not
    wrap titles: a long one runs under the toolbar or off the figure)."""
    lines: list[str] = []
    for word in str(text).split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines or [""]


def f32(values) -> np.ndarray:
    """Plot coordinates as float32: plotly writes arrays as binary (4 bytes a value, not 8), and
    7 significant digits are far below a pixel of any axis here."""
    return np.asarray(values, dtype=np.float32)


# ---------------------------------------------------------------------- numbers
def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(b) < 1000 or unit == "PB":
            return f"{b:,.1f} {unit}"
        b /= 1000.0
    return f"{b:.1f} PB"


def byte_unit(max_bytes: float) -> tuple[float, str]:
    """(divisor, unit) for a byte axis whose largest value is ``max_bytes``: kB, MB, GB, TB or PB
    (powers of 1000, as ``fmt_bytes``). A byte axis is drawn in these units, never with plotly's
    SI suffixes, whose "B" (billion) next to "bytes" reads as bytes."""
    for div, unit in ((1e15, "PB"), (1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if max_bytes >= div:
            return div, unit
    return 1.0, "bytes"


def fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s:,.2f} s"


def fmt_gbps(g: float | None) -> str:
    return "-" if g is None else f"{g:,.3g} Gbit/s"
