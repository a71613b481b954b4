"""The ``topology:`` section: regions of GPU nodes, the WAN links between them (with an
optional bandwidth time series and scheduled outages), each node's link to its region's
switch, and parameter servers; and the GPU names a region may give (``sim.hardware``'s table).

The checks that span the section (unique names, links that join known regions, a connected
graph, at most ``MAX_WORKERS`` nodes) live on ``Topology``; the engine builds its network from it
(``sim/engine/network.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from sim.algorithms.knobs import FieldError, Int, PositiveFloat
from sim.hardware import GPU_PEAK_FLOPS
from sim.scenario.files import read_bandwidth_csv
from sim.scenario.base import StrictModel

def _known_gpu(name: str) -> str:
    if name not in GPU_PEAK_FLOPS:
        raise ValueError(f"unknown gpu '{name}'; known: {', '.join(GPU_PEAK_FLOPS)}")
    return name


GpuName = Annotated[str, AfterValidator(_known_gpu)]

# Bounds that keep a scenario inside what one process can simulate: beyond them the graph,
# the data tables or the clock itself would exhaust memory or overflow before a check could run.
MAX_WORKERS = 100_000


class Region(StrictModel):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Region name, referenced by links (letters, digits, _ . -).")
    nodes: Int = Field(ge=1, le=MAX_WORKERS, description=f"Number of GPU nodes (one worker / replica each) in this region (at most {MAX_WORKERS:,} in all).")
    gpu: GpuName | None = Field(default=None, description=(
        f"GPU name, used by compute.step_time mode 'flops' for its peak FLOP/s; one of: {', '.join(GPU_PEAK_FLOPS)}."))
    step_time_multiplier: PositiveFloat = Field(
        default=1.0, le=1e6, description="Multiplies every step time of this region's nodes (1 = reference speed; 2 = half as fast).")


class LinkSpec(StrictModel):
    bandwidth_gbps: float = Field(ge=1e-6, description="Bandwidth in Gbit/s, each direction (full duplex), >= 1e-6 (1 kbit/s); .inf allowed.")
    latency_s: float = Field(ge=0, le=3600, allow_inf_nan=False, description="One-way latency in seconds (at most 3600).")


class LinkOutage(StrictModel):
    start_s: float = Field(ge=0, allow_inf_nan=False, description="Simulated time (s) the link goes down.")
    end_s: float = Field(gt=0, allow_inf_nan=False, description="Simulated time (s) the link is back up; > start_s.")


class Link(LinkSpec):
    """A WAN link; its bandwidth may follow a CSV time series and it may have scheduled outages."""
    a: str = Field(description="Region at one end.")
    b: str = Field(description="Region at the other end.")
    bandwidth_csv: str | None = Field(default=None, min_length=1, description=(
        "CSV file with header 'time_s,bandwidth_gbps' (relative to the scenario file): from each row's time_s on, "
        "the link has that bandwidth each direction (a step function; 0 = down); before the first row, bandwidth_gbps."))
    outages: list[LinkOutage] = Field(default_factory=list, description=(
        "Scheduled outages [start_s, end_s): capacity 0 both ways; a transfer starting meanwhile takes another "
        "route if one is up, one already on the link stalls until it is back. Outages may overlap (their union counts)."))

    @model_validator(mode="after")
    def _outages(self) -> "Link":
        for i, o in enumerate(self.outages):
            if o.end_s <= o.start_s:
                raise FieldError(("outages", i, "end_s"), f"must be > start_s={o.start_s:g} (got {o.end_s:g})")
        return self

    def bandwidth_series(self, base_dir: str | Path | None = None) -> list[tuple[float, float]]:
        """(time_s, bandwidth_gbps) rows of ``bandwidth_csv`` ([] without one); a relative path is
        taken relative to ``base_dir`` (else the working directory). ValueError, one line, if bad
        (``sim.scenario.files.read_bandwidth_csv`` says what is checked)."""
        if self.bandwidth_csv is None:
            return []
        p = Path(self.bandwidth_csv)
        if not p.is_absolute() and base_dir is not None:
            p = Path(base_dir) / p
        return read_bandwidth_csv(p)


class Server(StrictModel):
    """A parameter server: a network node attached to its region's switch that computes no inner
    steps, only a method's server math (methods without a barrier: async_local_sgd, halos, fedbuff)."""
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$",
                      description="Server name, referenced by methods (letters, digits, _ . -; not a region's name).")
    region: str = Field(description="Region whose switch the server is attached to.")
    bandwidth_gbps: float | None = Field(default=None, ge=1e-6, description=(
        "Its NIC to the region's switch, Gbit/s each direction; default: the intra-region link's bandwidth."))
    apply_time_s: float = Field(default=0.0, ge=0, le=3600, allow_inf_nan=False, description=(
        "Simulated seconds the server spends on each payload it handles (an update applied, a model merged); "
        "payloads are handled one at a time in arrival order, so a busy server queues them."))


