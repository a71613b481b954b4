"""The dashboard's words: the header (scenario, algorithm, topology, numerics, status) and the
summary table's rows (CU, time to target, bytes, peak bandwidth, faults), written from the
run's manifest and summary; and the definition of the byte counts every page states.

Apart from the figures because it is prose and numbers, no plotly (the comparison's
analysis reuses ``topology_text``); the page assembly (``dashboard``) puts it above them.
"""

from __future__ import annotations

import math

from sim.metrics.tables import time_to_loss
from sim.report.runs import RunData, algorithm_label
from sim.report.style import FAULT_STYLE, fmt_bytes, fmt_gbps, fmt_s

# What the two byte counts on every page mean (routed traffic is why WAN bytes can be larger).
BYTES_DEFINITION = ("<b>Bytes on the wire</b>: the payload of every transfer, counted once however many links it "
                    "crosses (intra-region included). <b>WAN bytes</b>: bytes over WAN links, counted once per WAN "
                    "link a transfer crosses; a transfer routed through a third region crosses two WAN links and "
                    "counts twice, so WAN bytes can exceed bytes on the wire.")


def cap_gbps(link: dict) -> float:
    """A link's capacity from summary.json; an infinitely fast link is written there as null
    (strict JSON has no inf), read back as inf."""
    cap = link.get("cap_gbps", link.get("bandwidth_gbps"))
    return math.inf if cap is None else float(cap)


def faults_text(faults: dict | None) -> str:
    if not faults or not (faults.get("faults") or faults.get("dropped_contributions") or faults.get("recoveries")):
        return "none"
    kinds = ", ".join(f"{n} {FAULT_STYLE.get(k, (k,))[0]}" for k, n in sorted(faults["faults"].items()))
    dropped = sum(faults.get("dropped_contributions", {}).values())
    return (f"{kinds or 'no fault spans'}; {dropped} contributions dropped; {faults.get('recoveries', 0)} parameter "
            f"fetches ({fmt_bytes(faults.get('recovery_bytes'))}, {fmt_s(faults.get('recovery_s'))} in all)")


def topology_text(topo: dict) -> str:
    regs = ", ".join(f"{r['name']} {r['nodes']}" + (f" x{r['step_time_multiplier']:g} step time"
                                                     if r.get("step_time_multiplier", 1) != 1 else "")
                     + (f" {r['gpu']}" if r.get("gpu") else "") for r in topo["regions"])
    n = sum(r["nodes"] for r in topo["regions"])
    wan = "; ".join(f"{l['a']}\u2013{l['b']} {l['bandwidth_gbps']:g} Gbit/s {l['latency_s'] * 1e3:g} ms"
                    + (" (time series)" if l.get("bandwidth_csv") else "")
                    + (f" ({len(l['outages'])} outages)" if l.get("outages") else "") for l in topo.get("links", []))
    intra = topo.get("intra_region") or {}
    return (f"{n} workers in {len(topo['regions'])} regions ({regs}); WAN: {wan or 'none'}; intra-region "
            f"{intra.get('bandwidth_gbps', '?'):g} Gbit/s {intra.get('latency_s', 0) * 1e3:g} ms")


