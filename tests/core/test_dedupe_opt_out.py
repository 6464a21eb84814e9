"""An opt-out on any copy of a conversion keeps the merged copy free of identifiers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from convstream.core.dedupe import identifier_gain, merge_user_data
from convstream.core.identity import conversion_identifier_keys

FULL = {"em": "e" * 64, "ph": "f" * 64, "click_id": "k1", "client_ip_address": "1.2.3.4"}
OPTED = {**dict.fromkeys(FULL), "opt_out": True}


def test_a_later_opted_out_copy_empties_the_first_and_counts_as_a_gain():
    merged = merge_user_data(FULL, OPTED)
    assert conversion_identifier_keys("a", merged) == []
    assert identifier_gain(FULL, merged) == ["opt_out"]  # so the label is redone without a user


def test_a_later_copy_cannot_refill_an_opted_out_first():
    merged = merge_user_data(OPTED, FULL)
    assert merged["opt_out"] is True
    assert conversion_identifier_keys("a", merged) == []
    assert identifier_gain(OPTED, merged) == []


@given(st.dictionaries(st.sampled_from(sorted(FULL)), st.sampled_from([None, "x" * 64, "k2"])))
def test_opt_out_wins_in_either_order(other):
    for merged in (merge_user_data(other, OPTED), merge_user_data(OPTED, other)):
        assert merged["opt_out"] is True
        assert all(v is None for k, v in merged.items() if k != "opt_out")
