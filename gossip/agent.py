"""``gossip agent``: one long-running node, configured from flags, a TOML file and ``GOSSIP_*``.

Settings are layered, each layer overriding the one before:

1. the preset (``--preset``, else ``GOSSIP_PRESET``, else ``preset`` in the file, else lan),
   with the default bind address ``127.0.0.1:7946``;
2. the TOML file of ``--config``: top-level keys are :class:`~gossip.Config` fields (or their
   aliases) with the values ``GOSSIP_*`` variables accept (durations as ``"200ms"`` or seconds);
   an ``[agent]`` table holds ``join`` (a list), ``http``, ``key_file`` and ``receive`` (a list
   of message types); a ``[metadata]`` table holds this node's metadata (strings, integers,
   floats, booleans);
3. ``GOSSIP_<FIELD>`` variables (:meth:`Config.from_env`), plus the agent's ``GOSSIP_JOIN``
   (comma-separated), ``GOSSIP_HTTP``, ``GOSSIP_KEY_FILE`` and ``GOSSIP_METADATA``
   (``k=v,k=v``);
4. the command line flags.

It reports through the callables :func:`run_agent` is given; :mod:`gossip.cli` prints.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import threading
import tomllib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .config import Config
from .errors import ConfigError, GossipError, JoinError
from .node import Node, NodeState
from .packet import Packet
from .wire import USER_MSG

__all__ = ["CliError", "AgentSettings", "build_settings", "read_key_file", "load_toml", "run_agent",
           "AGENT_ENV", "CLIENT_ENV", "config_environ"]


class CliError(Exception):
    """A problem to report to the user in one line (no traceback)."""


AGENT_ENV = ("GOSSIP_JOIN", "GOSSIP_HTTP", "GOSSIP_KEY_FILE", "GOSSIP_METADATA")
"""Variables the agent reads itself (they name no :class:`Config` field)."""
CLIENT_ENV = ("GOSSIP_AGENT",)
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
    unknown = sorted(set(agent_table) - {"join", "http", "key_file", "receive"})
    if unknown:
        raise CliError(f"config file {path}: unknown [agent] setting(s) {', '.join(unknown)} "
                       "(expected join, http, key_file, receive)")
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

    key_file = args.key_file or environ.get("GOSSIP_KEY_FILE") or agent_table.get("key_file")
    if key_file:
        keys = read_key_file(str(key_file))
        cfg.encryption_key, cfg.secondary_keys = keys[0], keys[1:]

    if args.join:
        join = list(args.join)
    elif environ.get("GOSSIP_JOIN"):
        join = [p.strip() for p in environ["GOSSIP_JOIN"].split(",") if p.strip()]
    else:
        join = [str(p) for p in agent_table.get("join", [])]
    http = args.http or environ.get("GOSSIP_HTTP") or agent_table.get("http") or None

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
    return AgentSettings(cfg, join, str(http) if http else None, metadata, receive)


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
    never does.

    Raises:
        CliError: the node or the HTTP server cannot start.
    """
    from .cluster import Cluster
    from .httpapi import HttpServer, app

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
    try:
        api = app(cluster) if settings.http else None
        if api is not None:
            from .dashboard import app as dashboard_app

            api.fallback = dashboard_app(cluster, hub=api.hub)   # the page at /

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
            server = HttpServer(api, settings.http, on_stop=api.close)
            try:
                server.start()
            except GossipError as exc:
                raise CliError(str(exc)) from None
            say(f"http on {server.url} (dashboard at /; /metrics, /api/members, /api/events, /api/send, "
                "/api/explain)")
        if settings.join:
            say(f"joining {', '.join(settings.join)} ...")
            try:
                n = cluster.join(settings.join)
                say(f"joined through {n} peer(s); {cluster.num_alive_nodes()} alive")
            except JoinError as exc:
                warn(f"warning: {exc}; retrying while alone")
        stop.wait()
        say("leaving...")
    finally:
        if server is not None:
            server.stop()
        cluster.stop()
    return 0

