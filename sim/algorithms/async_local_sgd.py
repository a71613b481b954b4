"""Async Local-SGD (Liu et al. 2024, "Asynchronous Local-SGD Training for Language Modeling",
arXiv 2401.09135), shipped as a plug-in (``sim.algorithms.METHODS``; REFERENCE.md section 10).

Workers never wait for each other: each runs H inner AdamW steps (H_w with dynamic local
updates, ``dynamic_local_updates``), pushes its pseudo-gradient g = theta_start - theta_end to
one parameter server (``server``: a ``topology.servers`` entry) and restarts from the model the
server sends back. The server applies every pseudo-gradient the moment it arrives with
Delayed Nesterov (``outer_lr`` eps, ``outer_momentum`` beta, ``buffer_size`` N,
``momentum_activation`` c; ``asynchronous.DelayedNesterov``): with c = 0 each arrival is a plain
step eps g / N and every N-th also adds eps beta m, m fed the mean of the last N. N = 1, c = 0 is
PyTorch-form Nesterov, so one worker is exactly DiLoCo with one worker.

Staleness of an update: server versions applied between its worker's start model leaving the
server and the update being applied. ``run.max_rounds``: updates applied / workers.

Grace period (``grace_period_s`` tau_grace > 0): an update that arrives while no grace window
is open opens one; updates arriving within tau_grace of it are applied too, one at a time, and
all of those workers restart from the same model, the server's at the window's end.

Left open by the paper and decided here: DyLU rounds H v_w / max v up (the HALoS code), never
below 1; a grace window is counted from the arrival that opens it.
"""

from __future__ import annotations

from pydantic import Field

from sim.algorithms.asynchronous import AsyncKnobs, Asynchronous, DelayedNesterov, OneServer
from sim.schedule import Message, Served


class AsyncLocalSGDSpec(AsyncKnobs):
    """Async Local-SGD's knobs (paper symbols)."""
    server: str | None = Field(default=None, description=(
        "The parameter server (a topology.servers name); default: the topology's only server."))
    outer_lr: float = Field(default=0.7, gt=0, description=(
        "eps: the server's Delayed Nesterov learning rate (DN divides each step by N: the HALoS scripts pass "
        "lr = base lr x N)."))
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="beta: Delayed Nesterov momentum (0.9).")
    buffer_size: int = Field(default=4, ge=1, description="N: arrivals per momentum update (paper grid 4, 8, 16).")
    momentum_activation: float = Field(default=0.0, ge=0, le=1, description=(
        "c in [0, 1/N]: share of the momentum applied at every arrival (0: only every N-th)."))
    dynamic_local_updates: bool = Field(default=True, description=(
        "DyLU: each worker runs H_w = max(1, ceil(H v_w / max v)) inner steps per round, v = its known speed "
        "(1 / seconds per step: region step_time_multiplier x its straggler factor)."))
    grace_period_s: float = Field(default=0.0, ge=0, description=(
        "tau_grace: seconds after an update during which later arrivals are applied too, all their workers "
        "restarting from the model at the window's end (0: every worker gets the model at once)."))


class AsyncLocalSGD(OneServer, Asynchronous):
    Spec = AsyncLocalSGDSpec

    @classmethod
    def check_fits(cls, spec, n_workers, layers, layers_field) -> None:
        from sim.algorithms.knobs import FieldError

        if spec.momentum_activation > 1.0 / spec.buffer_size + 1e-12:
            raise FieldError(("momentum_activation",), f"c must be in [0, 1/N] = [0, {1.0 / spec.buffer_size:g}] "
                                                       f"(got {spec.momentum_activation:g})")

    def setup(self) -> None:
        super().setup()
        self.window_end: float | None = None  # the open grace window's end
        self.dn = DelayedNesterov(self.spec.outer_lr, self.spec.outer_momentum, self.spec.buffer_size,
                                  self.spec.momentum_activation)

    def receive(self, server: str, message: Message) -> Served:
        stale = self.staleness(server, message.sender)
        self.version[server] += 1
        release = None
        if self.spec.grace_period_s > 0:
            if self.window_end is None or self.now > self.window_end:
                self.window_end = self.now + self.spec.grace_period_s
            release = self.window_end
        return Served((self.answer(server, message),), applied=True, staleness=stale, version=self.version[server],
                      counts=1, release_at=release)

    def init_server(self, state, server: str) -> None:
        state.opt[server] = self.dn.init(state.models[server])

    def update(self, state, server: str, message: Message, served: Served, payload) -> None:
        self.dn.step_(state.models[server], state.opt[server], payload, self.kernels)
