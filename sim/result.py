"""A finished run's result, frozen: what the tables, the summary and the dashboard read.

``Simulation.result()`` takes it once the run has ended (completed, interrupted, failed or
diverged). It holds copies of the records and counts, so nothing that happens to the
simulation afterwards changes it, and the report side never reaches into the engine, the
numerics or the method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import networkx as nx

from sim.metrics.records import Recorder
from sim.scenario import Scenario


@dataclass(frozen=True)
class RunResult:
    scenario: Scenario
    duration_s: float
    """Simulated seconds when the run ended."""
    nodes: tuple[str, ...]
    """Worker node names, in worker order."""
    graph: nx.Graph
    """The run's network graph as it ended (bandwidth series, degradation windows and the
    random outages that happened folded into its WAN edges); read, never changed."""
    records: Recorder
    """Every record of the run (tuples: nothing is appended after the run)."""
    link_bytes: Mapping[tuple[str, str], float]
    sent_bytes: Mapping[str, float]
    received_bytes: Mapping[str, float]
    n_params: int
    payload_bytes: float
    """Bytes of one sync's payload in the method's wire format."""
    wire_format: str
    rounds: int
    steps_per_worker: tuple[int, ...]
    tokens: int
    tokens_per_step: int
    step_done_times: tuple[float, ...]
    """End time of every inner step (numerics on; empty for timing-only runs)."""
    step_time_s: tuple[float, ...]
    """Each worker's seconds per inner step (region, GPU, straggler multiplier)."""
    loss_floor: float | None
    diverged: Mapping | None
    ended_early: str | None
    numerics: Mapping | None
    """What the numerics ran on (summary.json's ``numerics``); None when numerics are off."""
    diagnostic_labels: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({}))
    """The method's diagnostics (``Algorithm.diagnostic_labels``): name -> (label, axis title
    with unit); written to the manifest, drawn by the dashboards."""
    link_rates: Mapping | None = None
    """Bytes/s over time on every directed WAN link and region pair, as the run's network
    logged them (``Network.rate_timeline``, the form of ``sim.engine.replay.network_rates``); None:
    not logged (the report then replays the transfers)."""

    @property
    def n_workers(self) -> int:
        return len(self.nodes)


def frozen_records(rec: Recorder) -> Recorder:
    """A copy of ``rec`` whose lists are tuples."""
    return Recorder(**{name: tuple(getattr(rec, name)) for name in rec.__dataclass_fields__})


def frozen_mapping(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))
