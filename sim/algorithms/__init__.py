"""Algorithm registry: the ``algorithm.name`` of a scenario selects one of these."""

from sim.algorithms.ddp import DDP
from sim.algorithms.diloco import DiLoCo

ALGORITHMS = {"ddp": DDP, "diloco": DiLoCo}


def make_algorithm(spec):
    if spec.name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm '{spec.name}'; known: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[spec.name](spec)
