"""Credit coming in and going away: top-ups, promotional grants, grant expiry, post-hoc usage."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import datetime

import msgspec

from pricing.books import PriceBook
from pricing.money import CURRENCY_MINOR_UNITS, finer_than_minor_unit, format_money, minor_unit, minor_unit_text
from wallets import chart
from wallets.core import budgets
from wallets.core.commands import ExpireLot, Grant, RecordUsage, ReverseGrant, TopUp
from wallets.core.decision import (
    NOTHING_DUE,
    ChargeRecorded,
    Decision,
    LotOpened,
    LotRevoked,
    LotSwept,
    Outcome,
    UsageCounted,
    UsageEventRecorded,
)
from wallets.core.legs import Legs, entry, funding, settlement, settlement_legs
from wallets.core.payments import apply_to_invoices
from wallets.core.rating import (
    billing_period,
    book_for,
    charge_lines,
    implausibility,
    override_version,
    period_counts,
    rate_call,
    unpostable,
)
from wallets.core.results import (
    CreditResult,
    ExpiryResult,
    LotView,
    ReversalResult,
    UsageResult,
    WalletView,
    lot_view,
    wallet_view,
)
from wallets.core.state import ReversalOnRecord, State, TopUpOnRecord
from wallets.errors import (
    ConflictError,
    ExceedsRemainingError,
    GrantClosedError,
    GrantNotReversibleError,
    NotFoundError,
    SubMinorAmountError,
    WalletValidationError,
)
from wallets.model import Lot, Wallet, consumption_key


def whole_minor_units(units: int, currency: str, field: str = "amount") -> int:
    """`units` of cash (a top-up, a grant, an invoice payment, an overdraft limit), refused when
    they hold a fraction of the currency's minor unit: no one pays half a yen. An asset the ISO
    table does not list (a credit) keeps its atomic unit."""
    if finer_than_minor_unit(units, currency):
        raise SubMinorAmountError(field, f"{minor_unit_text(currency)}: {format_money(units, currency)}",
                                  currency=currency, decimals=CURRENCY_MINOR_UNITS[currency])
    return units


def positive_whole(units: int, currency: str) -> int:
    """An amount asked of cash (a refund): more than 0, in whole minor units."""
    if units <= 0:
        raise WalletValidationError("amount", "must be more than 0")
    return whole_minor_units(units, currency)


def _future(expires_at: datetime | None, now: datetime) -> None:
    """Refuse a lot's expiry that is not after `now` (a body's own refusal: 422 naming it)."""
    if expires_at is not None and expires_at <= now:
        raise WalletValidationError("expires_at", "must be in the future")


def _wallet(state: State, expires_at: datetime | None, now: datetime) -> Wallet:
    """The credit's wallet; for a customer that does not exist, the body as sent is checked
    before it is told so (422 before 404)."""
    if state.wallet is None:
        _future(expires_at, now)
    return state.require_wallet()


def opened_lot(state: State, w: Wallet, kind: str, amount: int, priority: int, expires_at: datetime | None,
            now: datetime, reason: str = "", reference: str = "") -> LotOpened:
    _future(expires_at, now)
    lot_id = state.ids("lot")
    return LotOpened(w.customer.id, lot_id, chart.lot_account(w.customer.id, lot_id), w.customer.currency, kind,
                     amount, priority, expires_at, now, reason, reference)


def _view_after(w: Wallet, opened: LotOpened, paid: int, now: datetime) -> tuple[Lot, WalletView]:
    """The new lot and the wallet as they will be once the credit is posted."""
    lot = Lot(opened.lot_id, opened.code, opened.kind, opened.granted, opened.priority, opened.expires_at,
              opened.created_at, opened.granted, False, opened.reason, opened.reference)
    lots = sorted((*w.live_lots(now), *([lot] if lot.live(now) and lot.balance > 0 else [])), key=consumption_key)
    receivable, limit = w.receivable - paid, w.customer.overdraft_limit
    view = WalletView(w.customer.id, w.customer.currency, w.available(now) + lot.balance, w.reserved, receivable,
                      limit is not None and receivable > limit, limit, tuple(lot_view(x) for x in lots))
    return lot, view


def _credited_before(w: Wallet, cmd: TopUp, known: TopUpOnRecord, now: datetime) -> Decision:
    """The top-up first credited under `cmd`'s payment reference, answered again (its lot and the
    wallet as they are now), nothing posted; another amount under it is a conflict."""
    if known.amount != cmd.amount:
        raise ConflictError(f"payment {cmd.reference!r} of customer {w.customer.id} was credited with "
                            f"{format_money(known.amount, w.customer.currency)}", reference=cmd.reference)
    lot = w.lots.get(known.lot.code, known.lot) if known.lot is not None else None
    grant = lot_view(lot) if lot is not None else LotView("", "topup", 0, 0, cmd.priority, None, now, "", cmd.reference)
    granted = lot.granted if lot is not None else 0
    result = CreditResult(grant, wallet_view(w, now), known.amount - granted, None, known.entry_id, replayed=True)
    return Decision(Outcome(result.code, result))


def top_up(state: State, cmd: TopUp, now: datetime, book: PriceBook | None) -> Decision:
    """Paid credit: cash in; a prepaid customer's owed receivable (settled usage, not what open
    reservations hold on credit) is paid off first, and the rest becomes a lot. A payment
    `reference` credited before is answered again (as an invoice payment's or a refund's)."""
    w = _wallet(state, cmd.expires_at, now)
    known = state.topups.get((w.customer.id, cmd.reference)) if cmd.reference else None
    if known is None or known.amount != cmd.amount:  # the body is checked before it is told from the one kept
        whole_minor_units(cmd.amount, w.customer.currency)
    if known is not None:  # the same payment recorded again: credited once
        return _credited_before(w, cmd, known, now)
    owed = max(0, w.receivable - (w.credit_held or 0)) if w.customer.billing == "prepaid" else 0
    paid = min(cmd.amount, owed)
    opened = opened_lot(state, w, "topup", cmd.amount - paid, cmd.priority, cmd.expires_at, now, "", cmd.reference)
    opened = msgspec.structs.replace(opened, paid_owed=paid)
    cur, cid = w.customer.currency, w.customer.id
    legs = Legs(cur).debit(chart.cash_account(cur), cmd.amount).credit(opened.code, cmd.amount - paid)
    legs.credit(chart.receivable_account(cid), paid)
    posted = entry(f"topup:{opened.lot_id}", "topup", legs, cid, now,
                   {"lot_id": opened.lot_id, "reference": cmd.reference})
    # what paid the receivable pays the customer's open invoices, oldest first, as invoice payments
    # of this entry; the rest of it paid usage not invoiced yet: the close that invoices it applies it
    applied = apply_to_invoices(state, cid, paid, f"topup:{opened.lot_id}", now) if paid else []
    lot, view = _view_after(w, opened, paid, now)
    result = CreditResult(lot_view(lot), view, paid, posted.key if posted else None)
    return Decision(Outcome(result.code, result), posted, (opened, *applied))


def grant(state: State, cmd: Grant, now: datetime, book: PriceBook | None) -> Decision:
    """Promotional or contractual credit, paid for by the platform's promotions expense."""
    w = _wallet(state, cmd.expires_at, now)
    whole_minor_units(cmd.amount, w.customer.currency)
    opened = opened_lot(state, w, "grant", cmd.amount, cmd.priority, cmd.expires_at, now, cmd.reason, "")
    cur = w.customer.currency
    legs = Legs(cur).debit(chart.promotions_account(cur), cmd.amount).credit(opened.code, cmd.amount)
    posted = entry(f"grant:{opened.lot_id}", "grant", legs, w.customer.id, now,
                   {"lot_id": opened.lot_id, "reason": cmd.reason})
    lot, view = _view_after(w, opened, 0, now)
    result = CreditResult(lot_view(lot), view, 0, posted.key if posted else None)
    return Decision(Outcome(result.code, result), posted, (opened,))


