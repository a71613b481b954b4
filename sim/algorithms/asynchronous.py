"""The asynchronous template: a method without a barrier states its rule once and writes its
server's math as small functions (Async Local-SGD, HALoS, FedBuff; REFERENCE.md section 10).

**Workers** (the framework's, the same for every such method). Worker w runs H_w inner
steps (``inner_steps``; with ``dynamic_local_updates``, H_w = max(1, ceil(H v_w / max v)),
v the workers' known speeds: 1 / their seconds per step, region multiplier x node
multiplier, as the HALoS code rescales local steps), then sends its pseudo-gradient
g = theta_start - theta_end (``payload_dtype`` on the wire; positive = descent) to its server
(``server_of``) and waits only for the server's answer, the model it restarts from
(theta_start := that model). Its inner AdamW state stays its own. Fast workers do more
rounds; nobody waits for anybody.

**Servers** (the method's). ``receive(server, message)`` says, without tensors, what a
server does with an arrival: whether it applies an update (its version grows by one), what
it sends on (``answer``: the current model back to the worker; HALoS: a push to the global
server) and how many worker updates reach the top server's model (``run.max_rounds`` counts
rounds of ``n_workers`` of them). ``update(state, server, message, payload)`` is its math on
the arrival's payload; ``payload(state, server, message)`` what a departing message carries
(default: the server's model). The template keeps versions and staleness (server versions
applied between the moment the worker's start model left the server and the moment its
update is applied), the per-server queues of the numerics, the mailboxes between them and
a returning worker's fetch of its server's current model.

``DelayedNesterov`` is the server optimizer of Async Local-SGD and HALoS (Async Local-SGD
Alg. 3); with N = 1 and c = 0 it is PyTorch-form Nesterov (the same kernel as DiLoCo's).
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass, field

from pydantic import Field

from sim.algorithms.base import Algorithm
from sim.algorithms.knobs import FieldError, MethodSpec, WireDtype
from sim.algorithms.transforms import Tree, assign, tree_sub, wire_roundtrip, worker_view
from sim.schedule import NOTHING, Message, Need, ScheduleInfo, Send, Served, ServerInfo, StepPlan

PUSH = "push"
"""The stream of a worker's pseudo-gradient to its server (round r: its r-th push)."""
MODEL = "model"
"""The stream of a server's model to a worker (answers the worker's push of the same round)."""


class AsyncKnobs(MethodSpec):
    """Knobs every asynchronous method shares (paper symbols in the descriptions)."""
    inner_steps: int = Field(default=50, ge=1, description=(
        "H: inner steps of a worker between two pushes (with dynamic_local_updates: of the fastest worker)."))
    dynamic_local_updates: bool = Field(default=False, description=(
        "DyLU: each worker runs H_w = max(1, ceil(H v_w / max v)) inner steps per round, v = its known speed "
        "(1 / seconds per step: region step_time_multiplier x its straggler factor)."))
    payload_dtype: WireDtype = Field(default="fp32", description=(
        "Wire format of the pseudo-gradients workers push (models are sent back in fp32)."))


def pick_server(spec_field: str, name: str | None, topology, region: str | None = None) -> str:
    """The server a method's knob ``spec_field`` names: ``name``, or the topology's only one
    (in ``region`` when given); FieldError naming the choices otherwise."""
    servers = [s.name for s in topology.servers if region is None or s.region == region]
    if name is not None:
        if name not in [s.name for s in topology.servers]:
            known = ", ".join(s.name for s in topology.servers) or "none declared"
            raise FieldError((spec_field,), f"no server '{name}' in topology.servers (servers: {known})")
        return name
    if not servers:
        raise FieldError((spec_field,), "this method needs a parameter server: declare one under topology.servers "
                                        "(name, region)")
    if len(servers) > 1:
        raise FieldError((spec_field,), f"the topology has several servers; name one of: {', '.join(servers)}")
    return servers[0]


def info_of(topology, name: str) -> ServerInfo:
    s = next(s for s in topology.servers if s.name == name)
    return ServerInfo(s.name, s.region, s.bandwidth_gbps, s.apply_time_s)


class OneServer:
    """Mix-in of a method with one server (its ``server:`` knob): every worker pushes to it and it
    is the top server (Async Local-SGD, FedBuff)."""

    @classmethod
    def server_plan(cls, spec, topology):
        return [info_of(topology, pick_server("server", spec.server, topology))]

    def setup(self) -> None:
        self.name = next(iter(self.servers))

    def server_of(self, worker: int) -> str:
        return self.name

    def top_server(self) -> str:
        return self.name


