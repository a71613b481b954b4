"""Methods without a barrier, timing (issue 25): timelines computed by hand from the scenario's
numbers, staleness on a hand-computed arrival order, faults, determinism and numerics on/off.
All timing-only (``numerics: false`` + ``timing``) unless said otherwise."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from sim.runner import Simulation
from sim.scenario import parse_scenario

P = 1.0e6  # timing proxy parameters
T = 0.1  # seconds per inner step
H = 5  # inner steps per round


def scenario(regions, servers, algorithm, *, links=(), intra=(100.0, 1e-4), run=None, faults=None, **top) -> dict:
    """A timing-only scenario as a mapping (T, P above), ready for ``parse_scenario``."""
    d = {
        "name": "async-timeline", "seed": 0,
        "topology": {"regions": list(regions), "links": list(links), "servers": list(servers),
                     "intra_region": {"bandwidth_gbps": intra[0], "latency_s": intra[1]}},
        "model": {"kind": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16},
        "data": {"kind": "synthetic", "vocab_size": 32},
        "compute": {"batch_size": 4},
        "algorithm": dict(algorithm),
        "numerics": False,
        "timing": {"params": P, "layers": 1, "step_time_s": T},
        "run": dict(run or {"max_rounds": 4}),
    }
    if faults:
        d["faults"] = faults
    d.update(top)
    return d


def simulate(d: dict) -> Simulation:
    sim = Simulation(parse_scenario(d))
    sim.run()
    return sim


def transfer_s(nbytes: float, route: list[tuple[float, float]]) -> float:
    """One flow alone on its route: bytes over the slowest link plus every link's latency."""
    return nbytes * 8 / (min(bw for bw, _ in route) * 1e9) + sum(lat for _, lat in route)


def alsgd(**kw) -> dict:
    return {"name": "async_local_sgd", "inner_steps": H, "dynamic_local_updates": False, **kw}


def compute_starts(sim, worker: int) -> list[float]:
    return sorted(s.start_s for s in sim.recorder.states if s.worker == worker and s.state == "compute")


def models_received(sim, node: str) -> list[float]:
    return sorted(t.end_s for t in sim.recorder.transfers if t.dst == node and t.tag.startswith("model:"))


# ---------------------------------------------------------------------------- timelines by hand
def test_one_worker_round_is_compute_upload_apply_download():
    """One worker and one server: each round takes H x T + upload + apply_time_s + download,
    each transfer bytes / the slowest link's bandwidth + the latencies of the route's links
    (worker NIC, server NIC), with the bf16 push half the fp32 model's bytes."""
    intra_bw, intra_lat, nic_bw, apply_s = 40.0, 3e-4, 8.0, 0.02
    d = scenario([{"name": "us", "nodes": 1}], [{"name": "ps", "region": "us", "bandwidth_gbps": nic_bw,
                                                  "apply_time_s": apply_s}],
                 alsgd(payload_dtype="bf16"), intra=(intra_bw, intra_lat), run={"max_rounds": 5})
    sim = simulate(d)
    route = [(intra_bw, intra_lat), (nic_bw, intra_lat)]  # us/0 -> us (its NIC), us -> ps (the server's NIC)
    up, down = transfer_s(2 * P, route), transfer_s(4 * P, route)
    rnd = H * T + up + apply_s + down
    pushes = sorted((t for t in sim.recorder.transfers if t.tag.startswith("push:")), key=lambda t: t.start_s)
    models = sorted((t for t in sim.recorder.transfers if t.tag.startswith("model:")), key=lambda t: t.start_s)
    assert len(pushes) == 5 and len(models) == 4  # the run ends once the 5th update is applied
    for k, (p, m) in enumerate(zip(pushes, models)):
        assert (p.src, p.dst, p.payload_bytes, m.src, m.dst, m.payload_bytes) == ("us/0", "ps", 2 * P, "ps", "us/0", 4 * P)
        assert p.start_s == pytest.approx(k * rnd + H * T, rel=1e-12)
        assert p.end_s == pytest.approx(k * rnd + H * T + up, rel=1e-12)
        assert m.start_s == pytest.approx(k * rnd + H * T + up + apply_s, rel=1e-12)
        assert m.end_s == pytest.approx((k + 1) * rnd, rel=1e-12)
    served = sorted(sim.recorder.served, key=lambda s: s.start_s)
    assert [(s.start_s, s.end_s) for s in served] == [
        (pytest.approx(k * rnd + H * T + up, rel=1e-12), pytest.approx(k * rnd + H * T + up + apply_s, rel=1e-12))
        for k in range(5)]
    assert compute_starts(sim, 0) == pytest.approx([k * rnd for k in range(5)], rel=1e-12, abs=1e-15)
    assert sim.env.now == pytest.approx(4 * rnd + H * T + up + apply_s, rel=1e-12)


