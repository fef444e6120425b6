"""Names a package exports but imports on first use (PEP 562).

A package keeps a table of ``name -> module`` and sets ``__getattr__ = lazy_getattr(__name__,
table)``: the first access to a name imports its module, and the value is then kept in the
package's namespace, so later accesses are plain attribute lookups. Subpackages and modules
listed in ``submodules`` are imported the same way on first access (``gossip.httpapi`` after
a bare ``import gossip``). Type checkers see the names through an ``if TYPE_CHECKING:``
import beside the table.

:func:`import_dataclasses` imports the standard :mod:`dataclasses` module, on Python 3.11,
without the :mod:`inspect` module it imports at its top and uses only for a class that has no
docstring of its own (the docstring it writes is the class's signature): ``inspect`` brings
``ast``, ``dis`` and ``tokenize`` along, about 1 MiB of every node's memory that a node never
uses.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_getattr", "import_dataclasses", "inspect_stand_in"]


def lazy_getattr(package: str, names: Mapping[str, str],
                 submodules: Iterable[str] = ()) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` for ``package`` that imports each of ``names``
    (``name -> module``, absolute or relative to ``package``) and each of ``submodules`` (the
    package's own modules, by name) when first asked for."""
    subs = frozenset(submodules)

    def __getattr__(name: str) -> Any:
        from importlib import import_module

        if name in subs:
            return import_module(f"{package}.{name}")      # the import sets the attribute
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def import_dataclasses() -> None:
    """Import :mod:`dataclasses` with its ``inspect`` deferred to its first use (Python 3.11).

    While :mod:`dataclasses` is imported, ``sys.modules["inspect"]`` is a stand-in module
    whose ``__getattr__`` imports the real :mod:`inspect` and hands over the attribute asked
    for; the stand-in leaves ``sys.modules`` as soon as that import is done, so every later
    ``import inspect`` gets the real module, and :mod:`dataclasses` is given the real one at
    its first use of it. Nothing is done when either module is imported already, or on
    Python 3.12 and later, whose :mod:`dataclasses` uses :mod:`inspect` for every class.
    """
    if sys.version_info >= (3, 12) or "dataclasses" in sys.modules or "inspect" in sys.modules:
        return
    stand_in = inspect_stand_in()
    sys.modules["inspect"] = stand_in
    try:
        import dataclasses  # noqa: F401  (the import is the point)
    finally:
        if sys.modules.get("inspect") is stand_in:
            del sys.modules["inspect"]


def inspect_stand_in() -> types.ModuleType:
    """The stand-in for :mod:`inspect` of :func:`import_dataclasses`: a module whose
    ``__getattr__`` imports the real :mod:`inspect` (leaving ``sys.modules`` first if it is
    still there), gives it to :mod:`dataclasses` in its place, and returns the attribute."""
    stand_in = types.ModuleType("inspect", "Stands in for inspect while dataclasses is imported.")

    def __getattr__(name: str) -> Any:
        import importlib

        if sys.modules.get("inspect") is stand_in:  # asked for while dataclasses is imported
            del sys.modules["inspect"]
        real = importlib.import_module("inspect")
        dataclasses = sys.modules.get("dataclasses")
        if dataclasses is not None and getattr(dataclasses, "inspect", None) is stand_in:
            dataclasses.inspect = real  # type: ignore[attr-defined]
        return getattr(real, name)

    stand_in.__getattr__ = __getattr__  # type: ignore[method-assign]
    return stand_in
