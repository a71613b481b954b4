"""FedBuff (Nguyen et al. 2022, "Federated Learning with Buffered Asynchronous Aggregation",
AISTATS), shipped as a plug-in (``sim.algorithms.METHODS``; REFERENCE.md section 10).

Workers never wait for each other: each runs H inner steps (``inner_steps``), sends its delta
g = theta_start - theta_end to the server (``server``) and restarts from the model the server
sends back at once. The server keeps a buffer: each arriving delta is added with the weight
s(staleness) = 1 / sqrt(1 + staleness) (staleness in server steps since the worker's model left
the server); once ``buffer_size`` (K) deltas are in, one server optimizer step (SGD,
``server_lr``, ``server_momentum``, heavy ball unless ``server_nesterov``) on their weighted sum
divided by K, and the buffer is cleared. With K = the number of workers, equal speeds, server
SGD at lr 1 without momentum, this is FedAvg over all workers (tests/test_async_methods.py).

Left open by the paper and decided here: the weighted sum is divided by K (FLSim sums and lets
the lr absorb 1/K; dividing makes lr 1 plain averaging); no maximum staleness is enforced
(``max_staleness`` null; set it to drop older deltas, as FLSim can). ``run.max_rounds``: deltas
applied in server steps / workers.
"""

from __future__ import annotations

import math

from pydantic import Field

from sim.algorithms.asynchronous import AsyncKnobs, Asynchronous, OneServer
from sim.algorithms.transforms import OuterNesterov
from sim.schedule import Message, Served


class FedBuffSpec(AsyncKnobs):
    """FedBuff's knobs (paper symbols)."""
    server: str | None = Field(default=None, description=(
        "The parameter server (a topology.servers name); default: the topology's only server."))
    inner_steps: int = Field(default=20, ge=1, description="Local steps of a worker per round (FLSim's local epochs as steps).")
    buffer_size: int = Field(default=10, ge=1, description="K: deltas buffered per server step (FLSim example 10).")
    server_lr: float = Field(default=1.0, gt=0, description="eta_g: server SGD learning rate (1 = plain averaging of the buffer).")
    server_momentum: float = Field(default=0.0, ge=0, lt=1, description="Server SGD momentum (FLSim example 0.9).")
    server_nesterov: bool = Field(default=False, description="Nesterov form of the server momentum (False: heavy ball).")
    max_staleness: int | None = Field(default=None, ge=0, description=(
        "Deltas older than this many server steps are dropped (not buffered); null = keep all."))


class FedBuff(OneServer, Asynchronous):
    Spec = FedBuffSpec

    def setup(self) -> None:
        super().setup()
        self.buffered = 0  # deltas in the buffer now (schedule side)
        self.opt = OuterNesterov(self.spec.server_lr, self.spec.server_momentum, self.spec.server_nesterov)

    def receive(self, server: str, message: Message) -> Served:
        stale = self.staleness(server, message.sender)
        kept = self.spec.max_staleness is None or stale <= self.spec.max_staleness
        counts = 0
        if kept:
            self.buffered += 1
            if self.buffered == self.spec.buffer_size:  # one server step: a new version
                self.version[server] += 1
                self.buffered, counts = 0, self.spec.buffer_size
        return Served((self.answer(server, message),), applied=kept, staleness=stale,
                      version=self.version[server], counts=counts)

    def init_server(self, state, server: str) -> None:
        import torch

        model = state.models[server]
        state.opt[server] = {"momentum": {k: torch.zeros_like(v) for k, v in model.items()},
                             "sum": {k: torch.zeros_like(v) for k, v in model.items()}, "count": 0}

    def add(self, state, server: str, delta, weight: float) -> None:
        """Buffer ``delta`` with ``weight``; at K of them, one server step on their sum / K."""
        st = state.opt[server]
        for k, v in delta.items():
            st["sum"][k].add_(v if weight == 1.0 else weight * v)
        st["count"] += 1
        if st["count"] == self.spec.buffer_size:
            mean = {k: v / self.spec.buffer_size for k, v in st["sum"].items()}
            self.opt.step_(state.models[server], st["momentum"], mean, self.kernels)
            for v in st["sum"].values():
                v.zero_()
            st["count"] = 0

    def update(self, state, server: str, message: Message, served: Served, payload) -> None:
        if served.applied:  # (a delta past max_staleness is dropped)
            self.add(state, server, payload, 1.0 / math.sqrt(1.0 + served.staleness))
