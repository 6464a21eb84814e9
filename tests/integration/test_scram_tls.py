"""SASL/SCRAM-SHA-256 and -512, and TLS, end to end (issue 23, item 6).

tansu ``--authentication`` speaks SCRAM, but on the memory storage (the only local one) no user
can be created (see ``tests/integration/test_sasl.py``), so the Kafka-protocol front end of that
module is extended here: :class:`ScramSaslProxy` runs the server side of SCRAM (RFC 5802, as
Apache Kafka does: salted password, server nonce, client proof checked against the stored key,
server signature returned) and, given a certificate, terminates TLS. The certificate is made for
127.0.0.1 by ``openssl`` at the start of the module; clients verify it against
``CONVSTREAM_SSL_CAFILE``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import shutil
import ssl
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convstream.stream.broker import free_port
from convstream.stream.kafka import BrokerUnavailable, ensure_topics, produce, read_topic
from convstream.stream.runner import wait_for_labels
from convstream.stream.settings import Settings
from tests.integration.test_sasl import (
    API_VERSIONS,
    PASSWORD,
    SASL_AUTHENTICATE,
    SASL_AUTHENTICATION_FAILED,
    SASL_HANDSHAKE,
    UNSUPPORTED_SASL_MECHANISM,
    USER,
    WRONG,
    PlainSaslProxy,
    _body_offset,
    _frame,
    _read_frame,
    _settings,
    _start_tansu,
    _stop,
    _string,
    _traffic,
)
from tests.integration.traffic import key

pytestmark = pytest.mark.integration

ITERATIONS = 4096
HASHES = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}


class ScramSaslProxy(PlainSaslProxy):
    """A front end that accepts SCRAM-SHA-256 and SCRAM-SHA-512 (not PLAIN), over TLS when given
    ``tls`` (a server context); ``mechanisms`` counts the mechanism of each successful login."""

    def __init__(self, upstream_port: int, users: dict[str, str], tls: ssl.SSLContext | None):
        super().__init__(upstream_port, users)
        self.tls = tls
        self.mechanisms: dict[str, int] = {}

    def start(self) -> ScramSaslProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, self.port, ssl=self.tls), self._loop
        ).result(5)
        return self

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        mechanism = None
        scram: dict[str, Any] = {}
        while True:
            request = await _read_frame(reader)
            api_key, version, correlation_id = struct.unpack_from(">hhi", request)
            header = struct.pack(">i", correlation_id)
            if api_key == API_VERSIONS:
                up_writer.write(_frame(request))
                await up_writer.drain()
                writer.write(_frame(await _read_frame(up_reader)))
            elif api_key == SASL_HANDSHAKE:
                at = _body_offset(request)
                size = struct.unpack_from(">h", request, at)[0]
                mechanism = request[at + 2 : at + 2 + size].decode()
                error = 0 if mechanism in HASHES else UNSUPPORTED_SASL_MECHANISM
                body = struct.pack(">hi", error, len(HASHES))
                body += b"".join(_string(m) for m in HASHES)
                if error:  # counted before the reply: the client may read it before we resume
                    self.outcomes["refused"] += 1
                writer.write(_frame(header + body))
                if error:
                    await writer.drain()
                    return False
            elif api_key == SASL_AUTHENTICATE and mechanism in HASHES:
                at = _body_offset(request)
                size = struct.unpack_from(">i", request, at)[0]
                token = request[at + 4 : at + 4 + size].decode()
                reply, done, ok = self._scram_step(mechanism, scram, token)
                error = 0 if ok else SASL_AUTHENTICATION_FAILED
                message = None if ok else "Authentication failed during authentication"
                body = struct.pack(">h", error) + _string(message)
                data = reply.encode()
                body += struct.pack(">i", len(data)) + data
                if version >= 1:
                    body += struct.pack(">q", 0)
                if not ok:  # counted before the reply, as above
                    self.outcomes["denied"] += 1
                elif done:
                    self.outcomes["ok"] += 1
                    self.mechanisms[mechanism] = self.mechanisms.get(mechanism, 0) + 1
                writer.write(_frame(header + body))
                await writer.drain()
                if not ok:
                    return False
                if done:
                    return True
                continue
            else:
                self.outcomes["refused"] += 1
                return False
            await writer.drain()

    def _scram_step(self, mechanism: str, state: dict[str, Any], token: str):
        """(reply, finished, ok) for one client message of RFC 5802's exchange."""
        digest = HASHES[mechanism]
        if "nonce" not in state:  # client-first: "n,,n=user,r=nonce"
            _gs2, _authzid, bare = token.split(",", 2)
            fields = dict(part.split("=", 1) for part in bare.split(","))
            password = self.users.get(fields.get("n", ""))
            salt = os.urandom(16)
            nonce = fields["r"] + base64.b64encode(os.urandom(18)).decode()
            first = f"r={nonce},s={base64.b64encode(salt).decode()},i={ITERATIONS}"
            # An unknown user is denied at the proof, as Kafka does: the reply gives nothing away.
            salted = hashlib.pbkdf2_hmac(
                digest().name, (password or os.urandom(8).hex()).encode(), salt, ITERATIONS
            )
            state.update(nonce=nonce, bare=bare, first=first, salted=salted)
            return first, False, True
        without_proof, _, proof = token.rpartition(",p=")  # client-final
        fields = dict(part.split("=", 1) for part in without_proof.split(","))
        if fields.get("r") != state["nonce"]:
            return "e=other-error", True, False
        auth = f"{state['bare']},{state['first']},{without_proof}".encode()
        client_key = hmac.new(state["salted"], b"Client Key", digest).digest()
        stored = digest(client_key).digest()
        signature = hmac.new(stored, auth, digest).digest()
        given = base64.b64decode(proof)
        recovered = bytes(a ^ b for a, b in zip(given, signature, strict=False))
        if len(given) != len(signature) or digest(recovered).digest() != stored:
            return "e=invalid-proof", True, False
        server_key = hmac.new(state["salted"], b"Server Key", digest).digest()
        verifier = base64.b64encode(hmac.new(server_key, auth, digest).digest()).decode()
        return f"v={verifier}", True, True


