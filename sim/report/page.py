"""One self-contained HTML page of plotly figures (plotly.js embedded once, works offline),
its HTML tables, and static PNG export of the same figures.

plotly.js is most of a page's bytes and of the time a browser takes to draw it. A page whose
figures use only the trace types of plotly.js's basic bundle (``scatter``, ``bar``, ``pie``:
sim/report/assets, 1.2 MB) inlines that bundle instead of the full one the plotly package
embeds (4.8 MB), provided both are the same plotly.js version, so that the figures' JSON means
the same to either; any other page inlines the full bundle.

plotly.js and the scripts that draw the figures come last in the page, all figures drawn by one
script: the browser lays out and paints the page's text and the figures' empty boxes once, then
draws every figure in one task, instead of a rendering pass between figures (each figure was its
own script, placed where it is drawn). What the page shows once drawn is the same.

Each figure is given the margins its axis labels will need (``sim.report.margins``, estimated in
Python from its labels) before plotly draws it: where tick labels are wider than a figure's margins,
plotly (``automargin``) draws the figure a second time with the margins it measured (5 of the 9
figures of a 1,024-worker dashboard, ~15% of its draw). ``automargin`` stays on, so a viewer whose
font is wider than the estimate's, or whose window is narrower than the page's full width, still gets
that second pass and every label; a narrower font leaves a few pixels of extra margin.

Separate from what goes on a page (``dashboard``, ``compare``, ``bandwidth``) and from its look
(``style``): this module only assembles sections and writes the file.

PNG export goes through kaleido, which drives a Chromium it finds on the machine
(Debian's ``chromium`` package, or the browser named by ``BROWSER_PATH``); without
kaleido or a Chromium it skips and says so in one line instead of failing a run.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from functools import lru_cache
from importlib import resources
from pathlib import Path

import plotly.graph_objects as go

from sim.outputs import OutputError, check_png_dir, generator_meta, mark_png, write_atomic
from sim.report.margins import fit_margins
from sim.report.style import CONFIG, CSS, FIGURE_PX, PANEL_FONT_SIZE, TITLE_CHARS, TOOLBAR_PX, wrap_title


# The trace types plotly.js's basic bundle registers (its package README; the browser test reads
# them from the bundle itself).
BASIC_TRACES = frozenset({"scatter", "bar", "pie"})
BASIC_BUNDLE = "plotly-basic.min.js"
# What plotly's own to_html writes before plotly.js (no MathJax is loaded: plotly.js uses none).
PLOTLY_CONFIG_JS = "<script>window.PlotlyConfig = {MathJaxConfig: 'local'};</script>"
_SCRIPT = re.compile(r"<script[^>]*>(.*?)</script>", re.S)


@lru_cache(maxsize=None)
def basic_bundle() -> tuple[str, str]:
    """(the basic bundle's plotly.js version, its text), read from the package's assets."""
    text = resources.files("sim.report").joinpath("assets", BASIC_BUNDLE).read_text(encoding="utf-8")
    found = re.search(r"plotly\.js \(basic - minified\) v(\S+)", text[:300])
    return (found.group(1) if found else ""), text


def plotlyjs_for(trace_types: set[str]) -> tuple[str, str]:
    """("basic" or "full", the plotly.js text) for a page whose figures have ``trace_types``: the
    basic bundle when it registers all of them and is the plotly package's plotly.js version."""
    import plotly.offline

    version, text = basic_bundle()
    if trace_types <= BASIC_TRACES and version == plotly.offline.get_plotlyjs_version():
        return "basic", text
    return "full", plotly.offline.get_plotlyjs()


def split_figure_html(div: str) -> tuple[str, str]:
    """(the figure's div, the script that draws it) of plotly's ``to_html(full_html=False,
    include_plotlyjs=False)``: one div and one script (its JSON escapes ``</``, so no script ends
    early)."""
    scripts = _SCRIPT.findall(div)
    if len(scripts) != 1:
        raise ValueError(f"expected one <script> in plotly's figure HTML, found {len(scripts)}")
    return _SCRIPT.sub("", div, count=1), scripts[0].strip()


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
    return _template_for(frozenset(t.type for t in fig.data))


@lru_cache(maxsize=None)
def _template_for(types: frozenset) -> go.layout.Template:
    """``_template`` of a figure with these trace types, built once per set (a figure given it
    keeps its own copy: plotly copies a template object it is assigned)."""
    import plotly.io as pio

    base = pio.templates["plotly_white"]
    return go.layout.Template(layout=base.layout,
                              data={k: v for k, v in base.data.to_plotly_json().items() if k in types})


class Page:
    """Sections of HTML and figures, written as one file with plotly.js inlined once, after the
    page's HTML, followed by one script that draws every figure."""

    def __init__(self, title: str, kind: str = "page"):
        self.title = title
        self.kind = kind  # the generator mark (sim.outputs): which output flag may replace the file
        self.parts: list[str] = []
        self.figures: dict[str, go.Figure] = {}
        self.draws: list[str] = []  # per figure, in page order, the script that draws it

    def html(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig_id: str, fig: go.Figure, wide: bool = False) -> None:
        """Add a figure in its own div ``fig_id`` (the div the browser test looks for)."""
        self.figures[fig_id] = fig
        fig.update_layout(template=_template(fig), font={"size": PANEL_FONT_SIZE})
        place_title(fig, wide)
        fit_margins(fig, FIGURE_PX[wide])  # plotly then lays it out once (no automargin redraw)
        # The div goes here; the script that draws it goes to the end of the page, after plotly.js (which
        # bundle is known only once every figure is in: write).
        div, draw = split_figure_html(fig.to_html(full_html=False, include_plotlyjs=False, div_id=fig_id,
                                                  config=CONFIG))
        self.draws.append(draw)
        self.parts.append(f"<div class='fig{' wide' if wide else ''}'>{div}</div>")

    def plotlyjs(self) -> tuple[str, str]:
        """("basic" or "full", the plotly.js text) this page inlines (``plotlyjs_for`` its figures)."""
        return plotlyjs_for({t.type for fig in self.figures.values() for t in fig.data})

    def data(self, element_id: str, obj) -> None:
        """Embed JSON for scripts and tests (a <script type=application/json>)."""
        from sim.metrics.records import finite_json

        text = json.dumps(finite_json(obj), default=str, allow_nan=False).replace("</", "<\\/")  # no bare NaN
        self.parts.append(f"<script type='application/json' id='{element_id}'>{text}</script>")

    def write(self, path: Path) -> None:
        parts = list(self.parts)
        if self.draws:  # plotly.js, then one script drawing every figure; one that throws leaves the others drawn
            _, js = self.plotlyjs()
            draws = "\n".join(f"try {{ {d} }} catch (e) {{ console.error(e); }}" for d in self.draws)
            parts.append(f"{PLOTLY_CONFIG_JS}\n<script>{js}</script>\n<script>\n{draws}\n</script>")
        page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
                f"<meta name='viewport' content='width=device-width, initial-scale=1'>{generator_meta(self.kind)}"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>\n"
                + "\n".join(parts) + "\n</body></html>\n")
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
