"""The one registry of methods: ``algorithm.name`` -> the class that runs it.

Every method is a class with its knobs beside it (``Spec``, a pydantic section) in one module.
``METHODS`` lists the methods shipped with locosim as 'module:Class' (loaded when first
asked for); installed packages add theirs under the ``locosim.algorithms`` entry point, and a
scenario may name a file or module of its own (``algorithm.plugin``). The scenario's
``algorithm:`` section and its JSON schema are generated from here: a method whose ``Spec``
is a plain section (not a ``knobs.MethodSpec``) is one of the schema's own choices, the
others are validated by their ``Spec`` on the plug-in path. Adding a built-in method is one
module plus one line here.
"""

from __future__ import annotations

METHODS: dict[str, str] = {
    "ddp": "sim.algorithms.ddp:DDP",
    "diloco": "sim.algorithms.diloco:DiLoCo",
    "streaming_diloco": "sim.algorithms.streaming:StreamingDiLoCo",
    "noloco": "sim.algorithms.noloco:NoLoCo",
    "diloco_delayed": "sim.algorithms.eager:DelayedDiLoCo",
    "eager_diloco": "sim.algorithms.eager:EagerDiLoCo",
    "fedavg": "sim.algorithms.fedavg:FedAvg",
    "sparta": "sim.algorithms.sparta:SPARTA",
    "sparta_diloco": "sim.algorithms.sparta:SPARTADiLoCo",
    "demo": "sim.algorithms.demo:DeMo",
    "async_local_sgd": "sim.algorithms.async_local_sgd:AsyncLocalSGD",
    "halos": "sim.algorithms.halos:HALoS",
    "fedbuff": "sim.algorithms.fedbuff:FedBuff",
}
"""Every method shipped with locosim: name -> 'module:Class' (resolved like an entry point)."""

ENTRY_POINT_GROUP = "locosim.algorithms"


def registered() -> dict[str, str]:
    """Method name -> 'module:Class': the shipped ones (``METHODS``) and every installed
    package's ``locosim.algorithms`` entry points (which may not replace a schema section)."""
    from importlib.metadata import entry_points as eps

    sections = section_names()
    installed = {ep.name: ep.value for ep in eps(group=ENTRY_POINT_GROUP) if ep.name not in sections}
    return {**METHODS, **installed}


def method_class(ref: str) -> type:
    """The method class a resolved reference ('module:Class', FILE.py[:Class]) names, checked
    against the protocol (``plugins.check_method``); loaded once per process."""
    from sim.algorithms.plugins import load_method

    return load_method(ref, shipped=ref in METHODS.values())


_SECTIONS: dict[str, type] = {}


def sections() -> dict[str, type]:
    """Name -> knobs section of the shipped methods whose section is part of the scenario
    schema itself (a ``Spec`` that is not a ``MethodSpec``): the ``algorithm`` union's members."""
    if not _SECTIONS:
        from sim.algorithms.knobs import MethodSpec

        for name, ref in METHODS.items():
            spec = method_class(ref).Spec
            if not issubclass(spec, MethodSpec):
                _SECTIONS[name] = spec
    return dict(_SECTIONS)


def section_names() -> tuple[str, ...]:
    return tuple(sections())


def algorithm_class(spec) -> type:
    """The class that runs a validated ``algorithm:`` section (a plug-in's when it names one)."""
    plugin = getattr(spec, "plugin", None)
    if plugin is not None:
        return method_class(plugin)
    ref = METHODS.get(spec.name) or registered().get(spec.name)
    if ref is None:
        raise ValueError(f"unknown algorithm '{spec.name}'; known: {', '.join(registered())}")
    return method_class(ref)


def make_algorithm(spec, n_workers: int, seed: int):
    return algorithm_class(spec)(spec, n_workers, seed)
