"""The full audit: the ledger's own checks plus the wallets'. Each wallet check is a query that
names what is wrong; together they prove the product tables agree with the journal."""
from __future__ import annotations

import weakref

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.audit import Check, CheckFn, Report, _query_check, problems_check, verify
from pricing.money import CURRENCY_MINOR_UNITS, DEFAULT_SCALE, minor_unit
from pricing.units import PER_UNITS
from wallets import chart, store
from wallets.core.billing import NOTED


def _literal(value: str) -> str:
    """A constant of the chart as an SQL literal in text() (which would read `:name` as a parameter)."""
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


_UNIT = 10 ** chart.ASSET_SCALE  # atomic units a unit of the currency (a document's figures are in units)
_OPEN = "(" + ", ".join(_literal(status) for status in chart.OPEN_STATUSES) + ")"
_RESERVED = f"{_literal(chart.RESERVED_CODE[0])} || c.id || {_literal(chart.RESERVED_CODE[1])}"
_RECEIVABLE = f"{_literal(chart.RECEIVABLE_CODE[0])} || c.id || {_literal(chart.RECEIVABLE_CODE[1])}"


# What a schema below head lacks, for the checks that run there too (a test verifies a database
# moved down to 0028, tests/integration/billing/test_period_deltas.py): read in one query, once
# per transaction (a verify's checks share it), not a catalog probe per check.
_OPTIONAL_SQL = """SELECT
    to_regclass('invoices') IS NOT NULL AS invoices,                  -- 0017
    to_regclass('usage_rollups') IS NOT NULL AS usage_rollups,        -- 0018
    to_regclass('budget_windows') IS NOT NULL AS budget_windows,      -- 0014
    to_regclass('credit_notes') IS NOT NULL AS credit_notes,          -- 0019
    to_regclass('usage_unfolded') IS NOT NULL AS usage_unfolded,      -- 0026
    to_regclass('period_deltas') IS NOT NULL AS period_deltas,        -- 0029
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('charge_adjustments')
               AND attname = 'allowance_moves' AND NOT attisdropped) AS allowance_moves,  -- 0034
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('charges')
               AND attname = 'period' AND NOT attisdropped) AS charge_periods,  -- 0040
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('lots')
               AND attname = 'revoked_at' AND NOT attisdropped) AS revoked_at,  -- 0048
    to_regclass('rerate_true_ups') IS NOT NULL AS rerate_true_ups,    -- 0064
    to_regclass('true_up_charges') IS NOT NULL AS true_up_charges,    -- 0068
    to_regclass('true_up_payers') IS NOT NULL AS true_up_payers,      -- 0082
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('charge_adjustments')
               AND attname = 'new_rules' AND NOT attisdropped) AS adjustment_rules,  -- 0087
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('true_up_payers')
               AND attname = 'written' AND NOT attisdropped) AS true_up_payers_written,  -- 0085
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('true_up_charges')
               AND attname = 'adjustment_seq' AND NOT attisdropped) AS true_up_charges_seq,  -- 0090
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('rerate_true_ups')
               AND attname = 'payer_rows' AND NOT attisdropped) AS rerate_true_ups_payers,  -- 0091
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('lots')
               AND attname = 'empty' AND NOT attisdropped) AS lots_empty,  -- 0072
    EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass('lots')
               AND attname = 'paid_receivable' AND NOT attisdropped) AS lots_paid_receivable  -- 0073"""


async def _schema(conn: AsyncConnection) -> dict[str, bool]:
    """Which optional tables and columns this schema has, read once per transaction."""
    info, transaction = conn.sync_connection.info, conn.sync_connection.get_transaction()
    kept = info.get("tokentill_audit_schema")
    if kept is not None and transaction is not None and kept[0]() is transaction:
        return kept[1]
    found = dict((await conn.execute(text(_OPTIONAL_SQL))).mappings().one())
    if transaction is not None:  # the connection's info outlives the transaction: a weak reference
        info["tokentill_audit_schema"] = (weakref.ref(transaction), found)
    return found


async def assets_scaled(conn: AsyncConnection) -> Check:
    """Every wallet currency (a customer's) at the wallets' scale (chart.ASSET_SCALE): amounts are
    integers of atomic units, and the asset's scale alone says what a unit is worth. No hash covers
    it (a seal covers the units and the asset's code), so a scale rewritten past its trigger changed
    every figure shown of that currency (the trial balance, the exports, the statements) by a power
    of ten, and every other check still passed."""
    return await _query_check(conn, "assets", f"""
        SELECT format('asset %s has scale %s, but a wallet currency is kept in units of 10^-%s: '
                      'its customers'' amounts read %s%s times what they are', s.code, s.scale, {chart.ASSET_SCALE},
                      CASE WHEN s.scale > {chart.ASSET_SCALE} THEN '1/' ELSE '' END,
                      '1' || repeat('0', abs({chart.ASSET_SCALE} - s.scale)))
          FROM assets s
         WHERE s.scale <> {chart.ASSET_SCALE}
           AND EXISTS (SELECT 1 FROM customers c WHERE c.currency = s.code)
         ORDER BY s.code
        """, f"every wallet currency has the wallets' scale ({chart.ASSET_SCALE})")


async def reservations_consistent(conn: AsyncConnection) -> Check:
    """A reservation's charges and hold pieces are read in its lane (a reservation id is unique within
    its lane alone: another lane's row of that id is a forger's)."""
    return await _query_check(conn, "reservations", f"""
        SELECT format('reservation %s is %s but has a final charge', r.id, r.status)
          FROM reservations r JOIN charges c ON c.lane = r.lane AND c.reservation_id = r.id AND c.final
         WHERE r.status IN {_OPEN}
        UNION ALL
        SELECT format('reservation %s is settled without a final charge', r.id)
          FROM reservations r
         WHERE r.status = 'settled' AND NOT EXISTS (
               SELECT 1 FROM charges c WHERE c.lane = r.lane AND c.reservation_id = r.id AND c.final)
        UNION ALL
        SELECT format('reservation %s: captured %s, charged %s, but its charges say %s and %s',
                      r.id, r.captured, r.charged, coalesce(c.from_hold, 0), coalesce(c.charged, 0))
          FROM reservations r LEFT JOIN (
               SELECT lane, reservation_id, sum(from_hold) AS from_hold, sum(charged) AS charged
                 FROM charges WHERE reservation_id IS NOT NULL GROUP BY 1, 2) c
            ON c.lane = r.lane AND c.reservation_id = r.id
         WHERE r.captured <> coalesce(c.from_hold, 0) OR r.charged <> coalesce(c.charged, 0)
        UNION ALL
        SELECT format('reservation %s holds %s but its hold pieces sum to %s', r.id, r.amount, coalesce(h.s, 0))
          FROM reservations r LEFT JOIN (
               SELECT lane, reservation_id, sum(amount) AS s FROM reservation_holds GROUP BY 1, 2) h
            ON h.lane = r.lane AND h.reservation_id = r.id
         WHERE r.amount <> coalesce(h.s, 0)
        """, "no reservation is both open and settled; captures and holds add up")


async def holds_equal_reserved(conn: AsyncConnection) -> Check:
    return await _query_check(conn, "holds_equal_reserved", f"""
        SELECT format('customer %s: reserved account holds %s, open reservations hold %s',
                      c.id, coalesce(b.credits - b.debits, 0), coalesce(h.held, 0))
          FROM customers c
          JOIN accounts a ON a.code = {_RESERVED}
          JOIN account_balances b ON b.account_id = a.id
          LEFT JOIN (SELECT customer_id, sum(amount - captured - released) AS held FROM reservations
                      WHERE status IN {_OPEN} GROUP BY customer_id) h ON h.customer_id = c.id
         WHERE b.credits - b.debits <> coalesce(h.held, 0)
        """, "every reserved account equals what its open reservations hold")


async def lots_match_accounts(conn: AsyncConnection) -> Check:
    schema = await _schema(conn)
    # a grant revoked in whole is closed for good: what comes back to it is revoked again (0048 on)
    revoked = """
        UNION ALL
        SELECT format('lot %s was revoked in whole, yet its account holds %s', l.id, b.credits - b.debits)
          FROM lots l JOIN account_balances b ON b.account_id = l.account_id
         WHERE l.revoked_at IS NOT NULL AND b.credits <> b.debits""" if schema["revoked_at"] else ""
    # a lot marked empty is one a wallet batch's load does not read: money it holds would be lost
    # to the customer's charges (0072 on)
    empty = """
        UNION ALL
        SELECT format('lot %s is marked empty, yet its account holds %s', l.id, b.credits - b.debits)
          FROM lots l JOIN account_balances b ON b.account_id = l.account_id
         WHERE l.empty AND l.expired_at IS NULL AND b.credits > b.debits""" if schema["lots_empty"] else ""
    # a close reads only the top-ups marked as having paid the receivable (0073 on; what
    # store.load_unapplied takes as paid: a top-up entry's net credit to the receivable): one
    # unmarked (a server older than 0073 wrote it, in a rolling deploy) is a payment its invoice would
    # not see. A lot marked that did not pay is only read for nothing (0073's backfill marks a true-up's
    # credit lot whose entry credited the receivable), so it is not named.
    paid = """
        UNION ALL
        SELECT format('lot %s: its top-up paid the receivable, yet it is not marked paid_receivable', l.id)
          FROM lots l JOIN journal_entries j ON j.lane = l.lane AND j.id = l.entry_id AND j.kind = 'topup'
         WHERE l.kind = 'topup' AND NOT l.paid_receivable
           AND (SELECT -sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                 WHERE p.lane = l.lane AND p.entry_id = l.entry_id
                   AND a.code = 'asset:customer:' || l.customer_id || ':' || 'receivable') > 0""" \
        if schema["lots_paid_receivable"] else ""
    return await _query_check(conn, "lots", f"""
        SELECT format('lot %s: remaining %s is outside 0..%s granted', l.id, b.credits - b.debits, l.granted)
          FROM lots l JOIN account_balances b ON b.account_id = l.account_id
         WHERE b.credits - b.debits < 0 OR b.credits - b.debits > l.granted
        UNION ALL
        SELECT format('lot %s expired, yet its account still holds %s', l.id, b.credits - b.debits)
          FROM lots l JOIN account_balances b ON b.account_id = l.account_id
         WHERE l.expired_at IS NOT NULL AND b.credits <> b.debits{revoked}{empty}{paid}
        UNION ALL
        SELECT format('lot %s: granted %s, but its opening entry credited %s', l.id, l.granted,
                      coalesce(-(SELECT sum(p.amount) FROM postings p WHERE p.lane = l.lane
                                    AND p.entry_id = l.entry_id AND p.account_id = l.account_id), 0))
          FROM lots l
         WHERE l.granted <> coalesce(-(SELECT sum(p.amount) FROM postings p WHERE p.lane = l.lane
                                          AND p.entry_id = l.entry_id AND p.account_id = l.account_id), 0)
        """, "each lot's remaining is its account balance, within what was granted; expired lots, grants "
           "revoked in whole and lots marked empty hold nothing; a top-up that paid the receivable is marked so")


async def wallets_within_limits(conn: AsyncConnection) -> Check:
    return await _query_check(conn, "wallet_limits", f"""
        SELECT format('customer %s: %s is at %s, below 0', c.id, a.code, b.normal_sign * (b.debits - b.credits))
          FROM customers c JOIN accounts a ON a.customer_id = c.id
          JOIN account_balances b ON b.account_id = a.id
         WHERE b.normal_sign * (b.debits - b.credits) < 0
        UNION ALL
        SELECT format('customer %s: receivable %s against overdraft limit %s, but blocked is %s',
                      c.id, b.debits - b.credits, c.overdraft_limit, c.blocked)
          FROM customers c
          JOIN accounts a ON a.code = {_RECEIVABLE}
          JOIN account_balances b ON b.account_id = a.id
         WHERE c.blocked <> (c.overdraft_limit IS NOT NULL AND b.debits - b.credits > c.overdraft_limit)
        """, "no wallet account is below zero; a wallet past its overdraft limit is blocked")


