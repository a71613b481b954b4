"""Collectives built from network flows, and the barrier that starts them.

Ring all-reduce (reduce-scatter then all-gather): the payload is cut into P chunks and
each of the 2(P-1) steps sends one chunk from every member to the next member of the
ring. A member starts step k once it has received step k-1's chunk and finished its
own step k-1 send. On P equal links this takes ``2(P-1)·latency + 2(P-1)/P·S/B``.
Ring order is the member order given (the runner orders workers by region, so a ring
crosses each WAN boundary once per direction).
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from sim.engine.network import Network
from sim.metrics.records import Recorder, Sync


def ring_allreduce(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                   tag: str = "allreduce") -> Generator:
    """SimPy process body: ring all-reduce of ``nbytes`` over ``members``."""
    p = len(members)
    if p <= 1 or nbytes <= 0:
        yield env.timeout(0)
        return
    chunk = nbytes / p
    steps = 2 * (p - 1)
    received = [[env.event() for _ in range(steps)] for _ in range(p)]

    def member(i: int) -> Generator:
        nxt = (i + 1) % p
        for k in range(steps):
            if k > 0:
                yield received[i][k - 1]
            sent = net.transfer(members[i], members[nxt], chunk, tag)
            sent.callbacks.append(lambda _e, nxt=nxt, k=k: received[nxt][k].succeed())
            yield sent

    yield env.all_of([env.process(member(i)) for i in range(p)])


COLLECTIVES: dict[str, Callable[..., Generator]] = {"ring_allreduce": ring_allreduce}


class SyncBarrier:
    """Workers arrive at a numbered round; when all have, the collective runs.

    ``arrive`` returns two events: ``started`` (every member is here, the collective is on
    the wire) and ``done`` (the collective finished and ``on_done(round)`` has run, so the
    numerics of that sync are applied before anyone computes again). Time between arrival
    and ``started`` is waiting for stragglers; between ``started`` and ``done``, comm.
    """

    def __init__(self, env: simpy.Environment, net: Network, members: list[str], collective: str,
                 payload_bytes: float, on_done: Callable[[int], None], recorder: Recorder):
        if collective not in COLLECTIVES:
            raise ValueError(f"unknown collective '{collective}'; known: {', '.join(COLLECTIVES)}")
        self.env, self.net, self.members = env, net, list(members)
        self.collective = COLLECTIVES[collective]
        self.collective_name = collective
        self.payload_bytes = payload_bytes
        self.on_done = on_done
        self.recorder = recorder
        self._rounds: dict[int, dict] = {}

    def arrive(self, member: str, round_: int) -> tuple[simpy.Event, simpy.Event]:
        r = self._rounds.get(round_)
        if r is None:
            r = self._rounds[round_] = {"arrived": set(), "first": self.env.now,
                                        "started": self.env.event(), "done": self.env.event()}
        if member in r["arrived"]:
            raise RuntimeError(f"{member} arrived twice at round {round_}")
        r["arrived"].add(member)
        if len(r["arrived"]) == len(self.members):
            r["started"].succeed()
            self.env.process(self._run(round_, r))
        return r["started"], r["done"]

    def _run(self, round_: int, r: dict) -> Generator:
        start = self.env.now
        yield from self.collective(self.env, self.net, self.members, self.payload_bytes, f"{self.collective_name}:{round_}")
        self.on_done(round_)
        self.recorder.syncs.append(Sync(round_, self.collective_name, len(self.members), self.payload_bytes,
                                        r["first"], start, self.env.now))
        del self._rounds[round_]
        r["done"].succeed()