def _two_speeds(with_slow: bool, window: float) -> dict:
    regions = [{"name": "a", "nodes": 1}] + ([{"name": "b", "nodes": 1, "step_time_multiplier": 2.0}] if with_slow else [])
    links = [{"a": "a", "b": "b", "bandwidth_gbps": 2.0, "latency_s": 0.03}] if with_slow else []
    return scenario(regions, [{"name": "ps", "region": "a", "bandwidth_gbps": float("inf")}], alsgd(),
                    links=links, intra=(10.0, 1e-3), run={"max_sim_time_s": window, "max_rounds": None})


def test_fast_worker_never_waits_for_the_slow_one_and_rounds_fill_the_window():
    """Two workers at speeds 1 and 2 on their own links: the fast one's step times are the same
    as in a run without the slow one, and each one's rounds completed within a window are
    floor(window / its round time), its round time H x T x multiplier + upload + download."""
    window = 6.0
    both, alone = simulate(_two_speeds(True, window)), simulate(_two_speeds(False, window))
    fast = [s for s in both.recorder.states if s.worker == 0]
    assert len(fast) > 10
    assert [(s.state, s.start_s, s.end_s, s.step) for s in fast] == \
        [(s.state, s.start_s, s.end_s, s.step) for s in alone.recorder.states if s.worker == 0]
    # fast: a/0 -> a -> ps; slow: b/0 -> b -> a -> ps (its NIC, the WAN link, the server's NIC)
    r_fast = H * T + 2 * transfer_s(4 * P, [(10.0, 1e-3), (math.inf, 1e-3)])
    r_slow = 2 * H * T + 2 * transfer_s(4 * P, [(10.0, 1e-3), (2.0, 0.03), (math.inf, 1e-3)])
    for node, rnd in (("a/0", r_fast), ("b/0", r_slow)):
        done = [t for t in models_received(both, node) if t <= window]
        assert abs(window / rnd - round(window / rnd)) > 1e-3  # the window does not end on a round's edge
        assert len(done) == math.floor(window / rnd)
        assert done == pytest.approx([k * rnd for k in range(1, len(done) + 1)], rel=1e-9)


def test_two_workers_pushing_through_the_server_nic_share_it_max_min():
    """Two workers whose pushes (and the answers) cross the server's NIC at the same time, the
    NIC the bottleneck: each transfer takes 2 x bytes / NIC bandwidth + the route's latencies."""
    nic, lat = 4.0, 2e-4
    d = scenario([{"name": "us", "nodes": 2}], [{"name": "ps", "region": "us", "bandwidth_gbps": nic}],
                 alsgd(), intra=(100.0, lat), run={"max_rounds": 3})
    sim = simulate(d)
    shared = 2 * 4 * P * 8 / (nic * 1e9) + 2 * lat
    assert shared > 1.5 * transfer_s(4 * P, [(100.0, lat), (nic, lat)])  # sharing is visible
    tr = [t for t in sim.recorder.transfers if t.tag.endswith((":0", ":1"))]
    assert len(tr) == 8 and {t.tag for t in tr} == {"push:0", "model:0", "push:1", "model:1"}
    for t in tr:
        assert t.end_s - t.start_s == pytest.approx(shared, rel=1e-9)
    rnd = H * T + 2 * shared
    assert sorted(t.end_s for t in tr if t.tag.startswith("model")) == pytest.approx([rnd, rnd, 2 * rnd, 2 * rnd])


