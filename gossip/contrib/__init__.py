"""Adapters that host a gossip node inside other frameworks (built on the public Cluster API).

- :mod:`gossip.contrib.asgi`: an ASGI application serving the node's WebSocket connections,
  mountable in Starlette, FastAPI or any ASGI server.
"""
