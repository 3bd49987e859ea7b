"""Per-period rollups of a customer's entries, and the invoice document built from them. Pure.

Every entry of a customer is billed in one period (`Customer.billed_in`: the period of its
usage time for a charge, of its own time otherwise; the first open period when that one is
closed already) and adds items to that period's rollup, in the same transaction (a charge that
moved no money, and so has no entry, adds its lines alone, netting 0):

  line:<json>         a priced line: [original period, kind, model, token type, rule, unit
                      price, tier, override, price version] -> quantity, amount
  revenue             usage revenue the entry credited
  funded:<source>     what paid the revenue: `grant` or `topup` lots, or the `receivable`; a
                      credit note's `rounding` (its money is whole minor units, its revenue exact)
  topups, grants      credit bought or given; `expired`: what went to breakage
  refunds, revoked    credit given back: top-ups refunded to cash and overpaid credit paid back in
                      cash (`credit_refund`), grants revoked (reversals, and what came back to a
                      grant revoked in whole: a hold's piece, a re-rate's money)
  payments            invoice payments received
  lots, reserved, receivable   the change of the customer's balances
  rounded             what the close's rounding of the amount due moved on the receivable
  noted               the credit and debit notes' part of `funded:receivable` (whole minor
                      units, rounded once by each note: the close rounds the amount due without it)

An invoice is a function of its period's rollup and of the customer's balances, so it ties out
to the postings by construction, and `tokentill audit verify` proves the rollups agree with them.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.model import JournalEntry
from pricing.books import TOKEN_TYPES
from pricing.errors import wire_time
from pricing.money import CURRENCY_MINOR_UNITS, format_money, plain
from wallets import chart
from wallets.model import Customer
from wallets.periods import Period, zone

SCALE = chart.ASSET_SCALE
LINE = "line:"
BALANCES = ("lots", "reserved", "receivable")
LINE_FIELDS = ("original_period", "kind", "model", "token_type", "rule_id", "unit_price", "tier", "override_id",
               "price_version")
KIND_ORDER = {"usage": 0, "request": 1, "discount": 2, "free_allowance": 3, "volume_true_up": 4, "adjustment": 5}
SUBTOTALS = {"usage": "usage", "request": "requests", "discount": "discounts", "free_allowance": "free_allowances",
             "volume_true_up": "true_ups", "adjustment": "adjustments", "rounding": "rounding"}
CASH_OUT = ("grant_reversal", "credit_refund")  # the entries that pay cash back: a top-up's refund, a credit's
NOTED = "noted"  # the rollup item of the credit and debit notes' part of funded:receivable
ROUNDING_MODE = "half_even"  # the mode pricing rounds an entry's total with (pricing.money.round_entry)

Rollup = dict[str, tuple[int, int]]  # item -> (quantity, amount in atomic units)


def add(rollup: Rollup, item: str, quantity: int, amount: int) -> None:
    q, a = rollup.get(item, (0, 0))
    rollup[item] = (q + quantity, a + amount)


def merge(into: Rollup, other: Mapping[str, tuple[int, int]]) -> None:
    for item, (q, a) in other.items():
        add(into, item, q, a)


def line_item(origin: str, line: Mapping[str, Any]) -> str:
    values = (origin, line["kind"], line.get("model"), line.get("token_type"), line.get("rule_id"),
              line.get("unit_price"), line.get("tier"), line.get("override_id"), line.get("price_version"))
    if not all(map(_KEYABLE.__contains__, map(type, values))):  # equal tuples of these have equal JSON (not 1 and True)
        return LINE + json.dumps(list(values), separators=(",", ":"))
    item = _LINE_ITEMS.get(values)
    if item is None:
        if len(_LINE_ITEMS) >= 65_536:
            _LINE_ITEMS.clear()
        item = _LINE_ITEMS[values] = LINE + json.dumps(list(values), separators=(",", ":"))
    return item


# The items of the lines seen lately: a period's lines repeat (one model, rule, price), and
# their JSON is the same each time.
_LINE_ITEMS: dict[tuple[Any, ...], str] = {}
_KEYABLE = frozenset((str, int, type(None)))


def entry_rollup(customer: Customer, entry: JournalEntry | None, lot_kinds: Mapping[str, str],
                 lines: Iterable[tuple[str, Mapping[str, Any]]] = (),
                 funding: Iterable[tuple[str, int]] = ()) -> Rollup:
    """What one entry adds to its period's rollup: its priced `lines` (original period, line),
    how its revenue was paid (`funding`: account, amount) and the movement of its postings (none
    without an entry: priced lines that moved no money)."""
    cur, cid = customer.currency, customer.id
    out: Rollup = {}
    for origin, line in lines:
        add(out, line_item(origin, line), int(line["quantity"]), int(line["amount_units"]))
    receivable, rounding = chart.receivable_account(cid), chart.rounding_account(cur)
    for account, amount in funding:
        source = "receivable" if account == receivable else "rounding" if account == rounding else None
        add(out, "funded:" + (source or lot_kinds.get(account, "grant")), 0, amount)
    revenue, breakage = chart.revenue_account(cur), chart.breakage_account(cur)
    promotions, cash, reserved = chart.promotions_account(cur), chart.cash_account(cur), chart.reserved_account(cid)
    for p in entry.postings if entry is not None else ():
        if p.account == revenue:
            add(out, "revenue", 0, -p.amount)
        elif p.account == breakage:
            add(out, "expired", 0, -p.amount)
        elif p.account == promotions:
            if p.amount < 0:  # a revocation, or what came back to a grant revoked in whole: revoked again
                add(out, "revoked", 0, -p.amount)
            else:
                add(out, "grants", 0, p.amount)
        elif p.account == cash:
            if entry.kind in CASH_OUT:
                add(out, "refunds", 0, -p.amount)
            else:
                add(out, "payments" if entry.kind == "invoice_payment" else "topups", 0, p.amount)
        elif p.account == reserved:
            add(out, "reserved", 0, -p.amount)
        elif p.account == receivable:
            add(out, "receivable", 0, p.amount)
        elif p.account in lot_kinds:
            add(out, "lots", 0, -p.amount)
        elif p.account == rounding and entry.kind != "rerate_adjustment":  # a note's is in its funding
            add(out, "rounded", 0, -p.amount)
    return out


def money(units: int, currency: str) -> str:
    return format_money(units, currency)


@dataclass(frozen=True, slots=True)
class Balances:
    lots: int
    reserved: int
    receivable: int

    def view(self, currency: str) -> dict[str, str]:
        return {"credits": money(self.lots, currency), "reserved": money(self.reserved, currency),
                "receivable": money(self.receivable, currency)}


def opening_balances(now: Balances, rollups: Mapping[str, Mapping[str, tuple[int, int]]], period: str) -> Balances:
    """The balances at the start of `period`: today's, less what `period` and later ones moved."""
    later = [r for label, r in rollups.items() if label >= period]
    lots, reserved, receivable = ([now.lots, now.reserved, now.receivable][i]
                                  - sum(r.get(name, (0, 0))[1] for r in later) for i, name in enumerate(BALANCES))
    return Balances(lots, reserved, receivable)