async def charges_match_entries(conn: AsyncConnection) -> Check:
    return await _query_check(conn, "charges", f"""
        SELECT format('charge %s (%s) charged %s, but entry %s credited usage revenue %s',
                      c.id, c.request_id, c.charged, c.entry_id, coalesce(r.revenue, 0))
          FROM charges c LEFT JOIN LATERAL (
               SELECT -sum(p.amount) AS revenue FROM postings p JOIN accounts a ON a.id = p.account_id
                WHERE p.lane = c.lane AND p.entry_id = c.entry_id
                  AND a.code LIKE {_literal(chart.revenue_account('%'))}) r ON true
         WHERE c.charged <> coalesce(r.revenue, 0)
        UNION ALL
        SELECT format('charge %s (%s): its lines sum to %s, not %s', c.id, c.request_id,
                      (SELECT sum((l->>'amount_units')::numeric) FROM jsonb_array_elements(c.lines) l), c.charged)
          FROM charges c
         WHERE c.charged <> coalesce((SELECT sum((l->>'amount_units')::numeric)
                                        FROM jsonb_array_elements(c.lines) l), 0)
        """, "every charge equals the revenue its entry posted and the sum of its lines")


# The units one price covers, by token type (pricing.units), as SQL rows.
_PER = ", ".join(f"({_literal(name)}, {per})" for name, per in PER_UNITS.items())


async def charge_lines_rounded(conn: AsyncConnection) -> Check:
    """Each charge's lines follow their own unit prices and quantities under the one rounding
    rule (pricing.money.round_entry): a usage or discount line's exact amount is quantity x unit
    price / the units a price covers (a free allowance line's is the exact amount it records);
    each line is within one atomic unit of it, and the lines within half a unit of their exact
    total (which the `charges` check holds to the charge's total and its entry)."""
    return await _query_check(conn, "charge_lines", f"""
        WITH per (token_type, per) AS (VALUES {_PER}),
        lines AS (
            SELECT c.id, c.request_id, c.customer_id, x.o, x.l ->> 'kind' AS kind, x.l ->> 'rule_id' AS rule_id,
                   x.l ->> 'token_type' AS token_type, x.l ->> 'quantity' AS quantity,
                   x.l ->> 'unit_price' AS unit_price, (x.l ->> 'amount_units')::numeric AS amount,
                   CASE WHEN x.l ->> 'kind' IN ('usage', 'discount')
                        THEN (x.l ->> 'quantity')::numeric * (x.l ->> 'unit_price')::numeric
                             * {10 ** DEFAULT_SCALE} / per.per
                        WHEN x.l ->> 'kind' = 'free_allowance'
                        THEN (x.l ->> 'exact')::numeric * {10 ** DEFAULT_SCALE} END AS exact
              FROM charges c CROSS JOIN LATERAL jsonb_array_elements(c.lines) WITH ORDINALITY x(l, o)
              LEFT JOIN per ON per.token_type = x.l ->> 'token_type')
        SELECT format('charge %s (%s) of customer %s: line %s (%s %s, rule %s) of %s units at unit price %s is %s '
                      'units, not within one unit of its exact amount %s', id, request_id, customer_id, o, kind,
                      coalesce(token_type, '-'), coalesce(rule_id, '-'), coalesce(quantity, '?'),
                      coalesce(CASE WHEN unit_price ~ '^-?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?$'
                                    THEN unit_price::numeric::text ELSE unit_price END, '?'),  -- 5E-7: 0.0000005
                      amount, coalesce(trim_scale(exact)::text, 'unknown'))
          FROM lines WHERE exact IS NULL OR abs(amount - exact) >= 1
        UNION ALL
        SELECT format('charge %s (%s) of customer %s: its lines sum to %s units, their exact total is %s',
                      id, request_id, customer_id, sum(amount), trim_scale(sum(exact)))
          FROM lines GROUP BY id, request_id, customer_id HAVING abs(sum(amount) - sum(exact)) > 0.5
        """, "every charge line is within one atomic unit of quantity x unit price, its lines within half a "
             "unit of their exact total (the rounding rule)")


async def _deltas(conn: AsyncConnection) -> bool:
    """Whether this schema appends period deltas (migration 0029 on)."""
    return (await _schema(conn))["period_deltas"]


async def _allowance_moves(conn: AsyncConnection) -> bool:
    """Whether re-rates record what they move of free allowances (migration 0034 on)."""
    return (await _schema(conn))["allowance_moves"]


async def usage_counters_match_charges(conn: AsyncConnection) -> Check:
    """Counters count by the customer's billing period (its cycle, from migration 0017; UTC
    months before). From 0029 on, a counter is its folded row plus its unfolded deltas."""
    period = ("wallets_period_label(c.occurred_at, cu.time_zone, cu.billing_anchor_day)" if await _billed(conn)
              else "to_char(c.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM')")
    counters = ("""(SELECT customer_id, period, book_id, rule_id, sum(quantity) AS quantity FROM (
                       SELECT customer_id, period, book_id, rule_id, quantity FROM usage_counters
                       UNION ALL
                       SELECT customer_id, period, unnest(books), unnest(rules), unnest(counts)
                         FROM period_deltas) u
                     GROUP BY 1, 2, 3, 4)""" if await _deltas(conn) else "usage_counters")
    # what re-rates moved of each free allowance (migration 0034), in the period of their charges
    moved = """
             UNION ALL
            SELECT a.customer_id, a.period, c.price_book, 'allowance:' || m.key, m.value::numeric
              FROM charge_adjustments a JOIN charges c ON c.lane = a.lane AND c.id = a.charge_id
             CROSS JOIN LATERAL jsonb_each_text(a.allowance_moves) m""" if await _allowance_moves(conn) else ""
    # what closes' true-ups gave back to each free allowance (a free_allowance line of no price
    # version in the period's rollup), in the period it trues up (migration 0036)
    given = """
             UNION ALL
            SELECT customer_id, j->>0, NULL, 'allowance:' || (j->>7), -amount FROM (
                SELECT customer_id, (substr(item, 6))::jsonb AS j, amount FROM (
                    SELECT customer_id, item, amount FROM period_rollups
                    UNION ALL
                    SELECT customer_id, unnest(items), unnest(amounts) FROM period_deltas) r
                 WHERE item LIKE 'line:["%","free_allowance",%') g
             WHERE j->>1 = 'free_allowance' AND j->>7 IS NOT NULL AND j->8 = 'null'::jsonb""" \
        if await _deltas(conn) else ""
    return await _query_check(conn, "usage_counters", f"""
        WITH rated AS (
            SELECT customer_id, period, book_id, rule_id, sum(q) AS q FROM (
            SELECT c.customer_id, {period} AS period,
                   c.price_book AS book_id,
                   CASE WHEN l->>'kind' = 'usage' THEN l->>'rule_id' ELSE 'allowance:' || (l->>'override_id') END
                       AS rule_id,
                   CASE WHEN l->>'kind' = 'usage' THEN (l->>'quantity')::numeric
                        ELSE -(l->>'amount_units')::numeric END AS q
              FROM charges c JOIN customers cu ON cu.id = c.customer_id
             CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
             WHERE (l->>'kind' = 'usage' AND l->>'rule_id' IS NOT NULL)
                OR (l->>'kind' = 'free_allowance' AND l->>'override_id' IS NOT NULL)  -- money taken, in units
            {moved}{given}) x
             GROUP BY 1, 2, 3, 4),
        -- an allowance's counters by book together: a give-back is off its close's book first
        rated_all AS (
            SELECT customer_id, period, CASE WHEN rule_id LIKE 'allowance:%' THEN '*' ELSE book_id END AS book_id,
                   rule_id, sum(q) AS q FROM rated GROUP BY 1, 2, 3, 4),
        counted AS (
            SELECT customer_id, period, CASE WHEN rule_id LIKE 'allowance:%' THEN '*' ELSE book_id END AS book_id,
                   rule_id, sum(quantity) AS quantity FROM {counters} c GROUP BY 1, 2, 3, 4)
        SELECT format('customer %s, period %s, book %s, rule %s: counter %s, charges %s', customer_id, period,
                      book_id, rule_id, coalesce(u.quantity, 0), coalesce(r.q, 0))
          FROM rated_all r FULL JOIN counted u USING (customer_id, period, book_id, rule_id)
         WHERE coalesce(r.q, 0) <> coalesce(u.quantity, 0)
        """, "period-to-date counters equal the units the charges rated (allowances: as re-rates moved them "
        "and true-ups gave back)")


async def usage_rollups_match_charges(conn: AsyncConnection) -> Check:
    """The usage report's daily rollups equal the charges folded into them, key by key, in the
    customer's lane (migration 0018 on); from 0026 on, the charges still queued are not folded,
    and every queued charge is one of its customer's charges."""
    if not (await _schema(conn))["usage_rollups"]:
        return Check("usage_rollups", True, "no usage rollups in this schema (before migration 0018)")
    queued = (await _schema(conn))["usage_unfolded"]
    folded = ("""(SELECT * FROM charges f WHERE NOT EXISTS (
                    SELECT 1 FROM usage_unfolded u WHERE u.lane = f.lane AND u.customer_id = f.customer_id
                                                     AND u.charge_id = f.id))""" if queued else "charges")
    key, aggregate = f"lane, {store.USAGE_KEY}", store.USAGE_AGGREGATE.format(source=folded)
    stray = """
        UNION ALL
        SELECT format('usage_unfolded names charge %s of customer %s (lane %s), which is not one of its charges',
                      u.charge_id, u.customer_id, u.lane)
          FROM usage_unfolded u
         WHERE NOT EXISTS (SELECT 1 FROM charges c WHERE c.lane = u.lane AND c.id = u.charge_id
                                                     AND c.customer_id = u.customer_id)""" if queued else ""
    # levels 0-3 (by token type), all there are from 0056 on; a schema before it also keeps 4-7,
    # which nothing here reads
    return await _query_check(conn, "usage_rollups", f"""
        WITH rated AS (SELECT ledger_lane(customer_id) AS lane, * FROM ({aggregate}) a),
        differ AS (
            (SELECT 'rollup' AS side, {key}, quantity, amount, charges FROM usage_rollups WHERE level < 4
             EXCEPT SELECT 'rollup', {key}, quantity, amount, charges FROM rated)
            UNION ALL
            (SELECT 'charges', {key}, quantity, amount, charges FROM rated
             EXCEPT SELECT 'charges', {key}, quantity, amount, charges FROM usage_rollups))
        SELECT format('usage rollup of customer %s, day %s, model %s, version %s, line %s/%s/%s (lane %s): '
                      'the %s say quantity %s, amount %s, %s charges, and the other side differs',
                      customer_id, day, model, price_version, token_type, kind, rule_id, lane, side,
                      quantity, amount, charges)
          FROM differ{stray}
        """, "the daily usage rollups equal the charges folded into them")


