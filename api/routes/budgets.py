"""Budgets and quotas: create, list, read (with the current window's usage), change, delete.
A budget belongs to one customer; API key, model pattern and dimension values narrow it."""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, get_args

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath

from api.auth import ensure_customer, principal_of, require
from api.errors import ApiError, documented
from api.routes import cursors
from api.routes.formats import AMOUNT_TEXT, POSITIVE_AMOUNT, CustomerQuery, Identifier, documented_as, free_text
from api.routes.schemas import DimensionText, json_body
from api.routes.wire import Answer, amount_in, idempotency, kept_answer, respond, shaped, time_out
from pricing.errors import NOT_AN_INTEGER
from wallets.budgets import MAX_PER_CUSTOMER, BudgetChange, BudgetSpec, valid
from wallets.core.budgets import ZONED, BudgetView, check_thresholds, figure
from wallets.errors import NotFoundError, WalletValidationError
from wallets.model import Budget

Window = Literal["request", "minute", "day", "month", "lifetime"]
Metric = Literal["money", "tokens", "input_tokens", "output_tokens", "requests"]
Mode = Literal["hard", "soft"]
MoneyLimit = Annotated[str, documented_as(POSITIVE_AMOUNT, "money: more than 0: " + AMOUNT_TEXT)]
Limit = Annotated[MoneyLimit | Annotated[int, msgspec.Meta(ge=1, le=10**18)], msgspec.Meta(
    description='money: a decimal string ("10.00"); tokens and requests: an integer')]
# the limit's type follows the metric: a decimal string for money, else an integer count
LIMIT_BY_METRIC = {"oneOf": [
    {"properties": {"metric": {"const": "money"}, "limit": {"type": "string"}}},
    {"properties": {"metric": {"enum": [m for m in get_args(Metric) if m != "money"]}, "limit": {"type": "integer"}}},
]}
Thresholds = Annotated[list[Annotated[int, msgspec.Meta(ge=1, le=1000)]], msgspec.Meta(
    max_length=20, extra_json_schema={"uniqueItems": True})]  # distinct: wallets.core.budgets checks
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=200), free_text()]
# what a budget is: never changed (its windows' counts would mean something else), so never ignored either
FIXED = ("customer_id", "window", "metric", "time_zone", "api_key", "model", "dimensions")
READERS = ("inference", "auditor", "customer")  # a customer's data: its wallet, its budgets
WRITERS = ("customer",)  # admin keys, and a customer's own key
# the default page: a customer's every budget at the default caps, the operator's and its own (it was 100,
# a page of one cap, when each setter got its own: a customer at both was listed 100 of its 200)
EVERY_ONE = 2 * MAX_PER_CUSTOMER


class CreateBudgetRequest(msgspec.Struct, forbid_unknown_fields=True):  # a typo is a 422, never dropped
    customer_id: Identifier
    window: Window
    metric: Metric
    limit: Limit
    mode: Mode = "hard"
    name: Annotated[str, msgspec.Meta(max_length=200), free_text()] = ""
    api_key: Short | None = None  # matches the reservation's dimensions.api_key
    model: Short | None = None  # a model, or a pattern with `*`
    # a value as a call may send it (schemas.Dimension: "" included), so that a budget can bind any
    dimensions: Annotated[dict[Short, DimensionText], msgspec.Meta(max_length=16)] = {}
    thresholds: Thresholds = []
    time_zone: Short | None = None  # day and month windows; default: the customer's, else UTC


class ChangeBudgetRequest(msgspec.Struct, forbid_unknown_fields=True):
    name: Annotated[str, msgspec.Meta(max_length=200), free_text()] | None = None
    limit: Limit | None = None
    mode: Mode | None = None
    thresholds: Thresholds | None = None


class BudgetResponse(msgspec.Struct):
    id: str
    customer_id: str
    name: str
    api_key: str | None
    model: str | None
    dimensions: dict[str, str]
    window: str
    metric: str
    limit: str | int
    mode: str
    thresholds: list[int]
    time_zone: str | None  # a day's or a month's; null for a request, minute or lifetime window
    currency: str
    used: str | int
    held: str | int
    remaining: str | int
    window_start: str | None
    resets_at: str | None
    created_at: str
    set_by: str = "operator"  # operator: only admin keys change or delete it; customer: its own key too


CreateBudgetBody = Annotated[dict[str, Any], json_body(Annotated[CreateBudgetRequest, msgspec.Meta(
    extra_json_schema=LIMIT_BY_METRIC)])]
ChangeBudgetBody = Annotated[dict[str, Any], json_body(ChangeBudgetRequest)]


