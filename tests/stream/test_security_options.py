"""Which SASL mechanism and transport every client is given (convstream/stream/kafka.py)."""

from __future__ import annotations

import ssl
import subprocess

import pytest

from convstream.stream.app import _credentials
from convstream.stream.kafka import client_options
from convstream.stream.settings import Settings


def test_plaintext_by_default():
    assert client_options(Settings()) == {"bootstrap_servers": "127.0.0.1:9092"}
    assert _credentials(Settings()) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_mechanism_reaches_raw_clients_and_faust(mechanism):
    s = Settings.from_env(
        {"CONVSTREAM_SASL_MECHANISM": mechanism}, sasl_username="u", sasl_password="p"
    )
    options = client_options(s)
    assert options["sasl_mechanism"] == mechanism
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("u", "p")
    assert str(_credentials(s).mechanism.value) == mechanism


def test_an_unknown_mechanism_is_refused_at_startup():
    with pytest.raises(ValueError, match="CONVSTREAM_SASL_MECHANISM"):
        Settings(sasl_mechanism="SCRAM-SHA-1")


def test_tls_with_and_without_sasl(tmp_path):
    cert = tmp_path / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(tmp_path / "key.pem"), "-out", str(cert), "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    alone = Settings(ssl_cafile=str(cert))
    assert client_options(alone)["security_protocol"] == "SSL"
    assert isinstance(client_options(alone)["ssl_context"], ssl.SSLContext)
    assert _credentials(alone).context is not None
    both = alone.replace(sasl_username="u", sasl_password="p", sasl_mechanism="SCRAM-SHA-512")
    assert client_options(both)["security_protocol"] == "SASL_SSL"
    assert isinstance(client_options(both)["ssl_context"], ssl.SSLContext)