def section_text(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def model_used(sc: dict) -> dict:
    """The model section with the vocabulary it actually used: ``vocab_size`` left unset is the
    data's (``data.vocab_size``), and said so."""
    model = dict(sc.get("model") or {})
    if "vocab_size" in model and model["vocab_size"] is None:
        vocab = (sc.get("data") or {}).get("vocab_size")
        model["vocab_size"] = f"{vocab} (the data's)" if vocab is not None else "the data's"
    return model


def target_for(summary: dict) -> float | None:
    return summary.get("target_eval_loss")


def summary_rows(run: RunData) -> list[tuple[str, object]]:
    s = run.summary
    target = target_for(s)
    if target is None:
        ttt = "no target set (run.target_eval_loss)"
    else:
        t = time_to_loss(run.metrics, target)
        ttt = f"{fmt_s(t)} (target {target:g})" if t is not None else f"not reached (target {target:g})"
    wan = [l for l in s.get("bytes_per_link", []) if l["kind"] == "wan"]
    peak = max(wan, key=lambda l: l.get("peak_gbps", 0.0), default=None)
    rounds = s.get("rounds") or 0
    bpwr = s.get("bytes_per_worker_per_round",
                  s["bytes_total"] / (s["workers"] * rounds) if rounds else None)
    floor = s.get("loss_floor")
    final = s.get("final_eval_loss")
    return [
        ("compute utilization (CU)", f"{s['utilization']:.1%}"),
        ("time to target eval loss", ttt),
        ("final eval loss / floor / gap", f"{final:.4f} / {floor:.4f} / {final - floor:.4f}"
         if final is not None and floor is not None else (f"{final:.4f}" if final is not None else "-")),
        ("bytes on the wire (all transfers) / over WAN links", f"{fmt_bytes(s['bytes_total'])} / "
                                                               f"{fmt_bytes(s.get('wan_bytes'))}"),
        ("bytes per worker per round (one round of the method, warm-up left out)", fmt_bytes(bpwr)),
        ("payload per sync", f"{fmt_bytes(s.get('payload_bytes_per_sync'))} ({s.get('wire_format', '?')})"),
        ("peak WAN bandwidth used", f"{fmt_gbps(peak.get('peak_gbps'))} on {peak['link']} "
                                    f"(capacity {cap_gbps(peak):g}, "
                                    f"mean {fmt_gbps(peak.get('mean_gbps'))})" if peak else "no WAN links"),
        ("rounds / tokens", f"{rounds} / {s.get('tokens', 0):,}"),
        ("faults", faults_text(s.get("faults"))),
    ]


def numerics_text(num: dict | None) -> str:
    """Replica engine, precision, kernels and the memory estimate of a run (timing-only: none)."""
    if not num:
        return "none (timing only)"
    compiled = " (compiled)" if num.get("compiled") else ""
    text = (f"{num.get('engine', '?')} engine{compiled}, {num.get('precision', 'fp32')}, "
            f"{num.get('kernels', 'auto')} kernels, {num.get('replica_steps', 0):,} replica-steps in "
            f"{num.get('batched_calls', 0):,} batched calls")
    mem = num.get("memory_estimate")
    if mem:
        text += (f"; memory estimate {mem['bytes_per_replica'] / 1e6:.3g} MB per replica, "
                 f"{mem['total_bytes'] / 1e6:.3g} MB in all")
    return text


def status_text(manifest: dict, summary: dict | None = None) -> str:
    """A run's status with what ended it when it did not simply complete: where it diverged
    (step, simulated time, which value), why it ended early, or its error."""
    summary = summary or {}
    status = str(manifest.get("status"))
    div = manifest.get("diverged") or summary.get("diverged")
    early = manifest.get("ended_early") or summary.get("ended_early")
    if div:
        return f"{status}: {div.get('reason')}"
    if early:
        return f"{status}, ended early at {fmt_s(summary.get('sim_duration_s'))} simulated: {early}"
    if manifest.get("error"):
        return f"{status}: {manifest['error']}"
    return status


def header_rows(run: RunData) -> list[tuple[str, object]]:
    m, s, sc = run.manifest, run.summary, run.scenario
    wall = m.get("wall_s") or s.get("wall_s")
    return [
        ("status", status_text(m, s)),
        ("algorithm", algorithm_label(sc["algorithm"])),
        ("topology", topology_text(sc["topology"])),
        *([("timing proxy (step times, payloads)", section_text(sc["timing"]))] if sc.get("timing") else []),
        *([("model", f"{section_text(model_used(sc))} ({s.get('n_params', 0):,} parameters)"),
           ("data", section_text(sc["data"]))] if sc.get("numerics", True) else []),
        ("inner optimizer", section_text(sc.get("optimizer", {}))),
        ("seed", m.get("seed")),
        ("simulated duration", fmt_s(s.get("sim_duration_s"))),
        ("wall time", fmt_s(wall)),
        ("device", m.get("device")),
        ("numerics", numerics_text(s.get("numerics"))),
        ("run", f"{m.get('started_at', '?')}, git {str(m.get('git_revision') or '?')[:10]}, "
                f"locosim {(m.get('versions') or {}).get('locosim', '?')}"),
    ]
