"""Customer pages: the wallet and its lots, usage over time with a chart, open reservations, and
the top-up an admin makes for a customer. Reads go through the same service functions as the
API (`WalletService`, `wallets.reports`), and render the API's own response values."""
from __future__ import annotations

import dataclasses
import secrets
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template

from api.console.web import PREFIX, allow, render, viewer
from api.renderings import bidi_closed
from api.routes import cursors
from api.routes.budgets import budget_response
from api.routes.customers import CREDITED, READERS, customer_response, wallet_response
from api.routes.wire import MAX_AMOUNT, amount_in, answered, body_hash, time_in, unstorable
from ledger.errors import LedgerError
from pricing.money import CURRENCY_MINOR_UNITS, format_money, parse_amount
from pricing.text import text_problem
from wallets import reports
from wallets.chart import ASSET_SCALE
from wallets.commands import TOPUP_PRIORITY, TopUp
from wallets.core.idempotency import IdemKey
from wallets.errors import WalletValidationError
from wallets.model import consumption_position

USAGE_GROUPS = ["day", "model", "token_type"]
RESERVATIONS_PAGE = 100
WALLET_HOLDS = 10  # the latest, on the wallet page
WALLET_LOTS = 100  # a page of credit lots
REFERENCE_MAX = 500  # characters, as TopUpRequest.reference
TOP_UP_LABELS = {"amount": "Amount", "reference": "Payment reference", "priority": "Priority",
                 "expires_on": "Expires on", "idempotency_key": "Form key"}  # a refusal names these


@get(f"{PREFIX}/customers/{{customer_id:str}}", guards=[allow(*READERS)], name="console-wallet")
async def wallet_page(state: State, request: Request, customer_id: FromPath[str],
                      credited: Annotated[str | None, QueryParameter(name="credited", max_length=100)] = None,
                      lots: Annotated[str | None, QueryParameter(name="lots", max_length=4096)] = None
                      ) -> Template:
    """The balances, the credit lots in the order they are spent (a page at a time: `lots` is
    the cursor of the next) and the latest open reservations."""
    wallets = state.services.wallets
    customer = customer_response(await wallets.get_customer(customer_id))
    view = await wallets.wallet(customer_id)
    after = _lots_after(lots, customer_id) if lots else None
    listed = [lot for lot in view.grants if after is None or consumption_position(lot) > after]
    shown = listed[:WALLET_LOTS]
    more = None
    if len(listed) > WALLET_LOTS:
        more = urlencode({"lots": cursors.encode_position("console-lots", [customer_id],
                                                          consumption_position(shown[-1]))})
    wallet = wallet_response(dataclasses.replace(view, grants=tuple(shown)))
    holds = await state.services.db.read(lambda conn: reports.open_reservations(conn, customer_id, WALLET_HOLDS))
    if credited and not await state.services.db.read(lambda conn: reports.is_top_up(conn, customer_id, credited)):
        credited = None  # confirms only a top-up of this customer's (its lot may be spent already)
    return render(request, "customer/wallet.html", customer=customer, wallet=wallet, holds=holds,
                  credited=credited, lots_next=more, lots_first=after is None, section="wallet")


def _lots_after(cursor: str, customer_id: str) -> list[int | str]:
    """The consumption position a next page of lots starts after (400 `invalid_cursor` for any other)."""
    position = cursors.decode_position(cursor, "console-lots", [customer_id])
    if not (len(position) == 5 and all(type(v) is int for v in position[:4]) and isinstance(position[4], str)):
        raise cursors.invalid("not a cursor of this listing")
    return position


def _after(cursor: str | None, customer_id: str) -> tuple[datetime, str] | None:
    """The created_at and id a next page's cursor names (400 `invalid_cursor` for any other)."""
    if cursor is None:
        return None
    return cursors.time_and_id(cursors.decode_position(cursor, "console-reservations", [customer_id]))


@get(f"{PREFIX}/customers/{{customer_id:str}}/reservations", guards=[allow(*READERS)],
     name="console-reservations")
async def reservations_page(state: State, request: Request, customer_id: FromPath[str],
                            cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None
                            ) -> Template:
    """Every open reservation, newest first, a page at a time (keyset pages: a reservation that
    closes between pages leaves the listing, one opened since is ahead of the first page)."""
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    after = _after(cursor or None, customer_id)
    rows = await state.services.db.read(
        lambda conn: reports.open_reservations(conn, customer_id, RESERVATIONS_PAGE + 1, after))
    holds, more = rows[:RESERVATIONS_PAGE], len(rows) > RESERVATIONS_PAGE
    next_query = urlencode({"cursor": cursors.encode_position(
        "console-reservations", [customer_id], [holds[-1]["created_at"], holds[-1]["id"]])}) if more else None
    return render(request, "customer/reservations.html", customer=customer, holds=holds, next_query=next_query,
                  first=after is None, section="reservations")