async def usage_events_charged(conn: AsyncConnection) -> Check:
    """Event ids are per customer: each event pairs with its own customer's charge and entry."""
    return await _query_check(conn, "usage_events", """
        SELECT format('usage event %s of customer %s has no charge', e.event_id, e.customer_id)
          FROM usage_events e
         WHERE NOT EXISTS (SELECT 1 FROM charges c WHERE c.customer_id = e.customer_id AND c.event_id = e.event_id)
        UNION ALL
        SELECT format('usage event %s of customer %s: entry %s and its charge''s entry %s differ, or the bodies do',
                      e.event_id, e.customer_id, e.entry_id, c.entry_id)
          FROM usage_events e JOIN charges c ON c.customer_id = e.customer_id AND c.event_id = e.event_id
         WHERE c.entry_id IS DISTINCT FROM e.entry_id OR c.request_hash <> e.request_hash
        UNION ALL
        SELECT format('usage event %s of customer %s is posted in entry %s of customer %s',
                      e.event_id, e.customer_id, j.id, coalesce(j.customer_id, 'none'))
          FROM usage_events e JOIN journal_entries j ON j.lane = e.lane AND j.id = e.entry_id
         WHERE j.customer_id IS DISTINCT FROM e.customer_id
        """, "every usage event has its own customer's charge, posted in that customer's entry")


async def budgets_match_reservations(conn: AsyncConnection) -> Check:
    """Budget windows are derived figures: each equals what the reservations counted in it hold
    and used; a closed reservation holds nothing in any budget; a money budget counts exactly
    the reservation's open hold and its charges."""
    if not (await _schema(conn))["budget_windows"]:
        return Check("budgets", True, "no budgets in this schema (before migration 0014)")
    return await _query_check(conn, "budgets", f"""
        SELECT format('budget %s, window %s: used %s and held %s, its reservations say %s and %s', w.budget_id,
                      w.window_start, w.used, w.held, coalesce(x.used, 0), coalesce(x.held, 0))
          FROM budget_windows w LEFT JOIN (
               SELECT lane, budget_id, window_start, sum(used) AS used, sum(held) AS held
                 FROM reservation_budgets GROUP BY 1, 2, 3) x USING (lane, budget_id, window_start)
         WHERE w.used <> coalesce(x.used, 0) OR w.held <> coalesce(x.held, 0)
        UNION ALL
        SELECT format('reservation %s (%s) holds %s in budget %s, where it should hold %s and have used %s, '
                      'not %s', r.id, r.status, x.held, x.budget_id,
                      CASE WHEN r.status IN {_OPEN} THEN r.amount - r.captured - r.released ELSE 0 END,
                      r.charged, x.used)
          FROM reservation_budgets x JOIN reservations r ON r.lane = x.lane AND r.id = x.reservation_id
         WHERE (r.status NOT IN {_OPEN} AND x.held <> 0)
            OR (x.metric = 'money' AND (x.used <> r.charged OR x.held <> CASE WHEN r.status IN {_OPEN}
                THEN r.amount - r.captured - r.released ELSE 0 END))
        UNION ALL
        SELECT format('budget %s moved %s for re-rate row %s, where its adjustment moved %s', x.budget_id, x.used,
                      x.reservation_id, coalesce((a.new_amount - a.old_amount)::text, 'nothing'))
          FROM reservation_budgets x
          LEFT JOIN charge_adjustments a ON x.reservation_id = 'rerate:' || a.id
          LEFT JOIN charges c ON c.lane = a.lane AND c.id = a.charge_id
         WHERE x.reservation_id LIKE 'rerate:%'
           AND (a.id IS NULL OR x.metric <> 'money' OR x.held <> 0 OR x.used <> a.new_amount - a.old_amount
                OR NOT EXISTS (SELECT 1 FROM reservation_budgets y WHERE y.lane = x.lane AND y.budget_id = x.budget_id
                                  AND y.window_start = x.window_start
                                  AND y.reservation_id IN (coalesce(c.reservation_id, 'event:' || c.event_id),
                                                           'before:' || x.budget_id)))
        """, "every budget window equals what its reservations hold and used, and its re-rates moved")


# The prefix of the codes of the lots of the entry's customer (wallets.chart.lot_account).
_LOTS = f"({_literal(chart.LOT_CODE[0])} || j.customer_id || {_literal(chart.LOT_CODE[1])})"
# What the entries billed in each (customer, period) moved, from the postings (the period is in
# each entry's metadata since migration 0017): a close's rounding of the amount due (`rounded`,
# against the receivable) apart from a credit note's rounding of its money (`note_rounding`,
# against revenue, in the rollup as what paid that part of the correction: `funded:rounding`).
_MOVED = f"""
    SELECT j.customer_id, j.metadata ->> 'period' AS period,
           coalesce(-sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.revenue_account('%'))}), 0) AS revenue,
           coalesce(sum(p.amount) FILTER (WHERE a.code = {_RECEIVABLE.replace('c.id', 'j.customer_id')}), 0)
               AS receivable,
           coalesce(-sum(p.amount) FILTER (WHERE a.code = {_RESERVED.replace('c.id', 'j.customer_id')}), 0)
               AS reserved,
           coalesce(-sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.rounding_account('%'))}
                                            AND j.kind <> 'rerate_adjustment'), 0) AS rounded,
           coalesce(sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.rounding_account('%'))}
                                           AND j.kind = 'rerate_adjustment'), 0) AS note_rounding,
           coalesce(sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.cash_account('%'))}
                                           AND j.kind NOT IN ('invoice_payment', 'grant_reversal',
                                                              'credit_refund')), 0) AS topups,
           coalesce(-sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.cash_account('%'))}
                                            AND j.kind IN ('grant_reversal', 'credit_refund')), 0) AS refunds,
           coalesce(-sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.promotions_account('%'))}
                                            AND p.amount < 0), 0) AS revoked,
           coalesce(sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.cash_account('%'))}
                                           AND j.kind = 'invoice_payment'), 0) AS payments,
           coalesce(sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.promotions_account('%'))}
                                           AND p.amount > 0), 0) AS grants,
           coalesce(-sum(p.amount) FILTER (WHERE a.code LIKE {_literal(chart.breakage_account('%'))}), 0) AS expired,
           coalesce(-sum(p.amount) FILTER (WHERE left(a.code, length({_LOTS})) = {_LOTS}), 0) AS lots
      FROM journal_entries j JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
      JOIN accounts a ON a.id = p.account_id
     WHERE j.customer_id IS NOT NULL AND j.metadata ? 'period'
     GROUP BY 1, 2"""


async def _billed(conn: AsyncConnection) -> bool:
    """Whether this schema bills periods (migration 0017 on)."""
    return (await _schema(conn))["invoices"]


async def _charge_periods(conn: AsyncConnection) -> bool:
    """Whether each charge keeps the period it is billed in (migration 0040 on)."""
    return (await _schema(conn))["charge_periods"]


# Atomic units in a minor unit of each currency the table lists (pricing.money.minor_unit; 1 for
# one it does not: its atomic unit).
_MINOR_UNITS = ", ".join(f"({_literal(code)}, {minor_unit(code)})" for code in sorted(CURRENCY_MINOR_UNITS))
# What the credit and debit notes billed in each (customer, period) posted the customer's receivable,
# each note's where it is whole minor units of its currency: the rollup's `noted`, which the close's
# rounding of the amount due leaves out (wallets.core.billing.NOTED; the batch keeps a note's part of
# what the receivable paid there where it is whole, commit 28d7d9b2). A note that moved a fraction
# (after one of before notes were rounded) is rounded with its period: not in it.
# Honest books written by earlier code hold other sums: a note billed before 28d7d9b2 kept none, and
# one billed between 28d7d9b2 and 9ae9c3bd kept its share even where a fraction. So each period's
# notes in the order they were written (1..n), and a `noted` is one the code of the day wrote where
# it is, for some k <= m (k <= n: some note wrote the row), notes k..m-1 all their shares and notes
# from m on their whole ones: SA(k) - SA(m) + SW(m), SA and SW the sums from a note on of all its
# shares and of its whole ones (0 past the last). `noted` is the all-whole sum SW(1) today.
_NOTES = f"""
    SELECT n.customer_id, j.metadata ->> 'period' AS period, x.share AS a, j.recorded_at AS at, n.entry_id,
           CASE WHEN x.share % coalesce(u.unit, 1) = 0 THEN x.share ELSE 0 END AS w,
           row_number() OVER (PARTITION BY n.customer_id, j.metadata ->> 'period'
                              ORDER BY j.recorded_at, n.lane, n.entry_id) AS rn
      FROM credit_notes n JOIN journal_entries j ON j.lane = n.lane AND j.id = n.entry_id
     CROSS JOIN LATERAL (
           SELECT coalesce(sum(p.amount), 0) AS share FROM postings p
            WHERE p.lane = j.lane AND p.entry_id = j.id
              AND p.account_id = ANY(ARRAY(SELECT id FROM accounts
                                            WHERE code = {_RECEIVABLE.replace('c.id', 'n.customer_id')}))) x
      LEFT JOIN (VALUES {_MINOR_UNITS}) u(currency, unit) ON u.currency = n.currency"""
_SUFFIXES = f"""
    SELECT customer_id, period, rn,
           sum(a) OVER (PARTITION BY customer_id, period ORDER BY rn DESC) AS sa,
           sum(w) OVER (PARTITION BY customer_id, period ORDER BY rn DESC) AS sw
      FROM ({_NOTES}) t"""
_NOTED = f"""
    SELECT customer_id, period, sw AS noted FROM ({_SUFFIXES}) s WHERE rn = 1"""
# Every `noted` the code of some day could have written for the (customer, period) (above), with
# the first note it counts (k)
_NOTED_WRITTEN = f"""
    WITH s AS ({_SUFFIXES})
    SELECT k.customer_id, k.period, k.rn AS k, k.sa - m.sa + m.sw AS noted
      FROM s k JOIN s m ON m.customer_id = k.customer_id AND m.period = k.period AND m.rn >= k.rn
     UNION ALL SELECT customer_id, period, rn, sa FROM s"""
# The code of the day keeps `noted` from the moment the latest note of a period whose rollup keeps
# one was written (that note wrote it: k <= n), and no later code stops: a note recorded more than
# NOTED_SETTLED after the earliest such moment was written by code that keeps it, so its period's
# `noted` counts it (k at most its number; a missing row is a `noted` of 0). The margin is for a
# deploy, when servers of the code before and after run at once. Needs the main query's `rolled`.
NOTED_SETTLED = "1 day"
_NOTED_KEPT = f"""
    SELECT t.customer_id, t.period, min(t.rn) AS f, (array_agg(t.entry_id ORDER BY t.rn))[1] AS entry_id,
           (array_agg(t.at ORDER BY t.rn))[1] AS at
      FROM ({_NOTES}) t,
           (SELECT min(l.last) AS since
              FROM (SELECT customer_id, period, max(at) AS last FROM ({_NOTES}) n GROUP BY 1, 2) l
              JOIN rolled r USING (customer_id, period) WHERE r.noted_rows > 0) s
     WHERE t.at > s.since + interval '{NOTED_SETTLED}'
     GROUP BY 1, 2"""


