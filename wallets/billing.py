"""Billing periods and invoices, as the API, the CLI and the scheduler use them: closing what is
due (a ClosePeriod command per customer and period, through the engine: one transaction per
lane under the lane's writer lock and the issuer's numbering lock), reading invoices, computing
the upcoming one live with the close's own code, and paying one."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.db import Database
from ledger.errors import LedgerError
from pricing.errors import PricingError
from wallets import store
from wallets.books import BookCache
from wallets.commands import ClosePeriod
from wallets.core.billing import Header, amount_due_units, as_issued, document, money, shown_lines
from wallets.core.invoicing import upcoming_invoice
from wallets.core.payments import payable
from wallets.core.results import InvoiceClosed, payment_status
from wallets.core.state import State, wire_time
from wallets.engine import Engine, utc_now
from wallets.errors import NotFoundError, WalletValidationError
from wallets.periods import period_named, period_of
from wallets.price_overrides import OverrideCache

log = logging.getLogger("tokentill.billing")
PAGE = 1000
CHUNK = 256  # closes per engine call: one transaction per lane among them
UNEXPECTED = "an unexpected error: the server log has it"  # a failure not a refusal: its text may show internals
DEFAULT_ISSUER = "INV"
CLOCK_SKEW = timedelta(seconds=60)  # an `until` this far past the clock is still "now"
# the furthest an early close reaches: one invoice per period up to it (year 8961 was ~83,000 of
# them for one customer, hours of work no client waited for)
EARLY_REACH = timedelta(days=731)


def close_clock(until: datetime | None, now: datetime, *, early: bool,
                early_as: str = '"early": true') -> datetime | None:
    """The clock a close `until` runs at. A time to come would finalize and number invoices
    before their periods end (what usage they would still receive becomes late usage) and date
    its entries then: an operator's typo would be irreversible, so it is done only when asked
    for (`early`). Up to CLOCK_SKEW ahead is the sender's clock running a little fast: the
    server's own clock (`now`), so that no period closes before its end (with no grace window,
    `until` a period's end 30 s early closed it and numbered its invoice in the next year).
    `early_as`: how the caller asks for an early close (the CLI's `--early`), named by the refusal."""
    if until is not None and until > now + CLOCK_SKEW and not early:
        raise WalletValidationError("until", f"{wire_time(until)} is in the future: closing then would issue "
                                    f"invoices before their periods end; ask for it with {early_as} to close early on "
                                    "purpose (tests, simulations)")
    if until is not None and until > now + EARLY_REACH:
        raise WalletValidationError("until", f"{wire_time(until)} is more than {EARLY_REACH.days} days ahead: "
                                    "an early close numbers an invoice for every period up to it")
    return until if until is None or early or until <= now else now


async def close_due(db: Database, until: datetime | None = None, *, issuer: str = DEFAULT_ISSUER,
                    engine: Engine | None = None, customers: Sequence[str] | None = None,
                    failures: list[tuple[str, str]] | None = None,
                    written: datetime | None = None) -> list[InvoiceClosed]:
    """Close every period whose grace window ended by `until` (default: now), oldest first per
    customer, until nothing is due (a customer idle for months gets one invoice per period);
    only `customers`' when given. A close refused is logged, and put in `failures` when given, as
    (customer id, reason): a refusal's own message, or for an unexpected error only that it
    happened (its text, which may show internals, is in the log).
    Several processes may run it at once: each period is closed once, numbers stay gapless.
    `written`: the clock of an early close (`until` past it), which dates its entries, when the
    ledger wrote them, where `until` dates its invoices (their issue and number)."""
    engine = engine or Engine(db, grouping=False)
    at = until or utc_now()
    closed: list[InvoiceClosed] = []
    while True:
        found = 0
        after = ""
        while True:
            rows = await db.read(lambda conn, after=after: due_periods(conn, at, after, customers))
            if not rows:
                break
            after = rows[-1][0]
            commands = [ClosePeriod(customer_id=cid, period_start=start, issuer=issuer) for cid, start in rows]
            for i in range(0, len(commands), CHUNK):
                chunk = commands[i:i + CHUNK]
                outcomes = await engine.execute(chunk, now=at, each=True, written=written)
                for command, outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, InvoiceClosed):
                        closed.append(outcome)
                        found += 1
                    elif isinstance(outcome, BaseException):  # this customer waits; the others close
                        log.error("closing the period of %s failed: %s", command.customer_id, outcome)
                        if failures is not None:
                            failures.append((command.customer_id, str(outcome) if isinstance(
                                outcome, LedgerError | PricingError) else UNEXPECTED))
            if len(rows) < PAGE:
                break
        if not found:
            return closed


