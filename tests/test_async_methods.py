"""Methods without a barrier, numerics (issue 25): degenerate limits against the synchronous
methods, Delayed Nesterov against a float64 reference written from REFERENCE.md section 10, and
bad input at the command line. The timelines are in tests/test_async_timeline.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from sim.runner import Simulation
from sim.scenario import parse_scenario

ROOT = Path(__file__).resolve().parents[1]


def scenario(nodes: int, algorithm: dict, *, servers=True, max_rounds: int = 5, seed: int = 3) -> dict:
    """The tiny GPT in one region of ``nodes`` equal workers (fixed 0.1 s steps), server ``ps``."""
    return {
        "name": "async-limits", "seed": seed,
        "topology": {"regions": [{"name": "us", "nodes": nodes}],
                     "servers": [{"name": "ps", "region": "us"}] if servers else []},
        "model": {"kind": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16},
        "data": {"kind": "synthetic", "vocab_size": 32},
        "compute": {"batch_size": 4, "step_time": {"mode": "fixed", "step_time_s": 0.1}},
        "algorithm": dict(algorithm),
        "run": {"max_rounds": max_rounds, "eval_every_steps": 2, "eval_batches": 1, "eval_batch_size": 8,
                "device": "cpu"},
    }


def simulate(d: dict) -> Simulation:
    sim = Simulation(parse_scenario(d))
    sim.run()
    return sim


def losses(sim, kind: str) -> list[tuple[int, int, float]]:
    """(worker, step, loss) of every ``kind`` loss point, in a fixed order."""
    return sorted((p.worker, p.step, p.loss) for p in sim.recorder.losses if p.kind == kind)


def final_model(sim) -> dict:
    return sim.algorithm.global_params(sim.numerics, sim.adapter.state)


def assert_same_losses(a, b, tol: float) -> None:
    for kind in ("train", "eval"):
        la, lb = losses(a, kind), losses(b, kind)
        assert len(la) > 4 and [x[:2] for x in la] == [x[:2] for x in lb], kind
        assert max(abs(x[2] - y[2]) for x, y in zip(la, lb)) <= tol, kind
    evals = [x[2] for x in losses(a, "eval")]
    assert len(set(evals)) >= 3  # the model really moves: the comparison is not of constants


def assert_same_model(a, b, tol: float) -> None:
    ma, mb = final_model(a), final_model(b)
    assert ma.keys() == mb.keys()
    for k in ma:
        assert float((ma[k].double() - mb[k].double()).abs().max()) <= tol, k


# ---------------------------------------------------------------------------- degenerate limits
OUTER = {"outer_lr": 0.7, "outer_momentum": 0.9}


def test_async_local_sgd_with_one_worker_is_diloco_with_one_worker():
    """async_local_sgd with one worker, N = 1, c = 0 and no DyLU is DiLoCo with one worker
    (PyTorch-form Nesterov, same outer lr and momentum): every train and eval loss and the final
    model are bit-for-bit equal."""
    a = simulate(scenario(1, {"name": "async_local_sgd", "inner_steps": 4, "buffer_size": 1,
                              "momentum_activation": 0.0, "dynamic_local_updates": False, **OUTER}))
    d = simulate(scenario(1, {"name": "diloco", "inner_steps": 4, "nesterov": True, **OUTER}, servers=False))
    assert losses(a, "train") == losses(d, "train") and len(losses(a, "train")) == 5 * 4
    assert losses(a, "eval") == losses(d, "eval")
    assert_same_losses(a, d, 0.0)
    assert_same_model(a, d, 0.0)


def test_fedbuff_buffering_every_worker_is_fedavg_over_all_workers():
    """fedbuff with K = the 4 workers, equal speeds, no stragglers, server SGD lr 1 without
    momentum is FedAvg over all workers (island_size null, same H): every update has staleness 0,
    train and eval losses agree to 1e-6 and the final parameters (of order 1) to 2e-5: the server's
    theta - mean(theta - theta_w) rounds differently from FedAvg's mean(theta_w) in float32
    (measured on CPU: train 2.4e-7, eval 0, parameters 4.8e-6)."""
    fb = simulate(scenario(4, {"name": "fedbuff", "inner_steps": 4, "buffer_size": 4, "server_lr": 1.0,
                               "server_momentum": 0.0}))
    fa = simulate(scenario(4, {"name": "fedavg", "inner_steps": 4, "island_size": None}, servers=False))
    assert {s.staleness for s in fb.recorder.served} == {0} and len(fb.recorder.served) == 5 * 4
    assert_same_losses(fb, fa, 1e-6)
    assert_same_model(fb, fa, 2e-5)


HALOS_AS_ALSGD = {"name": "halos", "inner_steps": 4, "dynamic_local_updates": False, "local_lr": 0.7,
                  "local_momentum": 0.9, "local_buffer_size": 2, "updates_per_push": 1, "merge_weight": 1.0,
                  "global_lr": 1.0, "global_momentum": 0.0, "global_buffer_size": 1}
ALSGD_AS_LOCAL = {"name": "async_local_sgd", "inner_steps": 4, "dynamic_local_updates": False, "outer_lr": 0.7,
                  "outer_momentum": 0.9, "buffer_size": 2}


def test_halos_with_one_region_k1_alpha1_and_a_plain_global_server_is_async_local_sgd():
    """halos with one region (one worker), K = 1, alpha = 1 and a global server doing plain SGD at
    lr 1 (N_g = 1, beta_g = 0) is async_local_sgd with the local server's settings: train and eval
    losses and the final model agree to 1e-6, and its timeline has the extra hop (a delta to the
    global server and the global model back to the local one after every update)."""
    h = simulate(scenario(1, HALOS_AS_ALSGD))
    a = simulate(scenario(1, ALSGD_AS_LOCAL))
    assert_same_losses(h, a, 1e-6)
    assert_same_model(h, a, 1e-6)
    hop = {(t.src, t.dst, t.tag.split(":")[0]) for t in h.recorder.transfers}
    assert hop == {("us/0", "us-lps", "push"), ("us-lps", "us/0", "model"), ("us-lps", "ps", "delta"),
                   ("ps", "us-lps", "global")}
    deltas = [t for t in h.recorder.transfers if t.tag.startswith("delta:")]
    assert len(deltas) == len([s for s in h.recorder.served if s.server == "us-lps" and s.worker == 0]) == 5
    assert {t.dst for t in a.recorder.transfers} == {"ps", "us/0"}
    assert h.env.now > a.env.now  # the same updates, one hop later


def test_halos_counts_every_update_its_push_carries():
    """halos with two equal workers (their updates reach the LPS in the same instant), K = 1,
    alpha = 1 and a plain global server: each push carries both updates, and run.max_rounds counts
    both, so the run stops after the same 5 rounds of steps as async_local_sgd and their losses agree."""
    h = simulate(scenario(2, HALOS_AS_ALSGD))
    a = simulate(scenario(2, ALSGD_AS_LOCAL))
    assert len(losses(h, "train")) == len(losses(a, "train")) == 2 * 5 * 4
    assert_same_losses(h, a, 1e-6)


# ---------------------------------------------------------------------------- Delayed Nesterov
def delayed_nesterov_reference(theta0, grads, lr, beta, N, c):
    """REFERENCE.md section 10, line by line, float64: D += g; every N-th arrival m = beta m + D / N,
    theta -= lr ((1 - cN + c) beta m + g / N), D = 0; otherwise theta -= lr (c beta m + g / N)."""
    theta = {k: v.astype(np.float64).copy() for k, v in theta0.items()}
    m = {k: np.zeros_like(v) for k, v in theta.items()}
    D = {k: np.zeros_like(v) for k, v in theta.items()}
    out = []
    for t, g in enumerate(grads):
        for k in theta:
            D[k] += g[k]
        if (t + 1) % N == 0:
            for k in theta:
                m[k] = beta * m[k] + D[k] / N
                theta[k] -= lr * ((1 - c * N + c) * beta * m[k] + g[k] / N)
                D[k] = np.zeros_like(D[k])
        else:
            for k in theta:
                theta[k] -= lr * (c * beta * m[k] + g[k] / N)
        out.append({k: v.copy() for k, v in theta.items()})
    return out


@pytest.mark.parametrize("N", [1, 2, 4])
@pytest.mark.parametrize("c_times_n", [0, 1])
def test_delayed_nesterov_matches_a_float64_reference(N, c_times_n):
    """DelayedNesterov on a stream of 37 random pseudo-gradients (float32 tensors) stays within
    1e-5 (relative to the model's size) of a float64 reference written from the pseudocode, after
    every arrival, for N in 1, 2, 4 and c in 0, 1/N."""
    import torch

    from sim.algorithms.asynchronous import DelayedNesterov

    c = c_times_n / N
    gen = np.random.default_rng(100 * N + c_times_n)
    theta0 = {"w": gen.normal(size=(7, 5)), "b": gen.normal(size=(11,))}
    grads = [{k: 0.1 * gen.normal(size=v.shape) for k, v in theta0.items()} for _ in range(37)]
    ref = delayed_nesterov_reference(theta0, grads, 0.7, 0.9, N, c)
    dn = DelayedNesterov(0.7, 0.9, N, c)
    theta = {k: torch.tensor(v, dtype=torch.float32) for k, v in theta0.items()}
    st = dn.init(theta)
    for t, g in enumerate(grads):
        dn.step_(theta, st, {k: torch.tensor(v, dtype=torch.float32) for k, v in g.items()})
        for k in theta:
            scale = max(1.0, float(np.abs(ref[t][k]).max()))
            assert float(np.abs(theta[k].double().numpy() - ref[t][k]).max()) < 1e-5 * scale, (t, k)
    assert st["t"] == len(grads)
    # the momentum matters: a plain SGD stream (beta 0) ends elsewhere
    plain = delayed_nesterov_reference(theta0, grads, 0.7, 0.0, N, c)[-1]
    assert max(float(np.abs(plain[k] - ref[-1][k]).max()) for k in theta) > 1e-2


def test_fedbuff_server_step_is_the_staleness_weighted_buffer_mean():
    """FedBuff's server math: deltas buffered with weight 1 / sqrt(1 + staleness); at the K-th
    (K = 3) one server SGD step (lr 0.5, heavy-ball momentum 0.9) on their weighted sum / K,
    checked against float64 arithmetic over two buffers (staleness 0, 3, 8, then 1, 0, 2)."""
    import torch

    from sim.algorithms.asynchronous import AsyncState
    from sim.schedule import Message, Served, ServerInfo
    from sim.algorithms.fedbuff import FedBuff

    fb = FedBuff(FedBuff.Spec(name="fedbuff", buffer_size=3, server_lr=0.5, server_momentum=0.9), n_workers=3, seed=0)
    fb.set_servers([ServerInfo("ps", "us")], ["us"] * 3, [0.1] * 3)
    gen = np.random.default_rng(7)
    theta = {"w": gen.normal(size=(4, 3))}
    state = AsyncState(start={}, models={"ps": {k: torch.tensor(v) for k, v in theta.items()}})
    fb.init_server(state, "ps")
    ref, m = theta["w"].copy(), np.zeros_like(theta["w"])
    for staleness in ([0, 3, 8], [1, 0, 2]):
        total = np.zeros_like(ref)
        for i, s in enumerate(staleness):
            g = gen.normal(size=ref.shape)
            total += g / np.sqrt(1 + s)
            fb.update(state, "ps", Message("push", 0, i, "ps", 12, "fp32"), Served(applied=True, staleness=s),
                      {"w": torch.tensor(g)})
            if i < 2:  # nothing moves before the K-th delta
                assert np.abs(state.models["ps"]["w"].numpy() - ref).max() < 1e-12
        m = 0.9 * m + total / 3
        ref = ref - 0.5 * m
        assert np.abs(state.models["ps"]["w"].numpy() - ref).max() < 1e-12


def test_halos_local_server_push_and_merge_follow_the_reference_rules():
    """HALoS's local server: its push to the global server carries snapshot_at_last_merge - theta_L;
    the global model's arrival sets theta_L = (1 - alpha) theta_L + alpha theta_G (alpha = 0.25, the
    weight of the global model) and the snapshot to the merged theta_L (float64 arithmetic)."""
    import torch

    from sim.algorithms.asynchronous import AsyncState
    from sim.schedule import Message, Served, ServerInfo
    from sim.algorithms.halos import DELTA, GLOBAL, HALoS

    h = HALoS(HALoS.Spec(name="halos", local_lr=0.5, local_momentum=0.0, local_buffer_size=1, updates_per_push=1,
                         merge_weight=0.25), n_workers=1, seed=0)
    h.set_servers([ServerInfo("gps", "a"), ServerInfo("a-lps", "a")], ["a"], [0.1])
    gen = np.random.default_rng(3)
    theta0 = gen.normal(size=(5,))
    state = AsyncState(start={}, models={name: {"w": torch.tensor(theta0)} for name in ("gps", "a-lps")})
    for name in ("gps", "a-lps"):
        h.init_server(state, name)
    g = gen.normal(size=(5,))
    h.update(state, "a-lps", Message("push", 0, 0, "a-lps", 5, "fp32"), Served(applied=True, staleness=0),
             {"w": torch.tensor(g)})
    theta_l = theta0 - 0.5 * g  # N_l = 1, beta_l = 0: plain SGD
    assert np.abs(state.models["a-lps"]["w"].numpy() - theta_l).max() < 1e-12
    delta = h.payload(state, "a-lps", Message(DELTA, 0, "a-lps", "gps", 5, "fp32"))
    assert np.abs(delta["w"].double().numpy() - (theta0 - theta_l)).max() < 1e-6  # fp32 on the wire
    theta_g = gen.normal(size=(5,))
    h.update(state, "a-lps", Message(GLOBAL, 0, "gps", "a-lps", 5, "fp32"), Served(),
             {"w": torch.tensor(theta_g)})
    merged = 0.75 * theta_l + 0.25 * theta_g
    assert np.abs(state.models["a-lps"]["w"].numpy() - merged).max() < 1e-12
    assert np.abs(state.extra["a-lps"]["w"].numpy() - merged).max() < 1e-12  # the new snapshot


def test_async_local_sgd_server_applies_arrivals_in_served_order_and_answers_with_that_model():
    """Three workers at two speeds, N = 2, c = 1/4, a server with apply time: the server applies the
    pseudo-gradients in the order of its served records (versions 1, 2, ...); replaying Delayed
    Nesterov in float64 (the reference above) on those pseudo-gradients from the initial model
    gives every model the server sent back (the one at the version of the update it answers) and
    the final model, to 1e-5."""
    d = scenario(1, {"name": "async_local_sgd", "inner_steps": 3, "buffer_size": 2, "momentum_activation": 0.25,
                     "dynamic_local_updates": False, "outer_lr": 0.5, "outer_momentum": 0.8}, max_rounds=4)
    d["topology"] = {"regions": [{"name": "a", "nodes": 2}, {"name": "b", "nodes": 1, "step_time_multiplier": 1.7}],
                     "links": [{"a": "a", "b": "b", "bandwidth_gbps": 1.0, "latency_s": 0.02}],
                     "servers": [{"name": "ps", "region": "a", "apply_time_s": 0.01}]}
    sim = Simulation(parse_scenario(d))
    theta0 = {k: v.double().numpy().copy() for k, v in sim.adapter.state.models["ps"].items()}
    alg, applied, answers = sim.algorithm, [], {}
    update, payload = alg.update, alg.payload

    def spy_update(state, server, message, served, g):
        values = {k: v.double().numpy().copy() for k, v in g.items()}
        applied.append(((message.sender, message.round), served.version, values))
        return update(state, server, message, served, g)

    def spy_payload(state, server, message):
        out = payload(state, server, message)
        answers[(message.to, message.round)] = {k: v.double().numpy().copy() for k, v in out.items()}
        return out

    alg.update, alg.payload = spy_update, spy_payload
    sim.run()
    served = sorted(sim.recorder.served, key=lambda s: s.version)
    assert [(key, v) for key, v, _ in applied] == [((s.worker, s.round), s.version) for s in served]
    assert len({s.worker for s in served}) == 3 and len(served) == 12
    ref = delayed_nesterov_reference(theta0, [g for _, _, g in applied], 0.5, 0.8, 2, 0.25)
    version_of = {(s.worker, s.round): s.version for s in served}
    assert len(answers) >= 10
    for key, model in answers.items():
        want = ref[version_of[key] - 1]
        assert max(float(np.abs(model[k] - want[k]).max()) for k in want) < 1e-5, key
    final = final_model(sim)
    assert max(float(np.abs(final[k].double().numpy() - ref[-1][k]).max()) for k in final) < 1e-5


# ---------------------------------------------------------------------------- bad input
BASE = {
    "name": "async-bad", "seed": 0,
    "topology": {"regions": [{"name": "us", "nodes": 2}, {"name": "eu", "nodes": 2}],
                 "links": [{"a": "us", "b": "eu", "bandwidth_gbps": 1.0, "latency_s": 0.05}],
                 "servers": [{"name": "ps", "region": "us"}]},
    "model": {"kind": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16},
    "data": {"kind": "synthetic", "vocab_size": 32},
    "compute": {"batch_size": 4},
    "algorithm": {"name": "async_local_sgd", "inner_steps": 5},
    "run": {"max_rounds": 2},
    "numerics": False, "timing": {"params": 1.0e6, "layers": 1, "step_time_s": 0.1},
}

BAD = {  # case -> (algorithm, servers (None: BASE's), words the one line must contain)
    "unknown server": ({"name": "async_local_sgd", "server": "nope"}, None, ["algorithm.server", "nope"]),
    "fedbuff without a server": ({"name": "fedbuff"}, [], ["algorithm.server", "topology.servers"]),
    "halos without a server": ({"name": "halos"}, [], ["algorithm.global_server", "topology.servers"]),
    "async_local_sgd without a server": ({"name": "async_local_sgd"}, [], ["algorithm.server"]),
    "fedbuff K < 1": ({"name": "fedbuff", "buffer_size": 0}, None, ["algorithm.buffer_size", "1"]),
    "halos K < 1": ({"name": "halos", "updates_per_push": 0}, None, ["algorithm.updates_per_push", "1"]),
    "async_local_sgd N < 1": ({"name": "async_local_sgd", "buffer_size": 0}, None, ["algorithm.buffer_size", "1"]),
    "halos N_l < 1": ({"name": "halos", "local_buffer_size": 0}, None, ["algorithm.local_buffer_size"]),
    "alpha > 1": ({"name": "halos", "merge_weight": 1.5}, None, ["algorithm.merge_weight", "1"]),
    "alpha < 0": ({"name": "halos", "merge_weight": -0.1}, None, ["algorithm.merge_weight", "0"]),
    "c > 1/N": ({"name": "async_local_sgd", "buffer_size": 4, "momentum_activation": 0.5}, None,
                ["algorithm.momentum_activation", "0.25"]),
    "duplicate servers": (None, [{"name": "ps", "region": "us"}, {"name": "ps", "region": "eu"}],
                          ["topology.servers.1.name", "ps"]),
    "server in an unknown region": (None, [{"name": "ps", "region": "mars"}], ["topology.servers.0.region", "mars"]),
    "server named like a region": (None, [{"name": "eu", "region": "us"}], ["topology.servers.0.name", "eu"]),
    "server in a region with no links": (None, "no links", ["topology.links", "connected"]),
    "two servers, none named": ({"name": "fedbuff"}, [{"name": "g", "region": "us"}, {"name": "h", "region": "eu"}],
                                ["algorithm.server", "g, h"]),
    "two possible global servers": ({"name": "halos"}, [{"name": "g", "region": "us"}, {"name": "h", "region": "eu"}],
                                    ["algorithm.global_server", "g, h"]),
    "halos: two local servers in one region": (
        {"name": "halos", "global_server": "g"},
        [{"name": "g", "region": "us"}, {"name": "l1", "region": "eu"}, {"name": "l2", "region": "eu"}],
        ["algorithm.global_server", "l1, l2", "one local server per region"]),
    "halos: a created local server's name is taken": (
        {"name": "halos", "global_server": "g"}, [{"name": "g", "region": "us"}, {"name": "eu-lps", "region": "us"}],
        ["algorithm.global_server", "eu-lps", "declare"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_async_input_is_one_line_exit_2(case, tmp_path):
    """Each bad asynchronous setting (unknown server, no server declared, K, N or N_l < 1, alpha
    outside [0, 1], c > 1/N, duplicate server names, a server in an unknown region, named like a
    region or in a region with no links) makes `locosim validate FILE` exit 2 with one stderr line naming the field, no
    traceback, nothing written."""
    algorithm, servers, words = BAD[case]
    d = yaml.safe_load(yaml.safe_dump(BASE))
    if algorithm is not None:
        d["algorithm"] = algorithm
    if servers == "no links":  # the server's region cannot be reached
        d["topology"]["links"] = []
        d["topology"]["servers"] = [{"name": "ps", "region": "eu"}]
    elif servers is not None:
        d["topology"]["servers"] = servers
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(d))
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "validate", str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_the_good_base_of_the_bad_cases_validates(tmp_path):
    """The scenario the bad cases start from is valid (exit 0): each bad case fails for its own field."""
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    proc = subprocess.run([sys.executable, "-m", "sim.cli", "validate", str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ---------------------------------------------------------------------------- lock-step harness
@pytest.mark.parametrize("algorithm", [
    {"name": "async_local_sgd", "inner_steps": 4, "buffer_size": 2},
    {"name": "fedbuff", "inner_steps": 4, "buffer_size": 4},
    {"name": "halos", "inner_steps": 4, "updates_per_push": 2},
])
def test_the_lockstep_harness_gives_the_simulations_train_losses(algorithm):
    """Four equal workers in one region with a server: the lock-step harness (pushes served at
    once in worker order, answers used before the next step) gives the full simulation's train
    losses bit for bit, so an asynchronous method's identity tests can run without simpy."""
    from sim.lockstep import run_lockstep

    sc = parse_scenario({"seed": 0, "topology": {"regions": [{"name": "a", "nodes": 4}],
                                                 "servers": [{"name": "ps", "region": "a"}]},
                         "model": {"kind": "gpt", "d_model": 16, "n_layers": 1, "n_heads": 2, "seq_len": 16},
                         "data": {"kind": "synthetic", "vocab_size": 32}, "compute": {"batch_size": 4},
                         "algorithm": algorithm, "run": {"max_rounds": 3}})
    sim = Simulation(sc)
    sim.run()
    want = {(p.worker, p.step): p.loss for p in sim.recorder.losses if p.kind == "train"}
    got = run_lockstep(sc).losses
    assert len(want) == 48 and got == want
