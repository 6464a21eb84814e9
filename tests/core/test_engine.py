"""The offline reference engine on hand-made and generated replays."""

from __future__ import annotations

from convstream.core.engine import OfflineEngine, run_offline
from convstream.core.identity import sha256_hex
from convstream.core.matching.baseline import RuleBaseline
from convstream.core.matching.model import MatchModel

T = 1_767_571_200_000
MIN = 60_000
HOUR = 60 * MIN


def _identity(user: str, ts: int, em: str | None = None, ip: str = "10.0.0.1") -> dict:
    return {
        "topic": "identity",
        "value": {
            "user_id": user,
            "ts": ts,
            "em": em,
            "ph": None,
            "device_id": None,
            "ip": ip,
            "user_agent": "UA-1",
        },
    }


def _impression(user: str, ts: int, event_id: str, ip: str = "10.0.0.1") -> dict:
    return {
        "topic": "impressions",
        "value": {
            "event_id": event_id,
            "ts": ts,
            "user_id": user,
            "advertiser_id": "a",
            "campaign_id": "c",
            "ad_id": "ad",
            "ip": ip,
            "user_agent": "UA-1",
            "device_id": None,
        },
    }


def _conversion(source: str, ts: int, **user_data) -> dict:
    return {
        "topic": "conversions",
        "value": {
            "event_id": "o1",
            "event_name": "Purchase",
            "source": source,
            "ts": ts,
            "advertiser_id": "a",
            "value": 10.0,
            "currency": "USD",
            "user_data": user_data,
        },
    }


def _other_order(ts: int) -> dict:
    line = _conversion("pixel", ts, client_ip_address="10.5.5.5")
    line["value"]["event_id"] = f"other-{ts}"
    return line


def test_late_copy_with_new_identifiers_emits_a_revision():
    """A copy read after its partition moved on past the lateness revises the label."""
    em = sha256_hex("ann@x.com")
    lines = [
        _identity("u1", T, em=em),
        _impression("u1", T + MIN, "i1"),
        _impression("u2", T + 2 * MIN, "i2", ip="10.9.9.9"),
        _conversion("pixel", T + 3 * MIN, client_ip_address="10.9.9.9", client_user_agent="UA-2"),
        _impression("u3", T + 10 * MIN, "i3", ip="10.7.7.7"),  # moves the watermark
        # Later orders move the partition's clock (it is warm at five; two outliers cannot).
        *(_other_order(T + (10 + i) * MIN) for i in range(5)),
        _conversion("capi", T + 3 * MIN, em=em),
        _impression("u3", T + 20 * MIN, "i4", ip="10.7.7.7"),
    ]
    engine = OfflineEngine(MatchModel, partitions=1)
    for line in lines:
        engine.feed(line)
    labels = [lab for lab in engine.finish() if lab["event_id"] == "o1"]
    assert [lab["revision"] for lab in labels] == [0, 1]
    first, second = labels
    assert first["sources"] == ["pixel"] and first["user_id"] != "u1"
    assert second["sources"] == ["capi", "pixel"]
    assert (second["user_id"], second["match_method"]) == ("u1", "deterministic:em")
    assert [c["engagement_id"] for c in second["credits"]] == ["i1"]


def test_copies_read_before_the_partition_moves_on_are_decided_together():
    """Without a later conversion on the partition the pixel copy waits, and the CAPI copy
    read after it joins it: one label, whatever the engagement topics did meanwhile."""
    em = sha256_hex("ann@x.com")
    lines = [
        _identity("u1", T, em=em),
        _impression("u1", T + MIN, "i1"),
        _conversion("pixel", T + 3 * MIN, client_ip_address="10.9.9.9", client_user_agent="UA-2"),
        _impression("u3", T + 10 * HOUR, "i3", ip="10.7.7.7"),  # the watermark is far past
        _conversion("capi", T + 3 * MIN, em=em),
        _other_order(T + HOUR),
    ]
    engine = OfflineEngine(MatchModel, partitions=1)
    for line in lines:
        engine.feed(line)
    labels = [lab for lab in engine.finish() if lab["event_id"] == "o1"]
    assert [(lab["revision"], lab["user_id"], lab["sources"]) for lab in labels] == [
        (0, "u1", ["capi", "pixel"])
    ]


def test_duplicate_copy_without_new_identifiers_emits_nothing_new():
    lines = [
        _identity("u1", T, em=sha256_hex("b@x.com")),
        _conversion("pixel", T + MIN, em=sha256_hex("b@x.com")),
        _impression("u3", T + 10 * MIN, "i3", ip="10.7.7.7"),
        _conversion("capi", T + MIN, em=sha256_hex("b@x.com")),
    ]
    labels = run_offline(lines, RuleBaseline)
    assert [(lab["revision"], lab["user_id"]) for lab in labels] == [(0, "u1")]


