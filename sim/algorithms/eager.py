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
"""

from __future__ import annotations

from sim.algorithms.diloco import DiLoCo
from sim.algorithms.transforms import max_pairwise_distance


class DelayedDiLoCo(DiLoCo):
    def __init__(self, spec, n_workers: int, seed: int):
        super().__init__(spec, n_workers, seed)
        self.delay = spec.outer_delay


class EagerDiLoCo(DelayedDiLoCo):
    eager = True
    outer_rows_differ = True
    diagnostic = ("drift", max_pairwise_distance)
