"""Idempotency-Keys sent over HTTP are kept per customer scope, not per API key: the scope is the
customers the calling key acts for (`wallets.core.idempotency.http_scope`: `http:*` for a key of
every customer, `http:c:<id>` for one customer, `http:cs:<sha256 of the sorted ids>` for several;
`http:own:…` for a customer's own `customer:<id>` keys), so that a call sent again after the
operator rotated its key is answered its first answer.

The answers kept before under `http:<key id>` (and the bulk calls' claims, `http:<key id>#claim`)
are copied under their key's new scope, with their lane, hash, answer and time; the rows kept per
key stay as they were (answers are immutable), so nothing is lost and a downgrade finds them. When
two keys of one scope used the same Idempotency-Key, the earliest answer is the one copied.

Revision ID: 0038
Revises: 0037
Create Date: 2026-12-03
"""
from __future__ import annotations

from alembic import op

revision = "0038"
down_revision = "0037"
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TEMPORARY TABLE idempotency_scopes ON COMMIT DROP AS
WITH keyed AS (
    SELECT 'http:' || id AS old, CASE WHEN scope LIKE 'customer:%' THEN 'http:own' ELSE 'http' END AS base,
           CASE WHEN scope LIKE 'customer:%' THEN
                     CASE WHEN cardinality(customers) = 0 OR substr(scope, 10) = ANY(customers)
                          THEN ARRAY[substr(scope, 10)] ELSE ARRAY[]::text[] END
                WHEN cardinality(customers) = 0 THEN NULL
                ELSE customers END AS visible
      FROM api_keys
    UNION ALL
    SELECT 'http:bootstrap-admin', 'http', NULL
), listed AS (
    SELECT old, base, visible,
           (SELECT string_agg(c, ',' ORDER BY c)
              FROM (SELECT DISTINCT v COLLATE "C" AS c FROM unnest(visible) v) d) AS ids,
           (SELECT count(DISTINCT v) FROM unnest(visible) v) AS n
      FROM keyed
)
SELECT old,
       base || CASE WHEN visible IS NULL THEN ':*'
                    WHEN n = 1 THEN ':c:' || ids
                    ELSE ':cs:' || encode(sha256(convert_to(coalesce(ids, ''), 'UTF8')), 'hex') END AS new
  FROM listed;

INSERT INTO idempotency_records (lane, scope, key, request_hash, status, response, created_at)
SELECT r.lane, m.new || substr(r.scope, length(m.old) + 1), r.key, r.request_hash, r.status, r.response,
       r.created_at
  FROM idempotency_records r JOIN idempotency_scopes m ON r.scope IN (m.old, m.old || '#claim')
 ORDER BY r.created_at, r.scope
    ON CONFLICT DO NOTHING;

INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
SELECT m.new || substr(o.scope, length(m.old) + 1), o.key, o.request_hash, o.status, o.response, o.created_at
  FROM idempotency_keys o JOIN idempotency_scopes m ON o.scope IN (m.old, m.old || '#claim')
 ORDER BY o.created_at, o.scope
    ON CONFLICT DO NOTHING;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # The copies stay (answers are immutable) and harm nothing: older code looks keys up per API
    # key, where the answers kept before 0038 still are. Answers kept since are not found by it.
    pass
