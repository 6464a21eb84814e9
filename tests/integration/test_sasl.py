"""SASL/PLAIN end to end: the raw clients, ``convstream worker`` and ``convstream replay``.

tansu 0.6 (the embedded broker) authenticates with SCRAM-SHA-512, SCRAM-SHA-256 and OAUTHBEARER
only; it has no PLAIN, the one mechanism convstream speaks (``convstream/stream/kafka.py``,
``convstream/stream/app.py``). Its users are created with ``tansu user create --broker ...``, which
talks
to the running broker without authenticating, so with ``--authentication`` on the memory storage
(the only local one: ``file://`` and ``sqlite://`` are not built in) no user can ever be made:

- ``test_tansu_with_authentication_*`` runs convstream against tansu ``--authentication`` as it
  is: PLAIN must be refused, and refused fast and clearly.
- The other tests put :class:`PlainSaslProxy` in front of a plain tansu (which advertises the
  proxy as its address, so every connection goes through it): a Kafka-protocol front end that
  does the SaslHandshake/SaslAuthenticate exchange itself, answering a bad password with error
  58 (SASL_AUTHENTICATION_FAILED) as Apache Kafka does, and splices the connection to tansu
  once the client is in.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from convstream.stream.broker import EmbeddedBroker, free_port, tansu_binary, wait_for_port
from convstream.stream.kafka import ensure_topics, produce, read_topic
from convstream.stream.runner import settings_env, wait_for_labels
from convstream.stream.settings import Settings
from tests.integration.traffic import MIN, T0, click, conversion, key

pytestmark = pytest.mark.integration

USER, PASSWORD = "convstream-app", "s3cret-Pa55word"
WRONG = "not-the-password"
API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM = 58, 33
FAST = 15.0  # seconds within which a refused worker or replay must give up
NAMES_AUTHENTICATION = re.compile(r"authenticat|sasl", re.IGNORECASE)


# --- a SASL/PLAIN front end for tansu ----------------------------------------------------------


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    size = struct.unpack(">i", await reader.readexactly(4))[0]
    return await reader.readexactly(size)


def _frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def _string(text: str | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode()
    return struct.pack(">h", len(data)) + data


def _body_offset(request: bytes) -> int:
    """Where the body starts after a v1 request header (api key, version, correlation id,
    nullable client id); SaslHandshake v0-1 and SaslAuthenticate v0-1 are not flexible."""
    client_id_len = struct.unpack_from(">h", request, 8)[0]
    return 10 + max(client_id_len, 0)


class PlainSaslProxy:
    """Authenticate Kafka clients with SASL/PLAIN, then relay their connection to ``upstream``.

    Runs its own event loop in a thread, so synchronous tests and child processes can use it.
    ``outcomes`` counts ``ok``, ``denied`` and ``refused`` (anything before authenticating).
    """

    def __init__(self, upstream_port: int, users: dict[str, str], host: str = "127.0.0.1"):
        self.host = host
        self.port = free_port(host)
        self.upstream_port = upstream_port
        self.users = users
        self.outcomes: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task] = set()

    def start(self) -> PlainSaslProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, self.host, self.port), self._loop
        ).result(5)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._connections.add(task)
        up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        try:
            if await self._authenticate(reader, writer, up_reader, up_writer):
                await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            for w in (writer, up_writer):
                w.close()
            self._connections.discard(task)

    async def _authenticate(self, reader, writer, up_reader, up_writer) -> bool:
        while True:
            request = await _read_frame(reader)
            api_key, version, correlation_id = struct.unpack_from(">hhi", request)
            header = struct.pack(">i", correlation_id)
            if api_key == API_VERSIONS:
                up_writer.write(_frame(request))
                await up_writer.drain()
                writer.write(_frame(await _read_frame(up_reader)))
            elif api_key == SASL_HANDSHAKE:
                mechanism_len = struct.unpack_from(">h", request, _body_offset(request))[0]
                start = _body_offset(request) + 2
                mechanism = request[start : start + mechanism_len].decode()
                error = 0 if mechanism == "PLAIN" else UNSUPPORTED_SASL_MECHANISM
                body = struct.pack(">hi", error, 1) + _string("PLAIN")
                writer.write(_frame(header + body))
            elif api_key == SASL_AUTHENTICATE:
                at = _body_offset(request)
                size = struct.unpack_from(">i", request, at)[0]
                token = request[at + 4 : at + 4 + size]
                parts = token.split(b"\0")
                ok = len(parts) == 3 and self.users.get(parts[1].decode()) == parts[2].decode()
                self.outcomes["ok" if ok else "denied"] += 1
                message = None if ok else "Authentication failed: Invalid username or password"
                body = struct.pack(">h", 0 if ok else SASL_AUTHENTICATION_FAILED)
                body += _string(message) + struct.pack(">i", 0)
                if version >= 1:
                    body += struct.pack(">q", 0)  # session lifetime: no re-authentication
                writer.write(_frame(header + body))
                await writer.drain()
                if not ok:
                    return False
                return True
            else:
                # Apache Kafka drops a connection that skips authentication.
                self.outcomes["refused"] += 1
                return False
            await writer.drain()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        sink.close()


def _start_tansu(port: int, advertised_port: int, log: Path) -> subprocess.Popen:
    """A plain tansu that tells clients to connect to ``advertised_port`` (the proxy)."""
    cmd = [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{port}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{advertised_port}",
        "--storage-engine",
        "memory://tansu/",
    ]
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    proc = subprocess.Popen(
        cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    wait_for_port("127.0.0.1", port)
    return proc


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlainSaslProxy]:
    """tansu behind a SASL/PLAIN front end that knows one user."""
    log = tmp_path_factory.mktemp("tansu-sasl") / "tansu.log"
    upstream = free_port()
    proxy = PlainSaslProxy(upstream, {USER: PASSWORD})
    tansu = _start_tansu(upstream, proxy.port, log)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
        _stop(tansu)


@pytest.fixture(scope="module")
def tansu_with_authentication(tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("tansu-auth") / "tansu.log"
    with EmbeddedBroker(extra_args=["--authentication"], log_path=log) as b:
        yield b


def _settings(broker_url: str, tmp_path: Path, password: str) -> Settings:
    run = f"sasl-{uuid.uuid4().hex[:6]}"
    return Settings.from_env(
        {},
        broker=broker_url,
        topic_prefix=f"{run}.",
        app_id=f"convstream-{run}",
        partitions=2,
        data_dir=str(tmp_path / "state"),
        metrics_port=0,
        max_wait_s=6.0,
        sasl_username=USER,
        sasl_password=password,
    )


def _run_cli(settings: Settings, *args: str, timeout: float = 60) -> tuple[int, str, float]:
    """Run ``convstream <args>`` with ``settings`` in its environment: (exit code, output, s)."""
    env = {**os.environ, **settings_env(settings)}
    started = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "convstream.stream.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() + (exc.stderr or b"").decode()
        return -1, out, time.monotonic() - started
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def _traffic(n: int) -> list[dict[str, Any]]:
    lines = [click(i, T0 + i * MIN) for i in range(n)]
    lines += [conversion(i, T0 + i * MIN + 5 * MIN, click_id=f"clk-{i}") for i in range(n)]
    return lines


def _replay_file(tmp_path: Path, lines: list[dict[str, Any]]) -> Path:
    import orjson

    path = tmp_path / "replay.jsonl"
    path.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines))
    return path


# --- the right password ------------------------------------------------------------------------


def test_raw_clients_work_with_the_right_password(sasl_broker, tmp_path):
    settings = _settings(f"kafka://127.0.0.1:{sasl_broker.port}", tmp_path, PASSWORD)
    before = sasl_broker.outcomes["ok"]

    async def roundtrip() -> list[dict[str, Any]]:
        await ensure_topics(settings)
        await produce(settings, _traffic(3))
        return [r async for r in read_topic(settings, "conversions")]

    records = asyncio.run(roundtrip())
    assert sorted(r["value"]["event_id"] for r in records) == ["order-0", "order-1", "order-2"]
    assert sasl_broker.outcomes["ok"] > before
    assert sasl_broker.outcomes["refused"] == 0


def test_worker_and_replay_label_with_the_right_password(sasl_broker, start_worker, tmp_path):
    settings = _settings(f"kafka://127.0.0.1:{sasl_broker.port}", tmp_path, PASSWORD)
    asyncio.run(ensure_topics(settings))
    worker = start_worker(settings, name="sasl-worker")
    code, output, _ = _run_cli(
        settings, "replay", "--quiet", str(_replay_file(tmp_path, _traffic(8)))
    )
    assert code == 0, output
    labels = wait_for_labels(settings, {key(i) for i in range(8)}, timeout=60, settle=2)
    assert worker.alive()
    assert {lab["conversion_key"] for lab in labels} == {key(i) for i in range(8)}
    assert all(lab["match_method"] == "deterministic:click" for lab in labels)
    worker.stop()
    log = (tmp_path / "sasl-worker.log").read_text(errors="replace")
    assert PASSWORD not in log and PASSWORD not in output
    assert sasl_broker.outcomes["refused"] == 0


# --- the wrong password ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["worker", "replay"])
def test_a_wrong_password_fails_fast_and_says_authentication(sasl_broker, tmp_path, command):
    settings = _settings(f"kafka://127.0.0.1:{sasl_broker.port}", tmp_path, WRONG)
    args = ["worker", "--loglevel", "warning"] if command == "worker" else [
        "replay", "--quiet", str(_replay_file(tmp_path, _traffic(2)))
    ]  # fmt: skip
    denied = sasl_broker.outcomes["denied"]
    code, output, took = _run_cli(settings, *args, timeout=FAST + 30)
    assert code not in (0, -1), output
    assert took < FAST, f"took {took:.1f}s"
    assert NAMES_AUTHENTICATION.search(output), output
    assert WRONG not in output
    assert sasl_broker.outcomes["denied"] > denied


# --- a refused login is one clear line -------------------------------------------------------


@pytest.fixture(params=["proxy-wrong-password", "tansu-authentication"])
def refusing_broker(request, tmp_path) -> Settings:
    """A broker that refuses convstream's login: a bad password (Kafka's error 58), or tansu
    --authentication, which has no PLAIN and just drops the connection."""
    if request.param == "proxy-wrong-password":
        broker = request.getfixturevalue("sasl_broker")
        return _settings(f"kafka://127.0.0.1:{broker.port}", tmp_path, WRONG)
    broker = request.getfixturevalue("tansu_with_authentication")
    return _settings(broker.url, tmp_path, PASSWORD)


@pytest.mark.parametrize("command", ["worker", "replay"])
def test_a_refused_login_ends_in_one_clear_line_not_a_traceback(refusing_broker, tmp_path, command):
    settings = refusing_broker
    args = ["worker", "--loglevel", "warning"] if command == "worker" else [
        "replay", "--quiet", str(_replay_file(tmp_path, _traffic(2)))
    ]  # fmt: skip
    code, output, took = _run_cli(settings, *args, timeout=FAST + 30)
    assert code not in (0, -1), output
    assert took < FAST, f"took {took:.1f}s"
    assert settings.sasl_password not in output
    assert "Traceback" not in output, output
    assert NAMES_AUTHENTICATION.search(output), output
    assert USER in output and settings.bootstrap in output, output
