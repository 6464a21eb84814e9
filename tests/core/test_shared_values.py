"""Issue 21 item 3: a personal identifier value seen on implausibly many users is dropped from
the conversion, counted, explained, and never matched; a household's shared value still is."""

from __future__ import annotations

from convstream.core.coordinator import Policy
from convstream.core.engine import run_offline
from convstream.core.lifecycle import Dropped, EmitLabel, Lifecycle
from convstream.core.matching.model import MatchModel
from convstream.core.messages import LookupAnswer
from convstream.core.shared_values import drop_shared, note_rejections

T = 1_767_571_200_000
MIN = 60_000
FALLBACK = "orders@shop.example"  # a checkout form's default: valid, on no placeholder list


def _identity(user: str, ts: int, ip: str, **extra) -> dict:
    return {"topic": "identity", "value": {"user_id": user, "ts": ts, "ip": ip,
                                           "user_agent": f"UA-{user}", **extra}}  # fmt: skip


def _click(user: str, ts: int, click_id: str, ip: str) -> dict:
    return {"topic": "clicks", "value": {
        "event_id": click_id, "ts": ts, "user_id": user, "advertiser_id": "adv-0",
        "campaign_id": "c", "ad_id": "ad", "ip": ip, "user_agent": f"UA-{user}",
        "device_id": None, "click_id": click_id}}  # fmt: skip


def _conversion(event_id: str, ts: int, **user_data) -> dict:
    value = {
        "event_id": event_id,
        "event_name": "Purchase",
        "source": "capi",
        "ts": ts,
        "advertiser_id": "adv-0",
        "value": 10.0,
        "currency": "USD",
        "user_data": user_data,
    }
    return {"topic": "conversions", "value": value}  # fmt: skip


def _replay() -> list[dict]:
    """Twelve customers check out with the form's default email beside their click id (each
    match teaches the index "this email is that user"); twenty more come with the default
    email only, from their own addresses. A couple share one real email."""
    lines = []
    for i in range(32):
        ip = f"10.0.{i}.1"
        lines.append(_identity(f"u{i}", T, ip))
    lines.append(_identity("h1", T, "10.9.0.1", em="pat.lee@example.org"))
    lines.append(_identity("h2", T, "10.9.0.2", em="pat.lee@example.org"))
    for i in range(12):
        ts = T + (10 + i) * MIN
        lines.append(_click(f"u{i}", ts, f"k{i}", f"10.0.{i}.1"))
        lines.append(_conversion(f"o{i}", ts + MIN, click_id=f"k{i}", em=FALLBACK,
                                 client_ip_address=f"10.0.{i}.1",
                                 client_user_agent=f"UA-u{i}"))  # fmt: skip
    for i in range(12, 32):
        ts = T + (100 + i) * MIN
        lines.append(_conversion(f"o{i}", ts, em=FALLBACK, client_ip_address=f"10.0.{i}.1",
                                 client_user_agent=f"UA-u{i}"))  # fmt: skip
    lines.append(_conversion("h", T + 300 * MIN, em="pat.lee@example.org"))
    lines.append(_identity("z", T + 400 * MIN, "10.8.8.8"))  # moves the watermark past them
    return lines


def _latest(labels: list[dict]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for label in labels:
        out[label["conversion_key"]] = label
    return out


def test_a_fallback_email_on_many_users_matches_none_of_them():
    labels = _latest(run_offline(_replay(), MatchModel))
    for i in range(12):  # matched by their click ids, whatever the email says
        label = labels[f"adv-0:Purchase:o{i}"]
        assert (label["user_id"], label["match_method"]) == (f"u{i}", "deterministic:click")
    fallback_only = [labels[f"adv-0:Purchase:o{i}"] for i in range(12, 32)]
    assert not [x for x in fallback_only if x["match_method"] == "deterministic:em"]
    assert {x["user_id"] for x in fallback_only} & {f"u{i}" for i in range(12)} == set()
    assert all("dropped em: shared" in x["match_explanation"] for x in fallback_only)
    # The couple's email is shared by two: a household, still a deterministic match.
    couple = labels["adv-0:Purchase:h"]
    assert couple["user_id"] in {"h1", "h2"} and couple["match_method"].startswith("determ")
    assert "dropped em: shared" not in couple["match_explanation"]


def test_without_the_limit_the_fallback_email_links_them_to_earlier_customers():
    """The control: the replay does exercise the rule."""
    policy = Policy(max_users_per_value=10_000)
    labels = _latest(run_offline(_replay(), MatchModel, policy=policy))
    fallback_only = [labels[f"adv-0:Purchase:o{i}"] for i in range(12, 32)]
    linked = [x for x in fallback_only if x["match_method"].startswith("deterministic:em")]
    assert len(linked) == len(fallback_only)
    assert {x["user_id"] for x in linked} <= {f"u{i}" for i in range(12)}


def test_a_shared_value_is_dropped_counted_and_explained():
    life = Lifecycle({}, MatchModel, partitions=1, policy=Policy(max_users_per_value=2))
    conv = {"conversion_key": "a:Purchase:1", "event_id": "1", "event_name": "Purchase",
            "advertiser_id": "a", "ts": T, "sources": ["capi"],
            "user_data": {"em": "e" * 64, "ph": "f" * 64}}  # fmt: skip
    life.conversion(conv, partition=0)
    users = [[f"u{i}", T - MIN, T - MIN, 1] for i in range(3)]
    shared = {"key": "em:" + "e" * 64, "kind": "em", "degree": 3, "users": users}
    single = {"key": "ph:" + "f" * 64, "kind": "ph", "degree": 1, "users": users[:1]}
    out = life.answer(LookupAnswer("a:Purchase:1", 0, shared))
    out += life.answer(LookupAnswer("a:Purchase:1", 0, single))
    out += [c for u in ["u0"] for c in life.probed(_probe_answer(u))]
    dropped = [c for c in out if isinstance(c, Dropped)]
    assert [(r.field, r.reason) for c in dropped for r in c.rejections] == [("em", "shared")]
    [label] = [c.label for c in out if isinstance(c, EmitLabel)]
    # By the phone, which one user has; the email's three users are not even rivals.
    assert (label["user_id"], label["match_method"]) == ("u0", "deterministic:ph")
    assert label["match_confidence"] >= 0.9
    assert label["match_explanation"][-1] == "dropped em: shared"


def test_the_dropped_answer_carries_all_its_rejection_needs():
    """drop_shared only flags the answer; note_rejections names the field as the contract does."""
    raw = [
        {"key": "dev:d1", "kind": "dev", "degree": 3, "users": [["u0", T, T, 1]]},
        {"key": "ph:p1", "kind": "ph", "degree": 2, "users": [["u0", T, T, 1]]},
        {"key": "click:k1", "kind": "click", "degree": 3, "users": [["u0", T, T, 1]]},
    ]
    answers = {a["key"]: drop_shared(a, limit=2) for a in raw}
    assert [a["key"] for a in answers.values() if not a["users"]] == ["dev:d1"]
    assert answers["ph:p1"] is raw[1] and answers["click:k1"] is raw[2]
    conv: dict = {}
    rejections = note_rejections(conv, answers)
    assert [(r.field, r.reason) for r in rejections] == [("device_id", "shared")]
    assert conv["rejected_identifiers"] == [["device_id", "shared"]]


def _probe_answer(user: str):
    from convstream.core.messages import ProbeAnswer

    return ProbeAnswer("a:Purchase:1", 0, user, {"user_id": user, "engagements": []})
