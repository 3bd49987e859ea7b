"""Customers and their wallets: create, read, top up, grant credit, read the wallet."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncConnection

from api.auth import principal_of, require
from api.errors import documented
from api.routes.budgets import READERS, BudgetResponse, budget_response
from api.routes.formats import Amount, DateTime, Identifier, PositiveAmount, free_text
from api.routes.schemas import json_body
from api.routes.wire import Answer, amount_in, cash_in, cash_of, idempotency, money, respond, shaped, time_in, time_out
from wallets import reports
from wallets.commands import (
    GRANT_PRIORITY,
    TOPUP_PRIORITY,
    CreditResult,
    Grant,
    LotView,
    ReversalResult,
    ReverseGrant,
    TopUp,
    WalletView,
)
from wallets.core import customers as changes
from wallets.core.idempotency import CREATED, EXISTS, OK
from wallets.customer_changes import CustomerChange
from wallets.errors import NotFoundError, WalletValidationError
from wallets.periods import DEFAULT_GRACE_S, DEFAULT_TERMS_DAYS
from wallets.service import CustomerSpec, CustomerView

Priority = Annotated[int, msgspec.Meta(ge=0, le=100)]
Text = Annotated[str, msgspec.Meta(max_length=500), free_text()]


class CreateCustomerRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    id: Identifier
    name: Annotated[str, msgspec.Meta(max_length=200), free_text()] = ""
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] = "USD"
    billing: Literal["prepaid", "postpaid"] = "prepaid"
    price_book: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | None = "standard"
    overdraft_limit: Amount | msgspec.UnsetType | None = msgspec.UNSET  # null: unlimited
    low_balance_threshold: Amount | None = None
    max_charge_per_request: PositiveAmount | None = None  # null: the price book's plausibility bound
    time_zone: Annotated[str, msgspec.Meta(min_length=1, max_length=64)] = "UTC"  # IANA: its billing periods'
    billing_anchor_day: Annotated[int, msgspec.Meta(ge=1, le=31)] | None = None  # null: the 1st of the month
    grace_period_seconds: Annotated[int, msgspec.Meta(ge=0, le=2_678_400)] = DEFAULT_GRACE_S
    payment_terms_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = DEFAULT_TERMS_DAYS


class ChangeCustomerRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    name: Annotated[str, msgspec.Meta(max_length=200), free_text()] | msgspec.UnsetType = msgspec.UNSET
    price_book: Annotated[str, msgspec.Meta(min_length=1, max_length=100)] | msgspec.UnsetType = msgspec.UNSET
    overdraft_limit: Amount | msgspec.UnsetType | None = msgspec.UNSET  # null: unlimited


class CustomerChangeResponse(msgspec.Struct):
    seq: int
    changed_at: str
    changed_by: str  # the API key's id
    changes: dict[str, dict[str, Any]]  # field -> {"old", "new"}
    receivable: str  # what the customer owed at the change


class CustomerChangesResponse(msgspec.Struct):
    customer_id: str
    currency: str
    changes: list[CustomerChangeResponse]


class CustomerResponse(msgspec.Struct):
    id: str
    name: str
    currency: str
    billing: str
    price_book: str | None
    overdraft_limit: str | None
    low_balance_threshold: str | None
    created_at: str
    max_charge_per_request: str | None = None
    time_zone: str = "UTC"
    billing_anchor_day: int = 1  # as in force: a customer made without one starts its periods on the 1st
    grace_period_seconds: int = DEFAULT_GRACE_S
    payment_terms_days: int = DEFAULT_TERMS_DAYS
    current_period_start: str | None = None  # its first billing period not closed yet


class GrantResponse(msgspec.Struct):
    id: str
    kind: str
    granted: str
    remaining: str
    priority: int
    expires_at: str | None
    created_at: str
    reason: str
    reference: str


class WalletResponse(msgspec.Struct):
    customer_id: str
    currency: str
    available: str
    reserved: str
    receivable: str
    blocked: bool
    overdraft_limit: str | None
    grants: list[GrantResponse]
    budgets: list[BudgetResponse] = []  # each live budget of the customer, as it stands now


class TopUpRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    amount: PositiveAmount
    reference: Text = ""
    priority: Priority = TOPUP_PRIORITY
    expires_at: DateTime | None = None  # in the future


class GrantRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    amount: PositiveAmount
    priority: Priority = GRANT_PRIORITY
    expires_at: DateTime | None = None  # in the future
    reason: Text = ""


class ReverseGrantRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    amount: PositiveAmount | None = None  # None: all that is left of the lot and not held
    reason: Text = ""
    reference: Text = ""  # the payment provider's refund id (re_...): `audit reconcile` matches it


class ReversalResponse(msgspec.Struct):
    grant_id: str
    entry_id: int | None
    reversal: str  # refund (a top-up's, to cash) | revocation (a grant's, to promotions)
    amount: str
    currency: str
    reason: str
    reference: str
    grant: GrantResponse
    wallet: WalletResponse


class CreditResponse(msgspec.Struct):
    grant_id: str
    entry_id: int | None
    applied_to_receivable: str
    grant: GrantResponse
    wallet: WalletResponse


CreateCustomerBody = Annotated[dict[str, Any], json_body(CreateCustomerRequest)]
ChangeCustomerBody = Annotated[dict[str, Any], json_body(ChangeCustomerRequest)]
TopUpBody = Annotated[dict[str, Any], json_body(TopUpRequest)]
GrantBody = Annotated[dict[str, Any], json_body(GrantRequest)]
ReverseGrantBody = Annotated[dict[str, Any], json_body(ReverseGrantRequest)]


def customer_response(view: CustomerView) -> CustomerResponse:
    s = view.spec
    cur = s.currency
    return CustomerResponse(s.id, s.name, cur, s.billing, s.price_book, money(s.overdraft_limit, cur),
                            money(s.low_balance_threshold, cur), time_out(view.created_at) or "",
                            money(s.max_charge_per_request, cur), s.time_zone, s.anchor_day, s.grace_seconds,
                            s.payment_terms_days, time_out(view.open_period_start))


CUSTOMER = Answer(lambda out: customer_response(out[0]), tuple[CustomerView, bool],
                  lambda out: CREATED if out[1] else EXISTS)
CHANGED = Answer(customer_response, CustomerView, lambda _: OK)


def grant_response(lot: LotView, currency: str) -> GrantResponse:
    return GrantResponse(lot.id, lot.kind, money(lot.granted, currency) or "0", money(lot.remaining, currency) or "0",
                         lot.priority,
                         time_out(lot.expires_at), time_out(lot.created_at) or "", lot.reason, lot.reference)


def wallet_response(w: WalletView) -> WalletResponse:
    cur = w.currency
    return WalletResponse(w.customer_id, cur, money(w.available, cur) or "0", money(w.reserved, cur) or "0",
                          money(w.receivable, cur) or "0", w.blocked, money(w.overdraft_limit, cur),
                          [grant_response(lot, cur) for lot in w.grants], [budget_response(v) for v in w.budgets])


def _spec(data: CreateCustomerRequest) -> CustomerSpec:
    if data.overdraft_limit is msgspec.UNSET:
        limit = 0 if data.billing == "prepaid" else None
    else:
        limit = None if data.overdraft_limit is None else cash_in(data.overdraft_limit, "overdraft_limit",
                                                                  data.currency, positive=False)
    low = None if data.low_balance_threshold is None else amount_in(
        data.low_balance_threshold, "low_balance_threshold", positive=False)
    max_charge = None if data.max_charge_per_request is None else amount_in(
        data.max_charge_per_request, "max_charge_per_request")
    spec = CustomerSpec(data.id, data.name, data.currency, data.billing, data.price_book, limit, low, max_charge,
                        data.time_zone, data.billing_anchor_day, data.grace_period_seconds, data.payment_terms_days)
    spec.cycle  # noqa: B018 - refuses an unknown time zone (validation_error) before anything is written
    return spec


@post("/v1/customers", guards=[require()], tags=["customers"], status_code=201,
      **documented(409, body=True, replay=CustomerResponse, idempotent=True))
async def create_customer(state: State, request: Request, data: CreateCustomerBody) -> Response[CustomerResponse]:
    """Create a customer with its wallet. `overdraft_limit` defaults to 0 for prepaid customers
    and to null (no limit) for postpaid ones. The same definition again answers 200. An
    `overdraft_limit` finer than the currency's minor unit ("100.5" yen) is 422 `invalid_amount`."""
    data = shaped(data, CreateCustomerRequest)
    spec = _spec(data)
    outcome = await state.services.wallets.create_customer(spec, idempotency(request, data))
    return respond(request, outcome, CUSTOMER)