def _line(item: str, quantity: int, amount: int, period: str, currency: str) -> dict[str, Any]:
    line = dict(zip(LINE_FIELDS, json.loads(item[len(LINE):]), strict=True))
    if line["kind"] == "usage" and line["token_type"] == "request":
        line["kind"] = "request"
    line["original_period"] = None if line["original_period"] == period else line["original_period"]
    return {**line, "quantity": quantity, "amount": money(amount, currency), "amount_units": amount}


def _line_order(line: Mapping[str, Any]) -> tuple[Any, ...]:
    token = line["token_type"]
    token_index = TOKEN_TYPES.index(token) if token in TOKEN_TYPES else -1
    return (line["original_period"] or "", line["model"] or "", token_index,
            KIND_ORDER.get(line["kind"], 9), line["rule_id"] or "", line["tier"] or 0, line["override_id"] or "",
            line["price_version"] or "", line["unit_price"] or "")


def invoice_lines(rollup: Mapping[str, tuple[int, int]], period: str, currency: str) -> list[dict[str, Any]]:
    lines = [_line(item, q, a, period, currency) for item, (q, a) in rollup.items()
             if item.startswith(LINE) and (q or a)]
    return sorted(lines, key=_line_order)


def line_decimals(currency: str) -> int:
    """The decimals an invoice line is rounded to: the currency's ISO 4217 minor unit (the table
    `pricing.money.CURRENCY_MINOR_UNITS`: USD, EUR, AED… 2, JPY, KRW, XOF… 0, BHD, KWD, IQD… 3).
    An asset the table does not know (a non-ISO unit such as a credit, or a code with no minor unit)
    keeps its atomic unit, 10^-SCALE: its lines are not rounded, and it never has a rounding line."""
    return min(CURRENCY_MINOR_UNITS.get(currency, SCALE), SCALE)


