"""A conversion's external_id and email become deterministic identifiers once a match teaches
them."""

from __future__ import annotations

import asyncio
import time

import pytest

from convstream.core.evaluation import latest_labels
from convstream.stream.kafka import produce
from convstream.stream.runner import wait_for_labels
from tests.integration.traffic import MIN, T0, click, conversion, impression, key

pytestmark = pytest.mark.integration

HOUR = 60 * MIN


def test_click_match_links_the_external_id_and_email_for_later_conversions(settings, start_worker):
    start_worker(settings)
    first = [
        click(1, T0),
        click(2, T0 + MIN),
        conversion(
            1, T0 + 10 * MIN, click_id="clk-1", external_id="Cust-42", em="Shopper@Example.com"
        ),
        impression(2, T0 + 3 * HOUR),  # moves the watermark past the conversion
    ]
    asyncio.run(produce(settings, first))
    labels = latest_labels(wait_for_labels(settings, {key(1)}, timeout=90, settle=2))[0]
    assert (labels[key(1)]["user_id"], labels[key(1)]["match_method"]) == (
        "user-1",
        "deterministic:click",
    )

    # The same customer orders again from a relay IP nobody was seen on: without the link
    # learned from the first order, nothing would point at user-1. (The id is trimmed, its case
    # kept: "cust-42" would be another customer.)
    # And at another advertiser with only the email the platform never knew for user-1.
    later = [
        conversion(2, T0 + 4 * HOUR, external_id=" Cust-42 ", client_ip_address="192.0.2.200"),
        conversion(3, T0 + 4 * HOUR, advertiser="adv-2", em=" shopper@example.com"),
        impression(2, T0 + 6 * HOUR),
    ]
    asyncio.run(produce(settings, later))
    expected = {key(1), key(2), key(3, "adv-2")}
    labels = latest_labels(wait_for_labels(settings, expected, timeout=90, settle=2))[0]
    assert (labels[key(2)]["user_id"], labels[key(2)]["match_method"]) == (
        "user-1",
        "deterministic:ext",
    )
    assert (labels[key(3, "adv-2")]["user_id"], labels[key(3, "adv-2")]["match_method"]) == (
        "user-1",
        "deterministic:em",
    )


def test_links_reach_later_conversions_parked_in_the_same_burst(settings, start_worker):
    """A replay read at full speed parks hours of conversions before the engagements come in,
    and the watermark then releases them all at once. The later orders must still wait for the
    first one's decision and the links it makes (convstream/core/lookup_gate.py, the holds):
    answered in
    the same burst, they found nobody."""
    start_worker(settings)
    orders = [
        conversion(
            1, T0 + 10 * MIN, click_id="clk-1", external_id="Cust-42", em="Shopper@Example.com"
        ),
        conversion(2, T0 + 4 * HOUR, external_id=" Cust-42 ", client_ip_address="192.0.2.200"),
        conversion(3, T0 + 4 * HOUR, advertiser="adv-2", em=" shopper@example.com"),
    ]
    asyncio.run(produce(settings, orders))
    time.sleep(3)  # read and parked: no engagement has moved the watermark yet
    asyncio.run(produce(settings, [click(1, T0), click(2, T0 + MIN), impression(2, T0 + 6 * HOUR)]))
    expected = {key(1), key(2), key(3, "adv-2")}
    labels = latest_labels(wait_for_labels(settings, expected, timeout=90, settle=2))[0]
    found = {k: (labels[k]["user_id"], labels[k]["match_method"]) for k in expected}
    assert found == {
        key(1): ("user-1", "deterministic:click"),
        key(2): ("user-1", "deterministic:ext"),
        key(3, "adv-2"): ("user-1", "deterministic:em"),
    }
