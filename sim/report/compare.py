"""Many runs side by side: ``locosim compare RUN_DIR... -o compare.html``.

Every run (or group of replications: the same scenario except its seed) gets one colour,
the same in every figure, and every figure puts all runs on one pair of axes: eval loss
vs simulated time, vs bytes on the wire and vs tokens (one shared loss range), compute
utilization and its breakdown by state, time to a common target eval loss, bytes on the
wire, and a table of differences against a baseline run. Replications are drawn as their
mean with a min-max band (curves interpolated onto a common grid over the range that
every seed covers).

Runs that did not train the same model on the same data are refused (``CompareError``)
unless forced: their losses are not on the same scale.

This module reads the runs, writes the page (its tables and notices) and guards where it is
written; the numbers are ``compare_analysis``'s, the figures ``compare_figures``'.
"""

from __future__ import annotations

import html
from pathlib import Path

import plotly.graph_objects as go

from sim.report.compare_analysis import (CompareError, choose_target, common_and_different, diff_rows,
                                         fair_budgets, grid_point_label, has_losses, pick_baseline)
from sim.report.compare_figures import compare_figures
from sim.report.page import Page, export_pngs, grid_table, kv_table
from sim.report.runs import (Group, NotDrawable, RunDirError, algorithm_label, find_run_dirs, group_replications,
                             incomparable, load_run, split_note, unique_labels)
from sim.report.style import PALETTE, fmt_bytes
from sim.report.text import BYTES_DEFINITION, model_used, status_text, topology_text


def load_groups(paths: list[str | Path], force: bool = False, not_drawn: list | None = None) -> list[Group]:
    """Run directories (or directories holding them) -> coloured replication groups.
    CompareError (one line) when a path holds no readable run, a run's file is malformed
    or, without ``force``, the runs train different models or data. A run that ended before
    writing its tables (failed while building, interrupted) goes into ``not_drawn`` as
    (path, status, error) when that list is given, instead of stopping the comparison."""
    runs = []
    why_not: list[str] = []  # each run not drawn, in the words of its own refusal (what is missing, its status)
    try:
        for p in find_run_dirs(paths):
            try:
                runs.append(load_run(p))
            except NotDrawable as err:
                if not_drawn is None:
                    raise
                not_drawn.append((p, str(err.manifest.get("status")), err.manifest.get("error")))
                why_not.append(str(err))
    except RunDirError as err:
        raise CompareError(str(err)) from None
    if not runs:
        raise CompareError("no run to draw" + (f": {why_not[0]}" if why_not else " (no run directories given)"))
    why = incomparable(runs)
    if why and not force:
        raise CompareError(f"runs are not comparable: {why}; pass --force to compare them anyway")
    unique_labels(runs)
    groups = group_replications(runs)
    for i, g in enumerate(groups):
        g.color = PALETTE[i % len(PALETTE)]
        g.label = grid_point_label(g) or g.label
    return groups


def budget_notice(groups: list[Group]) -> str | None:
    """For runs without losses (timing only): one paragraph when they ran different simulated
    times or token budgets, saying which of their numbers still compare; None when they did not."""
    runs = [r for g in groups for r in g.runs]
    ends_s = [float(r.summary["sim_duration_s"]) for r in runs]
    tokens = [float(r.summary.get("tokens") or 0) for r in runs]
    parts = []
    if max(ends_s) > min(ends_s) * 1.01 + 1e-12:
        parts.append(f"simulated times from {min(ends_s):,.4g} s to {max(ends_s):,.4g} s")
    if max(tokens) > min(tokens) * 1.01 + 1e-12:
        parts.append(f"tokens from {min(tokens):,.0f} to {max(tokens):,.0f}")
    if not parts:
        return None
    return ("These runs ended at different budgets (" + "; ".join(parts) + "). Compute utilization, the state "
            "fractions and bytes per worker per round are rates and compare across budgets; total bytes and "
            "simulated time do not.")


