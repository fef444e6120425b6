"""The ``gossip`` command line (also ``python -m gossip``).

Subcommands: ``agent`` (run a node, with an HTTP API), ``members``, ``send``, ``forget``,
``watch``, ``dashboard`` and ``keys rotate`` (ask an agent through that API, with the token it wrote
at start), ``keygen``,
``tune`` (pick settings by simulation), ``demo`` and ``sim``. Every subcommand has ``--help``
with examples; errors are one line on standard error with exit code 1, never a traceback;
Ctrl-C ends any of them at once (exit code 130; the agent leaves the cluster first, exit 0).

This module holds the parser, the entry points and the commands that need no agent
(``keygen``, ``tune``, ``sim``); :mod:`.client` asks agents, :mod:`.agent` runs one,
:mod:`.demo` and :mod:`.tune` run their own clusters.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from .agent import CliError
from .client import DEFAULT_AGENT, dashboard, forget, members, rotate_keys, send, watch

__all__ = ["main", "main_exit", "build_parser"]

_AGENT_HELP = f"the agent's HTTP address host:port (default $GOSSIP_AGENT or {DEFAULT_AGENT})"
_TOKEN_HELP = ("the agent's API token file (default $GOSSIP_HTTP_TOKEN_FILE, or where the agent "
               "writes it: $XDG_RUNTIME_DIR/gossip/http-PORT.token, else ~/.gossip/http-PORT.token)")

_EXAMPLES = {
    "demo": """\
examples:
  gossip demo                      five nodes: joins, a broadcast, a crash detected
  gossip demo --nodes 8 --quiet    only the main steps
""",
    "agent": """\
examples:
  gossip keygen --out /etc/gossip/key
  gossip agent --bind 0.0.0.0:7946 --key-file /etc/gossip/key --http 127.0.0.1:7980
  gossip agent --bind 127.0.0.1:7947 --join 127.0.0.1:7946 --metadata role=worker
  gossip agent --config /etc/gossip/agent.toml
  GOSSIP_PRESET=wan GOSSIP_JOIN=seed1,seed2 GOSSIP_KEY_FILE=/etc/gossip/key gossip agent --bind 0.0.0.0:7946

A node reachable beyond loopback needs a key (--key-file) or --insecure, which lets anyone who
reaches it join, read and forge membership. Bound to 0.0.0.0 it advertises the address of the
interface that carries the default route (--advertise to choose). Peers without a port use 7946.
With --http, clients need the token the agent writes at start (the path is printed).
The TOML file holds Config fields at the top level (probe_interval = "2s",
cluster_label = "prod", ...), an [agent] table (join = [...], http = "...", key_file = "...",
receive = [128], http_hosts = [...]) and a [metadata] table. Flags beat GOSSIP_* variables,
which beat the file.
""",
    "members": """\
examples:
  gossip members                          table of every member the agent knows
  gossip members --agent 10.0.0.5:7980 --json
  gossip members --watch --interval 1s    refresh in place until Ctrl-C
  gossip members --explain 4f2a91c0       why the agent holds that member in its state:
                                          who suspected it, who confirmed, how it ended
""",
    "send": """\
examples:
  gossip send 'hello everyone'                      broadcast type 128
  gossip send --to 4f2a91c0 'just you'              one node (its id, or the short id of
                                                    `gossip members`)
  gossip send --type 130 --json '{"op": "reload"}' --reliable
                                                    JSON data of type 130, over TCP: agents
                                                    started with --receive 130 print it
  gossip send --tag gpu 'for the gpu nodes'         only nodes tagged gpu (agent --tag gpu)
                                                    receive and relay it

An agent prints (and `gossip watch` shows) the types it receives: 128 unless started with
--receive. Types below 128 belong to the protocol and add-on packages: refused.
""",
    "forget": """\
examples:
  gossip forget 4f2a91c0            drop a dead or left member from every node's table now,
                                    rather than after dead_node_retention_period; refused
                                    for a member held alive or suspect
""",
    "watch": """\
examples:
  gossip watch                      membership, metadata, message and cluster events (flapping
                                    members, partitions) as they happen
  gossip watch --json --count 10    ten events as JSON lines, then exit
""",
    "keygen": """\
examples:
  gossip keygen                     print a new 256-bit key in hex and base64
  gossip keygen --bytes 16 --out cluster.key   write it to a file (mode 0600); print only how
                                               to use it
