"""The auditor's journal: entries a page at a time, account statements, balances at an instant.

Every listing pages by an opaque cursor against the snapshot of its first page (ledger.journal),
so its pages are disjoint and together exactly what had committed when the first was read. Reads
run at REPEATABLE READ: they never abort a writer. A key limited to customers sees only their
entries and accounts (an account of another customer is 404, as if it did not exist); platform
accounts span every customer, so their statements and balances are for unlimited keys only
(and one of a currency none of the key's customers holds is 404 too).
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api.auth import Principal, ensure_customer, principal_of, require
from api.errors import ApiError, documented
from api.routes import cursors
from api.routes.cursors import PAGE, Cursor, Limit
from api.routes.formats import CustomerQuery
from api.routes.wire import bound_in, ends_before, time_out, time_param
from ledger.journal import EntryRecord, JournalFilter, current_snapshot, journal_page, snapshot_is_past
from ledger.statements import AccountRef, balance_at, cached_balance, find_account, statement_page
from pricing.money import DEFAULT_SCALE, format_money
from wallets import reports
from wallets.errors import WalletValidationError

AccountParam = Annotated[str | None, QueryParameter(name="account", min_length=1, max_length=200)]
# an entry's kind is a snake_case word (topup, settle, credit_refund): anything else names none
KindParam = Annotated[str | None, QueryParameter(name="kind", max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]
RequestIdParam = Annotated[str | None, QueryParameter(name="request_id", min_length=1, max_length=200)]


class PostingView(msgspec.Struct):
    id: int
    account: str
    currency: str
    stripe: int
    amount: str  # signed: a debit is positive, a credit negative


class SealView(msgspec.Struct):
    """`sealed`: in a seal, and the entry still hashes to what the seal stored; `pending`: not
    sealed yet; `altered`: changed since it was sealed; `unlisted`: inside a sealed range that
    does not list it (it appeared after the seal). `hash` is the seal's hex sha256 of the entry."""

    status: Literal["sealed", "pending", "altered", "unlisted"]
    seal_id: int | None = None
    hash: str | None = None
    sealed_at: str | None = None


class EntryView(msgspec.Struct):
    id: int
    key: str
    kind: str
    customer_id: str | None
    occurred_at: str
    recorded_at: str
    txid: str
    request_hash: str
    metadata: dict[str, Any]
    postings: list[PostingView]
    seal: SealView


class JournalPage(msgspec.Struct):
    """Entries in time order (occurred_at, then id); `next_cursor` is null on the last page."""

    entries: list[EntryView]
    next_cursor: str | None


class StatementLineView(msgspec.Struct):
    entry_id: int
    posting_id: int
    occurred_at: str
    kind: str
    customer_id: str | None
    stripe: int
    amount: str  # signed: a debit is positive
    balance: str  # the whole account's debits - credits after this posting


class StatementView(msgspec.Struct):
    """Balances are debits - credits (as in the trial balance); `normal_balance` says which side
    the account normally carries. closing = opening + total_debits - total_credits."""

    account: str
    type: str
    currency: str
    normal_balance: Literal["debit", "credit"]
    start: str | None = msgspec.field(name="from")
    end: str | None = msgspec.field(name="to")
    opening_balance: str
    closing_balance: str
    total_debits: str
    total_credits: str
    postings: list[StatementLineView]
    next_cursor: str | None


class AccountBalanceView(msgspec.Struct):
    """`at` null: the cached balance now; otherwise computed from the postings of entries that
    occurred before `at`."""

    account: str
    currency: str
    at: str | None
    debits: str
    credits: str
    balance: str


async def _scales(state: State, conn, assets: set[str]) -> dict[str, int]:
    return {a: await state.services.asset_scale(conn, a) or DEFAULT_SCALE for a in assets}


def _entry(e: EntryRecord, scales: dict[str, int]) -> EntryView:
    seal = e.seal
    return EntryView(
        e.id, e.key, e.kind, e.customer_id, time_out(e.occurred_at), time_out(e.recorded_at), str(e.txid),
        e.request_hash.hex(), e.metadata,
        [PostingView(p.id, p.account, p.asset, p.stripe, format_money(p.amount, p.asset, scales[p.asset]))
         for p in e.postings],
        SealView(seal.status, seal.seal_id, seal.hash.hex() if seal.hash else None, time_out(seal.sealed_at)))


async def _visible_account(conn, principal: Principal, code: str, *, platform_ok: bool) -> AccountRef:
    """The account `code`, if this key may read it: 404 for another customer's (as if it did not
    exist), and for a limited key a platform account of a currency none of its customers holds
    (that another customer holds it is not its to learn); 403 for a platform account unless `platform_ok`."""
    account = await find_account(conn, code)
    visible = principal.visible()
    if account is None or (account.customer_id is not None and not principal.may_see(account.customer_id)) or (
            account.customer_id is None and visible is not None
            and account.asset not in await reports.currencies(conn, visible)):
        raise ApiError("not_found", "no account by that code")
    if account.customer_id is None and not platform_ok and visible is not None:
        raise ApiError("forbidden", f"{code} is a platform account, shared by every customer: a key limited "
                       "to customers may not read it", 403)
    return account


def _range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    since, until = bound_in(start, "from"), bound_in(end, "to")
    if ends_before(end, start, "to", "from"):  # to the 9th digit sent: not an empty range
        raise WalletValidationError("to", "must not be before from")
    return since, until