async def period_rollups_match_postings(conn: AsyncConnection) -> Check:
    """Each period's rollup (its folded rows plus its unfolded deltas, from migration 0029 on)
    against its entries' postings; a customer's rollup, folded or not, holds items only of the
    periods its entries or its charges (a free call's: no entry) are billed in (from 0040 on,
    each charge keeps its period, and it is its entry's). Its `noted` is what the notes billed in
    the period posted the receivable (_NOTED), where the rollup has one or where a note came more
    than NOTED_SETTLED after code kept one (_NOTED_KEPT: a row deleted by hand reads 0); a period
    billed only notes of before 28d7d9b2 has none."""
    if not await _billed(conn):
        return Check("period_rollups", True, "no billing periods in this schema (before migration 0017)")
    deltas, charged = await _deltas(conn), await _charge_periods(conn)
    items = ("""(SELECT 'folded' AS src, customer_id, period, item, quantity, amount FROM period_rollups
                 UNION ALL
                 SELECT 'queued', customer_id, period, unnest(items), unnest(quantities), unnest(amounts)
                   FROM period_deltas)"""
             if deltas else "(SELECT 'folded' AS src, * FROM period_rollups)")
    charges = """
        UNION ALL
        SELECT format('charge %s (%s) of customer %s is billed in period %s, but its entry %s in %s', c.id,
                      c.request_id, c.customer_id, coalesce(c.period, 'none'), c.entry_id,
                      coalesce(j.metadata ->> 'period', 'none'))
          FROM charges c JOIN journal_entries j ON j.lane = c.lane AND j.id = c.entry_id
         WHERE c.period IS DISTINCT FROM j.metadata ->> 'period'
        UNION ALL
        SELECT format('charge %s (%s) of customer %s has no entry and no billing period', c.id, c.request_id,
                      c.customer_id)
          FROM charges c WHERE c.entry_id IS NULL AND c.period IS NULL""" if charged else ""
    # the lines the charges billed in each period put in its rollup (wallets/core/billing.py
    # line_item), by kind, model, token type, rule, unit price, tier, override and price version,
    # against the rollup's lines of those kinds (a true-up's and a re-rate's are not a charge's:
    # volume_true_up, adjustment, and the allowance lines of no price version that give back)
    fields = ("kind", "model", "token_type", "rule_id", "unit_price", "tier", "override_id", "price_version")
    key = ", ".join(f"coalesce(l ->> '{f}', '') AS {f}" for f in fields)
    rolled_key = ", ".join(f"coalesce(l ->> {i}, '') AS {f}" for i, f in enumerate(fields, start=1))
    lines = f"""
        UNION ALL
        SELECT format('customer %s, period %s, %s line of model %s, token type %s, rule %s, unit price %s, tier %s, '
                      'override %s, version %s: the rollup says quantity %s, amount %s; the charges billed in the '
                      'period %s, %s', customer_id, period, {", ".join(fields)}, coalesce(r.q, 0), coalesce(r.a, 0),
                      coalesce(c.q, 0), coalesce(c.a, 0))
          FROM (SELECT customer_id, period, {rolled_key},
                       sum(quantity) AS q, sum(amount) AS a
                  FROM (SELECT i.*, substr(item, 6)::jsonb AS l FROM {items} i WHERE item LIKE 'line:%') i
                 WHERE l ->> 1 IN ('usage', 'discount') OR (l ->> 1 = 'free_allowance' AND l ->> 8 IS NOT NULL)
                 GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) r
          FULL JOIN (
               SELECT c.customer_id, c.period, {key},
                      sum((l ->> 'quantity')::numeric) AS q, sum((l ->> 'amount_units')::numeric) AS a
                 FROM charges c CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
                WHERE c.period IS NOT NULL
                GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) c USING (customer_id, period, {", ".join(fields)})
         WHERE coalesce(r.q, 0) <> coalesce(c.q, 0) OR coalesce(r.a, 0) <> coalesce(c.a, 0)""" if charged else ""
    billed_charge = ("""
           AND NOT EXISTS (SELECT 1 FROM charges c WHERE c.customer_id = r.customer_id AND c.period = r.period)"""
                     if charged else "")
    noted = f"""
        UNION ALL
        SELECT format('customer %s, period %s: rollup says noted (the notes'' whole money, left out of the '
                      'close''s rounding) %s; the notes'' entries posted the receivable %s', r.customer_id, r.period,
                      r.noted, coalesce(n.noted, 0))
               || CASE WHEN r.noted_rows = 0
                       THEN format(' (it keeps no noted row, yet note entry %s, recorded %s, came more than '
                                   '{NOTED_SETTLED} after a note whose period keeps one: the code of its day kept '
                                   'it)', f.entry_id, f.at) ELSE '' END
          FROM rolled r LEFT JOIN ({_NOTED}) n USING (customer_id, period)
          LEFT JOIN ({_NOTED_KEPT}) f USING (customer_id, period)
         WHERE (r.noted_rows > 0 OR f.f IS NOT NULL) AND r.noted <> coalesce(n.noted, 0)
           AND NOT EXISTS (SELECT 1 FROM ({_NOTED_WRITTEN}) w
                            WHERE w.customer_id = r.customer_id AND w.period = r.period
                              AND w.noted = r.noted AND (f.f IS NULL OR w.k <= f.f))""" if (
        await _schema(conn))["credit_notes"] else ""
    return await _query_check(conn, "period_rollups", f"""
        WITH moved AS ({_MOVED}),
        rolled AS (
            SELECT customer_id, period,
                   coalesce(sum(amount) FILTER (WHERE item = 'revenue'), 0) AS revenue,
                   coalesce(sum(amount) FILTER (WHERE item = 'receivable'), 0) AS receivable,
                   coalesce(sum(amount) FILTER (WHERE item = 'reserved'), 0) AS reserved,
                   coalesce(sum(amount) FILTER (WHERE item = 'rounded'), 0) AS rounded,
                   coalesce(sum(amount) FILTER (WHERE item = 'funded:rounding'), 0) AS note_rounding,
                   coalesce(sum(amount) FILTER (WHERE item = {_literal(NOTED)}), 0) AS noted,
                   count(*) FILTER (WHERE item = {_literal(NOTED)}) AS noted_rows,
                   coalesce(sum(amount) FILTER (WHERE item = 'topups'), 0) AS topups,
                   coalesce(sum(amount) FILTER (WHERE item = 'payments'), 0) AS payments,
                   coalesce(sum(amount) FILTER (WHERE item = 'grants'), 0) AS grants,
                   coalesce(sum(amount) FILTER (WHERE item = 'refunds'), 0) AS refunds,
                   coalesce(sum(amount) FILTER (WHERE item = 'revoked'), 0) AS revoked,
                   coalesce(sum(amount) FILTER (WHERE item = 'expired'), 0) AS expired,
                   coalesce(sum(amount) FILTER (WHERE item = 'lots'), 0) AS lots,
                   coalesce(sum(amount) FILTER (WHERE item LIKE 'line:%'), 0) AS lines,
                   coalesce(sum(amount) FILTER (WHERE item LIKE 'funded:%'), 0) AS funded,
                   count(*) FILTER (WHERE src = 'folded') AS folded, count(*) FILTER (WHERE src = 'queued') AS queued
              FROM {items} r GROUP BY 1, 2)
        SELECT format('customer %s, period %s: rollup says revenue %s, receivable %s, reserved %s, amount due '
                      'rounding %s; the postings say %s, %s, %s, %s', customer_id, period, coalesce(r.revenue, 0),
                      coalesce(r.receivable, 0), coalesce(r.reserved, 0), coalesce(r.rounded, 0),
                      coalesce(m.revenue, 0), coalesce(m.receivable, 0), coalesce(m.reserved, 0),
                      coalesce(m.rounded, 0))
          FROM moved m FULL JOIN rolled r USING (customer_id, period)
         WHERE coalesce(m.revenue, 0) <> coalesce(r.revenue, 0)
            OR coalesce(m.receivable, 0) <> coalesce(r.receivable, 0)
            OR coalesce(m.reserved, 0) <> coalesce(r.reserved, 0)
            OR coalesce(m.rounded, 0) <> coalesce(r.rounded, 0)
        UNION ALL
        SELECT format('customer %s, period %s: rollup says credit notes'' rounding %s; the postings say %s',
                      customer_id, period, coalesce(r.note_rounding, 0), coalesce(m.note_rounding, 0))
          FROM moved m FULL JOIN rolled r USING (customer_id, period)
         WHERE coalesce(m.note_rounding, 0) <> coalesce(r.note_rounding, 0)
        UNION ALL
        -- what an invoice shows beside its lines: the period's top-ups, payments, grants and breakage,
        -- refunds and revocations,
        -- and how the customer's credits moved (its opening and closing balances)
        SELECT format('customer %s, period %s: rollup says %s %s; the postings say %s', customer_id, period,
                      x.item, x.rolled, x.posted)
          FROM moved m FULL JOIN rolled r USING (customer_id, period)
         CROSS JOIN LATERAL (VALUES
               ('topups', coalesce(r.topups, 0), coalesce(m.topups, 0)),
               ('payments', coalesce(r.payments, 0), coalesce(m.payments, 0)),
               ('grants', coalesce(r.grants, 0), coalesce(m.grants, 0)),
               ('refunds', coalesce(r.refunds, 0), coalesce(m.refunds, 0)),
               ('revoked', coalesce(r.revoked, 0), coalesce(m.revoked, 0)),
               ('expired', coalesce(r.expired, 0), coalesce(m.expired, 0)),
               ('lots', coalesce(r.lots, 0), coalesce(m.lots, 0))) x(item, rolled, posted)
         WHERE x.rolled <> x.posted
        UNION ALL
        SELECT format('customer %s, period %s: lines %s and what paid them %s differ from revenue %s',
                      customer_id, period, lines, funded, revenue)
          FROM rolled WHERE lines <> revenue OR funded <> revenue
        UNION ALL
        SELECT format('customer %s, period %s: its rollup holds %s items folded and %s queued, but none of its '
                      'entries or charges is billed in that period', r.customer_id, r.period, r.folded, r.queued)
          FROM rolled r
         WHERE NOT EXISTS (SELECT 1 FROM moved m WHERE m.customer_id = r.customer_id AND m.period = r.period)
               {billed_charge}{charges}{lines}{noted}
        """, "each billing period's rollup equals what its entries posted; its lines and their funding tie out; "
             "its notes' money left out of the close's rounding (`noted`) is what they posted the receivable; "
             "a customer's rollups are of the periods its entries and charges are billed in")


# How an invoice's document says one of the customer's balances moved over its period (closing
# less opening), as text; NULL for a document without them.
_MOVEMENT = ("CAST((i.content -> 'closing_balance' ->> '{name}')::numeric"
             " - (i.content -> 'opening_balance' ->> '{name}')::numeric AS text)")


