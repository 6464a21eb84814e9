"""Plain aiokafka clients for the tools around the worker: topic setup, replay, reading topics.

Reading "to the current end" takes the end from fetch responses (the high watermark), not from
ListOffsets: tansu 0.6 answers ListOffsets(latest) with the last batch's base offset + 1 when a
batch holds several records, which would stop a reader short.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from convstream.stream.errors import UserError
from convstream.stream.settings import INPUT_TOPICS, INTERNAL_TOPICS, OUTPUT_TOPICS, Settings

KEY_FIELDS = {
    "impressions": "user_id",
    "clicks": "user_id",
    "identity": "user_id",
}


class TopicMissing(UserError, RuntimeError):
    """A topic a tool reads is not on the broker (a RuntimeError, as it was before)."""


class BrokerUnavailable(ConnectionError):
    """The broker cannot be reached or refused convstream's login: one sentence for people."""

    def __init__(self, settings: Settings) -> None:
        if settings.sasl_username:
            how = (
                f"with SASL/{settings.sasl_mechanism} as user {settings.sasl_username!r}: "
                "authentication failed or the broker is unreachable. Check "
                "CONVSTREAM_SASL_USERNAME and CONVSTREAM_SASL_PASSWORD, and that the broker "
                f"offers SASL/{settings.sasl_mechanism} (CONVSTREAM_SASL_MECHANISM)"
            )
        else:
            how = (
                "without authentication: the broker is unreachable, or it requires SASL "
                "(set CONVSTREAM_SASL_USERNAME and CONVSTREAM_SASL_PASSWORD)"
            )
        super().__init__(f"cannot connect to the Kafka broker at {settings.bootstrap} {how}")


async def start_client(client: Any, settings: Settings) -> None:
    """``await client.start()``; a failed bootstrap (aiokafka swallows the SASL error into a
    log line and raises 'Unable to bootstrap') becomes :class:`BrokerUnavailable`."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        # a client that failed to start still holds its connections; close it, or asyncio
        # reports "Unclosed AIOKafkaConsumer" on top of the one line the person should see
        close = getattr(client, "stop", None) or client.close
        with contextlib.suppress(Exception):
            await close()
        raise BrokerUnavailable(settings) from exc


def client_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every raw client (bootstrap, SASL, TLS)."""
    options: dict[str, Any] = {"bootstrap_servers": settings.bootstrap}
    if settings.sasl_username:
        options.update(
            security_protocol="SASL_SSL" if settings.ssl_cafile else "SASL_PLAINTEXT",
            sasl_mechanism=settings.sasl_mechanism,
            sasl_plain_username=settings.sasl_username,
            sasl_plain_password=settings.sasl_password,
        )
    elif settings.ssl_cafile:
        options["security_protocol"] = "SSL"
    if settings.ssl_cafile:
        options["ssl_context"] = ssl.create_default_context(cafile=settings.ssl_cafile)
    return options


async def ensure_topics(settings: Settings, *, timeout: float = 30.0) -> None:
    """Create every topic convstream uses with the configured partition count (idempotent)."""
    names = [settings.topic(n) for n in (*INPUT_TOPICS, *INTERNAL_TOPICS, *OUTPUT_TOPICS)]
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=int(timeout * 1000))
    await start_client(admin, settings)
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=settings.partitions, replication_factor=1)
            for name in names
            if name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
    finally:
        await admin.close()


def message_key(topic: str, value: Any) -> bytes | None:
    """The key a producer of ``topic`` uses: user_id, or the conversion key."""
    if not isinstance(value, dict):
        return None
    if topic in KEY_FIELDS:
        key = value.get(KEY_FIELDS[topic])
        return str(key).encode() if key is not None else None
    if topic in ("conversions", "feedback"):
        parts = [value.get(f) for f in ("advertiser_id", "event_name", "event_id")]
        if all(isinstance(p, str | int) for p in parts):
            return ":".join(str(p) for p in parts).encode()
    return None


