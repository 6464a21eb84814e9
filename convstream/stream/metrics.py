"""Prometheus metrics of a convstream worker, in a registry of their own.

Agents call the small helpers below rather than the metric objects, so that every label value
passes through a bounded vocabulary: no user id, IP, e-mail or event id ever becomes a label,
and advertiser ids appear only when allow-listed (`set_advertiser_allowlist`).
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from convstream.core.attribution import SITE_EVENTS as DEFAULT_SITE_EVENTS
from convstream.core.identity import REJECTION_FIELDS, REJECTION_REASONS, Rejection

REGISTRY = CollectorRegistry()
# CPU seconds, resident and virtual memory, open and maximum file descriptors, start time, as
# convstream_process_* (from /proc; absent on systems without it).
ProcessCollector(namespace="convstream", registry=REGISTRY)

OTHER = "other"
"""The label value that stands for everything outside a bounded vocabulary."""

FIRST_REVISION = 0
"""`revision` of a conversion's first label; any higher revision is a correction."""

MATCH_RATE_WINDOW = 1000

# Event time is in ms; these buckets are in seconds, from a minute to the 30-day lookback.
_LAG_BUCKETS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600)
_LAG_BUCKETS += tuple(d * 86400 for d in (1, 2, 3, 7, 14, 21, 30))
_CONFIDENCE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Up to 30 s: a stall of seconds (a hostile payload, a long collection) must not hide in +Inf.
_LOOP_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)
_LOOP_LAG_BUCKETS += (5, 10, 30)

