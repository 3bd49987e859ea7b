"""Audit endpoints: the trial balance and `verify`, for auditors and admins."""
from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State

from api.auth import Principal, principal_of, require
from api.errors import ApiError, documented
from api.routes.formats import CurrencyQuery
from api.routes.wire import bound_in, time_out, time_param
from ledger.audit import trial_balance
from ledger.statements import trial_balance_at
from pricing.money import DEFAULT_SCALE, format_money
from wallets import reports
from wallets.audit import full_verify

if TYPE_CHECKING:
    from api.app import Services


class TrialBalanceAccount(msgspec.Struct):
    account: str
    debits: str
    credits: str
    balance: str


class TrialBalanceResponse(msgspec.Struct, omit_defaults=True):
    """`scope` "ledger": every account, and `balanced` says whether debits equal credits.
    `scope` "customers" (a key limited to customers): only those `customers`' accounts; the
    platform accounts on the other side of their entries are shared with every customer and
    left out, so the totals need not agree and there is no `balanced`."""

    currency: str
    scope: Literal["ledger", "customers"]
    accounts: list[TrialBalanceAccount]
    total_debits: str
    total_credits: str
    currencies: list[str]  # each one this trial balance may be asked in: always there, [] when none (was omitted)
    balanced: bool | None = None
    customers: list[str] | None = None
    at: str | None = None


class CheckResponse(msgspec.Struct):
    name: str
    ok: bool
    detail: str
    problems: list[str]


class VerifyResponse(msgspec.Struct):
    ok: bool
    checks: list[CheckResponse]


@get("/v1/audit/trial-balance", guards=[require("auditor")], tags=["audit"], **documented(404, 422))
async def get_trial_balance(
    state: State, request: Request,
    currency: CurrencyQuery = None,
    at: Annotated[str | None, time_param("at")] = None,
) -> TrialBalanceResponse:
    """Debits, credits and balance of every account in one currency; totals must be equal. For a
    key limited to customers, their accounts only (`scope` "customers"), without `balanced`.
    With `at`, as of that instant: computed from the postings of entries that occurred before
    it, rather than from the cached balances. A limited key asks in its customers' currencies
    only: another is 404, as a currency no customer holds."""
    return await trial_balance_report(state.services, principal_of(request).visible(), currency,
                                      bound_in(at, "at"))


async def trial_balance_report(services: Services, customers: tuple[str, ...] | None,
                               currency: str | None, when: datetime | None = None) -> TrialBalanceResponse:
    """The trial balance `customers` may see (None: the whole ledger), now or as of `when`, as
    the API and the console show it."""

    async def read(conn):
        tb = await (trial_balance(conn, customers=customers) if when is None
                    else trial_balance_at(conn, when, customers=customers))
        held = sorted(tb.totals)  # the currencies of the accounts in scope
        if customers is not None:  # theirs alone: whether another customer holds a currency is not its to learn
            held = sorted({*held, *await reports.currencies(conn, customers)})
        chosen = currency or ("USD" if "USD" in held or not held else held[0])
        return tb, held, chosen, await services.asset_scale(conn, chosen)

    tb, held, chosen, scale = await services.db.read(read)
    if customers is not None and currency is not None and chosen not in held:
        scale = None  # answered as a currency no customer holds
    if scale is None:
        if currency is not None:
            raise ApiError("not_found", f"no currency {chosen}")
        scale = DEFAULT_SCALE  # an empty ledger: nothing posted in any currency yet
    lines = [line for line in tb.lines if line.asset == chosen]
    debits, credits = tb.totals.get(chosen, (0, 0))
    return TrialBalanceResponse(
        currency=chosen,
        scope="ledger" if customers is None else "customers",
        accounts=[TrialBalanceAccount(line.account, format_money(line.debits, chosen, scale),
                                      format_money(line.credits, chosen, scale),
                                      format_money(line.balance, chosen, scale)) for line in lines],
        total_debits=format_money(debits, chosen, scale), total_credits=format_money(credits, chosen, scale),
        balanced=debits == credits if customers is None else None,
        customers=None if customers is None else list(customers),
        at=time_out(when),
        currencies=held,
    )


@post("/v1/audit/verify", guards=[require("auditor")], status_code=200, tags=["audit"], **documented())
async def post_verify(state: State, request: Request) -> VerifyResponse:
    """Run every integrity check on one snapshot; each failing check names what is wrong. The
    checks span the whole ledger and name any customer, so a key limited to customers may not
    run them (403)."""
    return await verify_report(state.services, principal_of(request))


async def verify_report(services: Services, principal: Principal) -> VerifyResponse:
    if principal.visible() is not None:
        raise ApiError("forbidden", "verify checks every customer's accounts; a key limited to customers "
                       "may not run it", 403)
    report = await services.db.read(full_verify)
    return VerifyResponse(ok=report.ok, checks=[
        CheckResponse(c.name, c.ok, c.detail, list(c.problems)) for c in report.checks])
