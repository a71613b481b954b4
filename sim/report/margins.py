"""Margins a figure's axis labels need, worked out before a browser draws it, so that plotly lays
each figure out once.

plotly draws a figure's axes, measures their tick labels and titles, and when they reach past the
margins (``automargin``, on in every figure here) draws the whole figure a second time with the
margins it measured: 5 of the 9 figures of a 1,024-worker dashboard, ~15% of the page's draw. This
module estimates the same measurements from the figure itself (its category labels, or the tick
labels plotly's automatic ticks would pick on its linear axes), with the advance widths of
DejaVu Sans (Verdana's metrics, what plotly's font list "Open Sans", verdana, arial, sans-serif
falls back to on most machines and about its widest member), and raises the figure's left, bottom
and right margins to them, a few pixels over. ``automargin`` stays on: a viewer's wider font, or a
narrower window than the page's full width, still gets a second pass and no label is ever cut;
a narrower font leaves a few pixels of extra margin.

What is modelled, measured in Chromium at plotly's 12 px (``PX``): a y axis pushes its left margin
by its widest tick label plus 13 px, plus 24.8 px for a title; an x axis pushes the bottom margin by
28 px (horizontal labels; 52.8 with a title), or by its widest label plus 19 px when plotly turns
the labels vertical (90 degrees: they overlap flat and a 30 degree slant would too), or by half the
widest plus 28 px at 30 degrees, when the slanted labels of a bar chart's last categories also push
the right margin; the last tick label of a linear x axis with a set range may push the right margin
by half its width. Left to plotly (its second pass, as before): the right margin of an autoranged
linear x axis, figures with more than one x or y axis or other trace types, axes of another type
(log without tick texts, date), tick formats other than percent, labels in another font size.

Also: the axes of scatter and bar figures get ``ticklabeloverflow="allow"``. plotly's default on a
linear axis ("hide past div") measures
every tick label once more after the layout to hide those reaching past the figure's div; with
automargin none does (tests/test_dashboard_draw.py checks every label's box), so that pass only
costs time.
"""

from __future__ import annotations

import math

import numpy as np

# Advance widths (em) of DejaVu Sans, measured in Chromium; any other character counts 1 em.
_EM_GROUPS = {
    0.6362: "0123456789${}", 0.3179: " ,.", 0.4009: "!", 0.46: '"', 0.8379: "#+<=>^~\u2192\u2190\u00d7\u2264\u2265",
    0.9502: "%", 0.7798: "&", 0.2749: "'", 0.3901: "()[]", 0.5: "*_`\u2013", 0.3608: "-", 0.3369: "/:;\\|",
    0.5308: "?", 1.0: "@\u2014", 0.6841: "AV", 0.686: "B", 0.6982: "C", 0.77: "D", 0.6318: "E", 0.5752: "F",
    0.7749: "G", 0.752: "H", 0.2949: "IJ", 0.6558: "K", 0.5571: "L", 0.8628: "M", 0.748: "N", 0.7871: "OQ",
    0.603: "P", 0.6948: "R", 0.6348: "Sbdgpq", 0.6108: "TY", 0.7319: "U", 0.9888: "W", 0.6851: "XZ",
    0.6128: "a", 0.5498: "c", 0.6152: "e", 0.3521: "f", 0.6338: "hnu", 0.2778: "ijl", 0.5791: "k", 0.9741: "m",
    0.6118: "o", 0.4111: "r", 0.521: "s", 0.3921: "t", 0.5918: "vxy", 0.8179: "w", 0.5249: "z",
}
CHAR_EM = {c: em for em, chars in _EM_GROUPS.items() for c in chars}
SLACK_PX = 3  # over the estimate: fonts a little wider than DejaVu Sans (Verdana) still fit

