"""How ``gossip agent`` layers its settings: preset < TOML file < GOSSIP_* variables < flags."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import pytest

from gossip.cli.agent import CliError, build_settings, config_environ, read_key_file
from gossip.cli import build_parser

KEY = bytes(range(32))


def agent_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["agent", *argv])


def test_defaults() -> None:
    s = build_settings(agent_args(), {})
    assert s.config.bind_addr == "127.0.0.1:7946" and s.config.health_check_interval == 1.0
    assert s.join == [] and s.http is None and s.metadata == {} and s.receive == [128]
    assert s.config.encryption_key is None


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    key_file = tmp_path / "k"
    key_file.write_text(KEY.hex() + "\n")
    conf = tmp_path / "a.toml"
    conf.write_text(f'''preset = "wan"
probe_interval = "7s"
ping_timeout = 2
cluster_label = "from-file"
tcp_pings = false

[agent]
join = ["127.0.10.1:7946"]
http = "127.0.0.1:1"
key_file = "{key_file}"
receive = [129]

[metadata]
zone = "a"
weight = 3
ratio = 0.5
primary = true
''')
    s = build_settings(agent_args("--config", str(conf)), {})
    cfg = s.config
    assert cfg.health_check_interval == 7.0 and cfg.ping_timeout == 2.0 and not cfg.tcp_pings
    assert cfg.state_sync_interval == 60.0                      # the wan preset underneath
    assert cfg.cluster_label == "from-file" and cfg.encryption_key == KEY
    assert s.join == ["127.0.10.1:7946"] and s.http == "127.0.0.1:1" and s.receive == [129]
    assert s.metadata == {"zone": "a", "weight": 3, "ratio": 0.5, "primary": True}

    env = {"GOSSIP_CLUSTER_LABEL": "from-env", "GOSSIP_PROBE_INTERVAL": "3s", "GOSSIP_JOIN": "a:1, b:2",
           "GOSSIP_HTTP": "127.0.0.1:2", "GOSSIP_METADATA": "zone=b,extra=1", "GOSSIP_TESTS_TIMEOUT_FACTOR": "2",
           "GOSSIP_AGENT": "ignored:1"}
    s = build_settings(agent_args("--config", str(conf)), env)
    assert s.config.cluster_label == "from-env" and s.config.health_check_interval == 3.0
    assert s.join == ["a:1", "b:2"] and s.http == "127.0.0.1:2"
    assert s.metadata["zone"] == "b" and s.metadata["extra"] == "1" and s.metadata["weight"] == 3

    s = build_settings(agent_args("--config", str(conf), "--label", "from-flag", "--join", "c:3",
                                  "--http", "127.0.0.1:3", "--metadata", "zone=c", "--preset", "local"), env)
    assert s.config.cluster_label == "from-flag" and s.join == ["c:3"] and s.http == "127.0.0.1:3"
    assert s.metadata["zone"] == "c"
    assert s.config.state_sync_interval == 15.0                 # --preset local beats the file's wan


@pytest.mark.parametrize("text, words", [
    ('bogus = 1\n', "bogus names no Config field"),
    ('probe_interval = "soon"\n', "probe_interval='soon' is not valid"),
    ('[agent]\nport = 1\n', "unknown [agent] setting(s) port"),
    ('[other]\nx = 1\n', "unknown table [other]"),
    ('probe_interval = \n', "not valid TOML"),
    ('probe_interval = "1s"\nping_timeout = "2s"\n', "ping_timeout: must be shorter"),
])
def test_bad_files_name_the_problem(tmp_path: Path, text: str, words: str) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text(text)
    with pytest.raises(CliError) as err:
        build_settings(agent_args("--config", str(conf)), {})
    assert words in str(err.value)


def test_bad_environment_and_flags() -> None:
    with pytest.raises(CliError, match="environment: .*GOSSIP_PROBE_INTERVAL=.*not valid"):
        build_settings(agent_args(), {"GOSSIP_PROBE_INTERVAL": "soon"})
    with pytest.raises(CliError, match="--metadata: 'novalue' is not key=value"):
        build_settings(agent_args("--metadata", "novalue"), {})
    with pytest.raises(CliError, match="cannot read config file"):
        build_settings(agent_args("--config", "/nonexistent/gossip.toml"), {})


def test_config_environ_keeps_only_config_variables() -> None:
    env = {"GOSSIP_PRESET": "wan", "GOSSIP_JOIN": "x", "GOSSIP_AGENT": "y", "GOSSIP_TESTS_TIMEOUT_FACTOR": "3",
           "GOSSIP_PROBE_INTERVAL": "2s", "HOME": "/root"}
    assert config_environ(env) == {"GOSSIP_PRESET": "wan", "GOSSIP_PROBE_INTERVAL": "2s"}


def test_key_files(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    second = bytes(16)
    f.write_text(f"# primary first\n{KEY.hex()}\n\n{base64.b64encode(second).decode()}  # old key\n")
    assert read_key_file(str(f)) == [KEY, second]
    s = build_settings(agent_args("--key-file", str(f)), {})
    assert s.config.encryption_key == KEY and s.config.secondary_keys == [second]
    for text, words in [("", "holds no key"), ("abc\n", "line 1: not hex or base64"),
                        (base64.b64encode(bytes(10)).decode(), "16, 24 or 32 bytes, this one is 10")]:
        f.write_text(text)
        with pytest.raises(CliError, match="key file") as err:
            read_key_file(str(f))
        assert words in str(err.value)
    f.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CliError, match="is not text"):
        read_key_file(str(f))


@pytest.mark.parametrize("mode, readers", [(0o644, "its group and everyone"), (0o640, "its group"),
                                           (0o604, "everyone")])
def test_a_key_file_others_can_read_is_warned_about(tmp_path: Path, mode: int, readers: str) -> None:
    key_file = tmp_path / "cluster.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(mode)
    s = build_settings(agent_args("--key-file", str(key_file)), {})
    assert s.config.encryption_key == KEY
    [warning] = s.warnings
    assert str(key_file) in warning and f"can be read by {readers}" in warning
    assert f"chmod 600 {key_file}" in warning and KEY.hex() not in warning
    key_file.chmod(0o600)
    assert build_settings(agent_args("--key-file", str(key_file)), {}).warnings == []
    key_file.chmod(0o400)
    assert build_settings(agent_args(), {"GOSSIP_KEY_FILE": str(key_file)}).warnings == []


def test_the_agent_reports_its_warnings_at_start(tmp_path: Path) -> None:
    import threading

    from gossip.cli.agent import run_agent

    key_file = tmp_path / "cluster.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o644)
    settings = build_settings(agent_args("--key-file", str(key_file), "--bind", "127.0.0.1:0"), {})
    stop = threading.Event()
    stop.set()
    said: list[str] = []
    warned: list[str] = []
    assert run_agent(settings, stop, said.append, warned.append) == 0
    assert any("can be read by" in w for w in warned)


def test_http_settings_are_layered_too(tmp_path: Path) -> None:
    conf = tmp_path / "a.toml"
    conf.write_text('[agent]\nhttp = "127.0.0.1:0"\nhttp_hosts = ["from-file"]\nhttp_token_file = "/f"\n')
    s = build_settings(agent_args("--config", str(conf)), {})
    assert s.http_hosts == ["from-file"] and s.http_token_file == "/f"
    s = build_settings(agent_args("--config", str(conf)), {"GOSSIP_HTTP_HOSTS": "a.example, b.example",
                                                          "GOSSIP_HTTP_TOKEN_FILE": "/e"})
    assert s.http_hosts == ["a.example", "b.example"] and s.http_token_file == "/e"
    s = build_settings(agent_args("--config", str(conf), "--http-host", "c", "--http-token-file", "/c"), {})
    assert s.http_hosts == ["c"] and s.http_token_file == "/c"
    assert build_settings(agent_args("--insecure"), {}).config.insecure is True


def test_tags_from_flags_the_environment_and_the_file(tmp_path: Path) -> None:
    assert build_settings(agent_args("--tag", "gpu", "--tag", "eu"), {}).config.tags == {"gpu", "eu"}
    assert set(build_settings(agent_args(), {"GOSSIP_TAGS": "a,b"}).config.tags) == {"a", "b"}
    with pytest.raises(CliError, match="tags"):
        build_settings(agent_args("--tag", "not a tag"), {})
