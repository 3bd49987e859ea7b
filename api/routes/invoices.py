"""Invoices: a customer's finalized invoices, the upcoming one (live), one by id, payments of
one, and closing what is due (admin). A customer:<id> key reads its own customer's invoices only;
auditor and admin keys read every customer's (a key limited to customers, theirs)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Template

from api import renderings
from api.auth import ensure_owner, principal_of, require
from api.errors import documented
from api.routes import cursors
from api.routes.formats import DateTime, Identifier, PositiveAmount, free_text
from api.routes.schemas import json_body
from api.routes.wire import Answer, cash_in, cash_of, idempotency, money, respond, shaped, time_in
from wallets import billing
from wallets.commands import PayInvoice
from wallets.core.payments import check_reference
from wallets.core.results import PaymentResult

READERS = ("auditor", "customer")
BILL_TO = ("The customer's name when the document was issued, frozen in it (a rename later changes no issued "
           "document); null for a customer without a name, or a document issued before names were recorded: "
           "the renderings then bill the customer_id alone")


class PayInvoiceRequest(msgspec.Struct, forbid_unknown_fields=True):  # a misspelt currency: 422, not the invoice's
    amount: PositiveAmount
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=500), free_text()]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None  # default: the invoice's


class PaymentResponse(msgspec.Struct):
    invoice_id: str
    number: str
    reference: str
    amount: str
    amount_paid: str
    amount_due: str  # the invoice's, as issued
    payment_status: str
    entry_id: int | None
    amount_remaining: str = ""  # what is still owed on it after this payment (amount_due - amount_paid)


class CloseRequest(msgspec.Struct, forbid_unknown_fields=True):  # a misspelt customer_id: 422, not every customer
    until: DateTime | None = None  # close what is due by then (default: now)
    customer_id: Identifier | None = None  # only this customer's periods
    early: bool = False  # allow an `until` in the future: close periods before they end


class InvoicePeriod(msgspec.Struct):
    label: str
    start: str
    end: str
    time_zone: str


class InvoicePayment(msgspec.Struct):
    id: str
    amount: str
    reference: str
    entry_id: int
    created_at: str


class InvoiceNote(msgspec.Struct):
    """A credit (or debit) note correcting the invoice (GET /v1/credit-notes/{id} reads it)."""

    id: str
    number: str
    kind: Literal["credit", "debit"]
    total: str
    issued_at: str


class InvoiceView(msgspec.Struct):
    """A finalized invoice: its frozen document (beside these, its subtotals, credits, balances
    and adjustments), its content hash, its payments and payment status. Money: decimal strings."""

    id: str
    number: str
    status: str
    customer_id: str
    customer_name: Annotated[str | None, msgspec.Meta(description=BILL_TO)]
    currency: str
    period: InvoicePeriod
    issued_at: str
    due_at: str
    lines: list[dict[str, Any]]
    total: str
    amount_due: str
    content_hash: str
    payment_status: Literal["open", "partially_paid", "paid"]
    amount_paid: str
    amount_remaining: str
    payments: list[InvoicePayment]
    amount_due_rounding: Annotated[str | None, msgspec.Meta(description=(
        "What the close added to (or, negative, took off) what the receivable paid of the period's "
        "charges so that the amount due, less what top-ups already paid of it, is whole minor units of "
        "the currency (half to even), posted against the platform's rounding account; absent on invoices "
        "finalized before"))] = None
    credit_note_rounding: Annotated[str | None, msgspec.Meta(description=(
        "What the credit and debit notes of re-rates billed in this period rounded off their exact "
        "corrections to move whole minor units (their amount_rounding, against the platform's rounding "
        "account): credits applied, charged to account and this sum to the total; absent on invoices "
        "finalized before"))] = None
    credit_notes: Annotated[list[InvoiceNote], msgspec.Meta(description=(
        "The credit and debit notes of re-rates correcting this invoice, oldest first (empty: none); "
        "not part of the frozen document"))] = []


class InvoiceList(msgspec.Struct):
    """Invoices in period order (oldest first); `next_cursor` is null on the last page."""

    customer_id: str
    invoices: list[InvoiceView]
    next_cursor: str | None


class ClosedInvoice(msgspec.Struct):
    invoice_id: str
    number: str
    customer_id: str
    period: Annotated[str, msgspec.Meta(description="The billing period's label")]
    total: str
    amount_due: str


class NotClosed(msgspec.Struct):
    customer_id: str
    reason: Annotated[str, msgspec.Meta(description="Why its close was refused (also logged)")]


class Closed(msgspec.Struct):
    closed: list[ClosedInvoice]
    not_closed: Annotated[list[NotClosed], msgspec.Meta(
        description="The periods due that could not be closed (the others were), by customer; empty when all closed")]


PayInvoiceBody = Annotated[dict[str, Any], json_body(PayInvoiceRequest)]
CloseBody = Annotated[dict[str, Any], json_body(CloseRequest)]


def _payment(result: PaymentResult) -> PaymentResponse:
    cur = result.currency
    return PaymentResponse(result.invoice_id, result.number, result.reference, money(result.amount, cur) or "0",
                           money(result.paid, cur) or "0", money(result.amount_due, cur) or "0", result.status,
                           result.entry_id, money(remaining(result), cur) or "0")


def remaining(result: PaymentResult) -> int:
    """What the invoice may still be paid: at most what the customer owes (a re-rate's money back
    is off the receivable before its close applies it to the invoice)."""
    return max(0, result.amount_due - result.paid) if result.remaining is None else result.remaining


PAID = Answer(_payment, PaymentResult)


@get("/v1/customers/{customer_id:str}/invoices", guards=[require(*READERS)], tags=["invoices"],
     **documented(400, 404, 422, ok=InvoiceList))
async def list_invoices(state: State, customer_id: FromPath[str], cursor: cursors.Cursor = None,
                        limit: cursors.Limit = cursors.PAGE) -> dict[str, Any]:
    """The customer's finalized invoices, oldest first, each with its payments and status, a page
    at a time (`limit`, default 100); page on with `next_cursor` (a keyset position: an invoice
    finalized meanwhile shows on a later page; none shows twice)."""
    after = None if cursor is None else cursors.time_and_id(
        cursors.decode_position(cursor, "invoices", [customer_id]))
    page, more = await state.services.db.read(lambda conn: billing.invoice_page(conn, customer_id, after, limit))
    return {**page, "next_cursor": None if more is None else cursors.encode_position(
        "invoices", [customer_id], [more[0].isoformat(), more[1]])}


@get("/v1/customers/{customer_id:str}/invoices/upcoming", guards=[require(*READERS)], tags=["invoices"],
     opt={"media_types": renderings.MEDIA_TYPES},
     **documented(404, 406, operation=renderings.rendered_as(renderings.HTML, renderings.PDF, renderings.CSV)))
async def upcoming_invoice(state: State, request: Request, customer_id: FromPath[str]) -> Response[Any]:
    """The invoice of the customer's current period so far, computed now by the close's own code
    (a volume true-up shows as it would be posted if the period closed now); no number yet.
    Rendered by the Accept header as an invoice is."""
    return await rendered(renderings.negotiate(request), await upcoming_document(state, customer_id))


async def upcoming_document(state: State, customer_id: str) -> dict[str, Any]:
    wallets = state.services.wallets
    return await state.services.db.read(
        lambda conn: billing.upcoming(conn, customer_id, wallets.clock(), wallets.engine.books,
                                      wallets.engine.overrides))


@get("/v1/invoices/{invoice_id:str}", guards=[require(*READERS)], tags=["invoices"],
     opt={"media_types": renderings.MEDIA_TYPES},
     **documented(404, 406, operation=renderings.rendered_as(renderings.HTML, renderings.PDF, renderings.CSV)))
async def get_invoice(state: State, request: Request, invoice_id: FromPath[str]) -> Response[Any]:
    """A finalized invoice: its frozen document, its content hash, its payments and status; by
    the Accept header as JSON (default), a printable page (`text/html`), a PDF
    (`application/pdf`) or its lines as CSV (`text/csv`); any other is 406."""
    media = renderings.negotiate(request)
    return await rendered(media, await invoice_document(state, request, invoice_id))


async def invoice_document(state: State, request: Request, invoice_id: str) -> dict[str, Any]:
    """The invoice's JSON document, for a key allowed to read its customer's (else 403)."""
    db = state.services.db
    ensure_owner(request, await db.read(lambda conn: billing.invoice_owner(conn, invoice_id)),
                 f"invoice {invoice_id}")
    return await db.read(lambda conn: billing.invoice(conn, invoice_id))


async def rendered(media: str, document: dict[str, Any]) -> Response[Any]:
    """The invoice document in the negotiated media type (see api.renderings); a PDF in a worker
    thread (1,000 lines took about 1.2 s, and still take 0.2-0.3 s, which the event loop's other
    requests would wait)."""
    if media == renderings.HTML:
        return Template("documents/invoice.html", context=renderings.html_context(document),
                        headers=renderings.HTML_HEADERS, media_type=MediaType.HTML)
    kept_by_none = renderings.NOT_KEPT
    if media == renderings.PDF:
        return Response(await anyio.to_thread.run_sync(renderings.pdf, document), media_type=media, headers={
            "Content-Disposition": f'inline; filename="{renderings.filename(document, "pdf")}"', **kept_by_none})
    if media == renderings.CSV:
        return Response(renderings.csv_text(document), media_type="text/csv", headers={  # Litestar adds the charset
            "Content-Disposition": f'attachment; filename="{renderings.filename(document, "csv")}"', **kept_by_none})
    return Response(document, media_type=media)


@post("/v1/invoices/{invoice_id:str}/payments", guards=[require("admin")], tags=["invoices"], status_code=201,
      **documented(404, 409, body=True, replay=PaymentResponse, idempotent=True))
async def pay_invoice(state: State, request: Request, invoice_id: FromPath[str],
                      data: PayInvoiceBody) -> Response[PaymentResponse]:
    """Record a payment of the invoice's amount due: cash in, the customer's receivable down, as
    one balanced entry. Idempotent by `reference` (and by Idempotency-Key); more than is still
    due is `overpayment`, another currency `currency_mismatch`, a fraction of the currency's minor
    unit ("4.5" yen) `invalid_amount`; paid in full, `invoice.paid` goes to the outbox."""
    data = shaped(data, PayInvoiceRequest)
    # the body as sent before the invoice it names (422 before 404); past 9 decimals, told in its currency
    amount = cash_in(data.amount, "amount", data.currency) if data.currency else await cash_of(
        data.amount, "amount", state.services.db, invoice_id=invoice_id, customers=principal_of(request).customers)
    check_reference(data.reference)  # tokentill's own references (topup:, rerate:, ...), as the payment checks
    db = state.services.db
    customer_id = await db.read(lambda conn: billing.invoice_owner(conn, invoice_id))
    ensure_owner(request, customer_id, f"invoice {invoice_id}")
    view = await db.read(lambda conn: billing.invoice(conn, invoice_id))
    command = PayInvoice(customer_id=customer_id, invoice_id=invoice_id, amount=amount,
                         currency=data.currency or view["currency"], reference=data.reference,
                         idem=idempotency(request, data))
    return respond(request, await state.services.wallets.submit(command), PAID)


@post("/v1/billing/close", guards=[require()], tags=["invoices"], status_code=200,
      **documented(404, body=True, ok=Closed))
async def close_periods(state: State, data: CloseBody) -> dict[str, Any]:
    """Close every billing period due by `until` (default: now), or only `customer_id`'s, and
    finalize its invoice, as the scheduled job does; safe to run while the job runs. An `until`
    in the future is refused (422 `validation_error`) unless `early` is true; a `customer_id`
    that names no customer is 404 `not_found`."""
    data = shaped(data, CloseRequest)
    wallets = state.services.wallets
    if data.customer_id is not None:  # a mistyped id is not_found, not "nothing was due"
        await state.services.db.read(lambda conn: billing.require_customer(conn, data.customer_id))
    now = wallets.clock()
    until = billing.close_clock(time_in(data.until, "until"), now, early=data.early)
    refused: list[tuple[str, str]] = []
    closed = await billing.close_due(state.services.db, until or now,
                                     engine=wallets.engine,
                                     customers=None if data.customer_id is None else [data.customer_id],
                                     failures=refused, written=now)
    return {"closed": [{"invoice_id": c.invoice_id, "number": c.number, "customer_id": c.customer_id,
                        "period": c.period, "total": money(c.total, c.currency),
                        "amount_due": money(c.amount_due, c.currency)}
                       for c in closed],
            # (a customer refused is tried again in each round of the close: named once)
            "not_closed": [{"customer_id": customer, "reason": reason} for customer, reason in dict.fromkeys(refused)]}
