"""The WSGI types the agent's HTTP side speaks: :class:`StartResponse` and :data:`WSGIApp`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol


__all__ = ["StartResponse", "WSGIApp"]

class StartResponse(Protocol):
    """The WSGI ``start_response`` callable."""

    def __call__(self, status: str, headers: list[tuple[str, str]],
                 exc_info: tuple[type[BaseException], BaseException, TracebackType] | None = None,
                 /) -> Callable[[bytes], object]:
        """Begin the response."""


WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
"""A WSGI application."""
