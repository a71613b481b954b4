"""The network's topology: the graph of a scenario (``build_graph``: a switch per region,
its workers, WAN links; ``add_servers``: parameter servers) and routes over it (``Routes``:
shortest paths by latency, cached, around links that are down).

Separate from the flows that use it: the report draws the same graph (``sim.report``)
without simulating anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import networkx as nx


def region_name(node) -> str:
    """A node's region as the rate log names it: a worker ``region/i`` -> ``region`` (the
    name before the last '/'), any other node its own name."""
    return str(node).rsplit("/", 1)[0]


def gbps_to_bytes_per_s(gbps: float) -> float:
    return gbps * 1e9 / 8.0


Route = tuple[list[str], list[tuple[str, str]], float, tuple[int, ...]]
"""A route: its nodes, its directed links, its summed latency (s) and its links' ids."""


class Routes:
    """Shortest routes by latency over ``graph``, kept per (src, dst); ``link_id`` numbers the
    directed links (a route carries its links' ids)."""

    def __init__(self, graph: nx.Graph, link_id: dict):
        self.graph = graph
        self._link_id = link_id
        self._routes: dict[tuple[str, str], Route] = {}  # (src, dst) -> its route
        self._latency = {}  # latency_s by directed link, and the one neighbour of each leaf node
        for u, v, d in graph.edges(data=True):
            self._latency[(u, v)] = self._latency[(v, u)] = d["latency_s"]
        self._leaf_neighbour = {n: next(iter(graph.adj[n])) for n, deg in graph.degree() if deg == 1}

    def current(self, src: str, dst: str, capacity: dict | None) -> Route:
        """The shortest route by latency; while a link on it is down (``capacity``: the links'
        capacities when some link is down, None when none is), the shortest route over the
        links that are up, if there is one (else the usual route, whose flows then wait)."""
        info = self.info(src, dst)
        if capacity is None:  # no link is down: the usual route
            return info
        cap = capacity
        if all(cap[l] > 0 for l in info[1]):
            return info
        live = nx.subgraph_view(self.graph, filter_edge=lambda a, b: cap[(a, b)] > 0 and cap[(b, a)] > 0)
        try:
            path = nx.shortest_path(live, src, dst, weight="latency_s")
        except nx.NetworkXNoPath:
            return info
        links = list(zip(path, path[1:]))
        return path, links, sum(self._latency[l] for l in links), tuple([self._link_id[l] for l in links])

    def info(self, src: str, dst: str) -> Route:
        """The shortest route by latency, as the graph is (cached per (src, dst))."""
        key = (src, dst)
        info = self._routes.get(key)
        if info is not None:
            return info
        g = self.graph
        for n in (src, dst):
            if n not in g:
                raise ValueError(f"no route from {src} to {dst}: node {n} is not in the graph")
        # A node with one neighbour (a worker on its region switch) reaches everything through
        # that neighbour, so its routes reuse the neighbour's: routing P workers of a few
        # regions costs a few shortest-path searches between switches, not P.
        leaf = self._leaf_neighbour
        if src != dst and src in leaf:
            nbr = leaf[src]
            path = [src, dst] if nbr == dst else [src] + self.info(nbr, dst)[0]
        elif src != dst and dst in leaf:
            nbr = leaf[dst]
            path = [src, dst] if nbr == src else self.info(src, nbr)[0] + [dst]
        else:
            try:
                path = nx.shortest_path(g, src, dst, weight="latency_s")
            except nx.NetworkXNoPath as err:
                raise ValueError(f"no route from {src} to {dst}: {err}") from None
        links = list(zip(path, path[1:]))
        latency = sum(self._latency[l] for l in links)
        info = self._routes[key] = (path, links, latency, tuple([self._link_id[l] for l in links]))
        return info

def build_graph(topology, base_dir: str | Path | None = None) -> tuple[nx.Graph, list[str]]:
    """Graph of a scenario topology: one switch node per region (named by the region),
    one node per worker (``region/i``) joined to its switch by the intra-region link,
    and WAN links between switches. Returns the graph and worker node names in order.

    A WAN link's ``bandwidth_csv`` (read now by ``Link.bandwidth_series``; a relative path
    is taken relative to ``base_dir``, else the working directory -- ``load_scenario`` has
    already made it absolute) and ``outages`` become the edge attributes
    ``bandwidth_series`` and ``outages`` that ``Network`` plays back.

    The topology's parameter servers (``topology.servers``) are nodes of kind ``server``
    (``add_servers``).
    """
    g = nx.Graph()
    workers: list[str] = []
    intra = topology.intra_region
    for region in topology.regions:
        g.add_node(region.name, kind="switch", region=region.name)
        for i in range(region.nodes):
            name = f"{region.name}/{i}"
            g.add_node(name, kind="worker", region=region.name)
            g.add_edge(name, region.name, bandwidth_gbps=intra.bandwidth_gbps, latency_s=intra.latency_s, kind="lan")
            workers.append(name)
    for link in topology.links:
        attrs = dict(bandwidth_gbps=link.bandwidth_gbps, latency_s=link.latency_s, kind="wan")
        series = link.bandwidth_series(base_dir) if getattr(link, "bandwidth_csv", None) else []
        if series:
            attrs["bandwidth_series"] = series
        outages: Iterable = getattr(link, "outages", None) or ()
        if outages:
            attrs["outages"] = [(o.start_s, o.end_s) for o in outages]
        g.add_edge(link.a, link.b, **attrs)
    add_servers(g, getattr(topology, "servers", ()), intra)
    return g, workers


def add_servers(graph: nx.Graph, servers, intra) -> None:
    """Parameter servers (objects with name, region, bandwidth_gbps) that are not in ``graph``
    yet (the topology's, and a method's created ones: ``Algorithm.server_plan``): nodes of kind
    ``server`` joined to their region's switch by their NIC (``bandwidth_gbps``; None: ``intra``,
    the intra-region link's), with the intra-region latency."""
    for s in servers:
        if s.name in graph:
            continue
        graph.add_node(s.name, kind="server", region=s.region)
        bw = intra.bandwidth_gbps if s.bandwidth_gbps is None else s.bandwidth_gbps
        graph.add_edge(s.name, s.region, bandwidth_gbps=bw, latency_s=intra.latency_s, kind="lan")
