"""An endpoint's delivery log (one row per event, and every attempt) and re-drives: one event
again, or every event since a time (optionally only those not delivered)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.errors import wire_time
from wallets.errors import NotFoundError, TooManyEventsError, WalletValidationError
from wallets.webhooks.endpoints import AFRESH, announce


@dataclass(frozen=True, slots=True)
class Delivery:
    id: int
    event_id: str
    topic: str
    customer_id: str | None
    event_at: datetime
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_latency_ms: int | None
    last_error: str | None
    succeeded_at: datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    id: int
    event_id: str
    attempt: int
    attempted_at: datetime
    status_code: int | None
    latency_ms: int
    error: str | None
    succeeded: bool


async def deliveries(conn: AsyncConnection, endpoint_id: str, *, status: str | None, event_id: str | None,
                     before: int | None, limit: int) -> list[Delivery]:
    """Newest first; `before` is the last id of the previous page."""
    rows = await conn.execute(text(
        f"""SELECT id, event_id, topic, customer_id, event_at, status, attempts,
                   CASE WHEN status = 'pending' THEN next_attempt_at END AS next_attempt_at, last_attempt_at,
                   last_status_code, last_latency_ms, last_error, succeeded_at
              FROM webhook_deliveries
             WHERE {_where(status=status, event_id=event_id, before=before)}
             ORDER BY id DESC LIMIT :limit"""),
        {"e": endpoint_id, "status": status, "event": event_id, "before": before, "limit": limit})
    return [Delivery(*r) for r in rows]


async def attempts(conn: AsyncConnection, endpoint_id: str, *, event_id: str | None, before: int | None,
                   limit: int) -> list[Attempt]:
    rows = await conn.execute(text(
        f"""SELECT id, event_id, attempt, attempted_at, status_code, latency_ms, error, succeeded
              FROM webhook_attempts
             WHERE {_where(event_id=event_id, before=before)}
             ORDER BY id DESC LIMIT :limit"""),
        {"e": endpoint_id, "event": event_id, "before": before, "limit": limit})
    return [Attempt(*r) for r in rows]


def _where(*, status: str | None = None, event_id: str | None = None, before: int | None = None) -> str:
    """An endpoint's log rows, with only the filters given: each is then an index condition, in a
    generic plan too (a log read is a prepared statement, planned generically after its fifth run).
    `(CAST(:event AS text) IS NULL OR event_id = :event)` is none there: one event's attempts were
    found by reading the endpoint's attempts back from its newest (2,000 rows for the oldest of 2,000
    events), and its delivery likewise."""
    return " AND ".join(["endpoint_id = :e", *(["status = :status"] if status is not None else []),
                         *(["event_id = :event"] if event_id is not None else []),
                         *(["id < :before"] if before is not None else [])])


_AGAIN = AFRESH  # a re-drive schedules the delivery afresh


def _waiting(d: str) -> str:
    """Whether delivery `d` is already queued and not yet sent (pending, due now, not leased): a
    re-drive of it sends it once, as it would be anyway, so it is not counted as scheduled anew."""
    return f"({d}.status = 'pending' AND {d}.next_attempt_at <= now() AND coalesce({d}.leased_until <= now(), true))"
_FROM_OUTBOX = """
INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, customer_id, payload, event_at)
SELECT :e, webhook_event_id(o.lane, o.dedup_key, o.payload), o.topic, o.customer_id, o.payload, o.created_at
  FROM outbox o WHERE {where}
ON CONFLICT (endpoint_id, event_id) DO UPDATE SET {again}
 WHERE NOT :failed_only OR (webhook_deliveries.status <> 'succeeded'  -- and not being sent right now:
       AND coalesce(webhook_deliveries.leased_until <= now(), true))   -- a copy would go beside it
RETURNING id
"""


async def redrive_event(conn: AsyncConnection, endpoint_id: str, topics: tuple[str, ...], event_id: str) -> int:
    """Send one event of the endpoint's `topics` to it again (or for the first time, if it came
    before the endpoint subscribed to it); 1, or 0 where it was queued already and not yet sent
    (pending, due now, not leased: as a re-drive `since` counts it); not_found if no such event
    exists, a validation error on `event_id` if its topic is not among `topics` (as a re-drive
    `since` leaves it out)."""
    params = {"e": endpoint_id, "ev": event_id, "topics": list(topics), "failed_only": False}
    had = (await conn.execute(text(
        f"""SELECT id, {_waiting("d")} AS waiting FROM webhook_deliveries d WHERE endpoint_id = :e AND event_id = :ev
               AND webhook_topic_matches(CAST(:topics AS text[]), topic) FOR UPDATE"""), params)).first()
    if had is not None:
        await conn.execute(text(f"UPDATE webhook_deliveries SET {_AGAIN} WHERE id = :id"), {"id": had.id})
        await announce(conn)
        return 0 if had.waiting else 1  # already queued, not yet sent: sent once, not counted
    rows = (await conn.execute(text(_FROM_OUTBOX.format(
        where="webhook_event_id(o.lane, o.dedup_key, o.payload) = :ev"
              " AND webhook_topic_matches(CAST(:topics AS text[]), o.topic)", again=_AGAIN)), params)).all()
    if rows:
        await announce(conn)
        return len(rows)
    topic = (await conn.execute(text(
        """SELECT topic FROM webhook_deliveries WHERE endpoint_id = :e AND event_id = :ev
           UNION ALL
           SELECT o.topic FROM outbox o WHERE webhook_event_id(o.lane, o.dedup_key, o.payload) = :ev
           LIMIT 1"""), params)).scalar()
    if topic is None:
        raise NotFoundError(f"no event {event_id}", event_id=event_id)
    raise WalletValidationError("event_id", f"event {event_id} is {topic}, and this endpoint subscribes to "
                                            f"{', '.join(topics)} only: add its topic (PATCH topics), then re-drive")


# What a re-drive `since` would queue, counted in the statement that queues it (one snapshot): the
# events of the window that the endpoint has not received, or all of them without failed_only. The
# window is [since, until) in the order (created_at, event id), each bound narrowed within its
# microsecond by an event id when one is given: the events of one transaction share a created_at
# (a close's invoice.finalized), and more of them than the limit could not be paged by time alone.
_WINDOW = """
WITH due AS (
    SELECT webhook_event_id(o.lane, o.dedup_key, o.payload) AS event_id, o.topic, o.customer_id, o.payload,
           o.created_at
      FROM outbox o
     WHERE webhook_topic_matches(CAST(:topics AS text[]), o.topic) AND o.created_at >= :since
       AND (CAST(:until AS timestamptz) IS NULL OR o.created_at <= :until)),
