"""Webhook deliveries in PostgreSQL: the fan-out of outbox events to subscribed endpoints (read
past a cursor, never written), the claim of due deliveries (leases, per-endpoint limits, shared
by every process with SKIP LOCKED), and the record of each attempt.

Every function here runs at READ COMMITTED (Database.committed): none takes a lane lock or a
SERIALIZABLE snapshot, so none can make a wallet writer wait or abort.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallets.core.state import wire_time
from wallets.model import new_id
from wallets.webhooks.endpoints import hand_over, lock_endpoint
from wallets.webhooks.rules import DISABLED_TOPIC, RetryPolicy

# The fan-out never writes an outbox row (a writer inserting the same dedup key after such an
# update would fail with 40001): it reads past its cursor, in (txid, id) order, the rows of
# transactions older than every open one, so a row that commits later lies past the cursor.
_LOCK_CURSOR = text("SELECT txid::text AS txid, outbox_id FROM webhook_fan_out FOR UPDATE SKIP LOCKED")
_FAN_OUT = text("""
WITH scanned AS (
    SELECT lane, id, txid, topic, customer_id, dedup_key, payload, created_at, delivered_at FROM outbox
     WHERE (txid, id) > (CAST(:txid AS xid8), :outbox_id) AND txid < pg_snapshot_xmin(pg_current_snapshot())
     ORDER BY txid, id LIMIT :limit
), fanned AS (
    INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, customer_id, payload, event_at)
    SELECT e.id, webhook_event_id(p.lane, p.dedup_key, p.payload), p.topic, p.customer_id, p.payload, p.created_at
      FROM scanned p JOIN webhook_endpoints e ON e.status = 'enabled' AND webhook_topic_matches(e.topics, p.topic)
     WHERE p.delivered_at IS NULL  -- set only by migration 0013's fan-out: those went out then
    ON CONFLICT (endpoint_id, event_id) DO NOTHING
    RETURNING 1
), last AS (
    SELECT txid, id FROM scanned ORDER BY txid DESC, id DESC LIMIT 1
), moved AS (  -- runs whether or not it is read, as every data-modifying WITH does
    UPDATE webhook_fan_out SET txid = last.txid, outbox_id = last.id FROM last RETURNING 1
)
SELECT (SELECT count(*) FROM scanned) AS events, (SELECT count(*) FROM fanned) AS deliveries
""")

# Endpoints with something due, locked so that concurrent claimers skip them: the count of
# deliveries in flight that the next statement reads (a fresh snapshot) is then exact.
_LOCK_DUE_ENDPOINTS = text("""
SELECT e.id, e.max_in_flight FROM webhook_endpoints e
 WHERE e.status = 'enabled' AND EXISTS (
       SELECT 1 FROM webhook_deliveries d
        WHERE d.endpoint_id = e.id AND d.status = 'pending' AND d.next_attempt_at <= now())
 FOR NO KEY UPDATE SKIP LOCKED
""")
_CLAIM = text("""
WITH room AS (
    SELECT r.id, least(r.max_in_flight - (SELECT count(*) FROM webhook_deliveries z
                                           WHERE z.endpoint_id = r.id AND z.status = 'pending'
                                             AND z.leased_until > now()),
                       r.share - coalesce(m.sends, 0)) AS room
      FROM unnest(CAST(:ids AS text[]), CAST(:limits AS int[]), CAST(:shares AS int[])) AS r(id, max_in_flight, share)
      LEFT JOIN unnest(CAST(:mine_ids AS text[]), CAST(:mine_sends AS int[])) AS m(id, sends) ON m.id = r.id
), due AS (  -- each endpoint's oldest due first, then its second, ...: a backlog cannot crowd out the others
    SELECT x.id, x.turn, x.next_attempt_at, room.id = ANY(CAST(:stalling AS text[])) AS stalling
      FROM room CROSS JOIN LATERAL (
        SELECT z.id, z.next_attempt_at, row_number() OVER (ORDER BY z.next_attempt_at, z.id) AS turn FROM (
            SELECT y.id, y.next_attempt_at FROM webhook_deliveries y
             WHERE y.endpoint_id = room.id AND y.status = 'pending' AND y.next_attempt_at <= now()
             ORDER BY y.next_attempt_at, y.id LIMIT greatest(room.room, 0) FOR UPDATE SKIP LOCKED) z) x
), picked AS (  -- the endpoints timing out take at most :stalling_room between them, in the same turns
    SELECT r.id FROM (
        SELECT due.*, row_number() OVER (PARTITION BY due.stalling ORDER BY due.turn, due.next_attempt_at, due.id)
               AS rank FROM due) r
     WHERE NOT r.stalling OR r.rank <= :stalling_room
     ORDER BY r.turn, r.next_attempt_at LIMIT :free
)
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1, leased_until = now() + make_interval(secs => :lease_s),
       next_attempt_at = now() + make_interval(secs => :lease_s)
  FROM picked, webhook_endpoints e
 WHERE d.id = picked.id AND e.id = d.endpoint_id