EVENTS_IN = Counter(
    "convstream_events_in_total", "Records consumed, per topic.", ["topic"], registry=REGISTRY
)
LABELS_OUT = Counter(
    "convstream_labels_out_total",
    "Labels emitted; revision_kind is first or correction.",
    ["revision_kind"],
    registry=REGISTRY,
)
DEAD_LETTER = Counter(
    "convstream_dead_letter_total",
    "Records sent to the dead-letter topic, per source topic and reason.",
    ["topic", "reason"],
    registry=REGISTRY,
)
IDENTIFIER_REJECTED = Counter(
    "convstream_identifier_rejected_total",
    "Identifier values dropped at ingestion as junk, per user_data field as sent and reason.",
    ["field", "reason"],
    registry=REGISTRY,
)
REROUTED = Counter(
    "convstream_records_rerouted_total",
    "Input records read on another partition than the project's (murmur2) one for their key, "
    "forwarded to it (convstream/stream/routing.py), per topic.",
    ["topic"],
    registry=REGISTRY,
)
SITE_EVENTS = Counter(
    "convstream_site_events_total",
    "Events on the conversions topic that are not conversions for their advertiser (the "
    "settings file's conversion_events / site_events): no label; they feed the identity graph.",
    ["event_name"],
    registry=REGISTRY,
)
DEDUPE = Counter(
    "convstream_dedupe_total",
    "Conversion copies folded by dedupe: merged, late_dropped or correction.",
    ["outcome"],
    registry=REGISTRY,
)
CONVERSIONS = Counter(
    "convstream_conversions_total",
    "Labels per match method (deterministic:<kind>, model, none).",
    ["match_method"],
    registry=REGISTRY,
)
MATCH_RATE = Gauge(
    "convstream_match_rate",
    f"Share of the last {MATCH_RATE_WINDOW} labels of this worker that name a user.",
    registry=REGISTRY,
)
MATCH_CONFIDENCE = Histogram(
    "convstream_match_confidence",
    "Match confidence of labels that name a user.",
    buckets=_CONFIDENCE_BUCKETS,
    registry=REGISTRY,
)
MODEL_AUC = Gauge(
    "convstream_model_auc", "Progressive-validation ROC AUC of the match model.", registry=REGISTRY
)
MODEL_LOGLOSS = Gauge(
    "convstream_model_logloss",
    "Progressive-validation log loss of the match model.",
    registry=REGISTRY,
)
CALIBRATION_ECE = Gauge(
    "convstream_calibration_ece",
    "Expected calibration error of match confidence over a sliding window.",
    registry=REGISTRY,
)
CREDITED = Counter(
    "convstream_credited_conversions_total",
    "Attribution credit (fractions of conversions) per engagement type.",
    ["engagement_type"],
    registry=REGISTRY,
)
CLICK_TO_CONVERSION_LAG = Histogram(
    "convstream_click_to_conversion_lag_seconds",
    "Event-time lag from a credited engagement to its conversion.",
    ["engagement_type"],
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
LABEL_WEIGHT = Counter(
    "convstream_label_weight_total", "Sum of emitted label weights.", registry=REGISTRY
)
MESSAGES_SENT = Counter(
    "convstream_messages_sent_total",
    "Messages the worker produced, per topic: its internal hops (cs-ident, cs-answer, cs-probe, "
    "cs-learn, rerouted engagements), labels and dead letters; table changelogs are not counted.",
    ["topic"],
    registry=REGISTRY,
)
BATCH_EVENTS = Histogram(
    "convstream_batch_events",
    "Records per batch an agent took (at most batch_size): the fuller its batches, the fewer "
    "per-batch messages and the less per-batch work per input.",
    ["agent"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
    registry=REGISTRY,
)
PROCESSING_LATENCY = Histogram(
    "convstream_processing_latency_seconds",
    "Wall-clock time from a conversion's arrival to its label's emission.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "convstream_event_loop_lag_seconds",
    "How late an event loop woke a periodic 0.1 s sleep: the time a ready callback waits for "
    "the loop. loop: main (every agent and timer) or consumer (Faust's aiokafka fetch thread).",
    ["loop"],
    buckets=_LOOP_LAG_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "convstream_gc_pause_seconds",
    "Time Python's cyclic garbage collector held the interpreter (every thread), per generation.",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5),
    registry=REGISTRY,
)
WATERMARK_LAG = Gauge(
    "convstream_watermark_lag_seconds",
    "Event-time lag of the watermark behind the newest event time seen, per topic.",
    ["topic"],
    registry=REGISTRY,
)
TABLE_ENTRIES = Gauge(
    "convstream_table_entries", "Entries in a table on this worker.", ["table"], registry=REGISTRY
)
CONSUMER_LAG = Gauge(
    "convstream_consumer_lag",
    "Records behind the log end on this worker's partitions, per topic.",
    ["topic"],
    registry=REGISTRY,
)
REBALANCES = Counter(
    "convstream_rebalances_total", "Consumer group rebalances seen.", registry=REGISTRY
)
REDRIVES = Counter(
    "convstream_rounds_redriven_total",
    "Conversion rounds started again because a rebalance or restart may have lost their lookups.",
    registry=REGISTRY,
)
QUEUES_NOT_SAVED = Counter(
    "convstream_replica_queues_not_saved_total",
    "Match-model replica checkpoints written without their learning queue, which did not fit "
    "in one message: a restart before the replica's next checkpoint loses those examples.",
    registry=REGISTRY,
)
LOOKUPS_PARKED = Gauge(
    "convstream_lookups_parked",
    "Lookups parked in the identifiers agent, by what they wait for: the engagement watermark, "
    "or their turn (an earlier conversion with the same email, phone or external id to be "
    "decided).",
    ["waiting"],
    registry=REGISTRY,
)
TURNS_EXPIRED = Counter(
    "convstream_key_turns_expired_total",
    "Email, phone or external-id keys whose next lookups went out without the decision before "
    "them, which did not come within the lookup ceiling (a round cut by a rebalance, a worker "
    "gone).",
    registry=REGISTRY,
)
BROKER_UP = Gauge(
    "convstream_broker_up",
    "1 when this worker's last interaction with the broker succeeded (from its first metadata "
    "fetch, before the worker starts).",
    registry=REGISTRY,
)
WORKER_UP = Gauge("convstream_worker_up", "1 while the worker runs.", registry=REGISTRY)
HEAP_RELEASED = Counter(
    "convstream_heap_released_bytes",
    "Resident memory handed back to the kernel from free pages inside the C heap.",
    registry=REGISTRY,
)
EQ_PARAM_COVERAGE = Gauge(
    "convstream_eq_param_coverage",
    "Share of conversions carrying a parameter, per advertiser and event name.",
    ["advertiser", "event_name", "param"],
    registry=REGISTRY,
)
EQ_DEDUPE_RATE = Gauge(
    "convstream_eq_dedupe_rate",
    "Share of conversions that arrived as both CAPI and pixel copies.",
    ["advertiser", "event_name"],
    registry=REGISTRY,
)
EQ_MATCH_RATE = Gauge(
    "convstream_eq_match_rate",
    "Share of conversions matched to a user.",
    ["advertiser", "event_name"],
    registry=REGISTRY,
)
EQ_SCORE = Gauge(
    "convstream_eq_score",
    "Event quality score in [0, 10].",
    ["advertiser", "event_name"],
    registry=REGISTRY,
)


class _Vocabulary:
    """Admits label values that match `pattern`: the `known` ones, then the first `max_new`
    others; everything else maps to OTHER, so a metric's series count stays bounded."""

    def __init__(self, pattern: str, max_new: int, known: Iterable[str] = ()) -> None:
        self._pattern = re.compile(pattern)
        self._known = frozenset(known)
        self._new: set[str] = set()
        self._max_new = max_new
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        text = value if isinstance(value, str) else ""
        if text in self._known or text in self._new:
            return text
        if not self._pattern.fullmatch(text):
            return OTHER
        with self._lock:
            if len(self._new) >= self._max_new:
                return OTHER
            self._new.add(text)
        return text


# Topics, tables and dead-letter reasons come from code and configuration, never from input.
_topic = _Vocabulary(r"[A-Za-z0-9._\-]{1,64}", 64)
_agent = _Vocabulary(r"[a-z]{1,16}", 0, known=("users", "identifiers", "conversions"))
_table = _Vocabulary(r"[A-Za-z0-9._\-]{1,64}", 32)
#: Every dead-letter reason the code gives; their series exist at zero from the start.
DEAD_LETTER_REASONS = (
    "invalid_json", "schema", "missing_field", "too_long", "too_large", "bad_timestamp",
    "invalid_ip", "too_old", "future_ts",
)  # fmt: skip
_rejected_field = _Vocabulary(r"(?!)", 0, REJECTION_FIELDS)
_rejected_reason = _Vocabulary(r"(?!)", 0, REJECTION_REASONS)
_reason = _Vocabulary(r"[a-z_]{1,32}", 16, DEAD_LETTER_REASONS)
_dedupe_outcome = _Vocabulary(r"(?!)", 0, ("merged", "late_dropped", "correction"))
_engagement_type = _Vocabulary(r"(?!)", 0, ("click", "view"))
# Event and parameter names come from advertisers: the standard ones, then a few newcomers.
_event_name = _Vocabulary(
    r"[A-Za-z][A-Za-z0-9_]{0,39}",
    20,
    (
        "Purchase", "Lead", "AddToCart", "InitiateCheckout", "CompleteRegistration",
        "Subscribe", "StartTrial", "ViewContent", "Search", "AddPaymentInfo", "AddToWishlist",
        "Contact", "SubmitApplication", "Schedule", "PageView", "Login",
    ),
)  # fmt: skip
_param = _Vocabulary(
    r"[a-z][a-z0-9_]{0,31}",
    16,
    (
        "em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id",
        "client_ip_address", "client_user_agent", "fbc", "fbp", "click_id", "device_id",
        "value", "currency", "event_id", "event_source_url", "order_id",
    ),
)  # fmt: skip

_METHOD_FAMILIES = frozenset({"deterministic", "probabilistic", "model", "none"})
_IDENTIFIER_KINDS = frozenset({"click", "em", "ph", "dev", "ext", "ipua", "ip"})

_advertisers: frozenset[str] = frozenset()


def set_advertiser_allowlist(ids: Iterable[str], max_n: int = 50) -> None:
    """Name advertisers in event-quality metrics: the first `max_n` distinct ids, others are
    reported as "other". Ids that could not be a safe label value are skipped."""
    global _advertisers
    chosen: list[str] = []
    for advertiser_id in ids:
        text = str(advertiser_id)
        if len(chosen) >= max_n:
            break
        if re.fullmatch(r"[A-Za-z0-9._\-]{1,64}", text) and text not in chosen:
            chosen.append(text)
    _advertisers = frozenset(chosen)


def advertiser_label(advertiser_id: object) -> str:
    """The advertiser id if allow-listed, else "other".

    >>> advertiser_label("adv-not-listed")
    'other'
    """
    text = str(advertiser_id)
    return text if text in _advertisers else OTHER


def match_method_label(method: object) -> str:
    """`family` or `family:kind` from a fixed vocabulary, else "other".

    >>> match_method_label("deterministic:em"), match_method_label("model:u42")
    ('deterministic:em', 'other')
    """
    if not isinstance(method, str):
        return OTHER
    family, sep, kind = method.partition(":")
    if family in _METHOD_FAMILIES and (not sep or kind in _IDENTIFIER_KINDS):
        return method
    return OTHER


class SlidingRate:
    """Share of True among the last `size` observations.

    >>> rate = SlidingRate(2)
    >>> rate.add(True), rate.add(False), rate.add(False)
    (1.0, 0.5, 0.0)
    """

    def __init__(self, size: int) -> None:
        self._window: deque[bool] = deque(maxlen=size)
        self._hits = 0
        self._lock = threading.Lock()

    def add(self, hit: bool) -> float:
        with self._lock:
            if len(self._window) == self._window.maxlen:
                self._hits -= self._window[0]
            self._window.append(hit)
            self._hits += hit
            return self._hits / len(self._window)

    def clear(self) -> None:
        with self._lock:
            self._window.clear()
            self._hits = 0


MATCH_WINDOW = SlidingRate(MATCH_RATE_WINDOW)


def _finite(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def observe_label(
    label: Mapping[str, Any], arrival_wall_s: float, *, now_wall_s: float | None = None
) -> None:
    """Update every per-label metric from one emitted label record.

    `arrival_wall_s` is the wall-clock time (time.time()) at which the conversion, or the
    feedback behind a correction, reached the worker. Corrections count again in every
    per-label metric; `convstream_labels_out_total{revision_kind}` tells them apart.
    """
    revision = _finite(label.get("revision")) or 0
    LABELS_OUT.labels("first" if revision <= FIRST_REVISION else "correction").inc()
    CONVERSIONS.labels(match_method_label(label.get("match_method"))).inc()

    matched = bool(label.get("user_id"))
    MATCH_RATE.set(MATCH_WINDOW.add(matched))
    confidence = _finite(label.get("match_confidence"))
    if matched and confidence is not None:
        MATCH_CONFIDENCE.observe(min(max(confidence, 0.0), 1.0))

    conversion_ts = _finite(label.get("ts"))
    for credit in label.get("credits") or ():
        share = _finite(credit.get("credit"))
        if share is None or share <= 0:
            continue
        engagement_type = _engagement_type(credit.get("engagement_type"))
        CREDITED.labels(engagement_type).inc(share)
        engagement_ts = _finite(credit.get("engagement_ts"))
        if conversion_ts is not None and engagement_ts is not None:
            lag_s = (conversion_ts - engagement_ts) / 1000.0
            if lag_s >= 0:
                CLICK_TO_CONVERSION_LAG.labels(engagement_type).observe(lag_s)

    weight = _finite(label.get("label_weight"))
    if weight is not None and weight > 0:
        LABEL_WEIGHT.inc(weight)

    now = time.time() if now_wall_s is None else now_wall_s
    latency = now - arrival_wall_s
    if latency >= 0:
        PROCESSING_LATENCY.observe(latency)


def count_event_in(topic: str, n: int = 1) -> None:
    EVENTS_IN.labels(_topic(topic)).inc(n)


def count_sent(topic: str, n: int = 1) -> None:
    MESSAGES_SENT.labels(_topic(topic)).inc(n)


def observe_batch(agent: str, records: int) -> None:
    """``records`` taken in one batch by ``agent`` (users, identifiers or conversions)."""
    BATCH_EVENTS.labels(_agent(agent)).observe(records)


def count_dead_letter(topic: str, reason: str) -> None:
    DEAD_LETTER.labels(_topic(topic), _reason(reason)).inc()


def count_identifier_rejected(rejections: Iterable[Rejection]) -> None:
    """Count a conversion's rejected identifier values (``Conversion.rejected``)."""
    for r in rejections:
        IDENTIFIER_REJECTED.labels(_rejected_field(r.field), _rejected_reason(r.reason)).inc()


def count_site_event(event_name: str) -> None:
    """Count one site event (not a conversion for its advertiser) by its name.

    >>> count_site_event("PageView")
    >>> REGISTRY.get_sample_value("convstream_site_events_total", {"event_name": "PageView"}) >= 1
    True
    """
    SITE_EVENTS.labels(_event_name(event_name)).inc()


def count_rerouted(topic: str, n: int = 1) -> None:
    REROUTED.labels(_topic(topic)).inc(n)


def precreate(topics: Iterable[str]) -> None:
    """Give every (topic, reason) dead-letter series, every input topic's events-in and
    rerouted series, and every (field, reason) of rejected identifiers the value 0 now: a
    series that first appears on its first increment hides that increment from ``increase()``
    and ``rate()``, so an alert would miss a burst.

    >>> precreate(["clicks"])
    >>> REGISTRY.get_sample_value(
    ...     "convstream_dead_letter_total", {"topic": "clicks", "reason": "future_ts"})
    0.0
    """
    for topic in topics:
        EVENTS_IN.labels(_topic(topic))
        REROUTED.labels(_topic(topic))
        for reason in DEAD_LETTER_REASONS:
            DEAD_LETTER.labels(_topic(topic), reason)
    for field in REJECTION_FIELDS:
        for reason in REJECTION_REASONS:
            IDENTIFIER_REJECTED.labels(_rejected_field(field), _rejected_reason(reason))
    for name in DEFAULT_SITE_EVENTS:
        SITE_EVENTS.labels(_event_name(name))


def count_dedupe(outcome: str) -> None:
    DEDUPE.labels(_dedupe_outcome(outcome)).inc()


def count_rebalance() -> None:
    REBALANCES.inc()


def count_redrive() -> None:
    REDRIVES.inc()


def count_queues_not_saved(n: int = 1) -> None:
    QUEUES_NOT_SAVED.inc(n)


def set_lookups_parked(watermark: int, turn: int) -> None:
    LOOKUPS_PARKED.labels("watermark").set(watermark)
    LOOKUPS_PARKED.labels("turn").set(turn)


def count_turns_expired(n: int = 1) -> None:
    if n > 0:
        TURNS_EXPIRED.inc(n)


def set_watermark_lag(topic: str, seconds: float) -> None:
    WATERMARK_LAG.labels(_topic(topic)).set(max(seconds, 0.0))


def set_consumer_lag(topic: str, records: int) -> None:
    CONSUMER_LAG.labels(_topic(topic)).set(max(records, 0))


def set_table_entries(table: str, entries: int) -> None:
    TABLE_ENTRIES.labels(_table(table)).set(entries)


def set_broker_up(up: bool) -> None:
    BROKER_UP.set(1 if up else 0)


def set_worker_up(up: bool = True) -> None:
    WORKER_UP.set(1 if up else 0)


def observe_loop_lag(seconds: float, loop: str = "main") -> None:
    EVENT_LOOP_LAG.labels(loop).observe(max(seconds, 0.0))


def gc_pause_observer() -> Callable[[int, float], None]:
    """``observe(generation, seconds)`` for a ``gc.callbacks`` entry.

    The per-generation children are made here, up front: making one holds the metric's lock
    while it allocates, a collection can start right there, and a callback that then asked for
    a child would wait for a lock its own thread holds.
    """
    children = {generation: GC_PAUSE.labels(str(generation)) for generation in range(3)}

    def observe(generation: int, seconds: float) -> None:
        children[generation].observe(max(seconds, 0.0))

    return observe


def count_heap_released(n_bytes: int) -> None:
    HEAP_RELEASED.inc(max(n_bytes, 0))


def set_model_quality(
    *, auc: float | None = None, logloss: float | None = None, ece: float | None = None
) -> None:
    """Set the match model's progressive-validation and calibration gauges given."""
    for gauge, value in ((MODEL_AUC, auc), (MODEL_LOGLOSS, logloss), (CALIBRATION_ECE, ece)):
        if value is not None:
            gauge.set(value)


def set_event_quality(
    advertiser_id: str,
    event_name: str,
    *,
    param_coverage: Mapping[str, float],
    dedupe_rate: float,
    match_rate: float,
    score: float,
) -> None:
    """Set the event-quality gauges of one advertiser's event name.

    Advertisers off the allow-list share the series advertiser="other": give them figures
    computed over all of them together, or the last caller wins.
    """
    labels = (advertiser_label(advertiser_id), _event_name(event_name))
    for param, coverage in param_coverage.items():
        EQ_PARAM_COVERAGE.labels(*labels, _param(param)).set(coverage)
    EQ_DEDUPE_RATE.labels(*labels).set(dedupe_rate)
    EQ_MATCH_RATE.labels(*labels).set(match_rate)
    EQ_SCORE.labels(*labels).set(score)


def start_metrics_server(host: str, port: int) -> None:
    """Serve REGISTRY at http://host:port/metrics from a daemon thread; port 0 disables it.
    Marks the worker up."""
    if port == 0:
        return
    start_http_server(port, addr=host, registry=REGISTRY)
    set_worker_up(True)