""",
    "keys": """\
examples:
  gossip keygen --out new.key && gossip keys rotate --key-file new.key
                                    install the key on every alive member, make it their
                                    primary, then remove the old one (progress on stderr)
  gossip keys rotate --key-file new.key --json    the report as JSON
""",
    "dashboard": """\
examples:
  gossip dashboard                  print a link that opens the agent's dashboard (once)
  gossip dashboard --agent 127.0.0.1:7981
""",
    "tune": """\
examples:
  gossip tune --nodes 500 --rtt 20ms --loss 1%
  gossip tune --nodes 200 --rtt 80ms --loss 0.5% --starve 4:2s --json
  gossip tune --nodes 1000 --rtt 1ms --max-bytes 2000 --jobs 4

Each candidate runs a crash simulation (a few members killed: how long until everyone drops
them) and a steady one (no failure; two joins: false positives, bandwidth, join time), on the
same seeds. The recommendation is printed as Python and as GOSSIP_* variables.
""",
    "sim": """\
examples:
  gossip sim --scenario crash --nodes 1000 --seed 7 --json
  gossip sim --scenario starve --nodes 100 --duration 600 --lifeguard off
""",
}


def _version() -> str:
    from .._version import __version__

    return f"gossip {__version__} (Python {sys.version.split()[0]})"


def _duration(text: str) -> float:
    from ..config import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _share(text: str) -> float:
    """Parse ``1%`` or ``0.01``."""
    t = text.strip()
    try:
        value = float(t[:-1]) / 100 if t.endswith("%") else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a share (examples: 1%, 0.01)") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 0 and below 100%")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _msg_type(text: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a message type number") from None
    if not 64 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"message type {value} is not a user type (64..65535; "
                                         "applications use 128 and above)")
    return value


def _app_type(text: str) -> int:
    value = _msg_type(text)
    if value < 128:
        raise argparse.ArgumentTypeError(f"message type {value} is reserved for the protocol's "
                                         "add-on packages (64..127): send 128 and above")
    return value


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, like every other error of the tool."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: <prog>: <message>`` and exit with code 2."""
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with its subcommands."""
    parser = _Parser(
        prog="gossip", description="gossip cluster tools: run an agent, ask it questions, tune it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `gossip COMMAND --help` for each command's options and examples")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log to stderr (-v info, -vv debug)")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, help: str, **kw: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
        if kw.get("add_help", True):
            # -v after the subcommand too (`gossip agent -v`); absent, the one before it counts.
            p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                           help="log to stderr (-v info, -vv debug)")
        return p

    demo = add("demo", "run a small local cluster: joins, a broadcast, a crash")
    demo.add_argument("--nodes", type=int, default=5, help="number of nodes (default 5)")
    demo.add_argument("--seed", type=int, default=None, help="seed for the node ids")
    demo.add_argument("--quiet", action="store_true", help="print only the main steps")
    demo.add_argument("--timeout", type=float, default=30.0, help="hard deadline in seconds")

    agent = add("agent", "run one node until interrupted, printing membership changes")
    agent.add_argument("--bind", default=None, help="bind address ip:port (default 127.0.0.1:7946)")
    agent.add_argument("--advertise", default=None, help="advertised address ip:port")
    agent.add_argument("--join", action="append", default=[], metavar="PEER",
                       help="peer to join: ip:port, host[:port] or srv+name (repeatable)")
    agent.add_argument("--node-id", default=None, help="node id (UUID; random if not given)")
    agent.add_argument("--preset", default=None, choices=["lan", "wan", "local"],
                       help="timing preset (default $GOSSIP_PRESET, the file's, or lan)")
    agent.add_argument("--http", default=None, metavar="ADDR",
                       help="serve /metrics and the JSON API on host:port (port 0: any free)")
    agent.add_argument("--key-file", default=None, metavar="FILE",
                       help="encryption keys, hex or base64, one per line; the first encrypts")
    agent.add_argument("--insecure", action="store_true",
                       help="allow a bind or advertise address beyond loopback without a key: "
                            "anyone who reaches the node can join, read and forge membership")
    agent.add_argument("--http-host", action="append", default=[], metavar="NAME",
                       help="a host name the HTTP API answers to besides IP addresses and "
                            "localhost (repeatable)")
    agent.add_argument("--http-token-file", default=None, metavar="FILE",
                       help="where to write the HTTP API's token (default: "
                            "$XDG_RUNTIME_DIR/gossip/http-PORT.token, else ~/.gossip/...)")
    agent.add_argument("--label", default=None, help="cluster label: nodes with another never talk")
    agent.add_argument("--metadata", action="append", default=[], metavar="K=V",
                       help="metadata of this node (repeatable)")
    agent.add_argument("--tag", action="append", default=[], metavar="TAG",
                       help="a tag of this node (repeatable): tagged broadcasts reach it")
    agent.add_argument("--config", default=None, metavar="FILE", help="TOML settings file")
    agent.add_argument("--receive", action="append", type=_msg_type, default=[], metavar="TYPE",
                       help="print and publish user messages of this type (default 128; repeatable)")
    agent.add_argument("--quiet", action="store_true", help="print only start-up lines")

    members = add("members", "list the members an agent knows")
    members.add_argument("--agent", default=None, help=_AGENT_HELP)
    members.add_argument("--token-file", default=None, metavar="FILE", help=_TOKEN_HELP)
    members.add_argument("--json", action="store_true", help="print the API's JSON")
    members.add_argument("--wide", action="store_true", help="full node ids")
    members.add_argument("--watch", action="store_true", help="refresh until interrupted")
    members.add_argument("--interval", type=_duration, default=2.0, help="refresh period (default 2s)")
    members.add_argument("--count", type=_positive_int, default=None,
                         help="with --watch: stop after this many refreshes")
    members.add_argument("--timeout", type=_duration, default=5.0, help="HTTP timeout (default 5s)")
    members.add_argument("--explain", default=None, metavar="NODE",
                         help="print a member's suspicion provenance (its id or short id)")

    send = add("send", "broadcast a message, or send it to one node, through an agent")
    send.add_argument("message", help="the message (a string, or JSON with --json)")
    send.add_argument("--agent", default=None, help=_AGENT_HELP)
    send.add_argument("--token-file", default=None, metavar="FILE", help=_TOKEN_HELP)
    send.add_argument("--type", type=_app_type, default=128,
                      help="message type, 128 and above (default 128, what agents print; others "
                           "only reach nodes that handle them, e.g. agents with --receive TYPE)")
    send.add_argument("--to", default=None, metavar="NODE",
                      help="node id, or its short id (the last 8 characters, as tables show)")
    send.add_argument("--reliable", action="store_true", help="over TCP rather than UDP")
    send.add_argument("--tag", default=None, metavar="TAG",
                      help="broadcast to the nodes holding this tag only")
    send.add_argument("--json", action="store_true", help="MESSAGE is JSON")
    send.add_argument("--timeout", type=_duration, default=5.0, help="HTTP timeout (default 5s)")

    forget_cmd = add("forget", "remove a dead or left member from every node's table, through an agent")
    forget_cmd.add_argument("node", metavar="NODE", help="node id, or its short id")
    forget_cmd.add_argument("--agent", default=None, help=_AGENT_HELP)
    forget_cmd.add_argument("--token-file", default=None, metavar="FILE", help=_TOKEN_HELP)
    forget_cmd.add_argument("--timeout", type=_duration, default=5.0, help="HTTP timeout (default 5s)")

    watch = add("watch", "print membership, metadata and message events live")
    watch.add_argument("--agent", default=None, help=_AGENT_HELP)
    watch.add_argument("--token-file", default=None, metavar="FILE", help=_TOKEN_HELP)
    watch.add_argument("--json", action="store_true", help="one JSON object per line")
    watch.add_argument("--count", type=_positive_int, default=None,
                       help="exit after this many events (the initial member list not counted)")
    watch.add_argument("--no-snapshot", action="store_true", help="skip the initial member list")
    watch.add_argument("--timeout", type=_duration, default=60.0,
                       help="give up after this long without a byte (default 60s; "
                            "agents send a keep-alive every 15s)")

    dashboard = add("dashboard", "print a link that opens an agent's dashboard in a browser")
    dashboard.add_argument("--agent", default=None, help=_AGENT_HELP)
    dashboard.add_argument("--token-file", default=None, metavar="FILE", help=_TOKEN_HELP)
    dashboard.add_argument("--timeout", type=_duration, default=5.0, help="HTTP timeout (default 5s)")

    keys = add("keys", "rotate the cluster's encryption key, through an agent")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    rotate = keys_sub.add_parser(
        "rotate", help="install a new key on every alive member, switch to it, remove the old",
        description="install a new key on every alive member, switch every member to it, then "
                    "remove the old key (members that are down are listed; see "
                    "docs/key-rotation.md for how they catch up)",
        epilog=_EXAMPLES["keys"], formatter_class=argparse.RawDescriptionHelpFormatter)
    rotate.add_argument("--key-file", required=True, metavar="FILE",
                        help="the new key, hex or base64 (the file's first key; never on the "
                             "command line)")
    rotate.add_argument("--agent", default=None, help=_AGENT_HELP)
    rotate.add_argument("--token-file", default=None, metavar="FILE", help=_TOKEN_HELP)
    rotate.add_argument("--timeout", type=_duration, default=60.0,
                        help="how long the whole rotation may take (default 60s)")
    rotate.add_argument("--drain", type=_duration, default=1.0,
                        help="wait after the switch before removing the old key (default 1s)")
    rotate.add_argument("--force", action="store_true",
                        help="remove the old key even though members are down")
    rotate.add_argument("--json", action="store_true", help="print the report as JSON")

    keygen = add("keygen", "print a new encryption key")
    keygen.add_argument("--bytes", type=int, default=32, choices=[16, 24, 32],
                        help="key size: 16, 24 or 32 bytes (AES-128/192/256; default 32)")
    keygen.add_argument("--out", default=None, metavar="FILE",
                        help="write it to FILE (mode 0600; refuses to overwrite) instead of "
                             "printing it")

    tune = add("tune", "recommend failure-detector settings by simulating candidates")
    tune.add_argument("--nodes", type=_positive_int, default=500, help="cluster size (default 500)")
    tune.add_argument("--rtt", type=_duration, default=0.001,
                      help="round trip between members (default 1ms)")
    tune.add_argument("--loss", type=_share, default=0.0, help="packet loss, e.g. 1%% (default 0)")
    tune.add_argument("--starve", default=None, metavar="N[:DELAY]",
                      help="N members (or N%%) handle every packet DELAY late (default delay 1s)")
    tune.add_argument("--max-bytes", type=float, default=None,
                      help="bandwidth budget, bytes per node per second")
    tune.add_argument("--seed", type=int, default=1, help="simulation seed (default 1)")
    tune.add_argument("--crashes", type=_positive_int, default=3,
                      help="members killed in each crash run (default 3)")
    tune.add_argument("--jobs", type=_positive_int, default=min(2, os.cpu_count() or 1),
                      help="processes to simulate in (default: 2, or 1 on one core)")
    tune.add_argument("--json", action="store_true", help="print the figures as JSON")
    tune.add_argument("--quiet", action="store_true", help="no progress lines")

    add("sim", "run a simulated cluster (the flags of python -m gossip.sim)", add_help=False)
    return parser


# ---------------------------------------------------------------------------------- the agent


def _agent(args: argparse.Namespace) -> int:
    from .agent import build_settings, run_agent

    settings = build_settings(args, os.environ)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise Interrupted                  # a second Ctrl-C: no more waiting
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    def say(text: str) -> None:
        print(text, flush=True)

    def warn(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    return run_agent(settings, stop, say, warn, quiet=args.quiet)


# ---------------------------------------------------------------------------------- keys and tuning


def _keygen(args: argparse.Namespace) -> int:
    key = secrets.token_bytes(args.bytes)
    hexkey, b64 = key.hex(), base64.b64encode(key).decode()
    if args.out:
        # The key goes to the file only: what is printed ends up in terminals' scrollback,
        # shell logs and CI output.
        try:
            fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise CliError(f"{args.out} exists: not overwriting a key (remove it first)") from None
        except OSError as exc:
            raise CliError(f"cannot write {args.out}: {exc.strerror or exc}") from None
        with os.fdopen(fd, "w") as f:
            f.write(hexkey + "\n")
        print(f"wrote a new {args.bytes * 8}-bit key to {args.out} (mode 0600)")
        print(f"install: copy {args.out} to every node (readable by the agent's user only) and start "
              f"each with `gossip agent --key-file {args.out}` (or GOSSIP_KEY_FILE={args.out}; in "
              f"Python: Config(encryption_key=bytes.fromhex(open({args.out!r}).read().strip())))")
        return 0
    print(f"hex:    {hexkey}")
    print(f"base64: {b64}")
    print(f"install: put one of these in a file on every node and start each with "
          f"`gossip agent --key-file FILE` (or set GOSSIP_ENCRYPTION_KEY={hexkey}; "
          f"in Python: Config(encryption_key=bytes.fromhex(\"{hexkey}\")))")
    return 0


def _parse_starve(text: str, nodes: int) -> tuple[int, float]:
    count_text, _, delay_text = text.partition(":")
    try:
        count = (round(float(count_text[:-1]) / 100 * nodes) if count_text.endswith("%")
                 else int(count_text))
        delay = _duration(delay_text) if delay_text else 1.0
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise CliError(f"--starve {text!r}: expected N[:DELAY], e.g. 5:2s or 2%:500ms ({exc})") from None
    return count, delay


def _tune(args: argparse.Namespace) -> int:
    from .tune import TuneParams, format_report, run_tune

    starve_nodes, starve_delay = _parse_starve(args.starve, args.nodes) if args.starve else (0, 1.0)
    params = TuneParams(nodes=args.nodes, rtt=args.rtt, loss=args.loss, starve_nodes=starve_nodes,
                        starve_delay=starve_delay, seed=args.seed, crashes=args.crashes,
                        max_bytes=args.max_bytes, jobs=args.jobs)
    try:
        params.validate()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    start = time.monotonic()

    def progress(done: int, total: int, what: str) -> None:
        if not args.quiet:
            print(f"[{done:>2}/{total}] {time.monotonic() - start:5.1f}s  {what}",
                  file=sys.stderr, flush=True)

    if not args.quiet:
        from .tune import candidates

        n = len(candidates(params))
        print(f"simulating {n} candidate settings x 2 runs on {params.nodes} nodes "
              f"({params.jobs} process{'es' if params.jobs > 1 else ''})...", file=sys.stderr, flush=True)
    result = run_tune(params, progress)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print(format_report(result))
    return 0


def _sim(argv: Sequence[str]) -> int:
    from ..sim.__main__ import build_parser as sim_parser
    from ..sim.__main__ import main as sim_main

    if any(a in ("-h", "--help") for a in argv):
        p = sim_parser()
        p.prog = "gossip sim"
        print(p.format_help() + "\n" + _EXAMPLES["sim"], end="")
        return 0
    return sim_main(list(argv))


# ---------------------------------------------------------------------------------- entry points


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, raised by the command line's own SIGINT handler.

    A subclass on purpose: CPython 3.11 marks a plain ``KeyboardInterrupt`` that passes
    through an ``exec()`` of a string (dataclasses build their methods that way, while a
    module is imported) as unhandled for good, and then ends the process by SIGINT after
    ``main`` has caught it and returned 130. Only the exact type is marked.
    """


