"""A real worker on tansu fed good traffic laced with a few hundred bad records at every input.

Every bad record must land in the dead-letter topic exactly once (matched by its coordinates)
with the reason the parser (or the event-time clock) gives; the worker must keep running, good
conversions around the bad records must still be labelled, and no raw email or phone may reach
a topic the worker writes, its log, or its metrics.
"""

from __future__ import annotations

import asyncio
import random
import re
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from convstream.core.identity import is_sha256_hex
from convstream.core.partitioning import partition_for
from convstream.core.records import (
    Invalid,
    parse_click,
    parse_conversion,
    parse_feedback,
    parse_identity,
    parse_impression,
)
from convstream.stream.broker import free_port
from convstream.stream.kafka import client_options, encode_value, message_key, read_topic
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate
from tests.integration.traffic import MIN, T0, click, conversion, key

pytestmark = pytest.mark.integration

SEED = 20260105
DAY_MS = 86_400_000
PARSERS = {
    "impressions": parse_impression,
    "clicks": parse_click,
    "identity": parse_identity,
    "conversions": parse_conversion,
    "feedback": parse_feedback,
}
TOPICS = tuple(PARSERS)
OUTPUT_TOPICS = ("labels", "dead-letter", "cs-ident", "cs-answer", "cs-probe", "cs-learn")


@dataclass
class Entry:
    """One message to produce: good (expect is None) or bad (expect is its dead-letter reason)."""

    topic: str
    value: bytes | None
    key: bytes | None
    expect: str | None = None
    pii: list[str] = field(default_factory=list)


def good(topic: str, value: Any) -> Entry:
    return Entry(topic, encode_value(value), message_key(topic, value))


def bad(topic: str, value: Any, pii: list[str], expect: str | None = None) -> Entry:
    """A bad record; its reason is what the parser says (unless the clock decides: ``expect``)."""
    raw = value if value is None or isinstance(value, bytes) else encode_value(value)
    if expect is None:
        try:
            PARSERS[topic](raw)
        except Invalid as exc:
            expect = exc.reason
        else:
            raise AssertionError(f"meant to be bad, but parses: {topic} {raw!r}")
    key_ = message_key(topic, value) if isinstance(value, dict) else None
    return Entry(topic, raw, key_, expect, pii)


# --- bad records -------------------------------------------------------------------------------


def raw_email(rng: random.Random) -> str:
    user = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(4, 9)))
    host = rng.choice(["example.com", "mail.example.org", "corp.example.net"])
    return rng.choice([f"{user}.{rng.randint(10, 99)}@{host}", f"{user.title()}@{host.upper()}"])


def raw_phone(rng: random.Random) -> str:
    a, b, c = rng.randint(200, 989), rng.randint(200, 999), rng.randint(1000, 9999)
    return rng.choice(
        [f"+1 ({a}) {b}-{c}", f"{a}.{b}.{c}", f"+44 {a} {b} {c}", f"1{a}{b}{c}", f"{a}-{b}-{c}"]
    )


def forms(raw: str) -> list[str]:
    """The raw value as given and as normalized: neither may come out."""
    out = {raw.strip(), raw.strip().lower()}
    if "@" not in raw:
        out.add("".join(ch for ch in raw if ch.isdigit()))
    return [v for v in out if len(v) >= 7]


