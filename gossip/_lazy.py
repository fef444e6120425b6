"""Names a package exports but imports on first use (PEP 562).

A package keeps a table of ``name -> module`` and sets ``__getattr__ = lazy_getattr(__name__,
table)``: the first access to a name imports its module, and the value is then kept in the
package's namespace, so later accesses are plain attribute lookups. Type checkers see the
names through an ``if TYPE_CHECKING:`` import beside the table.

This module imports nothing from :mod:`gossip`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_getattr"]


def lazy_getattr(package: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """Return a module ``__getattr__`` for ``package`` that imports each of ``names``
    (``name -> module``, absolute or relative to ``package``) when first asked for."""

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        from importlib import import_module

        value = getattr(import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
