"""FedAvg as a plug-in: a complete locosim method in one file, written as a user would.

Every H inner steps the workers average their parameters (McMahan et al. 2017, "federated
averaging" with all clients each round) and go on from the average: no outer optimizer.
It is DiLoCo with outer SGD at learning rate 1 and no momentum (tests/test_plugins.py
checks that limit). Built on the sync template (``sim.algorithms.template``):

- the rule, once: sync every ``inner_steps`` on stream "avg" (per-layer sends and needs,
  ``sync_grain``, ``collective``, warm start and faults come with it);
- the math, as two functions: what a worker contributes, and how it applies the average.

Use it from a scenario (the path is relative to the scenario file)::

    algorithm: {name: fedavg, plugin: fedavg.py:FedAvg, inner_steps: 20}
"""

from __future__ import annotations

from pydantic import Field

from sim.algorithms.knobs import OuterMethodSpec
from sim.algorithms.template import Periodic, SyncRule
from sim.algorithms.transforms import assign, worker_view


class FedAvgSpec(OuterMethodSpec):
    """The knobs a scenario may set (with their defaults and paper symbols)."""
    inner_steps: int = Field(default=20, ge=1, description="H: inner steps between two averagings.")


class FedAvg(Periodic):
    """Every H inner steps the workers average their parameters and go on from the average."""
    Spec = FedAvgSpec
    sync = SyncRule(every="inner_steps", stream="avg")

    def contribution(self, state, worker, params):
        return params  # what a worker sends: its parameters

    def apply(self, state, worker, params, fresh, result):
        if result.took_part:  # a worker left out of the average (down or late) keeps its own
            assign(params, result.mean)
            assign(worker_view(state.outer, worker), result.mean)  # the copy evaluations read


METHOD = FedAvg
