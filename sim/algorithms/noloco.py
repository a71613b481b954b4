"""NoLoCo (Kolehmainen et al. 2025, arXiv 2506.10911; reference code gensyn-ai/noloco).

No all-reduce. Every ``inner_steps`` (default 50) the workers are split into groups of
n (default 2) by a fresh permutation drawn from the named stream ``noloco/groups/<round>``;
within a group every worker sends its outer gradient theta - phi (fast minus slow: the
opposite sign to DiLoCo) and its slow weights phi to the others (``exchange``: 2 x the
model per worker, each way). Then each worker i updates
  delta_i = alpha delta_i + beta mean_j(theta_j - phi_j) - gamma (phi_i - mean_j phi_j)
  phi_i <- phi_i + delta_i ;  theta_i <- phi_i
with alpha (momentum) 0.5, beta (outer lr) 0.7, gamma 0.7. The printed paper equation
has the beta term's sign flipped; the authors' code uses +beta as here. With the group
equal to all workers the gamma term vanishes and this is DiLoCo with heavy-ball
momentum (lr beta, momentum alpha). Only the group waits for its members: no global
barrier, so a straggler slows only its partners. A group of one (odd worker counts)
takes its outer step alone. The spread of slow weights across workers (RMS over
elements of the std across workers) is reported as 'spread'.

Faults (issue 4): only the group waits for its members. A member that is down (or late,
with ``sync_timeout_s``) is left out; ``dead_partner: skip`` -- a worker left alone in a
group of several, or left out itself, skips that outer step and keeps its own params and
slow weights. ``repair``: each round's groups are drawn among the workers that are up
when the first worker reaches the round (those down get a group of their own); a member
that fails after the draw is skipped as above.

Timing: at ``sync_grain: layer`` (default) each layer's share of the exchange leaves as
soon as that layer's backward is done at the outer step, and the next step waits only
at the forward of a layer whose exchange is still on the wire; ``step``: one exchange
after the step, and the whole next step waits for it.

Not modelled: NoLoCo's random pipeline routing of the inner steps (we train full
replicas, no pipeline stages).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from sim.algorithms.common import split_into_groups
from sim.algorithms.knobs import FieldError, Int, OuterKnobs
from sim.algorithms.template import Periodic, Result, SyncRule
from sim.algorithms.transforms import Tree, assign, spread, tree_sub, worker_view
from sim.rng import rng as named_rng
from sim.schedule import ScheduleInfo, StepPlan, layered_send, sync_bytes


class NoLoCoAlgorithm(OuterKnobs):
    """NoLoCo (Kolehmainen et al. 2025): no all-reduce; random groups exchange and pull together."""
    name: Literal["noloco"] = "noloco"
    inner_steps: Int = Field(default=50, ge=1, description="Inner steps between outer (gossip) steps (NoLoCo 50).")
    outer_lr: float = Field(default=0.7, gt=0, description="beta: weight of the group-mean outer gradient (NoLoCo 0.7).")
    outer_momentum: float = Field(default=0.5, ge=0, lt=1, description="alpha: momentum of the outer update (NoLoCo 0.5).")
    gamma: float = Field(default=0.7, ge=0, description="gamma: pull of a worker's slow weights toward its group mean (NoLoCo 0.7).")
    group_size: Int = Field(default=2, ge=1, description="n: workers per gossip group, re-drawn each outer step (NoLoCo 2).")
    collective: Literal["exchange", "ring_allgather"] = Field(default="exchange", description=(
        "How a group shares its payloads: exchange (every member sends to every other at once) or "
        "ring_allgather (around a ring)."))
    dead_partner: Literal["skip", "repair"] = Field(default="skip", description=(
        "When a group member is down (or timed out): skip = the others skip that outer step and keep their own "
        "params; repair = each round's groups are drawn among the workers up when the first worker reaches it "
        "(a member that fails after the draw is still skipped)."))


class NoLoCo(Periodic):
    Spec = NoLoCoAlgorithm
    sync = SyncRule(every="inner_steps", stream="gossip", copies=2)  # pseudo-gradient and slow weights
    outer_rows_differ = True  # slow weights per worker: the model is their mean
    rounds_by_groups = True  # groups are re-drawn every round
    diagnostic = ("spread", spread)
    diagnostic_labels = {"spread": ("NoLoCo spread: RMS over parameters of the std of slow weights across workers",
                                    "spread (RMS std across workers, parameter units)")}

    @classmethod
    def check_fits(cls, spec, n_workers: int, layers: int | None, layers_field: str | None) -> None:
        """A group larger than the workers is refused when the user set it (the default 2 is
        clipped on one worker)."""
        if spec.group_size > n_workers and "group_size" in spec.model_fields_set:
            raise FieldError(("group_size",), f"must be <= the number of workers ({n_workers}) (got {spec.group_size})")

    @classmethod
    def peers_per_part(cls, spec) -> int:
        return max(1, spec.group_size - 1)  # each member sends to every other (exchange)

    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.warm_collective = "ring_allreduce"  # warm start's ddp steps (the gossip collective is not an all-reduce)
        self.n = min(spec.group_size, n_workers)
        self.info = ScheduleInfo(wire_format=spec.payload_dtype,
                                 syncs_per_round=-(-n_workers // self.n))
        self._groups: dict[int, dict[int, tuple[int, ...]]] = {}
        self.repair = getattr(spec, "dead_partner", "skip") == "repair"
        self._alive = None

    def configure(self, layout: list[tuple[str, int]], proxy_layers: int | None = None) -> None:
        super().configure(layout, proxy_layers)  # parts: 2 x each layer (pseudo-gradient and slow weights)
        during, sends = layered_send("gossip", 0, (0,), self.parts, self.layers, self.spec.payload_dtype,
                                     self.spec.collective, grain=self.spec.sync_grain)
        self.info = ScheduleInfo(wire_format=self.spec.payload_dtype, syncs_per_round=self.info.syncs_per_round,
                                 payload_bytes=sync_bytes(StepPlan(during=during, sends=sends)))

    def set_liveness(self, alive) -> None:
        """``alive()`` -> list of bools, worker i up (the engine's view; used by repair)."""
        self._alive = alive

    def groups(self, round_: int) -> dict[int, tuple[int, ...]]:
        """Worker -> its group (sorted worker indices) in outer round ``round_``."""
        g = self._groups.get(round_)
        if g is None:
            perm = named_rng(self.seed, f"noloco/groups/{round_}").permutation(self.n_workers).tolist()
            down: list[int] = []
            if self.repair and self._alive is not None:
                up = self._alive()
                down = [w for w in perm if not up[w]]
                perm = [w for w in perm if up[w]]
            g = split_into_groups(perm, self.n)
            g.update({w: (w,) for w in down})
            self._groups[round_] = g
            if not self.repair:  # a re-draw gives the same groups; repaired ones depend on when they were drawn
                self._groups.pop(round_ - 4, None)
        return g

    def group_of(self, round_: int, worker: int) -> tuple[int, ...]:
        return self.groups(round_)[worker]

    # ------------------------------------------------------------------ math
    def contribution(self, state, worker: int, params: Tree) -> Tree:
        phi = worker_view(state.outer, worker)
        g = tree_sub(params, phi)
        # one payload of 2 x the model (what payload_bytes counts): g then phi
        return {**{("g", k): v for k, v in g.items()}, **{("phi", k): v for k, v in phi.items()}}

    def apply(self, state, worker: int, params: Tree, fresh: Tree, result: Result) -> None:
        if not result.took_part or (result.present == 1 and result.group > 1):
            return  # partner down or late: skip this outer step
        s, mean = self.spec, result.mean
        phi = worker_view(state.outer, worker)
        delta = worker_view(state.momentum, worker)
        new_delta = {k: s.outer_momentum * delta[k] + s.outer_lr * mean[("g", k)]
                     - s.gamma * (phi[k] - mean[("phi", k)]) for k in phi}
        new_phi = {k: phi[k] + new_delta[k] for k in phi}
        assign(delta, new_delta)
        assign(phi, new_phi)
        assign(params, new_phi)
