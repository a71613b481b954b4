"""Scenario -> the simulated world, assembled: payload layout, network, faults, step times,
the barrier (and servers) and the workers, every one built fully wired through its constructor.

``assemble`` is the one place that connects the engine's entities to each other and to the
run's events (``sim.engine.events.RunEvents``, implemented by ``sim.loop.RunLoop``); nothing
is patched onto them afterwards. Nothing here runs virtual time or touches tensors: the
numerics, when on, hand in the layout of the model they train and a probe that measures
its step time. ``sim.runner.Simulation`` is the facade that builds a method, its numerics,
a run loop and this world for one scenario.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import networkx as nx
import simpy

from sim.engine.faults import FaultModel, apply_link_windows
from sim.engine.network import Network
from sim.engine.topology import add_servers, build_graph
from sim.engine.node import Worker
from sim.engine.servers import Router
from sim.engine.sync import SyncBarrier
from sim.metrics.records import Recorder
from sim.scenario import Scenario
from sim.steptime import base_step_time_s

if TYPE_CHECKING:
    from sim.algorithms.base import Algorithm
    from sim.engine.events import RunEvents


def scale_layout(layout: list[tuple[str, float]], total: float) -> list[tuple[str, int]]:
    """Integer element counts proportional to ``layout`` that sum to exactly int(total)
    (largest remainders get the leftover elements)."""
    total = int(total)
    weight = sum(e for _, e in layout)
    exact = [e * total / weight for _, e in layout]
    out = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(out)), key=lambda i: (out[i] - exact[i], i))
    for i in by_remainder[: total - sum(out)]:
        out[i] += 1
    return [(name, n) for (name, _), n in zip(layout, out)]


def proxy_layout(params: float, layers: int) -> list[tuple[str, int]]:
    """Parameter layout of a timing proxy: ``layers`` equal transformer blocks."""
    return scale_layout([(f"blocks.{i}.params", 1.0) for i in range(layers)], params)


def payload_layout(sc: Scenario, trained: list[tuple[str, int]] | None) -> list[tuple[str, int]]:
    """What one full payload holds, tensor by tensor (name, elements): the trained model's
    tensors (``trained``, numerics on), scaled to the timing proxy's size when there is one; a
    timing-only run's proxy blocks otherwise. Every method's ``configure`` gets this."""
    if trained is None:
        return proxy_layout(sc.timing.params, sc.timing.layers)
    if sc.timing is not None:  # payloads of the proxy, split like the trained model
        return scale_layout(trained, sc.timing.params)
    return trained


@dataclass
class World:
    """The engine side of one run, assembled and started (its processes scheduled, nothing run)."""
    env: simpy.Environment
    recorder: Recorder
    graph: nx.DiGraph
    nodes: list[str]
    link_windows: list
    net: Network
    step_time_s: list[float]
    """Each worker's seconds per inner step at full speed (region, GPU and per-node multipliers)."""
    faults: FaultModel
    barrier: SyncBarrier
    workers: list[Worker]

    def alive(self) -> list[bool]:
        """Whether each worker is up and a member of the barrier's collectives now."""
        return [w.up and self.barrier.up[w.index] for w in self.workers]

    def can_still_sync(self, group: tuple, stream: str, round_: int, step: int) -> bool:
        """A gossip group that has not synced round ``round_`` still may: its collective is
        under way, or a member is up and has not yet reached that round's ``step``."""
        if self.barrier.pending((stream, round_, group)):
            return True
        return any(self.workers[m].up and self.barrier.up[m] and self.workers[m].steps_done < step for m in group)


def workers_in(topology) -> int:
    """How many workers (one per GPU node) a topology has."""
    return sum(r.nodes for r in topology.regions)


