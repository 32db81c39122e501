"""TLS to receivers: verified by default, with a private CA through ca_bundle."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.harness import MlflowServer, Receiver, run_watcher, write_config


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
def tls_receiver(private_ca: tuple[Path, ssl.SSLContext]) -> Iterator[Receiver]:
    receiver = Receiver(tls=private_ca[1])
    receiver.start()
    yield receiver
    receiver.stop()


def test_tls_is_verified_and_a_private_ca_can_be_trusted(
    client: Any,
    mlflow_server: MlflowServer,
    tls_receiver: Receiver,
    private_ca: tuple[Path, ssl.SSLContext],
    model_name: str,
    tmp_path: Path,
) -> None:
    client.create_registered_model(model_name)
    client.create_model_version(model_name, f"s3://bucket/models/{model_name}/1")
    common = {
        "tracking_uri": mlflow_server.url,
        "webhook_url": tls_receiver.url,
        "state": tmp_path / "state.db",
        "models": model_name,
    }
    untrusted = write_config(tmp_path / "untrusted.toml", **common)
    assert run_watcher("run", "--once", "-c", str(untrusted)).returncode == 0
    client.transition_model_version_stage(model_name, "1", "Staging")

    refused = run_watcher("run", "--once", "--verbose", "-c", str(untrusted))
    assert refused.returncode == 3
    assert "certificate verify failed" in refused.stderr
    assert tls_receiver.deliveries() == []

    trusted = write_config(
        tmp_path / "trusted.toml", **common, webhook_extra=f'ca_bundle = "{private_ca[0]}"\n'
    )
    delivered = run_watcher("run", "--once", "-c", str(trusted))
    assert delivered.returncode == 0, delivered.stderr
    [delivery] = tls_receiver.deliveries()
    assert delivery.json["to_stage"] == "Staging"
