"""Accounts receivable ageing: what each customer owes at an instant, by days past due.

Derived from the journal and the invoices alone. A customer's receivable at `at` (the postings of
entries that occurred before it, as the trial balance at `at` sums them) is split into its
finalized invoices still open then (amount due less the payments whose entries occurred before
`at`), each in the bucket of its days past due, and `unbilled`: what the receivable owes that no
invoice has asked for yet (usage of periods not closed). Money the receivable got back that no
invoice records as paid yet (a credit note's or a true-up's, applied to the oldest open invoices
at the next close) is taken off the oldest invoices first, as that close will, and shown as
`unapplied_credit`. So the buckets and `unbilled` of a customer always sum to its receivable.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from wallets import chart
from wallets.periods import zone

BUCKETS = ("current", "days_1_30", "days_31_60", "days_61_90", "days_over_90")


def days_past_due(due_at: datetime, at: datetime, tz: tzinfo) -> int:
    """Calendar days of the customer's time zone `tz` from `due_at` to `at`, rounded up: 0 until
    the due instant (not yet due), 1 for any part of the first day after it, 30 up to the same
    local time 30 days on, however long daylight saving makes those days."""
    if at <= due_at:
        return 0
    due, now = due_at.astimezone(tz), at.astimezone(tz)
    return (now.date() - due.date()).days + (now.time() > due.time())


def bucket_of(days: int) -> str:
    if days <= 0:
        return "current"
    if days <= 30:
        return "days_1_30"
    if days <= 60:
        return "days_31_60"
    if days <= 90:
        return "days_61_90"
    return "days_over_90"


@dataclass(frozen=True, slots=True)
class OpenInvoice:
    """A finalized invoice as of `at`: its amount due and what payments had paid of it by then."""

    invoice_id: str
    number: str
    period: str
    issued_at: datetime
    due_at: datetime
    amount_due: int
    paid: int


@dataclass(frozen=True, slots=True)
class AgedInvoice:
    invoice: OpenInvoice
    outstanding: int  # counted in its bucket: amount due - paid - unapplied credit taken off it
    days_past_due: int
    bucket: str


@dataclass(frozen=True, slots=True)
class CustomerAgeing:
    customer_id: str
    name: str | None
    currency: str
    billing: str
    receivable: int
    unbilled: int
    unapplied_credit: int
    invoices: tuple[AgedInvoice, ...]

    def buckets(self) -> dict[str, int]:
        sums = dict.fromkeys(BUCKETS, 0)
        for aged in self.invoices:
            sums[aged.bucket] += aged.outstanding
        return sums


def age(at: datetime, receivable: int, invoices: Iterable[OpenInvoice],
        tz: tzinfo) -> tuple[int, int, tuple[AgedInvoice, ...]]:
    """(unbilled, unapplied credit, the open invoices aged) of a receivable of `receivable` at
    `at`, days past due in the customer's time zone `tz`: the invoices' outstanding amounts and
    `unbilled` sum to `receivable` exactly."""
    ordered = sorted((i for i in invoices if i.amount_due > i.paid), key=lambda i: (i.due_at, i.number))
    open_total = sum(i.amount_due - i.paid for i in ordered)
    unapplied = max(0, open_total - max(0, receivable))
    left = unapplied
    aged = []
    for invoice in ordered:
        outstanding = invoice.amount_due - invoice.paid
        taken = min(left, outstanding)
        left -= taken
        if outstanding > taken:
            days = days_past_due(invoice.due_at, at, tz)
            aged.append(AgedInvoice(invoice, outstanding - taken, days, bucket_of(days)))
    return receivable - (open_total - unapplied), unapplied, tuple(aged)


@dataclass(slots=True)
class CurrencyTotals:
    currency: str
    customers: int = 0
    receivable: int = 0
    unbilled: int = 0
    unapplied_credit: int = 0
    buckets: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))


def totals(rows: Iterable[CustomerAgeing]) -> list[CurrencyTotals]:
    """Sums per currency, in currency order."""
    by: dict[str, CurrencyTotals] = {}
    for row in rows:
        t = by.setdefault(row.currency, CurrencyTotals(row.currency))
        t.customers += 1
        t.receivable += row.receivable
        t.unbilled += row.unbilled
        t.unapplied_credit += row.unapplied_credit
        for name, amount in row.buckets().items():
            t.buckets[name] += amount
    return [by[c] for c in sorted(by)]


# The receivable of each customer in scope at :at, from postings (as trial_balance_at sums them),
# and its invoices finalized before :at with what their payments' entries before :at paid.
_RECEIVABLES = """
SELECT c.id, c.name, c.currency, c.billing, c.time_zone, coalesce(sum(p.amount), 0)::numeric AS owed
  FROM customers c
  JOIN accounts a ON a.code = %(before)s || c.id || %(after)s
  LEFT JOIN (postings p JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id
                                             AND j.occurred_at < %(at)s AND {visible})
         ON p.account_id = a.id
 WHERE {scope}
 GROUP BY c.id, c.name, c.currency, c.billing, c.time_zone
"""
_INVOICES = """
SELECT i.customer_id, i.id, i.number, i.period, i.finalized_at, i.due_at, i.amount_due,
       coalesce((SELECT sum(ip.amount) FROM invoice_payments ip
                   JOIN journal_entries j ON j.lane = ip.lane AND j.id = ip.entry_id
                  WHERE ip.invoice_id = i.id AND j.occurred_at < %(at)s AND {visible}), 0)::numeric AS paid
  FROM invoices i JOIN customers c ON c.id = i.customer_id
 WHERE i.finalized_at < %(at)s AND i.amount_due > 0 AND {scope}
"""
_VISIBLE = "(%(snapshot)s::text IS NULL OR pg_visible_in_snapshot(j.txid, %(snapshot)s::pg_snapshot))"


async def ageing(conn: AsyncConnection, at: datetime, *, currency: str | None = None, customer: str | None = None,
                 customers: Sequence[str] | None = None, snapshot: str | None = None) -> list[CustomerAgeing]:
    """Every customer in scope (`currency`, `customer`, limited to `customers` when given) that
    owed something at `at` or had an invoice open then, in customer id order."""
    scope = ("(%(currency)s::text IS NULL OR c.currency = %(currency)s) AND (%(customer)s::text IS NULL OR "
             "c.id = %(customer)s) AND (%(customers)s::text[] IS NULL OR c.id = ANY(%(customers)s::text[]))")
    params: dict[str, Any] = {"at": at, "currency": currency, "customer": customer, "snapshot": snapshot,
                              "customers": None if customers is None else list(customers),
                              "before": chart.RECEIVABLE_CODE[0], "after": chart.RECEIVABLE_CODE[1]}
    owed = (await conn.exec_driver_sql(_RECEIVABLES.format(visible=_VISIBLE, scope=scope), params)).all()
    invoices: dict[str, list[OpenInvoice]] = {}
    for r in (await conn.exec_driver_sql(_INVOICES.format(visible=_VISIBLE, scope=scope), params)).all():
        invoices.setdefault(r.customer_id, []).append(
            OpenInvoice(r.id, r.number, r.period, r.finalized_at, r.due_at, int(r.amount_due), int(r.paid)))
    rows = []
    for r in sorted(owed, key=lambda r: r.id):
        unbilled, unapplied, aged = age(at, int(r.owed), invoices.get(r.id, ()), zone(r.time_zone))
        if int(r.owed) or aged:
            rows.append(CustomerAgeing(r.id, r.name or None, r.currency, r.billing, int(r.owed), unbilled,
                                       unapplied, aged))
    return rows