def _self_signed(where: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own CA), made by openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is needed to make the test certificate (Debian package openssl)")
    cert, private = where / f"{name}.pem", where / f"{name}-key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(private), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, private


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _self_signed(tmp_path_factory.mktemp("tls"), "broker")


def _proxy(tmp_path_factory, certificate, tls: bool) -> Iterator[ScramSaslProxy]:
    log = tmp_path_factory.mktemp("tansu-scram") / "tansu.log"
    context = None
    if tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
    upstream = free_port()
    proxy = ScramSaslProxy(upstream, {USER: PASSWORD}, context)
    tansu = _start_tansu(upstream, proxy.port, log)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
        _stop(tansu)


@pytest.fixture(scope="module")
def scram_broker(tmp_path_factory, certificate) -> Iterator[ScramSaslProxy]:
    yield from _proxy(tmp_path_factory, certificate, tls=False)


@pytest.fixture(scope="module")
def scram_tls_broker(tmp_path_factory, certificate) -> Iterator[ScramSaslProxy]:
    yield from _proxy(tmp_path_factory, certificate, tls=True)


def _scram_settings(proxy, tmp_path, mechanism, password=PASSWORD, cafile="") -> Settings:
    url = f"kafka://127.0.0.1:{proxy.port}"
    return _settings(url, tmp_path, password).replace(sasl_mechanism=mechanism, ssl_cafile=cafile)


async def _roundtrip(settings: Settings) -> list[str]:
    await ensure_topics(settings)
    await produce(settings, _traffic(3))
    return sorted([r["value"]["event_id"] async for r in read_topic(settings, "conversions")])


@pytest.mark.parametrize("mechanism", sorted(HASHES))
def test_raw_clients_log_in_with_scram(scram_broker, tmp_path, mechanism):
    before = scram_broker.mechanisms.get(mechanism, 0)
    refused, denied = scram_broker.outcomes["refused"], scram_broker.outcomes["denied"]
    settings = _scram_settings(scram_broker, tmp_path, mechanism)
    assert asyncio.run(_roundtrip(settings)) == ["order-0", "order-1", "order-2"]
    assert scram_broker.mechanisms[mechanism] > before
    assert (scram_broker.outcomes["refused"], scram_broker.outcomes["denied"]) == (refused, denied)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "PLAIN"])
def test_a_wrong_password_or_mechanism_is_refused(scram_broker, tmp_path, mechanism):
    password = WRONG if mechanism != "PLAIN" else PASSWORD
    outcome = "denied" if mechanism != "PLAIN" else "refused"
    before = scram_broker.outcomes[outcome]
    settings = _scram_settings(scram_broker, tmp_path, mechanism, password=password)
    with pytest.raises(BrokerUnavailable, match=f"SASL/{mechanism}"):
        asyncio.run(ensure_topics(settings, timeout=10))
    assert scram_broker.outcomes[outcome] > before


def test_worker_labels_over_tls_with_scram(scram_tls_broker, certificate, start_worker, tmp_path):
    settings = _scram_settings(
        scram_tls_broker, tmp_path, "SCRAM-SHA-256", cafile=str(certificate[0])
    )
    asyncio.run(ensure_topics(settings))
    start_worker(settings, name="scram-tls-worker")
    asyncio.run(produce(settings, _traffic(4)))
    labels = wait_for_labels(settings, {key(i) for i in range(4)}, timeout=120, settle=2)
    assert {lab["conversion_key"] for lab in labels} == {key(i) for i in range(4)}
    assert all(lab["match_method"] == "deterministic:click" for lab in labels)
    assert scram_tls_broker.mechanisms["SCRAM-SHA-256"] >= 3  # worker, replay, reader


def test_tls_is_verified_against_the_ca_file(scram_tls_broker, certificate, tmp_path):
    """Only the broker's own CA is trusted: another CA, or no TLS at all, cannot connect."""
    right = _scram_settings(scram_tls_broker, tmp_path, "SCRAM-SHA-512", cafile=str(certificate[0]))
    assert asyncio.run(_roundtrip(right)) == ["order-0", "order-1", "order-2"]
    stranger, _ = _self_signed(tmp_path, "stranger")
    for cafile in (str(stranger), ""):
        wrong = _scram_settings(scram_tls_broker, tmp_path, "SCRAM-SHA-512", cafile=cafile)
        with pytest.raises(BrokerUnavailable):
            asyncio.run(ensure_topics(wrong, timeout=10))
