"""The test suite's network guard: nothing a test runs may send to an address off loopback.

:func:`install` wraps the socket calls that name a destination (``connect``, ``connect_ex``,
``sendto``, ``sendmsg``) and the system resolver (``getaddrinfo``). A destination outside
127.0.0.0/8 and ::1, or a host name where a literal address belongs, is refused before
anything leaves: the call raises :class:`OffLoopbackError` (an ``OSError``, so code under test
handles it as a failed send) and the attempt is recorded, so that the test that made it fails
with the address named, even when the call was made and its error swallowed on a library
thread.

A process started by a test carries the guard too: ``sitecustomize.py`` beside this file
installs it when ``GOSSIP_TESTS_NETGUARD_LOG`` names a file, and each refused attempt is
appended to that file as one line, which the parent test reads back.

A test that needs another network (one inside a network namespace it creates and removes)
declares it: ``allow("10.200.0.0/24")`` for the guarded block. Processes started inside the
block may reach it too: the block names its networks in ``GOSSIP_TESTS_NETGUARD_ALLOW``, which
a child's guard reads when it is installed. A test that hands the transports
an address off loopback only to see it refused before any socket is used declares it with
``allow(..., transport_only=True)``: the transports' entry points let it through, every socket
call still refuses it. Name lookups are allowed in a block of ``allow_names()``.

This module is imported by the interpreter of every guarded process before anything else, so
it imports only what every Python program loads anyway.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "OffLoopbackError", "install", "installed", "is_loopback", "check", "allow", "allow_names",
    "take_violations", "take_reports", "child_env", "LOG_ENV", "ALLOW_ENV", "GUARD_DIR",
]

LOG_ENV = "GOSSIP_TESTS_NETGUARD_LOG"
"""Environment variable naming the file a guarded child process reports refusals to."""

ALLOW_ENV = "GOSSIP_TESTS_NETGUARD_ALLOW"
"""Environment variable naming (comma-separated CIDRs) the networks a guarded child may reach:
set by :func:`allow` for the processes started inside its block."""

GUARD_DIR = os.path.dirname(os.path.abspath(__file__))
"""The directory holding this module and its ``sitecustomize.py`` (put on a child's path)."""

_lock = threading.Lock()
_violations: list[str] = []
_allowed: list[tuple[int, bytes, int, bool]] = []   # (family, network, prefix, transport only)
_allowed_text: list[str] = []                      # networks allowed to children (ALLOW_ENV)
_names_allowed = 0
_installed = False
_log_path: str | None = None


class OffLoopbackError(PermissionError):
    """A test tried to reach an address off loopback (or to look up a host name)."""


def is_loopback(host: str) -> bool:
    """Return whether ``host`` is a literal loopback address: 127.0.0.0/8, ::1 or ::ffff:127.x."""
    host = host.strip("[]").split("%", 1)[0]
    try:
        packed = socket.inet_pton(socket.AF_INET, host)
        return packed[0] == 127
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        return False
    if packed == b"\0" * 15 + b"\1":
        return True
    return packed[:12] == b"\0" * 10 + b"\xff\xff" and packed[12] == 127


def _literal(host: str) -> tuple[int, bytes] | None:
    host = host.strip("[]").split("%", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return family, socket.inet_pton(family, host)
        except OSError:
            continue
    return None


def _in_allowed(host: str, transport: bool) -> bool:
    lit = _literal(host)
    if lit is None:
        return False
    family, packed = lit
    for fam, net, bits, transport_only in _allowed:
        if fam != family or (transport_only and not transport):
            continue
        whole, rest = divmod(bits, 8)
        if packed[:whole] != net[:whole]:
            continue
        if rest and (packed[whole] >> (8 - rest)) != (net[whole] >> (8 - rest)):
            continue
        return True
    return False


def _record(what: str) -> None:
    with _lock:
        _violations.append(what)
        path = _log_path
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"[pid {os.getpid()}] {what}\n")
        except OSError:
            pass


def check(host: str, port: object, how: str, transport: bool = False) -> None:
    """Refuse (record and raise) a destination ``host`` that is neither loopback nor allowed.

    ``transport`` says the check is made at a transport's entry point (address text), where
    networks allowed ``transport_only`` pass.

    Raises:
        OffLoopbackError: naming the call, the host and the port.
    """
    if is_loopback(host) or _in_allowed(host, transport):
        return
    if _literal(host) is None:
        what = f"{how} to the host name {host!r} port {port}: tests use literal loopback addresses"
    else:
        what = f"{how} to {host} port {port}: off loopback"
    _record(what)
    raise OffLoopbackError(what)


def _check_sockaddr(sock: socket.socket, address: Any, how: str) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    if isinstance(address, tuple) and address and isinstance(address[0], (str, bytes)):
        host = address[0].decode() if isinstance(address[0], bytes) else address[0]
        check(host, address[1] if len(address) > 1 else "?", how)


def _wrap_socket_methods() -> None:
    cls = socket.socket
    connect = cls.connect
    connect_ex = cls.connect_ex
    sendto = cls.sendto
    sendmsg = cls.sendmsg

    def guarded_connect(self: socket.socket, address: Any) -> None:
        _check_sockaddr(self, address, "connect")
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        _check_sockaddr(self, address, "connect_ex")
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check_sockaddr(self, args[-1] if args else None, "sendto")
        return sendto(self, data, *args)  # type: ignore[arg-type]

    def guarded_sendmsg(self: socket.socket, buffers: Any, *args: Any, **kwargs: Any) -> int:
        address = kwargs.get("address", args[2] if len(args) >= 3 else None)
        if address is not None:
            _check_sockaddr(self, address, "sendmsg")
        return sendmsg(self, buffers, *args, **kwargs)

    cls.connect = guarded_connect  # type: ignore[method-assign]
    cls.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    cls.sendto = guarded_sendto  # type: ignore[method-assign,assignment]
    cls.sendmsg = guarded_sendmsg  # type: ignore[method-assign]


def _wrap_resolver() -> None:
    getaddrinfo = socket.getaddrinfo
    gethostbyname = socket.gethostbyname
    gethostbyname_ex = socket.gethostbyname_ex

    def name_allowed(host: Any) -> bool:
        if host is None:
            return True
        if isinstance(host, bytes):
            host = host.decode(errors="replace")
        return (not isinstance(host, str) or host == "" or _literal(host) is not None
                or _names_allowed > 0)

    def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if not name_allowed(host):
            what = f"name lookup of {host!r} (port {port}): tests use literal loopback addresses"
            _record(what)
            raise socket.gaierror(socket.EAI_NONAME, what)
        return getaddrinfo(host, port, *args, **kwargs)

    def guarded_gethostbyname(host: str) -> str:
        if not name_allowed(host):
            what = f"name lookup of {host!r}: tests use literal loopback addresses"
            _record(what)
            raise socket.gaierror(socket.EAI_NONAME, what)
        return gethostbyname(host)

    def guarded_gethostbyname_ex(host: str) -> tuple[str, list[str], list[str]]:
        if not name_allowed(host):
            what = f"name lookup of {host!r}: tests use literal loopback addresses"
            _record(what)
            raise socket.gaierror(socket.EAI_NONAME, what)
        return gethostbyname_ex(host)

    socket.getaddrinfo = guarded_getaddrinfo
    socket.gethostbyname = guarded_gethostbyname
    socket.gethostbyname_ex = guarded_gethostbyname_ex


def install(log_path: str | None = None) -> None:
    """Install the guard in this process (idempotent); report refusals to ``log_path`` too."""
    global _installed, _log_path
    with _lock:
        if log_path:
            _log_path = log_path
        if _installed:
            return
        _installed = True
        # A parent's allow() block named these networks for the processes it starts.
        inherited = [n for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()]
        _allowed.extend(_entries(inherited, False))
    _wrap_socket_methods()
    _wrap_resolver()


def installed() -> bool:
    """Return whether :func:`install` ran in this process."""
    return _installed


def guard_method(cls: type, name: str, address_of: Callable[..., str], how: str) -> None:
    """Wrap ``cls.name`` so that the address ``address_of(*args, **kwargs)`` is checked first.

    The address is gossip's text form: ``ip:port``, ``[v6]:port`` or a ``ws://``/``wss://`` URL.
    Only literal addresses are checked here: a transport refuses a host name or looks it up,
    and a lookup meets the guarded resolver.
    """
    original = getattr(cls, name)

    def guarded(self: Any, *args: Any, **kwargs: Any) -> Any:
        addr = address_of(*args, **kwargs)
        host, port = split_address(addr)
        if _literal(host) is not None:
            check(host, port, f"{cls.__name__}.{name}", transport=True)
        return original(self, *args, **kwargs)

    guarded.__wrapped__ = original  # type: ignore[attr-defined]
    setattr(cls, name, guarded)


def split_address(addr: str) -> tuple[str, str]:
    """Split gossip's address text (``ip:port``, ``[v6]:port``, ``ws[s]://host:port/...``)."""
    rest = addr
    if "://" in rest:
        rest = rest.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        return host, tail.lstrip(":") or "?"
    host, sep, port = rest.rpartition(":")
    if not sep:
        return rest, "?"
    return host, port


def take_violations() -> list[str]:
    """Return and forget the refusals recorded in this process so far."""
    with _lock:
        out = list(_violations)
        _violations.clear()
    return out


def take_reports() -> list[str]:
    """Return and forget every refusal reported to the log file, by this process and its children.

    Without a log file, the refusals recorded in this process are returned instead.
    """
    with _lock:
        path = _log_path
        mine = list(_violations)
        _violations.clear()
    if not path:
        return mine
    try:
        with open(path, "r+", encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
            f.seek(0)
            f.truncate()
    except OSError:
        return mine
    return lines


@contextmanager
def allow(*networks: str, transport_only: bool = False) -> Iterator[None]:
    """Allow destinations inside ``networks`` (CIDR text) for the block, e.g. a namespace's net.

    With ``transport_only``, only the transports' entry points let them through: a test that
    checks a transport refuses such an address before any socket is touched.
    """
    entries = _entries(networks, transport_only)
    with _lock:
        _allowed.extend(entries)
        if not transport_only:
            _allowed_text.extend(n.strip() for n in networks)
            os.environ[ALLOW_ENV] = ",".join(_allowed_text)
    try:
        yield
    finally:
        with _lock:
            for e in entries:
                _allowed.remove(e)
            if not transport_only:
                for n in networks:
                    _allowed_text.remove(n.strip())
                if _allowed_text:
                    os.environ[ALLOW_ENV] = ",".join(_allowed_text)
                else:
                    os.environ.pop(ALLOW_ENV, None)


def _entries(networks: tuple[str, ...] | list[str], transport_only: bool) -> list[tuple[int, bytes, int, bool]]:
    entries = []
    for net in networks:
        addr, _, bits = net.strip().partition("/")
        lit = _literal(addr)
        if lit is None:
            raise ValueError(f"not a network: {net!r}")
        family, packed = lit
        prefix = int(bits) if bits else len(packed) * 8
        entries.append((family, packed, prefix, transport_only))
    return entries


@contextmanager
def allow_names() -> Iterator[None]:
    """Allow host-name lookups through the system resolver for the block."""
    global _names_allowed
    with _lock:
        _names_allowed += 1
    try:
        yield
    finally:
        with _lock:
            _names_allowed -= 1


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Return ``env`` (default: this process's) set up so that a child process is guarded too."""
    out = dict(os.environ if env is None else env)
    path = out.get("PYTHONPATH", "")
    if GUARD_DIR not in path.split(os.pathsep):
        out["PYTHONPATH"] = GUARD_DIR + (os.pathsep + path if path else "")
    if _log_path and LOG_ENV not in out:
        out[LOG_ENV] = _log_path
    return out
