"""Cash refunds of a customer's overpaid credit: what corrections gave back of usage it paid in
cash, paid back (wallets.core.refunds)."""
from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from api.auth import require
from api.errors import documented
from api.routes.customers import WalletResponse, wallet_response
from api.routes.formats import PositiveAmount, free_text
from api.routes.schemas import json_body
from api.routes.wire import Answer, cash_of, idempotency, money, respond, shaped
from wallets.commands import RefundCredit, RefundResult


class RefundCreditRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422
    amount: PositiveAmount
    # the payout's id at the bank or processor (a wire's, a Stripe refund's re_...): `audit reconcile` matches it
    reference: Annotated[str, msgspec.Meta(min_length=1, max_length=500), free_text()]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")] | None = None  # default: the customer's
    reason: Annotated[str, msgspec.Meta(max_length=500), free_text()] = ""


class RefundedGrant(msgspec.Struct):
    grant_id: str
    amount: str


class RefundResponse(msgspec.Struct):
    id: str
    customer_id: str
    entry_id: int | None
    amount: str
    currency: str
    reference: str
    reason: str
    refundable: str  # what may still be paid back after it
    grants: list[RefundedGrant]  # the credit lots it came from
    wallet: WalletResponse


RefundCreditBody = Annotated[dict[str, Any], json_body(RefundCreditRequest)]


def _refund(result: RefundResult) -> RefundResponse:
    cur = result.currency
    return RefundResponse(result.refund_id, result.customer_id, result.entry_id, money(result.amount, cur) or "0",
                          cur, result.reference, result.reason, money(result.refundable, cur) or "0",
                          [RefundedGrant(lot_id, money(part, cur) or "0") for lot_id, part in result.lots],
                          wallet_response(result.wallet))


REFUNDED = Answer(_refund, RefundResult)


@post("/v1/customers/{customer_id:str}/refunds", guards=[require()], tags=["customers"], status_code=201,
      **documented(404, 409, body=True, replay=RefundResponse, idempotent=True))
async def refund_credit(state: State, request: Request, customer_id: FromPath[str],
                        data: RefundCreditBody) -> Response[RefundResponse]:
    """Pay back in cash (part of) the customer's overpaid credit: what a re-rate, a volume
    true-up or a close's rounding gave back beyond what it owed, of usage it paid in cash (an
    invoice paid by wire, then re-rated down). One `credit_refund` entry: the credit's lots
    debited, platform cash credited; `credit.refunded` to the outbox. More than is the customer's
    own cash (credit promotions paid for, what it owes, a paid top-up's credit, which its own
    reversal refunds) is 409 `exceeds_refundable` naming `refundable` and `asked`; another currency
    422 `currency_mismatch`; an `amount` finer than the currency's minor unit 422 `invalid_amount`;
    a `reference` a top-up's refund was paid out under 409 `idempotency_conflict` naming it."""
    data = shaped(data, RefundCreditRequest)
    amount = await cash_of(data.amount, "amount", state.services.db, customer_id=customer_id)
    command = RefundCredit(customer_id=customer_id, amount=amount,
                           reference=data.reference, currency=data.currency, reason=data.reason,
                           idem=idempotency(request, data))
    return respond(request, await state.services.wallets.submit(command), REFUNDED)


class RefundableResponse(msgspec.Struct):
    customer_id: str
    currency: str
    refundable: str


@get("/v1/customers/{customer_id:str}/refundable", guards=[require()], tags=["customers"], **documented(404))
async def get_refundable(state: State, customer_id: FromPath[str]) -> RefundableResponse:
    """What a cash refund of the customer's overpaid credit may pay back now (`refundable`), by
    the rule `POST .../refunds` applies: so an operator need not ask for too much to learn it."""
    currency, units = await state.services.wallets.refundable(customer_id)
    return RefundableResponse(customer_id, currency, money(units, currency) or "0")


ROUTES = [refund_credit, get_refundable]
