"""A user's method as a plug-in: one Python file (or an installed module), no edit of locosim.

A scenario names it in its ``algorithm:`` section::

    algorithm: {name: fedavg, plugin: methods/fedavg.py:FedAvg, inner_steps: 20}   # a file, relative to the scenario
    algorithm: {name: fedavg, plugin: mypkg.methods:FedAvg}                        # an importable module
    algorithm: {name: fedavg}        # a package that registers it under the `locosim.algorithms` entry point

The class implements ``sim.algorithms.base.Algorithm`` (usually by subclassing it, or
``sim.algorithms.common.OuterMethod`` for a DiLoCo-like method) and declares its knobs as a
pydantic model ``Spec``, a subclass of ``sim.scenario.MethodSpec``: the scenario's knobs are
validated by it, with the same one-line errors as built-in knobs, and ``--set
algorithm.KNOB=...`` works on them. ``FILE.py`` without ``:Class`` takes the module's
``METHOD``. Imports neither torch nor simpy (the plug-in module may import torch inside its
math, as the built-ins do).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

REQUIRED_HOOKS = ("configure", "at_step", "init", "on_step", "on_reduced", "global_params")
ENTRY_POINT_GROUP = "locosim.algorithms"


class PluginError(ValueError):
    """A plug-in that cannot be used, with the reason in one line (no traceback)."""


PACKAGED: dict[str, str] = {
    "diloco_delayed": "sim.algorithms.eager:DelayedDiLoCo",
    "eager_diloco": "sim.algorithms.eager:EagerDiLoCo",
    "fedavg": "sim.algorithms.fedavg:FedAvg",
    "sparta": "sim.algorithms.sparta:SPARTA",
    "sparta_diloco": "sim.algorithms.sparta:SPARTADiLoCo",
    "demo": "sim.algorithms.demo:DeMo",
}
"""Methods shipped with locosim but built as plug-ins are (the public path, as a third party
would write them): name -> 'module:Class', resolved exactly like an entry point."""


def entry_points() -> dict[str, str]:
    """Method name -> 'module:Class': the methods shipped as plug-ins (``PACKAGED``) and every
    installed package's ``locosim.algorithms`` entry points."""
    from importlib.metadata import entry_points as eps

    return {**PACKAGED, **{ep.name: ep.value for ep in eps(group=ENTRY_POINT_GROUP)}}


def resolve_ref(ref: str, base_dir: Path | None) -> str:
    """The plug-in reference made independent of the working directory: a file path becomes
    absolute (relative to ``base_dir``, the scenario's folder); a module reference stays."""
    path, _, name = ref.partition(":")
    if path.endswith(".py"):
        p = Path(path)
        if not p.is_absolute():
            p = (base_dir or Path.cwd()) / p
        return str(p.resolve()) + (f":{name}" if name else "")
    return ref


_LOADED: dict[str, type] = {}


def load_method(ref: str) -> type:
    """The method class a resolved reference names, checked against the protocol."""
    if ref in _LOADED:
        return _LOADED[ref]
    path, _, name = ref.partition(":")
    if path.endswith(".py"):
        file = Path(path)
        if not file.is_file():
            raise PluginError(f"{path}: no such file")
        module_name = "locosim_plugin_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
        spec = importlib.util.spec_from_file_location(module_name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # (dataclasses and pickling look a module up by name)
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # the user's code: say what failed, in one line
            del sys.modules[module_name]
            raise PluginError(f"{file.name} failed to import: {type(err).__name__}: {err}") from None
        name = name or "METHOD"
    else:
        if not name:
            raise PluginError(f"{ref}: name the class, as package.module:Class")
        try:
            module = importlib.import_module(path)
        except Exception as err:
            raise PluginError(f"cannot import module {path!r}: {type(err).__name__}: {err}") from None
    cls = getattr(module, name, None)
    if cls is None:
        raise PluginError(f"{path} has no {name!r}" + ("" if ":" in ref else " (name the class: FILE.py:Class)"))
    check_method(cls)
    _LOADED[ref] = cls
    return cls


def load_object(ref: str, field: str):
    """A model's or data's class or function from a resolved reference (``field`` names the
    scenario field in messages): FILE.py:Name or package.module:Name."""
    path, _, name = ref.partition(":")
    if not name:
        raise PluginError(f"{field}: name the class or function, as {path}:Name")
    if path.endswith(".py"):
        if not Path(path).is_file():
            raise PluginError(f"{field}: {path}: no such file")
        module_name = "locosim_plugin_" + hashlib.sha256(path.encode()).hexdigest()[:12]
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as err:
                del sys.modules[module_name]
                raise PluginError(f"{field}: {Path(path).name} failed to import: {type(err).__name__}: {err}") from None
    else:
        try:
            module = importlib.import_module(path)
        except Exception as err:
            raise PluginError(f"{field}: cannot import module {path!r}: {type(err).__name__}: {err}") from None
    obj = getattr(module, name, None)
    if not callable(obj):
        raise PluginError(f"{field}: {path} has no class or function {name!r}")
    return obj


def check_method(cls) -> None:
    """Refuse a class that does not implement the method protocol, naming what is missing."""
    from sim.scenario import MethodSpec

    if not isinstance(cls, type):
        raise PluginError(f"{cls!r} is not a class")
    missing = [h for h in REQUIRED_HOOKS if not callable(getattr(cls, h, None))]
    if missing:
        raise PluginError(f"{cls.__name__} does not implement the method protocol (sim.algorithms.base.Algorithm): "
                          f"missing {', '.join(missing)}")
    spec = getattr(cls, "Spec", None)
    if not (isinstance(spec, type) and issubclass(spec, MethodSpec)):
        raise PluginError(f"{cls.__name__}.Spec must be a subclass of sim.scenario.MethodSpec (its knobs)")