class _Spy:
    """A matcher that decides nobody and records when it is taught what."""

    log: list = []

    def decide(self, conv, answers, probes):
        from convstream.core.matching.model import MatchDecision

        return MatchDecision(None, 0.0, "none", [], {"m": "none", "u": None})

    def self_supervised_example(self, conv, answers, probes, decision):
        return {"t": "ss", "ts": conv["ts"]}

    @staticmethod
    def feedback_example(snapshot, user):
        return {"t": "fb", "u": user}

    def learn_example(self, example):
        self.log.append(
            ("learn", example["ts"]) if example["t"] == "ss" else ("feedback", example["u"])
        )


def test_learning_waits_the_workers_delay_in_event_time():
    """Like the worker (convstream/core/learning_queue.py), the engine's models learn a conversion
    only
    once a decision at least learning_delay_ms later in event time is made."""
    _Spy.log = []
    engine = OfflineEngine(_Spy, partitions=1, allowed_lateness_ms=0, learning_delay_ms=60 * MIN)
    lines = [_conversion("pixel", T, client_ip_address="10.0.0.9")]
    for i, ts in enumerate((T + 30 * MIN, T + 61 * MIN)):
        conv = _conversion("pixel", ts, client_ip_address="10.0.0.9")
        conv["value"] = {**conv["value"], "event_id": f"o{i + 2}"}
        lines.append(conv)
    for line in lines:
        engine.feed(line)
        engine.feed(_impression("u9", line["value"]["ts"], f"i-{line['value']['ts']}"))
    assert _Spy.log == [("learn", T)]  # decided at T + 61 min: T is an hour behind
    engine.finish()


def test_feedback_read_before_its_conversion_is_learned_once_the_conversion_is():
    """Topic partitions are read at their own pace: truth can come before its conversion."""
    _Spy.log = []
    engine = OfflineEngine(_Spy, partitions=1, allowed_lateness_ms=0, learning_delay_ms=60 * MIN)
    feedback = {"advertiser_id": "a", "event_id": "o1", "event_name": "Purchase"}
    engine.feed({"topic": "feedback", "value": {**feedback, "user_id": "u7", "ts": T + MIN}})
    engine.feed(_conversion("pixel", T, client_ip_address="10.0.0.9"))
    for ts in (T, T + 2 * HOUR):
        engine.feed(_impression("u9", ts, f"i-{ts}"))
    later = _conversion("pixel", T + 2 * HOUR, client_ip_address="10.0.0.9")
    later["value"] = {**later["value"], "event_id": "o2"}
    engine.feed(later)
    engine.feed(_impression("u9", T + 3 * HOUR, "i-last"))
    # Deciding o2 two hours later taught the model o1 and the truth that came before it.
    assert _Spy.log == [("learn", T), ("feedback", "u7")]
    engine.finish()


def test_engine_defaults_are_the_workers():
    from convstream.stream.settings import Settings

    engine, worker = OfflineEngine(MatchModel), Settings()
    assert engine.lateness_ms == worker.allowed_lateness_ms
    assert engine.queues[0].delay_ms == worker.learning_delay_ms


def test_a_deterministic_match_links_the_conversions_other_email_and_phone():
    # u1's platform email is A. They shop with it and a phone the platform never learned: the
    # email match teaches the index that phone, for later conversions and only for them.
    em, ph = sha256_hex("ann@x.com"), sha256_hex("+15550100")

    def order(event_id: str, ts: int, **user_data) -> dict:
        line = _conversion("capi", ts, **user_data)
        line["value"]["event_id"] = event_id
        return line

    lines = [
        _identity("u1", T, em=em),
        order("o1", T + HOUR, em=em, ph=ph),
        _impression("u3", T + 2 * HOUR, "i1", ip="10.7.7.7"),  # moves the watermark
        order("o2", T + 3 * HOUR, ph=ph),  # after the link: matched on the phone alone
        order("o3", T + HOUR - MIN, ph=ph),  # before it in event time, read after it
        _impression("u3", T + 5 * HOUR, "i2", ip="10.7.7.7"),
    ]
    engine = OfflineEngine(MatchModel, partitions=2)
    for line in lines:
        engine.feed(line)
    labels = {lab["event_id"]: lab for lab in engine.finish()}
    assert (labels["o1"]["user_id"], labels["o1"]["match_method"]) == ("u1", "deterministic:em")
    assert (labels["o2"]["user_id"], labels["o2"]["match_method"]) == ("u1", "deterministic:ph")
    assert labels["o3"]["user_id"] is None
    # The phone is now one of u1's own, since the first order's time.
    assert engine.users["u1"]["o"] == {"em": T, "ph": T + HOUR}
