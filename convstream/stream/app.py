"""The Faust application: topics, tables and the three agents, built from one Settings object.

``create_app(settings)`` returns a ready app; the agents live in ``convstream/stream/agents/`` and
only move
messages between topics, tables and ``convstream/core/``.
"""

from __future__ import annotations

import ssl
import sys
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson

from convstream.core.identity import redact_pii
from convstream.core.partitioning import partition_for
from convstream.stream import codecs, fetch_guard, highwater, metrics
from convstream.stream.settings import ENGAGEMENT_TOPICS, INPUT_TOPICS, INTERNAL_TOPICS, Settings

#: Characters of a bad record's payload kept in its dead-letter record. Redaction costs up to
#: 1 ms per KiB on a loaded 2-core machine, so the cut comes first and is small: a typical
#: record fits whole, and a hostile one costs a few milliseconds, not seconds (bench.hostile).
DEAD_LETTER_PAYLOAD_CHARS = 4096
DEAD_LETTER_DETAIL_CHARS = 512
# Characters that end a JSON token outside strings and can be in no email or phone: a cut
# taken back to the last of them splits no email or phone, so none can hide from the redactor.
_TOKEN_ENDS = frozenset(',{}[]"\n')


def cut_for_redaction(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, then back to the end of its last whole token.

    >>> cut_for_redaction('{"note": "x", "em": "ann@example.com"}', 30)
    '{"note": "x", "em": "'
    >>> cut_for_redaction("short", 30)
    'short'
    """
    if len(text) <= limit:
        return text
    head = text[:limit]
    for i in range(len(head) - 1, -1, -1):
        if head[i] in _TOKEN_ENDS:
            return head[: i + 1]
    return ""


@dataclass
class Runtime:
    """What every agent needs: settings, topics by logical name, tables, send helpers."""

    settings: Settings
    app: faust.App
    topics: dict[str, faust.TopicT] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    logical: dict[str, str] = field(default_factory=dict)

    def active_partitions(self, topic: str) -> set[int]:
        """Partitions of ``topic`` this worker actively owns (not standbys)."""
        physical = self.settings.topic(topic)
        return {tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == physical}

    def logical_name(self, physical: str) -> str:
        return self.logical.get(physical, physical)

    async def send(self, topic: str, key: str | None, value: Any, partition: int | None = None):
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        metrics.count_sent(topic)
        return await self.topics[topic].send(key=key, value=payload, partition=partition)

    async def flush(self) -> None:
        """Wait until everything sent so far (table changelogs included) is in the broker."""
        await self.app.producer.flush()

    async def send_keyed(self, topic: str, key: str, value: Any):
        """Send to the partition Kafka's default partitioner picks for ``key`` (explicitly)."""
        partition = partition_for(key, self.settings.partitions)
        return await self.send(topic, key, value, partition=partition)

    async def dead_letter(self, event: Any, reason: str, detail: str = "") -> None:
        """Park a bad record with its coordinates and reason; raw PII is redacted first, in a
        bounded cut of the payload (:func:`cut_for_redaction`)."""
        message = event.message
        topic = self.logical_name(message.topic)
        raw = message.value
        # Four bytes a character at most: decode no more of a huge value than the cut keeps.
        if isinstance(raw, bytes):
            text = raw[: 4 * DEAD_LETTER_PAYLOAD_CHARS].decode("utf-8", "replace")
        else:
            text = str(raw)
        try:
            payload = redact_pii(cut_for_redaction(text, DEAD_LETTER_PAYLOAD_CHARS))
            detail = (
                redact_pii(cut_for_redaction(detail, DEAD_LETTER_DETAIL_CHARS)) if detail else ""
            )
        except Exception:  # noqa: BLE001 - never let a hostile payload crash the agent
            payload, detail = "[payload removed: could not be redacted]", ""
        record = {
            "topic": topic,
            "partition": message.partition,
            "offset": message.offset,
            "reason": reason,
            "detail": detail,
            "payload": payload,
        }
        metrics.count_dead_letter(topic, reason)
        await self.send("dead-letter", None, record)


def _credentials(settings: Settings) -> Any:
    context = None
    if settings.ssl_cafile:
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
    if not settings.sasl_username:
        return faust.SSLCredentials(context) if context is not None else None
    return faust.SASLCredentials(
        username=settings.sasl_username,
        password=settings.sasl_password,
        mechanism=settings.sasl_mechanism,
        ssl_context=context,
    )


def create_app(settings: Settings) -> tuple[faust.App, Runtime]:
    codecs.register()
    from convstream.stream.kafka import client_options

    highwater.install(client_options(settings))
    highwater.install_fetch_wait(settings.fetch_max_wait_ms)
    fetch_guard.install()
    if settings.store.startswith("rocksdb:"):
        from convstream.stream import store

        store.install()
    app = faust.App(
        settings.app_id,
        broker=settings.broker,
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=settings.data_dir,
        key_serializer="str",
        value_serializer="raw",
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=10,
        broker_heartbeat_interval=1,
        broker_commit_interval=settings.commit_interval_s,
        # Faust reads None as its default (10,000): by time only is a count it never reaches.
        broker_commit_every=settings.commit_every or sys.maxsize,
        producer_linger_ms=settings.producer_linger_ms,
        producer_max_batch_size=settings.producer_max_batch_size,
        stream_buffer_maxsize=4 * settings.batch_size,
        web_enabled=False,
        web_host=settings.web_host,
        web_port=settings.web_port,
        table_cleanup_interval=30.0,
    )
    rt = Runtime(settings=settings, app=app)
    metrics.precreate(INPUT_TOPICS)
    for name in (*INPUT_TOPICS, *INTERNAL_TOPICS, "labels", "dead-letter"):
        physical = settings.topic(name)
        rt.logical[physical] = name
        rt.topics[name] = app.topic(
            physical, key_type=str, value_type=bytes, partitions=settings.partitions
        )

    def options() -> dict[str, Any] | None:
        if not settings.store.startswith("rocksdb:"):
            return None
        from convstream.stream import store

        # A fresh dict per table: Faust's store pops keys from the one it is given.
        return store.table_options(settings.rocksdb_write_buffer_mb, settings.rocksdb_cache_mb)

    def table(name: str, value_serializer: str = "orjson") -> Any:
        t = app.Table(
            name,
            default=None,
            partitions=settings.partitions,
            use_partitioner=True,
            options=options(),
        )
        # Faust derives a table's codecs from key_type/value_type (json by default) and passes
        # them explicitly when it writes the changelog, over any schema: set them directly. A
        # bare UTF-8 key makes Kafka's partitioner put the entry on the partition of its input.
        t.key_serializer = "str"
        t.value_serializer = value_serializer
        t._changelog_topic = None  # built at registration with the old codecs; rebuilt lazily
        return t

    rt.tables["users"] = table("users")
    rt.tables["identifiers"] = table("identifiers")
    rt.tables["conversions"] = table("conversion-state")
    rt.tables["models"] = table("match-models", value_serializer="raw")
    # Event-time clocks of the input partitions (convstream/core/clock.py), one entry each.
    rt.tables["clocks"] = table("event-clocks", value_serializer="raw")
    # Lookups parked in the identifiers agent, by identifier: a restart takes them up again.
    rt.tables["parked"] = table("parked-lookups")

    from convstream.stream import writeback

    if settings.coalesce_writes:
        # Flushed at every commit; a conversion state that records a label is also written
        # before that label goes out (writeback.py says why).
        rt.tables.update(writeback.install(app, rt.tables))

    from convstream.stream.agents import conversions, identifiers, users

    def channel(*names: str) -> faust.TopicT:
        # Keys as raw bytes: agents never read them, and a key that is not UTF-8 would make
        # Faust throw a KeyDecodeError into the agent's stream instead of reaching the parser.
        return app.topic(
            *(settings.topic(n) for n in names),
            key_type=bytes,
            key_serializer="raw",
            value_type=bytes,
            partitions=settings.partitions,
        )

    adapter = conversions.register(rt, channel("conversions", "feedback", "cs-answer", "cs-learn"))
    users.register(rt, channel(*ENGAGEMENT_TOPICS, "privacy", "cs-probe"), adapter.lifecycle)
    identifiers.register(rt, channel("cs-ident"))
    # Each replica is saved as of the offsets a commit is about to record (before the caches
    # go out, the match-models table's among them).
    writeback.on_commit(app, adapter.checkpoint)
    return app, rt
