"""Collectives built from network flows (alpha-beta costs from REFERENCE.md section 8).

Every collective is a SimPy process body ``f(env, net, members, nbytes, tag)`` that
returns when the last member has the result; all of them are in ``COLLECTIVES``. In the
formulas below P = len(members), S = nbytes, a = route latency, B = link bandwidth.

* ``ring_allreduce`` (pipelined): reduce-scatter then all-gather as one stream per
  member. A real ring cuts S into P chunks and moves one chunk per member per step for
  2(P-1) steps; chunks pipeline, so each member's outgoing link carries 2(P-1)/P·S bytes
  back to back. It is modelled as P flows, member i -> member i+1, of 2(P-1)/P·S bytes
  each, and every flow is delivered 2(P-1)/P·(sum of the ring's P route latencies)
  after its last byte (2(P-1)·a on a uniform ring). Result: exactly
  ``2(P-1)a + 2(P-1)/P·S/B`` on uniform links, limited by the slowest link (or the most
  shared one) as the stepwise ring is, with P flows instead of 2(P-1)·P -- which is what
  makes a 1,024-member ring cheap to simulate. On a ring with unequal latencies (a few
  WAN hops among LAN hops) the latency term is 2(P-1)/P of the ring's total latency,
  i.e. 2(P-1) consecutive hops on average: what a ring pays whose members forward a
  chunk as soon as they hold it. What it loses: a flow on a fast link finishes early
  and frees its link sooner than a real ring, whose members throttle to the slowest link.
* ``ring_allreduce_stepwise``: the same ring, step by step. A member starts step k once
  it has received step k-1's chunk and its own step k-1 send has *arrived*. 2(P-1)·P
  flows: the reference the pipelined model is tested against for small P; they agree on
  uniform links and with one slow link. Because every step waits for its own send to
  arrive, a member in front of a WAN hop of latency a_w pays a_w at each of the 2(P-1)
  steps, so on multi-region rings it is a pessimistic, synchronous bound (64 workers in
  3 regions, 4 GB: 18.9 s stepwise against 6.76 s pipelined = the alpha-beta value with
  the ring's mean latency).
* ``tree_allreduce``: binomial tree reduce to members[0], then binomial broadcast back.
  Member i's parent is i - lowbit(i). A member sends to its parent once every child's
  data has arrived; in the broadcast it sends to its children one at a time, largest
  subtree first, each after the previous send arrived (the round-based algorithm).
  ``2·ceil(log2 P)·(a + S/B)`` on equal links.
* ``hierarchical_allreduce``: members are grouped by the ``region`` attribute of their
  graph node (a node without one is its own region). Per-shard participants, as in
  INTELLECT-1 and the two-level NCCL algorithm: with K = the smallest region's size,
  (1) members beyond the first K of a region send their S to member ``i mod K`` of it;
  (2) each region's first K members reduce-scatter S (pipelined ring), so member j owns
  shard j of S/K bytes; (3) for each j, the j-th members of all R regions all-reduce
  shard j across the WAN (pipelined ring; the K rings run at once and share the WAN
  links); (4) all-gather inside each region; (5) the first K send the result back to the
  members of step (1). With equal regions of G members step (1)/(5) vanish and the time
  is ``2[(G-1)a_in + (G-1)/G·S/B_in] + 2(R-1)a_net + 2(R-1)/R·(S/G)/B_net``. Phases
  follow each other (no chunk pipelining across phases).
* ``parameter_server``: star around members[0]. Every other member pushes S to it; it
  streams the reduced S back to each (full duplex: replies flow while contributions
  arrive, but a reply's last byte leaves only after every contribution has arrived).
  ``2a + k·S/B`` for k workers behind one server link of bandwidth B.
* ``ring_allgather``: pipelined ring all-gather, S per member; each link carries the other
  P - 1 contributions: ``(P-1)a + (P-1)·S/B`` on uniform links (sparse methods).
* ``exchange``: group exchange for gossip (NoLoCo): every member sends S to every other
  member at once. For a pair, ``a + S/B`` each way (full duplex).

Flows that a collective starts together (a ring phase, an exchange, the extra members'
sends of the hierarchical all-reduce) go through ``Network.transfer_group``, which runs
those with the same route shape as one flow class while they are symmetric: the same
rates, finish times and records as one flow each, at a cost per class, not per member.

A try of a collective can be called off (a member failed: ``sim.engine.sync`` then runs it
again among the members left). Its body runs over an ``Attempt``, a view of the network
that remembers every flow the body starts; ``Attempt.call_off`` cancels them all
(``Network.cancel``: they stop now, their events never fire) and makes every later
``transfer`` of that body a flow that never starts, so a body's processes still waiting on
a phase that will not come stay parked, and none of them sends another byte.

Not modelled: reduction compute time, chunk sizes and protocol overheads (NCCL's
LL/Simple), in-network reduction, retransmission, resuming a called-off collective from the
chunks it had already reduced (it runs again from the start).
Ring order is the member order given (the runner orders workers by region, so a ring
crosses each WAN boundary once per direction).
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from sim.engine.network import Network


class Attempt:
    """The network as one try of a collective sees it (the part of ``Network`` that the
    bodies below use): every flow it starts is remembered so that the try can be called off."""

    def __init__(self, net: Network):
        self.net = net
        self.env = net.env
        self.graph = net.graph
        self.handles: list[simpy.Event] = []
        self.off = False

    def route_latency_s(self, src: str, dst: str) -> float:
        return self.net.route_latency_s(src, dst)

    def ring_latency_s(self, pairs: list[tuple[str, str]]) -> float:
        return self.net.ring_latency_s(pairs)

    def transfer(self, src: str, dst: str, nbytes: float, tag: str = "", **kw) -> simpy.Event:
        if self.off:  # called off: this flow never starts, and its event never fires
            return self.env.event()
        ev = self.net.transfer(src, dst, nbytes, tag, **kw)
        self.handles.append(ev)
        return ev

    def transfer_group(self, pairs: list[tuple[str, str]], nbytes: float, tag: str = "", **kw) -> list[simpy.Event]:
        if self.off:
            return [self.env.event() for _ in pairs]
        evs = self.net.transfer_group(pairs, nbytes, tag, **kw)
        self.handles += evs
        return evs

    def call_off(self) -> float:
        """Cancel every flow this try started that has not arrived; no flow starts after.
        Returns the bytes they had moved."""
        self.off = True
        handles, self.handles = self.handles, []
        return self.net.cancel(*[h for h in handles if not h.triggered])


def _ring_stream(net: Network, ring: list[str], nbytes: float, hops: int, tag: str) -> list[simpy.Event]:
    """Pipelined ring phase of ``hops`` steps over ``ring``: member i streams hops/P·S to
    member i+1; each stream arrives hops/P·(ring latency) after its last byte."""
    p = len(ring)
    if p <= 1 or nbytes <= 0 or hops <= 0:
        return []
    pairs = [(ring[i], ring[(i + 1) % p]) for i in range(p)]
    ring_latency = net.ring_latency_s(pairs)
    per_member = nbytes * hops / p
    latency = ring_latency * hops / p
    return net.transfer_group(pairs, per_member, tag, latency_s=latency)


def _wait(env: simpy.Environment, events: list[simpy.Event]) -> simpy.Event:
    return env.all_of(events) if events else env.timeout(0)


def ring_allreduce(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                   tag: str = "allreduce") -> Generator:
    """SimPy process body: pipelined ring all-reduce of ``nbytes`` over ``members``."""
    yield _wait(env, _ring_stream(net, list(members), nbytes, 2 * (len(members) - 1), tag))


def ring_allreduce_stepwise(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                            tag: str = "allreduce") -> Generator:
    """SimPy process body: ring all-reduce, 2(P-1) explicit steps of one chunk per member."""
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


def _binomial_children(i: int, p: int) -> list[int]:
    """Children of member i in a binomial tree rooted at 0, smallest subtree first."""
    low = i & -i if i else 1 << max(p - 1, 1).bit_length()
    kids = []
    step = 1
    while step < low and i + step < p:
        kids.append(i + step)
        step <<= 1
    return kids


def tree_allreduce(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                   tag: str = "allreduce") -> Generator:
    """SimPy process body: binomial-tree reduce to members[0], then binomial broadcast."""
    p = len(members)
    if p <= 1 or nbytes <= 0:
        yield env.timeout(0)
        return
    reduced = [env.event() for _ in range(p)]  # member i's subtree sum has reached its parent
    has_result = [env.event() for _ in range(p)]

    def member(i: int) -> Generator:
        kids = _binomial_children(i, p)
        if kids:
            yield env.all_of([reduced[c] for c in kids])
        if i:
            yield net.transfer(members[i], members[i - (i & -i)], nbytes, tag)
            reduced[i].succeed()
            yield has_result[i]
        for c in reversed(kids):  # largest subtree first
            yield net.transfer(members[i], members[c], nbytes, tag)
            has_result[c].succeed()

    yield env.all_of([env.process(member(i)) for i in range(p)])


def hierarchical_allreduce(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                           tag: str = "allreduce") -> Generator:
    """SimPy process body: reduce-scatter inside regions, per-shard rings across regions,
    all-gather inside regions (see the module docstring for the five phases)."""
    if len(members) <= 1 or nbytes <= 0:
        yield env.timeout(0)
        return
    by_region: dict[str, list[str]] = {}
    for m in members:
        by_region.setdefault(net.graph.nodes[m].get("region", m), []).append(m)
    groups = list(by_region.values())
    k = min(len(g) for g in groups)
    owners = [g[:k] for g in groups]
    extras = [(g[i], g[i % k]) for g in groups for i in range(k, len(g))]

    yield _wait(env, net.transfer_group(extras, nbytes, tag))
    yield _wait(env, [ev for own in owners for ev in _ring_stream(net, own, nbytes, k - 1, tag)])
    shard = nbytes / k
    r = len(groups)
    yield _wait(env, [ev for j in range(k)
                      for ev in _ring_stream(net, [own[j] for own in owners], shard, 2 * (r - 1), tag)])
    yield _wait(env, [ev for own in owners for ev in _ring_stream(net, own, nbytes, k - 1, tag)])
    yield _wait(env, net.transfer_group([(o, e) for e, o in extras], nbytes, tag))


def parameter_server(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                     tag: str = "allreduce") -> Generator:
    """SimPy process body: members[1:] push to members[0], which streams the sum back."""
    server, workers = members[0], list(members[1:])
    if not workers or nbytes <= 0:
        yield env.timeout(0)
        return
    all_in = env.all_of([net.transfer(w, server, nbytes, tag) for w in workers])
    yield env.all_of([net.transfer(server, w, nbytes, tag, ready=all_in) for w in workers])


def ring_allgather(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
                   tag: str = "allgather") -> Generator:
    """SimPy process body: pipelined ring all-gather; each member contributes ``nbytes`` and
    ends with all P contributions (sparse methods' index + value payloads). Each member's
    link carries the other P - 1 contributions: ``(P-1)a + (P-1)·S/B`` on uniform links."""
    p = len(members)
    yield _wait(env, _ring_stream(net, list(members), nbytes * p, p - 1, tag))


def exchange(env: simpy.Environment, net: Network, members: list[str], nbytes: float,
             tag: str = "exchange") -> Generator:
    """SimPy process body: every member sends ``nbytes`` to every other member at once."""
    if nbytes <= 0:
        yield env.timeout(0)
        return
    yield _wait(env, net.transfer_group([(a, b) for a in members for b in members if a != b], nbytes, tag))


COLLECTIVES: dict[str, Callable[..., Generator]] = {
    "ring_allreduce": ring_allreduce,
    "ring_allreduce_stepwise": ring_allreduce_stepwise,
    "tree_allreduce": tree_allreduce,
    "hierarchical_allreduce": hierarchical_allreduce,
    "parameter_server": parameter_server,
    "ring_allgather": ring_allgather,
    "exchange": exchange,
}

ALLREDUCES = ("ring_allreduce", "ring_allreduce_stepwise", "tree_allreduce", "hierarchical_allreduce",
              "parameter_server")
"""The collectives that leave every member with the mean of all contributions (what ddp and
the DiLoCo family need; a scenario picks one with ``algorithm.collective``)."""