bounded AS (
    SELECT * FROM due
     WHERE (created_at > :since OR CAST(:since_event AS text) IS NULL OR event_id COLLATE "C" >= :since_event)
       AND (CAST(:until AS timestamptz) IS NULL OR created_at < :until
            OR (created_at = :until AND event_id COLLATE "C" < CAST(:until_event AS text)))),
wanted AS (
    SELECT bounded.*,  -- already pending and due (queued, not yet sent): not scheduled anew
           coalesce({waiting}, false) AS waiting
      FROM bounded
      LEFT JOIN webhook_deliveries d ON d.endpoint_id = :e AND d.event_id = bounded.event_id
     WHERE NOT :failed_only OR d.id IS NULL
        OR (d.status <> 'succeeded' AND coalesce(d.leased_until <= now(), true))),
counted AS (SELECT count(*) AS n FROM wanted),
past AS (  -- the first event past the limit: the bound that keeps a call within it
    SELECT created_at, event_id FROM wanted ORDER BY created_at, event_id COLLATE "C" OFFSET :limit LIMIT 1),
queued AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, customer_id, payload, event_at)
    SELECT :e, event_id, topic, customer_id, payload, created_at FROM wanted
     WHERE (SELECT n FROM counted) <= :limit
    ON CONFLICT (endpoint_id, event_id) DO UPDATE SET {again}
     WHERE NOT :failed_only OR (webhook_deliveries.status <> 'succeeded'
           AND coalesce(webhook_deliveries.leased_until <= now(), true))
    RETURNING event_id)
SELECT (SELECT n FROM counted), (SELECT count(*) FROM queued),
       (SELECT count(*) FROM queued JOIN wanted USING (event_id) WHERE NOT wanted.waiting),
       (SELECT created_at FROM past), (SELECT event_id FROM past)
"""


async def redrive_since(conn: AsyncConnection, endpoint_id: str, topics: tuple[str, ...], since: datetime,
                        until: datetime | None, failed_only: bool, *, limit: int, since_event_id: str | None = None,
                        until_event_id: str | None = None) -> int:
    """Every event of the endpoint's topics written at or after `since` (and before `until`),
    sent again; with `failed_only`, only those never delivered (failed, cancelled, still waiting
    for a retry, or never handed to this endpoint) but for one whose attempt is open right now.
    `since_event_id` narrows `since` to its events from that id on, `until_event_id` `until` to
    its events before that id (ids compared byte by byte), so that a window's events are in the
    order (created_at, event id). Returns how many were scheduled anew (one already pending and due,
    not yet sent, is not counted: it is sent once). More than `limit` to queue
    queues nothing: TooManyEventsError with the count and the first event past the limit (`until`,
    `until_event_id`): [since, that event) holds exactly `limit`, and the next call starts at it.
    `until` alone keeps a call within the limit too, but pages nothing where more than the limit
    share `since`'s microsecond: the suggested `until` was `since` itself, and [since, since) empty."""
    params: dict[str, Any] = {"e": endpoint_id, "topics": list(topics), "since": since, "until": until,
                              "failed_only": failed_only, "limit": limit, "since_event": since_event_id,
                              "until_event": until_event_id}
    count, queued, anew, within, within_event = (await conn.execute(
        text(_WINDOW.format(again=_AGAIN, waiting=_waiting("d"))), params)).one()
    if count > limit:
        within = wire_time(within)
        raise TooManyEventsError(
            f"{count} events to re-drive in this window, more than the {limit} one call may queue: "
            f"nothing was queued; re-drive up to until={within} and until_event_id={within_event} (exactly "
            f"{limit} events), then on from since={within} and since_event_id={within_event}",
            count=count, limit=limit, until=within, until_event_id=within_event)
    if queued:
        await announce(conn)
    return anew
