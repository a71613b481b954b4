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
Every member left out of a collective gets a ``Dropped`` record.

A member that fails (issue 28: no bytes to or from a down node, participants were up):

* after arriving, before its collective started: its arrival no longer counts; the
  collective starts without it (``Dropped`` "down"), as if it had never arrived;
* while its collective is on the wire: the collective re-forms without it. The try under
  way is called off (``collectives.Attempt``: its flows are cancelled where they are, the
  bytes they moved stay counted) and the collective runs again, from the start, among the
  participants left; the failed member gets a ``Dropped`` "down" record at its failure.
  Members that all fail leave a collective with nobody, which completes at once.

This is the dropped-member rule of the DiLoCo papers (DiLoCo's dropped outer gradients:
the average is over the workers whose contributions got through, and a dropped worker goes
on from its own parameters) carried to a failure on the wire, as fault-tolerant
collective libraries do it (PCCL's ``pcclAllReduceMultipleWithRetry`` runs the in-flight
all-reduces that lost a peer again among the peers left). A worker that drops out is not
waited for. So ``on_done`` always receives the members that completed the collective, each
of which was up from its start to its end; everyone who waits for the result is released
when the re-formed collective completes, and a member that failed never waits (its waits
end with its failure). Not modelled: keeping the chunks a broken ring had already reduced
(the try runs again from the start), detecting the failure later than it happens (a real
all-reduce notices at a timeout).

Time between a worker's arrival and ``started`` is waiting for stragglers; between
``started`` and ``done``, communication.

