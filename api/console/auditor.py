"""Auditor pages: the trial balance, a charge traced from its request id to its postings, and
verify with each of its checks. Each calls what the API's audit routes call."""
from __future__ import annotations

from datetime import date
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import Template

from api.auth import ensure_customer
from api.console.web import PREFIX, allow, render, viewer
from api.errors import ApiError
from api.routes import charges, cursors, journal
from api.routes.audit import trial_balance_report, verify_report
from api.routes.wire import check_patterns
from pricing.money import format_money, parse_amount
from wallets import reports
from wallets.chart import ASSET_SCALE, OPEN_STATUSES
from wallets.errors import NotFoundError, WalletValidationError

AUDITOR = ("auditor",)
JOURNAL_PAGE = 50
TRIAL_BALANCE_PAGE = 200


@get(f"{PREFIX}/audit", guards=[allow(*AUDITOR)], name="console-trial-balance")
async def trial_balance_page(state: State, request: Request,
                             currency: Annotated[str | None, QueryParameter(name="currency", max_length=16)] = None,
                             cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None
                             ) -> Template:
    """The trial balance in one currency (the one asked, else USD, else the first there is), with
    a link to each other currency of the customers the key sees; its accounts a page at a time
    by code (every lot is an account), under the totals of them all."""
    visible = viewer(request).visible()
    held = await state.services.db.read(lambda conn: reports.currencies(conn, visible))
    chosen = currency or ("USD" if "USD" in held or not held else held[0])
    report = await trial_balance_report(state.services, visible, chosen if currency or held else None)
    after = None
    if cursor:
        position = cursors.decode_position(cursor, "console-trial-balance", [report.currency])
        if len(position) != 1 or not isinstance(position[0], str):
            raise cursors.invalid("not a cursor of this listing")
        after = position[0]
    accounts = sorted((a for a in report.accounts if after is None or a.account > after), key=lambda a: a.account)
    shown = accounts[:TRIAL_BALANCE_PAGE]
    more = None
    if len(accounts) > TRIAL_BALANCE_PAGE:
        more = urlencode({"currency": report.currency, "cursor": cursors.encode_position(
            "console-trial-balance", [report.currency], [shown[-1].account])})
    return render(request, "audit/trial_balance.html", report=report, accounts=shown, next_query=more,
                  first=after is None, currencies=held, section="trial-balance")


Text = Annotated[str | None, QueryParameter(max_length=200)]


@get(f"{PREFIX}/audit/trace", guards=[allow(*AUDITOR)], name="console-trace")
async def trace_page(state: State, request: Request,
                     request_id: Annotated[str | None, QueryParameter(name="request_id", max_length=200)] = None,
                     customer_id: Text = None,
                     ) -> Template:
    """`GET /v1/audit/charges/{request_id}` as a page: the request, its usage and prices, its entries.
    Its customer_id is held to the route's rule (a customer's id: charges.get_charge_trace's pattern)."""
    trace = None
    form = {"request_id": request_id or "", "customer_id": customer_id or ""}
    if request_id:
        customers = (customer_id,) if customer_id else viewer(request).visible()
        try:
            check_patterns(charges.get_charge_trace, {"customer_id": customer_id})
            if customer_id:
                ensure_customer(request, customer_id)
            now = state.services.wallets.clock()
            trace = await state.services.db.read(lambda conn: reports.charge_trace(conn, request_id, customers, now))
        except WalletValidationError as exc:  # said beside the form as it was sent
            return _refused(request, "audit/trace.html", exc.context["fields"], 422, trace=None, **form,
                            section="trace")
        except NotFoundError as exc:
            return _refused(request, "audit/trace.html", [{"field": "request_id", "message": exc.detail}], 404,
                            trace=None, **form, section="trace")
    return render(request, "audit/trace.html", trace=trace, still_held=_still_held(trace), **form, section="trace")


def _still_held(trace: dict[str, Any] | None) -> str | None:
    """What a traced reservation holds now: its hold less what it captured and released (none
    once settled or released). One past its expires_at reads `expired` before the expiry job gives
    its hold back (3ec7ad7): until then it still holds what it did."""
    if trace is None or trace["kind"] != "reservation":
        return None
    r = trace["reservation"]
    if r["status"] not in OPEN_STATUSES and r["status"] != "expired":
        return format_money(0, r["currency"])
    units = [parse_amount(r[k], ASSET_SCALE) for k in ("amount", "captured", "released")]
    return format_money(max(0, units[0] - units[1] - units[2]), r["currency"])


