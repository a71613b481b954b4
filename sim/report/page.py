"""One self-contained HTML page of plotly figures (plotly.js embedded once, works offline),
and static PNG export of the same figures.

PNG export goes through kaleido, which drives a Chromium it finds on the machine
(Debian's ``chromium`` package, or the browser named by ``BROWSER_PATH``); without
kaleido or a Chromium it skips and says so in one line instead of failing a run.
"""

from __future__ import annotations

import html
import json
import os
import shutil
from pathlib import Path

import plotly.graph_objects as go

from sim.outputs import OutputError, check_png_dir, generator_meta, mark_png, write_atomic

# One look for every page: compute green, comm red, waiting orange, down grey.
STATE_COLORS = {"compute": "#2ca02c", "comm_blocked": "#d62728", "straggler_wait": "#ff7f0e", "down": "#7f7f7f"}
STATE_LABELS = {"compute": "compute", "comm_blocked": "comm-blocked", "straggler_wait": "straggler-wait",
                "down": "down"}
CONFIG = {"displaylogo": False, "responsive": True}

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


# What the two byte counts on every page mean (routed traffic is why WAN bytes can be larger).
BYTES_DEFINITION = ("<b>Bytes on the wire</b>: the payload of every transfer, counted once however many links it "
                    "crosses (intra-region included). <b>WAN bytes</b>: bytes over WAN links, counted once per WAN "
                    "link a transfer crosses; a transfer routed through a third region crosses two WAN links and "
                    "counts twice, so WAN bytes can exceed bytes on the wire.")


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


def fmt_s(s: float | None) -> str:
    return "-" if s is None else f"{s:,.2f} s"


def fmt_gbps(g: float | None) -> str:
    return "-" if g is None else f"{g:,.3g} Gbit/s"


def kv_table(rows: list[tuple[str, object]]) -> str:
    trs = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f"<table class='kv'>{trs}</table>"


def grid_table(header: list[str], rows: list[list[object]], table_id: str, raw_first: bool = False) -> str:
    """An HTML table; numbers right-aligned. ``raw_first``: the first cell is trusted HTML (a swatch)."""
    ths = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        tds = []
        for i, v in enumerate(row):
            numeric = isinstance(v, (int, float)) or (isinstance(v, str) and v[:1] in tuple("+-0123456789\u2212"))
            cls = " class='num'" if numeric else ""
            tds.append(f"<td{cls}>{v if (raw_first and i == 0) else html.escape(str(v))}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f"<table class='grid' id='{table_id}'><thead><tr>{ths}</tr></thead><tbody>{''.join(body)}</tbody></table>"


TOOLBAR_PX = 44  # plotly's toolbar (modebar) fills the top ~27 px at the right; a title anchored this far down
# (plotly puts the text box ~14 px above its anchor) starts below it
TITLE_CHARS = {False: 70, True: 150}  # characters per title line in a half-width / full-width figure


def place_title(fig: go.Figure, wide: bool) -> None:
    """Wrap the title to the figure's width and put it below the toolbar, with the top margin it
    needs, so that the toolbar never covers its end."""
    text = fig.layout.title.text or ""
    if "<br>" in text:
        lines = text.split("<br>")
    else:
        lines = wrap_title(text, TITLE_CHARS[wide])
    height = fig.layout.height or 450
    line_px = 20
    fig.update_layout(title={"text": "<br>".join(lines), "yref": "container", "yanchor": "top",
                             "y": 1 - TOOLBAR_PX / height, "x": 0.01, "xanchor": "left"},
                      margin={"t": TOOLBAR_PX + line_px * len(lines) + 16})


def _template(fig: go.Figure) -> go.layout.Template:
    """plotly_white with trace defaults for the figure's own trace types only: the page writes
    the template into every figure, and its defaults for ~30 trace types are 4 kB a figure."""
    import plotly.io as pio

    base = pio.templates["plotly_white"]
    types = {t.type for t in fig.data}
    return go.layout.Template(layout=base.layout,
                              data={k: v for k, v in base.data.to_plotly_json().items() if k in types})


class Page:
    """Sections of HTML and figures, written as one file with plotly.js inlined once."""

    def __init__(self, title: str, kind: str = "page"):
        self.title = title
        self.kind = kind  # the generator mark (sim.outputs): which output flag may replace the file
        self.parts: list[str] = []
        self.figures: dict[str, go.Figure] = {}
        self._first_fig = True

    def html(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig_id: str, fig: go.Figure, wide: bool = False) -> None:
        """Add a figure in its own div ``fig_id`` (the div the browser test looks for)."""
        self.figures[fig_id] = fig
        fig.update_layout(template=_template(fig), font={"size": 12})
        place_title(fig, wide)
        div = fig.to_html(full_html=False, include_plotlyjs=self._first_fig, div_id=fig_id, config=CONFIG)
        self._first_fig = False
        self.parts.append(f"<div class='fig{' wide' if wide else ''}'>{div}</div>")

    def data(self, element_id: str, obj) -> None:
        """Embed JSON for scripts and tests (a <script type=application/json>)."""
        from sim.metrics.records import finite_json

        text = json.dumps(finite_json(obj), default=str, allow_nan=False).replace("</", "<\\/")  # no bare NaN
        self.parts.append(f"<script type='application/json' id='{element_id}'>{text}</script>")

    def write(self, path: Path) -> None:
        page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>{generator_meta(self.kind)}"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(self.parts) + "\n</body></html>\n")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, page)


def find_chromium() -> str | None:
    """A Chromium or Chrome executable for kaleido: $BROWSER_PATH, else one on PATH."""
    env = os.environ.get("BROWSER_PATH")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def export_pngs(figures: dict[str, go.Figure], out_dir: Path, width: int = 1100, height: int | None = None
                ) -> tuple[list[Path], str | None]:
    """Write ``<fig id>.png`` for every figure into ``out_dir``. Returns (files written, None),
    or ([], one line saying why nothing was written) when kaleido or Chromium is missing."""
    try:
        import kaleido  # noqa: F401
    except ImportError:
        return [], "png export skipped: kaleido is not installed (pip install 'locosim[browser]')"
    browser = find_chromium()
    if browser is None:
        return [], ("png export skipped: no Chromium found (install the system's chromium package, "
                    "or set BROWSER_PATH to a Chrome/Chromium executable)")
    os.environ.setdefault("BROWSER_PATH", browser)  # where kaleido's choreographer looks first
    import plotly.io as pio

    out_dir = Path(out_dir)
    names = [f"{fig_id}.png" for fig_id in figures]
    try:  # checked before the work by the command too; again now (sim.outputs: never replace another's file)
        check_png_dir(out_dir, names)
        out_dir.mkdir(parents=True, exist_ok=True)
    except (OutputError, OSError) as err:
        return [], f"png export skipped: {out_dir}: {err}"
    paths = [out_dir / n for n in names]
    heights = [height or int(f.layout.height or 450) for f in figures.values()]
    import tempfile

    with tempfile.TemporaryDirectory(prefix=".locosim-png-", dir=out_dir) as tmp:
        drawn = [Path(tmp) / n for n in names]
        try:
            pio.write_images(list(figures.values()), drawn, format="png", width=width, height=heights)
        except Exception as err:  # a browser that will not start: say so, do not fail the run
            return [], f"png export skipped: kaleido could not render with {browser} ({type(err).__name__}: " \
                       f"{str(err).splitlines()[0] if str(err) else ''})"
        for src, dst in zip(drawn, paths):  # marked as ours, so that a later export may replace them
            write_atomic(dst, mark_png(src.read_bytes()))
    return paths, None