def expire_lot(state: State, cmd: ExpireLot, now: datetime, book: PriceBook | None) -> Decision:
    """Job: a lot past its expiry gives its remainder to breakage revenue, exactly once. What
    open reservations hold from it is not touched now; when given back, it goes to breakage. A
    lot with nothing left (spent, held, revoked in whole) is closed all the same, without an
    entry or a `grant.expired` event: nothing expired."""
    w = state.require_wallet()
    lot = w.lots.get(cmd.code)
    if lot is None or lot.swept or lot.expires_at is None or lot.expires_at > now:
        return NOTHING_DUE
    amount, cur = lot.balance, w.customer.currency
    legs = Legs(cur).debit(lot.code, amount).credit(chart.breakage_account(cur), amount)
    posted = entry(f"grant-expiry:{lot.id}", "grant_expiry", legs, w.customer.id, now, {"lot_id": lot.id})
    swept = LotSwept(w.customer.id, lot.id, lot.code, amount, now)
    result = ExpiryResult(lot.id, amount, posted.key if posted else None)
    if amount == 0:
        return Decision(Outcome(result.code, result), posted, (swept,))
    event = state.event("grant.expired", w.customer.id, f"grant.expired:{lot.id}", now, {
        "grant_id": lot.id, "expired": format_money(amount, cur), "currency": cur})
    return Decision(Outcome(result.code, result), posted, (swept, event))


