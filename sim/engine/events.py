"""What the engine tells the run: the small, typed set of events a run loop handles.

The engine's entities (workers, the barrier and its servers, the fault model) are built with
callbacks; ``sim.build.assemble`` connects every one of them to one object implementing
``RunEvents`` (``sim.loop.RunLoop``), so what a run reacts to is listed here, once. Nothing
in the engine depends on who implements it.
"""

from __future__ import annotations

from typing import Protocol

from sim.schedule import Message, Send, Served, StepPlan


class RunEvents(Protocol):
    """The run's side of the engine: each method is called at the simulated instant it names."""

    def step_done(self, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        """Worker ``worker`` ended inner step ``step`` at ``time_s``; ``plan`` is what it sent and needs."""

    def quiet_steps(self, worker: int, first: int, ends: list[float]) -> None:
        """Steps ``first``.. of a quiet stretch (empty plans, timing-only) ended at ``ends``."""

    def sync_done(self, send: Send, participants: tuple | None = None) -> None:
        """A collective (all its parts) completed; ``participants``: who took part when not all of ``send.group``."""

    def member_down(self, worker: int) -> None:
        """A worker failed (or left): it computes and sends nothing until it is back."""

    def member_up(self, worker: int) -> None:
        """A returning worker has fetched its parameters and computes again."""

    def fetch(self, worker: int, peer: int | str | None, step: int) -> None:
        """A returning worker starts fetching ``peer``'s parameters (a worker index, a server's
        name, or None: nobody is up, it keeps its own) and will go on after ``step``."""

    def served(self, server: str, message: Message, served: Served, time_s: float) -> None:
        """A server handled one arrival (methods with servers)."""

    def departed(self, server: str, messages: list[Message], time_s: float) -> None:
        """A server's answers left it (they carry the server's values now)."""

    def delivered(self, message: Message, time_s: float) -> None:
        """A server's payload reached its receiver."""

    def dropped(self, message: Message, time_s: float) -> None:
        """A payload that left is not used (its receiver is down, or it answers a send made before a failure)."""
