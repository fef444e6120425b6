"""Shared setup of the examples: flags, configuration, start/join and the console.

Mirrors the common setup of paularlott/gossip's examples (section 12.1 of the reference):

* flags ``--port`` (UDP and TCP on ``127.0.0.1``; 0 picks a free port) or ``--web-port``
  (WebSocket mode: the node listens on ``127.0.0.1:<web-port>`` and advertises
  ``ws://127.0.0.1:<web-port>``, with no UDP or TCP listener; 0 picks a free port), ``--peers``
  (comma-separated ``ip:port`` or ``ws://`` URLs; it may include this node's own address,
  which join skips) and ``--node-id`` (a UUID; random if omitted); plus ``--no-prompt`` and
  ``--run-for SECONDS`` so the examples can run unattended, and ``-v`` for library logging.
  WebSocket and UDP/TCP nodes join one another: each dials the scheme the other advertises;
* LAN timings (:meth:`gossip.Config.lan`), application version ``"0.0.1"`` with a version check
  that prints the joiner's version and accepts it, and the examples' shared AES-128 key
  ``"1234567890123456"`` (every example node can talk to every other one);
* startup order: build the cluster, let the example register its handlers, start, join, then
  the console;
* console commands ``peers``, ``whoami``, ``set-meta k v...``, ``get-meta <id> <k>``,
  ``show-meta <id>``, ``help``, ``quit`` plus each example's own; double quotes group words
  into one argument; end of input ends the console like ``quit``.

The cluster is stopped (a graceful leave, then every thread and socket closed) however the
program ends: ``quit``, end of input, ``--run-for`` elapsing, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

# Let the examples run from a source checkout without installing the package.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import gossip  # noqa: E402
from gossip import Cluster, Config, Node  # noqa: E402

__all__ = ["Command", "Example", "parse_args", "build_config", "run", "format_node_table", "say"]

EXAMPLE_KEY = b"1234567890123456"
"""The AES-128 key every example node shares (as in the Go examples)."""
APP_VERSION = "0.0.1"

CommandFunc = Callable[[Cluster, list[str]], None]


@dataclass
class Command:
    """An example-specific console command."""

    usage: str
    help: str
    fn: CommandFunc
    min_args: int = 0


@dataclass
class Example:
    """What an example adds to the common setup.

    Attributes:
        name: shown in the banner and ``help``.
        description: the argparse description.
        setup: ``setup(cluster)``, called after the cluster is built and before it starts
            (register handlers, set metadata that should travel inside the join).
        commands: extra console commands by name.
        joined: ``joined(cluster)``, called once the cluster is started and has joined (or
            found no peer), before the console (fetch state from the cluster, for instance).
        stopping: ``stopping(cluster)``, called before the cluster stops, however the program
            ends (stop what the example started on top of the cluster).
    """

    name: str
    description: str
    setup: Callable[[Cluster], None] | None = None
    commands: dict[str, Command] = field(default_factory=dict)
    joined: Callable[[Cluster], None] | None = None
    stopping: Callable[[Cluster], None] | None = None


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the common flags."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--port", type=int, default=8000,
                   help="UDP/TCP port on 127.0.0.1 (default 8000; 0 picks a free port)")
    p.add_argument("--web-port", type=int, default=None, metavar="PORT",
                   help="WebSocket mode instead of UDP/TCP: listen on 127.0.0.1:PORT and "
                        "advertise ws://127.0.0.1:PORT (0 picks a free port; --port is unused)")
    p.add_argument("--peers", default="",
                   help="comma-separated peers to join, e.g. 127.0.0.1:8000,127.0.0.1:8001 or "
                        "ws://127.0.0.1:8080 (may include this node, which is skipped)")
    p.add_argument("--node-id", default="", help="node id (a UUID; random if omitted)")
    p.add_argument("--no-prompt", action="store_true",
                   help="no interactive console: run until --run-for elapses or Ctrl-C")
    p.add_argument("--run-for", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="log the library to stderr (-v info, -vv debug)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in 0..65535, got {args.port}")
    if args.web_port is not None and not 0 <= args.web_port <= 65535:
        p.error(f"--web-port must be in 0..65535, got {args.web_port}")
    if args.run_for is not None and args.run_for < 0:
        p.error("--run-for must be >= 0")
    return args


def build_config(args: argparse.Namespace) -> Config:
    """Return the LAN configuration the examples share, from the parsed flags."""

    def check_version(version: str) -> bool:
        say(f"application version check: a node with version {version!r} joins; accepted")
        return True

    common = dict(
        node_id=args.node_id,
        application_version=APP_VERSION,
        application_version_check=check_version,
        encryption_key=EXAMPLE_KEY,
    )
    web_port = getattr(args, "web_port", None)
    if web_port is not None:
        # WebSocket mode: the node's own listener serves the root path, as the Go examples'
        # HTTP server does; port 0 advertises the URL of the port it got.
        return Config.lan(
            socket_transport_enabled=False,
            websocket_bind_addr=f"127.0.0.1:{web_port}",
            websocket_path="/",
            advertise_addr=f"ws://127.0.0.1:{web_port}" if web_port else "",
            **common,
        )
    return Config.lan(bind_addr=f"127.0.0.1:{args.port}", **common)


def format_node_table(nodes: Sequence[Node]) -> str:
    """Return a table of id, address, state and metadata."""
    header = f"{'ID':36}  {'ADDRESS':22}  {'STATE':8}  METADATA"
    lines = [header, "-" * len(header)]
    for n in nodes:
        meta = ", ".join(f"{k}={v}" for k, v in sorted(n.metadata.get_all_as_string().items()))
        lines.append(f"{str(n.id):36}  {n.address:22}  {str(n.state):8}  {meta}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- console


def _cmd_peers(cluster: Cluster, args: list[str]) -> None:
    print(format_node_table(cluster.nodes()))


def _cmd_whoami(cluster: Cluster, args: list[str]) -> None:
    me = cluster.local_node()
    print(f"id: {me.id}\naddress: {me.address}\nstate: {me.state}\n"
          f"metadata: {me.metadata.get_all_as_string()}")


def _cmd_set_meta(cluster: Cluster, args: list[str]) -> None:
    key, value = args[0], " ".join(args[1:])
    cluster.local_metadata().set_string(key, value)
    cluster.update_metadata()
    print(f"metadata {key}={value!r} set; it propagates to the cluster")


def _find_node(cluster: Cluster, text: str) -> Node | None:
    """The node whose id or short id (its last 8 characters, as printed) is ``text``."""
    node = cluster.get_node_by_id_string(text)
    if node is None:
        print(f"no single node has the id or short id {text!r}")
    return node


def _cmd_get_meta(cluster: Cluster, args: list[str]) -> None:
    node = _find_node(cluster, args[0])
    if node is not None:
        if node.metadata.exists(args[1]):
            print(f"{args[1]} = {node.metadata.get_string(args[1])}")
        else:
            print(f"node {node.id.short} has no metadata key {args[1]!r}")


def _cmd_show_meta(cluster: Cluster, args: list[str]) -> None:
    node = _find_node(cluster, args[0])
    if node is not None:
        for k, v in sorted(node.metadata.get_all_as_string().items()):
            print(f"{k} = {v}")


_COMMON: dict[str, Command] = {
    "peers": Command("peers", "list every known node: id, address, state, metadata", _cmd_peers),
    "whoami": Command("whoami", "show this node", _cmd_whoami),
    "set-meta": Command("set-meta <key> <value...>", "set a metadata string and propagate it",
                        _cmd_set_meta, 2),
    "get-meta": Command("get-meta <node-id> <key>", "show one metadata value of a node",
                        _cmd_get_meta, 2),
    "show-meta": Command("show-meta <node-id>", "show all metadata of a node", _cmd_show_meta, 1),
}


class _Console:
    def __init__(self, cluster: Cluster, example: Example) -> None:
        self.cluster = cluster
        self.commands = dict(_COMMON)
        self.commands.update(example.commands)

    def help(self) -> None:
        print("commands:")
        for cmd in self.commands.values():
            print(f"  {cmd.usage:28} {cmd.help}")
        print(f"  {'help':28} this list")
        print(f"  {'quit':28} leave the cluster and exit (end of input too)")

    def execute(self, line: str) -> bool:
        """Run one command line; return False when the console should end."""
        try:
            words = shlex.split(line)
        except ValueError as exc:
            print(f"cannot parse the line: {exc}")
            return True
        if not words:
            return True
        name, args = words[0].lower(), words[1:]
        if name in ("quit", "exit"):
            return False
        if name in ("help", "?"):
            self.help()
            return True
        cmd = self.commands.get(name)
        if cmd is None:
            print(f"unknown command {name!r}; type help")
            return True
        if len(args) < cmd.min_args:
            print(f"usage: {cmd.usage}")
            return True
        try:
            cmd.fn(self.cluster, args)
        except gossip.GossipError as exc:
            print(f"error: {exc}")
        return True


_stdin_pending = bytearray()
_out_lock = threading.Lock()
_prompting = False   # a "> " prompt ends the last line printed


def say(text: str) -> None:
    """Print a line from a background thread (an event handler) without running it into the
    console's prompt: the prompt's line is ended first, and the prompt shown again after."""
    with _out_lock:
        prefix = "\n" if _prompting else ""
        suffix = "> " if _prompting else ""
        sys.stdout.write(f"{prefix}{text}\n{suffix}")
        sys.stdout.flush()


def _prompt() -> None:
    global _prompting
    with _out_lock:
        sys.stdout.write("> ")
        sys.stdout.flush()
        _prompting = True


def _prompt_answered(ended: bool) -> None:
    """The user entered a line (or input ended: then end the prompt's line ourselves)."""
    global _prompting
    with _out_lock:
        if ended and _prompting:
            sys.stdout.write("\n")
            sys.stdout.flush()
        _prompting = False


def _read_line(deadline: float | None) -> str | None:
    """Read one line from stdin; None on end of input or when ``deadline`` passes.

    With a deadline, stdin is read straight from its file descriptor into our own buffer:
    ``select`` cannot see lines already sitting in ``sys.stdin``'s buffer, so several lines
    arriving at once would otherwise wait for more input.
    """
    if deadline is None:
        _prompt()
        try:
            line = input() + "\n"
        except EOFError:
            _prompt_answered(ended=True)
            return None
        _prompt_answered(ended=not sys.stdin.isatty())
        return line
    _prompt()
    fd = sys.stdin.fileno()
    while True:
        end = _stdin_pending.find(b"\n")
        if end >= 0:
            line = bytes(_stdin_pending[:end + 1])
            del _stdin_pending[:end + 1]
            _prompt_answered(ended=not sys.stdin.isatty())   # a typed line ended it already
            return line.decode(errors="replace")
        left = deadline - time.monotonic()
        if left <= 0:
            _prompt_answered(ended=True)
            return None
        ready, _, _ = select.select([fd], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:  # end of input; a last line without a newline still counts
                _prompt_answered(ended=True)
                if not _stdin_pending:
                    return None
                line = bytes(_stdin_pending)
                _stdin_pending.clear()
                return line.decode(errors="replace") + "\n"
            _stdin_pending.extend(chunk)


def _serve(cluster: Cluster, example: Example, args: argparse.Namespace) -> None:
    deadline = None if args.run_for is None else time.monotonic() + args.run_for
    if args.no_prompt:
        done = threading.Event()
        done.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return
    console = _Console(cluster, example)
    say("type help for the commands")
    while True:
        line = _read_line(deadline)
        if line is None:
            return
        if not console.execute(line):
            return


def run(example: Example, argv: Sequence[str] | None = None) -> int:
    """Run an example from the command line; return the exit code."""
    args = parse_args(example.description, argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C always interrupts, even when this program inherited SIGINT as ignored (a shell
    # starts background jobs that way when it has no job control).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cluster = Cluster(build_config(args))
    except gossip.GossipError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    code = 0
    try:
        if example.setup is not None:
            example.setup(cluster)
        cluster.start()
        me = cluster.local_node()
        # Every line from here on goes out through say(): the event handlers print already
        # (from the cluster's threads), and print() writes a line's text and its end separately.
        say(f"{example.name}: node {me.id} listening on {cluster.address}")
        peers = [p.strip() for p in args.peers.split(",") if p.strip()]
        if peers:
            try:
                n = cluster.join(peers)
                if n:
                    say(f"joined the cluster through {n} peer(s)")
                else:
                    say("no other peer given: starting a new cluster")
            except gossip.JoinError as exc:
                # Keep running: others may join through us, and we re-join when isolated.
                say(f"join failed: {exc}")
        else:
            say("no --peers: starting a new cluster")
        if example.joined is not None:
            example.joined(cluster)
        _serve(cluster, example, args)
    except KeyboardInterrupt:
        _prompt_answered(ended=True)
        say("interrupted")
    except gossip.GossipError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        if example.stopping is not None:
            try:
                example.stopping(cluster)
            except KeyboardInterrupt:
                pass
        say("leaving the cluster...")
        try:
            cluster.stop()
        except KeyboardInterrupt:
            pass
        say("stopped")
    return code