def test_a_push_held_back_elsewhere_leaves_the_rest_of_the_server_nic_to_the_other():
    """Max-min with unequal shares: pushes from a/0 (its own NIC 100 Gbit/s) and b/0 (behind a
    1 Gbit/s WAN link) cross the 4 Gbit/s server NIC together (no latency): b/0's flow gets 1 and
    a/0's the remaining 3 Gbit/s; the answers, alone in the other direction, get the whole NIC
    and b/0's the WAN link."""
    regions = [{"name": "a", "nodes": 1}, {"name": "b", "nodes": 1}]
    d = scenario(regions, [{"name": "ps", "region": "a", "bandwidth_gbps": 4.0}], alsgd(),
                 links=[{"a": "a", "b": "b", "bandwidth_gbps": 1.0, "latency_s": 0.0}], intra=(100.0, 0.0),
                 run={"max_rounds": 2})
    sim = simulate(d)
    bits = 4 * P * 8
    tr = {(t.src, t.dst): t for t in sim.recorder.transfers if t.tag.endswith(":0")}
    assert tr[("a/0", "ps")].start_s == tr[("b/0", "ps")].start_s == pytest.approx(H * T)
    assert tr[("a/0", "ps")].end_s - tr[("a/0", "ps")].start_s == pytest.approx(bits / 3e9, rel=1e-9)
    assert tr[("b/0", "ps")].end_s - tr[("b/0", "ps")].start_s == pytest.approx(bits / 1e9, rel=1e-9)
    assert tr[("ps", "a/0")].end_s - tr[("ps", "a/0")].start_s == pytest.approx(bits / 4e9, rel=1e-9)
    assert tr[("ps", "b/0")].end_s - tr[("ps", "b/0")].start_s == pytest.approx(bits / 1e9, rel=1e-9)


def test_updates_arriving_together_restart_both_workers_from_the_model_with_both_applied():
    """Two equal workers on identical routes push in the same instant every round: the second
    update applied has staleness 1, the first 0, and since both answers leave at the end of the
    instant (the model with both updates), the next round's staleness is again 0 and 1 (not 1
    and 2, as answering the first before the second was applied would give)."""
    d = scenario([{"name": "us", "nodes": 2}], [{"name": "ps", "region": "us"}], alsgd(), intra=(100.0, 1e-4),
                 run={"max_rounds": 4})
    sim = simulate(d)
    served = sorted(sim.recorder.served, key=lambda s: s.version)
    assert len(served) == 8
    for r in range(4):
        pair = served[2 * r: 2 * r + 2]
        assert pair[0].end_s == pair[1].end_s and {s.round for s in pair} == {r} and {s.worker for s in pair} == {0, 1}
        assert [s.staleness for s in pair] == [0, 1] and [s.version for s in pair] == [2 * r + 1, 2 * r + 2]


def test_a_busy_server_handles_simultaneous_arrivals_one_at_a_time():
    """Two pushes reaching a server with apply_time_s a in the same instant t: it handles them one
    after the other (busy over [t, t + a] then [t + a, t + 2a]) and each answer leaves when its
    own handling ends."""
    apply_s, lat = 0.05, 1e-4
    d = scenario([{"name": "us", "nodes": 2}], [{"name": "ps", "region": "us", "bandwidth_gbps": float("inf"),
                                                  "apply_time_s": apply_s}],
                 alsgd(), intra=(float("inf"), lat), run={"max_rounds": 2})
    sim = simulate(d)
    t = H * T + 2 * lat
    assert sim.barrier.busy_s()["ps"] == pytest.approx(apply_s * len(sim.recorder.served))
    served = sorted((s for s in sim.recorder.served if s.round == 0), key=lambda s: s.start_s)
    assert [(s.start_s, s.end_s, s.version) for s in served] == [
        (pytest.approx(t), pytest.approx(t + apply_s), 1), (pytest.approx(t + apply_s), pytest.approx(t + 2 * apply_s), 2)]
    answers = sorted((tr.start_s, tr.dst) for tr in sim.recorder.transfers if tr.tag == "model:0")
    assert [a for a, _ in answers] == pytest.approx([t + apply_s, t + 2 * apply_s])
    assert [dst for _, dst in answers] == [f"us/{served[0].worker}", f"us/{served[1].worker}"]


