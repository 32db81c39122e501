from __future__ import annotations

import datetime
import ipaddress
import ssl
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from playwright.sync_api import Browser

from tests.e2e.browser import launched
from tests.e2e.harness import MlflowServer, Receiver, write_config
from tests.e2e.replicas import Replica, replica_env
from tests.pg import PgDatabase

# MLflow warns that stages are deprecated on every transition; the watcher exists for them.
warnings.filterwarnings("ignore", category=FutureWarning)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """One real MLflow server for the session (for each xdist worker: its own); tests keep
    apart by using their own models."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the session (each xdist worker: its own); every test opens
    its own context, with its own cookies."""
    with launched() as chromium:
        yield chromium


@pytest.fixture
def client(mlflow_server: MlflowServer) -> Any:
    return mlflow_server.client()


def create_versions(client: Any, name: str, count: int) -> None:
    client.create_registered_model(name)
    for i in range(1, count + 1):
        client.create_model_version(name, f"s3://bucket/models/{name}/{i}")


def config_in(
    tmp_path: Path, server: MlflowServer, receiver: Receiver, models: str, **options: Any
) -> Path:
    """tmp_path/watcher.toml (write_config's) on this server and receiver, its state in
    tmp_path/state.db; options override any of write_config's arguments."""
    values: dict[str, Any] = {
        "tracking_uri": server.url,
        "webhook_url": receiver.url,
        "state": tmp_path / "state.db",
        "models": models,
        **options,
    }
    return write_config(tmp_path / "watcher.toml", **values)


class ConfigFor(Protocol):
    def __call__(self, models: str, **options: Any) -> Path: ...


@pytest.fixture
def config_for(mlflow_server: MlflowServer, receiver: Receiver, tmp_path: Path) -> ConfigFor:
    """config_in for this test: its tmp_path, the session's server and its receiver."""

    def make(models: str, **options: Any) -> Path:
        return config_in(tmp_path, mlflow_server, receiver, models, **options)

    return make


def watch_model(
    client: Any,
    server: MlflowServer,
    receiver: Receiver,
    name: str,
    tmp_path: Path,
    *,
    versions: int,
    **config: str,
) -> tuple[Path, Path]:
    """A model with versions, and a config watching only it: (config file, state file)."""
    create_versions(client, name, versions)
    return config_in(tmp_path, server, receiver, name, **config), tmp_path / "state.db"


class Watch(Protocol):
    def __call__(self, versions: int = 1, **config: str) -> tuple[Path, Path]: ...


@pytest.fixture
def watch(
    client: Any, mlflow_server: MlflowServer, receiver: Receiver, model_name: str, tmp_path: Path
) -> Watch:
    """watch_model for this test's model, server, receiver and tmp_path."""

    def make(versions: int = 1, **config: str) -> tuple[Path, Path]:
        return watch_model(
            client, mlflow_server, receiver, model_name, tmp_path, versions=versions, **config
        )

    return make


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@pytest.fixture
def private_ca(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA of our own and a server certificate for 127.0.0.1 signed by it."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("watcher test CA"))
        .issuer_name(_name("watcher test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = tmp_path / "server.pem"
    chain.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + cert.public_bytes(serialization.Encoding.PEM)
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain)
    return ca_file, context


@pytest.fixture
def replicas(config_for: ConfigFor, pg_db: PgDatabase, model_name: str) -> Iterator[list[Replica]]:
    """Two replicas (not started) on one PostgreSQL state, watching ``model_name`` and polling
    every second."""
    config = config_for(model_name)
    group = [Replica(config, replica_env(pg_db), name=n) for n in ("a", "b")]
    yield group
    for replica in group:
        replica.ensure_stopped()