class Topology(StrictModel):
    regions: list[Region] = Field(min_length=1, description="Regions of GPU nodes.")
    links: list[Link] = Field(default_factory=list, description="WAN links between regions (full duplex).")
    intra_region: LinkSpec = Field(
        default=LinkSpec(bandwidth_gbps=100.0, latency_s=1e-4),
        description="Link from each node to its region's switch (bandwidth each direction, latency).")
    servers: list[Server] = Field(default_factory=list, description=(
        "Parameter servers (methods without a barrier: async_local_sgd, halos, fedbuff): each a node on its "
        "region's switch that runs the method's server math on every payload that arrives."))

    @model_validator(mode="after")
    def _check(self) -> "Topology":
        names = [r.name for r in self.regions]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise FieldError(("regions",), f"region names must be unique; repeated: {', '.join(dup)}")
        seen: set[str] = set()
        for i, srv in enumerate(self.servers):
            if srv.region not in names:
                raise FieldError(("servers", i, "region"), f"unknown region '{srv.region}'; regions are: {', '.join(names)}")
            if srv.name in names:
                raise FieldError(("servers", i, "name"), f"'{srv.name}' is a region's name; a server needs its own")
            if srv.name in seen:
                raise FieldError(("servers", i, "name"), f"server names must be unique; '{srv.name}' is repeated")
            seen.add(srv.name)
        for i, link in enumerate(self.links):
            for end in ("a", "b"):
                name = getattr(link, end)
                if name not in names:
                    raise FieldError(("links", i, end), f"unknown region '{name}'; regions are: {', '.join(names)}")
            if link.a == link.b:
                raise FieldError(("links", i, "b"), "a link must join two different regions")
            for j, other in enumerate(self.links[:i]):
                if {other.a, other.b} == {link.a, link.b}:
                    raise FieldError(("links", i), f"links.{j} already joins '{link.a}' and '{link.b}'; "
                                                   "one link per pair of regions (merge them into one)")
        if self.n_workers > MAX_WORKERS:
            raise FieldError(("regions",), f"{self.n_workers:,} nodes in all; at most {MAX_WORKERS:,}")
        if len(self.regions) > 1:
            import networkx as nx

            g = nx.Graph()
            g.add_nodes_from(names)
            g.add_edges_from((l.a, l.b) for l in self.links)
            if not nx.is_connected(g):
                parts = [sorted(c) for c in nx.connected_components(g)]
                raise FieldError(("links",), f"regions must be connected; separate groups: {parts}")
        return self

    @property
    def n_workers(self) -> int:
        return sum(r.nodes for r in self.regions)

    def servers_by_region(self) -> dict[str, list[Server]]:
        out: dict[str, list[Server]] = {}
        for srv in self.servers:
            out.setdefault(srv.region, []).append(srv)
        return out