REVERSAL_KINDS = {"topup": "refund", "grant": "revocation"}  # a lot's kind -> what reversing it is


def _refunded_before(w: Wallet, lot: Lot, cmd: ReverseGrant, known: ReversalOnRecord, now: datetime) -> Decision:
    """The refund first posted under `cmd`'s reference (the processor's refund id), answered again
    (the lot and the wallet as they are now), nothing posted; another lot or amount under it is a
    conflict."""
    if known.lot_id != lot.id or cmd.amount not in (None, known.amount):
        raise ConflictError(f"refund {cmd.reference!r} of customer {w.customer.id} was of "
                            f"{format_money(known.amount, w.customer.currency)} from grant {known.lot_id}",
                            reference=cmd.reference)
    result = ReversalResult("refund", known.amount, known.reason, cmd.reference, lot_view(lot), wallet_view(w, now),
                            None, known.entry_id, replayed=True)
    return Decision(Outcome(result.code, result))


def reverse_grant(state: State, cmd: ReverseGrant, now: datetime, book: PriceBook | None) -> Decision:
    """Give back `amount` (all of it when None) of what is left of a lot and not held, the reverse
    of what opened it: a top-up's refund to the platform's cash, a grant's revocation to its
    promotions expense. Refused for a lot a correction opened (a re-rate's, a true-up's, a close's
    rounding: `grant_not_reversible`), another customer's or an unknown lot, a lot expired or
    emptied, and an amount above what is left of it, not whole minor units, or not positive."""
    w = state.require_wallet()
    lot = w.lots.get(cmd.code)
    if lot is None:
        raise NotFoundError(f"no grant {cmd.lot_id} of customer {w.customer.id}", grant_id=cmd.lot_id)
    if lot.opened_by not in (None, lot.kind):  # opened by a correction: no cash or promotion behind it
        raise GrantNotReversibleError(
            f"grant {lot.id} is credit tokentill gave back itself ({lot.opened_by}), not a paid top-up or a "
            "grant: there is no cash or promotion it came from to give it back to; it stays credit for usage",
            grant_id=lot.id, opened_by=lot.opened_by)
    known = state.reversals.get((w.customer.id, cmd.reference)) if cmd.reference and lot.kind == "topup" else None
    cur = w.customer.currency
    if cmd.amount is not None and (known is None or cmd.amount != known.amount):  # checked before told apart
        positive_whole(cmd.amount, cur)
    if known is not None:  # the same refund recorded again: paid out once
        return _refunded_before(w, lot, cmd, known, now)
    paid = state.refunds.get((w.customer.id, cmd.reference)) if cmd.reference and lot.kind == "topup" else None
    if paid is not None:  # one refund id, one payout: it was paid out as a refund of overpaid credit
        raise ConflictError(f"refund {cmd.reference!r} of customer {w.customer.id} was paid out as the refund "
                            f"{paid.refund_id} of overpaid credit "
                            f"({format_money(paid.amount, w.customer.currency)})", reference=cmd.reference)
    if lot.revoked:
        raise GrantClosedError(f"grant {lot.id} was revoked in whole: it is closed, what comes back to it is "
                               "revoked again", grant_id=lot.id, state="revoked")
    if not lot.live(now):
        raise GrantClosedError(f"grant {lot.id} expired: its remainder is breakage, not to be given back",
                               grant_id=lot.id, state="expired")
    if lot.balance <= 0:
        raise GrantClosedError(f"grant {lot.id} has nothing left that is not spent or held",
                               grant_id=lot.id, state="emptied")
    if cmd.amount is not None:
        amount = cmd.amount
    elif lot.kind == "topup":  # all of it that cash can carry: the fraction of a minor unit stays for usage
        amount = lot.balance - lot.balance % minor_unit(cur)
        if amount == 0:
            raise GrantClosedError(f"grant {lot.id} has less than one minor unit left "
                                   f"({format_money(lot.balance, cur)} {cur}): nothing to refund in cash",
                                   grant_id=lot.id, state="emptied")
    else:  # a revocation moves no cash: all that is left, fractions of a cent included
        amount = lot.balance
    if amount > lot.balance:
        raise ExceedsRemainingError(
            f"grant {lot.id} has {format_money(lot.balance, cur)} {cur} left and not held; "
            f"{format_money(amount, cur)} asked", grant_id=lot.id, available=format_money(lot.balance, cur),
            asked=format_money(amount, cur), currency=cur)
    kind = REVERSAL_KINDS[lot.kind]
    source = chart.cash_account(cur) if lot.kind == "topup" else chart.promotions_account(cur)
    legs = Legs(cur).debit(lot.code, amount).credit(source, amount)
    reversal_id = state.ids("rev")
    posted = entry(f"grant-reversal:{lot.id}:{reversal_id}", "grant_reversal", legs, w.customer.id, now, {
        "lot_id": lot.id, "reversal": kind, "reason": cmd.reason, "reference": cmd.reference})
    event = state.event("grant.reversed", w.customer.id, f"grant.reversed:{reversal_id}", now, {
        "grant_id": lot.id, "reversal": kind, "amount": format_money(amount, cur), "currency": cur,
        "remaining": format_money(lot.balance - amount, cur), "reason": cmd.reason, "reference": cmd.reference})
    # a grant revoked in whole is closed for good: what comes back to it later (a hold released or
    # settled below it, a re-rate's money back) is revoked again. A top-up refunded in whole stays
    # open: what comes back to it is the customer's, who paid for the usage.
    whole = lot.kind == "grant" and amount == lot.balance
    closed = (LotRevoked(w.customer.id, lot.id, lot.code, now),) if whole else ()
    after = replace(lot, balance=lot.balance - amount)
    view = wallet_view(replace(w, lots={**w.lots, lot.code: after}), now)
    result = ReversalResult(kind, amount, cmd.reason, cmd.reference, lot_view(after), view,
                            posted.key if posted else None)
    return Decision(Outcome(result.code, result), posted, (event, *closed))