async def _snapshot(conn, cursor: str | None, listing: str, filters: Any) -> tuple[str, list[Any] | None]:
    if cursor is None:
        return await current_snapshot(conn), None
    snapshot, position = cursors.decode(cursor, listing, filters)
    if not await snapshot_is_past(conn, snapshot):
        raise ApiError("invalid_cursor", "cursor: its snapshot is not one this server took; start again", 400)
    return snapshot, position


@get("/v1/journal", guards=[require("auditor", "customer")], tags=["audit"], **documented(400, 404, 422))
async def get_journal(
    state: State, request: Request,
    start: Annotated[str | None, time_param("from")] = None,
    end: Annotated[str | None, time_param("to")] = None,
    customer: CustomerQuery = None,
    account: AccountParam = None,
    kind: KindParam = None,
    request_id: RequestIdParam = None,
    cursor: Cursor = None,
    limit: Limit = PAGE,
) -> JournalPage:
    """Journal entries with their postings, metadata and seal status, in time order (occurred_at,
    then id), filtered by occurred_at in [from, to), customer, account (entries posting to it),
    kind and request id (a reservation's request id or a usage event's id). Page with
    `next_cursor`: the pages are disjoint and together exactly the entries committed before the
    first page was read."""
    principal = principal_of(request)
    if customer is not None:
        ensure_customer(request, customer)
    since, until = _range(start, end)
    filters = [start, end, customer, account, kind, request_id]

    async def read(conn):
        snapshot, position = await _snapshot(conn, cursor, "journal", filters)
        after = _position(position, ids=1)
        named = None if account is None else await _visible_account(conn, principal, account, platform_ok=True)
        f = JournalFilter(since, until, customer, named.id if named else None, named.customer_id if named else None,
                          kind, request_id, principal.visible())
        page = await journal_page(conn, f, snapshot, after, limit)
        scales = await _scales(state, conn, {p.asset for e in page for p in e.postings})
        more = (cursors.encode("journal", filters, snapshot, [page[-1].occurred_at.isoformat(), page[-1].id])
                if len(page) == limit else None)
        return JournalPage([_entry(e, scales) for e in page], more)

    return await state.services.db.read(read)


def _position(position: list[Any] | None, *, ids: int) -> Any:
    """A cursor's position: an occurred_at, then `ids` integer ids (an entry's; a posting's)."""
    if position is None:
        return None
    try:
        at, *rest = position
        parsed = datetime.fromisoformat(at)
        if len(rest) != ids or any(type(i) is not int for i in rest) or parsed.tzinfo is None:
            raise ValueError
    except (TypeError, ValueError):
        raise ApiError("invalid_cursor", "cursor: not a cursor of this API; start again without a cursor",
                       400) from None
    return (parsed, *rest)


@get("/v1/accounts/{code:str}/statement", guards=[require("auditor", "customer")], tags=["audit"],
     **documented(400, 404, 422))
async def get_statement(
    state: State, request: Request, code: FromPath[str],
    start: Annotated[str | None, time_param("from")] = None,
    end: Annotated[str | None, time_param("to")] = None,
    cursor: Cursor = None,
    limit: Limit = PAGE,
) -> StatementView:
    """The account's opening balance at `from`, every posting of [from, to) in time order with
    the running balance, and its closing balance at `to`; a striped platform account as a whole.
    Time is each entry's occurred_at. Page with `next_cursor`, as the journal does."""
    principal = principal_of(request)
    since, until = _range(start, end)
    filters = [code, start, end]

    async def read(conn):
        snapshot, position = await _snapshot(conn, cursor, "statement", filters)
        account = await _visible_account(conn, principal, code, platform_ok=False)
        page = await statement_page(conn, account, since, until, snapshot, _position(position, ids=2), limit)
        scale = await state.services.asset_scale(conn, account.asset) or DEFAULT_SCALE
        last = page.lines[-1] if page.lines else None
        more = (cursors.encode("statement", filters, snapshot,
                               [last.occurred_at.isoformat(), last.entry_id, last.posting_id])
                if last is not None and len(page.lines) == limit else None)
        def money(units: int) -> str:
            return format_money(units, account.asset, scale)

        return StatementView(
            account.code, account.type, account.asset, "debit" if account.normal_sign > 0 else "credit",
            time_out(since), time_out(until), money(page.opening), money(page.closing), money(page.debits),
            money(page.credits),
            [StatementLineView(ln.entry_id, ln.posting_id, time_out(ln.occurred_at), ln.kind, ln.customer_id,
                               ln.stripe, money(ln.amount), money(ln.balance)) for ln in page.lines],
            more)

    return await state.services.db.read(read)


@get("/v1/accounts/{code:str}/balance", guards=[require("auditor", "customer")], tags=["audit"],
     **documented(404, 422))
async def get_account_balance(
    state: State, request: Request, code: FromPath[str],
    at: Annotated[str | None, time_param("at")] = None,
) -> AccountBalanceView:
    """The account's debits, credits and balance (debits - credits): cached now, or as of `at`
    from postings (entries that occurred before `at`). Striped accounts as a whole."""
    principal = principal_of(request)
    when = bound_in(at, "at")

    async def read(conn):
        account = await _visible_account(conn, principal, code, platform_ok=False)
        if when is None:
            debits, credits = await cached_balance(conn, account)
        else:
            debits, credits = await balance_at(conn, account, when)
        scale = await state.services.asset_scale(conn, account.asset) or DEFAULT_SCALE
        return AccountBalanceView(account.code, account.asset, time_out(when),
                                  format_money(debits, account.asset, scale),
                                  format_money(credits, account.asset, scale),
                                  format_money(debits - credits, account.asset, scale))

    return await state.services.db.read(read)
