"""The [state] section: SQLite at a path, or PostgreSQL at a URL whose password never sits in
the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import load_text as load
from watcher.config import load_config
from watcher.errors import ConfigError

URL = "postgresql://watcher@db.internal:5432/mlflow"


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, env)
    return str(caught.value)


def test_the_default_state_is_a_sqlite_file(tmp_path: Path) -> None:
    state = load(tmp_path, "").state
    assert not state.shared
    assert state.url is None
    assert state.display == ".watcher/state.db"


def test_a_postgresql_url_with_a_namespace_and_a_password_from_the_environment(
    tmp_path: Path,
) -> None:
    text = f'[state]\nurl = "{URL}"\nnamespace = "fraud_team"\npassword_env = "PGPW"\n'
    state = load(tmp_path, text, {"PGPW": "hunter2-secret"}).state
    assert state.shared
    assert state.namespace == "fraud_team"
    assert state.password is not None
    assert state.password.reveal() == "hunter2-secret"
    assert "hunter2" not in repr(state)
    assert state.display == f"{URL} (namespace fraud_team)"


def test_a_password_file_is_read_and_never_shown(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("file-secret-42\n")
    state = load(tmp_path, f'[state]\nurl = "{URL}"\npassword_file = "{secret}"\n').state
    assert state.password is not None
    assert state.password.reveal() == "file-secret-42"
    assert "file-secret-42" not in repr(state)


def test_a_password_in_the_config_files_url_is_refused_without_showing_it(
    tmp_path: Path,
) -> None:
    message = problems(tmp_path, '[state]\nurl = "postgresql://w:hunter2@db/m"\n')
    assert "state.url" in message
    assert "hunter2" not in message
    assert "password_env" in message


def test_a_whole_url_with_its_password_may_come_from_the_environment(tmp_path: Path) -> None:
    env = {"WATCHER_STATE__URL": "postgresql://w:hunter2@db/m"}
    state = load_config(None, env).state
    assert state.url == "postgresql://w:hunter2@db/m"
    assert "hunter2" not in state.display
    assert "hunter2" not in repr(state)


def test_the_environments_url_wins_over_the_files_path(tmp_path: Path) -> None:
    env = {"WATCHER_STATE__URL": URL}
    state = load(tmp_path, '[state]\npath = "/var/lib/w/state.db"\n', env).state
    assert state.url == URL


def test_path_and_url_in_one_file_are_refused(tmp_path: Path) -> None:
    message = problems(tmp_path, f'[state]\npath = "s.db"\nurl = "{URL}"\n')
    assert "state.path" in message
    assert "set only one" in message


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ('url = "mysql://db/x"', "state.url", "postgresql://"),
        ('url = "postgresql://x@db/y"\nnamespace = "Fraud-Team"', "state.namespace", "lower-case"),
        ('url = "postgresql://x@db/y"\nlease = "2s"', "state.lease", "from 5s to 2m"),
        ('url = "postgresql://x@db/y"\npassword_env = "UNSET_VAR"', "state.password_env", "set"),
        ('namespace = "team"', "state.namespace", "PostgreSQL"),
        ('lease = "10s"', "state.lease", "PostgreSQL"),
    ],
)
def test_bad_state_keys_name_the_key_and_what_was_expected(
    tmp_path: Path, text: str, key: str, expected: str
) -> None:
    message = problems(tmp_path, f"[state]\n{text}\n")
    assert key in message
    assert expected in message


def test_a_url_in_the_file_wins_over_a_path_from_the_environment(tmp_path: Path) -> None:
    """The systemd unit and the image set WATCHER_STATE__PATH for SQLite; a config file that
    names a PostgreSQL state means it."""
    env = {"WATCHER_STATE__PATH": "/var/lib/mlflow-watcher/state.db"}
    state = load(tmp_path, f'[state]\nurl = "{URL}"\n', env).state
    assert state.url == URL