def round_line(units: int, decimals: int) -> int:
    """`units` (atomic) rounded to 10^-decimals of the currency, half to even, in integers: the one
    rule of invoice lines (each line once, independently; its sign does not matter)."""
    step = 10 ** (SCALE - decimals)
    whole, rest = divmod(units, step)  # floor: rest is in [0, step)
    if 2 * rest > step or (2 * rest == step and whole % 2):
        whole += 1
    return whole * step


def rounded_lines(lines: list[dict[str, Any]], currency: str) -> list[dict[str, Any]]:
    """Each line's amount rounded once to `decimals`, then one `rounding` line carrying the exact
    total less the sum of the rounded lines (none when that is zero), so the lines still sum to the
    exact total, which is what the postings say."""
    decimals = line_decimals(currency)
    total = rounded = 0
    out = []
    for line in lines:
        exact = line.pop("amount_units")
        amount = round_line(exact, decimals)
        total, rounded = total + exact, rounded + amount
        out.append({**line, "amount": money(amount, currency), "amount_units": amount})
    if total != rounded:
        out.append({"kind": "rounding", "model": None, "token_type": None, "rule_id": None, "unit_price": None,
                    "tier": None, "override_id": None, "price_version": None, "original_period": None,
                    "quantity": None, "amount": money(total - rounded, currency), "amount_units": total - rounded})
    return out


@dataclass(frozen=True, slots=True)
class Header:
    id: str | None
    number: str | None
    status: str  # finalized | upcoming
    issued_at: datetime


def document(customer: Customer, period: Period, rollup: Mapping[str, tuple[int, int]], opening: Balances,
             header: Header) -> dict[str, Any]:
    """The invoice of `period`: lines by model and token type, per-request fees, discounts,
    allowances and true-ups each their own lines; credits applied by lot kind; top-ups, grants,
    expirations, refunds and revocations; opening and closing balances; the amount due.
    Each line's amount is rounded once to the currency's minor unit (`line_decimals`, half to
    even), and a `rounding` line carries the exact total less the rounded lines; the subtotals
    are the sums of the rounded lines by kind (`rounding` its own); the total and every other
    figure are exact atomic units: the lines sum to the total, the period's usage revenue.
    `line_rounding` says so; a document without it (finalized before) has exact lines.
    `customer_name` is the customer's name as it is now (`bill_to_name`), frozen with the rest."""
    decimals = line_decimals(customer.currency)
    cur = customer.currency
    lines = rounded_lines(invoice_lines(rollup, period.label, cur), cur)
    units = [a for item, (_, a) in sorted(rollup.items()) if item.startswith(LINE)]
    subtotals: dict[str, int] = dict.fromkeys(SUBTOTALS.values(), 0)
    for line in lines:
        subtotals[SUBTOTALS[line["kind"]]] += line.pop("amount_units")
    amount = {name: rollup.get(name, (0, 0))[1] for name in (
        "funded:grant", "funded:topup", "funded:receivable", "funded:rounding", "topups", "grants", "expired",
        "refunds", "revoked", "payments", *BALANCES)}
    closing = Balances(*(getattr(opening, name) + amount[name] for name in BALANCES))
    due = amount_due_units(rollup)
    return {
        "id": header.id, "number": header.number, "status": header.status, "customer_id": customer.id,
        "customer_name": bill_to_name(customer), "currency": customer.currency, "billing": customer.billing,
        "period": {"label": period.label, "start": wire_time(period.start), "end": wire_time(period.end),
                   "time_zone": customer.cycle.time_zone},
        "issued_at": wire_time(header.issued_at), "due_at": wire_time(due_at(period, customer)),
        "lines": lines,
        "line_rounding": {"decimals": decimals, "mode": ROUNDING_MODE},
        "subtotals": {name: money(v, cur) for name, v in subtotals.items()},
        "total": money(sum(units), cur),
        "credits_applied": {"promotional": money(amount["funded:grant"], cur),
                            "paid": money(amount["funded:topup"], cur),
                            "total": money(amount["funded:grant"] + amount["funded:topup"], cur)},
        "charged_to_account": money(amount["funded:receivable"], cur),
        # what the credit and debit notes of corrections billed here rounded off to move whole minor
        # units (their amount_rounding, posted to the platform's rounding account): with the credits
        # applied and what was charged to account, it makes the total
        "credit_note_rounding": money(amount["funded:rounding"], cur),
        "top_ups": money(amount["topups"], cur), "grants": money(amount["grants"], cur),
        "expired": money(amount["expired"], cur),
        # top-ups refunded and grants revoked in the period (reversals of lots: their credit given back)
        "refunds": money(amount["refunds"], cur), "grants_revoked": money(amount["revoked"], cur),
        "payments_received": money(amount["payments"], cur),
        "opening_balance": opening.view(cur), "closing_balance": closing.view(cur),
        # what the close's rounding of the amount due to the currency's minor unit added (or took off)
        "amount_due_rounding": money(rollup.get("rounded", (0, 0))[1], cur),
        "amount_due": money(due, cur),
        # re-rating adjustments billed in this period (also among the lines, which sum to the total),
        # each with the period of the charges it corrects; a closed period's also have a credit note
        "adjustments": [line for line in lines if line["kind"] == "adjustment"],
    }


