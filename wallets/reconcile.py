"""Cash reconciliation: the top-ups and invoice payments the ledger recorded (the cash it received),
and the refunds of top-ups and of overpaid credit (the cash it gave back), against a payment
processor's export.

A top-up or invoice payment is matched by its `reference` (what `POST /v1/customers/{id}/topups`
or `POST /v1/invoices/{id}/payments` was given: the processor's charge or payment id) and
compared by amount and currency, exactly, in atomic units; a customer's invoice payments under one
reference are one receipt, compared by their sum (`receipts`). A refund (`POST /v1/customers/{id}/
grants/{grant_id}/reverse` of a top-up, or `POST /v1/customers/{id}/refunds` of overpaid credit, given
the processor's refund id as its `reference`) is cash out: a negative amount, matched against the
file's refund rows (negative there too).
Two file layouts are read, told apart by their header:

- Stripe balance transactions, as the Dashboard exports them (`id`, `Type`, `Source`, `Amount`,
  `Currency`, `Created (UTC)`, ...) or as the itemized balance report does (`balance_transaction_id`,
  `reporting_category`, `source_id`, `gross`, `currency`, `created_utc`, optional `charge_id`,
  `payment_intent_id`, `customer_facing_amount` and `customer_facing_currency`: what the customer
  paid, compared where given, since `gross` is in the settlement currency). Only rows of type
  `charge` or `payment` (category `charge`) are payments, and rows of type (category) `refund` are
  refunds; other rows are skipped; a reference matches the row's source, charge, payment intent or
  balance transaction id (a refund row's source is its refund, `re_...`; its charge and payment
  intent ids are its charge's, so an id two rows share goes to the row of the same direction).
- Generic: `reference,amount,currency` and an optional `date` (RFC 3339 or a date), amounts in
  the currency's display unit (`100.00`).
Amounts are plain decimals (`1,234.56`), read exactly; any other writing is refused (`_AMOUNT`).
"""
from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from pricing.parse import uppercase_z
from wallets import chart


class PaymentFileError(ValueError):
    """The file cannot be read as a payment export; says which line and why."""


@dataclass(frozen=True, slots=True)
class Payment:
    reference: str
    amount: int  # atomic units of `currency`
    currency: str
    where: str  # "line 7" in the file, "entry 123 (customer acme)" in the ledger
    at: datetime | None = None
    aliases: tuple[str, ...] = ()  # other ids of the same file row that a reference may name
    customer: str = ""  # the ledger's: whose top-up or invoice payment
    kind: str = ""  # the ledger's: "topup", "invoice_payment", "grant_reversal" (a top-up's refund), "credit_refund"
    entry_id: int | None = None  # the ledger's


@dataclass(slots=True)
class Reconciliation:
    matched: list[tuple[Payment, Payment]] = field(default_factory=list)  # (ledger, file)
    mismatched: list[tuple[Payment, Payment]] = field(default_factory=list)
    only_in_ledger: list[Payment] = field(default_factory=list)
    only_in_file: list[Payment] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.mismatched or self.only_in_ledger or self.only_in_file or self.duplicates)


STRIPE_DASHBOARD = {"id", "type", "source", "amount", "currency"}
STRIPE_ITEMIZED = {"balance_transaction_id", "reporting_category", "gross", "currency"}
# optional columns of the itemized report: `gross` is in the account's settlement currency, after
# conversion; these are what the customer was charged, in the currency the ledger recorded
STRIPE_FACING = {"customer_facing_amount", "customer_facing_currency"}
GENERIC = {"reference", "amount", "currency"}
STRIPE_PAYMENT_TYPES = {"charge", "payment"}
STRIPE_REFUND_TYPES = {"refund"}  # cash given back: matched against the ledger's refunds of top-ups


