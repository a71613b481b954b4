"""Scenario -> the simulated world: payload layout, network, faults, step times and workers.

The first of the runner's three pieces (build, numerics adapter ``sim.adapter``, run-directory
writer ``sim.writer``); ``sim.runner.Simulation`` wires them. Nothing here runs virtual time
or touches tensors: the numerics, when on, hand in the layout of the model they train and a
probe that measures its step time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import networkx as nx
import simpy

from sim.engine.faults import FaultModel, apply_link_windows
from sim.engine.network import Network
from sim.engine.topology import add_servers, build_graph
from sim.engine.node import Worker
from sim.engine.sync import SyncBarrier
from sim.metrics.records import Recorder
from sim.scenario import Scenario


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
    """The engine side of one run, built and not yet started."""
    env: simpy.Environment
    recorder: Recorder
    graph: nx.DiGraph
    nodes: list[str]
    link_windows: list
    net: Network


def build_world(sc: Scenario, env: simpy.Environment, servers: list = ()) -> World:
    """Topology graph (with the method's servers, ``Algorithm.server_plan``), its link outage
    windows and the flow-level network over it."""
    recorder = Recorder()
    graph, nodes = build_graph(sc.topology)
    add_servers(graph, servers, sc.topology.intra_region)
    link_windows = apply_link_windows(graph, sc.faults.links)  # before the network reads the edges
    return World(env, recorder, graph, nodes, link_windows, Network(env, graph, recorder))


def step_times(sc: Scenario, world: World, timed_params: int, timed_tokens: int,
               measure: Callable[[int], float] | None) -> list[float]:
    """Each worker's base seconds per inner step: the region's GPU (or ``timing.step_time_s``)
    for ``timed_params`` x ``timed_tokens``, times the region's multiplier (before faults)."""
    from sim.training.timing import base_step_time_s

    region_of = {r.name: r for r in sc.topology.regions}
    by_gpu: dict[str | None, float] = {}
    out = []
    for node in world.nodes:
        region = region_of[world.graph.nodes[node]["region"]]
        if region.gpu not in by_gpu:
            if sc.timing is not None and sc.timing.step_time_s is not None:
                by_gpu[region.gpu] = sc.timing.step_time_s
            else:
                by_gpu[region.gpu] = base_step_time_s(sc.compute.step_time, timed_params, timed_tokens,
                                                      region.gpu, measure)
        out.append(by_gpu[region.gpu] * region.step_time_multiplier)
    return out


def build_faults(sc: Scenario, world: World) -> FaultModel:
    region_name = {node: world.graph.nodes[node]["region"] for node in world.nodes}
    return FaultModel(world.env, sc.seed, sc.faults, world.nodes, region_name, world.recorder)


def build_workers(world: World, faults: FaultModel, step_time_s: list[float], plan: Callable,
                  barrier: SyncBarrier, on_step: Callable) -> list[Worker]:
    """One worker process per node; its step work and elapsed time come from the fault model."""
    return [Worker(world.env, i, node, faults.step_work(i, step_time_s[i]), plan, barrier, on_step,
                   world.recorder, elapsed=faults.elapsed(i))
            for i, node in enumerate(world.nodes)]


def nobody_leaves(sc: Scenario) -> bool:
    """No failures and no churn: every worker stays up for the whole run."""
    f = sc.faults
    return not f.churn and (f.failures is None or (not f.failures.mtbf_s and not f.failures.schedule))
