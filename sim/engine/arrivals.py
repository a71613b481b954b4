"""How flows end: the timer that waits for the earliest finish time, flows (and flow
classes' members) leaving the books and arriving one latency later with their records and
done events, and flows called off (``cancel``). ``Arrivals`` is a part of
``sim.engine.network.Network`` (a base class of it, over the same state).
"""

from __future__ import annotations

import heapq
import math

import simpy

from sim.engine.flow import Flow
from sim.metrics.records import Transfer

_INF = math.inf


def _start(item: tuple) -> int:
    return item[0]


def _seq(f: Flow) -> int:
    return f.seq


class Arrivals:
    """The finishing side of ``Network`` (see the module docstring)."""

    def _arm(self, t: float | None = None) -> None:
        """Make sure a timer waits for the earliest finish time.

        The armed timer is never later than any finish time (it is set to the earliest,
        and flows only leave or get new finish times), so after a recomputation the
        earliest of the finish times that changed (``t``) decides; after the timer fired,
        all are looked at (``t`` None).
        """
        if t is None:
            heap = self._finish_heap
            while heap and heap[0][2] != heap[0][3].version:
                heapq.heappop(heap)
            t = heap[0][0] if heap else _INF
            if self._in_arrays:
                t = min(t, float(self._finish[:self._hi].min()))  # a free slot's is inf (all above _hi are free)
        if t < self._timer_at:
            self._timer_at = t
            timer = self.env.timeout(max(t - self.env.now, 0.0))
            timer.callbacks.append(self._on_timer)
            self._timer_event = timer

    def _on_timer(self, event: simpy.Event) -> None:
        now = self.env.now
        # Compare the event, not the time: now + (t - now) can round to just below t, and a
        # timer that fired without clearing _timer_at would stop _arm from ever re-arming.
        fired = event is self._timer_event
        if fired:
            self._timer_at = _INF
            self._timer_event = None
        # Flows due within a relative 1e-12 of now finish together, in start order: equal
        # flows whose finish times differ only by rounding cost one recomputation, not
        # several, and leave in one order whether their rates were found flow by flow (where
        # a link popped after another of the same share can get that share's last ulp) or as
        # one flow class.
        horizon = now + 1e-12 * max(1.0, abs(now))
        due: list[Flow] = []
        heap = self._finish_heap
        while heap and heap[0][0] <= horizon:
            _, _, version, f = heapq.heappop(heap)
            if version == f.version:
                due.append(f)
        if self._in_arrays:
            slots = (self._finish[:self._hi] <= horizon).nonzero()[0]
            if slots.size:
                flows = self._slot_flow
                due.extend([flows[s] for s in slots.tolist()])
        if len(due) > 1:
            due.sort(key=_seq)
        classes = self._classes and any(f.members is not None for f in due)
        self._epoch += 1
        for f in due:
            # A symmetric class leaves the same users on every link of a hop: one link per hop
            # reaches them all (asked while its fingerprint is still on the links).
            reps = {h[0] for h in f.hops} if f.members is not None and self._symmetric(f) else None
            self._leave(f, reps)
            if not classes:
                self._deliver(f)
        if classes:
            self._deliver_all(due)
        if self._dirty_flows or self._dirty_links:
            self._flush(timer_fired=fired)
        else:
            if fired:
                self._arm()
            self._log_rates()

    def _deliver_all(self, due: list) -> None:
        """Deliver due flows and flow classes' members in the order their own flows would be
        (start order): plain flows one by one, and each run of class members with
        one latency through one timer (back-to-back timers at one instant run back to back,
        so the records, the bytes and the done events come in the same order)."""
        link_bytes, sent, received = self.link_bytes, self.sent_bytes, self.received_bytes
        by_id = self._links_by_id
        if len(due) == 1 and due[0].members is not None:  # one class (a ring's LAN hops): members in start order
            f = due[0]
            size = f.size
            for src, dst, path, ids, seq in f.members:
                for l in ids:
                    link_bytes[by_id[l]] += size
                sent[src] += size
                received[dst] += size
            self._landing[f] = None  # (landing until its last member is in: cancel finds it here)
            self._arrive_later([(f, m) for m in f.members], f.latency_s)
            return
        items = []
        for f in due:
            if f.members is None:
                items.append((f.seq, f, None))
            else:
                self._landing[f] = None
                items.extend((m[4], f, m) for m in f.members)
        items.sort(key=_start)
        run: list = []
        run_latency = None
        for _, f, m in items:
            if m is None:
                if run:
                    self._arrive_later(run, run_latency)
                    run = []
                self._deliver(f)
                continue
            src, dst, path, ids, seq = m
            size = f.size
            for l in ids:
                link_bytes[by_id[l]] += size
            sent[src] += size
            received[dst] += size
            if run and f.latency_s != run_latency:
                self._arrive_later(run, run_latency)
                run = []
            run_latency = f.latency_s
            run.append((f, m))
        if run:
            self._arrive_later(run, run_latency)

    def _route_text(self, path: list[str]) -> str:
        """A route as its transfer records write it (``a>b>c``), joined once per route list (the
        route cache's lists are shared by every flow over that route)."""
        hit = self._route_texts.get(id(path))
        if hit is not None and hit[0] is path:
            return hit[1]
        if len(self._route_texts) > 65536:  # keeps the lists alive: bounded
            self._route_texts.clear()
        text = ">".join(path)
        self._route_texts[id(path)] = (path, text)
        return text

    def _arrive_later(self, run: list, latency_s: float) -> None:
        """Class members whose last byte left now arrive ``latency_s`` later: their records,
        and each class's done event once its last member is in."""
        def arrive(_event: simpy.Event) -> None:
            now = self.env.now
            transfers = self.recorder.transfers
            text = self._route_text
            for f, (src, dst, path, ids, seq) in run:
                if f.cancelled:
                    continue
                transfers.append(Transfer(src, dst, f.size, f.start_s, now, f.tag, text(path)))
                f.arrived += 1
                if f.arrived == len(f.members):
                    del self._landing[f]
                    f.done.succeed(f)

        self.env.timeout(latency_s).callbacks.append(arrive)

    def _deliver(self, flow: Flow) -> None:
        """The last byte has left: account its bytes now, deliver it one latency later."""
        flow.remaining = 0.0
        flow.rate = 0.0
        for l in flow.links:
            self.link_bytes[l] += flow.size
        self.sent_bytes[flow.src] += flow.size
        self.received_bytes[flow.dst] += flow.size
        self._landing[flow] = None

        def arrive(_event: simpy.Event) -> None:
            if flow.cancelled:
                return
            del self._landing[flow]
            self.recorder.transfers.append(Transfer(
                flow.src, flow.dst, flow.size, flow.start_s, self.env.now, flow.tag, ">".join(flow.route)))
            owner = flow.owner
            if owner is None:
                flow.done.succeed(flow)
            else:  # a member split off a class: the class is done with its last member
                owner.arrived += 1
                if owner.arrived == len(owner.members):
                    owner.done.succeed(owner)

        def send_last_byte(_event: simpy.Event | None = None) -> None:
            self.env.timeout(flow.latency_s).callbacks.append(arrive)

        ready = flow.ready
        if ready is not None and ready.callbacks is not None:  # not processed yet: wait for it
            ready.callbacks.append(send_last_byte)
        else:
            send_last_byte()

    def _leave(self, f: Flow, reps: set | None = None) -> None:
        """``f`` leaves the network's books (it finished, or was called off): the class and member
        counts, its rate-log counts and link fingerprints, its links' users (the links it shared
        are marked for re-rating; with ``reps``, a symmetric class's one link per hop) and its slot."""
        del self._flows[f]
        if f.members is not None:
            self._classes -= 1
            self._members -= len(f.members)
            if f.q:
                self._count_rate(f, -f.q)
            self._fp[f.fp_ids] -= f.fp_add
        else:
            self._members -= 1
            pu = self._plain_users
            for l in f.link_ids:
                pu[l] -= 1
            q = int(self._q[f.slot]) if f.in_arrays else f.q
            if q:
                self._count_rate(f, -q)
        f.version += 1
        self._unslotted.pop(f, None)
        self._unsynced.pop(f, None)
        lf = self._link_flows
        for l in f.link_ids:
            users = lf[l]
            del users[f]
            if users and (reps is None or l in reps):
                self._dirty_links[l] = None
        if f.slot >= 0:
            self._free_slot(f.slot)

    def cancel(self, *handles: simpy.Event) -> float:
        """Call off, now, the flows behind ``handles`` (events that ``transfer`` or
        ``transfer_group`` returned; a class's event stands for all its members); returns the
        bytes they had moved (summed over members).

        A flow still sending leaves its links at once (the flows that shared them are re-rated
        in this instant's recomputation, as when a flow finishes); one whose last byte has left
        but has not arrived (route latency, or a ``ready`` it waits for) stops there. Either
        way it is never delivered: its event never fires. The bytes it moved stay counted on
        its links and at both ends (``link_bytes``, ``sent_bytes``, ``received_bytes``: the
        fluid model has no bytes in the pipe to lose) and it is recorded as a ``Transfer`` of
        those bytes that ends now (none when it had moved nothing). Handles whose flows have
        arrived or were called off already are ignored. Cost: one pass over the active and
        landing flows, whatever the number of handles.
        """
        want = set(handles)
        if not want:
            return 0.0
        now = self.env.now
        transfers = self.recorder.transfers
        total = 0.0
        hit = [f for f in self._flows if f.done in want]
        if hit:
            self._epoch += 1  # links lose users: earlier symmetry answers no longer hold
        for f in hit:
            # bytes each member still had to send, as of now
            if f.in_arrays:
                s_ = f.slot
                rate, left, since = float(self._rate[s_]), float(self._remaining[s_]), float(self._updated[s_])
            else:
                rate, left, since = f.rate, f.remaining, f.updated_s
            if 0 < rate < _INF and now > since:
                left -= rate * (now - since)
            elif rate == _INF:
                left = 0.0
            moved = f.size - min(max(left, 0.0), f.size)
            if f.members is not None:
                ends = [(m[0], m[1], m[2], m[3]) for m in f.members]
            else:
                ends = [(f.src, f.dst, f.route, f.link_ids)]
            self._leave(f)  # the bookkeeping of a finish (_on_timer), without the delivery
            f.cancelled = True
            self._dirty_flows.pop(f, None)
            self.flows_cancelled += len(ends)
            if moved > 0:
                by_id = self._links_by_id
                for src, dst, path, ids in ends:
                    for l in ids:
                        self.link_bytes[by_id[l]] += moved
                    self.sent_bytes[src] += moved
                    self.received_bytes[dst] += moved
                    transfers.append(Transfer(src, dst, moved, f.start_s, now, f.tag, ">".join(path)))
                total += moved * len(ends)
        for f in [f for f in self._landing if f.done in want]:
            del self._landing[f]
            f.cancelled = True
            # its bytes were counted when its last byte left; the members yet to arrive end now
            left = [(f.src, f.dst, f.route)] if f.members is None else [m[:3] for m in f.members[f.arrived:]]
            self.flows_cancelled += len(left)
            for src, dst, path in left:
                transfers.append(Transfer(src, dst, f.size, f.start_s, now, f.tag, ">".join(path)))
            total += f.size * len(left)
        if hit:
            self._request_flush()
            self._log_rates()
        return total