def _raise_interrupted(signum: int, frame: Any) -> None:
    raise Interrupted


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (errors are one line on stderr, code 1)."""
    previous = None
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        previous = signal.signal(signal.SIGINT, _raise_interrupted)
    try:
        return _main(argv)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main(argv: Sequence[str] | None) -> int:
    from ..errors import GossipError

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv[:1] == ["sim"]:
            return _sim(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.verbose:
            logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO,
                                format="%(asctime)s %(name)s %(levelname)s %(message)s")
        commands = {"agent": _agent, "members": members, "send": send, "forget": forget, "watch": watch,
                    "dashboard": dashboard, "keygen": _keygen, "tune": _tune}
        if args.command == "keys":
            if getattr(args, "keys_command", None) != "rotate":
                print("error: gossip keys: give an action: rotate (see `gossip keys --help`)",
                      file=sys.stderr, flush=True)
                return 2
            return rotate_keys(args)
        if args.command == "demo":
            from .demo import run_demo

            return run_demo(args.nodes, args.seed, args.quiet, args.timeout)
        if args.command in commands:
            return commands[args.command](args)
        parser.print_help()
        return 2
    except (CliError, GossipError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `gossip watch | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 0


def main_exit() -> None:
    """Entry point of the ``gossip`` console script."""
    sys.exit(main())