def corrupt(topic: str, template: dict[str, Any], rng: random.Random) -> Entry:
    """One bad record shaped like ``template``, often carrying raw PII."""
    value = orjson.loads(orjson.dumps(template))
    pii: list[str] = []
    if rng.random() < 0.6:
        email, phone = raw_email(rng), raw_phone(rng)
        pii += forms(email) + forms(phone)
        if topic == "identity":
            value["em"], value["ph"] = email, phone
        elif topic == "conversions":
            value["user_data"] = {**(value.get("user_data") or {}), "em": email, "ph": phone}
        else:
            value[rng.choice(["email", "note", "phone"])] = f"{email} / {phone}"
    kind = rng.choice(
        ["cut", "garbage", "not_object", "empty", "null", "drop", "wrong_type", "huge", "bad_ts",
         "bad_ts", "bad_ip", "special"]
    )  # fmt: skip
    required = {
        "impressions": ["event_id", "ts", "user_id", "advertiser_id", "campaign_id", "ad_id"],
        "clicks": ["click_id", "ts", "user_id", "advertiser_id", "campaign_id", "ad_id"],
        "identity": ["user_id", "ts"],
        "conversions": ["event_id", "event_name", "source", "ts", "advertiser_id"],
        "feedback": ["advertiser_id", "event_id", "event_name", "ts"],
    }[topic]
    if kind == "cut":
        text = orjson.dumps(value)
        return bad(topic, text[: rng.randint(1, len(text) - 2)], pii)
    if kind == "garbage":
        return bad(topic, bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))) + b"{", [])
    if kind == "not_object":
        return bad(topic, rng.choice([b"[1, 2, 3]", b'"a string"', b"42", b"null", b"true"]), [])
    if kind == "empty":
        return bad(topic, b"", [])
    if kind == "null":
        entry = bad(topic, None, [])  # a tombstone: Kafka wants a key with it
        entry.key = f"tombstone-{rng.randrange(10**6)}".encode()
        return entry
    if kind == "drop":
        del value[rng.choice(required)]
    elif kind == "wrong_type":
        value[rng.choice(required)] = rng.choice([["x"], {"x": 1}, True, 1.5])
    elif kind == "huge":
        name = rng.choice([f for f in required if f != "ts"])
        value[name] = "Mozilla/5.0 " * 200  # 2400 characters: too_long
        if topic == "clicks" and name == "click_id":
            value["event_id"] = value[name]
    elif kind == "bad_ts":
        value["ts"] = rng.choice([value["ts"] // 1000, value["ts"] * 1000, "2026-01-05", -1])
    elif kind == "bad_ip":
        ip = rng.choice(["999.1.1.1", "1.2.3", "not-an-ip", "::g"])
        if topic in ("conversions", "feedback"):
            # A conversion's bad IP is dropped alone (a rejected identifier, not a bad record);
            # feedback has no IP.
            value["ts"] = value["ts"] // 1000
        else:
            value["ip"] = ip
    elif topic == "clicks":
        value["event_id"] = value["click_id"] + "-other"
    elif topic == "conversions":
        value["source"] = rng.choice(["server", "app", "CRM"])
    else:
        value[rng.choice(required)] = "   "
    return bad(topic, value, pii)


def clock_rejects(lines: list[dict[str, Any]], partitions: int, rng: random.Random) -> list:
    """(position, Entry) pairs: conversions 8 days behind or far ahead of their partition's clock,
    each placed right after a good conversion of the same partition."""
    newest = max(line["value"]["ts"] for line in lines if line["topic"] == "conversions")
    admitted: dict[int, list[int]] = {}
    after: list[tuple[int, int, int]] = []  # (position, partition, clock there)
    for pos, line in enumerate(lines):
        if line["topic"] == "conversions":
            p = partition_for(message_key("conversions", line["value"]).decode(), partitions)
            recent = admitted.setdefault(p, [])
            recent.append(line["value"]["ts"])
            # The partition's clock (core/clock.py): the third-newest of its last 64 admitted
            # conversions, judging only once five are in.
            if len(recent) >= 5:
                after.append((pos, p, sorted(recent[-64:])[-3]))
    out = []
    assert len(after) >= 2, len(after)
    for n, (pos, p, now) in enumerate(rng.sample(after, min(12, len(after)))):
        event_id = next(
            f"late-{n}-{i}" for i in range(10_000)
            if partition_for(f"adv-01:Purchase:late-{n}-{i}", partitions) == p
        )  # fmt: skip
        email = raw_email(rng)
        old = n % 2 == 0
        ts = now - 8 * DAY_MS if old else newest + rng.randint(2, 400) * DAY_MS
        value = {
            "event_id": event_id,
            "event_name": "Purchase",
            "source": "capi",
            "ts": ts,
            "advertiser_id": "adv-01",
            "value": 9.5,
            "currency": "EUR",
            "user_data": {"em": email, "client_ip_address": "203.0.113.7"},
        }
        PARSERS["conversions"](orjson.dumps(value))  # well formed: only the clock rejects it
        entry = bad("conversions", value, forms(email), expect="too_old" if old else "future_ts")
        assert partition_for(entry.key.decode(), partitions) == p
        out.append((pos + 1, entry))
    return out


def raw_pii_pairs(lines: list[dict[str, Any]], rng: random.Random) -> list:
    """(position, Entry, key, user) for good identity + conversion pairs with raw email/phone:
    hashed at the edge, they must still match deterministically."""
    users = sorted({line["value"]["user_id"] for line in lines if line["topic"] == "identity"})
    out = []
    for n, user in enumerate(rng.sample(users, 6)):
        i = rng.randrange(len(lines) // 10, len(lines) // 2)
        j = rng.randrange(i + 20, i + 400)
        ts_i = lines[i]["value"]["ts"]
        ts_j = max(lines[j]["value"]["ts"], ts_i + MIN)
        email, phone = raw_email(rng), raw_phone(rng)
        identity = {"user_id": user, "ts": ts_i, "em": f"  {email.upper()} ", "ph": phone}
        conv = {
            "event_id": f"rawpii-{n}",
            "event_name": "Purchase",
            "source": "capi",
            "ts": ts_j,
            "advertiser_id": "adv-01",
            "value": 30.0,
            "currency": "EUR",
            "user_data": {"em": email.lower(), "ph": phone.replace(" ", "")},
        }
        pii = forms(email) + forms(phone) + [f"  {email.upper()} ".strip()]
        out.append((i, Entry("identity", encode_value(identity), user.encode(), None, pii)))
        entry = good("conversions", conv)
        entry.pii = pii
        out.append((j, entry, entry.key.decode(), user))
    return out


def build_stream(lines: list[dict[str, Any]], partitions: int) -> tuple[list[Entry], dict]:
    """The good lines with bad records and raw-PII pairs spliced in; and the raw-PII pairs'
    expected users by conversion key."""
    rng = random.Random(SEED)
    templates = {t: [line["value"] for line in lines if line["topic"] == t] for t in TOPICS}
    # Feedback is rare in a short stream: shape more from the conversions.
    templates["feedback"] += [
        {**{f: c[f] for f in ("advertiser_id", "event_id", "event_name", "ts")}, "user_id": "u1"}
        for c in templates["conversions"][:20]
    ]
    inserts: list[tuple[int, Entry]] = []
    for topic in TOPICS:
        for _ in range(55):
            template = rng.choice(templates[topic])
            inserts.append((rng.randrange(len(lines) + 1), corrupt(topic, template, rng)))
    inserts += clock_rejects(lines, partitions, rng)
    matched = {}
    for item in raw_pii_pairs(lines, rng):
        inserts.append((item[0], item[1]))
        if len(item) == 4:
            matched[item[2]] = item[3]
    stream = [good(line["topic"], line["value"]) for line in lines]
    # Insert from the back so earlier positions keep their meaning; stable for equal positions.
    for pos, entry in sorted(inserts, key=lambda pe: pe[0], reverse=True):
        stream.insert(pos, entry)
    return stream, matched


async def produce_entries(settings, entries: list[Entry]) -> list[tuple[int, int]]:
    """Produce in order; the (partition, offset) of each entry."""
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=20)
    await producer.start()
    try:
        futures = [
            await producer.send(settings.topic(e.topic), e.value, key=e.key) for e in entries
        ]
        metadata = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return [(m.partition, m.offset) for m in metadata]


async def read_all(settings, topic: str) -> list[dict[str, Any]]:
    return [r async for r in read_topic(settings, topic)]


def leaked(raw: str, text: str) -> bool:
    return re.search(rf"(?<![0-9]){re.escape(raw)}(?![0-9])", text) is not None


# --- the tests ---------------------------------------------------------------------------------


def test_bad_records_everywhere_are_dead_lettered_once_and_good_traffic_still_flows(
    settings, start_worker, tmp_path
):
    metrics_port = free_port()
    settings = settings.replace(metrics_port=metrics_port)
    # Its bookkeeping reads every conversions-topic line as a conversion: the traffic before
    # site events (which get no label; test_demo and test_match_figures carry them).
    lines, truth = generate(
        config_from_args("default", users=150, days=4, seed=SEED, site_events=False)
    )
    stream, matched = build_stream(lines, settings.partitions)
    bad_entries = [e for e in stream if e.expect is not None]
    assert len(bad_entries) >= 280 and {e.topic for e in bad_entries} == set(TOPICS)
    assert {"too_old", "future_ts"} <= {e.expect for e in bad_entries}

    worker = start_worker(settings)
    coords = asyncio.run(produce_entries(settings, stream))
    expected_keys = {row["conversion_key"] for row in truth} | set(matched)
    labels = wait_for_labels(settings, expected_keys, timeout=75, settle=2)
    assert worker.alive(), "the worker died"

    # Good conversions around the bad records are all labelled; raw PII matched at the edge.
    latest: dict[str, dict[str, Any]] = {}
    for label in sorted(labels, key=lambda lab: lab["revision"]):
        latest[label["conversion_key"]] = label
    assert expected_keys <= set(latest), sorted(expected_keys - set(latest))[:5]
    for conv_key, user in matched.items():
        assert latest[conv_key]["user_id"] == user, latest[conv_key]
        assert latest[conv_key]["match_method"] in ("deterministic:em", "deterministic:ph")

    # Every bad record is dead-lettered exactly once, with its reason; nothing else is.
    dead = [r["value"] for r in asyncio.run(read_all(settings, "dead-letter"))]
    seen = Counter((d["topic"], d["partition"], d["offset"]) for d in dead)
    wanted = {(e.topic, *coords[i]): e.expect for i, e in enumerate(stream) if e.expect}
    assert max(seen.values()) == 1, [c for c, n in seen.items() if n > 1][:5]
    assert set(seen) == set(wanted), (set(wanted) - set(seen), set(seen) - set(wanted))
    for d in dead:
        assert d["reason"] == wanted[(d["topic"], d["partition"], d["offset"])], d
        assert set(d) == {"topic", "partition", "offset", "reason", "detail", "payload"}

    # The metrics agree, and say nothing about anyone.
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as resp:
        metrics_text = resp.read().decode()
    counted = Counter()
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if sample.name == "convstream_dead_letter_total":
                counted[(sample.labels["topic"], sample.labels["reason"])] += int(sample.value)
    assert counted == Counter((e.topic, e.expect) for e in bad_entries)

    # No raw email or phone anywhere the worker writes.
    outputs = {
        topic: orjson.dumps([r["value"] for r in asyncio.run(read_all(settings, topic))]).decode()
        for topic in OUTPUT_TOPICS
    }
    worker.stop()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    planted = {raw for e in stream for raw in e.pii}
    assert len(planted) > 200
    for raw in planted:
        for topic, text in outputs.items():
            assert not leaked(raw, text), (raw, topic)
        assert not leaked(raw, log), raw
        assert not leaked(raw, metrics_text), raw
    assert (
        "@"
        not in outputs["labels"] + outputs["cs-ident"] + outputs["cs-answer"] + outputs["cs-learn"]
    )
    for name in ("em", "ph"):
        for value in re.findall(rf'"{name}:([^"|]*)', outputs["cs-ident"]):
            assert is_sha256_hex(value), value
    assert "Traceback" not in log


def test_poison_records_neither_drop_good_batches_nor_stall_the_worker(settings, start_worker):
    worker = start_worker(settings)
    lines = [click(i, T0 + i * MIN) for i in range(20)]
    digits = b'{"user_id":"user-3","ts":1767571200000,"user_agent":"' + b"7" * 5000 + b'"}'
    stream = [good(line["topic"], line["value"]) for line in lines]
    stream.insert(10, Entry("identity", digits, b"user-3", "too_long"))
    stream.insert(5, Entry("clicks", orjson.dumps({"x": 1}), b"\xff\xfe\xfd", "missing_field"))
    stream.append(Entry("conversions", orjson.dumps({"x": 1}), b"\xff\xfe", "missing_field"))
    stream += [
        good("conversions", conversion(i, T0 + i * MIN + 5 * MIN, click_id=f"clk-{i}")["value"])
        for i in range(20)
    ]
    coords = asyncio.run(produce_entries(settings, stream))
    expected = {key(i) for i in range(20)}
    labels = wait_for_labels(settings, expected, timeout=35, settle=2)
    assert worker.alive()
    dead = [r["value"] for r in asyncio.run(read_all(settings, "dead-letter"))]
    wanted = {(e.topic, *coords[i]): e.expect for i, e in enumerate(stream) if e.expect}
    assert {(d["topic"], d["partition"], d["offset"]): d["reason"] for d in dead} == wanted
    assert {lab["conversion_key"] for lab in labels} == expected
    assert all(lab["match_method"] == "deterministic:click" for lab in labels)
