"""Cash refunds of overpaid credit, as pure rules.

A correction that gives back more than the customer owes (a re-rate's money back, a volume
true-up's, a close's rounding) opens a paid lot of that credit. When the usage it corrects was
paid in cash (an invoice paid by wire, a top-up), that credit is the customer's cash, and it may be
paid back: debit the lots, credit the platform's cash. Never more than is the customer's own cash:
what its entries brought in (top-ups, invoice payments) less what they paid out (refunds), less
what is still theirs as paid top-ups (refunded through their own reversal), held by open
reservations, or owed on the receivable. Credit promotions paid for is not cash (a correction of
usage a grant paid gives the money back to the grant; a lot of it opened before that has no cash
behind it), and neither is credit a later charge owes.
"""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from pricing.books import PriceBook
from pricing.money import format_money, minor_unit
from wallets import chart
from wallets.core.commands import RefundCredit
from wallets.core.credits import positive_whole
from wallets.core.decision import Decision, Outcome
from wallets.core.legs import Legs, entry
from wallets.core.results import RefundResult, wallet_view
from wallets.core.state import RefundOnRecord, State
from wallets.errors import ConflictError, CurrencyMismatchError, ExceedsRefundableError
from wallets.model import Lot, Wallet

# The entries that open a paid lot of money given back (Lot.opened_by): no cash came in as it.
CORRECTIONS = frozenset({"rerate_adjustment", "volume_true_up", "invoice_rounding"})


def overpaid_lots(w: Wallet, now: datetime) -> list[Lot]:
    """The customer's live lots of credit corrections gave back, in consumption order."""
    return [lot for lot in w.live_lots(now) if lot.kind == "topup" and lot.opened_by in CORRECTIONS]


def refundable(w: Wallet, cash: int, now: datetime) -> int:
    """What may be paid back in cash now, in whole minor units: the overpaid lots' unheld credit,
    at most the customer's cash spent (`cash`, its entries' net cash in, less its paid top-ups'
    credit left, what open reservations hold and what it owes). A top-up lot whose opener is not
    known counts as cash still in it."""
    credit = sum(lot.balance for lot in overpaid_lots(w, now))
    in_topups = sum(lot.balance for lot in w.lots.values()
                    if lot.live(now) and lot.kind == "topup" and lot.opened_by not in CORRECTIONS)
    owed = max(0, w.receivable - (w.credit_held or 0))
    units = max(0, min(credit, cash - in_topups - w.reserved - owed))
    return units - units % minor_unit(w.customer.currency)


def taken_from(lots: list[Lot], amount: int) -> list[tuple[Lot, int]]:
    """`amount` from `lots` in their order, each up to its balance."""
    parts = []
    for lot in lots:
        part = min(amount, lot.balance)
        if part > 0:
            parts.append((lot, part))
            amount -= part
    return parts


def _again(state: State, w: Wallet, cmd: RefundCredit, known: RefundOnRecord, now: datetime) -> Decision:
    """The refund posted under `cmd`'s reference, answered again (with what is refundable and the
    wallet as they are now); another amount under it is a conflict."""
    cid = w.customer.id
    if known.amount != cmd.amount:
        raise ConflictError(f"refund {cmd.reference!r} of customer {cid} was of another amount",
                            reference=cmd.reference)
    result = RefundResult(known.refund_id, cid, known.amount, w.customer.currency, cmd.reference, known.reason,
                          list(known.lots), refundable(w, state.cash.get(cid, 0), now), wallet_view(w, now), None,
                          known.entry_id, replayed=True)
    return Decision(Outcome(result.code, result))


def refund_credit(state: State, cmd: RefundCredit, now: datetime, book: PriceBook | None) -> Decision:
    """Pay back `amount` of the customer's overpaid credit in cash: one `credit_refund` entry
    (the overpaid lots debited in consumption order, the platform's cash credited) and a
    `credit.refunded` event. The same `reference` again with the same amount is the same refund
    (answered again, nothing posted; another amount is a conflict). Refused: another currency, an
    amount not positive or finer than the currency's minor unit, and more than `refundable`."""
    w = state.require_wallet()
    cur, cid = w.customer.currency, w.customer.id
    if cmd.currency is not None and cmd.currency != cur:
        raise CurrencyMismatchError(f"customer {cid} is billed in {cur}, not {cmd.currency}",
                                    customer_id=cid, currency=cur)
    known = state.refunds.get((cid, cmd.reference))
    if known is None or known.amount != cmd.amount:  # the body is checked before it is told from the one kept
        positive_whole(cmd.amount, cur)
    if known is not None:  # the same payout sent again: answered again, posted once
        return _again(state, w, cmd, known, now)
    if (reversal := state.reversals.get((cid, cmd.reference))) is not None:  # one refund id, one payout
        raise ConflictError(f"refund {cmd.reference!r} of customer {cid} was paid out as the refund of top-up "
                            f"{reversal.lot_id} ({format_money(reversal.amount, cur)})", reference=cmd.reference)
    can = refundable(w, state.cash.get(cid, 0), now)
    if cmd.amount > can:
        raise ExceedsRefundableError(
            f"customer {cid} has {format_money(can, cur)} {cur} of overpaid cash to pay back; "
            f"{format_money(cmd.amount, cur)} asked", customer_id=cid, refundable=format_money(can, cur),
            asked=format_money(cmd.amount, cur), currency=cur)
    parts = taken_from(overpaid_lots(w, now), cmd.amount)
    legs = Legs(cur)
    for lot, part in parts:
        legs.debit(lot.code, part)
    legs.credit(chart.cash_account(cur), cmd.amount)
    refund_id = state.ids("rfd")
    lots = [(lot.id, part) for lot, part in parts]
    posted = entry(f"credit-refund:{cid}:{refund_id}", "credit_refund", legs, cid, now, {
        "refund_id": refund_id, "reference": cmd.reference, "reason": cmd.reason, "lots": lots})
    left = can - cmd.amount
    event = state.event("credit.refunded", cid, f"credit.refunded:{refund_id}", now, {
        "refund_id": refund_id, "amount": format_money(cmd.amount, cur), "currency": cur,
        "reference": cmd.reference, "reason": cmd.reason, "refundable": format_money(left, cur),
        "grants": [{"grant_id": lot_id, "amount": format_money(part, cur)} for lot_id, part in lots]})
    after = {lot.code: replace(lot, balance=lot.balance - part) for lot, part in parts}
    view = wallet_view(replace(w, lots={**w.lots, **after}), now)
    result = RefundResult(refund_id, cid, cmd.amount, cur, cmd.reference, cmd.reason, lots, left, view,
                          posted.key if posted else None)
    return Decision(Outcome(result.code, result), posted, (event,))
