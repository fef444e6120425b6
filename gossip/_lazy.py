"""Names a package exports but imports on first use (PEP 562).

A package keeps a table of ``name -> module`` and sets ``__getattr__ = lazy_getattr(__name__,
table)``: the first access to a name imports its module, and the value is then kept in the
package's namespace, so later accesses are plain attribute lookups. Subpackages and modules
listed in ``submodules`` are imported the same way on first access (``gossip.httpapi`` after
a bare ``import gossip``). Type checkers see the names through an ``if TYPE_CHECKING:``
import beside the table.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


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
