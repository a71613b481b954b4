"""Round accounting: which completed collectives make up one round of a method.

A round is ``syncs_per_round`` collectives of the same round number (one for DiLoCo, P
fragments for Streaming DiLoCo), or, for methods whose groups differ every round
(``Algorithm.rounds_by_groups``: gossip), every group of that round having synced or no
longer able to. Only sends with ``counts_as_round`` count.
"""

from __future__ import annotations

from typing import Callable

from sim.algorithms.base import Algorithm


class RoundCounter:
    """Counts completed rounds; ``on_round(count, time)`` is called as each one completes.

    ``can_still_sync(group, stream, round, step)``: whether a group that has not synced may
    still do so (its collective is under way, or one of its members is up and before that
    round's step); asked only for gossip rounds, and only when someone may leave.
    """

    def __init__(self, algorithm: Algorithm, syncs_per_round: int, nobody_leaves: bool,
                 can_still_sync: Callable[[tuple, str, int, int], bool], now: Callable[[], float],
                 on_round: Callable[[int], None]):
        self.algorithm, self.syncs_per_round = algorithm, syncs_per_round
        self.nobody_leaves, self.can_still_sync, self.now, self.on_round = nobody_leaves, can_still_sync, now, on_round
        self.rounds = 0
        self.round_end_s: list[float] = []
        self._syncs: dict[int, int] = {}
        self._done: dict[int, set] = {}
        self._counted: set[int] = set()
        self._updates = 0  # methods with servers: worker updates at the top server so far

    def on_sync(self, send) -> None:
        """A collective completed (all of its parts)."""
        if not send.counts_as_round:
            return
        if self.algorithm.rounds_by_groups:  # gossip: groups differ; see check
            if send.round not in self._counted:
                self._done.setdefault(send.round, set()).add(send.group)
            self.check()
            return
        done = self._syncs.get(send.round, 0) + 1
        if done < self.syncs_per_round:
            self._syncs[send.round] = done
            return
        self._syncs.pop(send.round, None)
        self._count()

    def on_updates(self, count: int, per_round: int) -> None:
        """Methods with servers: ``count`` more worker updates reached the top server's model;
        a round is ``per_round`` of them (the number of workers)."""
        self._updates += count
        while self._updates >= per_round * (self.rounds + 1):
            self._count()

    def _count(self) -> None:
        self.rounds += 1
        self.round_end_s.append(self.now())
        self.on_round(self.rounds)

    def check(self) -> None:
        """Gossip rounds: round r is done when each of its groups has synced or can no longer
        sync. A group that syncs after its round was counted does not count again. Called as
        collectives complete and as members go down or come back."""
        if not self.algorithm.rounds_by_groups:
            return
        for r in sorted(self._done):
            stream, groups, step = self.algorithm.round_groups(r)
            done = self._done[r]
            if self.nobody_leaves and len(done) < len(groups):
                continue  # every member stays up: a group is settled only once it has synced
            if all(g in done or not self.can_still_sync(g, stream, r, step) for g in groups):
                del self._done[r]
                self._counted.add(r)
                self._count()
        self._done = {r: v for r, v in self._done.items() if r not in self._counted}