class DelayedNesterov:
    """Delayed Nesterov (Async Local-SGD Alg. 3): momentum m, accumulator D, arrival count t;
    on each arrival of g: D += g; every N-th arrival m = beta m + D / N and
    theta -= lr ((1 - cN + c) beta m + g / N), D = 0; otherwise theta -= lr (c beta m + g / N)."""

    def __init__(self, lr: float, beta: float, buffer: int, c: float = 0.0):
        self.lr, self.beta, self.N, self.c = float(lr), float(beta), int(buffer), float(c)

    def init(self, params: Tree) -> dict:
        import torch

        return {"m": {k: torch.zeros_like(v) for k, v in params.items()},
                "D": {k: torch.zeros_like(v) for k, v in params.items()}, "t": 0}

    def step_(self, theta: Tree, st: dict, g: Tree, backend: str = "auto") -> None:
        from kernels.outer import outer_nesterov_

        lr, beta, N, c = self.lr, self.beta, self.N, self.c
        m, D = st["m"], st["D"]
        for k in theta:
            D[k].add_(g[k])
        if (st["t"] + 1) % N == 0:
            for k in theta:
                if N == 1 and c == 0:  # PyTorch-form Nesterov: the kernel DiLoCo's outer step uses
                    outer_nesterov_(theta[k], m[k], D[k], lr, beta, True, backend)
                else:
                    m[k].mul_(beta).add_(D[k] / N)
                    theta[k].sub_(lr * ((1 - c * N + c) * beta * m[k] + g[k] / N))
                D[k].zero_()
        else:
            for k in theta:
                theta[k].sub_(lr * (c * beta * m[k] + g[k] / N))
        st["t"] += 1


@dataclass
class AsyncState:
    """Numerics of an asynchronous method: each worker's start model (rows, stacked like the
    replicas), each server's model and optimizer state, and the payloads in flight."""
    start: Tree
    models: dict = field(default_factory=dict)
    """Server name -> its model (one replica's shapes)."""
    opt: dict = field(default_factory=dict)
    """Server name -> its optimizer's state (the method's)."""
    mail: dict = field(default_factory=dict)
    """Message key -> the values it carries (filled by the sender's queue, taken by the receiver's)."""
    queues: dict = field(default_factory=dict)
    """Server name -> its queue in the numerics."""
    extra: dict = field(default_factory=dict)
    """The method's own (HALoS: each local server's model at its last merge)."""