def _time(raw: str | None, where: str) -> datetime | None:
    if not raw:
        return None
    try:
        value = datetime.fromisoformat(uppercase_z(raw.strip().replace(" ", "T", 1)))  # "z": RFC 3339 5.6
    except ValueError:
        raise PaymentFileError(f"{where}: not a time: {raw!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# A plain decimal in the display unit: an optional sign, ASCII digits with commas only between
# groups of three (1,234.56), an optional decimal point. Anything else (1.234,56 written the
# European way, exponents, underscores) is refused rather than read as another number.
_AMOUNT = re.compile(r"[+-]?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?")


def _atomic(raw: str, scale: int, where: str) -> int:
    text = raw.strip()
    if len(text) > 60 or _AMOUNT.fullmatch(text) is None:
        raise PaymentFileError(f"{where}: not an amount: {raw[:40]!r} (write it like 1234.56 or 1,234.56)")
    # in integers, exactly (Decimal's context rounds past 28 significant digits)
    whole, _, fraction = text.lstrip("+-").replace(",", "").partition(".")
    if len(fraction.rstrip("0")) > scale:
        raise PaymentFileError(f"{where}: {raw!r} has more decimal places than the currency's {scale}")
    units = int(whole) * 10**scale + int(fraction[:scale].ljust(scale, "0") or "0")
    return -units if text.startswith("-") else units


def read_payments(lines: Iterable[str], scale_of: Callable[[str], int]) -> tuple[list[Payment], Counter]:
    """The payments of a Stripe or generic CSV, and the count of rows skipped as not payments."""
    reader = csv.DictReader(lines, strict=True)  # a quote left open or stray is an error, not read on
    try:
        return _read(reader, scale_of)
    except csv.Error as exc:
        raise PaymentFileError(f"line {reader.line_num + 1}: {exc}") from None  # the line being read
    except UnicodeDecodeError:
        raise PaymentFileError("not UTF-8 text: save the file as UTF-8") from None


def _read(reader: csv.DictReader, scale_of: Callable[[str], int]) -> tuple[list[Payment], Counter]:
    header = {(name or "").strip().lower(): name for name in reader.fieldnames or ()}
    facing: tuple[str, str] | None = None
    if STRIPE_ITEMIZED <= header.keys():
        type_col, amount_col, time_col = "reporting_category", "gross", "created_utc"
        if STRIPE_FACING <= header.keys():  # what the customer paid, before conversion to the account's
            facing = ("customer_facing_amount", "customer_facing_currency")
        ref_cols: tuple[str, ...] = ("source_id", "charge_id", "payment_intent_id", "balance_transaction_id")
    elif STRIPE_DASHBOARD <= header.keys():
        type_col, amount_col, time_col, ref_cols = "type", "amount", "created (utc)", ("source", "id")
    elif GENERIC <= header.keys():
        type_col, amount_col, time_col, ref_cols = None, "amount", "date", ("reference",)
    else:
        raise PaymentFileError("the header is neither Stripe's balance transactions nor the generic "
                               "reference,amount,currency")
    payments, skipped = [], Counter()
    for row in reader:
        # the line the row starts on, as an editor numbers them: the reader skips blank lines, and a
        # quoted cell may hold line breaks, so rows are not lines (counting them named the line before)
        where = f"line {reader.line_num - _line_breaks(row)}"
        value = {key: (row.get(name) or "").strip() for key, name in header.items()}
        if type_col and value[type_col].lower() not in STRIPE_PAYMENT_TYPES | STRIPE_REFUND_TYPES:
            skipped[value[type_col] or "(no type)"] += 1
            continue
        ids = tuple(v for v in (value.get(c, "") for c in ref_cols) if v)
        if not ids:
            raise PaymentFileError(f"{where}: no reference")
        amount, currency = value[amount_col], value["currency"].upper()
        if facing and value[facing[0]] and value[facing[1]]:
            amount, currency = value[facing[0]], value[facing[1]].upper()
        if not currency:
            raise PaymentFileError(f"{where}: no currency")
        payments.append(Payment(ids[0], _atomic(amount, scale_of(currency), where), currency, where,
                                _time(value.get(time_col), where), ids[1:]))
    return payments, skipped


def _line_breaks(row: dict) -> int:
    """The line breaks inside a row's quoted cells (an extra field's cells come as a list)."""
    cells = [cell for value in row.values() for cell in (value if isinstance(value, list) else [value])]
    return sum(cell.count("\n") for cell in cells if isinstance(cell, str))


# The entries that bring cash in: top-ups, and payments of invoices (a postpaid customer's); and
# those that take it out: a top-up's refund (a reversal of a top-up's lot; a grant's moves no cash)
# and a cash refund of overpaid credit (POST /v1/customers/{id}/refunds).
CASH_IN = {"topup": "top-up", "invoice_payment": "invoice payment", "grant_reversal": "refund",
           "credit_refund": "refund of overpaid credit"}
_TOPUPS = text("""
SELECT j.id, j.kind, j.occurred_at, j.customer_id, coalesce(j.metadata ->> 'reference', '') AS reference,
       a.asset, sum(p.amount)::bigint AS amount
  FROM journal_entries j
  JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
  JOIN accounts a ON a.id = p.account_id
 WHERE j.kind IN ('topup', 'invoice_payment', 'grant_reversal', 'credit_refund') AND a.code = :cash || a.asset
 GROUP BY j.lane, j.id, a.asset ORDER BY j.id
""")


async def ledger_topups(conn: AsyncConnection) -> list[Payment]:
    """Every top-up, invoice payment and refund: the cash it brought in (a refund: took out,
    negative), with its reference and time (a window is `windowed`'s)."""
    rows = await conn.execute(_TOPUPS, {"cash": chart.cash_account("")})
    return [Payment(r.reference, int(r.amount), r.asset,
                    f"entry {r.id} (customer {r.customer_id}{'' if r.kind == 'topup' else ', ' + CASH_IN[r.kind]})",
                    r.occurred_at, customer=r.customer_id, kind=r.kind, entry_id=r.id)
            for r in rows]


def receipts(ledger: list[Payment]) -> list[Payment]:
    """The ledger's cash as the processor saw it: a customer's invoice payments under one reference
    and currency are one receipt split over its invoices (one charge that paid two of them), so
    they count as one payment of their sum. Top-ups are each their own: two under one reference
    are credit given twice, and stay duplicates."""
    grouped: dict[tuple[str, str, str], list[Payment]] = {}
    for p in ledger:
        if p.kind == "invoice_payment" and p.reference:
            grouped.setdefault((p.customer, p.reference, p.currency), []).append(p)
    out = []
    for p in ledger:
        parts = grouped.get((p.customer, p.reference, p.currency)) if p.kind == "invoice_payment" else None
        if not parts or len(parts) == 1:
            out.append(p)
        elif parts[0] is p:
            entries = ", ".join(str(x.entry_id) for x in parts)
            out.append(replace(p, amount=sum(x.amount for x in parts),
                               where=f"entries {entries} (customer {p.customer}, invoice payments)",
                               at=min((x.at for x in parts if x.at is not None), default=None)))
    return out


async def asset_scales(conn: AsyncConnection) -> dict[str, int]:
    return {code: scale for code, scale in await conn.execute(text("SELECT code, scale FROM assets"))}


def windowed(ledger: list[Payment], paid: list[Payment], start: datetime | None,
             end: datetime | None) -> tuple[list[Payment], list[Payment]]:
    """The ledger's receipts of [start, end) and the file's rows that go with them: a payment is
    the window's whose ledger record it is, so consecutive windows count it once. The processor
    dates a payment before the ledger records its top-up, and a window's bound can fall between
    the two: a row dated outside the window is taken in when a reference matches it to a receipt
    inside (in the same direction: cash in, or a refund's out; a refund row carries its charge's
    ids), and a row dated inside is left out when it matches only a receipt outside (the other
    window's, where it is matched). A row without a time is in every window. Invoice payments under
    one reference are one receipt (`receipts`), of its first part's time."""
    def inside(at: datetime | None) -> bool:
        return at is None or ((start is None or at >= start) and (end is None or at < end))

    def keys(p: Payment) -> set[tuple[str, bool]]:
        return {(ref, p.amount < 0) for ref in (p.reference, *p.aliases) if ref}

    ledger = receipts(ledger)
    mine = [p for p in ledger if inside(p.at)]
    ours = set().union(*map(keys, mine))
    others = set().union(*(keys(p) for p in ledger if not inside(p.at))) - ours
    return mine, [p for p in paid if keys(p) & ours or (inside(p.at) and (p.at is None or not keys(p) & others))]


def reconcile(ledger: list[Payment], paid: list[Payment]) -> Reconciliation:
    """Match by reference (a file row also answers to its other ids), then compare amounts."""
    result = Reconciliation()
    ledger = receipts(ledger)
    for name, items in (("the ledger", ledger), ("the file", paid)):
        counts = Counter(p.reference for p in items if p.reference)
        result.duplicates += [f"reference {ref!r} appears {n} times in {name}" for ref, n in counts.items() if n > 1]
    # a row by its own reference first, then by its other ids: a refund row carries its charge's
    # charge and payment intent ids too, so of the rows an id names the one of the same direction
    # (cash in, or a refund's cash out) is taken, wherever it sits in the file
    by_id: dict[str, list[Payment]] = {}
    for p in paid:
        by_id.setdefault(p.reference, []).append(p)
    for p in paid:
        for ref in p.aliases:
            by_id.setdefault(ref, []).append(p)
    used: set[int] = set()
    for mine in ledger:
        rows = by_id.get(mine.reference, []) if mine.reference else []
        theirs = min(rows, key=lambda p, out=mine.amount < 0: (p.amount < 0) != out, default=None)
        if theirs is None or id(theirs) in used:
            result.only_in_ledger.append(mine)
            continue
        used.add(id(theirs))
        same = (mine.amount, mine.currency) == (theirs.amount, theirs.currency)
        (result.matched if same else result.mismatched).append((mine, theirs))
    result.only_in_file = [p for p in paid if id(p) not in used]
    return result
