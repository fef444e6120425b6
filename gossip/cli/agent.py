"""``gossip agent``: one long-running node, configured from flags, a TOML file and ``GOSSIP_*``.

Settings are layered, each layer overriding the one before:

1. the preset (``--preset``, else ``GOSSIP_PRESET``, else ``preset`` in the file, else lan),
   with the default bind address ``127.0.0.1:7946``;
2. the TOML file of ``--config``: top-level keys are :class:`~gossip.Config` fields (or their
   aliases) with the values ``GOSSIP_*`` variables accept (durations as ``"200ms"`` or seconds);
   an ``[agent]`` table holds ``join`` (a list), ``http``, ``http_hosts`` (a list),
   ``http_token_file``, ``key_file`` and ``receive`` (a list of message types); a
   ``[metadata]`` table holds this node's metadata (strings, integers, floats, booleans);
3. ``GOSSIP_<FIELD>`` variables (:meth:`Config.from_env`), plus the agent's ``GOSSIP_JOIN``
   (comma-separated), ``GOSSIP_HTTP``, ``GOSSIP_HTTP_HOSTS`` (comma-separated),
   ``GOSSIP_HTTP_TOKEN_FILE``, ``GOSSIP_KEY_FILE`` and ``GOSSIP_METADATA`` (``k=v,k=v``);
4. the command line flags.

The HTTP API (``--http``) asks every client for a token that the agent makes at start and
writes to a file only its user can read (:func:`token_path`: ``$XDG_RUNTIME_DIR/gossip`` or
``~/.gossip``, named after the port); the ``members``, ``send``, ``watch`` and ``dashboard``
subcommands read it from there.

It reports through the callables :func:`run_agent` is given; :mod:`gossip.cli.main` prints.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import secrets
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..config import Config, secret_file_warning
from ..errors import ConfigError, GossipError
from ..node import Node, NodeState
from ..packet import Packet
from ..wire import USER_MSG

__all__ = ["CliError", "AgentSettings", "build_settings", "read_key_file", "load_toml", "run_agent",
           "AGENT_ENV", "CLIENT_ENV", "config_environ", "token_path", "write_token_file",
           "read_token_file", "secret_file_warning"]


class CliError(Exception):
    """A problem to report to the user in one line (no traceback)."""


AGENT_ENV = ("GOSSIP_JOIN", "GOSSIP_HTTP", "GOSSIP_HTTP_HOSTS", "GOSSIP_HTTP_TOKEN_FILE",
             "GOSSIP_KEY_FILE", "GOSSIP_METADATA")
"""Variables the agent reads itself (they name no :class:`Config` field)."""
CLIENT_ENV = ("GOSSIP_AGENT", "GOSSIP_HTTP_TOKEN_FILE")
"""Variables of the client subcommands (``members``, ``send``, ``watch``)."""


def config_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the ``GOSSIP_*`` variables meant for :meth:`Config.from_env` (not the tools' own)."""
    return {k: v for k, v in environ.items()
            if k.startswith("GOSSIP_") and k not in AGENT_ENV and k not in CLIENT_ENV
            and not k.startswith("GOSSIP_TESTS_")}


@dataclasses.dataclass
class AgentSettings:
    """Everything an agent runs with."""

    config: Config
    join: list[str]
    http: str | None
    metadata: dict[str, Any]
    receive: list[int]
    http_hosts: list[str] = dataclasses.field(default_factory=list)
    """Host names the HTTP API answers to besides IP addresses and localhost."""
    http_token_file: str | None = None
    """Where to write the API token (default :func:`token_path` of the bound port)."""
    warnings: list[str] = dataclasses.field(default_factory=list)
    """Problems found while reading the settings, for the agent to report at start."""