@get("/v1/customers/{customer_id:str}", guards=[require(*READERS)], tags=["customers"], **documented(404))
async def get_customer(state: State, customer_id: FromPath[str]) -> CustomerResponse:
    return customer_response(await state.services.wallets.get_customer(customer_id))


@patch("/v1/customers/{customer_id:str}", guards=[require()], tags=["customers"],
       **documented(404, body=True, idempotent=True))
async def change_customer(state: State, request: Request, customer_id: FromPath[str],
                          data: ChangeCustomerBody) -> Response[CustomerResponse]:
    """Change a customer's `name`, `price_book` or `overdraft_limit` (null: unlimited); 200 with
    the customer. `id`, `currency`, `billing`, the billing cycle, `low_balance_threshold` and
    `max_charge_per_request` never change (422 `immutable_field`); a book that does not exist,
    or in another currency, is 422 `validation_error` (for a key limited to customers, so is a
    book none of them is priced with); a limit finer than the minor unit is 422 `invalid_amount`. A limit below
    what the customer owes blocks the wallet. Each change is logged (GET …/changes)."""
    if isinstance(data, dict):
        changes.refuse_immutable(data)
    idem = idempotency(request, data)
    shaped_data = shaped(data, ChangeCustomerRequest)
    asked = {name: getattr(shaped_data, name) for name in changes.CHANGEABLE
             if getattr(shaped_data, name) is not msgspec.UNSET}
    if "overdraft_limit" in asked and asked["overdraft_limit"] is not None:
        asked["overdraft_limit"] = await cash_of(asked["overdraft_limit"], "overdraft_limit", state.services.db,
                                                 positive=False, customer_id=customer_id)
    if not asked:
        raise WalletValidationError("body", f"give at least one of {', '.join(changes.CHANGEABLE)}")
    principal = principal_of(request)
    allowed = _readable_book(asked["price_book"], principal.customers) \
        if "price_book" in asked and principal.customers else None
    outcome = await state.services.wallets.change_customer(customer_id, asked, principal.key_id, idem, allowed)
    return respond(request, outcome, CHANGED)