class Asynchronous(Algorithm):
    """Base of a method without a barrier: give ``server_plan``, ``server_of``, ``top_server``,
    ``receive``, ``init_server`` and ``update`` (and ``payload`` for messages that are not the model)."""

    Spec = AsyncKnobs
    outer_state_copies = 1  # each worker's start model
    diagnostic_labels = {"staleness": ("staleness of applied updates", "server versions")}

    def __init__(self, spec, n_workers: int, seed: int):
        self.spec, self.n_workers, self.seed = spec, n_workers, seed
        self.H = int(spec.inner_steps)
        self.every = [self.H] * n_workers
        self.elems = 0
        self.info = ScheduleInfo(wire_format=spec.payload_dtype)
        self.servers: dict[str, ServerInfo] = {}
        self.worker_regions: list[str] = []
        self.version: dict[str, int] = {}
        self.sent_version: dict[str, dict] = {}
        self._fetches = 0
        self.now = 0.0

    # ---------------------------------------------------------------- checks before work
    @classmethod
    def warm_steps(cls, spec) -> int:
        return 0

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """The step, plus a round's push and answer (a flow, its arrival and the server's
        handling each) spread over the round's steps."""
        return 1.0 + 6.0 / max(1, int(spec.inner_steps))

    # ---------------------------------------------------------------- schedule
    def configure(self, layout, proxy_layers=None) -> None:
        self.layout = list(layout)
        self.elems = sum(e for _, e in layout)

    def set_servers(self, servers, worker_regions, step_time_s) -> None:
        self.servers = {s.name: s for s in servers}
        self.worker_regions = list(worker_regions)
        if self.spec.dynamic_local_updates:
            speed = [1.0 / t for t in step_time_s]
            fastest = max(speed)
            self.every = [max(1, math.ceil(self.H * v / fastest - 1e-9)) for v in speed]
        self.version = {name: 0 for name in self.servers}
        self.sent_version = {name: {} for name in self.servers}
        self.setup()

    def setup(self) -> None:
        """After ``set_servers``: the method's own schedule state."""

    @abstractmethod
    def server_of(self, worker: int) -> str:
        """The server ``worker`` pushes to and restarts from."""

    @abstractmethod
    def top_server(self) -> str:
        """The server whose model is 'the model' (evaluated; its updates count rounds)."""

    def at_step(self, worker: int, step: int) -> StepPlan:
        every = self.every[worker]
        if step % every:
            return NOTHING
        r = step // every - 1
        send = Send(PUSH, r, (worker,), self.elems, self.spec.payload_dtype, "p2p", to=self.server_of(worker))
        return StepPlan(sends=(send,), needs=(Need(PUSH, r),))

    def quiet_steps(self, worker: int, step: int) -> int:
        rem = step % self.every[worker]
        return 0 if rem == 0 else self.every[worker] - rem

    def steps_of(self, worker: int) -> int:
        """H_w: inner steps of ``worker`` per round."""
        return self.every[worker]

    def staleness(self, server: str, receiver) -> int:
        """Versions ``server`` applied since its model last left for ``receiver``."""
        return self.version[server] - self.sent_version[server].get(receiver, 0)

    def answer(self, server: str, message: Message) -> Message:
        """The server's current model back to the worker that sent ``message`` (meets its Need)."""
        return Message(MODEL, message.round, server, message.sender, self.elems, "fp32",
                       answers=(message.stream, message.round))

    def serve(self, server: str, message: Message, time_s: float) -> Served:
        self.now = time_s  # (what ``receive`` may read of the clock)
        return self.receive(server, message)

    @abstractmethod
    def receive(self, server: str, message: Message) -> Served:
        """What ``server`` does with ``message`` (schedule: bump ``self.version[server]`` for an
        update applied; return the messages it sends and what it counts)."""

    def departed(self, server: str, messages, time_s: float) -> None:
        for m in messages:
            self.sent_version[server][m.to] = self.version[server]

    def home_server(self, worker: int) -> str | None:
        return self.server_of(worker)

    def rejoined(self, worker: int, server: str, step: int) -> None:
        self.sent_version[server][worker] = self.version[server]

    # ---------------------------------------------------------------- math
    def init(self, replicas) -> AsyncState:
        state = AsyncState(start=copy_tree(replicas.params))
        for name in self.servers:
            state.models[name] = copy_tree(worker_view(replicas.params, 0))
            self.init_server(state, name)
        return state

    @abstractmethod
    def init_server(self, state: AsyncState, server: str) -> None:
        """Build ``state.opt[server]`` (the server's optimizer state) from ``state.models[server]``."""

    @abstractmethod
    def update(self, state: AsyncState, server: str, message: Message, served: Served, payload: Tree) -> None:
        """The server's math on an arrival (``served``: what ``receive`` said of it; ``payload``:
        what ``message`` carries, as received)."""

    def payload(self, state: AsyncState, server: str, message: Message) -> Tree:
        """What ``message`` leaving ``server`` carries: by default the server's model."""
        return copy_tree(state.models[server])

    def _queue(self, numerics, state: AsyncState, server: str) -> int:
        q = state.queues.get(server)
        if q is None:
            q = state.queues[server] = numerics.add_queue()
        return q

    def on_step(self, numerics, state, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        numerics.enqueue(worker, step, time_s)
        params = numerics.replicas.params
        for send in plan.sends:
            if send.to is None:
                continue
            key = (worker, send.to, send.stream, send.round)
            fmt = send.wire_format

            def push(key=key, fmt=fmt) -> None:  # g = theta_start - theta_end, as the server receives it
                g = tree_sub(worker_view(state.start, worker), worker_view(params, worker))
                state.mail[key] = wire_roundtrip(g, fmt, backend=self.kernels)

            numerics.enqueue_op(worker, push)

    def on_reduced(self, numerics, state, send, time_s, participants=None) -> list:
        return []

    def on_served(self, numerics, state, server: str, message: Message, served: Served, time_s: float) -> None:
        key = message.key

        def serve() -> None:
            self.update(state, server, message, served, state.mail.pop(key))

        numerics.enqueue_op(self._queue(numerics, state, server), serve, lambda: key in state.mail)

    def on_departed(self, numerics, state, server: str, messages, time_s: float) -> None:
        def leave() -> None:
            for m in messages:
                state.mail[m.key] = self.payload(state, server, m)

        numerics.enqueue_op(self._queue(numerics, state, server), leave)

    def on_delivered(self, numerics, state, message: Message, time_s: float) -> None:
        self._restart(numerics, state, message.to, message.key)

    def on_dropped(self, numerics, state, message: Message, time_s: float) -> None:
        key = message.key  # filled by the sender's queue when it left: forget it there, after that
        sender = message.sender
        queue = sender if isinstance(sender, int) else self._queue(numerics, state, sender)
        numerics.enqueue_op(queue, lambda: state.mail.pop(key, None))

    def _restart(self, numerics, state, worker: int, key) -> None:
        """Queue: ``worker`` goes on from the model in mailbox ``key`` (its replica and its start)."""
        params = numerics.replicas.params

        def restart() -> None:
            model = state.mail.pop(key)
            assign(worker_view(params, worker), model)
            assign(worker_view(state.start, worker), model)

        numerics.enqueue_op(worker, restart, lambda: key in state.mail)

    def recover(self, numerics, state, worker: int, peer) -> None:
        """A worker that comes back takes its server's current model (``peer``: the server)."""
        server = peer if isinstance(peer, str) else self.server_of(worker)
        self._fetches += 1
        key = ("fetch", worker, self._fetches)

        def snapshot() -> None:
            state.mail[key] = copy_tree(state.models[server])

        numerics.enqueue_op(self._queue(numerics, state, server), snapshot)
        self._restart(numerics, state, worker, key)

    def global_params(self, numerics, state):
        return state.models[self.top_server()]

    def diagnostics(self, numerics, state) -> dict[str, float]:
        return {}


def copy_tree(tree: Tree) -> Tree:
    """A copy of ``tree``'s tensors (a model a server sends or a fetch takes: later steps must not change it)."""
    return {k: v.clone() for k, v in tree.items()}