RETURNING d.id, d.endpoint_id, d.event_id, d.topic, d.payload, d.event_at, d.attempts, d.scheduled_at,
          d.leased_until, e.url, e.secret,
          ARRAY(SELECT s FROM unnest(e.previous_secrets, e.previous_secrets_until) AS k(s, u)
                 WHERE u > now() ORDER BY u DESC) AS previous_secrets,
          -- this attempt's turn in its retry window, the backoff's n: those logged since the window began
          1 + (SELECT count(*) FROM webhook_attempts a  -- (webhook_attempts_event, migration 0078)
                WHERE a.endpoint_id = d.endpoint_id AND a.event_id = d.event_id
                  AND a.attempted_at >= d.scheduled_at) AS turn
""")


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this process holds until `leased_until` (after that another may take it)."""

    id: int
    endpoint_id: str
    event_id: str
    topic: str
    payload: dict[str, Any]
    event_at: datetime
    attempt: int
    scheduled_at: datetime
    leased_until: datetime
    url: str
    secrets: tuple[str, ...]  # the current secret first, then those rotated out still in their grace
    # its turn in the retry window (the backoff's n): `attempt` counts every attempt of the delivery,
    # over its re-drives, while each re-drive (or enabling) starts a window with its backoff afresh
    turn: int = 1


@dataclass(frozen=True, slots=True)
class Outcome:
    attempted_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None
    timed_out: bool = False  # no answer within the timeout (connecting included)

    @property
    def succeeded(self) -> bool:
        return self.error is None and self.status_code is not None and 200 <= self.status_code < 300


async def fan_out(conn: AsyncConnection, limit: int = 500) -> tuple[int, int]:
    """Hand up to `limit` new outbox events to the deliveries of every enabled endpoint that
    subscribes to them; (events, deliveries). One process at a time: the others skip the round."""
    cursor = (await conn.execute(_LOCK_CURSOR)).first()
    if cursor is None:
        return 0, 0
    row = (await conn.execute(_FAN_OUT, {"txid": cursor.txid, "outbox_id": cursor.outbox_id, "limit": limit})).one()
    return int(row.events), int(row.deliveries)


async def claim(conn: AsyncConnection, free: int, lease_s: float, *, share: int | None = None,
                mine: Mapping[str, int] | None = None, stalling: Collection[str] = (),
                stalling_share: int | None = None, tried: Collection[str] | None = None) -> list[Claimed]:
    """Take up to `free` due deliveries, at most each endpoint's `max_in_flight` in flight over
    all processes and `share` in this process (which has `mine[endpoint]` open already), and at
    most `stalling_share` in this process for the `stalling` endpoints (those timing out)
    together, taking turns between endpoints, oldest due first; each is leased for `lease_s`
    seconds. With `tried` (the endpoints this process has had an answer or a timeout from), any
    other endpoint gets one send in this process until it has: one that hangs holds that one."""
    endpoints = (await conn.execute(_LOCK_DUE_ENDPOINTS)).all()
    if not endpoints or free <= 0:
        return []
    mine = mine or {}
    share = free if share is None else share
    known = None if tried is None else set(tried)
    stalling = list(stalling)
    stalling_room = (free if stalling_share is None else stalling_share) - sum(mine.get(e, 0) for e in stalling)
    rows = await conn.execute(_CLAIM, {"ids": [e.id for e in endpoints], "limits": [e.max_in_flight for e in endpoints],
                                       "shares": [share if known is None or e.id in known else min(share, 1)
                                                  for e in endpoints],
                                       "mine_ids": list(mine), "mine_sends": list(mine.values()),
                                       "free": free, "lease_s": lease_s,
                                       "stalling": stalling, "stalling_room": stalling_room})
    return [Claimed(r.id, r.endpoint_id, r.event_id, r.topic, r.payload, r.event_at, r.attempts, r.scheduled_at,
                    r.leased_until, r.url, (r.secret, *r.previous_secrets), r.turn) for r in rows]


