"""Invoice pages: a customer's finalized invoices and the upcoming one, and one invoice as a
printable page. Each reads through the invoice routes' own functions (`wallets.billing`), so the
page is the API's document, figure for figure."""
from __future__ import annotations

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Template

from api.console.web import PREFIX, allow, render
from api.routes import invoices
from api.routes.customers import customer_response

READERS = invoices.READERS


@get(f"{PREFIX}/customers/{{customer_id:str}}/invoices", guards=[allow(*READERS)], name="console-invoices")
async def invoices_page(state: State, request: Request, customer_id: FromPath[str]) -> Template:
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    listed = await invoices.list_invoices.fn(state=state, customer_id=customer_id)
    upcoming = await invoices.upcoming_document(state, customer_id)
    return render(request, "customer/invoices.html", customer=customer, invoices=listed["invoices"],
                  upcoming=upcoming, section="invoices")


@get(f"{PREFIX}/customers/{{customer_id:str}}/invoices/upcoming", guards=[allow(*READERS)],
     name="console-invoice-upcoming")
async def upcoming_page(state: State, request: Request, customer_id: FromPath[str]) -> Template:
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    document = await invoices.upcoming_document(state, customer_id)
    return render(request, "customer/invoice.html", customer=customer, invoice=document, section="invoices")


@get(f"{PREFIX}/invoices/{{invoice_id:str}}", guards=[allow(*READERS)], name="console-invoice")
async def invoice_page(state: State, request: Request, invoice_id: FromPath[str]) -> Template:
    """One finalized invoice; another customer's is 403, as `GET /v1/invoices/{id}` answers it."""
    document = await invoices.invoice_document(state, request, invoice_id)
    customer = customer_response(await state.services.wallets.get_customer(document["customer_id"]))
    return render(request, "customer/invoice.html", customer=customer, invoice=document, section="invoices")