def _readable_book(book_id: str, customers: tuple[str, ...]) -> Callable[[AsyncConnection], Awaitable[None]]:
    """A key limited to customers moves one only to a book it may read (one of its customers is
    priced with it): any other is refused as a book that does not exist is, which it would open
    to the key once moved (api.auth: a limited key reads only its customers' books). Checked in
    the change's unit of work, after its Idempotency-Key is read: a move kept before the key lost
    sight of the book is answered as kept."""
    async def check(conn: AsyncConnection) -> None:
        try:
            await reports.ensure_book_visible(conn, book_id, customers)
        except NotFoundError:
            raise WalletValidationError("price_book", f"no price book {book_id}") from None

    return check


def _change_response(change: CustomerChange, currency: str) -> CustomerChangeResponse:
    return CustomerChangeResponse(change.seq, time_out(change.changed_at) or "", change.changed_by,
                                  {k: dict(v) for k, v in change.changes.items()},
                                  money(change.receivable, currency) or "0")


@get("/v1/customers/{customer_id:str}/changes", guards=[require("auditor")], tags=["customers"],
     **documented(404))
async def customer_changes(state: State, customer_id: FromPath[str]) -> CustomerChangesResponse:
    """Every change of the customer (PATCH), oldest first: who (the API key's id), when, each
    field's old and new value, and what the customer owed then. The log is immutable."""
    customer = await state.services.wallets.get_customer(customer_id)
    found = await state.services.wallets.customer_changes(customer_id)
    return CustomerChangesResponse(customer_id, customer.spec.currency,
                                   [_change_response(c, customer.spec.currency) for c in found])


@get("/v1/customers/{customer_id:str}/wallet", guards=[require(*READERS)], tags=["customers"],
     **documented(404))
async def get_wallet(state: State, customer_id: FromPath[str]) -> WalletResponse:
    """What new reservations may draw (`available`, live lots only), what open reservations hold,
    what the customer owes (`receivable`), and the lots in consumption order."""
    return wallet_response(await state.services.wallets.wallet(customer_id))


def _credit(result: CreditResult) -> CreditResponse:
    cur = result.wallet.currency
    return CreditResponse(result.grant.id, result.entry_id, money(result.applied_to_receivable, cur) or "0",
                          grant_response(result.grant, cur), wallet_response(result.wallet))