async def enabled(conn: AsyncConnection, ids: Collection[str]) -> set[str]:
    """Those of `ids` that name an endpoint neither deleted nor disabled."""
    rows = await conn.execute(text("SELECT id FROM webhook_endpoints WHERE status = 'enabled' AND id = ANY(:ids)"),
                              {"ids": list(ids)})
    return {r.id for r in rows}


async def record(conn: AsyncConnection, claimed: Claimed, outcome: Outcome, policy: RetryPolicy) -> str:
    """Log the attempt and move the delivery on: succeeded, retried later, or failed for good
    (which disables an endpoint that has not succeeded since; that is an event too). A delivery
    re-driven or re-claimed meanwhile keeps its new state. Returns the delivery's status."""
    # the wait counts from the attempt's end: from its start, one that timed out (10 s) had its
    # first retries due before it ended, and a receiver too slow to answer got them back to back
    retry_at = None if outcome.succeeded else policy.next_attempt(
        claimed.scheduled_at, outcome.attempted_at + timedelta(milliseconds=outcome.latency_ms), claimed.turn)
    status = "succeeded" if outcome.succeeded else ("pending" if retry_at else "failed")
    if status == "failed":  # it may disable the endpoint: its locks in the order of an endpoint's change
        await lock_endpoint(conn, claimed.endpoint_id)
    await conn.execute(text(
        """INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt, attempted_at, status_code,
                                         latency_ms, error, succeeded)
           VALUES (:id, :endpoint_id, :event_id, :attempt, :at, :code, :latency, :error, :ok)"""),
        {"id": claimed.id, "endpoint_id": claimed.endpoint_id, "event_id": claimed.event_id,
         "attempt": claimed.attempt, "at": outcome.attempted_at, "code": outcome.status_code,
         "latency": outcome.latency_ms, "error": outcome.error, "ok": outcome.succeeded})
    moved = (await conn.execute(text(
        """UPDATE webhook_deliveries SET status = :status, leased_until = NULL,
                  next_attempt_at = coalesce(:retry_at, next_attempt_at), last_attempt_at = :at,
                  last_status_code = :code, last_latency_ms = :latency, last_error = :error,
                  succeeded_at = CASE WHEN :status = 'succeeded' THEN :at END
            WHERE id = :id AND leased_until = :lease RETURNING id"""),
        {"status": status, "retry_at": retry_at, "at": outcome.attempted_at, "code": outcome.status_code,
         "latency": outcome.latency_ms, "error": outcome.error, "id": claimed.id,
         "lease": claimed.leased_until})).first()
    if moved is not None and status == "failed":
        await _disable_if_failing(conn, claimed)
    return status if moved is not None else "superseded"


async def _disable_if_failing(conn: AsyncConnection, failed: Claimed) -> None:
    """An endpoint with no successful attempt since this delivery was scheduled (its whole retry
    window) is disabled, and the outbox gets webhook_endpoint.disabled for the others. It is handed
    the events committed that the fan-out has not handed out yet (record took the fan-out's cursor
    and the endpoint's row first, before the delivery's, as an endpoint's PATCH or DELETE does)."""
    reason = f"no successful delivery since {wire_time(failed.scheduled_at)}"  # as failing_since spells it
    row = (await conn.execute(text(
        """UPDATE webhook_endpoints e SET status = 'disabled', disabled_reason = :reason, updated_at = now()
            WHERE e.id = :id AND e.status = 'enabled' AND NOT EXISTS (
                  SELECT 1 FROM webhook_attempts a
                   WHERE a.endpoint_id = e.id AND a.succeeded AND a.attempted_at >= :since)
           RETURNING e.id, e.url, e.updated_at"""),
        {"id": failed.endpoint_id, "reason": reason, "since": failed.scheduled_at})).first()
    if row is None:
        return
    await hand_over(conn, row.id)  # before its own event, which it is not sent (disabled)
    event_id = new_id("evt")  # as every event's: sorts by when it was made (it was 24 random hex digits)
    payload = {"id": event_id, "type": DISABLED_TOPIC, "customer_id": None,
               "created_at": wire_time(row.updated_at), "endpoint_id": row.id, "url": row.url,
               "reason": reason, "failing_since": wire_time(failed.scheduled_at)}
    await conn.execute(text(
        """INSERT INTO outbox (lane, topic, customer_id, dedup_key, payload)
           VALUES (0, :topic, NULL, :key, CAST(:payload AS jsonb))"""),
        {"topic": DISABLED_TOPIC, "key": f"{DISABLED_TOPIC}:{row.id}:{event_id}",
         "payload": msgspec.json.encode(payload).decode()})