async def invoices_tie_out(conn: AsyncConnection) -> Check:
    if not await _billed(conn):
        return Check("invoices", True, "no invoices in this schema (before migration 0017)")
    return await _query_check(conn, "invoices", f"""
        WITH moved AS ({_MOVED})
        SELECT format('invoice %s: its content hash does not match its content', i.number)
          FROM invoices i WHERE i.content_hash <> sha256(convert_to(i.content::text, 'UTF8'))
        UNION ALL
        SELECT format('invoice %s: total %s, but the revenue postings of %s billed in %s are %s',
                      i.number, i.total, i.customer_id, i.period, coalesce(m.revenue, 0))
          FROM invoices i LEFT JOIN moved m ON m.customer_id = i.customer_id AND m.period = i.period
         WHERE i.total <> coalesce(m.revenue, 0)
        UNION ALL
        SELECT format('invoice %s: its document says %s %s, but the postings of %s billed in %s say %s',
                      i.number, x.figure, x.said, i.customer_id, i.period, trim_scale(x.posted / {_UNIT}.0))
          FROM invoices i LEFT JOIN moved m ON m.customer_id = i.customer_id AND m.period = i.period
         CROSS JOIN LATERAL (VALUES
               ('top-ups', i.content ->> 'top_ups', coalesce(m.topups, 0)),
               ('grants', i.content ->> 'grants', coalesce(m.grants, 0)),
               ('expired', i.content ->> 'expired', coalesce(m.expired, 0)),
               ('refunds', i.content ->> 'refunds', coalesce(m.refunds, 0)),
               ('grants revoked', i.content ->> 'grants_revoked', coalesce(m.revoked, 0)),
               ('payments received', i.content ->> 'payments_received', coalesce(m.payments, 0)),
               ('credits moved', {_MOVEMENT.format(name='credits')}, coalesce(m.lots, 0)),
               ('reserved moved', {_MOVEMENT.format(name='reserved')}, coalesce(m.reserved, 0)),
               ('receivable moved', {_MOVEMENT.format(name='receivable')}, coalesce(m.receivable, 0))
               ) x(figure, said, posted)
         WHERE x.said IS NOT NULL AND x.said::numeric * {_UNIT} <> x.posted
        UNION ALL
        SELECT format('invoice %s opens with %s %s, but invoice %s, of the period before, closed with %s',
                      x.number, b.name, x.content -> 'opening_balance' ->> b.name, x.before,
                      x.previous -> 'closing_balance' ->> b.name)
          FROM (SELECT number, content, lag(number) OVER w AS before, lag(content) OVER w AS previous
                  FROM invoices WINDOW w AS (PARTITION BY customer_id ORDER BY period_start)) x
         CROSS JOIN (VALUES ('credits'), ('reserved'), ('receivable')) b(name)
         WHERE (x.content -> 'opening_balance' ->> b.name)::numeric
               <> (x.previous -> 'closing_balance' ->> b.name)::numeric
        UNION ALL
        SELECT format('invoice %s: its document says total %s and amount due %s, its lines sum to %s',
                      i.number, i.content ->> 'total', i.content ->> 'amount_due',
                      (SELECT sum((l ->> 'amount')::numeric) FROM jsonb_array_elements(i.content -> 'lines') l))
          FROM invoices i
         WHERE (i.content ->> 'total')::numeric * {_UNIT} <> i.total
            OR (i.content ->> 'amount_due')::numeric * {_UNIT} <> i.amount_due
            OR coalesce((SELECT sum((l ->> 'amount')::numeric) FROM jsonb_array_elements(i.content -> 'lines') l), 0)
               * {_UNIT} <> i.total
        UNION ALL
        SELECT format('invoice %s: its %s line of %s is not rounded to %s decimals', i.number, l ->> 'kind',
                      l ->> 'amount', i.content -> 'line_rounding' ->> 'decimals')
          FROM invoices i CROSS JOIN LATERAL jsonb_array_elements(i.content -> 'lines') l
         WHERE i.content -> 'line_rounding' IS NOT NULL AND l ->> 'kind' <> 'rounding'
           AND (l ->> 'amount')::numeric
               <> round((l ->> 'amount')::numeric, (i.content -> 'line_rounding' ->> 'decimals')::int)
        UNION ALL
        SELECT format('invoices %s-%s: %s numbers, the last %s (a gap or a duplicate)',
                      issuer, year, count(*), max(seq))
          FROM invoices GROUP BY issuer, year HAVING count(*) <> max(seq)
        UNION ALL
        SELECT format('invoice %s: payments %s exceed its amount due %s', i.number, sum(p.amount), i.amount_due)
          FROM invoices i JOIN invoice_payments p ON p.invoice_id = i.id
         GROUP BY i.id, i.number, i.amount_due HAVING sum(p.amount) > i.amount_due
        UNION ALL
        SELECT format('entry %s (%s): invoice payments %s, but it paid the receivable of %s by %s',
                      x.entry_id, j.kind, x.paid, x.customer_id, x.receivable)
          FROM (SELECT x.*, (SELECT -coalesce(sum(p.amount), 0) FROM postings p JOIN accounts a ON a.id = p.account_id
                              WHERE p.lane = x.lane AND p.entry_id = x.entry_id
                                AND a.code = {_RECEIVABLE.replace('c.id', 'x.customer_id')}) AS receivable
                  FROM (SELECT lane, entry_id, customer_id, sum(amount) AS paid FROM invoice_payments
                         GROUP BY 1, 2, 3) x) x
          LEFT JOIN journal_entries j ON j.lane = x.lane AND j.id = x.entry_id
         WHERE j.kind IS NULL
            OR j.kind NOT IN ('topup', 'invoice_payment', 'rerate_adjustment', 'volume_true_up', 'invoice_rounding')
            OR (j.kind = 'invoice_payment' AND x.paid <> x.receivable) OR x.paid > x.receivable
        """, "invoices are intact (content hash), numbered without gaps, and total the revenue of their period "
             "(their top-ups, grants, expirations, refunds, revocations, payments received and balance movements "
             "those of its postings, "
             "each opening where the one before closed; "
             "lines rounded to the currency's minor unit where the document says so, a rounding line the rest); "
             "their payments are what their entries paid off the receivable (an invoice payment all of it, a "
             "prepaid top-up, a re-rate or a volume true-up part of it)")


# What a close's record (true_up_charges, rerate_id NULL) gives back of each charge, by the one rule
# its close follows (money_back.each_charge_first, as TrueUpFix.parts for a re-rate): each charge
# of the rule (rule_funding's: of its customer, billed in the period, of usage in it, with what paid
# it on record), in order, its overcharge at the tier reached (the rule's usage lines at the book's
# price less their units at the close's line's unit price, that cost rounded up to the atomic unit:
# money_back.overcharged) up to what the line gives back less the charges before it: the first n
# charges give back least(line, their overcharges), so the rows sum to the line less the rounding
# up (an atomic unit at most a charge) and what no charge was overcharged, which the close shares
# over the rule's payers. A rule two versions tier by volume (its close's entry keeps each version's
# line, `versions`): each version's line gives back of its own charges (those its usage lines name),
# at that line's unit price, the lines summing to the rule's. A row of another amount, or a charge
# overcharged with none, is named (second column: the record, which the per-rule checks may name
# already).
_CLOSE_ROWS = f"""
    WITH per (token_type, per) AS (VALUES {_PER}),
    records AS MATERIALIZED (  -- the re-rates before the close, it counted: those it numbered below
                               -- (`seq`, 0090: their adjustments' ids), or dated before it (`written`)
        SELECT lane, customer_id, period, rule_id, min(created_at) AS written, {{seq}} AS seq FROM true_up_charges
         WHERE rerate_id IS NULL GROUP BY 1, 2, 3, 4),
    standing AS (  -- what the rule's true-up stands at, wherever billed (the close's line and corrections):
                   -- each record with the sum of its lines, a record without any left out (as a join and a
                   -- sum would, but in one sort: the planner, which takes the lines for a row, looped over
                   -- every record for each line, parsing it each time)
        SELECT lane, customer_id, period, rule_id, written, seq, amount FROM (
            SELECT u.*, sum(u.line) OVER w AS amount, sum(u.n) OVER w AS lines
              FROM (SELECT lane, customer_id, period, rule_id, written, seq, NULL::numeric AS line, 0 AS n
                      FROM records
                    UNION ALL
                    SELECT NULL, customer_id, l ->> 0, l ->> 4, NULL, NULL, amount, 1 FROM (
                        SELECT customer_id, substr(item, 6)::jsonb AS l, amount FROM (
                            SELECT customer_id, item, amount FROM period_rollups
                            UNION ALL
                            SELECT customer_id, unnest(items), unnest(amounts) FROM period_deltas) i
                         WHERE item LIKE 'line:["%","volume_true_up",%') x
                     WHERE l -> 7 = 'null') u
            WINDOW w AS (PARTITION BY u.customer_id, u.period, u.rule_id)) s
         WHERE lane IS NOT NULL AND lines > 0),
    corrected AS (  -- what the re-rates corrected of it (old - new: given back), with or without an entry,
                    -- in the record's lane (another lane's entry of the customer is a forger's)
        SELECT lane, customer_id, u ->> 0 AS period, u ->> 1 AS rule_id,
               sum((u ->> 3)::numeric - (u ->> 4)::numeric) AS back
          FROM (SELECT j.lane, j.customer_id, j.metadata -> 'true_ups' AS t FROM journal_entries j
                 WHERE j.kind = 'rerate_adjustment' AND j.metadata ? 'true_ups'
                   AND (j.lane, j.customer_id) IN (SELECT lane, customer_id FROM records)
                UNION ALL
                SELECT lane, customer_id, true_ups FROM rerate_true_ups
                 WHERE (lane, customer_id) IN (SELECT lane, customer_id FROM records)) r
         CROSS JOIN LATERAL jsonb_array_elements(r.t) u GROUP BY 1, 2, 3, 4),
    whole AS (  -- the close's own line of each rule: what stands less the corrections; its price on the
                -- period's invoice (frozen at the close, which no correction had reached)
        SELECT s.lane, s.customer_id, s.period, s.rule_id, s.written, s.seq, -(s.amount + coalesce(f.back, 0)) AS back,
               p.unit_price, p.token_type
          FROM standing s
          LEFT JOIN corrected f ON f.lane = s.lane AND f.customer_id = s.customer_id AND f.period = s.period
           AND f.rule_id = s.rule_id
         CROSS JOIN LATERAL (
               SELECT min(l ->> 'unit_price') AS unit_price, min(l ->> 'token_type') AS token_type
                 FROM invoices i CROSS JOIN LATERAL jsonb_array_elements(i.content -> 'lines') l
                WHERE i.customer_id = s.customer_id AND i.period = s.period AND l ->> 'kind' = 'volume_true_up'
                  AND l ->> 'rule_id' = s.rule_id AND l ->> 'override_id' IS NULL) p),
    split AS (  -- a rule two versions tier: each version's line, as its close's entry keeps it (`versions`),
                -- in the record's lane
        SELECT j.lane, j.customer_id, j.metadata ->> 'period' AS period, v ->> 0 AS rule_id, v ->> 1 AS version,
               v ->> 2 AS unit_price, -(v ->> 3)::numeric AS back
          FROM journal_entries j CROSS JOIN LATERAL jsonb_array_elements(j.metadata -> 'versions') v
         WHERE j.kind = 'volume_true_up' AND j.metadata ? 'versions'
           AND (j.lane, j.customer_id) IN (SELECT lane, customer_id FROM records)),
    lines AS (  -- a line a rule (version NULL: each of its charges), or each version's of a split one
        SELECT w.lane, w.customer_id, w.period, w.rule_id, w.written, w.seq, coalesce(v.version, NULL) AS version,
               coalesce(v.back, w.back) AS back, coalesce(v.unit_price, w.unit_price) AS unit_price, w.token_type
          FROM whole w LEFT JOIN split v
            ON v.lane = w.lane AND v.customer_id = w.customer_id AND v.period = w.period AND v.rule_id = w.rule_id),
    over AS (
        SELECT k.customer_id, k.period, k.rule_id, k.version, k.back, c.id AS charge_id,
               greatest(u.charged - (div(u.cost, per.per)
                                     + CASE WHEN u.cost > div(u.cost, per.per) * per.per THEN 1 ELSE 0 END), 0)
                   AS over
          FROM lines k JOIN per ON per.token_type = k.token_type
          JOIN invoices i ON i.customer_id = k.customer_id AND i.period = k.period
          JOIN charges c ON c.lane = k.lane AND c.customer_id = k.customer_id AND c.period = k.period
           AND c.occurred_at >= i.period_start AND c.occurred_at < i.period_end
          -- a charge's lines count for the rules the close counted them for: as the re-rates before
          -- it left them (store.RULE_NOW, as store.rule_funding lists them)
          {{last}}
         CROSS JOIN LATERAL (
               SELECT coalesce(sum((l ->> 'amount_units')::numeric) FILTER (WHERE l ->> 'kind' = 'usage'
                               AND l ->> 'override_id' IS NULL), 0) AS charged,
                      coalesce(sum((l ->> 'quantity')::numeric) FILTER (WHERE l ->> 'kind' = 'usage'
                               AND l ->> 'override_id' IS NULL), 0) * k.unit_price::numeric
                          * {10 ** chart.ASSET_SCALE} AS cost,
                      min(l ->> 'price_version') FILTER (WHERE l ->> 'kind' = 'usage'
                          AND l ->> 'override_id' IS NULL) AS version
                 FROM jsonb_array_elements(c.lines) l WHERE {store.RULE_NOW} = k.rule_id HAVING count(*) > 0) u
         WHERE jsonb_array_length(coalesce(c.funding, '[[null, 0]]'::jsonb)) > 0
           AND (k.version IS NULL OR u.version = k.version)  -- a version's line: its own charges
           AND coalesce((SELECT j.metadata ->> 'period' FROM journal_entries j
                          WHERE j.lane = c.lane AND j.id = c.entry_id), c.period) = k.period),
    due AS (
        SELECT customer_id, period, rule_id, charge_id, back,
               greatest(least(back, sum(over) OVER w) - least(back, sum(over) OVER w - over), 0) AS due
          FROM over WINDOW w AS (PARTITION BY customer_id, period, rule_id, version ORDER BY charge_id)),
    given AS (
        SELECT customer_id, period, rule_id, charge_id, units FROM true_up_charges
         WHERE rerate_id IS NULL AND charge_id IS NOT NULL)
    SELECT problem, record FROM (
        SELECT format('%s: charge %s gave back %s where its overcharge at the tier reached (up to what the '
                      'line''s %s left) is %s', record, charge_id, coalesce(units, 0), coalesce(back, 0),
                      coalesce(due, 0)), record, customer_id, period, rule_id, charge_id
          FROM (SELECT format('true-up record of the close of customer %s, %s rule %s', customer_id, period,
                              rule_id) AS record, *
                  FROM due FULL JOIN given USING (customer_id, period, rule_id, charge_id)) x
         WHERE coalesce(units, 0) <> coalesce(due, 0)
        UNION ALL  -- a split rule's versions' lines sum to its close's line
        SELECT format('%s: its versions'' lines give back %s, its true-up line %s', record, v.back, w.back), record,
               w.customer_id, w.period, w.rule_id, NULL
          FROM whole w JOIN (SELECT lane, customer_id, period, rule_id, sum(back) AS back FROM split
                              GROUP BY 1, 2, 3, 4) v
            ON v.lane = w.lane AND v.customer_id = w.customer_id AND v.period = w.period AND v.rule_id = w.rule_id
         CROSS JOIN LATERAL (SELECT format('true-up record of the close of customer %s, %s rule %s', w.customer_id,
                                           w.period, w.rule_id) AS record) r
         WHERE v.back <> w.back) p (problem, record, customer_id, period, rule_id, charge_id)
     ORDER BY customer_id, period, rule_id, charge_id NULLS FIRST"""


