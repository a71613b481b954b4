"""A user's method as a plug-in: one Python file (or an installed module), no edit of locosim.

A scenario names it in its ``algorithm:`` section::

    algorithm: {name: fedavg, plugin: methods/fedavg.py:FedAvg, inner_steps: 20}   # a file, relative to the scenario
    algorithm: {name: fedavg, plugin: mypkg.methods:FedAvg}                        # an importable module
    algorithm: {name: fedavg}        # a package that registers it under the `locosim.algorithms` entry point

The class implements ``sim.algorithms.base.Algorithm`` (usually by subclassing it, or
``sim.algorithms.common.OuterMethod`` for a DiLoCo-like method) and declares its knobs as a
pydantic model ``Spec``, a subclass of ``sim.algorithms.knobs.MethodSpec``: the scenario's
knobs are validated by it, with the same one-line errors as built-in knobs, and ``--set
algorithm.KNOB=...`` works on them. ``FILE.py`` without ``:Class`` takes the module's
``METHOD``. Files and modules are loaded by ``sim.loader`` (as models and data are); the
methods shipped with locosim are listed in the registry (``sim.algorithms.METHODS``).
Imports neither torch nor simpy (the plug-in module may import torch inside its math, as
the built-ins do), nor the scenario schema.
"""

from __future__ import annotations

from sim.loader import PluginError, load_object, resolve_ref  # noqa: F401  (the plug-in API)

REQUIRED_HOOKS = ("configure", "at_step", "init", "on_step", "on_reduced", "global_params")

_LOADED: dict[str, type] = {}


def load_method(ref: str, shipped: bool = False) -> type:
    """The method class a resolved reference names, checked against the protocol; ``shipped``:
    the registry lists it (``sim.algorithms.METHODS``), so its knobs may be a schema section."""
    if ref in _LOADED:
        return _LOADED[ref]
    cls = load_object(ref, default="METHOD")
    check_method(cls, shipped=shipped, name=_shown(ref))
    _LOADED[ref] = cls
    return cls


def _shown(ref: str) -> str:
    """A reference as messages show it: FILE.py[:Class] by its file name, a module's as it is."""
    path, _, name = ref.partition(":")
    if path.endswith(".py"):
        path = path.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{path}:{name}" if name else path


def abstract_hooks(cls) -> dict[str, str]:
    """Hook -> the base that declares it, for every abstract hook ``cls`` does not implement."""
    out = {}
    for hook in sorted(getattr(cls, "__abstractmethods__", ())):
        owner = next((c for c in cls.__mro__ if getattr(c.__dict__.get(hook), "__isabstractmethod__", False)), cls)
        out[hook] = f"{owner.__module__}.{owner.__qualname__}"
    return out


def check_method(cls, shipped: bool = False, name: str | None = None) -> None:
    """Refuse a class that does not implement the method protocol, naming what is missing. A
    method shipped with locosim may have a schema section of its own (``knobs.Section``); a
    plug-in's knobs are a ``MethodSpec``."""
    from sim.algorithms.knobs import MethodSpec, Section

    if not isinstance(cls, type):
        raise PluginError(f"{cls!r} is not a class")
    missing = [h for h in REQUIRED_HOOKS if not callable(getattr(cls, h, None))]
    if missing:
        raise PluginError(f"{cls.__name__} does not implement the method protocol (sim.algorithms.base.Algorithm): "
                          f"missing {', '.join(missing)}")
    missing = abstract_hooks(cls)
    if missing:
        bases = sorted(set(missing.values()))
        raise PluginError(f"{name or cls.__name__}: {cls.__name__} does not implement {', '.join(missing)} "
                          f"(abstract hook{'s' if len(missing) > 1 else ''} of {', '.join(bases)})")
    spec = getattr(cls, "Spec", None)
    if not (isinstance(spec, type) and issubclass(spec, MethodSpec if not shipped else Section)):
        raise PluginError(f"{cls.__name__}.Spec must be a subclass of sim.algorithms.knobs.MethodSpec (its knobs)")


def check_configured(method, layout: list[tuple[str, int]], proxy_layers: int | None, name: str) -> None:
    """``method`` configured with ``layout`` has set ``info`` (a ``base.ScheduleInfo``): refused in
    one line otherwise, before any work (``sim.checks.check_before_work``)."""
    from sim.schedule import ScheduleInfo

    method.configure(layout, proxy_layers)
    info = vars(method).get("info", getattr(type(method), "info", None))
    if not isinstance(info, ScheduleInfo):
        got = "never set" if info is None else f"a {type(info).__name__}"
        raise PluginError(f"{name}: {type(method).__name__}.info is {got}; configure (or __init__) must set it to a "
                          "sim.algorithms.base.ScheduleInfo (what reports say about the schedule)")
