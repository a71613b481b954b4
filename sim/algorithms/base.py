"""What an algorithm is: a schedule (data, read by the engine) plus its math (numerics).

The schedule's vocabulary (``Send``, ``Need``, ``StepPlan``, ``Message``, ``Served``, ...) is
the contract module ``sim.schedule``, shared with the engine; this module holds the
``Algorithm`` protocol that produces it. The engine asks the schedule one question for
every inner step a worker computes, ``at_step(worker, step) -> StepPlan``, and runs any
such plan -- adding a method never touches the engine.

The math is explicit state plus small ops over it (``init``, ``on_step``, ``on_reduced``,
``global_params``), built from the transforms in ``transforms.py``. Neither part imports
simpy. Ops run lazily in each worker's simulated order (``training.replicas.Numerics``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from sim.schedule import Message, ScheduleInfo, Send, Served, ServerInfo, StepPlan


class Algorithm(ABC):
    """The protocol every method implements, built-in or a user's: the runner calls these
    hooks and nothing else (no attribute probing). A method is constructed as
    ``Method(spec, n_workers, seed)`` (``spec``: its validated scenario section).

    Schedule (data; read by the engine, no tensors):
      ``configure``, ``at_step``, ``quiet_steps``, ``info``, ``round_groups``,
      ``set_liveness``, ``use_step``.
    Math (numerics; explicit state, ops queued in each worker's simulated order):
      ``init``, ``on_step``, ``on_reduced``, ``global_params``, ``diagnostics``,
      ``evaluate_after``.
    Faults: ``on_member_down``, ``on_member_up``, ``recover``.
    Sizes: ``outer_state_copies`` (memory estimate), ``kernels`` (set by the runner).
    Checks before work (class methods over the validated knobs): ``check_fits`` (knobs that do
    not fit the topology or model), ``steps_per_round``, ``warm_steps`` and
    ``events_per_step`` (the work estimate); ``diagnostic_labels`` names what ``diagnostics``
    returns in reports.

    The defaults below are what a method without that concern does; ``at_step``, ``init``,
    ``on_step``, ``on_reduced``, ``global_params`` and ``recover`` have none: they are
    abstract, so a class that lacks one is refused when it is loaded (naming the hooks), never
    halfway through a run.
    """

    outer_state_copies = 0
    """Per-worker copies of the parameters kept besides the replica (memory estimate)."""
    kernels = "auto"
    """Backend of the wire-format and outer-update kernels (``run.kernels``; set by the runner)."""
    info: ScheduleInfo
    """What reports say about the schedule (wire format, collectives per round); set by ``configure``."""

    diagnostic_labels: dict[str, tuple[str, str]] = {}
    """Name of each value ``diagnostics`` returns -> (its label in reports, the axis title with
    its unit); the run carries them to the dashboards."""

    # ------------------------------------------------------------------ checks before work
    @classmethod
    def check_fits(cls, spec, n_workers: int, layers: int | None, layers_field: str | None) -> None:
        """Refuse knobs the user set that do not fit the topology (``n_workers``) or the model
        (``layers``, read from the scenario field ``layers_field``; None when unknown): raise
        ``knobs.FieldError((field,), why)``, located inside the ``algorithm`` section. A
        default that does not fit may be clipped instead. Default: everything fits."""

    @classmethod
    def steps_per_round(cls, spec) -> int:
        """Inner steps of one outer round (``run.max_rounds`` -> steps, for the work estimate)."""
        return getattr(spec, "inner_steps", 1)

    @classmethod
    def warm_steps(cls, spec) -> int:
        """Inner steps before the first round (warm start)."""
        return getattr(spec, "warm_start_steps", 0)

    @classmethod
    def events_per_step(cls, spec, layers: int) -> float:
        """Events one worker's inner step costs the simulation on average, for the work estimate
        before a run (``run.max_events``): the step itself plus every collective part it
        sends, spread over the steps of a round. ``layers``: the timed model's (a timing
        proxy's when there is one). Default: one event a step."""
        return 1.0

    # ------------------------------------------------------------------ schedule
    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        """Learn the parameter layout ((name, elements on the wire) in model order; a timing
        proxy's ``proxy_layers`` when there is one) before the first ``at_step``."""

    @abstractmethod
    def at_step(self, worker: int, step: int) -> StepPlan:
        """What ``worker`` sends during and after its ``step``-th inner step (1-based) and what
        it needs before (or, ``Need.at``, during) the next one."""
        raise NotImplementedError

    def quiet_steps(self, worker: int, step: int) -> int:
        """How many steps from ``step`` on have empty plans, said without drawing anything
        (0: look at every step; the engine may run quiet ones as one event)."""
        return 0

    rounds_by_groups = False
    """True for methods whose groups differ per round (gossip): the runner counts a round once
    each of its ``round_groups`` has synced or can no longer sync. False: a round is
    ``info.syncs_per_round`` completed collectives whose sends count as rounds."""

    def round_groups(self, round_: int) -> tuple[str, list[tuple[int, ...]], int]:
        """(stream, the groups of round ``round_``, the step at which they sync); needed only
        where ``rounds_by_groups``."""
        raise NotImplementedError

    def set_liveness(self, alive) -> None:
        """``alive()`` -> list of bools (worker i up), for methods that draw groups among the
        workers up (noloco's repair). Default: not needed."""

    # ------------------------------------------------------------------ math
    @abstractmethod
    def init(self, replicas):
        """The method's state for these replicas (called once, numerics on)."""
        raise NotImplementedError

    @abstractmethod
    def on_step(self, numerics, state, worker: int, step: int, time_s: float, plan: StepPlan) -> None:
        """``worker`` finished ``step`` at ``time_s`` with ``plan``: queue its inner step and the
        method's ops (contribute, outer step, merge) on the worker's numerics queue."""
        raise NotImplementedError

    @abstractmethod
    def on_reduced(self, numerics, state, send: Send, time_s: float, participants: tuple | None = None) -> list:
        """The engine finished ``send``'s collective (all its parts) over ``participants`` (None:
        the whole group); returns the (worker, step, time, loss) records of steps it ran."""
        raise NotImplementedError

    def evaluate_after(self, records: list, every_steps: int | None) -> int | None:
        """After ``on_reduced`` ran steps (``records``: ddp's, or warm start's), the step at
        which the global model is to be evaluated now, or None: by default the steps' own on
        the ``run.eval_every_steps`` grid (a step that only runs once its all-reduce is done
        is evaluated then, not when worker 0 finished computing it)."""
        if not records or not every_steps:
            return None
        step = records[0][1]
        return step if step % every_steps == 0 else None

    @abstractmethod
    def global_params(self, numerics, state):
        """The parameters evaluated as 'the model'."""
        raise NotImplementedError

    def diagnostics(self, numerics, state) -> dict[str, float]:
        """Extra values recorded at each evaluation (e.g. noloco's spread)."""
        return {}

    # ------------------------------------------------------------------ faults
    # ------------------------------------------------------------------ servers (methods without a barrier)
    @classmethod
    def server_plan(cls, spec, topology) -> list[ServerInfo]:
        """The servers this method runs on, resolved against ``topology`` (its ``servers``
        section and regions): those it names and those it creates (HALoS's per-region ones).
        Raise ``knobs.FieldError((field,), why)`` for a server the topology lacks. Default: none."""
        return []

    def set_servers(self, servers: list[ServerInfo], worker_regions: list[str], step_time_s: list[float]) -> None:
        """Before the run: the servers (``server_plan``), each worker's region and its known seconds
        per inner step (region multiplier x node multiplier; dynamic local updates read them)."""

    def serve(self, server: str, message: Message, time_s: float) -> Served:
        """``message`` has arrived at ``server`` (called in simulated arrival order, after the
        server's apply time): what it does (schedule only: no tensors; the same with numerics off)."""
        raise NotImplementedError(f"{type(self).__name__} has no servers")

    def departed(self, server: str, messages: list[Message], time_s: float) -> None:
        """``messages`` (what ``serve`` said to send, to workers that are up) leave ``server`` now,
        at the end of the instant in which ``serve`` returned them (schedule)."""

    def on_served(self, numerics, state, server: str, message: Message, served: Served, time_s: float) -> None:
        """Numerics of ``serve``: queue the server's math on its own queue, in simulated order."""

    def on_departed(self, numerics, state, server: str, messages: list[Message], time_s: float) -> None:
        """Numerics of ``departed``: queue, on the server's queue, taking the values ``messages`` carry."""

    def on_delivered(self, numerics, state, message: Message, time_s: float) -> None:
        """A server's ``message`` has reached worker ``message.to``: queue its use on the worker's
        queue (before the worker computes again)."""

    def on_dropped(self, numerics, state, message: Message, time_s: float) -> None:
        """``message`` left but is not used: called off on the wire (its worker failed) or it
        reached a worker that no longer waits for it: forget what it carries."""

    def home_server(self, worker: int) -> str | None:
        """The server a worker that comes back fetches the current model from (None: a live peer)."""
        return None

    def rejoined(self, worker: int, server: str, step: int) -> None:
        """Schedule side of a worker's return: it took ``server``'s current model and goes on
        after its step ``step``."""

    def on_member_down(self, state, worker: int) -> None:
        """``worker`` failed: results it has not registered for must not wait for it."""

    def on_member_up(self, state, worker: int, step: int) -> None:
        """``worker`` is back and goes on after engine step ``step``."""

    @abstractmethod
    def recover(self, numerics, state, worker: int, peer: int) -> None:
        """``worker`` fetches ``peer``'s parameters, starting now (queue the copy)."""
        raise NotImplementedError