CREDITED = Answer(_credit, CreditResult)


@post("/v1/customers/{customer_id:str}/topups", guards=[require()], tags=["customers"], status_code=201,
      **documented(404, 409, body=True, replay=CreditResponse, idempotent=True))
async def top_up(state: State, request: Request, customer_id: FromPath[str],
                 data: TopUpBody) -> Response[CreditResponse]:
    """Paid credit: a new lot (priority 100, no expiry unless given). For a prepaid customer
    it first pays off the receivable of settled usage (`applied_to_receivable`). An `amount` finer
    than the currency's minor unit ("100.5" yen, "10.001" dollars) is 422 `invalid_amount`. A
    payment `reference` credited before is answered again (200, nothing posted; another amount:
    409 `idempotency_conflict`, as is one a refund of overpaid credit was paid out under)."""
    data = shaped(data, TopUpRequest)
    amount = await cash_of(data.amount, "amount", state.services.db, customer_id=customer_id)
    command = TopUp(customer_id=customer_id, amount=amount, reference=data.reference,
                    priority=data.priority, expires_at=time_in(data.expires_at, "expires_at"),
                    idem=idempotency(request, data))
    return respond(request, await state.services.wallets.submit(command), CREDITED)


@post("/v1/customers/{customer_id:str}/grants", guards=[require()], tags=["customers"], status_code=201,
      **documented(404, 409, body=True, idempotent=True))
async def grant(state: State, request: Request, customer_id: FromPath[str],
                data: GrantBody) -> Response[CreditResponse]:
    """Promotional or contractual credit: a lot paid by the promotions expense (priority 50). An
    `amount` finer than the currency's minor unit is 422 `invalid_amount`."""
    data = shaped(data, GrantRequest)
    amount = await cash_of(data.amount, "amount", state.services.db, customer_id=customer_id)
    command = Grant(customer_id=customer_id, amount=amount, priority=data.priority,
                    expires_at=time_in(data.expires_at, "expires_at"), reason=data.reason,
                    idem=idempotency(request, data))
    return respond(request, await state.services.wallets.submit(command), CREDITED)


def _reversal(result: ReversalResult) -> ReversalResponse:
    cur = result.wallet.currency
    return ReversalResponse(result.grant.id, result.entry_id, result.kind, money(result.amount, cur) or "0", cur,
                            result.reason, result.reference, grant_response(result.grant, cur),
                            wallet_response(result.wallet))


REVERSED = Answer(_reversal, ReversalResult)


@post("/v1/customers/{customer_id:str}/grants/{grant_id:str}/reverse", guards=[require()], tags=["customers"],
      status_code=201, **documented(404, 409, body=True, replay=ReversalResponse, idempotent=True))
async def reverse_grant(state: State, request: Request, customer_id: FromPath[str], grant_id: FromPath[str],
                        data: ReverseGrantBody) -> Response[ReversalResponse]:
    """Give back (part of) a lot's remainder not held, the reverse of what opened it: a top-up's is
    refunded (lot -> platform cash), a grant's revoked (lot -> platform promotions). Without
    `amount`, all of it (a refund: the whole minor units of it). A grant revoked in whole is
    closed for good: what comes back to it later (a hold's piece, a re-rate's money back) is
    revoked again, to promotions. 404 for a lot not the customer's; 409 `grant_not_reversible`
    (naming `opened_by`) for a lot a re-rate, a true-up or a close's rounding opened; 409
    `grant_closed` (`state`: `expired`, `emptied` or `revoked`) for a lot expired, emptied or
    revoked in whole, 409 `exceeds_remaining` (naming `available` and `asked`) for more than is left;
    an `amount` finer than the currency's minor unit is 422 `invalid_amount`. A refund's
    `reference` refunded before is answered again (200, nothing posted; another lot or amount:
    409 `idempotency_conflict`, as is one a refund of overpaid credit was paid out under)."""
    data = shaped(data, ReverseGrantRequest)
    amount = None if data.amount is None else await cash_of(data.amount, "amount", state.services.db,
                                                            customer_id=customer_id)
    command = ReverseGrant(customer_id=customer_id, lot_id=grant_id, amount=amount, reason=data.reason,
                           reference=data.reference, idem=idempotency(request, data))
    return respond(request, await state.services.wallets.submit(command), REVERSED)