A payload split into parts (layer grain, ``Send.part``) is one collective per part on the
wire, each with its own arrivals, participants and events; ``on_done`` runs once for the
logical collective (``Send.key``), when its last part completes, over the members that
took part in every part, so the numerics see one result whatever the grain; its ``Sync``
record spans the first part's start to the last part's end and counts all their bytes.
"""

from __future__ import annotations

from typing import Callable, Generator

import simpy

from kernels.formats import payload_bytes
from sim.engine.collectives import COLLECTIVES, Attempt
from sim.engine.network import Network
from sim.metrics.records import Dropped, Recorder, Sync


class _Group:
    """A member tuple that hashes once: collectives are keyed by (stream, round, group, part),
    and hashing a 1,024-member tuple at every arrival costs O(P) each, O(P²) a collective."""

    __slots__ = ("members", "_hash")

    def __init__(self, members: tuple):
        self.members = members
        self._hash = hash(members)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, _Group) and self._hash == other._hash
                                 and self.members == other.members)


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
        self._open: dict[tuple, dict] = {}  # by Send.part_key
        self._started: dict[tuple, tuple[simpy.Event, simpy.Event, tuple]] = {}
        self._short: dict[tuple, None] = {}  # finished collectives that ran without some member
        self._live: dict[tuple, int] = {}  # logical key -> its parts open or on the wire
        self._parts: dict[tuple, dict] = {}  # logical key -> parts still to complete, members in all, bytes so far
        self._running: dict[tuple, dict] = {}  # part key -> its try on the wire: participants, attempt, body
        self.reformed = 0  # collectives re-formed after a participant failed on the wire
        # Keys hold a _Group for Send.group: one per distinct group (by value), found by the
        # tuple's identity first (the sends of one collective share their group tuple).
        self._groups: dict[tuple, _Group] = {}
        self._group_by_id: dict[int, tuple[tuple, _Group]] = {}
        self._keys_by_id: dict[int, tuple[object, tuple[tuple, tuple]]] = {}

    def _group(self, members: tuple) -> _Group:
        hit = self._group_by_id.get(id(members))
        if hit is not None and hit[0] is members:
            return hit[1]
        g = self._groups.get(members)
        if g is None:
            g = self._groups[members] = _Group(members)
        if len(self._group_by_id) > 65536:  # keeps the tuples alive: bounded
            self._group_by_id.clear()
        self._group_by_id[id(members)] = (members, g)
        return g

    def _keys(self, send) -> tuple[tuple, tuple]:
        """(logical key, part key) of a send, with its group as a _Group (found by the send's
        identity first: the workers of one collective share its Send when their plans are one)."""
        hit = self._keys_by_id.get(id(send))
        if hit is not None and hit[0] is send:
            return hit[1]
        g = self._group(send.group)
        keys = (send.stream, send.round, g), (send.stream, send.round, g, send.part)
        if len(self._keys_by_id) > 65536:  # (keeps the sends alive: bounded)
            self._keys_by_id.clear()
        self._keys_by_id[id(send)] = (send, keys)
        return keys

    # ------------------------------------------------------------------ membership
    def member_down(self, worker: int) -> None:
        """``worker`` failed or left: open collectives stop waiting for it and forget its
        arrival; a collective on the wire with it re-forms without it (module doc)."""
        self.up[worker] = False
        for r in self._open.values():
            r["arrived"].pop(worker, None)
        now = self.env.now
        for run in self._running.values():
            body = run["body"]
            if worker not in run["participants"] or (body is not None and body.triggered):
                continue  # (a try done in this instant: it took part)
            run["participants"] = tuple(m for m in run["participants"] if m != worker)
            send = run["send"]
            self.recorder.dropped.append(Dropped(worker, self.nodes[worker], send.stream, send.round, now, "down"))
            if body is not None and not run["broken"].triggered:
                run["attempt"].call_off()
                run["broken"].succeed()
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
        """Membership changed: recount whom each open collective waits for (``waiting`` is kept
        exact between changes, so an arrival costs O(1) whatever the group's size)."""
        for key, r in list(self._open.items()):
            r["waiting"] = {m for m in r["send"].group if self._expected(m, r)}
            if not r["waiting"]:
                self._start(key, r)

    def pending(self, key: tuple) -> bool:
        """Whether a part of the logical collective ``key`` is waiting for members or on the wire."""
        stream, round_, group = key
        return self._live.get((stream, round_, self._group(tuple(group))), 0) > 0

    # ------------------------------------------------------------------ arriving
    def arrive(self, send, worker: int, step: int = 0) -> tuple[simpy.Event, simpy.Event]:
        """Worker ``worker`` sends its part of ``send`` at its step ``step``; returns (started, done) events."""
        if send.collective not in COLLECTIVES:
            raise ValueError(f"unknown collective '{send.collective}'; known: {', '.join(COLLECTIVES)}")
        lkey, key = self._keys(send)
        r = self._open.get(key)
        # Membership by a set kept with the open collective: a tuple scan would cost O(group)
        # per arrival, O(P²) per collective of P members.
        if worker not in (r["members"] if r is not None else send.group):
            raise RuntimeError(f"worker {worker} is not in the group {send.group} of {send.stream}:{send.round}")
        if key in self._started or key in self._short:  # late: it ran without this worker
            now = self.env.event()
            now.succeed()
            return now, now
        if r is None:
            r = self._open[key] = {"arrived": {}, "first": self.env.now, "step": step, "send": send,
                                   "started": self.env.event(), "done": self.env.event(),
                                   "members": frozenset(send.group)}
            r["waiting"] = {m for m in send.group if self._expected(m, r)}
            self._live[lkey] = self._live.get(lkey, 0) + 1
            if self.timeout_s is not None:
                self.env.timeout(self.timeout_s).callbacks.append(lambda _e, key=key, r=r: self._timeout(key, r))
        if worker in r["arrived"]:
            raise RuntimeError(f"worker {worker} sent {send.stream}:{send.round} twice")
        r["arrived"][worker] = None  # an ordered set
        r["waiting"].discard(worker)
        started, done = r["started"], r["done"]
        if not r["waiting"]:
            self._start(key, r)
        return started, done

    def _timeout(self, key: tuple, r: dict) -> None:
        if self._open.get(key) is r:
            self._start(key, r)

    def _start(self, key: tuple, r: dict) -> None:
        send = r["send"]
        del self._open[key]
        arrived = r["arrived"]
        participants = tuple(m for m in send.group if m in arrived)
        self._started[key] = (r["started"], r["done"], participants)
        for m in send.group:
            if m in arrived:
                continue
            reason = "down" if not self.up[m] else "rejoined" if r["step"] <= self.skip_until[m] else "late"
            self.recorder.dropped.append(Dropped(m, self.nodes[m], send.stream, send.round, self.env.now, reason))
        r["started"].succeed()
        # on the wire from now on (a member that fails before its process first runs, in this
        # same instant, is left out of its first try already)
        self._running[key] = {"send": send, "participants": participants, "body": None}
        self.env.process(self._run(send, r, key))

    def _run(self, send, r: dict, key: tuple) -> Generator:
        nbytes = payload_bytes(send.elems, send.wire_format)
        lkey = key[:3]
        whole = self._parts.get(lkey)  # the logical collective this part belongs to
        if whole is None:
            whole = self._parts[lkey] = {"left": send.parts, "present": set(send.group), "first": r["first"],
                                             "start": self.env.now, "bytes": 0.0}
        whole["first"] = min(whole["first"], r["first"])
        tag = f"{send.stream}:{send.round}" + (f"/{send.part}" if send.parts > 1 else "")
        run = self._running[key]
        body = COLLECTIVES[send.collective]
        while True:  # one try; again, without those who failed, while a participant fails on the wire
            members = [self.nodes[i] for i in run["participants"]]
            run["attempt"] = attempt = Attempt(self.net)
            run["broken"] = broken = self.env.event()
            run["body"] = done = (self.env.process(body(self.env, attempt, members, nbytes, tag)) if members
                                  else self.env.timeout(0))
            yield done | broken
            if done.triggered:
                break
            self.reformed += 1
        del self._running[key]
        participants = run["participants"]
        whole["left"] -= 1
        whole["present"] &= set(participants)
        whole["bytes"] += nbytes
        if not whole["left"]:  # the last part: the result is complete (one record for the whole payload)
            del self._parts[lkey]
            present = tuple(m for m in send.group if m in whole["present"])
            self.on_done(send, present)
            self.recorder.syncs.append(Sync(send.round, send.collective, len(present), whole["bytes"], whole["first"],
                                            whole["start"], self.env.now, send.stream))
        r["done"].succeed()
        del self._started[key]
        self._live[lkey] -= 1
        if not self._live[lkey]:
            del self._live[lkey]
        if len(participants) < len(send.group):  # someone may still arrive late (only then is the key kept)
            self._short[key] = None
