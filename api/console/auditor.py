"""Auditor pages: the trial balance, a charge traced from its request id to its postings, and
verify with each of its checks. Each calls what the API's audit routes call."""
from __future__ import annotations

from typing import Annotated

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import Template

from api.auth import ensure_customer
from api.console.web import PREFIX, allow, render, viewer
from api.routes.audit import trial_balance_report, verify_report
from wallets import reports

AUDITOR = ("auditor",)


@get(f"{PREFIX}/audit", guards=[allow(*AUDITOR)], name="console-trial-balance")
async def trial_balance_page(state: State, request: Request,
                             currency: Annotated[str | None, QueryParameter(name="currency", max_length=16)] = None
                             ) -> Template:
    report = await trial_balance_report(state.services, viewer(request).visible(), currency or None)
    return render(request, "audit/trial_balance.html", report=report, section="trial-balance")


@get(f"{PREFIX}/audit/trace", guards=[allow(*AUDITOR)], name="console-trace")
async def trace_page(state: State, request: Request,
                     request_id: Annotated[str | None, QueryParameter(name="request_id", max_length=200)] = None,
                     customer_id: Annotated[str | None, QueryParameter(name="customer_id", max_length=128)] = None,
                     ) -> Template:
    """`GET /v1/audit/charges/{request_id}` as a page: the request, its usage and prices, its entries."""
    trace = None
    if request_id:
        if customer_id:
            ensure_customer(request, customer_id)
        customers = (customer_id,) if customer_id else viewer(request).visible()
        trace = await state.services.db.read(lambda conn: reports.charge_trace(conn, request_id, customers))
    return render(request, "audit/trace.html", trace=trace, request_id=request_id or "",
                  customer_id=customer_id or "", section="trace")


@get(f"{PREFIX}/audit/verify", guards=[allow(*AUDITOR)], name="console-verify")
async def verify_form(request: Request) -> Template:
    return render(request, "audit/verify.html", report=None, section="verify")


@post(f"{PREFIX}/audit/verify", guards=[allow(*AUDITOR)], status_code=200, name="console-verify-post")
async def verify_page(state: State, request: Request) -> Template:
    """Every integrity check on one snapshot, as `POST /v1/audit/verify` runs them."""
    report = await verify_report(state.services, viewer(request))
    return render(request, "audit/verify.html", report=report, section="verify")
