"""A griffe extension for the API reference: reST roles in docstrings become links.

The docstrings of ``gossip`` are Google-style with Sphinx roles inline (:class:`Cluster`,
:meth:`~Cluster.start`, :mod:`gossip.leader`). mkdocstrings renders Markdown, so each role is
rewritten as an *optional* cross-reference: a link when the target is on a page of the
reference, plain code when it is not (a private module, an object no page renders). Names are
resolved in the scope of the object that carries the docstring, as Sphinx would. A trailing
``::`` before a literal block becomes ``:``.

This file is loaded by mkdocs.yml (plugins: mkdocstrings: handlers: python: options:
extensions); it is not part of the package.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(class|func|meth|mod|data|attr|exc|obj|const|type):`(~?)([^`<>]+?)`")
_LITERAL = re.compile(r"(\S)::(\n\s*\n)")


def _resolve(obj: griffe.Object, name: str) -> str | None:
    """The full path of ``name`` as seen from ``obj``, or None."""
    name = name.strip().rstrip("()")
    if name.startswith("."):                   # a relative module: .transports.multi
        package = obj.module.package.path if obj.module.is_package else obj.module.parent.path  # type: ignore[union-attr]
        return package + name
    head, _, rest = name.partition(".")
    scope: griffe.Object | None = obj
    while scope is not None:
        try:
            path = scope.resolve(head)
        except Exception:                      # griffe.NameResolutionError and friends
            scope = scope.parent
            continue
        return f"{path}.{rest}" if rest else path
    if name.startswith("gossip"):
        return name
    return None


def _rewrite(obj: griffe.Object, text: str) -> str:
    def role(m: re.Match[str]) -> str:
        kind, short, target = m.group(1), m.group(2), m.group(3).strip()
        shown = target.rsplit(".", 1)[-1] if short else target
        if kind in ("func", "meth") and not shown.endswith(")"):
            shown += "()"
        path = _resolve(obj, target)
        code = f"<code>{html.escape(shown)}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return _LITERAL.sub(r"\1:\2", _ROLE.sub(role, text))


class SphinxRoles(griffe.Extension):
    """Rewrite reST roles in every docstring of the loaded package."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = _rewrite(obj, obj.docstring.value)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)                # type: ignore[arg-type]

        walk(pkg)
