"""Invoice pages: a customer's finalized invoices and the upcoming one, one invoice line by
line, and its renderings (PDF, printable HTML, CSV) to download. Documents and renderings come
from the invoice routes' own `invoice_document`, `upcoming_document` and `rendered`, so every
figure is the API's (another customer's invoice is 403, as the API answers it)."""
from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.response import Template

from api import renderings
from api.auth import ensure_owner
from api.console.web import PREFIX, allow, render
from api.errors import ApiError
from api.routes import cursors, invoices, receivables
from api.routes.customers import customer_response
from api.routes.wire import check_patterns
from wallets import billing, rerating
from wallets.errors import NotFoundError, WalletValidationError

READERS = invoices.READERS
INVOICES_PAGE = 100  # finalized invoices a page, newest first
FORMATS = {"pdf": renderings.PDF, "html": renderings.HTML, "csv": renderings.CSV}


async def _download(document: dict[str, Any], fmt: str) -> Response[Any]:
    if fmt not in FORMATS:
        raise NotFoundError(f"no {fmt} rendering of an invoice: pdf, html or csv")
    return await invoices.rendered(FORMATS[fmt], document)


@get(f"{PREFIX}/customers/{{customer_id:str}}/invoices", guards=[allow(*READERS)], name="console-invoices")
async def invoices_page(state: State, request: Request, customer_id: FromPath[str],
                        cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None
                        ) -> Template:
    """The period so far and the finalized invoices, newest first, a page at a time (keyset pages,
    as the reservations page: an invoice finalized since is ahead of the first page, none twice)."""
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    after = cursors.time_and_id(cursors.decode_position(cursor, "console-invoices", [customer_id])) if cursor else None
    listed, more = await state.services.db.read(
        lambda conn: billing.invoice_page(conn, customer_id, after, INVOICES_PAGE, newest_first=True))
    next_query = None if more is None else urlencode({"cursor": cursors.encode_position(
        "console-invoices", [customer_id], [more[0].isoformat(), more[1]])})
    return render(request, "customer/invoices.html", customer=customer, invoices=listed["invoices"],
                  upcoming=await invoices.upcoming_document(state, customer_id), next_query=next_query,
                  first=after is None, section="invoices")


@get(f"{PREFIX}/customers/{{customer_id:str}}/invoices/upcoming", guards=[allow(*READERS)],
     name="console-invoice-upcoming")
async def upcoming_page(state: State, request: Request, customer_id: FromPath[str]) -> Template:
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    document = await invoices.upcoming_document(state, customer_id)
    return render(request, "customer/invoice.html", customer=customer, invoice=document,
                  downloads=f"{PREFIX}/customers/{customer_id}/invoices/upcoming", section="invoices")


@get(f"{PREFIX}/customers/{{customer_id:str}}/invoices/upcoming/{{fmt:str}}", guards=[allow(*READERS)],
     name="console-invoice-upcoming-download")
async def upcoming_download(state: State, customer_id: FromPath[str], fmt: FromPath[str]) -> Response[Any]:
    return await _download(await invoices.upcoming_document(state, customer_id), fmt)


@get(f"{PREFIX}/invoices/{{invoice_id:str}}", guards=[allow(*READERS)], name="console-invoice")
async def invoice_page(state: State, request: Request, invoice_id: FromPath[str]) -> Template:
    document = await invoices.invoice_document(state, request, invoice_id)
    customer = customer_response(await state.services.wallets.get_customer(document["customer_id"]))
    return render(request, "customer/invoice.html", customer=customer, invoice=document,
                  downloads=f"{PREFIX}/invoices/{invoice_id}", section="invoices")


@get(f"{PREFIX}/credit-notes/{{credit_note_id:str}}", guards=[allow(*READERS)], name="console-credit-note")
async def credit_note_page(state: State, request: Request, credit_note_id: FromPath[str]) -> Template:
    """A credit (or debit) note, line by line, beside a link to the invoice it corrects (another
    customer's is 403, an unknown one 404, as GET /v1/credit-notes/{id} answers)."""
    db = state.services.db
    ensure_owner(request, await db.read(lambda conn: rerating.credit_note_owner(conn, credit_note_id)),
                 f"credit note {credit_note_id}")
    note = await db.read(lambda conn: rerating.credit_note(conn, credit_note_id))
    customer = customer_response(await state.services.wallets.get_customer(note["customer_id"]))
    return render(request, "customer/credit_note.html", customer=customer, note=note, section="invoices")


@get(f"{PREFIX}/invoices/{{invoice_id:str}}/{{fmt:str}}", guards=[allow(*READERS)], name="console-invoice-download")
async def invoice_download(state: State, request: Request, invoice_id: FromPath[str], fmt: FromPath[str]
                           ) -> Response[Any]:
    """The invoice as a PDF, a printable page or its lines as CSV: the API's renderings."""
    return await _download(await invoices.invoice_document(state, request, invoice_id), fmt)


@get(f"{PREFIX}/receivables", guards=[allow()], name="console-receivables")
async def receivables_page(
    state: State, request: Request,
    at: Annotated[str | None, QueryParameter(name="at", max_length=64)] = None,
    currency: Annotated[str | None, QueryParameter(name="currency", max_length=16)] = None,
    cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None,
) -> Template:
    """The receivables ageing, a page of customers at a time: the API's own report."""
    at, currency = at or None, currency or None  # the form's empty fields
    try:
        # the request guard's check of the route's patterns, which a call of its .fn goes past
        check_patterns(receivables.get_ageing, {"currency": currency})
        report = await receivables.get_ageing.fn(state=state, request=request, at=at, currency=currency,
                                                 customer=None, cursor=cursor, limit=receivables.PAGE)
    except WalletValidationError as exc:  # said beside the form as it was sent
        return render(request, "receivables.html", status=422, report=None, at=at, currency=currency,
                      refused=exc.context["fields"], section="receivables")
    except ApiError as exc:
        if exc.code != "not_found":
            raise
        return render(request, "receivables.html", status=exc.status, report=None, at=at, currency=currency,
                      refused=[{"field": "currency", "message": exc.detail}], section="receivables")
    more = report.next_cursor and urlencode(
        {k: v for k, v in (("at", at), ("currency", currency), ("cursor", report.next_cursor)) if v})
    return render(request, "receivables.html", report=report, at=at, currency=report.currency, next_query=more,
                  section="receivables")