def budget_response(v: BudgetView) -> BudgetResponse:
    b = v.budget
    return BudgetResponse(
        b.id, b.customer_id, b.name, b.api_key, b.model, dict(b.dimensions), b.window, b.metric,
        figure(b, b.limit, v.currency), b.mode, list(b.thresholds), b.time_zone if b.window in ZONED else None,
        v.currency,
        figure(b, v.used, v.currency), figure(b, v.held, v.currency),
        figure(b, max(0, b.limit - v.used - v.held), v.currency), time_out(v.window_start), time_out(v.resets_at),
        time_out(b.created_at) or "", b.set_by)


BUDGET = Answer(budget_response, BudgetView, lambda _: "created")
CHANGED = Answer(budget_response, BudgetView, lambda _: "ok")  # a change or a deletion: 200


MONEY_LIMIT = 'a money limit is a decimal string, such as "10.00"'
MAX_COUNT = 10**18  # Limit's bound on a count


def _limit(metric: str, value: Any) -> int:
    """The limit (a JSON value as sent: POST and PATCH take it out of msgspec's shaping, which
    refused some before the metric was known, in words that differed by verb) in atomic units
    (money) or counts: one rule, so the same value of the same metric is the same refusal by
    either verb. A money limit is a decimal string; a count a JSON integer of 1 to 10**18, a
    number with a fraction or an exponent told as every integer field is told."""
    if metric == "money":
        if not isinstance(value, str):
            raise WalletValidationError("limit", MONEY_LIMIT)
        return amount_in(value, "limit")
    if type(value) is float:
        raise WalletValidationError("limit", NOT_AN_INTEGER)
    article = "an" if metric[0] in "aeiou" else "a"  # an input_tokens limit, a tokens limit
    if type(value) is not int:  # a bool too: true is no count
        raise WalletValidationError("limit", f"{article} {metric} limit is an integer")
    if not 1 <= value <= MAX_COUNT:
        raise WalletValidationError("limit", f"{article} {metric} limit is an integer from 1 to {MAX_COUNT}")
    return value


def _some_limit(value: Any) -> None:
    """Refuse a limit no metric takes, where no budget names the metric (a change of a missing one:
    422 before 404): a string is read as money (a count's is no string), else a count's range."""
    if isinstance(value, str):
        _limit("money", value)
    elif type(value) is not int or not 1 <= value <= MAX_COUNT:  # a bool, a float, an object: no count either
        raise WalletValidationError("limit", f'a decimal string (money, such as "10.00") or an integer from 1 '
                                    f"to {MAX_COUNT} (tokens, requests)")


class _Create(CreateBudgetRequest, forbid_unknown_fields=True):
    """CreateBudgetRequest as it is shaped: its limit as sent, for _limit."""

    limit: Any


class _Change(ChangeBudgetRequest, forbid_unknown_fields=True):
    """ChangeBudgetRequest as it is shaped: its limit as sent (null: left as it is), for _limit."""

    limit: Any = None


@post("/v1/budgets", guards=[require(*WRITERS)], tags=["budgets"], status_code=201,
      **documented(404, 409, body=True, replay=BudgetResponse, idempotent=True))
async def create_budget(state: State, request: Request, data: CreateBudgetBody) -> Response[BudgetResponse]:
    """A budget of a customer's: every reservation that matches its scope counts against its
    window at its upper bound from the moment it is held. `hard` refuses with 429; `soft` alerts."""
    data = shaped(data, _Create)
    ensure_customer(request, data.customer_id)
    spec = BudgetSpec(data.customer_id, data.window, data.metric, _limit(data.metric, data.limit), data.mode,
                      data.name, data.api_key, data.model, dict(data.dimensions), tuple(data.thresholds),
                      data.time_zone, "customer" if _customers_own(request) else "operator")
    try:  # 404 before anything is written, but after the body's own refusal (422)
        await state.services.wallets.get_customer(data.customer_id)
    except NotFoundError:
        valid(spec)
        raise
    return respond(request, await state.services.wallets.budgets.create(spec, idempotency(request, data)), BUDGET)


class BudgetsPage(msgspec.Struct):
    """Budgets by customer, then id; `next_cursor` is null on the last page."""

    budgets: list[BudgetResponse]
    next_cursor: str | None


@get("/v1/budgets", guards=[require(*READERS)], tags=["budgets"], **documented(400, 422))
async def list_budgets(state: State, request: Request, customer_id: CustomerQuery = None,
                       cursor: cursors.Cursor = None, limit: cursors.Limit = EVERY_ONE) -> BudgetsPage:
    """The live budgets of one customer (`customer_id`), or of every customer the key may see, a
    page at a time (`limit`, default 200: a customer's all, 100 of each setter at the default caps); page on with
    `next_cursor` (a keyset position: a budget made or deleted meanwhile shows or not by where
    it falls; none shows twice)."""
    if customer_id is not None:
        ensure_customer(request, customer_id)
        customers: list[str] | None = [customer_id]
    else:
        visible = principal_of(request).visible()
        customers = list(visible) if visible is not None else None
    after = None if cursor is None else _position(cursors.decode_position(cursor, "budgets", [customer_id]))
    views, more = await state.services.wallets.budgets.list(customers, after=after, limit=limit)
    return BudgetsPage([budget_response(v) for v in views],
                       None if more is None else cursors.encode_position("budgets", [customer_id], list(more)))