# ---------------------------------------------------------------------------- staleness
def test_staleness_follows_the_hand_computed_arrival_order():
    """Four workers at multipliers 1, 1.3, 1.7, 2.9 and no transfer time (infinite bandwidth,
    no latency): worker w's k-th update arrives at k x H x T x m_w, so the arrival order is
    known; each update's staleness is the number of updates applied since its worker's start
    model left the server, and the server version counts the updates."""
    mult = [Fraction(1), Fraction(13, 10), Fraction(17, 10), Fraction(29, 10)]
    regions = [{"name": f"r{w}", "nodes": 1, "step_time_multiplier": float(m)} for w, m in enumerate(mult)]
    links = [{"a": "r0", "b": f"r{w}", "bandwidth_gbps": float("inf"), "latency_s": 0.0} for w in range(1, 4)]
    horizon = Fraction(23, 2)
    d = scenario(regions, [{"name": "ps", "region": "r0"}], alsgd(), links=links, intra=(float("inf"), 0.0),
                 run={"max_sim_time_s": float(horizon) * H * T, "max_rounds": None})
    sim = simulate(d)
    # by hand: arrival times in units of H x T, exact fractions; no two workers arrive together
    arrivals = sorted((k * m, w) for w, m in enumerate(mult) for k in range(1, int(horizon / m) + 1)
                      if k * m < horizon)
    assert len({t for t, _ in arrivals}) == len(arrivals)
    version, left_at, expected = 0, [0] * 4, []
    for _, w in arrivals:
        expected.append((w, version - left_at[w], version + 1))
        version += 1
        left_at[w] = version  # the answer carries every update applied so far
    got = [(s.worker, s.staleness, s.version) for s in sorted(sim.recorder.served, key=lambda s: (s.end_s, s.version))]
    assert got == expected
    assert max(st for _, st, _ in expected) >= 3  # slow workers really are stale
    points = sorted((p.step, p.worker, p.loss) for p in sim.recorder.losses if p.kind == "staleness")
    assert points == sorted((v, w, float(st)) for w, st, v in expected)


# ---------------------------------------------------------------------------- DyLU, FedBuff's staleness limit
THREE_SPEEDS = [{"name": "a", "nodes": 1}, {"name": "b", "nodes": 1, "step_time_multiplier": 3.0},
                {"name": "c", "nodes": 1, "step_time_multiplier": 7.0}]
THREE_LINKS = [{"a": "a", "b": r, "bandwidth_gbps": 10.0, "latency_s": 0.01} for r in ("b", "c")]


@pytest.mark.parametrize("node_multiplier", [None, 2.0])
def test_dynamic_local_updates_give_each_worker_ceil_h_times_its_relative_speed(node_multiplier):
    """DyLU: workers at multipliers 1, 3, 7 (b/0 also x node_multiplier, a known speed) push every
    H_w = max(1, ceil(H v_w / max v)) steps: 5, ceil(5 / 3) = 2 (ceil(5 / 6) = 1), ceil(5 / 7) = 1."""
    faults = {"node_step_time_multiplier": {"b/0": node_multiplier}} if node_multiplier else None
    d = scenario(THREE_SPEEDS, [{"name": "ps", "region": "a"}], {"name": "async_local_sgd", "inner_steps": H},
                 links=THREE_LINKS, run={"max_rounds": 6}, faults=faults)
    sim = simulate(d)
    mult = [1.0, 3.0 * (node_multiplier or 1.0), 7.0]
    for w, m in enumerate(mult):
        hw = max(1, math.ceil(H * (1 / m) / 1.0))
        blocked = sorted({s.step for s in sim.recorder.states if s.worker == w and s.state == "comm_blocked"})
        assert len(blocked) >= 4 and blocked == [hw * (k + 1) for k in range(len(blocked))]
    assert len(sim.recorder.served) == 6 * 3  # run.max_rounds: updates applied / workers