# plotly's pushes at a 12 px font (PX), measured in Chromium (see the module docstring).
PX = 12
Y_LABEL_GAP = 13.0  # left push = widest y tick label + this
TITLE_GAP = 24.8  # an axis title adds this (standoff 15 + its line)
X_FLAT = 28.0  # bottom push of horizontal x tick labels
X_VERTICAL_GAP = 19.0  # bottom push of vertical x tick labels = widest + this
SLANT = 30  # plotly's intermediate tick angle (autotickangles [0, 30, 90])
PERCENT_FORMATS = {".0%": 0, ".1%": 1, ".2%": 2}
SI = ["", "k", "M", "B", "T"]
TICK_COUNTS = (5, 6, 7, 8, 9, 10)  # plotly's target tick counts on a linear axis: its length / 40 px (y) or
# 80 px (x), held to 4..9, plus one
AUTORANGE_PADS = (0.0, 0.05, 0.1, 0.2)  # fractions of the data's span plotly's autorange may add
CARTESIAN = {"scatter", "bar"}  # the trace types modelled (others: left alone)


def text_px(text: str, size: float = PX) -> float:
    """The width in pixels of ``text`` set in DejaVu Sans at ``size`` px (no kerning: never under)."""
    return size * sum(CHAR_EM.get(c, 1.0) for c in str(text))


def _values(v):
    """A trace's coordinates as an array (numeric arrays as they are, anything else as objects)."""
    if v is None or isinstance(v, dict):  # plotly's binary form {"dtype", "bdata"}: not in a figure's data
        return np.zeros(0)
    arr = np.asarray(v)
    return arr.ravel() if arr.dtype.kind in "fiub" else np.asarray(v, dtype=object).ravel()


def _numbers(vals) -> np.ndarray:
    """The finite numbers among ``vals``."""
    if vals.dtype.kind in "fiub":
        out = vals.astype(float)
        return out[np.isfinite(out)]
    out = []
    for v in vals:
        if v is None or isinstance(v, str):
            continue
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return np.asarray(out, dtype=float)


def _axis_data(fig, letter: str) -> tuple[list, np.ndarray, bool]:
    """(category values in order of appearance, numbers, any bar) on the figure's ``letter`` axis."""
    cats: dict = {}
    nums: list[np.ndarray] = []
    bar = False
    for t in fig.data:
        horizontal = t.type == "bar" and getattr(t, "orientation", None) == "h"
        value_axis = "x" if horizontal else "y"
        vals = _values(getattr(t, letter, None))
        if t.type == "bar" and letter == value_axis:
            bar = True
            n = _numbers(vals)
            base = _values(getattr(t, "base", None))
            if len(base):
                b = _numbers(base)
                nums.append(b)
                if len(b) == len(n):
                    nums.append(b + n)
            else:
                nums.append(n)
            continue
        if vals.dtype == object:
            cats.update((v, None) for v in vals if isinstance(v, str))
        nums.append(_numbers(vals))
    allnums = np.concatenate(nums) if nums else np.zeros(0)
    return list(cats), allnums, bar


def _fmt(v: float, decimals: int, div: float, suffix: str) -> str:
    text = f"{v / div:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if text in ("-0", "0", ""):
        return "0"  # zero takes no suffix
    return text.replace("-", "\u2212") + suffix