def step_times(sc: Scenario, graph: nx.Graph, nodes: list[str], timed_params: int, timed_tokens: int,
               measure: Callable[[int], float] | None) -> list[float]:
    """Each worker's base seconds per inner step: the region's GPU (or ``timing.step_time_s``)
    for ``timed_params`` x ``timed_tokens``, times the region's multiplier (before faults)."""
    region_of = {r.name: r for r in sc.topology.regions}
    by_gpu: dict[str | None, float] = {}
    out = []
    for node in nodes:
        region = region_of[graph.nodes[node]["region"]]
        if region.gpu not in by_gpu:
            if sc.timing is not None and sc.timing.step_time_s is not None:
                by_gpu[region.gpu] = sc.timing.step_time_s
            else:
                by_gpu[region.gpu] = base_step_time_s(sc.compute.step_time, timed_params, timed_tokens,
                                                      region.gpu, measure)
        out.append(by_gpu[region.gpu] * region.step_time_multiplier)
    return out


def assemble(sc: Scenario, env: simpy.Environment, recorder: Recorder, method: Algorithm, servers: list,
             timed_params: int, timed_tokens: int, measure: Callable[[int], float] | None, fetch_bytes: float,
             events: RunEvents) -> World:
    """The simulated world of ``sc``, wired to ``events``: topology graph (with the method's
    servers, ``Algorithm.server_plan``) and its link outage windows, the flow-level network,
    the fault model, each worker's step time (for ``timed_params`` x ``timed_tokens``;
    ``measure``: the numerics' probe for ``measured`` step times), the method told its servers
    and workers (``set_servers``, ``set_liveness``), the barrier (a ``Router`` when there are
    servers), one worker process per node, then the fault processes (a returning worker
    fetches ``fetch_bytes``). The order is the simulated world's: processes are started in it."""
    graph, nodes = build_graph(sc.topology)
    add_servers(graph, servers, sc.topology.intra_region)
    link_windows = apply_link_windows(graph, sc.faults.links)  # before the network reads the edges
    net = Network(env, graph, recorder)
    region_of = {node: graph.nodes[node]["region"] for node in nodes}
    faults = FaultModel(env, sc.seed, sc.faults, nodes, region_of, recorder, on_fetch=events.fetch,
                        on_rejoined=events.member_up, home=method.home_server if servers else None)
    base = step_times(sc, graph, nodes, timed_params, timed_tokens, measure)
    step_time_s = [t * faults.multiplier(i) for i, t in enumerate(base)]
    method.set_servers(servers, [region_of[n] for n in nodes], step_time_s)
    timeout_s = sc.algorithm.sync_timeout_s
    if servers:  # point-to-point sends to servers, and the barrier for any collective
        barrier = Router(env, net, nodes, events.sync_done, recorder, servers, method.serve, events.served,
                         events.departed, events.delivered, timeout_s=timeout_s, on_dropped=events.dropped)
    else:
        barrier = SyncBarrier(env, net, nodes, events.sync_done, recorder, timeout_s=timeout_s)
    # nobody looks at a quiet step as it ends: run quiet stretches as one event each
    quiet = sc.run.coalesce and not sc.numerics and sc.run.max_tokens is None and nobody_leaves(sc)
    end_s = math.inf if sc.run.max_sim_time_s is None else sc.run.max_sim_time_s
    workers = [Worker(env, i, node, faults.step_work(i, step_time_s[i]), method.at_step, barrier, events.step_done,
                      recorder, elapsed=faults.elapsed(i), rejoin=faults.rejoin, on_down=events.member_down,
                      quiet=method.quiet_steps if quiet else None, on_quiet=events.quiet_steps if quiet else None,
                      horizon=(lambda: end_s) if quiet else None)
               for i, node in enumerate(nodes)]
    world = World(env, recorder, graph, nodes, link_windows, net, step_time_s, faults, barrier, workers)
    method.set_liveness(world.alive)
    faults.start(workers, barrier, net, fetch_bytes)
    return world


def nobody_leaves(sc: Scenario) -> bool:
    """No failures and no churn: every worker stays up for the whole run."""
    f = sc.faults
    return not f.churn and (f.failures is None or (not f.failures.mtbf_s and not f.failures.schedule))