def test_fedbuff_drops_deltas_staler_than_max_staleness_and_does_not_count_them():
    """fedbuff with K = 1 and max_staleness 1: a delta whose staleness (server steps since its
    worker's model left) is above 1 leaves the version unchanged and is not counted toward
    run.max_rounds; every other one is a server step (version + 1)."""
    d = scenario(THREE_SPEEDS, [{"name": "ps", "region": "a"}],
                 {"name": "fedbuff", "inner_steps": H, "buffer_size": 1, "max_staleness": 1},
                 links=THREE_LINKS, run={"max_rounds": 4})
    sim = simulate(d)
    served = sorted(sim.recorder.served, key=lambda s: s.end_s)
    version = 0
    for s in served:
        if s.staleness <= 1:
            version += 1
        assert s.version == version
    kept = [s for s in served if s.staleness <= 1]
    assert len(kept) == 4 * 3 and len(served) > len(kept)  # some were dropped; the run counted the kept ones


# ---------------------------------------------------------------------------- HALoS's two levels
def test_halos_local_servers_push_every_k_updates_one_at_a_time_over_the_wan():
    """HALoS in two regions (K = 3): each local server sends its change to the global server over
    the WAN exactly when K updates have been applied since its last merge and no push of its own is
    in flight (the next one waits for the global model's return), and the global server's
    staleness for a push counts its versions applied since its model last left for that LPS."""
    regions = [{"name": "a", "nodes": 2}, {"name": "b", "nodes": 2, "step_time_multiplier": 1.5}]
    links = [{"a": "a", "b": "b", "bandwidth_gbps": 0.05, "latency_s": 0.05}]  # a slow WAN: pushes overlap arrivals
    k = 3
    d = scenario(regions, [{"name": "gps", "region": "a"}],
                 {"name": "halos", "inner_steps": 4, "updates_per_push": k, "local_buffer_size": 2},
                 links=links, run={"max_rounds": 6})
    sim = simulate(d)
    deltas = {lps: sorted((t for t in sim.recorder.transfers if t.src == lps and t.tag.startswith("delta:")),
                          key=lambda t: t.start_s) for lps in ("a-lps", "b-lps")}
    backs = {lps: sorted((t for t in sim.recorder.transfers if t.dst == lps and t.tag.startswith("global:")),
                         key=lambda t: t.start_s) for lps in ("a-lps", "b-lps")}
    assert {t.route for t in deltas["b-lps"]} == {"b-lps>b>a>gps"} and {t.route for t in deltas["a-lps"]} == {"a-lps>a>gps"}
    in_flight_arrivals = 0
    for lps in ("a-lps", "b-lps"):
        expected, version, merged, in_flight = [], 0, 0, False
        for s in sorted((s for s in sim.recorder.served if s.server == lps), key=lambda s: (s.end_s, s.stream != "global")):
            if s.stream == "global":
                merged, in_flight = version, False
                continue
            version += 1
            assert s.version == version
            in_flight_arrivals += in_flight
            if version - merged >= k and not in_flight:
                expected.append(s.end_s)
                in_flight = True
        assert len(expected) >= 2 and [t.start_s for t in deltas[lps]] == pytest.approx(expected)
        for back, nxt in zip(backs[lps], deltas[lps][1:]):
            assert back.end_s <= nxt.start_s  # one push in flight at a time
    assert in_flight_arrivals > 0  # the case where a push waits did occur
    version, left = 0, {"a-lps": 0, "b-lps": 0}
    for s in sorted((s for s in sim.recorder.served if s.server == "gps"), key=lambda s: s.end_s):
        assert (s.staleness, s.version) == (version - left[s.sender], version + 1)
        version += 1
        left[s.sender] = version


# ---------------------------------------------------------------------------- faults
def _three(faults=None) -> dict:
    """Three workers on their own NICs, infinite bandwidth (only latency): nobody shares a link."""
    return scenario([{"name": "a", "nodes": 3}], [{"name": "ps", "region": "a"}], alsgd(), intra=(float("inf"), 1e-3),
                    run={"max_sim_time_s": 3.0, "max_rounds": None}, faults=faults)


