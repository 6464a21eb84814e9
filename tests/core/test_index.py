"""The identifier index: user agent families on address entries, as of the conversion time."""

from __future__ import annotations

from convstream.core.index import MAX_FAMILIES, add_sighting, expire, lookup

H = 3_600_000


def _lookup(entry, ts, top_k=8):
    return lookup(entry, "ip:100.64.0.1", conversion_ts=ts, lookback_ms=30 * 24 * H, top_k=top_k)


def test_a_family_counts_only_from_when_it_was_first_seen_on_the_address():
    entry = add_sighting(None, "u1", 10 * H, families={"chrome/windows": 10 * H})
    # The same user later updates to a browser of another family on the same address.
    entry = add_sighting(entry, "u1", 20 * H, families={"safari/ios": 20 * H})
    assert _lookup(entry, 15 * H)["families"] == {"u1": ["chrome/windows"]}
    assert sorted(_lookup(entry, 25 * H)["families"]["u1"]) == ["chrome/windows", "safari/ios"]
    # A family first seen later in a batch, but earlier in event time, moves back.
    entry = add_sighting(entry, "u1", 21 * H, first_ts=5 * H, families={"safari/ios": 5 * H})
    assert sorted(_lookup(entry, 15 * H)["families"]["u1"]) == ["chrome/windows", "safari/ios"]


def test_family_degree_counts_users_in_the_window_not_only_the_returned_ones():
    entry = None
    for i in range(10):
        family = "safari/ios" if i % 2 else "chrome/android"
        entry = add_sighting(entry, f"u{i}", (i + 1) * H, families={family: (i + 1) * H})
    answer = _lookup(entry, 20 * H, top_k=3)
    assert [row[0] for row in answer["users"]] == ["u9", "u8", "u7"]
    assert set(answer["families"]) == {"u9", "u8", "u7"}
    assert answer["family_degree"] == {"chrome/android": 5, "safari/ios": 5}
    # Users past the lookback window are in neither the degree nor the families.
    late = lookup(entry, "ip:x", conversion_ts=20 * H, lookback_ms=14 * H, top_k=10)
    assert late["family_degree"] == {"chrome/android": 2, "safari/ios": 3}  # u5..u9


def test_families_per_row_are_bounded_and_survive_expiry():
    entry = None
    for i in range(MAX_FAMILIES + 3):
        entry = add_sighting(entry, "bot", H + i, families={f"f{i}/other": H + i})
    assert len(entry["u"]["bot"][4]) == MAX_FAMILIES
    entry = add_sighting(entry, "u2", 50 * H)
    kept = expire(entry, 60 * H, 20 * H)
    assert list(kept["u"]) == ["u2"]
    entry = add_sighting(kept, "u3", 55 * H, families={"safari/ios": 55 * H})
    assert _lookup(entry, 56 * H)["family_degree"] == {"safari/ios": 1}


def test_entries_without_families_answer_as_before():
    # Identifier kinds other than ip, and entries written before families existed.
    old = {"u": {"u1": [H, 2 * H, 3, [2 * H]]}, "d": 0}
    answer = _lookup(old, 3 * H)
    assert answer == {
        "key": "ip:100.64.0.1",
        "kind": "ip",
        "degree": 1,
        "users": [["u1", H, 2 * H, 3]],
    }
    mixed = add_sighting(old, "u2", 2 * H, families={"safari/ios": 2 * H})
    assert _lookup(mixed, 3 * H)["families"] == {"u2": ["safari/ios"]}
