"""convstream_identifier_rejected_total counts a conversion's junk per field and reason."""

from __future__ import annotations

import orjson

from convstream.core.records import parse_conversions
from convstream.stream import metrics


def value(**labels: str) -> float:
    return metrics.REGISTRY.get_sample_value("convstream_identifier_rejected_total", labels) or 0.0


def test_rejections_of_a_batch_are_counted_by_field_and_reason():
    before = value(field="em", reason="placeholder"), value(field="madid", reason="all_zero")
    user = {"em": ["n/a", "null", "ann@x.com"], "madid": "00000000-0000-0000-0000-000000000000"}
    event = {"event_name": "lead", "event_id": "e1", "event_time": 1767571200, "user_data": user}
    (conv,) = parse_conversions(orjson.dumps({"advertiser_id": "a", "data": [event]}))
    metrics.count_identifier_rejected(conv.rejected)
    after = value(field="em", reason="placeholder"), value(field="madid", reason="all_zero")
    assert (after[0] - before[0], after[1] - before[1]) == (2.0, 1.0)