def fair_notice(fair: dict | None) -> str | None:
    """One paragraph saying when runs ended at different budgets or losses, so that nobody
    reads their final numbers as a like-for-like comparison; None when they did not."""
    # equal budgets: the final losses *are* the fair comparison, whatever they are
    if fair is None or not (fair["time_differs"] or fair["tokens_differ"]):
        return None
    parts = []
    if fair["time_differs"]:
        parts.append(f"simulated times from {fair['end_s'][0]:,.4g} s to {fair['end_s'][1]:,.4g} s")
    if fair["tokens_differ"]:
        parts.append(f"token budgets from {fair['end_tokens'][0]:,.0f} to {fair['end_tokens'][1]:,.0f}")
    return ("These runs ended at different budgets (" + "; ".join(parts) + "), so their final "
            "numbers are not a like-for-like comparison. Compare them at equal tokens (every run's loss after "
            f"{fair['tokens']:,.0f} tokens) and at equal simulated time (after {fair['time_s']:,.4g} s): the "
            "'loss at equal tokens' and 'loss at equal time' columns below, the 'Fair comparison' chart and the "
            "dotted lines on the loss curves.")


def _f(v, fmt: str, none: str = "-") -> str:
    return none if v is None else format(v, fmt)


def _timing_text(timing: dict | None) -> str | None:
    """A timing proxy in words (``timing: {params, layers, step_time_s}``), None without one."""
    if not timing:
        return None
    parts = [f"{timing['params']:.3g} parameters" if timing.get("params") else None,
             f"{timing['layers']} layers" if timing.get("layers") else None,
             f"{timing['step_time_s']:g} s per step" if timing.get("step_time_s") else None]
    return ", ".join(p for p in parts if p) or ", ".join(f"{k}={v}" for k, v in timing.items())


def _pp(v) -> str:
    return "-" if v is None else f"{v * 100:+.1f} pp"


def _x(v, fmt: str = ".3g") -> str:
    return "-" if v is None else format(v, fmt) + "\u00d7"