def auto_ticks(lo: float, hi: float, nt: int, tickformat: str | None = None) -> list[tuple[float, str]]:
    """(value, label) of plotly's automatic ticks on a linear axis from ``lo`` to ``hi`` aiming at
    ``nt`` ticks: a step of 1, 2 or 5 x 10^k at least (hi - lo) / nt, labels with the decimals the
    step needs, SI suffixes (k, M, B) from 10,000 up, or a percent format."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return []
    rough = (hi - lo) / nt
    base = 10.0 ** math.floor(math.log10(rough))
    dtick = base * next(s for s in (1, 2, 5, 10) if s >= rough / base - 1e-9)
    ticks = np.arange(math.ceil(lo / dtick - 1e-9), math.floor(hi / dtick + 1e-9) + 1) * dtick
    if tickformat is not None:
        p = PERCENT_FORMATS[tickformat]
        return [(t, f"{t * 100:.{p}f}%".replace("-", "\u2212")) for t in ticks]
    decimals = max(0, -math.floor(math.log10(dtick) + 1e-9))
    exp = math.floor(math.log10(max(abs(lo), abs(hi)))) if max(abs(lo), abs(hi)) > 0 else 0
    div, suffix = 1.0, ""
    if exp > 3:  # plotly's SI suffixes (exponentformat "B")
        k = min(exp // 3, len(SI) - 1)
        div, suffix = 10.0 ** (3 * k), SI[k]
        decimals = max(0, -math.floor(math.log10(dtick / div) + 1e-9))
    return [(t, _fmt(t, decimals, div, suffix)) for t in ticks]


def auto_tick_labels(lo: float, hi: float, counts: tuple[int, ...], tickformat: str | None = None) -> list[str]:
    """Labels of plotly's automatic ticks (``auto_ticks``) for each target tick count in ``counts``
    (plotly picks the count from the axis' length), all together."""
    return [label for nt in counts for _, label in auto_ticks(lo, hi, nt, tickformat)]


def axis_labels(fig, letter: str) -> tuple[list[str], str] | None:
    """(the tick labels plotly may draw on the figure's ``letter`` axis, the axis' kind: "ticktext",
    "category" or "linear"); None where this module does not model the axis. On a linear axis, the
    labels of plotly's automatic ticks for every tick count it may pick (5 to 10, by the axis'
    length in pixels: any window's width): a superset of those drawn."""
    ax = fig.layout[f"{letter}axis"]
    if ax.tickfont.size not in (None, PX) or ax.title.font.size not in (None, PX):
        return None
    if ax.ticktext is not None:
        return [str(t) for t in ax.ticktext], "ticktext"
    cats, nums, bar = _axis_data(fig, letter)
    kind = ax.type or ("category" if cats else "linear")
    if kind == "category":
        labels = list(ax.categoryarray) if ax.categoryarray is not None else cats
        return [str(c) for c in labels], "category"
    if kind != "linear" or (ax.tickformat and ax.tickformat not in PERCENT_FORMATS) or ax.tickvals is not None:
        return None
    fmt = ax.tickformat or None
    if ax.range is not None and None not in ax.range:
        lo, hi = sorted(float(v) for v in ax.range)
        return auto_tick_labels(lo, hi, TICK_COUNTS, fmt), "linear"
    if not len(nums):
        return None
    lo, hi = float(nums.min()), float(nums.max())
    zero = bar or ax.rangemode == "tozero"
    if zero:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    span = (hi - lo) or abs(hi) or 1.0
    labels: list[str] = []
    for pad in AUTORANGE_PADS:  # plotly pads by 5% for lines, more for markers and bar texts: all of them
        labels += auto_tick_labels(lo - (0.0 if zero and lo >= 0 else pad * span), hi + pad * span, TICK_COUNTS, fmt)
    return list(dict.fromkeys(labels)), "linear"


def fit_margins(fig, width_px: float) -> None:
    """Raise ``fig``'s left, bottom and right margins to what its axis labels will push them to
    (see the module docstring), for a figure ``width_px`` wide; figures it does not model are left alone."""
    lay = fig.layout
    if any(t.type not in CARTESIAN for t in fig.data):
        return
    # plotly's default for linear axes, "hide past div", measures every tick label once more after the
    # layout to hide any reaching past the figure; with automargin none does ("allow" skips that pass)
    fig.update_xaxes(ticklabeloverflow="allow")
    fig.update_yaxes(ticklabeloverflow="allow")
    axes = [k for k in lay.to_plotly_json() if k.startswith(("xaxis", "yaxis"))]
    if any(k not in ("xaxis", "yaxis") for k in axes):
        return
    if any((getattr(t, "xaxis", None) or "x") != "x" or (getattr(t, "yaxis", None) or "y") != "y" for t in fig.data):
        return
    m = lay.margin
    left, right, top, bottom = (m.l if m.l is not None else 80), (m.r if m.r is not None else 80), \
        (m.t if m.t is not None else 100), (m.b if m.b is not None else 80)
    y = axis_labels(fig, "y")
    if y is not None and lay.yaxis.visible is not False and lay.yaxis.showticklabels is not False:
        widest = max((text_px(s) for s in y[0]), default=0.0)
        push = widest + Y_LABEL_GAP + (TITLE_GAP if lay.yaxis.title.text else 0.0)
        left = max(left, math.ceil(push + SLACK_PX))
    x = axis_labels(fig, "x")
    if x is not None and lay.xaxis.visible is not False and lay.xaxis.showticklabels is not False:
        labels = x[0]
        widest = max((text_px(s) for s in labels), default=0.0)
        angle = lay.xaxis.tickangle
        if angle in (None, "auto"):
            angle = _x_angle(fig, labels, width_px - left - right)
        title = TITLE_GAP if lay.xaxis.title.text else 0.0
        if angle == 0:
            push = X_FLAT + title
        elif abs(angle) == 90:
            push = widest + X_VERTICAL_GAP + title
        elif abs(angle) == SLANT:
            push = X_FLAT + widest * 0.5 + title
            right = max(right, _slant_right(fig, labels, width_px - left, right))
        else:
            push = None
        if angle == 0 and x[1] == "linear":
            right = max(right, _linear_right(fig.layout.xaxis, width_px - left, right))
        if push is not None:
            bottom = max(bottom, math.ceil(push + SLACK_PX))
    fig.update_layout(margin={"l": left, "r": right, "t": top, "b": bottom})


def _x_angle(fig, labels: list[str], plot_px: float) -> int:
    """The tick angle plotly's ``autotickangles`` picks for these x labels (0, 30 or 90): flat
    unless neighbours overlap, then the first angle whose labels clear each other."""
    n = len(labels)
    if n < 2:
        return 0
    cats = fig.layout.xaxis.type == "category" or any(isinstance(v, str) for t in fig.data
                                                         for v in list(_values(getattr(t, "x", None))[:1]))
    if not cats:
        return 0  # numeric ticks are spaced at least 80 px apart: flat
    step = math.ceil(max(n / (plot_px / 15.0), 1.0))  # plotly shows every step-th category label
    shown = labels[::step]
    spacing = plot_px * step / n
    widths = [text_px(s) + 2 for s in shown]
    if all((a + b) / 2 <= spacing for a, b in zip(widths, widths[1:])):
        return 0
    clear = spacing / math.hypot(spacing, PX * 1.25)
    return SLANT if math.cos(math.radians(SLANT)) <= clear else 90


def _slant_right(fig, labels: list[str], span_px: float, right: float) -> float:
    """The right margin 30-degree x labels need: each runs down to the right from its tick by its
    width x cos 30 + 3 px, so the last ones reach past the plot. Only for a bar chart's categories
    (plotly's range is then exactly -0.5 to n - 0.5); otherwise ``right`` as it is."""
    if any(t.type != "bar" for t in fig.data) or fig.layout.xaxis.range is not None or len(labels) < 2:
        return right
    n = len(labels)
    reach = [text_px(s) * math.cos(math.radians(SLANT)) + 3 for s in labels]
    need = float(right)
    for _ in range(3):  # the plot narrows as the margin grows: settle it
        spacing = (span_px - need) / n
        need = max(right, max(SLACK_PX + 12 + r - (n - i - 0.5) * spacing for i, r in enumerate(reach)))
    return math.ceil(need)


def _linear_right(ax, span_px: float, right: float) -> float:
    """The right margin a linear x axis with a set range needs for its last tick label, centred on
    its tick, to end inside the figure (any tick count plotly may pick); otherwise ``right``."""
    if ax.range is None or None in ax.range:
        return right  # plotly's autorange: where the last tick falls is not known here
    lo, hi = sorted(float(v) for v in ax.range)
    need = float(right)
    for nt in TICK_COUNTS:
        ticks = auto_ticks(lo, hi, nt, ax.tickformat or None)
        if ticks:
            t, label = ticks[-1]
            end_px = (hi - t) / (hi - lo) * (span_px - right)
            need = max(need, SLACK_PX + 12 + text_px(label) / 2 - end_px)
    return math.ceil(need)
