"""Algorithm registry: the ``algorithm.name`` of a scenario selects one of these."""

from sim.algorithms.ddp import DDP
from sim.algorithms.diloco import DiLoCo
from sim.algorithms.eager import DelayedDiLoCo, EagerDiLoCo
from sim.algorithms.noloco import NoLoCo
from sim.algorithms.streaming import StreamingDiLoCo

ALGORITHMS = {
    "ddp": DDP,
    "diloco": DiLoCo,
    "streaming_diloco": StreamingDiLoCo,
    "diloco_delayed": DelayedDiLoCo,
    "eager_diloco": EagerDiLoCo,
    "noloco": NoLoCo,
}


def make_algorithm(spec, n_workers: int, seed: int):
    if spec.name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm '{spec.name}'; known: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[spec.name](spec, n_workers, seed)
