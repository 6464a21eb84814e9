"""A user deletion on the privacy topic removes the user from every table."""

from __future__ import annotations

import asyncio

import pytest

from convstream.core.identity import sha256_hex, ua_family
from convstream.stream.kafka import produce, read_topic
from convstream.stream.runner import wait_for_labels
from tests.integration.traffic import MIN, T0, click, conversion, impression, key

pytestmark = pytest.mark.integration

EMAIL = sha256_hex("grace@example.com")


def _identity(user: str, ts: int, em: str | None) -> dict:
    return {
        "topic": "identity",
        "value": {
            "user_id": user,
            "ts": ts,
            "em": em,
            "ph": None,
            "device_id": "dev-" + user,
            "ip": "203.0.113.50",
            "user_agent": "UA-grace",
        },
    }


async def _latest_values(settings, topic: str) -> dict:
    """The last value of every key of a changelog topic (None: a tombstone)."""
    latest = {}
    async for record in read_topic(settings, topic):
        latest[record["key"]] = record["value"]
    return latest


def test_deleted_user_is_forgotten_and_no_longer_matches(settings, start_worker):
    before = [
        _identity("user-1", T0, EMAIL),
        impression(1, T0 + MIN),
        click(1, T0 + 2 * MIN),
        _identity("user-2", T0 + 3 * MIN, None),
        conversion(1, T0 + 5 * MIN, em=EMAIL),
    ]
    worker = start_worker(settings)
    asyncio.run(produce(settings, before))
    labels = wait_for_labels(settings, {key(1)}, timeout=90, settle=2)
    assert labels[0]["user_id"] == "user-1"

    forget = {"topic": "privacy", "value": {"user_id": "user-1", "ts": T0 + 6 * MIN}}
    after = [
        forget,
        # Events for the deleted account after the request are not stored either.
        impression(1, T0 + 7 * MIN),
        conversion(2, T0 + 8 * MIN, em=EMAIL, click_id="clk-1", client_ip_address="198.51.0.1"),
        _identity("user-2", T0 + 30 * MIN, None),
    ]
    asyncio.run(produce(settings, after))
    labels = wait_for_labels(settings, {key(1), key(2)}, timeout=90, settle=3)
    second = [lab for lab in labels if lab["conversion_key"] == key(2)]
    assert [lab["user_id"] for lab in second] == [None]

    # The changelogs hold no trace of the user: identifier entries forgot them, the user's
    # engagements are gone (only the deletion marker is left). Read after a clean stop, which
    # commits: a running worker writes its tables to the changelogs at its commits, every
    # 40,000 messages or 30 s.
    worker.stop()
    app = settings.app_id
    identifiers = asyncio.run(
        _latest_values(settings.replace(topic_prefix=""), f"{app}-identifiers-changelog")
    )
    for ident, entry in identifiers.items():
        assert entry is None or "user-1" not in entry["u"], ident
    # The address entry keeps, for the remaining user, the user agent family first seen there.
    housemate = identifiers["ip:203.0.113.50"]["u"]["user-2"]
    assert housemate[4] == {ua_family("UA-grace"): T0 + 3 * MIN}
    users = asyncio.run(_latest_values(settings.replace(topic_prefix=""), f"{app}-users-changelog"))
    assert set(users["user-1"]) == {"deleted"}