@get(f"{PREFIX}/audit/verify", guards=[allow(*AUDITOR)], name="console-verify")
async def verify_form(request: Request) -> Template:
    return render(request, "audit/verify.html", report=None, section="verify")


@post(f"{PREFIX}/audit/verify", guards=[allow(*AUDITOR)], status_code=200, name="console-verify-post")
async def verify_page(state: State, request: Request) -> Template:
    """Every integrity check on one snapshot, as `POST /v1/audit/verify` runs them."""
    report = await verify_report(state.services, viewer(request))
    return render(request, "audit/verify.html", report=report, section="verify")


def day_start(value: str | None, field: str) -> str | None:
    """A date from a form as the API's RFC 3339 time (UTC midnight); the API validates it."""
    if not value:
        return None
    try:
        valid = len(value) == 10 and date.fromisoformat(value) is not None
    except ValueError:
        valid = False
    if not valid:
        raise WalletValidationError(field, "a date, YYYY-MM-DD")
    return f"{value}T00:00:00Z"


@get(f"{PREFIX}/audit/journal", guards=[allow(*AUDITOR)], name="console-journal")
async def journal_page(state: State, request: Request,
                       start: Annotated[str | None, QueryParameter(name="from", max_length=10)] = None,
                       end: Annotated[str | None, QueryParameter(name="to", max_length=10)] = None,
                       customer: Text = None, account: Text = None, kind: Text = None, request_id: Text = None,
                       cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None
                       ) -> Template:
    """`GET /v1/journal` as a page (the route's own function: same filters, same cursor pages)."""
    filters = {"from": start or "", "to": end or "", "customer": customer or "", "account": account or "",
               "kind": kind or "", "request_id": request_id or ""}
    try:
        # the request guard's check of the route's patterns, which a call of its .fn goes past
        check_patterns(journal.get_journal, {"customer": customer, "kind": kind})
        page = await journal.get_journal.fn(
            state=state, request=request, start=day_start(start, "from"), end=day_start(end, "to"),
            customer=customer or None, account=account or None, kind=kind or None, request_id=request_id or None,
            cursor=cursor or None, limit=JOURNAL_PAGE)
    except WalletValidationError as exc:  # said beside the form as it was sent
        return _refused(request, "audit/journal.html", exc.context["fields"], 422, filters=filters,
                        section="journal")
    more = None if page.next_cursor is None else urlencode({**filters, "cursor": page.next_cursor})
    return render(request, "audit/journal.html", page=page, filters=filters, next_query=more,
                  first=cursor is None, section="journal")


def _refused(request: Request, template: str, problems: list[dict[str, str]], status: int,
             **context: Any) -> Template:
    """A filter form sent back as it was, with the API's refusal of it."""
    return render(request, template, status=status, refused=problems, **context)


@get(f"{PREFIX}/audit/statement", guards=[allow(*AUDITOR)], name="console-statement")
async def statement_page(state: State, request: Request,
                         account: Annotated[str | None, QueryParameter(name="account", max_length=200)] = None,
                         start: Annotated[str | None, QueryParameter(name="from", max_length=10)] = None,
                         end: Annotated[str | None, QueryParameter(name="to", max_length=10)] = None,
                         cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None
                         ) -> Template:
    """`GET /v1/accounts/{code}/statement` as a page: opening balance, postings with the running
    balance, closing balance."""
    filters = {"account": account or "", "from": start or "", "to": end or ""}
    statement = None
    if account:
        try:
            statement = await journal.get_statement.fn(
                state=state, request=request, code=account, start=day_start(start, "from"),
                end=day_start(end, "to"), cursor=cursor or None, limit=JOURNAL_PAGE)
        except WalletValidationError as exc:
            return _refused(request, "audit/statement.html", exc.context["fields"], 422, filters=filters,
                            section="statement")
        except ApiError as exc:
            if exc.code != "not_found":
                raise
            return _refused(request, "audit/statement.html", [{"field": "account", "message": exc.detail}],
                            exc.status, filters=filters, section="statement")
    more = None if statement is None or statement.next_cursor is None else urlencode(
        {**filters, "cursor": statement.next_cursor})
    return render(request, "audit/statement.html", statement=statement, filters=filters, next_query=more,
                  first_query=None if cursor is None else urlencode(filters), section="statement")