def usage_entry_key(customer_id: str, event_id: str) -> str:
    """The journal key of a usage event's entry: unique per (customer, event id). Customer ids
    hold no ':', so the first one after the prefix ends the customer. Events recorded before
    ids were per customer kept their `usage:<event id>` keys; this prefix never meets them. A
    key longer than the journal takes (300) carries the event id's sha256 instead."""
    key = f"usage-event:{customer_id}:{event_id}"
    if len(key) <= 300:
        return key
    return f"usage-event-sha256:{customer_id}:{hashlib.sha256(event_id.encode()).hexdigest()}"


def record_usage(state: State, cmd: RecordUsage, now: datetime, book: PriceBook | None) -> Decision:
    """A post-hoc usage event, rated at its own time and paid from the lots, then the receivable;
    the same event again is a duplicate, and past a plausibility bound it is not recorded."""
    known = state.events.get((cmd.customer_id, cmd.event_id))
    if known is not None:
        if known != cmd.request_hash and known not in cmd.earlier:
            raise ConflictError(f"event {cmd.event_id} was sent before with another body")
        return Decision(Outcome("duplicate", UsageResult(cmd.event_id, duplicate=True)))
    if cmd.kept_only:  # the route found it kept; events are never deleted: never so, but never rated
        raise WalletValidationError("usage", f"refused, and no event {cmd.event_id} is kept to answer")
    w = state.require_wallet()
    rating = rate_call(w, book, state.period_usage, cmd.model, cmd.tokens, cmd.occurred_at, cmd.dimensions,
                       with_request_fee=True, reported=cmd.usage)
    problem = unpostable(rating.total_units, w.customer.currency, "usage") or implausibility(
        w, book_for(w, book).version_at(cmd.occurred_at), rating, cmd.tokens)
    if problem is not None:
        return Decision.refuse(problem)  # not recorded: the same event, corrected, may come again
    s = settlement(w, None, rating.total_units, False, now)
    cid = w.customer.id
    posted = entry(usage_entry_key(cid, cmd.event_id), "usage", settlement_legs(w, s), cid, now, {
        "event_id": cmd.event_id, "price_book": rating.book_id, "price_version": rating.price_version})
    counted = UsageCounted(cid, billing_period(cmd.occurred_at, w.customer), rating.book_id, period_counts(rating))
    recorded = UsageEventRecorded(cid, cmd.event_id, cmd.request_hash, cmd.model, cmd.occurred_at,
                                  dict(cmd.usage), dict(cmd.dimensions))
    lines = tuple(charge_lines(rating, override_version(w, cmd.occurred_at)))
    charge = ChargeRecorded(
        cid, None, cmd.event_id, cmd.event_id, 0, None, True, cmd.request_hash, cmd.model, cmd.occurred_at,
        dict(cmd.usage), dict(cmd.dimensions), rating.book_id, rating.price_version, lines,
        s.cost, 0, s.from_lots_total, s.from_receivable, 0, funding(w, None, s))
    result = UsageResult(cmd.event_id, False, s.cost, posted.key if posted else None)
    spent = budgets.on_usage(state, w, cmd.event_id, cmd.model, cmd.dimensions, s.cost, cmd.tokens, cmd.occurred_at,
                             now)
    return Decision(Outcome(result.code, result), posted, (counted, recorded, charge, *spent))
