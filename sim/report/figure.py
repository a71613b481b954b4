"""The house figure and the marks every page's figures share: an empty plotly figure with the
report's layout (``style``), the warm-up line on a time axis, and the loss floor on a loss axis.

Apart from ``style`` because it imports plotly (``style`` is plain values); apart from the
figures by subject (``timeline``, ``utilization``, ``network``, ``learning``, ``faults``,
``asynchrony``, ``compare_figures``) because all of them draw with it.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go

from sim.report.style import (FIGURE_HEIGHT, FIGURE_MARGIN, FLOOR_COLOR, LEGEND, PLAIN_MARGIN, TITLE_FONT_SIZE,
                              WARM_UP_COLOR)


def figure(title: str, height: int = FIGURE_HEIGHT, **layout) -> go.Figure:
    """An empty figure with the report's title font, margins and legend below the plot."""
    fig = go.Figure()
    fig.update_layout(title={"text": title, "font": {"size": TITLE_FONT_SIZE}}, height=height,
                      margin=dict(FIGURE_MARGIN), legend=dict(LEGEND), **layout)
    return fig


def plain_figure(title: str, height: int = FIGURE_HEIGHT) -> go.Figure:
    """An empty figure with the plain white template, the default title font and a legend in
    plotly's place (the asynchrony section's figures)."""
    fig = go.Figure()
    fig.update_layout(title={"text": title}, height=height, template="plotly_white",
                      margin=dict(PLAIN_MARGIN), legend={"orientation": "h"})
    return fig


WARM_UP_SHAPE = "warm-up end"  # the name of the vertical line that marks it on every time axis


def mark_warm_up(fig: go.Figure, t: float | None, color: str = WARM_UP_COLOR, label: str = "warm-up ends",
                 **where) -> None:
    """A dashed vertical line (named ``WARM_UP_SHAPE``) where warm-up ends on a time axis."""
    if t is None:
        return
    fig.add_vline(x=t, name=WARM_UP_SHAPE, line={"dash": "dash", "color": color, "width": 1.2},
                  annotation_text=label, annotation_position="top left", annotation_font={"size": 10, "color": color},
                  **where)


def loss_range(losses, floor: float | None) -> list[float] | None:
    """A loss axis range over ``losses`` that also shows the floor, unless the floor lies so far
    below that the curves would be squashed into the top third (then the floor is left out)."""
    vals = [float(v) for v in losses if v is not None and math.isfinite(float(v))]
    if not vals:
        return None
    lo, hi = min(vals), max(vals)
    if floor is not None and floor >= lo - 0.5 * (hi - lo):
        lo = min(lo, floor)
    pad = 0.05 * (hi - lo or 1.0)
    return [lo - pad, hi + pad]


def floor_hline(fig: go.Figure, floor: float) -> None:
    """The loss floor as a dashed black line, labelled with its value."""
    fig.add_hline(y=floor, line={"dash": "dash", "color": FLOOR_COLOR, "width": 1},
                  annotation_text=f"loss floor {floor:.3f}", annotation_position="top right")


def floor_line(fig: go.Figure, floor: float | None, losses=()) -> None:
    """The loss floor as a dashed line (named in the title when it lies below the axis range)."""
    if floor is None:
        return
    rng = loss_range(losses, floor)
    if rng is not None:
        fig.update_layout(yaxis_range=rng)
    if rng is None or floor >= rng[0]:
        floor_hline(fig, floor)
    else:
        fig.update_layout(title_text=f"{fig.layout.title.text} (loss floor {floor:.3f}, below this range)")