def _position(position: list[Any]) -> tuple[str, str]:
    """A budget cursor's position: the last page's last customer and budget id."""
    if len(position) != 2 or not all(isinstance(p, str) for p in position):
        raise cursors.invalid("not a cursor of this listing")
    return position[0], position[1]


def _customers_own(request: Request) -> bool:
    return principal_of(request).scope.startswith("customer:")


def _changeable(request: Request, budget_id: str) -> Callable[[Budget], None]:
    """A budget the operator set (an admin key made it) is changed or deleted by admin keys only:
    the customer's own key may read it, but not raise or drop the cap set on it. Checked on the
    budget as the unit of work that changes it reads it (wallets.budgets: one read)."""
    principal, customers_own = principal_of(request), _customers_own(request)

    def check(b: Budget) -> None:
        if not principal.may_see(b.customer_id):
            raise NotFoundError(f"no budget {budget_id}", budget_id=budget_id)
        if customers_own and b.set_by != "customer":
            raise ApiError("forbidden", f"budget {budget_id} was set by the operator: only an admin key may "
                           "change or delete it", 403)

    return check


async def _owned(state: State, request: Request, budget_id: str) -> None:
    """A budget of a customer the key may not see is not found, as a missing one is: what a key is
    told never depends on another customer's data."""
    if not principal_of(request).may_see(await state.services.wallets.budgets.owner(budget_id)):
        raise NotFoundError(f"no budget {budget_id}", budget_id=budget_id)


@get("/v1/budgets/{budget_id:str}", guards=[require(*READERS)], tags=["budgets"], **documented(404))
async def get_budget(state: State, request: Request, budget_id: FromPath[str]) -> BudgetResponse:
    """The budget, its current window (start, rollover), what it used and what it holds now."""
    await _owned(state, request, budget_id)
    return budget_response(await state.services.wallets.budgets.get(budget_id))


@patch("/v1/budgets/{budget_id:str}", guards=[require(*WRITERS)], tags=["budgets"],
       **documented(404, 409, body=True, idempotent=True))
async def change_budget(state: State, request: Request, budget_id: FromPath[str],
                        data: ChangeBudgetBody) -> Response[BudgetResponse]:
    """Change its name, limit, mode or thresholds (scope, window and metric never change). A
    replay of its Idempotency-Key answers what it first answered."""
    fixed = next((name for name in FIXED if isinstance(data, dict) and name in data), None)
    if fixed is not None:
        raise WalletValidationError(fixed, "never changes: create another budget (and delete this one)")
    idem = idempotency(request, data)
    data = shaped(data, _Change)  # the limit's words are its budget's metric's: read below
    replay = await kept_answer(state.services.db, idem)
    if replay is not None:
        return respond(request, replay, CHANGED)
    try:
        await _owned(state, request, budget_id)  # its customer (never changes): another's is not found
    except NotFoundError:
        if data.thresholds is not None:  # the body as sent before what it names (422 before 404)
            check_thresholds(data.thresholds)
        if data.limit is not None:
            _some_limit(data.limit)
        raise
    check = _changeable(request, budget_id)

    def decide(b: Budget) -> BudgetChange:
        check(b)
        limit = None if data.limit is None else _limit(b.metric, data.limit)
        return BudgetChange(data.name, limit, data.mode, None if data.thresholds is None else tuple(data.thresholds))

    return respond(request, await state.services.wallets.budgets.change(budget_id, decide, idem), CHANGED)


@delete("/v1/budgets/{budget_id:str}", guards=[require(*WRITERS)], tags=["budgets"], status_code=200,
        **documented(404, 409, idempotent=True))
async def delete_budget(state: State, request: Request, budget_id: FromPath[str]) -> Response[BudgetResponse]:
    """New reservations stop counting against it; what its windows hold still returns there. A
    replay of its Idempotency-Key answers what it first answered."""
    idem = idempotency(request, {})
    replay = await kept_answer(state.services.db, idem)
    if replay is not None:
        return respond(request, replay, CHANGED)
    await _owned(state, request, budget_id)
    return respond(request, await state.services.wallets.budgets.delete(budget_id, _changeable(request, budget_id),
                                                                        idem), CHANGED)


ROUTES = [create_budget, list_budgets, get_budget, change_budget, delete_budget]