def bill_to_name(customer: Customer) -> str | None:
    """The name an invoice or credit note bills, frozen in its content when it is issued (a
    rename later changes no issued document); None for a customer created without one."""
    return customer.name or None


def as_issued(content: Mapping[str, Any]) -> dict[str, Any]:
    """A frozen invoice or credit note as the API gives it: one issued before the name was
    recorded has `customer_name` null (none was captured then; today's name would not be the one
    it billed), its content and hash untouched; its lines' unit prices shown plain (`shown_lines`)."""
    shown = {**content, "lines": shown_lines(content["lines"])} if "lines" in content else {**content}
    return shown if "customer_name" in content else {**shown, "customer_name": None}


def shown_lines(lines: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Lines as the API, the renderings and the console show them: a unit price or exact amount
    stored as str(Decimal) wrote it ("5E-7") written plainly ("0.0000005", pricing.money.plain);
    what is stored (rollup items, a document and its hash) keeps its text."""
    return [{**ln, **{name: plain(ln[name]) for name in ("unit_price", "exact") if name in ln}} for ln in lines]


def total_units(rollup: Mapping[str, tuple[int, int]]) -> int:
    return sum(a for item, (_, a) in rollup.items() if item.startswith(LINE))


def amount_due_units(rollup: Mapping[str, tuple[int, int]]) -> int:
    """What the receivable paid of the period's charges, when positive, and what the close's
    rounding (`due_rounding`) moved on the receivable with it."""
    funded = rollup.get("funded:receivable", (0, 0))[1]
    return max(0, funded + rollup.get("rounded", (0, 0))[1]) if funded > 0 else 0


def due_rounding(due: int, applied: int, currency: str, noted: int = 0) -> int:
    """What the close adds to an amount due of `due` atomic units (less when negative) so that
    what is left to pay once top-ups already paid `applied` of it is whole minor units of
    `currency`: that rest rounded once, half to even, as invoice lines are (`round_line`), without
    the credit and debit notes' part of it (`noted`, whole: rounded once by each note,
    not again; half to even, 9.5 yen is 10 where 10.5 less a note's 1 is 9). An asset the ISO table
    does not list keeps its atomic unit: 0."""
    left = due - applied
    return whole_rounding(left, currency, noted) if left > 0 else 0


def whole_rounding(units: int, currency: str, noted: int = 0) -> int:
    """What makes `units` whole minor units of `currency`, rounding its part that `noted` (notes'
    money, whole minor units already; a fraction, from notes issued before they were rounded, is
    not left out) is not: round(units - noted) - (units - noted)."""
    decimals = line_decimals(currency)
    rest = units - (noted if noted % 10 ** (SCALE - decimals) == 0 else 0)
    return round_line(rest, decimals) - rest


def due_at(period: Period, customer: Customer) -> datetime:
    """When an invoice of `period` is due: midnight, in the customer's time zone, of the day its
    payment terms' days after the period's end (a day across a daylight saving change is 23 or 25
    hours long: adding 30 days of 24 hours made a New York invoice due at 23:00 the day before)."""
    local = period.end.astimezone(zone(customer.cycle.time_zone))
    return (local + timedelta(days=customer.terms_days)).astimezone(UTC)  # wall-clock days
