"""Where workers meet: a collective starts once every member of its group that is expected has sent.

Each ``Send`` of a schedule (stream, round, group) names one collective. Workers arrive
at it when they reach the step that sends; when the last expected member arrives the
collective runs over the network among those that arrived (its *participants*); when it
completes, ``on_done(send, participants)`` runs (the numerics mark the result available)
and then the ``done`` event fires, so a worker that needs the result never computes
ahead of the numerics. Arriving never blocks: whether and when a worker waits is the
schedule's ``Need``, handled by the worker.

Who is expected (issue 4): a member is not waited for while it is down (failed, absent,
or still fetching parameters after coming back), nor for a step it skipped by taking a
peer's parameters when it came back (``skip_until``). With ``timeout_s`` a collective
also starts when that long has passed since its first arrival, with whoever has arrived
(the DiLoCo paper's dropped outer gradients). A member that arrives after its collective
started is *late*: its contribution is dropped and it does not wait for the result.
Every member left out of a collective gets a ``Dropped`` record. A member that arrived
and then fails stays a participant (member failure during a collective is not modelled).

Time between a worker's arrival and ``started`` is waiting for stragglers; between
``started`` and ``done``, communication.
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from kernels.formats import payload_bytes
from sim.engine.collectives import COLLECTIVES
from sim.engine.network import Network
from sim.metrics.records import Dropped, Recorder, Sync


class SyncBarrier:
    """Collectives keyed by ``Send.key``; ``nodes[i]`` is the network node of worker i."""

    def __init__(self, env: simpy.Environment, net: Network, nodes: list[str], on_done: Callable[[object, tuple], None],
                 recorder: Recorder, timeout_s: float | None = None):
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"sync timeout must be > 0 seconds or None (got {timeout_s})")
        self.env, self.net, self.nodes = env, net, list(nodes)
        self.on_done = on_done
        self.recorder = recorder
        self.timeout_s = timeout_s
        self.up = [True] * len(nodes)
        self.skip_until = [-1] * len(nodes)  # worker i never sends a collective of a step <= skip_until[i]
        self._open: dict[tuple, dict] = {}
        self._started: dict[tuple, tuple[simpy.Event, simpy.Event, tuple]] = {}
        self._short: dict[tuple, None] = {}  # finished collectives that ran without some member

    # ------------------------------------------------------------------ membership
    def member_down(self, worker: int) -> None:
        """``worker`` failed or left: open collectives stop waiting for it."""
        self.up[worker] = False
        self._recheck()

    def member_up(self, worker: int, skip_until: int) -> None:
        """``worker`` is back and goes on after step ``skip_until`` (never behind the steps it
        had done): it will not send for steps up to there (it took a peer's parameters),
        but is expected for later ones."""
        self.up[worker] = True
        self.skip_until[worker] = skip_until
        self._recheck()

    def _expected(self, m: int, r: dict) -> bool:
        return m not in r["arrived"] and self.up[m] and r["step"] > self.skip_until[m]

    def _recheck(self) -> None:
        for key, r in list(self._open.items()):
            if not any(self._expected(m, r) for m in r["send"].group):
                self._start(key, r)

    def pending(self, key: tuple) -> bool:
        """Whether the collective ``key`` is waiting for members or on the wire."""
        return key in self._open or key in self._started

    # ------------------------------------------------------------------ arriving
    def arrive(self, send, worker: int, step: int = 0) -> tuple[simpy.Event, simpy.Event]:
        """Worker ``worker`` sends its part of ``send`` at its step ``step``; returns (started, done) events."""
        if send.collective not in COLLECTIVES:
            raise ValueError(f"unknown collective '{send.collective}'; known: {', '.join(COLLECTIVES)}")
        if worker not in send.group:
            raise RuntimeError(f"worker {worker} is not in the group {send.group} of {send.stream}:{send.round}")
        if send.key in self._started or send.key in self._short:  # late: it ran without this worker
            now = self.env.event()
            now.succeed()
            return now, now
        r = self._open.get(send.key)
        if r is None:
            r = self._open[send.key] = {"arrived": [], "first": self.env.now, "step": step, "send": send,
                                        "started": self.env.event(), "done": self.env.event()}
            if self.timeout_s is not None:
                self.env.timeout(self.timeout_s).callbacks.append(lambda _e, key=send.key, r=r: self._timeout(key, r))
        if worker in r["arrived"]:
            raise RuntimeError(f"worker {worker} sent {send.stream}:{send.round} twice")
        r["arrived"].append(worker)
        started, done = r["started"], r["done"]
        if not any(self._expected(m, r) for m in send.group):
            self._start(send.key, r)
        return started, done

    def _timeout(self, key: tuple, r: dict) -> None:
        if self._open.get(key) is r:
            self._start(key, r)

    def _start(self, key: tuple, r: dict) -> None:
        send = r["send"]
        del self._open[key]
        arrived = set(r["arrived"])
        participants = tuple(m for m in send.group if m in arrived)
        self._started[key] = (r["started"], r["done"], participants)
        for m in send.group:
            if m in arrived:
                continue
            reason = "down" if not self.up[m] else "rejoined" if r["step"] <= self.skip_until[m] else "late"
            self.recorder.dropped.append(Dropped(m, self.nodes[m], send.stream, send.round, self.env.now, reason))
        r["started"].succeed()
        self.env.process(self._run(send, r, participants))

    def _run(self, send, r: dict, participants: tuple) -> Generator:
        start = self.env.now
        nbytes = payload_bytes(send.elems, send.wire_format)
        members = [self.nodes[i] for i in participants]
        yield from COLLECTIVES[send.collective](self.env, self.net, members, nbytes, f"{send.stream}:{send.round}")
        self.on_done(send, participants)
        self.recorder.syncs.append(Sync(send.round, send.collective, len(members), nbytes, r["first"], start,
                                        self.env.now, send.stream))
        r["done"].succeed()
        del self._started[send.key]
        if len(participants) < len(send.group):  # someone may still arrive late (only then is the key kept)
            self._short[send.key] = None
