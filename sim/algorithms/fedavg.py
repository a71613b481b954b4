"""FedAvg with islands (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks
from Decentralized Data", arXiv 1602.05629), shipped as a plug-in (``sim.algorithms.METHODS``).

Update rule. Every H inner steps (``inner_steps``) the workers are split into islands of n
(``island_size``; default: all workers) by a fresh permutation drawn from the named stream
``fedavg/islands/<round>``; each island averages its members' parameters and every member
goes on from that average:

    theta_m <- (1/|I|) sum_{j in I} theta_j        for each island I and each m in I

There is no outer optimizer (federated averaging with every client taking part each round:
C = 1, E local epochs = H local steps). Island size = all workers is plain parameter
averaging, which is DiLoCo with outer SGD at lr 1 and no momentum (theta - 1 x mean(theta -
theta_m) = mean theta_m; tests/test_family_sparse.py checks it). With several islands each
island is its own collective (``group`` = the island): only its members wait for each other,
as in NoLoCo's gossip, and the model evaluated is the mean of the workers' parameters.

The nearest peer (EXO Gym's ``FedAvgStrategy``) names the same knobs ``H`` and ``island_size``;
its default H is 1, ours 20 (the example plug-in's). Inner optimizer state is each worker's own.

Faults: a member that is down (or late, with ``sync_timeout_s``) is left out of its island's
average and keeps its own parameters; the others average over those present. A worker that
comes back takes a live peer's parameters.

Timing: at ``sync_grain: layer`` (default) each layer's share of the parameters leaves as soon
as its backward is done at the averaging step and the next step waits only at the forward of
a layer still on the wire; ``step``: one all-reduce after the step. The math is the same.
"""

from __future__ import annotations

from pydantic import Field

from sim.algorithms.common import split_into_groups
from sim.algorithms.knobs import FieldError, OuterMethodSpec, WireDtype
from sim.algorithms.template import Periodic, Result, SyncRule
from sim.algorithms.transforms import Tree, assign, worker_view
from sim.rng import rng as named_rng
from sim.schedule import ScheduleInfo


class FedAvgSpec(OuterMethodSpec):
    """FedAvg's knobs (paper symbols)."""
    inner_steps: int = Field(default=20, ge=1, description="H: inner steps between two averagings (EXO Gym's H).")
    island_size: int | None = Field(default=None, ge=1, description=(
        "n: workers per island, re-drawn every round from the stream fedavg/islands/<round> (the last island "
        "takes the remainder when n does not divide the workers); null = all workers (plain parameter averaging)."))
    payload_dtype: WireDtype = Field(default="fp32", description=(
        "Wire format of the parameters each worker sends, averaged in fp32 (see kernels/formats.py)."))


class FedAvg(Periodic):
    Spec = FedAvgSpec
    sync = SyncRule(every="inner_steps", stream="avg")
    group_stream = "avg"

    @classmethod
    def check_fits(cls, spec, n_workers: int, layers: int | None, layers_field: str | None) -> None:
        """Islands larger than the workers are refused (not clipped), as noloco's groups are."""
        if spec.island_size is not None and spec.island_size > n_workers:
            raise FieldError(("island_size",), f"must be <= the number of workers ({n_workers}) "
                                               f"(got {spec.island_size})")

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.n = min(spec.island_size or n_workers, n_workers)
        self.info = ScheduleInfo(wire_format=spec.payload_dtype, syncs_per_round=-(-n_workers // self.n))
        # islands differ per round (and per worker): count rounds by groups; evaluate the workers' mean
        self.rounds_by_groups = self.n < n_workers
        self.outer_rows_differ = self.n < n_workers
        self._islands: dict[int, dict[int, tuple[int, ...]]] = {}

    def groups(self, round_: int) -> dict[int, tuple[int, ...]]:
        """Worker -> its island (sorted worker indices) in round ``round_``."""
        g = self._islands.get(round_)
        if g is None:
            if self.n >= self.n_workers:
                g = {w: self.everyone for w in self.everyone}
            else:
                perm = named_rng(self.seed, f"fedavg/islands/{round_}").permutation(self.n_workers).tolist()
                g = split_into_groups(perm, self.n)
            self._islands[round_] = g
            self._islands.pop(round_ - 4, None)  # a re-draw gives the same islands
        return g

    def group_of(self, round_: int, worker: int) -> tuple[int, ...]:
        return self.groups(round_)[worker]

    # ------------------------------------------------------------------ math
    def contribution(self, state, worker: int, params: Tree) -> Tree:
        return params  # its parameters, averaged over its island

    def apply(self, state, worker: int, params: Tree, fresh: Tree, result: Result) -> None:
        if result.took_part:
            assign(params, result.mean)
            assign(worker_view(state.outer, worker), result.mean)
        else:  # left out of it: keep its own parameters; its row of the evaluated mean follows them
            assign(worker_view(state.outer, worker), params)
