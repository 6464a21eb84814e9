"""A generated replay through a real worker on tansu: labels, dead letters, and no raw PII."""

from __future__ import annotations

import asyncio
from collections import Counter

import orjson
import pytest

from convstream.core.identity import is_sha256_hex
from convstream.stream.kafka import produce, read_topic
from convstream.stream.runner import wait_for_labels
from convstream.synth.generate import config_from_args, generate

pytestmark = pytest.mark.integration

MALFORMED = [
    ("conversions", "{not json"),
    ("conversions", {"event_id": "x1", "source": "capi"}),
    ("clicks", {"event_id": "c", "click_id": "d", "ts": 1767571200000, "user_id": "u"}),
    (
        "impressions",
        {
            "event_id": "i",
            "ts": "yesterday",
            "user_id": "u",
            "advertiser_id": "a",
            "campaign_id": "c",
            "ad_id": "d",
        },
    ),
    (
        "identity",
        {"user_id": "u", "ts": 1767571200000, "ip": "999.1.1.1", "em": "leak.me@example.com"},
    ),
    (
        "conversions",
        {
            "event_id": "x2",
            "event_name": "Purchase",
            "source": "capi",
            "ts": "today",
            "advertiser_id": "a",
            "user_data": {"em": "raw.person@example.org"},
        },
    ),
]
#: A junk identifier is dropped from the conversion, which is still labelled (the contract).
JUNK_IP = {
    "topic": "conversions",
    "value": {
        "event_id": "x3",
        "event_name": "Purchase",
        "source": "capi",
        "ts": 1767571200000,
        "advertiser_id": "a",
        "user_data": {"em": "raw.other@example.org", "client_ip_address": "nope"},
    },
}


def _raw_pii(lines) -> set[str]:
    """Every unhashed email or phone in the replay: none may come out anywhere."""
    found = set()
    for line in lines:
        value = line["value"]
        if not isinstance(value, dict):
            continue
        for source in (value, value.get("user_data") or {}):
            for name in ("em", "ph"):
                v = source.get(name)
                if isinstance(v, str) and not is_sha256_hex(v):
                    found.add(v)
                    found.add(v.strip().lower())
    return {v for v in found if len(v) >= 6}


@pytest.fixture(scope="module")
def replay():
    lines, truth = generate(config_from_args("default", seed=11, users=400, days=6))
    # Malformed records spread through the stream; good records around them must still flow.
    step = len(lines) // (len(MALFORMED) + 1)
    for n, (topic, value) in enumerate(MALFORMED, start=1):
        lines.insert(n * step, {"topic": topic, "value": value})
    lines.insert(step // 2, JUNK_IP)
    return lines, truth


def test_generated_replay_end_to_end(settings, start_worker, replay, tmp_path):
    lines, truth = replay
    worker = start_worker(settings)
    asyncio.run(produce(settings, lines))
    expected = {row["conversion_key"] for row in truth} | {"a:Purchase:x3"}
    labels = wait_for_labels(settings, expected, timeout=240)
    assert worker.alive()

    # One label per key and revision, and every conversion got one.
    per_revision = Counter((lab["conversion_key"], lab["revision"]) for lab in labels)
    assert max(per_revision.values()) == 1
    assert {lab["conversion_key"] for lab in labels} == expected

    # Deterministic matches are right.
    truth_user = {row["conversion_key"]: row["user_id"] for row in truth}
    latest = {}
    for lab in sorted(labels, key=lambda lab: lab["revision"]):
        latest[lab["conversion_key"]] = lab
    deterministic = [lab for lab in latest.values() if lab["match_method"].startswith("determ")]
    assert len(deterministic) > 0.3 * len(latest)
    right = sum(lab["user_id"] == truth_user[lab["conversion_key"]] for lab in deterministic)
    assert right / len(deterministic) >= 0.99

    # Weights follow the contract.
    for lab in latest.values():
        assert abs(lab["label_weight"] - sum(c["label_weight"] for c in lab["credits"])) < 1e-9
        for c in lab["credits"]:
            assert abs(c["label_weight"] - lab["match_confidence"] * c["credit"]) < 1e-9

    # Malformed input is in dead-letter with a reason; the worker kept going.
    dead = asyncio.run(_read(settings, "dead-letter"))
    assert len(dead) == len(MALFORMED)
    assert all(d["reason"] and d["topic"] in {t for t, _ in MALFORMED} for d in dead)
    assert Counter(d["reason"] for d in dead)["invalid_json"] == 1

    # No raw email or phone in any topic the worker writes, nor in its log.
    pii = _raw_pii(lines)
    assert pii, "the replay should carry raw PII to be hashed at the edge"
    outputs = b""
    for topic in ("labels", "dead-letter", "cs-ident", "cs-answer", "cs-probe", "cs-learn"):
        outputs += b"".join(orjson.dumps(r) for r in asyncio.run(_read(settings, topic)))
    worker.stop()
    log = (tmp_path / "worker.log").read_bytes()
    for value in pii:
        assert value.encode() not in outputs
        assert value.encode() not in log


async def _read(settings, topic):
    return [r["value"] async for r in read_topic(settings, topic)]
