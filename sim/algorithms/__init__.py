"""Algorithm registry: the ``algorithm.name`` of a scenario selects one of these, or a plug-in
(``algorithm.plugin``, or a ``locosim.algorithms`` entry point; see ``plugins``). Methods shipped
as plug-ins (``plugins.PACKAGED``: eager_diloco, diloco_delayed, fedavg, ...) are not listed here."""

from sim.algorithms.ddp import DDP
from sim.algorithms.diloco import DiLoCo
from sim.algorithms.noloco import NoLoCo
from sim.algorithms.streaming import StreamingDiLoCo

ALGORITHMS = {
    "ddp": DDP,
    "diloco": DiLoCo,
    "streaming_diloco": StreamingDiLoCo,
    "noloco": NoLoCo,
}


def algorithm_class(spec) -> type:
    """The class that runs a validated ``algorithm:`` section (a plug-in's when it names one)."""
    plugin = getattr(spec, "plugin", None)
    if plugin is not None:
        from sim.algorithms.plugins import load_method

        return load_method(plugin)
    if spec.name not in ALGORITHMS:
        raise ValueError(f"unknown algorithm '{spec.name}'; known: {', '.join(ALGORITHMS)}")
    return ALGORITHMS[spec.name]


def make_algorithm(spec, n_workers: int, seed: int):
    return algorithm_class(spec)(spec, n_workers, seed)
