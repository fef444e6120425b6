"""The HTTP transport: gossip frames as POST bodies to ``http://`` and ``https://`` URLs.

One concern per module, each part given what it needs:

- :mod:`.frames`: the body format (length-prefixed frames) and the bearer token's proofs,
  pure functions;
- :mod:`.server`: the listener and :class:`~.server.Exchanges`, the one judge of every POST;
- :mod:`.hosted`: WSGI and ASGI applications that hand a host server's POSTs to that judge;
- :mod:`.transport`: :class:`HTTPTransport`, the pooled keep-alive client and the listener.
"""

from __future__ import annotations

from gossip.transports.http.transport import HTTPTransport

__all__ = ["HTTPTransport"]
