"""One-outer-step-overlapped DiLoCo (Kale, Douillard, Donchev 2025, arXiv 2502.12996).

Both variants send round t's pseudo-gradients and go straight on with round t+1's inner
steps, so the all-reduce may take a whole round (H x step time) without stalling anyone.

- ``diloco_delayed`` (the naive variant, as PrimeIntellect's PCCL async DiLoCo does it):
  at the outer step the worker computes its fresh Delta_m(t) against the not-yet-updated
  outer parameters, applies the *previous* round's average,
  theta(t) = OuterOpt(theta(t-H), Delta(t-H)), and restarts from theta(t). In the first
  round nothing has arrived: the outer step is a no-op and local progress is discarded
  (PCCL resets local to the initial outer parameters the same way).
- ``eager_diloco``: as delayed, but each worker swaps its own stale share for its fresh
  one, Delta~_m(t) = Delta(t-H) + (Delta_m(t) - Delta_m(t-H)) / M, so its own last H
  steps count at once. Outer parameters are then per worker and drift slightly apart;
  the largest pairwise distance is reported as 'drift'.

``outer_delay`` = k applies the average of round t-k (k = 0 is DiLoCo exactly). The
primary text of the paper was not available; the rule follows the issue and secondary
summaries (see REFERENCE.md section 3).

Both are shipped as plug-ins (``sim.algorithms.METHODS``): their knobs are the classes' own ``Spec``
and ``algorithm: {name: eager_diloco}`` resolves through the same path as a third party's method.
"""

from __future__ import annotations

from pydantic import Field

from sim.algorithms.diloco import DiLoCo
from sim.algorithms.knobs import Int, OuterMethodSpec
from sim.algorithms.template import SyncRule
from sim.algorithms.transforms import max_pairwise_distance


class DelayedDiLoCoSpec(OuterMethodSpec):
    """One-outer-step delayed DiLoCo (Kale et al. 2025, naive variant): apply the previous round's average."""
    inner_steps: Int = Field(default=30, ge=1, description="H: inner steps per outer step (Eager-updates paper 30).")
    outer_lr: float = Field(default=0.35, gt=0, description="eta, outer learning rate; overlapped variants need a lower one than DiLoCo's 0.7.")
    # outer_momentum and nesterov as DiLoCo's (sim.algorithms.diloco.DiLoCoAlgorithm); collective comes with OuterMethodSpec
    outer_momentum: float = Field(default=0.9, ge=0, lt=1, description="mu, outer Nesterov momentum (DiLoCo default 0.9).")
    nesterov: bool = Field(default=True, description="Nesterov form v = mu v + delta; theta -= lr (delta + mu v). False: heavy ball theta -= lr v.")
    outer_delay: Int = Field(default=1, ge=0, description="k: outer steps between sending a round's pseudo-gradients and applying their average (0 = DiLoCo).")


class EagerDiLoCoSpec(DelayedDiLoCoSpec):
    """Eager DiLoCo (Kale et al. 2025): delayed average plus the worker's own fresh share."""


class DelayedDiLoCo(DiLoCo):
    Spec = DelayedDiLoCoSpec
    sync = SyncRule(every="inner_steps", stream="outer", delay="outer_delay")


class EagerDiLoCo(DelayedDiLoCo):
    Spec = EagerDiLoCoSpec
    eager = True
    outer_rows_differ = True
    diagnostic = ("drift", max_pairwise_distance)
    diagnostic_labels = {"drift": ("eager DiLoCo drift: largest L2 distance between two workers' outer parameters",
                                   "drift (L2 distance, parameter units)")}
