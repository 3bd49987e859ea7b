"""Accounts receivable ageing (admin): what each customer owes at an instant, by days past due,
with totals per currency that tie to the receivable accounts of the trial balance at that instant
(wallets.ageing). Pages by an opaque cursor, as the journal does: every page reads the snapshot
and the `at` of the first, so the pages are disjoint and together one report."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, get
from litestar.datastructures import State

from api.auth import principal_of, require
from api.errors import ApiError, documented
from api.routes import cursors
from api.routes.cursors import PAGE, Cursor, Limit
from api.routes.formats import CurrencyQuery, CustomerQuery
from api.routes.wire import bound_in, money, time_in, time_out, time_param
from ledger.journal import current_snapshot, snapshot_is_past
from wallets import ageing
from wallets.ageing import BUCKETS, CustomerAgeing
from wallets.errors import WalletValidationError


class AgedInvoiceView(msgspec.Struct):
    invoice_id: str
    number: str
    period: str
    issued_at: str
    due_at: str
    amount_due: str
    amount_paid: Annotated[str, msgspec.Meta(description="Paid by entries that occurred before `at`")]
    amount_outstanding: Annotated[str, msgspec.Meta(description=(
        "What it counts in its bucket: amount_due - amount_paid, less any unapplied credit taken off it"))]
    days_past_due: Annotated[int, msgspec.Meta(description=(
        "Calendar days of the customer's time zone after due_at, rounded up; 0: not yet due"))]
    bucket: str


class CustomerAgeingView(msgspec.Struct):
    customer_id: str
    customer_name: str | None
    currency: str
    billing: str
    unbilled: Annotated[str, msgspec.Meta(description=(
        "On the receivable but on no finalized invoice yet: usage of periods not closed, and what open "
        "reservations hold on credit past the lots"))]
    current: Annotated[str, msgspec.Meta(description="On invoices not yet due")]
    days_1_30: str
    days_31_60: str
    days_61_90: str
    days_over_90: str
    total: Annotated[str, msgspec.Meta(description="The receivable at `at`: unbilled plus every bucket")]
    unapplied_credit: Annotated[str, msgspec.Meta(description=(
        "Money back on the receivable (credit notes, true-ups) that no invoice records as paid yet; "
        "taken off the oldest open invoices, as their next close will apply it"))]
    invoices: list[AgedInvoiceView]


class CurrencyTotalsView(msgspec.Struct):
    currency: str
    customers: int
    unbilled: str
    current: str
    days_1_30: str
    days_31_60: str
    days_61_90: str
    days_over_90: str
    total: str
    unapplied_credit: str


class AgeingReport(msgspec.Struct):
    """Customers in id order; `totals` are over every page (the whole report), per currency."""

    at: str
    currency: str | None
    customer: str | None
    customers: list[CustomerAgeingView]
    totals: list[CurrencyTotalsView]
    next_cursor: str | None


def _customer(row: CustomerAgeing) -> CustomerAgeingView:
    cur, buckets = row.currency, row.buckets()
    return CustomerAgeingView(
        row.customer_id, row.name, cur, row.billing, money(row.unbilled, cur),
        *(money(buckets[b], cur) for b in BUCKETS), money(row.receivable, cur), money(row.unapplied_credit, cur),
        [AgedInvoiceView(a.invoice.invoice_id, a.invoice.number, a.invoice.period, time_out(a.invoice.issued_at),
                         time_out(a.invoice.due_at), money(a.invoice.amount_due, cur), money(a.invoice.paid, cur),
                         money(a.outstanding, cur), a.days_past_due, a.bucket) for a in row.invoices])


def _totals(t: ageing.CurrencyTotals) -> CurrencyTotalsView:
    cur = t.currency
    return CurrencyTotalsView(cur, t.customers, money(t.unbilled, cur), *(money(t.buckets[b], cur) for b in BUCKETS),
                              money(t.receivable, cur), money(t.unapplied_credit, cur))


def _position(position: list[Any]) -> tuple[datetime, str]:
    """The `at` and last customer of a page's cursor; its `at` held to what `at=` accepts (years 1000
    to 9998, with an offset): one edited past year 9999 aged invoices past what a date holds (500)."""
    try:
        at, last = position
        if type(at) is not str or type(last) is not str:
            raise ValueError
        parsed = time_in(at, "at")
    except (TypeError, ValueError, WalletValidationError):
        parsed = None
    if parsed is None:
        raise cursors.invalid("not a cursor of this API")
    return parsed, last


@get("/v1/receivables/ageing", guards=[require()], tags=["invoices"], **documented(400, 404, 422))
async def get_ageing(
    state: State, request: Request,
    at: Annotated[str | None, time_param("at")] = None,
    currency: CurrencyQuery = None,
    customer: CustomerQuery = None,
    cursor: Cursor = None,
    limit: Limit = PAGE,
) -> AgeingReport:
    """Accounts receivable ageing as of `at` (default: now): per customer, what its receivable
    owed (from the postings of entries that occurred before `at`), split into `unbilled` and its
    open invoices' amounts by days past due (current, 1-30, 31-60, 61-90, over 90), with totals
    per currency; filtered by `currency` and `customer` (unknown: 404 `not_found`)."""
    when = bound_in(at, "at")  # finer than a microsecond: the next one, as the balance at T
    filters = [at, currency, customer]
    visible = principal_of(request).visible()

    async def read(conn):
        if cursor is None:
            snapshot, after = await current_snapshot(conn), None
            moment = when or state.services.wallets.clock()
        else:
            snapshot, position = cursors.decode(cursor, "ageing", filters)
            if not await snapshot_is_past(conn, snapshot):
                raise cursors.invalid("its snapshot is not one this server took")
            moment, after = _position(position)
        await _known(conn, currency, customer)
        rows = await ageing.ageing(conn, moment, currency=currency, customer=customer, customers=visible,
                                   snapshot=snapshot)
        return moment, snapshot, after, rows

    moment, snapshot, after, rows = await state.services.db.read(read)
    page = [r for r in rows if after is None or r.customer_id > after][:limit]
    more = (cursors.encode("ageing", filters, snapshot, [moment.isoformat(), page[-1].customer_id])
            if len(page) == limit and rows[-1].customer_id != page[-1].customer_id else None)
    return AgeingReport(time_out(moment), currency, customer, [_customer(r) for r in page],
                        [_totals(t) for t in ageing.totals(rows)], more)


async def _known(conn, currency: str | None, customer: str | None) -> None:
    if currency is not None and (await conn.exec_driver_sql(
            "SELECT 1 FROM assets WHERE code = %s", (currency,))).first() is None:
        raise ApiError("not_found", f"no currency {currency}")
    if customer is not None and (await conn.exec_driver_sql(
            "SELECT 1 FROM customers WHERE id = %s", (customer,))).first() is None:
        raise ApiError("not_found", f"no customer {customer}")


ROUTES = [get_ageing]
