"""Payments of finalized invoices, as effects: what an invoice payment records (the payment, and
`invoice.paid` once the invoice is paid in full), whether the cash came as an invoice payment or
as the part of a prepaid top-up that paid off an invoiced receivable. Pure."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from pricing.money import format_money, minor_unit
from wallets.core.decision import PaymentRecorded
from wallets.core.state import InvoiceDue, State, Unapplied
from wallets.errors import WalletValidationError

# The references of the payments tokentill records itself, money it applies to invoices: a top-up's
# (`topup:<lot>`), a correction's (`credit-note:<number>`, `rerate:<id>`, `true-up:<period>`) and a
# close's rounding (`rounding:<period>`). An invoice takes one payment per reference, so a payment
# entered under one of them would make the application it names fail, and with it the close.
APPLIED_PREFIXES = ("topup:", "credit-note:", "rerate:", "true-up:", "rounding:")


def check_reference(reference: str) -> None:
    """Refuse a payment reference in the namespace of tokentill's own applications."""
    if reference.startswith(APPLIED_PREFIXES):
        raise WalletValidationError("reference", "must not start with " + ", ".join(
            f"'{p}'" for p in APPLIED_PREFIXES) + ": tokentill names the money it applies to invoices so")


def payable(left: int, owed: int, currency: str) -> int:
    """What may be paid now of an invoice with `left` of its amount due while the customer owes
    `owed` (a correction's money back is off the receivable before its close applies it): `left`,
    at most `owed`, and then the whole minor units of `currency` below it, since cash is whole
    minor units ($7.00861 owed is paid as $7.00; the close rounds the correction's rest, and the
    invoice asks what that leaves). `left` may hold a fraction an old credit note left: it is
    paid as it is."""
    if left <= owed:
        return max(0, left)
    owed = max(0, owed)
    return owed - owed % minor_unit(currency)


def payment_effects(state: State, invoice: InvoiceDue, amount: int, reference: str, now: datetime,
                    paid_by: Unapplied | None = None) -> list[Any]:
    """The payment of `amount` against `invoice` (posted by the decision's entry, or earlier by
    the top-up `paid_by`), and `invoice.paid` if it pays what was left."""
    effects: list[Any] = [PaymentRecorded(invoice.customer_id, invoice.id, state.ids("pay"), amount, reference,
                                          now if paid_by is None else paid_by.at or now,
                                          None if paid_by is None else paid_by.entry_id)]
    paid = invoice.paid + amount
    if paid == invoice.amount_due:
        effects.append(paid_event(state, invoice, paid, now))
    return effects


def paid_event(state: State, invoice: InvoiceDue, paid: int, now: datetime) -> Any:
    """`invoice.paid`: the invoice has nothing left to pay (paid in full, or nothing was due)."""
    return state.event("invoice.paid", invoice.customer_id, f"invoice.paid:{invoice.id}", now, {
        "invoice_id": invoice.id, "number": invoice.number, "amount_paid": format_money(paid, invoice.currency),
        "currency": invoice.currency})


def open_invoices(state: State, customer_id: str) -> list[InvoiceDue]:
    """The customer's finalized invoices with something left to pay, oldest period first."""
    found = [i for i in state.invoices.values() if i.customer_id == customer_id and i.paid < i.amount_due]
    return sorted(found, key=lambda i: (i.period_start, i.number))


def apply_to_invoices(state: State, customer_id: str, amount: int, reference: str, now: datetime) -> list[Any]:
    """`amount` that paid the customer's receivable, applied to its open invoices oldest first,
    each up to what it has left; what is left over paid a receivable not invoiced yet (usage of a
    period still open), and the close of that period applies it (`apply_unapplied`)."""
    effects: list[Any] = []
    for invoice in open_invoices(state, customer_id):
        if amount <= 0:
            break
        part = min(amount, invoice.amount_due - invoice.paid)
        effects += payment_effects(state, invoice, part, reference, now)
        amount -= part
    return effects


def unapplied_parts(credits: Sequence[Unapplied], due: int) -> tuple[list[tuple[Unapplied, int]], list[Unapplied]]:
    """What of `credits` (top-ups' payments of the receivable no invoice records yet, oldest
    first) an invoice of `due` takes at its close: (credit, part) oldest first, up to `due`; and
    what is left of them for the invoices of later periods. The close and the upcoming invoice's
    preview both apply them by this rule."""
    parts: list[tuple[Unapplied, int]] = []
    left: list[Unapplied] = []
    for credit in credits:
        part = min(credit.amount, max(0, due))
        if part > 0:
            parts.append((credit, part))
            due -= part
        if credit.amount > part:
            left.append(replace(credit, amount=credit.amount - part))
    return parts, left


def apply_unapplied(state: State, invoice: InvoiceDue, now: datetime) -> list[Any]:
    """A new invoice (at its close) counts as paid what the customer's top-ups paid off the
    receivable while its usage was not invoiced yet (`state.unapplied`, oldest first), up to its
    amount due; what is left of them paid usage of a later period."""
    effects: list[Any] = []
    parts, _ = unapplied_parts(state.unapplied.get(invoice.customer_id, ()), invoice.amount_due - invoice.paid)
    for credit, part in parts:
        effects += payment_effects(state, invoice, part, credit.reference, now, credit)
        invoice = replace(invoice, payments={**invoice.payments, credit.reference: part})
    return effects


def apply_corrections(state: State, customer_id: str, amount: int, sources: list[Unapplied],
                      now: datetime) -> list[Any]:
    """`amount` a closing period's corrections gave back off the receivable beyond what the period
    owes (its amount due would be below 0), applied to the customer's open invoices, oldest first,
    from `sources` in order (each up to what it gave back): the receivable they paid down is what
    those invoices are owed on."""
    effects: list[Any] = []
    sources = [x for x in sources if x.amount > 0]
    for invoice in open_invoices(state, customer_id):
        while amount > 0 and sources and invoice.paid < invoice.amount_due:
            source = sources[0]
            part = min(amount, source.amount, invoice.amount_due - invoice.paid)
            reference = unused_reference(source, invoice.payments)
            effects += payment_effects(state, invoice, part, reference, now,
                                       replace(source, at=now) if source.entry_id is not None else None)
            invoice = replace(invoice, payments={**invoice.payments, reference: part})
            amount -= part
            sources[0] = replace(source, amount=source.amount - part)
            if not sources[0].amount:
                sources.pop(0)
    return effects


def unused_reference(source: Unapplied, taken: Mapping[str, int]) -> str:
    """The source's reference, or, when the invoice has a payment under it already, it with the
    entry that paid it: one re-rate's entries of two periods both give money back as
    `rerate:<id>`, and an invoice takes one payment per reference."""
    if source.reference not in taken:
        return source.reference
    n, reference = 1, f"{source.reference}#{source.entry_id}" if source.entry_id is not None else source.reference
    while reference in taken:
        n += 1
        reference = f"{source.reference}#{n}"
    return reference