def _timeline(sim, worker: int) -> list[tuple]:
    return [(s.state, s.start_s, s.end_s, s.step) for s in sim.recorder.states if s.worker == worker]


def test_failed_worker_stops_pushing_nobody_waits_and_it_refetches_from_its_server():
    """A worker down over [0.7, 2.1): the others' timelines and pushes are exactly those of a run
    without the failure (nobody waits for it), it pushes nothing while down, and on return it
    fetches the model from its server (a recovery whose peer is the server, then computes)."""
    down = (0.7, 2.1)
    base = simulate(_three())
    failed = simulate(_three({"failures": {"schedule": [{"node": "a/1", "start_s": down[0], "end_s": down[1]}]}}))
    for w in (0, 2):
        assert len(_timeline(failed, w)) > 10
        assert _timeline(failed, w) == _timeline(base, w)
        assert models_received(failed, f"a/{w}") == models_received(base, f"a/{w}")
    pushes = [t.start_s for t in failed.recorder.transfers if t.src == "a/1" and t.tag.startswith("push:")]
    assert pushes and not [t for t in pushes if down[0] <= t < down[1]]
    assert [t for t in pushes if t >= down[1]]  # it works again after the fetch
    (rec,) = failed.recorder.recoveries
    assert (rec.worker, rec.peer, rec.payload_bytes) == (1, "ps", 4 * P)
    assert rec.start_s == pytest.approx(down[1])
    (fetch,) = [t for t in failed.recorder.transfers
                if t.dst == "a/1" and t.start_s >= down[1] and not t.tag.startswith("model:")]
    assert (fetch.src, fetch.start_s, fetch.end_s) == ("ps", rec.start_s, rec.end_s)
    after = [s for s in failed.recorder.states if s.worker == 1 and s.start_s >= rec.end_s and s.state == "compute"]
    assert after and after[0].start_s == pytest.approx(rec.end_s)
    # base has every push of worker 1 the failed run lacks; the others' served records are the same
    assert len(pushes) < len([t for t in base.recorder.transfers if t.src == "a/1" and t.tag.startswith("push:")])


def test_push_of_a_worker_that_fails_on_the_wire_is_called_off():
    """A worker that fails while its push is on the wire: the push is called off (no byte to or
    from a down node: it never reaches the server, nothing answers it, its transfer record ends
    at the failure), the others go on, and on return the worker fetches the model from the server."""
    lat = 1e-3
    push_at = H * T  # a/1's first push leaves at H x T and would arrive 2 latencies later
    fail = push_at + lat
    sim = simulate(_three({"failures": {"schedule": [{"node": "a/1", "start_s": fail, "end_s": 1.5}]}}))
    assert not [s for s in sim.recorder.served if s.worker == 1 and s.round == 0]
    (push,) = [t for t in sim.recorder.transfers if t.src == "a/1" and t.tag == "push:0"]
    assert push.end_s == pytest.approx(fail)
    assert not [x for x in sim.recorder.dropped if x.worker == 1]  # nothing was left to answer
    assert not [t for t in sim.recorder.transfers if t.dst == "a/1" and t.tag.startswith("model:")
                and t.start_s < 1.5]
    others = {s.worker for s in sim.recorder.served if s.start_s < 1.5}
    assert others == {0, 2}
    (rec,) = sim.recorder.recoveries
    assert (rec.worker, rec.peer) == (1, "ps") and rec.start_s == pytest.approx(1.5)