def token_path(port: int, environ: Mapping[str, str] | None = None) -> str:
    """Return where the agent serving its HTTP API on ``port`` writes its token by default:
    ``$XDG_RUNTIME_DIR/gossip/http-<port>.token``, else ``~/.gossip/http-<port>.token``."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR", "")
    folder = os.path.join(runtime, "gossip") if runtime else os.path.join(os.path.expanduser("~"), ".gossip")
    return os.path.join(folder, f"http-{port}.token")


def write_token_file(path: str, token: str) -> None:
    """Write ``token`` to ``path``, readable by this user only (mode 0600, its folder 0700 if
    made here), replacing any older token atomically.

    Raises:
        CliError: the file cannot be written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise CliError(f"cannot write the HTTP API token to {path}: {exc.strerror or exc}") from None


def read_token_file(path: str) -> str:
    """Read an agent's API token.

    Raises:
        CliError: the file cannot be read (the message says where it comes from).
    """
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"cannot read the agent's API token from {path}: {why} (the agent writes it "
                       "at start; run this as the agent's user, or give --token-file)") from None
    if not token:
        raise CliError(f"the token file {path} is empty")
    return token


def load_toml(path: str) -> dict[str, Any]:
    """Read a TOML file.

    Raises:
        CliError: the file cannot be read or parsed.
    """
    try:
        with open(path, "rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as exc:
        raise CliError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"config file {path} is not valid TOML: {exc}") from None
    return data


def _parse_key(text: str) -> bytes:
    text = text.strip()
    try:
        if len(text) in (32, 48, 64) and all(c in "0123456789abcdefABCDEF" for c in text):
            key = bytes.fromhex(text)
        else:
            key = base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("not hex or base64") from None
    if len(key) not in (16, 24, 32):
        raise ValueError(f"a key is 16, 24 or 32 bytes, this one is {len(key)}")
    return key


