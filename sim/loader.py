"""The one loader of users' code: a scenario names a plug-in (a method, a model or data) as
``FILE.py:Name`` (a file, relative to the scenario) or ``package.module:Name`` (importable).

Neutral ground: it imports neither the scenario schema nor any method, so the schema, the
method registry and the model and data builders can all use it without importing each
other. Whatever the user's module does while it is imported (an exception, ``sys.exit``) is
one line (``PluginError``), never a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path


class PluginError(ValueError):
    """A plug-in that cannot be used, with the reason in one line (no traceback)."""


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


def _failure(err: BaseException) -> str:
    if isinstance(err, SystemExit):
        return f"SystemExit({err.code!r}) (the module exits when imported; guard it with if __name__ == '__main__')"
    return f"{type(err).__name__}: {err}"


def import_module(path: str, where: str = "") -> object:
    """The module of a reference's path part: a ``.py`` file (loaded once per process under a
    name derived from its path) or an importable module. ``where`` prefixes messages."""
    if path.endswith(".py"):
        file = Path(path)
        if not file.is_file():
            raise PluginError(f"{where}{path}: no such file")
        module_name = "locosim_plugin_" + hashlib.sha256(str(file).encode()).hexdigest()[:12]
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module  # (dataclasses and pickling look a module up by name)
            try:
                spec.loader.exec_module(module)
            except (Exception, SystemExit) as err:  # the user's code: say what failed, in one line
                del sys.modules[module_name]
                raise PluginError(f"{where}{file.name} failed to import: {_failure(err)}") from None
        return module
    try:
        return importlib.import_module(path)
    except (Exception, SystemExit) as err:
        raise PluginError(f"{where}cannot import module {path!r}: {_failure(err)}") from None


def load_object(ref: str, field: str | None = None, default: str | None = None):
    """What a resolved reference names: a model's or data's class or function (``field``, the
    scenario field, prefixes messages), or a method's class (``field`` None; ``FILE.py``
    without ``:Name`` takes ``default``, the module's ``METHOD``)."""
    path, _, name = ref.partition(":")
    if field is not None:
        if not name:
            raise PluginError(f"{field}: name the class or function, as {path}:Name")
        obj = getattr(import_module(path, f"{field}: "), name, None)
        if not callable(obj):
            raise PluginError(f"{field}: {path} has no class or function {name!r}")
        return obj
    if not name and not path.endswith(".py"):
        raise PluginError(f"{ref}: name the class, as package.module:Class")
    obj = getattr(import_module(path), name or default, None)
    if obj is None:
        raise PluginError(f"{path} has no {name or default!r}" + ("" if name else " (name the class: FILE.py:Class)"))
    return obj
