"""Webhooks: endpoints (signing secrets, topics, a concurrency limit), one delivery per endpoint
and outbox event (its retry state, claimed with leases), and an append-only log of attempts.

Delivery runs off the write path: the fan-out from the outbox and every delivery statement run
at READ COMMITTED, which the SERIALIZABLE wallet writers never conflict with, and take no lane
lock. `outbox.delivered_at` now means "fanned out to the webhook deliveries".

Revision ID: 0013
Revises: 0010
Create Date: 2026-12-02
"""
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE webhook_endpoints (
    id                    text PRIMARY KEY CHECK (id ~ '^we_[0-9a-f]{16}$'),
    url                   text NOT NULL CHECK (url ~ '^https?://[^\s/?#]+' AND length(url) <= 2048),
    topics                text[] NOT NULL CHECK (cardinality(topics) BETWEEN 1 AND 64),
    description           text NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    status                text NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled', 'deleted')),
    disabled_reason       text,
    max_in_flight         integer NOT NULL DEFAULT 4 CHECK (max_in_flight BETWEEN 1 AND 64),
    -- Standard Webhooks secrets (whsec_ + base64 of 24-64 bytes): HMAC needs them in clear.
    secret                text CHECK (secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    previous_secret       text CHECK (previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'),
    previous_secret_until timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'deleted') = (secret IS NULL)),
    CHECK ((status = 'disabled') = (disabled_reason IS NOT NULL)),
    CHECK ((previous_secret IS NULL) = (previous_secret_until IS NULL))
);

-- A deleted endpoint stays deleted (its log is kept); nothing else about it changes.
CREATE FUNCTION webhook_endpoint_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'webhook endpoints are deleted by status, their log kept'
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.status = 'deleted' OR NEW.id <> OLD.id OR NEW.created_at <> OLD.created_at THEN
        RAISE EXCEPTION 'webhook endpoint %: a deleted endpoint, its id and creation are final', OLD.id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER webhook_endpoint_guard BEFORE UPDATE OR DELETE ON webhook_endpoints
    FOR EACH ROW EXECUTE FUNCTION webhook_endpoint_guard();

CREATE TABLE webhook_deliveries (
    id               bigserial PRIMARY KEY,
    endpoint_id      text NOT NULL REFERENCES webhook_endpoints (id),
    event_id         text NOT NULL,
    topic            text NOT NULL,
    customer_id      text,
    payload          jsonb NOT NULL,
    event_at         timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- the retry window runs from here: the first fan-out, or the last re-drive
    scheduled_at     timestamptz NOT NULL DEFAULT now(),
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    leased_until     timestamptz,  -- claimed by a dispatcher until then (it died if it passed)
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_latency_ms  integer CHECK (last_latency_ms >= 0),
    last_error       text,
    succeeded_at     timestamptz,
    UNIQUE (endpoint_id, event_id),
    CHECK ((status = 'succeeded') = (succeeded_at IS NOT NULL)),
    CHECK (status = 'pending' OR leased_until IS NULL)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_at, id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    id            bigserial PRIMARY KEY,
    delivery_id   bigint NOT NULL REFERENCES webhook_deliveries (id),
    endpoint_id   text NOT NULL REFERENCES webhook_endpoints (id),
    event_id      text NOT NULL,
    attempt       integer NOT NULL CHECK (attempt >= 1),
    attempted_at  timestamptz NOT NULL,
    status_code   integer CHECK (status_code BETWEEN 100 AND 599),
    latency_ms    integer NOT NULL CHECK (latency_ms >= 0),
    error         text,
    succeeded     boolean NOT NULL,
    CHECK (succeeded = (status_code BETWEEN 200 AND 299 AND error IS NULL))
);
CREATE INDEX webhook_attempts_log ON webhook_attempts (endpoint_id, id);
CREATE INDEX webhook_attempts_succeeded ON webhook_attempts (endpoint_id, attempted_at) WHERE succeeded;

CREATE FUNCTION webhook_attempts_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'webhook_attempts is append-only' USING ERRCODE = 'restrict_violation';
END $$;
CREATE TRIGGER webhook_attempts_append_only BEFORE UPDATE OR DELETE ON webhook_attempts
    FOR EACH ROW EXECUTE FUNCTION webhook_attempts_append_only();
CREATE TRIGGER webhook_attempts_no_truncate BEFORE TRUNCATE ON webhook_attempts
    FOR EACH STATEMENT EXECUTE FUNCTION webhook_attempts_append_only();

-- A pattern is "*", "family.*" or a topic (wallets/webhooks/rules.py validates them).
CREATE FUNCTION webhook_topic_matches(patterns text[], topic text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$SELECT EXISTS (SELECT 1 FROM unnest(patterns) AS p
                        WHERE p = '*' OR p = topic OR (right(p, 2) = '.*' AND starts_with(topic, left(p, -1))))$$;

-- The id an event is delivered under (webhook-id): its payload's, else one derived from its key.
CREATE FUNCTION webhook_event_id(lane smallint, dedup_key text, payload jsonb) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$SELECT coalesce(payload->>'id', 'evt_' || md5(lane || ':' || dedup_key))$$;

-- Re-drive "everything since T" reads the outbox by time.
CREATE INDEX outbox_created ON outbox (created_at);
"""

DOWNGRADE = """
DROP INDEX IF EXISTS outbox_created;
DROP TABLE IF EXISTS webhook_attempts, webhook_deliveries, webhook_endpoints;
DROP FUNCTION IF EXISTS webhook_attempts_append_only(), webhook_endpoint_guard(),
    webhook_topic_matches(text[], text), webhook_event_id(smallint, text, jsonb);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