async def due_periods(conn: AsyncConnection, at: datetime, after: str,
                      customers: Sequence[str] | None) -> list[Any]:
    """A page of the customers whose period is due by `at`, planned for its `at` each time (as
    wallets/expiry.due): planned for any `at`, the read walked the customers' primary key over every
    customer past the page's last, 20,004 read for 3 due (tests/integration/billing/
    test_close_due_reads.py), where customers_close_due reads the 3."""
    await conn.exec_driver_sql("SET LOCAL plan_cache_mode = force_custom_plan")
    rows = await conn.exec_driver_sql(
        """SELECT id, open_period_start FROM customers
            WHERE next_close_at <= %s AND id > %s AND (%s::text[] IS NULL OR id = ANY(%s::text[]))
            ORDER BY id LIMIT %s""",
        (at, after, customers, customers, PAGE))
    return list(rows.all())


_INVOICE = """SELECT i.id, i.customer_id, i.number, i.period, i.period_start, i.amount_due::text AS amount_due,
                     i.content,
                     encode(i.content_hash, 'hex') AS content_hash,
                     coalesce((SELECT sum(p.amount) FROM invoice_payments p WHERE p.invoice_id = i.id), 0)::text
                         AS paid,
                     coalesce((SELECT jsonb_agg(jsonb_build_object('id', p.id, 'amount', p.amount::text,
                                                'reference', p.reference, 'entry_id', p.entry_id,
                                                'created_at', p.created_at) ORDER BY p.created_at, p.id)
                                 FROM invoice_payments p WHERE p.invoice_id = i.id), '[]'::jsonb) AS payments,
                     -- the credit and debit notes correcting it (by its customer's notes: the index there is)
                     coalesce((SELECT jsonb_agg(jsonb_build_object('id', n.id, 'number', n.number, 'kind', n.kind,
                                                'total', n.total::text, 'issued_at', n.issued_at)
                                                ORDER BY n.issued_at, n.seq, n.id)
                                 FROM credit_notes n WHERE n.customer_id = i.customer_id AND n.invoice_id = i.id),
                              '[]'::jsonb) AS notes
                FROM invoices i"""


def _view(row: Any, owed: int) -> dict[str, Any]:
    """The frozen document, then what happened since: payments and the payment status, and what
    it may still be paid: what is left of its amount due, at most what the customer owes (`owed`:
    a re-rate's money back is off the receivable before its close applies it to this invoice)."""
    paid, cur = int(row.paid), row.content["currency"]
    return {**as_issued(row.content), "content_hash": row.content_hash,
            "payment_status": payment_status(int(row.amount_due), paid), "amount_paid": money(paid, cur),
            "amount_remaining": money(payable(int(row.amount_due) - paid, owed, cur), cur),
            # its time as every answer spells one: jsonb spelt '…10.24185+00:00' for '…10.241850Z'
            "payments": [{**p, "amount": money(int(p["amount"]), cur),
                          "created_at": wire_time(datetime.fromisoformat(p["created_at"]))} for p in row.payments],
            "credit_notes": [{**n, "total": money(int(n["total"]), cur),
                              "issued_at": wire_time(datetime.fromisoformat(n["issued_at"]))} for n in row.notes]}


async def invoice(conn: AsyncConnection, invoice_id: str, customers: Sequence[str] | None = None) -> dict[str, Any]:
    """One invoice; a key limited to `customers` sees theirs only (another's is not found)."""
    row = (await conn.execute(text(_INVOICE + " WHERE i.id = :id"), {"id": invoice_id})).first()
    if row is None or (customers is not None and row.customer_id not in customers):
        raise NotFoundError(f"no invoice {invoice_id}", invoice_id=invoice_id)
    return _view(row, await _owed(conn, row.customer_id))


async def invoices(conn: AsyncConnection, customer_id: str) -> dict[str, Any]:
    """Every finalized invoice of the customer, oldest first."""
    return (await invoice_page(conn, customer_id, None, None))[0]


