"""Parameter servers and point-to-point sends: methods without a barrier.

A method with servers (``Algorithm.server_plan``) has workers that never wait for each other.
A worker's plan sends its payload to a named server (``Send.to``): one flow over the network
from the worker's node to the server's, with latency and max-min sharing like every flow,
starting when the worker releases it. When it arrives the server queues it; servers handle
payloads one at a time in arrival order (simultaneous arrivals in the order the network
delivered them, which is deterministic), each taking ``apply_time_s`` of simulated time
(``Served`` records the busy span). At the end of it the method's ``serve`` says what the
server did (an update applied, its version, the update's staleness) and what it sends on:
payloads to workers (the fresh model) or to other servers (HALoS's local-to-global push),
each its own flow. What a server sends leaves at the end of the instant, once it has handled
every payload that arrived in that instant (``departed``): workers whose updates arrive
together restart from the same model, the one with all of them applied. The numerics are
told first (``on_served``: the server's math, queued on the server's own queue; the
departure: the payloads' values, taken after it; ``on_delivered``: the worker's use of what
it got, queued before it computes again), then the worker's ``Need`` of the send a message
answers is met.

Faults: a worker that is down is never waited for (nobody waits for anyone). When it fails,
its payloads on the wire, to or from it, are called off (``Network.cancel``: no byte to or
from a down node; its push never reaches the server); a payload a server would send to a
worker that is down is not sent (a ``Dropped`` record, reason ``down``), nor the answer to a
send the worker made before it failed and came back (reason ``rejoined``). A worker that comes
back fetches the current model from its server (``Algorithm.home_server``; ``engine.faults``).

``Router`` is the ``SyncBarrier`` of a run whose method has servers: sends with ``to`` go to
the servers, every other send (a warm start's all-reduce) to the barrier as before.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

import simpy

from kernels.formats import payload_bytes
from sim.engine.sync import SyncBarrier
from sim.metrics.records import Dropped, LossPoint, Served


class _Server:
    __slots__ = ("name", "apply_time_s", "queue", "busy", "busy_s", "outbox")

    def __init__(self, name: str, apply_time_s: float):
        self.name, self.apply_time_s = name, float(apply_time_s)
        self.queue: deque = deque()
        self.busy = False
        self.busy_s = 0.0
        self.outbox: dict[float, list] = {}  # release time -> payloads leaving then


class Router(SyncBarrier):
    """A ``SyncBarrier`` that also carries point-to-point sends to servers and back.

    ``servers``: the method's ``ServerInfo`` list; ``serve(server, message, time_s)`` the
    method's schedule (``Algorithm.serve``); ``on_served(server, message, served, time_s)``,
    ``on_departed(server, messages, time_s)`` and ``on_delivered(message, time_s)`` the run's
    hooks (schedule and numerics; called before the worker that needs the message may go on);
    ``on_dropped(message, time_s)``: a payload that left and is not used (called off with its
    failed worker, or an answer the worker no longer waits for)."""

    def __init__(self, env: simpy.Environment, net, nodes: list[str], on_done, recorder, servers: list,
                 serve: Callable, on_served: Callable, on_departed: Callable, on_delivered: Callable,
                 timeout_s: float | None = None, on_dropped: Callable | None = None):
        super().__init__(env, net, nodes, on_done, recorder, timeout_s=timeout_s)
        self.servers = {s.name: _Server(s.name, s.apply_time_s) for s in servers}
        self.serve, self.on_served, self.on_departed, self.on_delivered = serve, on_served, on_departed, on_delivered
        self.on_dropped = on_dropped  # a message that left but is not used when it arrives
        self._answers: dict[tuple, simpy.Event] = {}  # (worker, stream, round) -> fires when the answer arrives
        self._now = env.event()
        self._now.succeed()  # the 'started' of a point-to-point send: nobody is waited for
        self.delivered = 0
        self._wire: dict[int, dict] = {}  # worker -> its flows on the wire (their done events), to or from it

    # ------------------------------------------------------------------ workers
    def arrive(self, send, worker: int, step: int = 0):
        if send.to is None:
            return super().arrive(send, worker, step)
        if send.to not in self.servers:
            raise ValueError(f"worker {worker} sends {send.stream}:{send.round} to unknown server '{send.to}'; "
                             f"servers: {', '.join(self.servers)}")
        from sim.schedule import Message

        msg = Message(send.stream, send.round, worker, send.to, send.elems, send.wire_format)
        done = self._answers[(worker, send.stream, send.round)] = self.env.event()
        self._send(msg)
        return self._now, done

    def member_down(self, worker: int) -> None:
        super().member_down(worker)
        for key in [k for k in self._answers if k[0] == worker]:  # it waits for nothing any more
            del self._answers[key]
        flows = self._wire.pop(worker, None)
        if flows:  # no byte to or from a down node: its payloads on the wire are called off
            self.net.cancel(*flows)
            if self.on_dropped is not None:
                for msg in flows.values():
                    self.on_dropped(msg, self.env.now)

    def busy_s(self) -> dict[str, float]:
        """Simulated seconds each server has spent handling payloads so far."""
        return {name: s.busy_s for name, s in self.servers.items()}

    # ------------------------------------------------------------------ the wire
    def _node(self, end) -> str:
        return self.nodes[end] if isinstance(end, int) else end

    def _send(self, msg) -> None:
        nbytes = payload_bytes(msg.elems, msg.wire_format)
        ev = self.net.transfer(self._node(msg.sender), self._node(msg.to), nbytes, f"{msg.stream}:{msg.round}")
        w = msg.sender if isinstance(msg.sender, int) else msg.to if isinstance(msg.to, int) else None
        if w is not None:
            self._wire.setdefault(w, {})[ev] = msg
        ev.callbacks.append(lambda _e, msg=msg, w=w: self._arrived(msg, w, _e))

    def _arrived(self, msg, worker: int | None = None, ev=None) -> None:
        if worker is not None:
            self._wire.get(worker, {}).pop(ev, None)
        if isinstance(msg.to, int):
            self._deliver(msg)
            return
        server = self.servers[msg.to]
        server.queue.append(msg)
        if not server.busy:
            self._next(server)

    def _stale(self, msg) -> bool:
        """A message to a worker that is down, or that answers a send the worker stopped waiting
        for (it failed since, and came back with its server's model): nobody uses it."""
        w = msg.to
        return not self.up[w] or (msg.answers is not None and (w, *msg.answers) not in self._answers)

    def _drop(self, msg) -> None:
        w = msg.to
        reason = "down" if not self.up[w] else "rejoined"  # (rejoined: it came back with a fresher model)
        self.recorder.dropped.append(Dropped(w, self.nodes[w], msg.stream, msg.round, self.env.now, reason))

    def _deliver(self, msg) -> None:
        w = msg.to
        if self._stale(msg):  # it failed while the payload was on the wire: nobody uses it
            self._drop(msg)
            if self.on_dropped is not None:
                self.on_dropped(msg, self.env.now)
            return
        self.delivered += 1
        self.on_delivered(msg, self.env.now)
        if msg.answers is not None:
            ev = self._answers.pop((w, *msg.answers), None)
            if ev is not None:
                ev.succeed()

    # ------------------------------------------------------------------ servers
    def _next(self, server: _Server) -> None:
        """Handle the queue's payloads in order: at once with no apply time, else one at a time."""
        while server.queue:
            msg = server.queue.popleft()
            if server.apply_time_s > 0:
                server.busy = True
                start = self.env.now
                timer = self.env.timeout(server.apply_time_s)
                timer.callbacks.append(lambda _e, msg=msg, start=start: self._handled(server, msg, start))
                return
            self._handle(server, msg, self.env.now)

    def _handled(self, server: _Server, msg, start: float) -> None:
        server.busy = False
        self._handle(server, msg, start)
        self._next(server)

    def _handle(self, server: _Server, msg, start: float) -> None:
        now = self.env.now
        server.busy_s += now - start
        served = self.serve(server.name, msg, now)
        worker = msg.sender if isinstance(msg.sender, int) else -1
        staleness = -1 if served.staleness is None else int(served.staleness)
        self.recorder.served.append(Served(server.name, self._node(msg.sender), worker, msg.stream, msg.round,
                                           start, now, served.version, staleness))
        if served.staleness is not None:
            self.recorder.losses.append(LossPoint("staleness", worker, served.version, now, float(served.staleness)))
        self.on_served(server.name, msg, served, now)
        if not served.sends:
            return
        when = now if served.release_at is None else max(now, float(served.release_at))
        box = server.outbox.get(when)
        if box is None:  # the first payload to leave then: they all leave at the end of that instant
            box = server.outbox[when] = []
            self.env.timeout(when - now).callbacks.append(lambda _e, server=server, when=when: self._depart(server, when))
        box.extend(served.sends)

    def _depart(self, server: _Server, when: float) -> None:
        now = self.env.now
        leaving = []
        for out in server.outbox.pop(when):
            if isinstance(out.to, int) and self._stale(out):  # down (or was): not sent, nobody waits for it
                self._drop(out)
            else:
                leaving.append(out)
        if leaving:
            self.on_departed(server.name, leaving, now)
        for out in leaving:
            self._send(out)