# What each payer got of each charge (true_up_payers, migration 0082), tied to the true-ups' records
# per charge: a true-up's payer rows of a charge (the one without a payer: what none of them got)
# sum to its true_up_charges rows of it over every rule, and a true-up that kept its payers kept
# them of every charge it gave back (took back) something of (a row may name the rounding account:
# what a note's whole minor units left of a part, money_back.rounded, no payer's). Per payer, what
# the true-ups gave it of a charge so far (the close first, then the re-rates in the order written;
# those written at one instant together, their ids no order) is never below nothing (a take back
# from a payer beyond what it got) nor above what it paid of the charge (its funding; none on
# record: the receivable); not checked of a charge a true-up before 0082 gave back something of
# without payer rows (who got that is not kept).
_PAYER_ROWS = f"""
    WITH whole AS (  -- the true-up: its re-rate, '' the close
        SELECT lane, customer_id, period, coalesce(rerate_id, '') AS rerate, charge_id, sum(units) AS units
          FROM true_up_charges WHERE charge_id IS NOT NULL GROUP BY 1, 2, 3, 4, 5),
    split AS (
        SELECT lane, customer_id, period, coalesce(rerate_id, '') AS rerate, charge_id, sum(units) AS units
          FROM true_up_payers GROUP BY 1, 2, 3, 4, 5),
    kept AS (SELECT DISTINCT lane, customer_id, period, rerate FROM split),
    unknown AS (
        SELECT DISTINCT lane, charge_id FROM whole w
         WHERE units <> 0 AND NOT EXISTS (SELECT 1 FROM split s WHERE s.lane = w.lane
               AND s.customer_id = w.customer_id AND s.period = w.period AND s.rerate = w.rerate
               AND s.charge_id = w.charge_id)),
    named AS (  -- a payer that did not pay the charge (the paid credit lot the receivable's part
                -- went to, money_back.to_credit) counts as the receivable
        SELECT p.lane, p.customer_id, p.period, p.rerate_id, p.charge_id, p.units, p.created_at, {{written}},
               CASE WHEN p.payer = ANY(f.accounts) THEN p.payer
                    ELSE {_literal(chart.RECEIVABLE_CODE[0])} || p.customer_id
                         || {_literal(chart.RECEIVABLE_CODE[1])} END AS payer
          FROM true_up_payers p LEFT JOIN charges c ON c.lane = p.lane AND c.id = p.charge_id
         CROSS JOIN LATERAL (
               SELECT array_agg(coalesce(e ->> 0, {_literal(chart.RECEIVABLE_CODE[0])} || c.customer_id
                                         || {_literal(chart.RECEIVABLE_CODE[1])})) AS accounts
                 FROM jsonb_array_elements(coalesce(
                          c.funding, jsonb_build_array(jsonb_build_array(NULL::text, c.from_receivable)))) e) f
         WHERE p.payer IS NOT NULL AND p.payer NOT LIKE {_literal(chart.rounding_account('%'))}),
    running AS (
        SELECT p.lane, p.customer_id, p.period, p.rerate_id, p.charge_id, p.payer,
               -- as written: the batch's number (0085; one batch's true-ups share it, nothing orders
               -- them: summed together), rows before it first by the database's clock
               sum(p.units) OVER (PARTITION BY p.lane, p.charge_id, p.payer
                                  ORDER BY p.rerate_id IS NOT NULL, p.written NULLS FIRST, p.created_at) AS got
          FROM named p
         WHERE (p.lane, p.charge_id) NOT IN (SELECT lane, charge_id FROM unknown))
    SELECT format('true-up record of %s of customer %s, %s: charge %s gave back %s, its payers'' rows %s',
                  coalesce('re-rate ' || nullif(x.rerate, ''), 'the close'), x.customer_id, x.period,
                  x.charge_id, coalesce(x.w, 0), coalesce(x.s, 'none')), true
      FROM (SELECT lane, customer_id, period, rerate, charge_id, w.units AS w, s.units::text AS s
              FROM whole w FULL JOIN split s USING (lane, customer_id, period, rerate, charge_id)) x
     WHERE CASE WHEN x.s IS NULL
                THEN x.w <> 0 AND (x.lane, x.customer_id, x.period, x.rerate) IN (SELECT * FROM kept)
                ELSE coalesce(x.w, 0) <> x.s::numeric END
    UNION ALL
    SELECT format('true-up record of %s of customer %s, %s: %s got %s back of charge %s in all, which it paid %s',
                  coalesce('re-rate ' || r.rerate_id, 'the close'), r.customer_id, r.period, r.payer, r.got,
                  r.charge_id, f.paid), false
      FROM running r LEFT JOIN charges c ON c.lane = r.lane AND c.id = r.charge_id
     CROSS JOIN LATERAL (
           SELECT coalesce(sum((e ->> 1)::numeric), 0) AS paid
             FROM jsonb_array_elements(coalesce(
                      c.funding, jsonb_build_array(jsonb_build_array(NULL::text, c.from_receivable)))) e
            WHERE coalesce(e ->> 0, {_literal(chart.RECEIVABLE_CODE[0])} || c.customer_id
                                    || {_literal(chart.RECEIVABLE_CODE[1])}) = r.payer) f
     WHERE r.got < 0 OR r.got > f.paid
     ORDER BY 1"""


# What a close's payer rows (true_up_payers, rerate_id NULL) give each account, tied to what the
# close's entry (its volume_true_up, keyed by its customer and period, in the row's lane) posted it: of
# each account, the rows over every charge are at most what the entry credited it (and, for a lot
# closed before the close, what it gave where that lot's money went: its `closed_lots`; an entry
# written before it kept them, all it credited promotions and breakage, where it went; and for the
# receivable, what the close's rounding of the amount due up debited it beside the rows). The entry
# gives each payer its rows and its share of what no charge's part took (a rule's rest, a part no
# payer of its charge could take), so a row moved by hand to another payer of the charge, or made
# larger where another of it is made smaller, gives that payer more than it was posted, which the
# per-charge sums and the bounds by what each paid take for right. And at least what the entry
# posted it less all the entry posted beyond every payer's rows (what it credited, the revenue and
# rounding accounts aside, less the rows; a payer's share of it is at most all of it), so the payer
# whose row was made smaller is named too: exactly what it was posted where the entry posted nothing
# beyond the rows (where it did, a row moved within a payer's share of it is not seen: that share is
# not kept). Only of an entry that did not record what it posted each account beyond its rows
# (`beyond_payer_rows`; one written before it did: _ENTRY_PAYERS ties those that did, exactly). Not
# of an entry written before `closed_lots` that credited promotions or breakage (what
# it posted each payer is not known then), nor of the rounding account (its rows are no posting),
# nor of a re-rate's rows (its entry's postings to a payer also carry the charges' own decreases and
# increases). Second column: the payer.
_CLOSE_PAYERS = f"""
    SELECT CASE WHEN r.units > r.posted + r.rounded
                THEN format('true-up record of the close of customer %s, %s: its payers'' rows give %s %s back, its '
                            'entry posted it %s', r.customer_id, r.period, r.payer, r.units, r.posted)
                ELSE format('true-up record of the close of customer %s, %s: its payers'' rows give %s %s back, its '
                            'entry posted it %s (%s beyond every payer''s rows)', r.customer_id, r.period, r.payer,
                            r.units, r.posted, r.beyond) END, r.payer
      FROM (SELECT r.*, x.posted, e.exact, coalesce(j.metadata ? 'beyond_payer_rows', false) AS recorded,
                   -- the close's rounding up of the amount due, debited the receivable beside its rows
                   CASE WHEN r.payer = {_literal(chart.RECEIVABLE_CODE[0])} || r.customer_id
                                       || {_literal(chart.RECEIVABLE_CODE[1])}
                        THEN greatest(0, coalesce((j.metadata ->> 'amount_due_rounding')::numeric, 0))
                        ELSE 0 END AS rounded,
                   e.credited - sum(r.units) OVER (PARTITION BY r.lane, r.customer_id, r.period) AS beyond
              FROM (SELECT lane, customer_id, period, payer, sum(units) AS units FROM true_up_payers
                     WHERE rerate_id IS NULL AND payer IS NOT NULL
                       AND payer NOT LIKE {_literal(chart.rounding_account('%'))}
                     GROUP BY 1, 2, 3, 4) r
              LEFT JOIN journal_entries j ON j.key = 'true-up:' || r.customer_id || ':' || r.period
               AND j.lane = r.lane AND j.kind = 'volume_true_up'
             CROSS JOIN LATERAL (
                   SELECT coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0 AND p.code = r.payer), 0)
                          + CASE WHEN j.metadata ? 'closed_lots'
                                 THEN coalesce((j.metadata -> 'closed_lots' ->> r.payer)::numeric, 0)
                                 ELSE coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0 AND p.code <> r.payer), 0)
                            END AS posted
                     -- each posting's account looked up by its id (joined on that OR, the planner
                     -- scanned every account for each record: records times accounts)
                     FROM (SELECT p.amount, (SELECT code FROM accounts WHERE id = p.account_id) AS code
                             FROM postings p WHERE p.lane = j.lane AND p.entry_id = j.id) p
                    WHERE p.code = r.payer OR p.code LIKE {_literal(chart.promotions_account('%'))}
                          OR p.code LIKE {_literal(chart.breakage_account('%'))}) x
             CROSS JOIN LATERAL (  -- all it credited but revenue and rounding; whether `posted` is exact
                   SELECT coalesce(-sum(p.amount) FILTER (WHERE p.amount < 0), 0) AS credited,
                          coalesce(j.metadata ? 'closed_lots', false) OR NOT coalesce(bool_or(
                              p.amount < 0 AND (a.code LIKE {_literal(chart.promotions_account('%'))}
                                                OR a.code LIKE {_literal(chart.breakage_account('%'))})), false)
                              AS exact
                     FROM postings p JOIN accounts a ON a.id = p.account_id
                    WHERE p.lane = j.lane AND p.entry_id = j.id
                      AND a.code NOT LIKE {_literal(chart.revenue_account('%'))}
                      AND a.code NOT LIKE {_literal(chart.rounding_account('%'))}) e) r
     WHERE (r.units > r.posted + r.rounded OR (r.exact AND r.units < r.posted - r.beyond)) AND NOT r.recorded
     ORDER BY r.customer_id, r.period, r.payer"""