def read_key_file(path: str) -> list[bytes]:
    """Read encryption keys, one per line in hex or base64 (``#`` comments); the first is primary.

    Raises:
        CliError: the file cannot be read, holds no key, or a line is not a key.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise CliError(f"cannot read key file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"key file {path} is not text: expected keys in hex or base64, one per line") from None
    keys = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            keys.append(_parse_key(text))
        except ValueError as exc:
            raise CliError(f"key file {path} line {n}: {exc} (expected a 16, 24 or 32-byte key in "
                           "hex or base64; `gossip keygen` makes one)") from None
    if not keys:
        raise CliError(f"key file {path} holds no key (`gossip keygen --out {path}` makes one)")
    return keys


def _metadata_items(items: Sequence[str], where: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CliError(f"{where}: {item!r} is not key=value")
        out[key.strip()] = value
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _apply_file(cfg: Config, data: Mapping[str, Any], path: str) -> Config:
    fields: dict[str, str] = {}
    for key, value in data.items():
        if key in ("preset", "agent", "metadata"):
            continue
        if isinstance(value, dict):
            raise CliError(f"config file {path}: unknown table [{key}] (expected [agent] or [metadata])")
        fields[key] = _toml_value(value)
    try:
        return Config.from_env(prefix="", environ=fields, base=cfg, strict=True)
    except ConfigError as exc:
        raise CliError(f"config file {path}: {exc}") from None


def build_settings(args: Any, environ: Mapping[str, str]) -> AgentSettings:
    """Layer preset, file, environment and flags (see the module docstring) into settings.

    ``args`` has the agent subcommand's flags (``preset``, ``config``, ``bind``, ``advertise``,
    ``node_id``, ``label``, ``key_file``, ``join``, ``http``, ``metadata``, ``receive``).

    Raises:
        CliError: a file, a variable or a flag is invalid (the message names it).
    """
    data = load_toml(args.config) if args.config else {}
    path = args.config or ""
    agent_table = data.get("agent", {})
    meta_table = data.get("metadata", {})
    if not isinstance(agent_table, dict) or not isinstance(meta_table, dict):
        raise CliError(f"config file {path}: [agent] and [metadata] must be tables")
    known = {"join", "http", "http_hosts", "http_token_file", "key_file", "receive"}
    unknown = sorted(set(agent_table) - known)
    if unknown:
        raise CliError(f"config file {path}: unknown [agent] setting(s) {', '.join(unknown)} "
                       f"(expected {', '.join(sorted(known))})")
    preset = args.preset or environ.get("GOSSIP_PRESET") or data.get("preset") or "lan"
    try:
        cfg = Config.preset(str(preset))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if data:
        cfg = _apply_file(cfg, data, path)
    try:
        cfg = Config.from_env(environ=config_environ(environ), base=cfg)
    except ConfigError as exc:
        raise CliError(f"environment: {exc}") from None
    for flag, field in (("bind", "bind_addr"), ("advertise", "advertise_addr"), ("node_id", "node_id"),
                        ("label", "cluster_label")):
        value = getattr(args, flag, None)
        if value is not None:
            setattr(cfg, field, value)
    if getattr(args, "insecure", False):
        cfg.insecure = True
    if getattr(args, "tag", None):
        cfg.tags = frozenset(args.tag)

    warnings: list[str] = []
    key_file = args.key_file or environ.get("GOSSIP_KEY_FILE") or agent_table.get("key_file")
    if key_file:
        keys = read_key_file(str(key_file))
        cfg.encryption_key, cfg.secondary_keys = keys[0], keys[1:]
        warning = secret_file_warning(str(key_file))
        if warning:
            warnings.append(warning)

    if args.join:
        join = list(args.join)
    elif environ.get("GOSSIP_JOIN"):
        join = [p.strip() for p in environ["GOSSIP_JOIN"].split(",") if p.strip()]
    else:
        join = [str(p) for p in agent_table.get("join", [])]
    http = args.http or environ.get("GOSSIP_HTTP") or agent_table.get("http") or None
    if getattr(args, "http_host", None):
        http_hosts = list(args.http_host)
    elif environ.get("GOSSIP_HTTP_HOSTS"):
        http_hosts = [h.strip() for h in environ["GOSSIP_HTTP_HOSTS"].split(",") if h.strip()]
    else:
        http_hosts = [str(h) for h in agent_table.get("http_hosts", [])]
    token_file = (getattr(args, "http_token_file", None) or environ.get("GOSSIP_HTTP_TOKEN_FILE")
                  or agent_table.get("http_token_file") or None)

    metadata: dict[str, Any] = dict(meta_table)
    if environ.get("GOSSIP_METADATA"):
        metadata.update(_metadata_items([i for i in environ["GOSSIP_METADATA"].split(",") if i],
                                        "GOSSIP_METADATA"))
    metadata.update(_metadata_items(args.metadata or [], "--metadata"))

    receive = list(args.receive) if args.receive else [int(t) for t in agent_table.get("receive", [USER_MSG])]
    try:
        cfg.validate()
    except ConfigError as exc:
        raise CliError(f"bad configuration: {exc}") from None
    return AgentSettings(cfg, join, str(http) if http else None, metadata, receive, http_hosts,
                         str(token_file) if token_file else None, warnings)


def _set_metadata(cluster: Any, metadata: Mapping[str, Any]) -> None:
    md = cluster.local_metadata()
    for key, value in metadata.items():
        try:
            if isinstance(value, bool):
                md.set_bool(key, value)
            elif isinstance(value, int):
                md.set_int64(key, value)
            elif isinstance(value, float):
                md.set_float64(key, value)
            elif isinstance(value, str):
                md.set_string(key, value)
            else:
                raise CliError(f"metadata {key!r}: {value!r} is not a string, number or boolean")
        except GossipError as exc:
            raise CliError(f"metadata {key!r}: {exc}") from None


def run_agent(settings: AgentSettings, stop: threading.Event, say: Callable[[str], None],
              warn: Callable[[str], None], quiet: bool = False) -> int:
    """Run a node (and its HTTP API if asked) until ``stop`` is set; return the exit code.

    What the agent reports goes to ``say`` (progress, membership changes, received messages)
    and ``warn`` (problems it carries on after); the command line prints them, this module
    never does. ``stop`` is obeyed at every step, a join to seeds that do not answer included.

    Raises:
        CliError: the node or the HTTP server cannot start.
    """
    from ..cluster import Cluster
    from ..dashboard import DashboardApp
    from ..dashboard import app as dashboard_app
    from ..httpapi import HttpServer, app

    for warning in settings.warnings:
        warn(warning)
    cluster = Cluster(settings.config)
    _set_metadata(cluster, settings.metadata)

    def on_state(node: Node, prev: NodeState) -> None:
        if not quiet and not cluster.node_is_local(node):
            say(f"{node.id.short} {node.address}: {prev} -> {node.state}")

    cluster.handle_node_state_change_func(on_state)
    try:
        cluster.start()
    except GossipError as exc:
        raise CliError(f"cannot start the node on {settings.config.bind_addr}: {exc}") from None
    server: HttpServer | None = None
    dashboard: DashboardApp | None = None
    token_file: str | None = None
    token = secrets.token_urlsafe(32)
    try:
        api = app(cluster, token=token, allowed_hosts=settings.http_hosts) if settings.http else None
        if api is not None:
            dashboard = dashboard_app(cluster, hub=api.hub)
            api.fallback = dashboard                             # the page at /

        def on_message(sender: Node, packet: Packet) -> None:
            if api is not None:
                api.hub.on_message(sender, packet)
            if not quiet:
                try:
                    body: object = packet.unmarshal()
                except GossipError as exc:
                    body = f"<undecodable: {exc}>"
                say(f"message type {packet.msg_type} from {sender.id.short}: {body!r}")

        for t in settings.receive:
            try:
                cluster.handle_func(t, on_message)
            except GossipError as exc:
                raise CliError(f"cannot receive message type {t}: {exc}") from None
        say(f"node {cluster.local_node().id} listening on {cluster.address}")
        if api is not None and settings.http:
            cfg = cluster.config
            server = HttpServer(api, settings.http, on_stop=api.close, read_timeout=cfg.http_read_timeout,
                                max_connections=cfg.http_max_connections)
            try:
                server.start()
            except GossipError as exc:
                raise CliError(str(exc)) from None
            host, _, port = server.address.rpartition(":")
            token_file = settings.http_token_file or token_path(int(port))
            write_token_file(token_file, token)
            if host in ("0.0.0.0", "[::]"):
                host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
            say(f"http on {server.url} (/metrics, /api/members, /api/events, /api/send, /api/explain; "
                f"clients need the token in {token_file})")
            say(f"dashboard: http://{host}:{port}{api.login_path()} (opens once, within "
                f"{api.login_lifetime / 60:g} minutes; `gossip dashboard` prints another)")
        if settings.join:
            say(f"joining {', '.join(settings.join)} ...")
            outcome = _join(cluster, settings.join, stop)
            if isinstance(outcome, int):
                say(f"joined through {outcome} peer(s); {cluster.num_alive_nodes()} alive")
            elif outcome is not None and not stop.is_set():
                warn(f"warning: {outcome}; retrying while alone")
        stop.wait()
        say("leaving...")
    finally:
        if server is not None:
            server.stop()
        if dashboard is not None:
            dashboard.close()
        if token_file is not None:
            _remove_token_file(token_file, token)
        cluster.stop()
    return 0


def _join(cluster: Any, peers: list[str], stop: threading.Event) -> int | GossipError | None:
    """Join ``peers`` on a thread of its own, so that ``stop`` is obeyed at once; return the
    number of peers joined, the error, or None when stopped first (stopping the cluster then
    ends the join)."""
    done = threading.Event()
    outcome: list[int | GossipError] = []

    def run() -> None:
        try:
            outcome.append(cluster.join(peers))
        except GossipError as exc:
            outcome.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name=f"gossip-{cluster.local_node().id.short}-agent-join").start()
    while not done.is_set() and not stop.is_set():
        done.wait(0.05)
    return outcome[0] if outcome and not stop.is_set() else None


def _remove_token_file(path: str, token: str) -> None:
    """Remove the token file, unless another agent has replaced it since."""
    try:
        with open(path, encoding="ascii") as f:
            if f.read().strip() != token:
                return
        os.unlink(path)
    except OSError:
        pass
