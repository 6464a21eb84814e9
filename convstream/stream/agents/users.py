"""Users agent (key user_id): engagements into the users table, sightings out, probes answered.

Impressions, ghost ones included, are also units of incrementality in the user state
(:mod:`convstream.core.exposures`); a probe answer carries the candidate's units of the
advertiser, and the users a batch entered in campaigns go to this worker's lifecycle
(:meth:`convstream.core.lifecycle.Lifecycle.entered`), which shares them with every
conversions partition on ``cs-learn`` along with its learning examples: no message of their own.

One pass per batch: parse every impression, click and identity event, update each touched
user's state once, then send *one* message per identifiers partition holding that batch's
sightings for it plus this worker's watermarks, so sightings and watermarks stay in order.
A deletion on the ``privacy`` topic drops the user's state, leaves a marker that keeps later
events of that user out, and tells every identifier entry the user was seen on to forget them.

A record read on another partition than its user's goes there first (:mod:`convstream.stream.
routing`); each partition's event-time clock over the three engagement topics
(:mod:`convstream.core.clock`, kept in the ``event-clocks`` table) sends records stamped far
ahead of it or far behind it to dead-letter.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from typing import Any

from faust.types import TP

from convstream.core import messages
from convstream.core.clock import EventClock, consensus
from convstream.core.engagements import (
    OWN_KINDS,
    add_engagements,
    engagement_row,
    note_link,
    note_own_identifiers,
    probe,
    remember_keys,
)
from convstream.core.exposures import Entered, note_exposures
from convstream.core.identity import engagement_identifiers, sighting_families
from convstream.core.index import COALESCE_MS, merge_families
from convstream.core.lifecycle import Lifecycle
from convstream.core.lift_replay import exposure_of
from convstream.core.partitioning import partition_for
from convstream.core.records import (
    Invalid,
    parse_click,
    parse_deletion,
    parse_identity,
    parse_impression,
)
from convstream.stream import metrics, routing
from convstream.stream.settings import ENGAGEMENT_TOPICS
from convstream.stream.watermarks import WatermarkTracker

#: (identifier key, user id, ten-minute cell of event time): how a batch's sightings are summed.
Sighting = tuple[str, str, int]

PARSERS = {"impressions": parse_impression, "clicks": parse_click, "identity": parse_identity}


def register(rt: Any, channel: Any, lifecycle: Lifecycle) -> None:
    """The agent; ``lifecycle`` is this worker's conversions lifecycle (the attribution
    settings in force, and where users entered in campaigns go)."""
    s = rt.settings
    users = rt.tables["users"]
    stored_clocks = rt.tables["clocks"]
    bounds = {
        "max_future_ms": s.max_engagement_future_ms,
        "max_age_ms": s.retention_ms,
        "broker_skew_ms": s.max_clock_skew_ms,
    }
    # One per partition, over its three topics: a sparse topic (clicks) then has a clock from
    # the first records, and Faust reading one topic ahead of another moves them hours apart,
    # far inside the bounds.
    clocks: dict[int, EventClock] = {}
    # Engagements forwarded to their user's partition: each holds back the watermark of the
    # partition it was read on until that partition confirms it (convstream/stream/routing.py).
    in_flight = routing.InFlight(hold_s=s.reroute_hold_s)

    def clock_key(partition: int) -> str:
        return routing.key_on_partition("clock:engagements", partition, s.partitions)

    def clock_for(partition: int) -> EventClock:
        clock = clocks.get(partition)
        if clock is None:
            blob = stored_clocks.get(clock_key(partition))
            clock = clocks[partition] = EventClock.loads(blob, **bounds)
        return clock

    @rt.app.on_partitions_revoked.connect
    async def _forget_revoked_clocks(sender: Any, revoked: Any, **kwargs: Any) -> None:
        """A partition that moves away takes its clock along; reload it if it comes back."""
        for tp in revoked:
            if rt.logical_name(tp.topic) == ENGAGEMENT_TOPICS[0]:
                clocks.pop(tp.partition, None)

    tracker = WatermarkTracker(
        ENGAGEMENT_TOPICS, lateness_ms=s.allowed_lateness_ms, idle_s=s.max_wait_s
    )
    sent_marks: dict[int, int] = {}
    sent_idle: dict[int, bool] = {}
    # Marks must never overtake the sightings they cover: the timer waits for a batch in flight.
    sending = asyncio.Lock()

    async def process(events: list[Any]) -> None:
        rows: dict[str, list[list[Any]]] = defaultdict(list)
        seen_keys: dict[str, dict[str, int]] = defaultdict(dict)
        own: dict[str, dict[str, int]] = defaultdict(dict)
        sightings: dict[Sighting, list[Any]] = {}
        exposed: dict[str, list[tuple[int, str, str, bool]]] = defaultdict(list)
        probes: list[messages.Probe | messages.UserLink] = []
        counts: dict[str, int] = defaultdict(int)
        confirm: dict[int, list[str]] = defaultdict(list)  # partition read from: tokens
        ticked: set[int] = set()  # partitions whose clock moved
        for event in events:
            topic = rt.logical_name(event.message.topic)
            if topic == "cs-probe":
                request = messages.decode(event.message.value)
                if isinstance(request, messages.Confirmed):  # forwarded from here, now sighted
                    in_flight.confirm(event.message.partition, request.tokens)
                elif isinstance(request, messages.Probe | messages.UserLink):
                    probes.append(request)
                else:
                    raise TypeError(f"{type(request).__name__} on cs-probe")
                continue
            source = routing.origin(event)
            if source is not None:  # forwarded here: confirm it, whatever becomes of it
                confirm[source[0]].append(source[1])
            else:  # counted once, where it was first read
                counts[topic] += 1
            if topic == "privacy":
                await apply_deletions(event, rows, seen_keys, sightings, exposed)
                continue
            partition, offset = event.message.partition, event.message.offset
            try:
                rec = PARSERS[topic](event.message.value)
            except Invalid as exc:
                await rt.dead_letter(event, exc.reason, str(exc))
                tracker.skip(topic, partition, offset=offset)
                continue
            right = routing.target(event, rec.user_id, s.partitions)
            if right is not None:
                token = await routing.forward(rt, event, topic, rec.user_id, right)
                in_flight.add(partition, token, rec.ts, now=time.monotonic())
                tracker.skip(topic, partition, offset=offset)
                continue
            clock = clock_for(partition)
            judged = {"broker_ts": routing.broker_ms(event), "fallback": None}
            if not clock.warm():  # its first records: judged by this worker's other partitions
                judged["fallback"] = consensus(clocks.values())
            verdict = clock.admit(rec.ts, **judged)
            if verdict is not None:
                await rt.dead_letter(event, verdict, clock.explain(rec.ts, **judged))
                tracker.skip(topic, partition, offset=offset)
                continue
            ticked.add(partition)
            tracker.observe(topic, partition, rec.ts, offset=offset)
            if _deleted(users.get(rec.user_id)):
                continue
            if topic == "identity":
                keys = engagement_identifiers(
                    rec.ip, rec.user_agent, rec.device_id, em=rec.em, ph=rec.ph
                )
            else:
                keys = engagement_identifiers(
                    rec.ip, rec.user_agent, rec.device_id, click_id=rec.click_id
                )
                row = engagement_row(rec)
                if row is not None:  # a ghost impression: a sighting, never an engagement
                    rows[rec.user_id].append(row)
                exposure = exposure_of(rec)
                if exposure is not None:  # but both are exposures: units of incrementality
                    exposed[rec.user_id].append(
                        (rec.ts, rec.advertiser_id, rec.campaign_id, exposure.holdout)
                    )
            families = sighting_families(rec.user_agent, rec.ts)
            for kind, key in keys:
                known = seen_keys[rec.user_id]
                known[key] = max(known.get(key, rec.ts), rec.ts)
                if kind in OWN_KINDS:
                    firsts = own[rec.user_id]
                    firsts[kind] = min(firsts.get(kind, rec.ts), rec.ts)
                # By ten-minute cell of event time, as the index keeps them: a batch can span
                # hours, and a lookup must count only the sightings before its conversion.
                cell = (key, rec.user_id, rec.ts // COALESCE_MS)
                seen = sightings.get(cell)
                if seen is None:
                    seen = sightings[cell] = [rec.ts, rec.ts, 1]
                else:
                    seen[0] = min(seen[0], rec.ts)
                    seen[1] = max(seen[1], rec.ts)
                    seen[2] += 1
                if kind == "ip" and families:
                    if len(seen) < 4:  # [first, last, count, families]
                        seen.append({})
                    merge_families(seen[3], families)
        for topic, n in counts.items():
            metrics.count_event_in(topic, n)

        config = lifecycle.config()
        entered: Entered = {}
        for user_id in seen_keys.keys() | rows.keys() | exposed.keys():
            state = remember_keys(users.get(user_id), seen_keys.get(user_id, {}))
            if user_id in own:
                state = note_own_identifiers(state, own[user_id])
            if user_id in exposed:
                note_exposures(state, exposed[user_id], config.unit_window_ms, entered)
            users[user_id] = add_engagements(
                state, rows.get(user_id, []), retention_ms=s.retention_ms
            )
        if entered:  # before the watermarks that let decisions count them move
            lifecycle.entered(entered)
        for partition in ticked:
            stored_clocks[clock_key(partition)] = clocks[partition].dumps()
        sent = await forward_sightings(sightings)
        if confirm:
            # The sightings of the forwarded records first: the partitions they came from then
            # let their watermarks past them, and a lookup released by those must find them.
            await asyncio.gather(*sent)
            for q, tokens in confirm.items():
                await rt.send("cs-probe", None, messages.encode(messages.Confirmed(tokens)), q)
        for request in probes:
            if isinstance(request, messages.UserLink):  # linked to this user by a conversion
                if not _deleted(users.get(request.user_id)):
                    users[request.user_id] = note_link(
                        users.get(request.user_id), request.key, request.ts
                    )
                continue
            state = users.get(request.user_id)
            answer = probe(
                None if _deleted(state) else state,
                request.user_id,
                request.advertiser_id,
                conversion_ts=request.ts,
                retention_ms=s.retention_ms,
                unit_window_ms=config.unit_window_ms(request.advertiser_id),
            )
            reply = messages.ProbeAnswer(
                request.conversion_key, request.round, request.user_id, answer
            )
            await rt.send_keyed("cs-answer", request.conversion_key, messages.encode(reply))

    async def apply_deletions(
        event: Any,
        rows: dict[str, list[list[Any]]],
        seen_keys: dict[str, dict[str, int]],
        sightings: dict[Sighting, list[Any]],
        exposed: dict[str, list[tuple[int, str, str, bool]]],
    ) -> None:
        """Forget a user everywhere: this batch, the users table, the identifier index."""
        try:
            request = parse_deletion(event.message.value)
        except Invalid as exc:
            await rt.dead_letter(event, exc.reason, str(exc))
            return
        if await routing.reroute(rt, event, "privacy", request.user_id):
            return
        user_id = request.user_id
        state = users.get(user_id)
        keys = set((state or {}).get("k") or {}) | set(seen_keys.pop(user_id, {}))
        rows.pop(user_id, None)
        exposed.pop(user_id, None)
        for pair in [pair for pair in sightings if pair[1] == user_id]:
            del sightings[pair]
        users[user_id] = {"deleted": request.ts}
        by_partition: dict[int, list[str]] = defaultdict(list)
        for key in sorted(keys):
            by_partition[partition_for(key, s.partitions)].append(key)
        for q, part_keys in by_partition.items():
            await rt.send("cs-ident", None, messages.encode(messages.Forget(user_id, part_keys)), q)

    async def forward_sightings(
        sightings: dict[Sighting, list[Any]], *, heartbeat: bool = False
    ) -> list[Any]:
        """Send a batch's sightings to their identifiers partitions, each message with the
        watermarks that moved and which partitions this worker owns are idle (repeated every
        ``heartbeat`` while they are: the identifiers agents believe it only for a few seconds,
        so a worker that goes away stops vouching for its partitions). Returns the sends'
        delivery futures (a rerouted record is confirmed once its sightings are delivered)."""
        by_partition: dict[int, list[messages.Sighting]] = defaultdict(list)
        for (key, user_id, _), seen in sightings.items():
            row = messages.Sighting(key, user_id, *seen)  # first, last, count(, families)
            by_partition[partition_for(key, s.partitions)].append(row)
        # Not for a partition that moved to another worker: its new owner reports it.
        owned = rt.active_partitions(ENGAGEMENT_TOPICS[0])
        marks = {}
        for p in sorted(tracker.partitions() | owned):
            mark = tracker.watermark(p)
            held = in_flight.hold(p)
            if mark is not None and held is not None:
                mark = min(mark, held - s.allowed_lateness_ms)
            if mark is not None and mark > sent_marks.get(p, -1):
                marks[p] = mark
        idle = {p: tracker.idle(p) for p in sorted(owned)}
        news = idle != sent_idle or (heartbeat and any(idle.values()))
        sent = []
        for q in range(s.partitions):
            batch = by_partition.get(q)
            if batch or marks or news:
                msg = messages.Sightings(batch or [], marks, idle)
                sent.append(await rt.send("cs-ident", None, messages.encode(msg), q))
        sent_marks.update(marks)
        sent_idle.clear()
        sent_idle.update(idle)
        now_ms = None
        for topic in ENGAGEMENT_TOPICS:
            newest = tracker.newest(topic)
            if newest is not None:
                now_ms = max(now_ms or newest, newest)
        if now_ms is not None and marks:
            metrics.set_watermark_lag("engagements", (now_ms - min(marks.values())) / 1000)
        return sent

    async def end_offsets() -> dict[tuple[str, int], int]:
        """The broker's end offsets of the engagement partitions this worker owns."""
        owned = rt.active_partitions(ENGAGEMENT_TOPICS[0])
        tps = [TP(s.topic(topic), p) for topic in ENGAGEMENT_TOPICS for p in sorted(owned)]
        if not tps:
            return {}
        try:
            ends = await rt.app.consumer.highwaters(*tps)
        except Exception:  # noqa: BLE001 - consumer restarting or rebalancing: ask again later
            return {}
        # Where this worker started reading: the group's committed offsets, which Faust commits
        # only after flushing what the records before them produced (their sightings). Faust
        # keeps them without a public accessor; without them, a worker that takes over a
        # partition with nothing new on it would never see it read to its end.
        committed = getattr(rt.app.consumer, "_committed_offset", None) or {}
        for tp in ends:
            offset = committed.get(tp)
            if offset:
                tracker.committed(rt.logical_name(tp.topic), tp.partition, offset)
        return {(rt.logical_name(tp.topic), tp.partition): end for tp, end in ends.items()}

    @rt.app.agent(channel, name="users")
    async def users_agent(stream: Any) -> None:
        async for events in stream.take_events(s.batch_size, s.batch_within_s):
            metrics.observe_batch("users", len(events))
            async with sending:
                await process(events)

    @rt.app.timer(interval=1.0)
    async def check_end_offsets() -> None:
        """Ask the broker how far the engagement partitions go (convstream/stream/watermarks.py):
        the snapshot first, so that what it holds was produced before the query."""
        snapshot = tracker.snapshot()
        tracker.ends(await end_offsets(), snapshot)
        async with sending:
            await forward_sightings({}, heartbeat=True)


def _deleted(state: dict[str, Any] | None) -> bool:
    return bool(state) and "deleted" in state