def test_answer_to_a_push_made_before_a_failure_is_not_used_after_return():
    """A worker fails after its push arrived (the server is busy with it) and comes back (fetching the server's model) before the
    server's answer to that push arrives: the old answer is not used (a Dropped record for it; it
    is not delivered), since the worker has a fresh model and is in the middle of its next round."""
    regions = [{"name": "a", "nodes": 1}, {"name": "b", "nodes": 1}]
    links = [{"a": "a", "b": "b", "bandwidth_gbps": 0.05, "latency_s": 0.01}]
    d = scenario(regions, [{"name": "ps", "region": "a", "apply_time_s": 1.0}], alsgd(inner_steps=20), links=links,
                 run={"max_rounds": 3}, faults={"failures": {"schedule": [{"node": "b/0", "start_s": 2.7, "end_s": 2.9}]}})
    sim = simulate(d)
    (rec,) = sim.recorder.recoveries
    (push,) = [t for t in sim.recorder.transfers if t.src == "b/0" and t.tag == "push:0"]
    (served,) = [s for s in sim.recorder.served if s.worker == 1 and s.round == 0]
    # the case: pushed before the failure, its answer leaves the busy server after the worker is back
    assert push.end_s < 2.7 and rec.start_s == pytest.approx(2.9) and served.end_s > rec.end_s
    assert [(x.stream, x.round) for x in sim.recorder.dropped if x.worker == 1] == [("model", 0)]
    models = [t for t in sim.recorder.transfers if t.tag.startswith("model:") and (t.dst, t.tag) != ("b/0", "model:0")]
    assert sim.barrier.delivered == len(models)  # every answer but that one reached its worker


def test_straggler_slows_only_the_worker_it_hits():
    """A lognormal straggler on a/2 stretches a/2's steps only: the other workers' timelines are
    those of a run without it, and a/2 completes fewer rounds."""
    base = simulate(_three())
    slow = simulate(_three({"stragglers": [{"nodes": ["a/2"], "factor": {"kind": "lognormal", "mu": 1.0, "sigma": 0.3}}]}))
    for w in (0, 1):
        assert _timeline(slow, w) == _timeline(base, w)
    assert _timeline(slow, 2) != _timeline(base, 2)
    assert len(models_received(slow, "a/2")) < len(models_received(base, "a/2"))


# ---------------------------------------------------------------------------- determinism, numerics on/off
def _tiny_numerics(numerics: bool, method: dict) -> dict:
    """Two regions (speeds 1 and 2), the tiny GPT trained or not, the same proxy timing; two
    failures and a random straggler."""
    regions = [{"name": "us", "nodes": 2}, {"name": "eu", "nodes": 1, "step_time_multiplier": 2.0}]
    d = scenario(regions, [{"name": "ps", "region": "us", "apply_time_s": 0.001}], method,
                 links=[{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.02}],
                 run={"max_rounds": 3, "eval_every_steps": 4, "eval_batches": 1, "eval_batch_size": 8, "device": "cpu"})
    d["numerics"] = numerics
    d["faults"] = {"failures": {"schedule": [{"node": "us/1", "start_s": 0.45, "end_s": 0.9},
                                             {"node": "eu/0", "start_s": 1.0, "end_s": 1.3}]},
                   "stragglers": [{"nodes": ["us/0"], "factor": {"kind": "lognormal", "sigma": 0.5}}]}
    return d


def _events(sim) -> tuple:
    r = sim.recorder
    return (list(r.states), list(r.transfers), list(r.served), list(r.recoveries), list(r.dropped))


METHODS = [{"name": "async_local_sgd", "inner_steps": 4, "buffer_size": 2},
           {"name": "fedbuff", "inner_steps": 4, "buffer_size": 2},
           {"name": "halos", "inner_steps": 4, "updates_per_push": 2, "local_buffer_size": 2}]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m["name"])
def test_same_seed_same_events_and_losses_and_numerics_do_not_change_time(method):
    """Same scenario and seed twice (failures and a random straggler included): identical
    transfers, states, served records, recoveries and losses; the same scenario without numerics
    (same timing.step_time_s): identical states, transfers, served records and recoveries."""
    a, b = simulate(_tiny_numerics(True, method)), simulate(_tiny_numerics(True, method))
    off = simulate(_tiny_numerics(False, method))
    assert len(a.recorder.served) >= 6 and a.recorder.transfers and len(a.recorder.recoveries) == 2
    assert _events(a) == _events(b)
    losses = [p for p in a.recorder.losses if p.kind in ("train", "eval")]
    assert {p.kind for p in losses} == {"train", "eval"} and all(math.isfinite(p.loss) for p in losses)
    assert a.recorder.losses == b.recorder.losses
    assert _events(off) == _events(a)
    assert [p for p in off.recorder.losses if p.kind == "staleness"] == \
        [p for p in a.recorder.losses if p.kind == "staleness"]