def _day(value: str | None, field: str, default: date) -> date:
    """A date from a form, in the years the API's times take (1000 to 9998)."""
    if not value:
        return default
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise WalletValidationError(field, "a date, YYYY-MM-DD") from None
    if not 1000 <= day.year <= 9998:
        raise WalletValidationError(field, "a date in the years 1000 to 9998")
    return day


def usage_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """The days shown, both included: this month so far unless the form says otherwise."""
    first = _day(start, "from", today.replace(day=1))
    last = _day(end, "to", today)
    if last < first:
        raise WalletValidationError("to", "on or after the first day")
    if (last - first).days > 731:
        raise WalletValidationError("from", "at most two years at once")
    return first, last


def _type_label(token_type: str | None) -> str:
    return "free allowance" if token_type is None else token_type  # its lines have no token type


def chart_of(rows: list[dict[str, Any]], first: date, last: date, currency: str) -> dict[str, Any]:
    """The chart's data: one series per model and token type, its amount per day (exact decimal
    strings, as the usage API gives them; days without usage are "0"), and the totals. Discounts
    and free allowances are negative; a free allowance's lines have no token type (None)."""
    days = [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]
    index = {day: n for n, day in enumerate(days)}
    series: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0] * len(days))
    totals: dict[tuple[str, str | None], list[int]] = defaultdict(lambda: [0, 0, 0])
    for row in rows:
        key = (row["model"], row["token_type"])
        units = parse_amount(row["amount"], ASSET_SCALE, allow_negative=True)
        series[key][index[row["day"]]] += units
        totals[key][0] += row["quantity"]
        totals[key][1] += units
        totals[key][2] += row["charges"]
    def fmt(units: int) -> str:
        return format_money(units, currency)

    def order(item: tuple[tuple[str, str | None], Any]) -> tuple[str, str]:
        return item[0][0] or "", item[0][1] or ""

    return {
        "days": days,
        "series": [{"model": m, "token_type": t, "label": f"{bidi_closed(str(m))} · {_type_label(t)}",
                    "amounts": [fmt(u) for u in values]} for (m, t), values in sorted(series.items(), key=order)],
        "totals": [{"model": m, "token_type": t, "type_label": _type_label(t), "quantity": q, "amount": fmt(a),
                    "charges": c} for (m, t), (q, a, c) in sorted(totals.items(), key=order)],
        "total": fmt(sum(a for _, a, _ in totals.values())),
    }


@get(f"{PREFIX}/customers/{{customer_id:str}}/usage", guards=[allow(*READERS)], name="console-usage")
async def usage_page(state: State, request: Request, customer_id: FromPath[str],
                     start: Annotated[str | None, QueryParameter(name="from", max_length=10)] = None,
                     end: Annotated[str | None, QueryParameter(name="to", max_length=10)] = None) -> Template:
    """Usage by day, model and token type over a range of days: the usage API's report
    (`group_by=day,model,token_type`), drawn as a chart and listed as a table."""
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    zone = ZoneInfo(customer.time_zone)  # its days, as its invoices count its periods
    try:
        first, last = usage_range(start, end, datetime.now(zone).date())
    except WalletValidationError as exc:  # said in the usage region, which the form's htmx swaps in
        return render(request, "customer/usage.html", status=422, customer=customer, start=start or "",
                      end=end or "", refused=exc.context.get("fields") or [], chart=None, section="usage")
    lower = datetime.combine(first, datetime.min.time(), zone).astimezone(UTC)
    upper = datetime.combine(last + timedelta(days=1), datetime.min.time(), zone).astimezone(UTC)
    report = await state.services.db.read(
        lambda conn: reports.usage(conn, customer_id, lower, upper, USAGE_GROUPS, customer.time_zone))
    api_query = {"from": reports.when(lower), "to": reports.when(upper), "group_by": ",".join(USAGE_GROUPS)}
    if customer.time_zone != "UTC":
        api_query["time_zone"] = customer.time_zone
    return render(request, "customer/usage.html", customer=customer, first=first, last=last,
                  start=first.isoformat(), end=last.isoformat(), api_query=api_query,
                  chart=chart_of(report["rows"], first, last, customer.currency), section="usage")


@get(f"{PREFIX}/customers/{{customer_id:str}}/budgets", guards=[allow(*READERS)], name="console-budgets")
async def budgets_page(state: State, request: Request, customer_id: FromPath[str]) -> Template:
    """The customer's live budgets with the current window's use, as `GET /v1/budgets` reads them."""
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    views, _ = await state.services.wallets.budgets.list([customer_id])  # at most the cap: one page
    budgets = [budget_response(v) for v in views]
    return render(request, "customer/budgets.html", customer=customer, budgets=budgets, section="budgets")


@get(f"{PREFIX}/customers/{{customer_id:str}}/top-up", guards=[allow()], name="console-top-up")
async def top_up_form(state: State, request: Request, customer_id: FromPath[str]) -> Template:
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    return _top_up_form(request, customer, {"priority": str(TOPUP_PRIORITY)}, {})


