"""A run's phases as summary.json records them (``phases``: warm-up, the ddp steps an outer
method starts with, then the method): when warm-up ended, its tokens, the method phase's
numbers, and the rows of the dashboard's phases table.

No plotly: the comparison's numbers (``compare_analysis``) read the phases too.
"""

from __future__ import annotations

from sim.report.style import fmt_bytes, fmt_s


def warm_up_end(summary: dict) -> float | None:
    """When warm-up ended (summary.json's ``phases.warm_up.end_s``); None for a run without one."""
    return ((summary.get("phases") or {}).get("warm_up") or {}).get("end_s")


def warm_up_tokens(summary: dict) -> float:
    """Tokens of the run's warm-up (0 without one)."""
    return float(((summary.get("phases") or {}).get("warm_up") or {}).get("tokens") or 0.0)


def method_phase(summary: dict) -> dict:
    """The method phase of a run's summary (summary.json ``phases.method``); a summary written
    before phases existed: the whole run."""
    return (summary.get("phases") or {}).get("method") or summary


PHASE_LABELS = {"warm_up": "warm-up (ddp)", "method": "method"}


def phase_rows(summary: dict) -> list[list[str]]:
    """One row per phase (the whole run first): span, CU, blocked share, bytes, WAN bytes, bytes
    per worker per round, rounds, tokens."""
    s = summary
    phases = s.get("phases") or {}
    whole = {"start_s": 0.0, "end_s": s.get("sim_duration_s"), "sim_duration_s": s.get("sim_duration_s"),
             "utilization": s.get("utilization"), "state_fractions": s.get("state_fractions") or {},
             "bytes_total": s.get("bytes_total"), "wan_bytes": s.get("wan_bytes"),
             "bytes_per_worker_per_round": None, "rounds": None, "tokens": s.get("tokens")}
    out = []
    for name, p in [("whole run", whole)] + [(PHASE_LABELS.get(k, k), v) for k, v in phases.items()]:
        blocked = (p.get("state_fractions") or {}).get("comm_blocked")
        out.append([name, f"{fmt_s(p.get('start_s'))} – {fmt_s(p.get('end_s'))}",
                    f"{p['utilization']:.1%}" if p.get("utilization") is not None else "-",
                    f"{blocked:.1%}" if blocked is not None else "-",
                    fmt_bytes(p.get("bytes_total")), fmt_bytes(p.get("wan_bytes")),
                    fmt_bytes(p.get("bytes_per_worker_per_round")) if p.get("bytes_per_worker_per_round") is not None
                    else "-", str(p["rounds"]) if p.get("rounds") is not None else "-",
                    f"{p.get('tokens') or 0:,}"])
    return out


PHASE_HEADER = ["phase", "simulated time", "CU", "comm-blocked", "bytes on the wire", "WAN bytes",
                "bytes / worker / round", "rounds", "tokens"]