# What a true-up's payer rows give each account, tied to its entry where the entry recorded what it
# posted each account beyond its rows (`beyond_payer_rows`, written since this check: part of the
# entry's hash): of each account the rows, the rows of none aside, and that record sum to what the
# entry gave it back (credited it less debited it), so a row changed, moved to another payer or
# added by hand names each payer it gives more or less than its entry posted it. A re-rate's entry
# (kind rerate_adjustment, keyed by its re-rate, customer and period) and a close's (volume_true_up)
# alike; an entry without the record (written before it) is not tied here (a close's: _CLOSE_PAYERS),
# nor the rows of a re-rate that posted no entry (its lines netted 0: nothing posted any payer).
# Second column: the account.
_ENTRY_PAYERS = """
    WITH e AS MATERIALIZED (  -- in its customer's lane, under its own key: a copy elsewhere is a forger's
        SELECT * FROM (
            SELECT j.lane, j.id, j.customer_id, j.key, j.metadata -> 'beyond_payer_rows' AS beyond,
                   CASE WHEN j.kind = 'rerate_adjustment' THEN j.metadata ->> 'rerate_id' ELSE '' END AS rerate,
                   substring(j.key from '[^:]+$') AS period
              FROM journal_entries j
             WHERE j.kind IN ('rerate_adjustment', 'volume_true_up') AND j.metadata ? 'beyond_payer_rows'
               AND j.lane = ledger_lane(j.customer_id)) j
         WHERE j.key = coalesce('rerate:' || nullif(j.rerate, '') || ':', 'true-up:') || j.customer_id || ':'
                       || j.period),
    posted AS (
        SELECT e.lane, e.id, a.code AS account, -sum(p.amount) AS units
          FROM e JOIN postings p ON p.lane = e.lane AND p.entry_id = e.id JOIN accounts a ON a.id = p.account_id
         GROUP BY 1, 2, 3),
    kept AS (
        SELECT e.lane, e.id, b.key AS account, b.value::numeric AS units
          FROM e CROSS JOIN LATERAL jsonb_each_text(e.beyond) b),
    rows AS (
        SELECT e.lane, e.id, t.payer AS account, sum(t.units) AS units
          FROM e JOIN true_up_payers t ON t.lane = e.lane AND t.customer_id = e.customer_id
           AND t.period = e.period AND coalesce(t.rerate_id, '') = e.rerate
         WHERE t.payer IS NOT NULL GROUP BY 1, 2, 3)
    SELECT format('true-up record of %s of customer %s, %s: its payers'' rows give %s %s back, its entry posted '
                  'it %s (%s of it beyond its payers'' rows, as it recorded)',
                  coalesce('re-rate ' || nullif(e.rerate, ''), 'the close'), e.customer_id, e.period, x.account,
                  coalesce(x.rows, 0), coalesce(x.posted, 0), coalesce(x.kept, 0)), x.account
      FROM (SELECT lane, id, account, p.units AS posted, k.units AS kept, r.units AS rows
              FROM posted p FULL JOIN kept k USING (lane, id, account) FULL JOIN rows r USING (lane, id, account)) x
      JOIN e ON e.lane = x.lane AND e.id = x.id
     WHERE coalesce(x.posted, 0) <> coalesce(x.rows, 0) + coalesce(x.kept, 0)
     ORDER BY 1"""


# What a re-rate that posted no entry (its lines netted 0) kept of its payer rows beside its true-ups'
# corrections (rerate_true_ups.payer_rows, migration 0091: [charge, payer or null, units] each, as
# written), tied to its rows of true_up_payers exactly, charge by charge and payer by payer (the rows
# of none too): no entry's `beyond_payer_rows` ties them (_ENTRY_PAYERS), so a row given to another
# payer of its charge, within what that payer paid and its charge's sum kept, is named here. Not of
# one kept before 0091 (NULL). Second column: the payer ('' for none).
_NO_ENTRY_PAYERS = """
    WITH r AS MATERIALIZED (
        SELECT lane, rerate_id, customer_id, period, payer_rows FROM rerate_true_ups WHERE payer_rows IS NOT NULL),
    kept AS (
        SELECT r.lane, r.rerate_id, r.customer_id, r.period, (e ->> 0)::bigint AS charge_id,
               coalesce(e ->> 1, '') AS payer, sum((e ->> 2)::numeric) AS units
          FROM r CROSS JOIN LATERAL jsonb_array_elements(r.payer_rows) e GROUP BY 1, 2, 3, 4, 5, 6),
    written AS (
        SELECT t.lane, t.rerate_id, t.customer_id, t.period, t.charge_id, coalesce(t.payer, '') AS payer,
               sum(t.units) AS units
          FROM r JOIN true_up_payers t ON t.lane = r.lane AND t.rerate_id = r.rerate_id
           AND t.customer_id = r.customer_id AND t.period = r.period
         GROUP BY 1, 2, 3, 4, 5, 6)
    SELECT format('true-up record of re-rate %s of customer %s, %s: its payers'' rows give %s %s of charge %s, '
                  'it posted no entry and kept %s', rerate_id, customer_id, period,
                  coalesce(nullif(payer, ''), 'none of its payers'), coalesce(w.units, 0), charge_id,
                  coalesce(k.units, 0)), payer
      FROM kept k FULL JOIN written w USING (lane, rerate_id, customer_id, period, charge_id, payer)
     WHERE coalesce(k.units, 0) <> coalesce(w.units, 0)
     ORDER BY 1"""


