"""The former path of ``gossip agent``'s settings and node, kept so that ``gossip.agent``
imports keep working; everything lives in :mod:`gossip.cli.agent`."""

from __future__ import annotations

from .cli.agent import (
    AGENT_ENV,
    CLIENT_ENV,
    AgentSettings,
    CliError,
    build_settings,
    config_environ,
    load_toml,
    read_key_file,
    read_token_file,
    run_agent,
    secret_file_warning,
    token_path,
    write_token_file,
)

__all__ = ["CliError", "AgentSettings", "build_settings", "read_key_file", "load_toml", "run_agent",
           "AGENT_ENV", "CLIENT_ENV", "config_environ", "token_path", "write_token_file",
           "read_token_file", "secret_file_warning"]