def diff_table_html(rows: list[dict], target_set: bool = True) -> str:
    """The differences against the baseline with the runs as columns and the measures as rows
    (so it fits the page however many measures there are, and prints whole): each cell the
    run's value and, below it, its difference from the baseline's. Rows about losses are left
    out for timing-only runs, the time-to-target row when no target was chosen, the
    after-warm-up rows when no run had a warm-up."""
    losses = any(r["final_eval_loss"] is not None for r in rows)
    warm = any(r.get("warm_up_end_s") for r in rows)
    has_target = any(r["time_to_target_s"] is not None for r in rows) or target_set

    def bytes_cell(v):
        return fmt_bytes(v) if v is not None else "-"

    # (label, value of a row, difference of a row from the baseline, shown?)
    measures = [
        ("final eval loss", lambda r: _f(r["final_eval_loss"], ".4f", "diverged" if r.get("diverged") else "-"),
         lambda r: _f(r["d_final_eval_loss"], "+.4f"), losses),
        ("loss at equal tokens", lambda r: _f(r["loss_at_tokens"], ".4f"), lambda r: _f(r["d_loss_at_tokens"], "+.4f"),
         losses),
        ("loss at equal time", lambda r: _f(r["loss_at_time"], ".4f"), lambda r: _f(r["d_loss_at_time"], "+.4f"),
         losses),
        ("loss at equal tokens after warm-up", lambda r: _f(r["loss_at_method_tokens"], ".4f"),
         lambda r: _f(r["d_loss_at_method_tokens"], "+.4f"), losses and warm),
        ("loss at equal time after warm-up", lambda r: _f(r["loss_at_method_time"], ".4f"),
         lambda r: _f(r["d_loss_at_method_time"], "+.4f"), losses and warm),
        ("CU (whole run)", lambda r: _f(r["utilization"], ".1%"), lambda r: _pp(r["d_utilization"]), True),
        ("CU after warm-up", lambda r: _f(r["method"]["utilization"], ".1%"),
         lambda r: _pp(r["d_method_utilization"]), warm),
        ("comm-blocked after warm-up", lambda r: _f(r["method_blocked"], ".1%"), lambda r: "", warm),
        ("time to target", lambda r: (_f(r["time_to_target_s"], ",.2f", "not reached")
                                      + (" s" if r["time_to_target_s"] is not None else "")),
         lambda r: _x(r["x_time_to_target"], ".2f"), has_target),
        ("bytes on the wire", lambda r: bytes_cell(r["bytes_total"]), lambda r: _x(r["x_bytes_total"]), True),
        ("WAN bytes", lambda r: bytes_cell(r["wan_bytes"]), lambda r: _x(r["x_wan_bytes"]), True),
        ("bytes on the wire after warm-up", lambda r: bytes_cell(r["method"]["bytes_total"]), lambda r: "", warm),
        ("WAN bytes after warm-up", lambda r: bytes_cell(r["method"]["wan_bytes"]),
         lambda r: _x(r["x_method_wan_bytes"]), warm),
        ("bytes / worker / round (the method's round)", lambda r: bytes_cell(r["bytes_per_worker_per_round"]),
         lambda r: "", True),
        ("peak WAN", lambda r: _f(r["peak_wan_gbps"], ".3g") + " Gbit/s" if r["peak_wan_gbps"] is not None else "-",
         lambda r: "", True),
        ("warm-up ends at", lambda r: _f(r.get("warm_up_end_s"), ",.2f", "no warm-up")
         + (" s" if r.get("warm_up_end_s") is not None else ""), lambda r: "", warm),
        ("simulated time", lambda r: _f(r["sim_duration_s"], ",.2f") + " s", lambda r: _x(r["x_sim_duration"]), True),
        ("tokens", lambda r: _f(r["tokens"], ",.0f"), lambda r: "", True),
    ]
    head = "".join(f"<th><span class='swatch' style='background:{r['color']}'></span>{html.escape(r['label'])}"
                   + (" <b>(baseline)</b>" if r["baseline"] else "")
                   + f"<br><span class='algo'>{html.escape(r['algorithm'].split(' ')[0])}</span></th>" for r in rows)
    body = []
    for label, value, delta, shown in measures:
        if not shown:
            continue
        cells = []
        for r in rows:
            d = "baseline" if r["baseline"] else delta(r)
            cells.append(f"<td class='num'>{html.escape(value(r))}"
                         + (f"<br><span class='delta'>{html.escape(d)}</span>" if d else "") + "</td>")
        body.append(f"<tr><th class='measure'>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return (f"<table class='grid fit' id='diff-table'><thead><tr><th>measure</th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table>")


def runs_table_html(groups: list[Group]) -> str:
    """The runs compared: the knobs they all share once, above; per run only what differs."""
    common, differ = common_and_different(groups) if len(groups) > 1 else ({}, [{} for _ in groups])
    header = ["run", "what differs" if len(groups) > 1 else "algorithm and knobs", "seeds", "status", "directories"]
    body = []
    for g, d in zip(groups, differ):
        r0 = g.runs[0]
        what = ", ".join(f"{k}={v}" for k, v in d.items()) if len(groups) > 1 else \
            f"{algorithm_label(r0.algorithm)}; {topology_text(r0.scenario['topology'])}"
        body.append([f"<span class='swatch' style='background:{g.color}'></span>{html.escape(g.label)}",
                     what or "(nothing: seeds only)", ", ".join(str(s) for s in g.seeds),
                     "; ".join(sorted({status_text(r.manifest, r.summary) for r in g.runs})),
                     ", ".join(str(r.path) for r in g.runs)])
    shared = ""
    if common:
        shared = ("<p class='note' id='common-knobs'><b>Common to every run:</b> "
                  + html.escape("; ".join(f"{k}={v}" for k, v in common.items())) + "</p>")
    return shared + grid_table(header, body, "runs-table", raw_first=True)


def build_compare(groups: list[Group], baseline: Group, target: float | None, target_why: str,
                  forced_note: str | None = None, sweep=None, not_drawn: list | None = None
                  ) -> tuple[Page, dict[str, go.Figure]]:
    figs = compare_figures(groups, target)
    n_runs = sum(len(g.runs) for g in groups)
    page = Page(f"{COMPARE_TITLE}{n_runs} runs", kind="compare")
    sc = groups[0].runs[0].scenario
    page.html(f"<h1>Comparison of {n_runs} runs" + (f" in {len(groups)} groups" if len(groups) != n_runs else "")
              + "</h1>")
    timing_only = not any(has_losses(r) for g in groups for r in g.runs)
    proxies = sorted({_timing_text(r.scenario.get("timing")) for g in groups for r in g.runs} - {None})
    if timing_only:  # nothing was trained: the model and data sections describe nothing on this page
        rows = [("timing proxy", "; ".join(proxies) or "-"),
                ("numerics", "none (timing-only runs, numerics: false): no losses, so no loss or time-to-target "
                             "figures; utilization, time and bytes only")]
    else:
        rows = [("model", ", ".join(f"{k}={v}" for k, v in model_used(sc).items())),
                ("data", ", ".join(f"{k}={v}" for k, v in sc["data"].items()))]
        if proxies:
            rows.append(("timing proxy (step times and payloads)", "; ".join(proxies)))
        rows += [("loss floor", _f(groups[0].runs[0].summary.get("loss_floor"), ".4f")),
                 ("target eval loss", f"{_f(target, '.4f')} ({target_why})")]
    rows.append(("baseline", baseline.label))
    page.html(kv_table(rows))
    notice = budget_notice(groups) if timing_only else fair_notice(fair_budgets(groups))
    if notice:
        page.html(f"<p class='notice' id='fair-notice'>{html.escape(notice)}</p>")
    if forced_note:
        page.html(f"<p class='note'><b>Forced:</b> {html.escape(forced_note)}; losses may not be comparable.</p>")
    page.html("<p class='note'>Replications (same scenario, different seeds) are one line: the mean, with a "
              "band from the lowest to the highest seed.</p>")
    split = split_note(groups)  # runs of one scenario whose plug-in or data files differ (sim.fingerprint)
    if split:
        page.html(f"<p class='note' id='split-note'>{html.escape(split)}</p>")
    page.html(runs_table_html(groups))
    if not_drawn:
        page.html("<h2>Runs not drawn (they ended before writing their tables)</h2>"
                  + grid_table(["run", "status", "error"], [[str(p), st, e or "-"] for p, st, e in not_drawn],
                               "not-drawn-table"))
    rows_ = diff_rows(groups, baseline, target)
    page.html("<h2>Differences against the baseline</h2>" + diff_table_html(rows_, target is not None))
    page.data("locosim-compare", rows_)
    if sweep is not None:  # a sweep directory: each metric against each swept parameter first
        from sim.report.sweep import sweep_figures

        sfigs = sweep_figures(*sweep)
        if sfigs:
            page.html("<h2>Sweep: metrics vs swept parameters</h2><div class='cols'>")
            for fig_id, fig in sfigs.items():
                page.figure(fig_id, fig)
                figs[fig_id] = (fig, False)
            page.html("</div>")
    order = [("Learning", ["cmp-fair", "cmp-tradeoff", "cmp-loss-time", "cmp-loss-bytes", "cmp-loss-tokens",
                           "cmp-diagnostics"]),
             ("Utilization and cost", ["cmp-cu", "cmp-time-to-target", "cmp-states", "cmp-bytes", "cmp-exposed",
                                       "cmp-rounds"])]
    for title, ids in order:
        if not any(i in figs for i in ids):
            continue
        page.html(f"<h2>{title}</h2>")
        if title == "Utilization and cost":
            page.html(f"<p class='note'>{BYTES_DEFINITION}</p>")
        page.html("<div class='cols'>")
        for i in ids:
            if i in figs:
                fig, wide = figs[i]
                page.figure(i, fig, wide=wide)
        page.html("</div>")
    return page, {k: f for k, (f, _w) in figs.items()}


COMPARE_TITLE = "locosim compare: "  # how a page this module wrote begins its <title>


def is_compare_page(path: Path) -> bool:
    """Whether ``path`` is a page ``write_compare`` wrote (its <title> is in the first bytes)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2048).decode("utf-8", "replace")
    except OSError:
        return False
    return f"<title>{html.escape(COMPARE_TITLE)}" in head


def check_output(out: Path) -> None:
    """Refuse (CompareError) to write the page over a file of a run directory (one holding
    manifest.json) or a sweep directory, other than a compare page written before: above all
    the directory's own files (manifest, summary, tables, dashboard, sweep index and lock)."""
    from sim.rundir import RUN_FILES, SWEEP_FILES, is_run_dir, is_sweep_dir

    target = out.resolve()  # a symlink is judged by the file it would overwrite
    where = target.parent
    kind = "run" if is_run_dir(where) else "sweep" if is_sweep_dir(where) else None
    if kind is None:
        return
    if target.name in RUN_FILES + SWEEP_FILES:
        raise CompareError(f"{out}: is the {target.name} of {kind} directory {where}; write the page elsewhere "
                           "(nothing was overwritten)")
    if target.exists() and not is_compare_page(target):
        raise CompareError(f"{out}: exists in {kind} directory {where} and is not a compare page; write the page "
                           "elsewhere (nothing was overwritten)")


def check_page_output(out: Path) -> Path:
    """check_output, then the rule of every output flag (sim.outputs): a new file, or a compare
    page written before; never another file or a device."""
    from sim.outputs import OutputError, check_page

    check_output(out)
    try:
        return check_page(out, "compare")
    except OutputError as err:
        raise CompareError(f"-o {out}: {err}") from None


def write_compare(paths: list[str | Path], out: str | Path, baseline: str | Path | None = None,
                  force: bool = False, target: float | None = None, png_dir: str | Path | None = None
                  ) -> tuple[Path, list[Group], str | None]:
    """Write the comparison page; returns (its path, the groups, a one-line PNG note or None).
    CompareError (one line) for runs that cannot be compared as asked, or for an ``out`` that
    would overwrite a run's or a sweep's own files (checked first, before anything is read)."""
    check_page_output(Path(out))
    not_drawn: list = []
    groups = load_groups(paths, force=force, not_drawn=not_drawn)
    runs = [r for g in groups for r in g.runs]
    forced = incomparable(runs) if force else None
    base = pick_baseline(groups, baseline)
    tgt, why = choose_target(groups, target)
    from sim.report.sweep import load_sweep

    try:
        sweep = load_sweep(paths[0]) if len(paths) == 1 else None
    except (OSError, ValueError) as err:  # a damaged sweep.json / index.parquet: one line naming it
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CompareError(msg if msg.startswith(str(paths[0])) else f"{paths[0]}: unreadable sweep files ({msg})") \
            from None
    page, figs = build_compare(groups, base, tgt, why, forced, sweep, not_drawn)
    out = Path(out)
    page.write(check_page_output(out))  # again: the file may have appeared while the runs were read
    note = None
    if png_dir is not None:
        written, note = export_pngs(figs, Path(png_dir))
        if note is None:
            note = f"{len(written)} PNGs in {png_dir}"
    split = split_note(groups)  # runs of one scenario whose plug-in or data files differ: said, not merged
    if split:
        note = split if note is None else f"{note}; {split}"
    if not_drawn:
        skipped = (f"{len(not_drawn)} run(s) not drawn (no tables): "
                   + ", ".join(f"{p} ({st})" for p, st, _e in not_drawn))
        note = skipped if note is None else f"{note}; {skipped}"
    return out, groups, note