async def invoice_page(conn: AsyncConnection, customer_id: str, after: tuple[datetime, str] | None,
                       limit: int | None, *, newest_first: bool = False
                       ) -> tuple[dict[str, Any], tuple[datetime, str] | None]:
    """Up to `limit` (None: all) of the customer's invoices in period order (period start, then
    id; `newest_first` the reverse, as the console lists them), those after the position `after`
    in that order; and the last one's position when more follow."""
    await require_customer(conn, customer_id)
    beyond, order = ("<", "DESC") if newest_first else (">", "ASC")
    rows = list(await conn.execute(text(
        _INVOICE + " WHERE i.customer_id = :c AND (CAST(:start AS timestamptz) IS NULL"
        f" OR (i.period_start, i.id) {beyond} (CAST(:start AS timestamptz), :id))"
        f" ORDER BY i.period_start {order}, i.id {order} LIMIT :limit"),
        {"c": customer_id, "start": after and after[0], "id": after and after[1],
         "limit": None if limit is None else limit + 1}))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if more else rows
    owed = await _owed(conn, customer_id)
    return ({"customer_id": customer_id, "invoices": [_view(r, owed) for r in rows]},
            (rows[-1].period_start, rows[-1].id) if more else None)


async def _owed(conn: AsyncConnection, customer_id: str) -> int:
    """What the customer owes now, as a payment of its invoices is bounded by: its receivable less
    what open reservations hold on credit (pay_invoice's `owed`)."""
    loaded = await store.load(conn, [customer_id], credit_held_for=[customer_id])
    w = loaded.wallets.get(customer_id)
    return 0 if w is None else max(0, w.receivable - (w.credit_held or 0))


async def invoice_owner(conn: AsyncConnection, invoice_id: str) -> str:
    owner = (await conn.execute(text("SELECT customer_id FROM invoices WHERE id = :id"), {"id": invoice_id})).scalar()
    if owner is None:
        raise NotFoundError(f"no invoice {invoice_id}", invoice_id=invoice_id)
    return owner


async def upcoming(conn: AsyncConnection, customer_id: str, now: datetime, books: BookCache,
                   overrides: OverrideCache) -> dict[str, Any]:
    """The invoice of the customer's current period so far, as its close would finalize it now
    (`invoicing.upcoming_invoice`, the close's own rules): the period's rollup with the volume
    true-up the close would post, paid as the close would pay it; the balances; what the top-ups
    already paid on it. The earlier periods still waiting for their close are closed first, on paper."""
    loaded = await store.load(conn, [customer_id], credit_held_for=[customer_id], now=now)
    w = loaded.wallets.get(customer_id)
    if w is None:
        raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)
    c = w.customer
    period = period_of(max(now, c.open_period_start or now), c.cycle)
    first = period_of(c.open_period_start, c.cycle).label if c.open_period_start else period.label
    rollups = (await store.load_rollups(conn, [(c.id, min(first, period.label))])).get(c.id, {})
    credits = (await store.load_unapplied(conn, [c.id])).get(c.id, ()) if c.billing == "prepaid" else ()
    book = await books.get(conn, c.price_book, c.book_versions)
    if c.override_versions:  # its free allowances pay a true-up as the close's
        w.overrides = await overrides.get(conn, c.id, c.override_versions)
    # what paid the charges each volume-tiered rule rated: a true-up's money back goes there
    funding = {(c.id, label): await store.rule_funding(conn, c.id, period_named(label, c.cycle))
               for label in rollups}
    payers = {a for rules in funding.values() for paid in rules.values() for _, a, *_ in paid if a}
    await store.load_payers(conn, w, payers, now)
    # the charges re-rates moved: a true-up counts them as re-rated
    rerated = {(c.id, label): await store.rerated_charges(conn, c.id, period_named(label, c.cycle))
               for label in rollups}
    state = State(c.id, w, rollups={c.id: rollups}, unapplied={c.id: credits}, rule_funding=funding,
                  rerated=rerated)
    rollup, opening, parts = upcoming_invoice(state, period, now, book)
    content = document(c, period, rollup, opening, Header(None, None, "upcoming", now))
    due, paid = amount_due_units(rollup), sum(part for _, part in parts)
    cur = c.currency
    return {**content, "lines": shown_lines(content["lines"]), "amount_paid": money(paid, cur),
            "amount_remaining": money(max(0, due - paid), cur),
            "payments": [{"amount": money(part, cur), "reference": credit.reference, "entry_id": credit.entry_id,
                          "created_at": wire_time(credit.at)} for credit, part in parts],
            "credit_notes": []}  # none corrects an invoice not yet issued: the same shape as one issued


async def require_customer(conn: AsyncConnection, customer_id: str) -> None:
    """not_found for a customer that does not exist."""
    if (await conn.execute(text("SELECT 1 FROM customers WHERE id = :c"), {"c": customer_id})).first() is None:
        raise NotFoundError(f"no customer {customer_id}", customer_id=customer_id)


__all__ = ["DEFAULT_ISSUER", "close_due", "invoice", "invoice_owner", "invoice_page", "invoices", "require_customer",
           "upcoming"]