async def credit_notes_tie_out(conn: AsyncConnection) -> Check:
    """Re-rates: each adjustment entry moved usage revenue by exactly what its charges' adjustments
    changed; each credit note is intact, numbered without gaps, its lines sum to its total, which
    is its entry's revenue movement and its charges' adjustments; its `amount_rounding` is what its
    entry posted to the rounding account (none before notes were rounded), its `amount` the total
    and that."""
    if not (await _schema(conn))["credit_notes"]:
        return Check("credit_notes", True, "no re-rates in this schema (before migration 0019)")
    # read for a row `{row}` of a lane and an entry_id: its entry in that lane alone (another lane's
    # entry of the id is a forger's copy, which entry_ids names)
    # (the accounts of a kind read once, not once a row: an InitPlan; joined, the planner scanned
    # every account for each entry, which grew with the customers times the re-rates)
    revenue = f"""SELECT -coalesce(sum(p.amount), 0) FROM postings p
                   WHERE p.lane = {{row}}.lane AND p.entry_id = {{row}}.entry_id
                     AND p.account_id = ANY(ARRAY(SELECT id FROM accounts
                                                   WHERE code LIKE {_literal(chart.revenue_account('%'))}))"""
    # what a note's entry posted to the rounding account (its money rounded to whole minor units)
    rounded = f"""SELECT -coalesce(sum(p.amount), 0) FROM postings p
                   WHERE p.lane = {{row}}.lane AND p.entry_id = {{row}}.entry_id
                     AND p.account_id = ANY(ARRAY(SELECT id FROM accounts
                                                   WHERE code LIKE {_literal(chart.rounding_account('%'))}))"""
    # what an entry corrected of closed periods' volume true-ups (its metadata's `true_ups`:
    # [period, rule, model, old, new]; wallets.core.rerate_true_ups)
    true_ups = """(SELECT coalesce(sum((t ->> 4)::numeric - (t ->> 3)::numeric), 0)
                     FROM journal_entries j CROSS JOIN LATERAL jsonb_array_elements(
                          CASE WHEN j.metadata ? 'true_ups' THEN j.metadata -> 'true_ups' ELSE '[]' END) t
                    WHERE j.lane = {row}.lane AND j.id = {row}.entry_id)"""
    # a re-rate whose lines net 0 posts no entry and keeps its true-ups' corrections in
    # rerate_true_ups (migration 0064): its charges without an entry and they net 0. One that kept
    # none is not checked: before 0064 such a re-rate kept its corrections nowhere.
    kept = """
        UNION ALL
        SELECT format('re-rate %s of customer %s posted no entry: its charges moved %s, its kept true-ups %s',
                      t.rerate_id, t.customer_id, coalesce(x.moved, 0), t.kept)
          FROM (SELECT rerate_id, customer_id, sum((u ->> 4)::numeric - (u ->> 3)::numeric) AS kept
                  FROM rerate_true_ups CROSS JOIN LATERAL jsonb_array_elements(true_ups) u
                 GROUP BY 1, 2) t
          LEFT JOIN (SELECT rerate_id, customer_id, sum(new_amount - old_amount) AS moved FROM charge_adjustments
                      WHERE entry_id IS NULL GROUP BY 1, 2) x
            ON x.rerate_id = t.rerate_id AND x.customer_id = t.customer_id
         WHERE coalesce(x.moved, 0) + t.kept <> 0""" if (await _schema(conn))["rerate_true_ups"] else ""
    # what each true-up gave back of each charge (true_up_charges, migration 0068), by rule: at most
    # what the true-up gave back of the rule, and each row the same way (money_back.each_charge_first,
    # TrueUpFix.parts), but a re-rate's rows may run both ways (it takes back of some charges and gives
    # back to others: their sum is bound so). A re-rate's: its correction of the rule's true-up. A
    # close's: its own line of the rule at the book's price (kind volume_true_up, no override), which is
    # what the period's rollups (wherever billed) say the true-up stands at less the re-rates'
    # corrections of it. Each row a charge of its customer billed in its period, of usage in it (its
    # invoice's bounds: a late charge billed in it is not; a close's and a re-rate's records are of
    # those alone; a re-rate's may be of a charge billed in no period, posted before migration 0017, as
    # it takes one to be billed in the period of its usage).
    given = """
        UNION ALL
        SELECT problem FROM (
            WITH corrections AS MATERIALIZED (  -- by lane: another lane's entry of the customer is a forger's
                SELECT r.lane, r.rerate_id, r.customer_id, u ->> 0 AS period, u ->> 1 AS rule_id,
                       sum((u ->> 3)::numeric - (u ->> 4)::numeric) AS back
                  FROM (SELECT j.lane, j.metadata ->> 'rerate_id' AS rerate_id, j.customer_id,
                               j.metadata -> 'true_ups' AS t
                          FROM journal_entries j WHERE j.kind = 'rerate_adjustment' AND j.metadata ? 'true_ups'
                        UNION ALL
                        SELECT lane, rerate_id, customer_id, true_ups FROM rerate_true_ups) r
                 CROSS JOIN LATERAL jsonb_array_elements(r.t) u GROUP BY 1, 2, 3, 4, 5),
            records AS MATERIALIZED (
                SELECT lane, customer_id, period, rerate_id, rule_id, sum(units) AS given,
                       min(units) FILTER (WHERE charge_id IS NOT NULL) AS low,
                       max(units) FILTER (WHERE charge_id IS NOT NULL) AS high
                  FROM true_up_charges GROUP BY 1, 2, 3, 4, 5),
            standing AS (
                SELECT customer_id, l ->> 0 AS period, l ->> 4 AS rule_id, sum(amount) AS amount
                  FROM (SELECT customer_id, substr(item, 6)::jsonb AS l, amount FROM (
                            SELECT customer_id, item, amount FROM period_rollups
                            UNION ALL
                            SELECT customer_id, unnest(items), unnest(amounts) FROM period_deltas) i
                         WHERE item LIKE 'line:["%","volume_true_up",%') x  -- (every customer's: a close's
                                      -- record alone joins them, by hash; filtered by the records, the planner,
                                      -- which takes them for a row, looped over them for each line)
                 WHERE l -> 7 = 'null' GROUP BY 1, 2, 3)
            SELECT format('true-up record of %s of customer %s, %s rule %s: ', CASE WHEN g.rerate_id IS NULL
                          THEN 'the close' ELSE 're-rate ' || g.rerate_id END, g.customer_id, g.period, g.rule_id)
                   || CASE WHEN g.given <> 0 AND NOT (sign(g.given) = sign(b.back) AND abs(g.given) <= abs(b.back))
                           THEN format('gave back %s of its charges, ', g.given)
                           ELSE format('its rows give back from %s to %s of a charge, ', g.low, g.high) END
                   || CASE WHEN g.rerate_id IS NULL THEN 'its true-up line ' ELSE 'its correction ' END
                   || b.back AS problem
              FROM records g
              LEFT JOIN corrections c ON c.lane = g.lane AND c.rerate_id = g.rerate_id AND c.customer_id = g.customer_id
               AND c.period = g.period AND c.rule_id = g.rule_id
              LEFT JOIN standing s ON g.rerate_id IS NULL AND s.customer_id = g.customer_id AND s.period = g.period
               AND s.rule_id = g.rule_id
              LEFT JOIN (SELECT lane, customer_id, period, rule_id, sum(back) AS back FROM corrections
                          GROUP BY 1, 2, 3, 4) f
                ON g.rerate_id IS NULL AND f.lane = g.lane AND f.customer_id = g.customer_id AND f.period = g.period
               AND f.rule_id = g.rule_id
             CROSS JOIN LATERAL (SELECT CASE WHEN g.rerate_id IS NULL
                                             THEN -(coalesce(s.amount, 0) + coalesce(f.back, 0))
                                             ELSE coalesce(c.back, 0) END AS back) b
             WHERE (g.given <> 0 AND NOT (sign(g.given) = sign(b.back) AND abs(g.given) <= abs(b.back)))
                OR (g.low <= 0 AND b.back > 0 OR g.high >= 0 AND b.back < 0)
                   AND NOT (g.rerate_id IS NOT NULL AND g.low < 0 AND g.high > 0)) x
        UNION ALL
        SELECT format('true-up record of %s of customer %s, %s rule %s: charge %s ', CASE WHEN t.rerate_id IS NULL
                      THEN 'the close' ELSE 're-rate ' || t.rerate_id END, t.customer_id, t.period, t.rule_id,
                      t.charge_id)
               || CASE WHEN c.customer_id IS DISTINCT FROM t.customer_id THEN 'is not its charge'
                       WHEN c.period IS DISTINCT FROM t.period AND NOT (c.period IS NULL AND t.rerate_id IS NOT NULL)
                       THEN 'is billed in ' || coalesce(c.period, 'no period')
                       ELSE format('is of usage at %s, outside the period its invoice %s closed', c.occurred_at,
                                   i.number) END
          FROM true_up_charges t LEFT JOIN charges c ON c.lane = t.lane AND c.id = t.charge_id
          LEFT JOIN invoices i ON i.customer_id = t.customer_id AND i.period = t.period
         WHERE t.charge_id IS NOT NULL
           AND (c.customer_id IS DISTINCT FROM t.customer_id OR c.period IS DISTINCT FROM t.period
                AND NOT (c.period IS NULL AND t.rerate_id IS NOT NULL)
                OR c.occurred_at < i.period_start OR c.occurred_at >= i.period_end)
        """ if (await _schema(conn))["true_up_charges"] else ""
    problems = [row[0] for row in (await conn.execute(text(f"""
        SELECT format('re-rate entry %s: its charges moved %s, its true-ups %s, its revenue postings %s',
                      x.entry_id, x.moved, {true_ups.format(row="x")},
                      ({revenue.format(row="x")}))
          FROM (SELECT lane, entry_id, sum(new_amount - old_amount) AS moved FROM charge_adjustments
                 WHERE entry_id IS NOT NULL GROUP BY lane, entry_id) x
         WHERE x.moved + {true_ups.format(row="x")} <> ({revenue.format(row="x")}){kept}{given}
        UNION ALL
        SELECT format('credit note %s: its content hash does not match its content', n.number)
          FROM credit_notes n WHERE n.content_hash <> sha256(convert_to(n.content::text, 'UTF8'))
        UNION ALL
        SELECT format('credit note %s: total %s, lines %s, its entry %s moved revenue by %s, its charges by %s',
                      n.number, n.total,
                      (SELECT sum((l ->> 'amount')::numeric) FROM jsonb_array_elements(n.content -> 'lines') l),
                      n.entry_id, ({revenue.format(row="n")}), a.moved + {true_ups.format(row="n")})
          FROM credit_notes n
          -- its charges' adjustments summed once for every note (credit_note_id has no index: a
          -- sum a note scanned them all, notes times adjustments)
          LEFT JOIN (SELECT credit_note_id, sum(new_amount - old_amount) AS moved FROM charge_adjustments
                      WHERE credit_note_id IS NOT NULL GROUP BY 1) a ON a.credit_note_id = n.id
         WHERE (n.content ->> 'total')::numeric * {_UNIT} <> n.total
            OR coalesce((SELECT sum((l ->> 'amount')::numeric) FROM jsonb_array_elements(n.content -> 'lines') l), 0)
               * {_UNIT} <> n.total
            OR n.total <> ({revenue.format(row="n")})
            OR n.total IS DISTINCT FROM a.moved + {true_ups.format(row="n")}
        UNION ALL
        SELECT format('credit note %s: total %s, amount %s, amount rounding %s, but its entry %s posted %s to '
                      'the rounding account', n.number, n.content ->> 'total', n.content ->> 'amount',
                      n.content ->> 'amount_rounding', n.entry_id, ({rounded.format(row="n")}))
          FROM credit_notes n
         WHERE coalesce((n.content ->> 'amount_rounding')::numeric, 0) * {_UNIT}
               <> ({rounded.format(row="n")})
            OR (n.content ? 'amount' AND (n.content ->> 'amount')::numeric
                <> (n.content ->> 'total')::numeric + (n.content ->> 'amount_rounding')::numeric)
        UNION ALL
        SELECT format('credit notes %s-%s: %s numbers, the last %s (a gap or a duplicate)',
                      issuer, year, count(*), max(seq))
          FROM credit_notes GROUP BY issuer, year HAVING count(*) <> max(seq)
        """))).all()]
    if (await _schema(conn))["true_up_charges"]:
        # a close's record tied charge by charge (_CLOSE_ROWS), of a record the checks above do not
        # name already
        named = {problem.split(": ", 1)[0] for problem in problems}
        # the rules each charge's lines count for as the re-rates before the close left them (kept
        # since 0087): written before its record, as the database numbered them (0090: the close's
        # record takes the adjustments' next id, the lane's lock ordering the two), or, a record
        # written before, as dated (the servers' clocks: one ahead put a re-rate after the close)
        numbered = (await _schema(conn))["true_up_charges_seq"]
        last = store.last_rules("CASE WHEN k.seq IS NULL THEN a.created_at < k.written ELSE a.id < k.seq END",
                                kept=(await _schema(conn))["adjustment_rules"])
        rows = _CLOSE_ROWS.replace("{last}", last).replace("{seq}", "min(adjustment_seq)" if numbered
                                                                  else "NULL::bigint")
        problems += [problem for problem, record in (await conn.execute(text(rows))) if record not in named]
    if (await _schema(conn))["true_up_payers"]:
        # a payer rows' sum that does not tie to a record the checks above name already (its rule's
        # rows damaged) is that damage again: named once
        named = {problem.split(": ", 1)[0].split(" rule ", 1)[0] for problem in problems}
        # below 0085 no row is numbered: the database's clock alone orders them
        written = "p.written" if (await _schema(conn))["true_up_payers_written"] else "NULL::bigint AS written"
        payer_rows = [(problem, tie) for problem, tie in
                      (await conn.execute(text(_PAYER_ROWS.replace("{written}", written))))
                      if not (tie and problem.split(": ", 1)[0] in named)]
        problems += [problem for problem, _ in payer_rows]
        # a close's rows that give a payer more or less than its entry posted it, of a record not
        # named already (a payer the bound by what it paid names: that payer of it not again)
        bounded = {(problem.split(": ", 1)[0], problem.split(": ", 2)[1].split(" got ", 1)[0])
                   for problem, tie in payer_rows if not tie}
        named |= {problem.split(": ", 1)[0] for problem, tie in payer_rows if tie}
        problems += [problem for problem, payer in (await conn.execute(text(_CLOSE_PAYERS)))
                     if problem.split(": ", 1)[0] not in named and (problem.split(": ", 1)[0], payer) not in bounded]
        # a true-up's rows tied to what its entry posted each payer beyond them, as it recorded
        problems += [problem for problem, payer in (await conn.execute(text(_ENTRY_PAYERS)))
                     if problem.split(": ", 1)[0] not in named and (problem.split(": ", 1)[0], payer) not in bounded]
        if (await _schema(conn))["rerate_true_ups_payers"]:  # a no-entry re-rate's rows tied to what it kept
            problems += [problem for problem, payer in (await conn.execute(text(_NO_ENTRY_PAYERS)))
                         if problem.split(": ", 1)[0] not in named
                         and (problem.split(": ", 1)[0], payer) not in bounded]
    return problems_check(
        "credit_notes", problems, "re-rate entries move revenue by their charges' adjustments and true-up "
        "corrections (a re-rate that posted none: they net 0 with the corrections it kept); what each true-up (a "
        "close's, a re-rate's) gave back of each charge: at most what it gave back of the rule, each row the same way "
        "and of a charge of its customer billed in its period, a close's each charge's overcharge at the tier reached "
        "(its cost there rounded up to the atomic unit) up to what its line left, the charges in order; what each "
        "payer got of each charge: its true-up's rows of the charge, and in all between nothing and what it paid of "
        "it; of a true-up entry that recorded what it posted each account beyond its payers' rows, each account's "
        "rows and that are what it posted it, of a re-rate that posted none, its rows what it kept of them, and of a "
        "close's that did not, in all no more than its entry posted it nor less than that less what it posted beyond "
        "every payer's rows; credit notes "
        "tie out to them (their money in whole minor units, the rest on the rounding account), intact and numbered "
        "without gaps")


WALLET_CHECKS: tuple[CheckFn, ...] = (
    assets_scaled, reservations_consistent, holds_equal_reserved, lots_match_accounts, wallets_within_limits,
    charges_match_entries, charge_lines_rounded, usage_counters_match_charges, usage_rollups_match_charges,
    usage_events_charged, budgets_match_reservations,
    period_rollups_match_postings, invoices_tie_out, credit_notes_tie_out,
)


async def full_verify(conn: AsyncConnection) -> Report:
    return await verify(conn, WALLET_CHECKS)