def _top_up_form(request: Request, customer: Any, form: dict[str, str], errors: dict[str, str],
                 status: int = 200) -> Template:
    """The form, with a new one-time key: a refused form is not kept under its key (README,
    Idempotency), but a new key keeps a corrected form apart from whatever the old one holds."""
    return render(request, "customer/top_up.html", status=status, customer=customer, form=form, errors=errors,
                  idempotency_key=secrets.token_urlsafe(16), section="top-up", labels=TOP_UP_LABELS,
                  amount_example=_example(customer.currency),
                  amount_decimals=_cash_decimals(customer.currency))


def _example(currency: str) -> str:
    return format_money(100 * 10**ASSET_SCALE, currency)  # JPY 100, KWD 100.000


def _cash_decimals(currency: str) -> str:
    """The decimals a top-up may have: cash, whole minor units (an asset the ISO table does not
    list keeps its atomic unit)."""
    decimals = CURRENCY_MINOR_UNITS.get(currency, ASSET_SCALE)
    return "no decimals" if decimals == 0 else f"at most {decimals} decimals"


def _top_up_command(request: Request, customer_id: str, currency: str, form: dict[str, str]) -> TopUp:
    """The form as the API's TopUp command; a field the API would refuse is refused alike (a NUL
    before the wallet's batch, which PostgreSQL would refuse with the batch's other commands)."""
    refused = unstorable(form)
    if refused is not None:
        raise WalletValidationError(*refused)
    given = form.get("priority") or str(TOPUP_PRIORITY)
    if not (len(given) <= 3 and given.isascii() and given.isdigit() and int(given) <= 100):  # not "٧", "+7", "7_0"
        raise WalletValidationError("priority", "a whole number from 0 to 100")
    priority = int(given)
    expires = form.get("expires_on") or None
    expires_at = None if expires is None else time_in(f"{_day(expires, 'expires_on', date.today())}T00:00:00Z",
                                                       "expires_on")
    key = form.get("idempotency_key", "")
    if not 8 <= len(key) <= 100 or text_problem(key) is not None:  # the form's own: token_urlsafe
        raise WalletValidationError("idempotency_key", "reload the form")
    reference = form.get("reference", "")
    if len(reference) > REFERENCE_MAX:  # as the API refuses it: never recorded cut short
        raise WalletValidationError("reference", f"at most {REFERENCE_MAX} characters")
    problem = text_problem(reference)  # the rule of every free text, as the API refuses it
    if problem is not None:
        raise WalletValidationError("reference", problem)
    body = {k: form.get(k, "") for k in ("amount", "reference", "priority", "expires_on")}
    try:
        amount = amount_in(form.get("amount", ""), "amount")
    except WalletValidationError:  # said in the currency's terms, as the hint says it (cash: whole minor units)
        raise WalletValidationError("amount", f"an amount more than 0 and at most {MAX_AMOUNT // 10**ASSET_SCALE}, "
                                    f"such as {_example(currency)}, {_cash_decimals(currency)}") from None
    return TopUp(customer_id=customer_id, amount=amount,
                 reference=reference, priority=priority, expires_at=expires_at,
                 idem=IdemKey(f"console:{viewer(request).key_id}", key, body_hash(request, body)))


@post(f"{PREFIX}/customers/{{customer_id:str}}/top-up", guards=[allow()], name="console-top-up-post")
async def top_up(state: State, request: Request, customer_id: FromPath[str]) -> Response:
    """Paid credit for the customer, as `POST /v1/customers/{id}/topups` does it; the form's
    one-time key makes a second submission (a double click, a reload) a replay, not a second
    top-up."""
    customer = customer_response(await state.services.wallets.get_customer(customer_id))
    form = {k: v for k, v in (await request.form()).items() if isinstance(v, str) and k != "_csrf_token"}
    try:
        result = await state.services.wallets.submit(_top_up_command(request, customer_id, customer.currency, form))
    except LedgerError as exc:
        return _refused(request, customer, form, exc.context.get("fields"), exc.detail, 422)
    # the API's answer, fresh or kept: the same form again answers as the first did, a refusal included
    status, body, _ = answered(request, result, CREDITED)
    answer = msgspec.json.decode(body)
    if status >= 400:
        return _refused(request, customer, form, answer.get("fields"), str(answer.get("detail", "")), status)
    grant = answer["grant_id"]
    return Redirect(f"{PREFIX}/customers/{customer_id}?credited={grant}", status_code=303)


def _refused(request: Request, customer: Any, form: dict[str, str], fields: Any, detail: str,
             status: int) -> Template:
    """The form again, each refusal under the form's own field (the command's `expires_at` is the
    form's `expires_on`)."""
    fields = fields or [{"field": "amount", "message": detail}]
    errors = {("expires_on" if f["field"] == "expires_at" else f["field"]): f["message"] for f in fields}
    return _top_up_form(request, customer, form, errors, status=status)
