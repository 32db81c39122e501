"""The [console] section (credentials from the environment or a file only, a clear error for a
console nobody could sign in to, redaction), the console's server on real sockets, and the
`console` command."""

from __future__ import annotations

import socket
import tomllib
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import free_port
from tests.helpers import load_text as load
from watcher.cli import cli
from watcher.config import Config, ConsoleConfig, Secret, effective_config, to_toml
from watcher.console import start_console
from watcher.console.server import ConsoleServer
from watcher.errors import ConfigError, ExitCode, WatcherError
from watcher.store import Store

TOKEN = "tok-5ecret-console"
PASSWORD = "pw-5ecret-console"


def test_the_console_is_off_unless_listen_is_set(tmp_path: Path) -> None:
    config = load(tmp_path, "")
    assert config.console == ConsoleConfig()
    assert config.console.listen is None
    assert effective_config(config)["console"] == {"listen": "", "read_only": False}


def test_credentials_come_from_the_environment_or_a_file(tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    config = load(
        tmp_path,
        '[console]\nlisten = "127.0.0.1:9470"\ntoken_env = "CONSOLE_TOKEN"\n'
        f'username = "alice"\npassword_file = "{tmp_path / "password"}"\n'
        'trusted_header = "X-Forwarded-User"\nread_only = true\n'
        'session_key_env = "CONSOLE_KEY"\n',
        {"CONSOLE_TOKEN": TOKEN, "CONSOLE_KEY": "k3y-5ecret"},
    )
    console = config.console
    assert console.listen == ("127.0.0.1", 9470)
    assert console.token == Secret(TOKEN, "x")
    assert console.password == Secret(PASSWORD, "x")
    assert (console.username, console.trusted_header, console.read_only) == (
        "alice",
        "X-Forwarded-User",
        True,
    )
    shown = to_toml(effective_config(config)) + repr(config) + repr(console)
    for secret in (TOKEN, PASSWORD, "k3y-5ecret"):
        assert secret not in shown
    parsed = tomllib.loads(to_toml(effective_config(config)))["console"]
    assert parsed["token"] == "<redacted, from env:CONSOLE_TOKEN>"
    assert parsed["listen"] == "127.0.0.1:9470"


@pytest.mark.parametrize("key", ["token", "password", "session_key"])
def test_a_secret_in_the_config_file_itself_is_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f'[console]\ntoken_env = "T"\n{key} = "in-the-file"\n', {"T": TOKEN})
    assert info.value.problems[0].startswith(f"console.{key}: unknown key")
    assert "in-the-file" not in str(info.value)


def test_a_console_nobody_can_sign_in_to_is_a_config_error_naming_the_keys(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[console]\nlisten = "127.0.0.1:9470"\nread_only = true\n')
    (problem,) = info.value.problems
    assert info.value.exit_code == ExitCode.USAGE
    assert problem.startswith("console.listen: the console needs a credential")
    for key in ("token_env", "token_file", "username", "password_env", "trusted_header"):
        assert f"console.{key}" in problem


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('username = "alice"', "console.username: wants console.password_env"),
        ('password_env = "P"', "console.password_env: wants console.username"),
        ('trusted_header = "X Forwarded"', "console.trusted_header: got 'X Forwarded'"),
        ('listen = "nowhere"', "console.listen: got 'nowhere'"),
        ('token_env = "UNSET"', "console.token_env: got 'UNSET'"),
    ],
)
def test_bad_console_keys_are_problems(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[console]\n{text}\n", {"P": PASSWORD})
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems


def test_a_trusted_header_alone_is_a_way_in_and_the_environment_sets_listen(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        '[console]\ntrusted_header = "X-Forwarded-User"\n',
        {"WATCHER_CONSOLE__LISTEN": "[::1]:9470", "WATCHER_CONSOLE__READ_ONLY": "yes"},
    )
    assert config.console.display_listen == "[::1]:9470"
    assert config.console.read_only
    assert config.console.has_way_in


# --------------------------------------------------------------------------- the server


def _config(listen: tuple[str, int]) -> Config:
    return Config(console=ConsoleConfig(listen=listen, token=Secret(TOKEN, "env:T")))


def test_the_console_serves_over_http_and_stops(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store:
        server = start_console(_config(("127.0.0.1", 0)), store)
        host, port = server.address
        with urllib.request.urlopen(f"http://{host}:{port}/login", timeout=10) as answer:
            assert answer.status == 200
            assert answer.headers["X-Frame-Options"] == "DENY"
            assert 'id="login"' in answer.read().decode()
        server.stop()
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, port), 2):
            pass


def test_a_port_in_use_and_an_address_not_here_are_clear_errors(tmp_path: Path) -> None:
    with socket.socket() as taken, Store.open(tmp_path / "state.db") as store:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WatcherError, match=rf"cannot listen on 127\.0\.0\.1:{port}.*console"):
            start_console(_config(("127.0.0.1", port)), store)
        with pytest.raises(ConfigError, match=r"console\.listen: cannot listen on 192\.0\.2\.1"):
            start_console(_config(("192.0.2.1", free_port())), store)


def test_starting_without_a_way_in_is_refused(tmp_path: Path) -> None:
    with Store.open(tmp_path / "state.db") as store, pytest.raises(ConfigError) as info:
        start_console(Config(console=ConsoleConfig(listen=("127.0.0.1", 0))), store)
    assert "console.listen: the console needs a credential" in str(info.value)


def test_the_server_stops_even_when_never_asked_anything() -> None:
    server = ConsoleServer(ConsoleConfig(listen=("127.0.0.1", 0)), lambda env, start: [])
    server.start()
    server.stop()
    server.stop()  # twice is harmless
    assert server.address[0] == "127.0.0.1"


# --------------------------------------------------------------------------- the command


def test_the_console_command_wants_an_address(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n')
    result = CliRunner().invoke(cli, ["console", "--config", str(config)])
    assert result.exit_code == ExitCode.USAGE
    assert "set [console] listen or --listen" in result.output


def test_the_console_command_refuses_a_listen_without_credentials(tmp_path: Path) -> None:
    config = tmp_path / "watcher.toml"
    config.write_text(f'[state]\npath = "{tmp_path / "state.db"}"\n')
    Store.open(tmp_path / "state.db").close()
    result = CliRunner().invoke(
        cli, ["console", "--config", str(config), "--listen", f"127.0.0.1:{free_port()}"]
    )
    assert isinstance(result.exception, ConfigError)
    assert "the console needs a credential" in str(result.exception)
