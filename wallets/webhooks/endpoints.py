"""Webhook endpoints in PostgreSQL: create (the secret is returned once), read, update, disable,
rotate the secret, delete (by status: the delivery log stays)."""
from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from wallets.errors import NotFoundError
from wallets.webhooks.rules import new_secret

# previous_secret_until: when the last of the rotated-out secrets still signing stops
_COLUMNS = """id, url, topics, description, status, disabled_reason, max_in_flight,
              (SELECT max(u) FROM unnest(previous_secrets_until) AS u WHERE u > now()) AS previous_secret_until,
              created_at, updated_at"""
MAX_PREVIOUS_SECRETS = 5  # rotated-out secrets signing at once (migration 0039): the latest to stop
DISABLED_BY_REQUEST = "disabled by request"
# A delivery scheduled afresh (a re-drive, an endpoint enabled again): due now, a new retry window
# whose backoff starts again (deliveries.claim counts the attempts within it); `attempts` goes on
# counting, as the attempt log numbers them (it was set to 0: the log listed "attempt 1" again)
AFRESH = """status = 'pending', scheduled_at = now(), next_attempt_at = now(), leased_until = NULL,
            succeeded_at = NULL"""
# The channel the dispatchers LISTEN on (migration 0022 announces each outbox insert on it at commit)
CHANNEL = "tokentill_outbox"


async def announce(conn: AsyncConnection) -> None:
    """Wake the dispatchers at this transaction's commit: deliveries it made due now (a re-drive,
    an endpoint enabled again) write no outbox row, so nothing else announces them, and they
    waited for a dispatcher's next poll."""
    await conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    url: str
    topics: tuple[str, ...]
    description: str
    status: str  # enabled | disabled (deleted ones are not found)
    disabled_reason: str | None
    max_in_flight: int
    previous_secret_until: datetime | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Changes:
    """What a PATCH changes; None leaves a field as it is."""

    url: str | None = None
    topics: list[str] | None = None
    description: str | None = None
    max_in_flight: int | None = None
    enabled: bool | None = None


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(row.id, row.url, tuple(row.topics), row.description, row.status, row.disabled_reason,
                    row.max_in_flight, row.previous_secret_until, row.created_at, row.updated_at)


def _found(row: Any, endpoint_id: str) -> Endpoint:
    if row is None:
        raise NotFoundError(f"no webhook endpoint {endpoint_id}", endpoint_id=endpoint_id)
    return _endpoint(row)


async def create(conn: AsyncConnection, url: str, topics: list[str], description: str,
                 max_in_flight: int) -> tuple[Endpoint, str]:
    """A new endpoint and its signing secret, which no later answer shows."""
    secret = new_secret()
    row = (await conn.execute(text(
        f"""INSERT INTO webhook_endpoints (id, url, topics, description, max_in_flight, secret)
            VALUES (:id, :url, :topics, :description, :max_in_flight, :secret) RETURNING {_COLUMNS}"""),
        {"id": f"we_{secrets.token_hex(8)}", "url": url, "topics": topics, "description": description,
         "max_in_flight": max_in_flight, "secret": secret})).one()
    return _endpoint(row), secret