def encode_value(value: Any) -> bytes:
    """Objects become JSON; a string is sent as it is (replays of malformed input)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    return orjson.dumps(value)


async def produce(
    settings: Settings,
    lines: Iterable[dict[str, Any]],
    *,
    rate: float = 0.0,
    progress: bool = False,
    total: int | None = None,
) -> int:
    """Produce replay lines in order (``rate`` events/s, 0 = as fast as possible)."""
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=20, max_batch_size=262144)
    await start_client(producer, settings)
    sent = 0
    started = shown = time.monotonic()
    try:
        pending = []
        for line in lines:
            topic = line["topic"]
            value = line["value"]
            pending.append(
                await producer.send(
                    settings.topic(topic), encode_value(value), key=message_key(topic, value)
                )
            )
            sent += 1
            if rate > 0:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending.clear()
                # in place on a terminal; in a log file, a line every 10 s
                if progress and (sys.stderr.isatty() or time.monotonic() - shown >= 10.0):
                    _progress(sent, total, started)
                    shown = time.monotonic()
        await asyncio.gather(*pending)
        await producer.flush()
    finally:
        await producer.stop()
    if progress:
        _progress(sent, total, started, final=True)
    return sent


def _progress(sent: int, total: int | None, started: float, *, final: bool = False) -> None:
    """Redraw the bar in place on a terminal; in a log, one line each call."""
    tty = sys.stderr.isatty()
    elapsed = max(time.monotonic() - started, 1e-9)
    if total:
        width = 30
        done = int(width * sent / total)
        bar = "#" * done + "-" * (width - done)
        text = f"\r[{bar}] {sent}/{total} events, {sent / elapsed:,.0f} ev/s"
    else:
        text = f"\r{sent} events, {sent / elapsed:,.0f} ev/s"
    if not tty:
        text = text.lstrip("\r") + "\n"
    elif final:
        text += "\n"
    sys.stderr.write(text)
    sys.stderr.flush()


async def read_topic(
    settings: Settings,
    topic: str,
    *,
    follow: bool = False,
    idle_timeout: float = 1.0,
    raw: bool = False,
) -> AsyncIterator[dict[str, Any]]:
    """Yield every record of ``topic`` from the beginning to its current end (or forever).

    Each item is ``{"partition", "offset", "key", "value"}`` with the value decoded as JSON
    (or left as bytes with ``raw``; a tombstone is None either way).
    """
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await start_client(consumer, settings)
    try:
        physical = settings.topic(topic)
        partitions = await _partitions(consumer, physical)
        tps = [TopicPartition(physical, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while True:
            batch = await consumer.getmany(*tps, timeout_ms=int(idle_timeout * 1000))
            for tp, records in batch.items():
                for r in records:
                    yield {
                        "partition": tp.partition,
                        "offset": r.offset,
                        "key": r.key.decode("utf-8", "replace") if r.key else None,
                        "value": r.value if raw or r.value is None else orjson.loads(r.value),
                    }
            if follow or batch:
                continue
            ends = [await _at_end(consumer, tp) for tp in tps]
            if all(ends):
                return
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    for _ in range(20):
        if topic in await consumer.topics():
            partitions = consumer.partitions_for_topic(topic)
            if partitions:
                return sorted(partitions)
        await asyncio.sleep(0.1)
    raise TopicMissing(
        f"topic {topic!r} does not exist on the broker: nothing was replayed to it yet, or "
        "--topic-prefix differs"
    )


async def _at_end(consumer: AIOKafkaConsumer, tp: TopicPartition) -> bool:
    """True when our position reached the high watermark of the last fetch response."""
    highwater = consumer.highwater(tp)
    position = await consumer.position(tp)
    if highwater is None:
        return position >= (await consumer.end_offsets([tp]))[tp]
    return position >= highwater
