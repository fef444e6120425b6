"""Suite-wide fixtures: nothing a test runs sends a packet off loopback.

The network guard (``tests/support/gossip_netguard.py``) is installed when this file is
imported, before any test module creates a socket, and again by the session fixture below,
which also guards the transports' own entry points (``send``, ``request``, ``dial_stream``) so
that an address is named in gossip's own terms before a socket sees it. Processes that tests
start inherit it through ``PYTHONPATH`` and report to a shared file.

After every test, :func:`no_packet_left_loopback` fails the test if anything tried to leave,
naming each address. A test that needs another network (one inside a namespace it creates and
removes) declares it with ``@pytest.mark.allow_network("10.200.0.0/24", ...)``; a test that
hands a transport such an address only to see it refused before any socket is touched adds
``transport_only=True``; a test that must ask the system resolver for a name declares
``@pytest.mark.allow_name_lookups``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "support"))

import gossip_netguard as netguard  # noqa: E402

# The outermost pytest of a run owns its coverage report; a pytest a test starts in a child
# process (tests of the test tools) inherits this and leaves the data to the owner.
_COVERAGE_OWNER = "GOSSIP_TESTS_COVERAGE_OWNER"
os.environ.setdefault(_COVERAGE_OWNER, str(os.getpid()))

_fd, _LOG = tempfile.mkstemp(prefix="gossip-netguard-", suffix=".log")
os.close(_fd)
netguard.install(_LOG)
os.environ.update(netguard.child_env())   # every child process started with os.environ is guarded


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers of the network guard."""
    config.addinivalue_line("markers", "allow_network(*cidrs, transport_only=False): the test "
                                       "may reach these networks (inside namespaces it creates and "
                                       "removes), or only name them to a transport")
    config.addinivalue_line("markers", "allow_name_lookups: the test may ask the system resolver")


def _transport_address(addr: str, *_: object, **__: object) -> str:
    return addr


@pytest.fixture(scope="session", autouse=True)
def network_guard() -> Iterator[None]:
    """Install the guard for the whole session, the transports' entry points included."""
    netguard.install(_LOG)
    from gossip.transports.multi import MultiTransport
    from gossip.transports.socket import SocketTransport
    from gossip.transports.websocket import WebSocketTransport

    guarded = []
    for cls in (SocketTransport, WebSocketTransport, MultiTransport):
        for name in ("send", "request", "dial_stream"):
            original = cls.__dict__[name]
            netguard.guard_method(cls, name, _transport_address, "transport")
            guarded.append((cls, name, original))
    yield
    for cls, name, original in guarded:
        setattr(cls, name, original)
    try:
        os.unlink(_LOG)
    except OSError:
        pass


@pytest.fixture(autouse=True)
def no_packet_left_loopback(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test if it (or a process it started) tried to reach an address off loopback."""
    marker = request.node.get_closest_marker("allow_network")
    names = request.node.get_closest_marker("allow_name_lookups")
    netguard.take_reports()
    with netguard.allow(*(marker.args if marker else ()),
                        transport_only=bool(marker and marker.kwargs.get("transport_only"))):
        if names:
            with netguard.allow_names():
                yield
        else:
            yield
    reports = netguard.take_reports()
    if reports:
        pytest.fail("the test tried to send off loopback (tests use 127.0.0.0/8 or ::1 only):\n  "
                    + "\n  ".join(reports), pytrace=False)


# ---------------------------------------------------------------------------------- coverage

_coverage_lines: list[str] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In the measured run, combine coverage, and fail the session if a module fell under its floor."""
    import gossip_coverage_report as report

    if not report.measuring() or os.environ.get(_COVERAGE_OWNER) != str(os.getpid()):
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    floors = report.load_floors(os.path.join(root, "tests", "coverage-floors.toml"))
    lines, under = report.summarize(report.collect(root), floors)
    _coverage_lines[:] = lines
    if under:
        _coverage_lines.append("")
        _coverage_lines.append("modules under their branch-coverage floor:")
        _coverage_lines.extend("  " + u for u in under)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the coverage table of the measured run."""
    if _coverage_lines:
        terminalreporter.section("branch coverage (coverage.py)")
        for line in _coverage_lines:
            terminalreporter.write_line(line)