async def get(conn: AsyncConnection, endpoint_id: str) -> Endpoint:
    row = (await conn.execute(text(
        f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = :id AND status <> 'deleted'"),
        {"id": endpoint_id})).first()
    return _found(row, endpoint_id)


async def list_all(conn: AsyncConnection) -> list[Endpoint]:
    rows = await conn.execute(text(
        f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE status <> 'deleted' ORDER BY created_at, id"))
    return [_endpoint(r) for r in rows]


async def update(conn: AsyncConnection, endpoint_id: str, changes: Changes) -> Endpoint:
    """Apply `changes`; enabling clears the reason it was disabled, disabling gives one. Enabling
    a disabled endpoint starts what was left pending for it afresh, as a re-drive does (due now,
    a new retry window): the window of its first fan-out was spent while nothing could be sent.
    New topics cancel what is pending of the topics dropped, as a delete cancels everything."""
    status = None if changes.enabled is None else ("enabled" if changes.enabled else "disabled")
    was = await lock_endpoint(conn, endpoint_id, fan_out=status == "disabled" or changes.topics is not None)
    row = (await conn.execute(text(
        f"""UPDATE webhook_endpoints SET
              url = coalesce(:url, url), topics = coalesce(:topics, topics),
              description = coalesce(:description, description),
              max_in_flight = coalesce(:max_in_flight, max_in_flight),
              disabled_reason = CASE WHEN :status = 'enabled' THEN NULL
                                     WHEN :status = 'disabled' THEN coalesce(disabled_reason, :reason)
                                     ELSE disabled_reason END,
              status = coalesce(:status, status), updated_at = now()
            WHERE id = :id AND status <> 'deleted' RETURNING {_COLUMNS}"""),
        {"id": endpoint_id, "url": changes.url, "topics": changes.topics, "description": changes.description,
         "max_in_flight": changes.max_in_flight, "status": status, "reason": DISABLED_BY_REQUEST})).first()
    endpoint = _found(row, endpoint_id)
    if was == "enabled" and status == "disabled":
        await hand_over(conn, endpoint_id)
    if changes.topics is not None:  # what is pending of a topic it dropped is not sent (a re-drive can)
        await conn.execute(text(
            """UPDATE webhook_deliveries SET status = 'cancelled', leased_until = NULL
                WHERE endpoint_id = :id AND status = 'pending'
                  AND NOT webhook_topic_matches(CAST(:topics AS text[]), topic)"""),
            {"id": endpoint_id, "topics": list(endpoint.topics)})
    if was == "disabled" and status == "enabled":
        afresh = await conn.execute(text(
            f"UPDATE webhook_deliveries SET {AFRESH} WHERE endpoint_id = :id AND status = 'pending'"),
            {"id": endpoint_id})
        if afresh.rowcount:
            await announce(conn)
    return endpoint


async def rotate_secret(conn: AsyncConnection, endpoint_id: str, grace: timedelta) -> tuple[Endpoint, str]:
    """A new secret; for `grace` the old one signs too (a second signature in the header), so a
    receiver can switch without dropping an event, as do the secrets rotated out earlier until
    their own grace ends (the 5 that end last). A zero grace drops every old secret at once."""
    secret = new_secret()
    keep = grace > timedelta(0)
    row = (await conn.execute(text(
        f"""UPDATE webhook_endpoints SET (previous_secrets, previous_secrets_until) = (
              SELECT coalesce(array_agg(s ORDER BY u DESC), '{{}}'), coalesce(array_agg(u ORDER BY u DESC), '{{}}')
                FROM (SELECT s, u FROM unnest(previous_secrets || secret,
                                              previous_secrets_until || (now() + :grace)) AS k(s, u)
                       WHERE :keep AND u > now() ORDER BY u DESC LIMIT :most) AS kept),
              secret = :secret, updated_at = now()
            WHERE id = :id AND status <> 'deleted' RETURNING {_COLUMNS}"""),
        {"id": endpoint_id, "secret": secret, "keep": keep, "grace": grace,
         "most": MAX_PREVIOUS_SECRETS})).first()
    return _found(row, endpoint_id), secret


async def delete(conn: AsyncConnection, endpoint_id: str) -> Endpoint:
    """Delete by status: its secrets are erased, its pending deliveries cancelled, its log kept."""
    await lock_endpoint(conn, endpoint_id)
    row = (await conn.execute(text(
        f"""UPDATE webhook_endpoints SET status = 'deleted', disabled_reason = NULL, secret = NULL,
              previous_secrets = '{{}}', previous_secrets_until = '{{}}', updated_at = now()
            WHERE id = :id AND status <> 'deleted' RETURNING {_COLUMNS}"""), {"id": endpoint_id})).first()
    endpoint = _found(row, endpoint_id)
    await conn.execute(text(
        """UPDATE webhook_deliveries SET status = 'cancelled', leased_until = NULL
            WHERE endpoint_id = :id AND status = 'pending'"""), {"id": endpoint_id})
    return endpoint


async def hand_over(conn: AsyncConnection, endpoint_id: str) -> None:
    """Queue for an endpoint being disabled the events of its topics committed (this statement
    sees them) that the fan-out has not handed out yet, as it would have while the endpoint was
    enabled: it skips them once the endpoint is disabled, and one enabled again got what was
    pending for it only, so an event committed just before the disable was never sent nor listed
    failed. Those committed later are not queued (nothing is, while it is disabled). The caller
    holds the fan-out's cursor (lock_fan_out), taken before the endpoint's row, as both callers
    (update's disable, the dispatcher's record before _disable_if_failing: lock_endpoint) do."""
    await conn.execute(text(
        """INSERT INTO webhook_deliveries (endpoint_id, event_id, topic, customer_id, payload, event_at)
           SELECT e.id, webhook_event_id(p.lane, p.dedup_key, p.payload), p.topic, p.customer_id, p.payload,
                  p.created_at
             FROM webhook_fan_out f JOIN outbox p ON (p.txid, p.id) > (f.txid, f.outbox_id)
             JOIN webhook_endpoints e ON e.id = :id AND webhook_topic_matches(e.topics, p.topic)
            WHERE p.delivered_at IS NULL  -- as the fan-out: migration 0013's went out then
           ON CONFLICT (endpoint_id, event_id) DO NOTHING"""), {"id": endpoint_id})


async def lock_endpoint(conn: AsyncConnection, endpoint_id: str, *, fan_out: bool = True) -> str | None:
    """Lock what a change of an endpoint's status or topics writes, in the one order every such
    change takes: the fan-out's cursor (unless `fan_out` is false: a change the fan-out does not
    read), the endpoint's row, then (the caller's statements) its deliveries. The dispatcher's
    last failed attempt of a delivery, which disables the endpoint, took the delivery's row first
    and the cursor after it, while a PATCH of topics or a DELETE held the cursor and waited on
    that delivery to cancel it: a deadlock (40P01), which Database.committed did not retry then:
    the PATCH answered 500, or the attempt went unrecorded and was sent again
    (tests/integration/test_webhook_disable_lock_order.py). A re-drive locks the row too (with
    `fan_out` false) before it reads the endpoint's status. Returns its status (None: deleted or
    no such endpoint)."""
    if fan_out:
        await lock_fan_out(conn)
    return (await conn.execute(text(
        "SELECT status FROM webhook_endpoints WHERE id = :id AND status <> 'deleted' FOR NO KEY UPDATE"),
        {"id": endpoint_id})).scalar()


async def lock_fan_out(conn: AsyncConnection) -> None:
    """Wait for a fan-out in flight (it holds its cursor's row until it commits), and keep the
    next from starting until this transaction ends: a fan-out that read the endpoint enabled
    and committed after it was disabled or deleted queued a delivery for it that nothing
    cancelled (pending for ever in a deleted endpoint's log, or sent once it was enabled)."""
    await conn.execute(text("SELECT 1 FROM webhook_fan_out FOR UPDATE"))
