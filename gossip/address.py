"""Parsing and formatting of peer and bind addresses.

Accepted forms (see :meth:`Address.parse`)::

    1.2.3.4:8000        [::1]:8000          ::1          1.2.3.4
    hostname            hostname:8000       8081 (-> 127.0.0.1:8081)
    :8000 (-> 127.0.0.1:8000)
    srv+_gossip._udp.example.com            srv+wss://example.com/gossip
    ws://host:port/path wss://host/path     http://host:port/path   https://host/path

``ws://``/``wss://`` URLs name WebSocket peers, ``http://``/``https://`` URLs HTTP peers
(:mod:`gossip.transports.http.transport`; before HTTP peers existed, an ``http(s)://`` URL was
read as the ``ws(s)://`` URL of the same host and path).

Parsing never touches the network: hostnames and SRV names are resolved later by the transport.

An :class:`Address` is immutable (a frozen dataclass): where paularlott/gossip's ``Address.Clear()``
empties an address in place, use :data:`EMPTY_ADDRESS` instead (``addr = EMPTY_ADDRESS``), and
:attr:`Address.is_empty` where Go calls ``IsEmpty()``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
from dataclasses import dataclass

from gossip.errors import AddressError

__all__ = ["Address", "EMPTY_ADDRESS", "DEFAULT_PORT", "KINDS", "format_host_port",
           "format_addr", "split_ip_port", "is_websocket_url", "is_http_url", "host_of", "is_loopback",
           "plain_ip"]

_log = logging.getLogger("gossip.address")

DEFAULT_PORT: int = 7946
"""Port used when an address string does not name one (memberlist's 7946, as everywhere in gossip)."""

KINDS: frozenset[str] = frozenset({"ip", "host", "srv", "ws", "http"})
"""The valid values of :attr:`Address.kind` (and ``""``, of :data:`EMPTY_ADDRESS` alone)."""

_PORT_RE = re.compile(r"[0-9]{1,5}", re.ASCII)
_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?", re.ASCII)
_NUMERIC_NAME_RE = re.compile(r"[0-9.]+", re.ASCII)
_SCHEME_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://", re.ASCII)
_SCHEME_MAP = {"ws": "ws", "wss": "wss", "http": "http", "https": "https"}
_DEFAULT_URL_PORT = {"ws": 80, "wss": 443, "http": 80, "https": 443}


def format_host_port(host: str, port: int) -> str:
    """Join ``host`` and ``port`` as ``host:port``, bracketing IPv6 literals (``[::1]:80``)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]:{port}"
    return f"{host}:{port}"


def _fail(text: str, why: str) -> AddressError:
    return AddressError(f"invalid address {text!r}: {why}")


def _parse_port(text: str, port_text: str, allow_zero: bool) -> int:
    if not _PORT_RE.fullmatch(port_text):
        raise _fail(text, f"port {port_text!r} is not a number in 1..65535")
    port = int(port_text)
    low = 0 if allow_zero else 1
    if port < low or port > 65535:
        raise _fail(text, f"port {port} is outside {low}..65535")
    return port


def _is_hostname(name: str) -> bool:
    if name.endswith("."):
        name = name[:-1]
    if not name or len(name) > 253:
        return False
    if _NUMERIC_NAME_RE.fullmatch(name):
        # all-numeric names look like (malformed) IPv4 literals; refuse them
        return False
    return all(_LABEL_RE.fullmatch(label) for label in name.split("."))


def _ip_version(host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0


def _host_kind(text: str, host: str) -> tuple[str, str]:
    """Classify ``host`` as ("ip", normalised literal) or ("host", name); raise if neither."""
    try:
        return "ip", str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if _is_hostname(host):
        return "host", host
    raise _fail(text, f"{host!r} is neither an IP address nor a valid hostname")


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address; immutable.

    Attributes:
        kind: ``"ip"`` (an IP literal), ``"host"`` (a hostname to resolve), ``"srv"`` (a DNS SRV
            service name, in :attr:`host`), ``"ws"`` (a WebSocket URL, in :attr:`url`) or
            ``"http"`` (an HTTP peer's ``http://`` / ``https://`` URL, in :attr:`url`);
            ``""`` for :data:`EMPTY_ADDRESS` only.
        host: the IP literal (normalised, without brackets), hostname, SRV name, or URL host.
        port: the port; 0 for ``srv`` addresses (the SRV records give it).
        url: for ``ws`` and ``http`` addresses the full URL; for ``srv+<url>``
            addresses the rewritten URL; otherwise ``""``.

    ``str()`` follows paularlott/gossip's ``Address.String()``: ``ip:port``, then the URL (an
    address here holds one or the other, so never both joined by ", "), and ``""`` for the
    empty address; where Go's form could not be parsed back, it keeps the form
    :meth:`parse` reads (``Address.parse(str(a)) == a``): an IPv6 literal is bracketed
    (``[::1]:8000``, where Go writes the ambiguous ``::1:8000``), and an SRV name keeps its
    ``srv+`` prefix.

    Immutable: there is no ``clear()`` (Go's ``Clear()`` empties an address in place); use
    :data:`EMPTY_ADDRESS`, and :attr:`is_empty` (or ``bool(address)``) to test for it.
    """

    kind: str
    host: str
    port: int
    url: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            if self.kind == "" and not self.host and not self.port and not self.url:
                return  # the empty address
            raise AddressError(f"invalid address kind {self.kind!r}: expected one of {sorted(KINDS)}"
                               + (" (or all fields empty)" if self.kind == "" else ""))

    @property
    def is_empty(self) -> bool:
        """True when the address names nothing: no host, no port and no URL
        (:data:`EMPTY_ADDRESS`; paularlott's ``IsEmpty()``)."""
        return not self.host and not self.port and not self.url

    def __bool__(self) -> bool:
        return not self.is_empty

    @classmethod
    def parse(
        cls,
        text: str,
        default_port: int = DEFAULT_PORT,
        *,
        allow_zero_port: bool = False,
    ) -> Address:
        """Parse an address string.

        Args:
            text: the address (surrounding whitespace is ignored).
            default_port: port used when ``text`` names none.
            allow_zero_port: accept port 0 (for bind addresses: "any free port").

        Raises:
            AddressError: the string is empty, has a bad port, a malformed IPv6 literal,
                an invalid hostname, an empty SRV name or an unsupported URL scheme. The
                message quotes the string and says why.
        """
        if not isinstance(text, str):
            raise AddressError(f"invalid address {text!r}: expected a string")
        if isinstance(default_port, bool) or not isinstance(default_port, int) or not (
            0 <= default_port <= 65535
        ):
            raise AddressError(f"invalid default port {default_port!r}: expected 0..65535")
        s = text.strip()
        if not s:
            raise _fail(text, "empty address")
        if any(c.isspace() for c in s):
            raise _fail(text, "contains whitespace")

        if s[:4].lower() == "srv+":
            return cls._parse_srv(text, s[4:], allow_zero_port)
        scheme_match = _SCHEME_RE.match(s)
        if scheme_match is not None:
            return cls._parse_url(text, s, allow_zero_port)
        if "/" in s:
            raise _fail(text, "unexpected '/' (URLs need a ws://, wss://, http:// or https:// scheme)")

        if _PORT_RE.fullmatch(s) and s.isdigit():
            return cls("ip", "127.0.0.1", _parse_port(text, s, allow_zero_port))

        if s.startswith("["):
            end = s.find("]")
            if end < 0:
                raise _fail(text, "missing ']' after the IPv6 literal")
            literal, rest = s[1:end], s[end + 1 :]
            try:
                ip = ipaddress.IPv6Address(literal)
            except ValueError:
                raise _fail(text, f"{literal!r} is not an IPv6 address") from None
            if not rest:
                port = cls._check_default(text, default_port, allow_zero_port)
            elif rest.startswith(":"):
                port = _parse_port(text, rest[1:], allow_zero_port)
            else:
                raise _fail(text, f"unexpected {rest!r} after ']' (expected ':port')")
            return cls("ip", str(ip), port)

        if "]" in s:
            raise _fail(text, "unexpected ']' without '['")

        colons = s.count(":")
        if colons > 1:
            try:
                ip6 = ipaddress.IPv6Address(s)
            except ValueError:
                raise _fail(
                    text, "not a valid IPv6 literal (write IPv6 with a port as [addr]:port)"
                ) from None
            return cls("ip", str(ip6), cls._check_default(text, default_port, allow_zero_port))

        if colons == 1:
            host, port_text = s.split(":", 1)
            port = _parse_port(text, port_text, allow_zero_port)
            if not host:
                return cls("ip", "127.0.0.1", port)
        else:
            host, port = s, cls._check_default(text, default_port, allow_zero_port)
        kind, host = _host_kind(text, host)
        return cls(kind, host, port)

    @staticmethod
    def _check_default(text: str, default_port: int, allow_zero: bool) -> int:
        if default_port == 0 and not allow_zero:
            raise _fail(text, "no port given and the default port is 0")
        return default_port

    @classmethod
    def _parse_srv(cls, text: str, name: str, allow_zero: bool) -> Address:
        if not name:
            raise _fail(text, "empty SRV name after 'srv+'")
        if _SCHEME_RE.match(name) is not None:
            inner = cls._parse_url(text, name, allow_zero)
            return cls("srv", inner.host, 0, inner.url)
        if not _is_hostname(name):
            raise _fail(text, f"{name!r} is not a valid SRV name")
        return cls("srv", name, 0)

    @classmethod
    def _parse_url(cls, text: str, s: str, allow_zero: bool) -> Address:
        import urllib.parse  # here: only URLs need it (a node addressed by ip:port never does)

        scheme, sep, rest = s.partition("://")
        new_scheme = _SCHEME_MAP.get(scheme.lower())
        if new_scheme is None:
            raise _fail(text, f"unsupported scheme {scheme!r} (use ws, wss, http or https)")
        url = f"{new_scheme}://{rest}"
        try:
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise _fail(text, f"malformed URL ({exc})") from None
        if not host:
            raise _fail(text, "URL has no host")
        if "@" in parts.netloc:
            raise _fail(text, "URL must not carry user info")
        netloc_tail = parts.netloc.rsplit("]", 1)[-1]
        if ":" in netloc_tail:
            port = _parse_port(text, netloc_tail.rsplit(":", 1)[1], allow_zero)
        else:
            port = _DEFAULT_URL_PORT[new_scheme]
        if _ip_version(host) == 0 and not _is_hostname(host):
            raise _fail(text, f"{host!r} is neither an IP address nor a valid hostname")
        return cls("http" if new_scheme.startswith("http") else "ws", host, port, url)

    @property
    def is_ip(self) -> bool:
        """True if this is an IP literal address (kind ``"ip"``)."""
        return self.kind == "ip"

    @property
    def family(self) -> int:
        """4 or 6 for an IP literal address, 0 for names, SRV names and URLs."""
        if self.kind != "ip":
            return 0
        return _ip_version(self.host)

    def host_port(self) -> tuple[str, int]:
        """Return ``(host, port)`` (the host without brackets)."""
        return self.host, self.port

    def __str__(self) -> str:
        if self.kind in ("ws", "http"):
            return self.url
        if self.kind == "srv":
            return "srv+" + (self.url or self.host)
        if self.is_empty:
            return ""
        return format_host_port(self.host, self.port)


# ---------------------------------------------------------------------------------- address text
# The one home of the text forms every layer reads: the core (whose host a packet came from),
# the engine, the transports (ip:port literals) and the configuration. Pure string work: no
# lookups, no sockets.


def is_websocket_url(addr: object) -> bool:
    """Return True if ``addr`` is a ``ws://`` or ``wss://`` URL (by its scheme only)."""
    if not isinstance(addr, str):
        return False
    head = addr[:6].lower()
    return head.startswith("ws://") or head == "wss://"


def is_http_url(addr: object) -> bool:
    """Return True if ``addr`` is an ``http://`` or ``https://`` URL (by its scheme only)."""
    if not isinstance(addr, str):
        return False
    head = addr[:8].lower()
    return head.startswith("http://") or head == "https://"


def split_ip_port(addr: str) -> tuple[str, int, int]:
    """Split an ``"ip:port"`` / ``"[v6]:port"`` string into ``(ip, port, IP version)``.

    Only IP literals: hostnames and SRV names are resolved earlier (:mod:`gossip.resolver`).
    Port 0 is accepted (for binding).

    Raises:
        AddressError: the string is not an IP literal with a port in 0..65535.
    """
    if not isinstance(addr, str):
        raise AddressError(f"invalid transport address {addr!r}: expected a string")
    host, sep, port_text = addr.strip().rpartition(":")
    if not sep or not host:
        raise AddressError(f"invalid transport address {addr!r}: expected ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise AddressError(f"invalid transport address {addr!r}: write IPv6 as [addr]:port")
    if not port_text.isdigit() or len(port_text) > 5 or int(port_text) > 65535:
        raise AddressError(f"invalid transport address {addr!r}: bad port {port_text!r}")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise AddressError(
            f"invalid transport address {addr!r}: {host!r} is not an IP literal"
        ) from None
    return str(ip), int(port_text), ip.version


def format_addr(host: str, port: int) -> str:
    """Format ``host`` and ``port`` as ``ip:port`` (``[v6]:port`` for IPv6).

    IPv4-mapped IPv6 addresses (``::ffff:1.2.3.4``, seen on dual-stack sockets) become
    plain IPv4, and scope ids (``%eth0``) are dropped.
    """
    host = host.split("%", 1)[0]
    if ":" in host:
        try:
            ip6 = ipaddress.IPv6Address(host)
        except ValueError:
            return f"[{host}]:{port}"
        if ip6.ipv4_mapped is not None:
            return f"{ip6.ipv4_mapped}:{port}"
        return f"[{ip6}]:{port}"
    return f"{host}:{port}"


@functools.lru_cache(maxsize=4096)
def host_of(addr: str) -> str:
    """Return the host of ``"ip:port"``, ``"[v6]:port"`` or a ``ws(s)://host:port/path`` URL:
    what one source controls, whatever port it sends from.

    The host comes back lowercased, without IPv6 brackets or a zone; an address with no port
    is taken as a bare host. It never raises: a malformed address yields what it can.
    Answers are remembered for the last 4,096 addresses (it runs twice for every packet).
    """
    text = addr.strip()
    scheme_end = text.find("://")
    if scheme_end >= 0:
        text = text[scheme_end + 3:]
        for sep in "/?#":
            cut = text.find(sep)
            if cut >= 0:
                text = text[:cut]
        text = text.rpartition("@")[2]
    if text.startswith("["):
        end = text.find("]")
        host = text[1:end] if end > 0 else text[1:]
    elif text.count(":") == 1:
        host = text.partition(":")[0]
    else:
        host = text  # a bare IPv6 literal or a bare host
    return host.split("%", 1)[0].lower()


def is_loopback(host: str) -> bool:
    """True if ``host`` is ``localhost`` or a loopback IP literal (127.0.0.0/8, ::1)."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def plain_ip(ip: str) -> str:
    """Return ``ip`` as counts of sources know it: IPv4-mapped IPv6 as IPv4, no zone."""
    if not ip:
        return ip
    return format_addr(ip, 0).rpartition(":")[0].strip("[]")

EMPTY_ADDRESS: Address = Address("", "", 0)
"""The address that names nothing: ``str()`` is ``""``, :attr:`Address.is_empty` is true.
Addresses are immutable: use it where paularlott/gossip calls ``Address.Clear()``."""
