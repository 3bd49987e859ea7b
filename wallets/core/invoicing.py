"""Closing a billing period and paying its invoice, as pure decisions.

Close: once a period's grace window is over, the volume tiers used in it are trued up (every
unit at the price of the tier the period reached, less what graduated rating charged), as an
ordinary balanced entry billed in that period; then the invoice is built from the period's
rollup, numbered with the issuer's next number of the year (gapless), frozen, and announced
(`invoice.finalized`); the customer's first open period moves on.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec

from ledger.model import JournalEntry
from pricing.books import PriceBook, PriceVersion, Rule, per_units
from pricing.money import discount_unit, format_money, per_amount, pricing_context, round_entry
from pricing.overrides import FreeAllowance
from pricing.rating import volume_tier_price, volume_true_up
from wallets import chart
from wallets.core import money_back
from wallets.core.billing import (
    LINE,
    NOTED,
    Balances,
    Header,
    Rollup,
    amount_due_units,
    document,
    due_rounding,
    entry_rollup,
    merge,
    whole_rounding,
)
from wallets.core.billing import opening_balances as opening_of
from wallets.core.billing import total_units as total_of
from wallets.core.commands import TOPUP_PRIORITY, ClosePeriod, PayInvoice
from wallets.core.credits import opened_lot, whole_minor_units
from wallets.core.decision import (
    NOTHING_DUE,
    Decision,
    InvoiceFinalized,
    LotOpened,
    Outcome,
    PeriodAdvanced,
    TrueUpChargesGiven,
    TrueUpPosted,
    UsageCounted,
)
from wallets.core.legs import Legs, entry, funding, settlement, settlement_legs
from wallets.core.payments import (
    apply_corrections,
    apply_unapplied,
    check_reference,
    open_invoices,
    paid_event,
    payable,
    payment_effects,
    unapplied_parts,
)
from wallets.core.rating import ALLOWANCE
from wallets.core.results import InvoiceClosed, PaymentResult
from wallets.core.state import InvoiceDue, RulePaid, State, Unapplied
from wallets.errors import ConflictError, CurrencyMismatchError, NotFoundError, OverpaymentError
from wallets.model import Lot, Wallet
from wallets.periods import Period, close_due_at, following, period_named, period_of

SCALE = chart.ASSET_SCALE


def invoice_number(issuer: str, year: int, seq: int) -> str:
    return f"{issuer}-{year:04d}-{seq:06d}"


def flat_in(versions: Mapping[str, PriceVersion], rule_id: str, version: str) -> bool:
    """Whether `version` prices the rule other than by volume (flat or graduated): what it rated is
    final at its price, and counts for no volume tier of the rule."""
    rule = next((r for r in versions[version].rules if r.id == rule_id), None) if version in versions else None
    return rule is not None and (rule.tier_mode != "volume" or not rule.tiers)


# What a re-rate moved of a charge's usage line at the book's price: (model, token type), rule id,
# the version it was charged under, the version it stands at now, units, amount charged, amount now,
# the rule that rates them now ("": none at the book's price; None: not kept, the line's rule if
# the version now names it), and the charge's id
Moved = tuple[tuple[str | None, str | None], str, str, str, int, int, int, str | None, int]


def rerated_moves(charges: Sequence[tuple[str, Sequence[Mapping[str, Any]], str, Sequence[Sequence[Any]],
                                          Mapping[str, str] | None, int]]) -> list[Moved]:
    """What re-rates moved of each of the period's charges (State.rerated: model, lines as charged,
    the version its last re-rate rated it with, that re-rate's amounts by model and token type, the
    rules it rated them with by token type, None where not kept, and its id): each usage line of a
    rule at the book's price moves from the version that charged it to the one it stands at now, and
    to the rule that rates its token type now, its token type's amount changed by what the re-rates
    moved of it (on the first of its lines)."""
    out: list[Moved] = []
    for model, lines, version, amounts, rules, charge_id in charges:
        now = {token_type: int(amount) for _, token_type, amount in amounts}
        was: dict[str, int] = {}
        for line in lines:
            key = line.get("token_type") or line["kind"]
            was[key] = was.get(key, 0) + int(line["amount_units"])
        for line in lines:
            if line["kind"] != "usage" or not line.get("rule_id") or line.get("override_id") is not None:
                continue
            token_type, amount = line.get("token_type"), int(line["amount_units"])
            moved = now.pop(token_type, 0) - was.pop(token_type, 0) if token_type in was else 0
            out.append(((model, token_type), line["rule_id"], line.get("price_version") or "", version,
                        int(line["quantity"]), amount, amount + moved,
                        None if rules is None else rules.get(token_type or line["kind"], ""), charge_id))
    return out


def _rated(rollup: Rollup, period: str) -> dict[tuple[str | None, str | None], set[str | None]]:
    """The rules each (model, token type) of the period's own usage was rated with at the book's
    price, None for a discount or a contract price sharing it."""
    rated: dict[tuple[str | None, str | None], set[str | None]] = {}
    for item in rollup:
        if item.startswith(LINE):
            origin, kind, model, token_type, rule_id, _, _, override_id, _ = json.loads(item[len(LINE):])
            if origin == period and kind in ("usage", "discount"):
                rated.setdefault((model, token_type), set()).add(
                    rule_id if kind == "usage" and override_id is None else None)
    return rated


def told_moves(rollup: Rollup, period: str, moves: Sequence[Moved]) -> list[Moved]:
    """The `moves` that tell their rule's share: no discount or contract price shares their model
    and token type in the period (their lines would not tell it), and the rule they left rated it."""
    rated = _rated(rollup, period)
    return [m for m in moves if None not in rated.get(m[0], ()) and m[1] in rated.get(m[0], ())]


def moved_funding(rules: Mapping[str, tuple[RulePaid, ...]], moves: Sequence[Moved], told: Sequence[Moved]
                  ) -> dict[str, tuple[RulePaid, ...]]:
    """store.rule_funding's rows (`rules`; None: a charge a re-rate moved) with the units, amount and
    version of each charge a re-rate moved, under the rule that rates it now, as the true-up counts
    them (`moves`, of which `told`: told_moves), so its payers get its own overcharge; a charge
    whose moves to the rule are not all told keeps None (its money back is shared over the rule's
    payers). No discount shares a told move's token type: nothing off it (the seventh field)."""
    pieces: dict[tuple[int, str], list[Any]] = {}  # (charge id, rule id) -> [units, amount, version, told]
    for move in moves:
        *_, now, quantity, _, after, rule_now, charge_id = move
        if rule_now:
            piece = pieces.setdefault((charge_id, rule_now), [0, 0, now, True])
            piece[0] += quantity
            piece[1] += after
            piece[3] = piece[3] and move in told
    out = {}
    for rule_id, paid in rules.items():
        rows = []
        for c, a, v, units, *rest in paid:
            piece = pieces.get((c, rule_id)) if units is None else None
            rows.append((c, a, v, *piece[:3], 0) if piece and piece[3] else (c, a, v, units, *rest))
        out[rule_id] = tuple(rows)
    return out


def volume_rules(book: PriceBook | None, rollup: Rollup, period: str, moves: Sequence[Moved] = (),
                 priced: dict[str, int] | None = None) -> list[tuple[Rule, str, int, int]]:
    """(rule, price version, quantity, amount charged) of each volume-tiered rule the period's own
    usage was rated with at the book's price (not a contract price), one for each version that
    tiers the rule by volume, in the book's order (by its time: labels are the caller's, and "v9"
    sorts after "v10"): the units and amounts that version rated, at its own tiers; their units
    together reach the tier (true_up_lines); what a version pricing the rule flat (or graduated)
    rated is final at its price, but its units count toward the tier as the period's counters
    counted them (added to `priced`, by rule id, where given). A re-rate of the period's charges
    counts for the rule that rated their model and token type, unless a discount or a contract price
    shares them (their lines do not tell the rule's share): the charges it moved (`moves`,
    rerated_moves) count under the version they stand at now, as re-rated, for the rule that rates
    them now (not kept: the one their line names, if that version has it; else they leave it). A re-rate's
    `adjustment` lines of a model and token type no charge's moves tell (`moves` not given) count
    at the version it re-rated to, the rule's units of every version with them, at the tiers of the
    latest version (the lines do not tell which version's units they moved)."""
    if book is None:
        return []
    order = {v.version: i for i, v in enumerate(book.versions)}  # the book's versions, by effective_from
    versions = {v.version: v for v in book.versions}

    pieces: dict[str, dict[str, list[int]]] = {}  # rule id -> version -> [units, amount]
    every: dict[str, list[Any]] = {}  # rule id -> [adjustments' versions, amount]: every version counts
    rated = _rated(rollup, period)  # (model, token type) -> its rules
    adjusted: list[tuple[tuple[str | None, str | None], str, int]] = []
    for item, (quantity, amount) in rollup.items():
        if not item.startswith(LINE):
            continue
        origin, kind, model, token_type, rule_id, _, _, override_id, version = json.loads(item[len(LINE):])
        if origin != period:
            continue
        if kind == "adjustment":
            adjusted.append(((model, token_type), version, amount))
            continue
        if kind != "usage" or rule_id is None or override_id is not None:
            continue  # a contract price is the customer's own: the book's volume tiers do not true it up
        piece = pieces.setdefault(rule_id, {}).setdefault(version, [0, 0])
        piece[0] += quantity
        piece[1] += amount

    def alone(key: tuple[str | None, str | None]) -> str | None:
        rules = rated.get(key, set())
        return next(iter(rules)) if len(rules) == 1 and None not in rules else None

    told = set()
    # a discount or a contract price sharing them: the lines do not tell the rule's share
    for key, rule_id, was, now, quantity, before, after, rule_now, _ in told_moves(rollup, period, moves):
        told.add(key)
        if rule_now is None:  # not kept: the charge's line tells its rule, if the version now names it
            rule_now = rule_id if now not in versions or any(r.id == rule_id for r in versions[now].rules) else ""
        for rule, version, q, a in ((rule_id, was, -quantity, -before), (rule_now, now, quantity, after)):
            if rule:
                piece = pieces.setdefault(rule, {}).setdefault(version, [0, 0])
                piece[0] += q
                piece[1] += a
    for key, version, amount in adjusted:
        if key in told or (rule_id := alone(key)) is None:
            continue
        versions_, a = every.setdefault(rule_id, [[], 0])
        every[rule_id] = [[*versions_, version], a + amount]
    found = []
    for rule_id, by_version in sorted(pieces.items()):
        if rule_id in every:  # one piece: every version's units at the latest version's tiers
            extra, more = every[rule_id]
            counted = [(v, q, a) for v, (q, a) in by_version.items()] + [(v, 0, 0) for v in extra]
            latest = max((v for v, *_ in counted), key=lambda v: order.get(v, -1))
            counted = [(latest, sum(q for _, q, _ in counted), sum(a for *_, a in counted) + more)]
        else:
            counted = [(v, q, a) for v, (q, a) in by_version.items() if (q or a) and not flat_in(versions, rule_id, v)]
            flat = sum(n for v, (n, _) in by_version.items() if flat_in(versions, rule_id, v))
            if priced is not None and flat:
                priced[rule_id] = priced.get(rule_id, 0) + flat
        for version, quantity, amount in sorted(counted, key=lambda c: order.get(c[0], -1)):
            rule = next((r for r in versions[version].rules if r.id == rule_id), None) if version in versions else None
            if rule is not None and rule.tier_mode == "volume" and rule.tiers:
                found.append((rule, version, quantity, amount))
    return found


# A re-rate's rules (charge_adjustments.new_rules) keep the rule of a token type's contract-priced
# usage under this prefix and the token type: a re-rate moving it to another rule id is kept
CONTRACT = "contract:"


def contract_units(book: PriceBook | None, rollup: Rollup, period: str,
                   rerated: Sequence[tuple[Any, ...]] = ()) -> dict[str, int]:
    """By volume rule, the units of the period's own usage a contract price rated (under any version
    of the book: one pricing the rule flat too): their price is the customer's own (no true-up of
    them), but they count toward the rule's tier, as the period's counters counted them when rating
    the usage after them (wallets.core.rating.period_counts). A charge a re-rate rated under another rule id
    (`rerated`, State.rerated's: its rules keep the contract's, CONTRACT) counts for that rule, under
    the version it re-rated to; one it left under its rule counts where it was charged."""
    if book is None:
        return {}
    versions = {v.version: v for v in book.versions}
    found: dict[str, int] = {}

    def count(rule_id: str, version: str, quantity: int) -> None:
        if version in versions:
            found[rule_id] = found.get(rule_id, 0) + quantity

    for item, (quantity, _) in rollup.items():
        if not item.startswith(LINE):
            continue
        origin, kind, _, _, rule_id, _, _, override_id, version = json.loads(item[len(LINE):])
        if origin == period and kind == "usage" and rule_id is not None and override_id is not None:
            count(rule_id, version, quantity)
    for _, lines, now, _, rules, _ in rerated:
        for line in lines:
            rule_id, version = line.get("rule_id"), line.get("price_version") or ""
            moved = (rules or {}).get(CONTRACT + (line.get("token_type") or line["kind"]))
            if line["kind"] == "usage" and rule_id and line.get("override_id") is not None and moved not in (
                    None, rule_id):
                count(rule_id, version, -int(line["quantity"]))
                count(moved, now, int(line["quantity"]))
    return {rule_id: units for rule_id, units in found.items() if units}


# A discount's share of a volume rule's usage in a period: (model, token type, discount id, its
# fraction, the version that rated the usage) -> [units it discounted, atomic units it took off]
Discounted = dict[tuple[str | None, str | None, str, Decimal, str], list[int]]


def volume_discounts(book: PriceBook | None, rollup: Rollup, period: str) -> dict[str, Discounted]:
    """By volume rule, what the customer's discounts took off the period's own usage it rated at
    the book's tier prices (a discounted contract price is the customer's own: no true-up)."""
    if book is None:
        return {}
    versions = {v.version: v for v in book.versions}
    found: dict[str, Discounted] = {}
    for item, (quantity, amount) in rollup.items():
        if not item.startswith(LINE):
            continue
        origin, kind, model, token_type, rule_id, unit_price, tier, override_id, version = json.loads(item[len(LINE):])
        if origin != period or kind != "discount" or tier is None or version not in versions:
            continue
        rule = next((r for r in versions[version].rules if r.id == rule_id), None)
        if rule is None or rule.tier_mode != "volume" or not 0 <= tier < len(rule.tiers) or not rule.tiers[tier].price:
            continue
        with pricing_context():
            share = -Decimal(unit_price) / rule.tiers[tier].price  # the discount's percent / 100, exact
        units = found.setdefault(rule_id, {}).setdefault((model, token_type, override_id, share, version), [0, 0])
        units[0] += quantity
        units[1] += amount
    return found


def true_up_lines(rules: list[tuple[Rule, str, int, int]], discounts: Mapping[str, Discounted] | None = None,
                  contracts: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Each volume rule's true-up at the book's price, one line for each version that tiers it by
    volume (`rules`, volume_rules): the units of the rule under all of them reach the tier, and each
    version's units are priced at its own price of that tier, less what they were charged; and beside
    it what each discount that took its share off the rule's usage takes off the true-up too (the
    same share of the units it discounted, at the tier reached, less what it took): a line of its own
    carrying its override id. The units a contract price rated of a rule (`contracts`, by rule id:
    contract_units) count toward its tier, and are not trued up themselves."""
    lines: list[dict[str, Any]] = []
    exact: list[Decimal] = []
    reached: dict[str, int] = {rule.id: (contracts or {}).get(rule.id, 0) for rule, *_ in rules}
    for rule, _, q, _ in rules:
        reached[rule.id] += q
    alone = {rule.id for rule, *_ in rules if sum(r.id == rule.id for r, *_ in rules) == 1}
    for rule, version, q, a in rules:
        total = reached[rule.id]
        price = volume_tier_price(rule, total)
        tier = next(i for i, t in enumerate(rule.tiers) if t.price == price and (t.up_to is None or total <= t.up_to))
        line = {"kind": "volume_true_up", "rule_id": rule.id, "price_version": version, "tier": tier}
        exact.append(volume_true_up(rule, q, Decimal(a).scaleb(-SCALE), total))
        lines.append({**line, "token_type": rule.token_type, "quantity": q, "unit_price": str(price),
                      "model": rule.model, "override_id": None})
        for (model, token_type, override_id, share, rated), (qd, ad) in sorted(
                (discounts or {}).get(rule.id, {}).items(), key=lambda x: tuple(map(str, x[0]))):
            if rated != version and rule.id not in alone:
                continue  # the version that rated it has a line of its own
            with pricing_context():
                exact.append(-per_amount(qd * price * share, per_units(rule.token_type)) - Decimal(ad).scaleb(-SCALE))
                unit = _discount_unit(price, share)
            lines.append({**line, "token_type": token_type, "quantity": qd, "unit_price": str(unit), "model": model,
                          "override_id": override_id})
    _, units = round_entry(exact, SCALE)
    for line, amount, u in zip(lines, exact, units, strict=True):
        line.update(amount_units=u, exact=str(amount))
    return [line for line in lines if line["amount_units"]]


def _discount_unit(price: Decimal, share: Decimal) -> Decimal:
    """A discount's unit price of `share` (its percent / 100) off `price`, written as a charge's
    discount line writes it (pricing.money.discount_unit): -100 of 1000 at 10 %, not -100.0 (price
    x 0.1). The caller holds the pricing context."""
    return discount_unit(price, share * 100)


def allowance_lines(rollup: Rollup, period: str, true_ups: list[dict[str, Any]],
                    allowances: Sequence[FreeAllowance] = ()) -> list[dict[str, Any]]:
    """A free allowance pays what the period's usage costs at the tier reached, up to its amount.
    What of a true-up's money back the customer never paid goes back to the free allowances that
    paid it (a positive `free_allowance` line each, the last id first, up to what it paid of the
    period's usage), never out as credit; what a true-up charges more is paid by the allowances
    in force at the period's end (`allowances`) with room left, in their order, as usage is (a
    negative `free_allowance` line each), the rest by the customer."""
    back = -sum(line["amount_units"] for line in true_ups)
    if back < 0:
        return _allowances_pay(rollup, period, -back, allowances)
    if back == 0:
        return []
    paid: dict[str, int] = {}  # allowance id -> what it paid of the period's usage
    own = 0  # what the period's usage cost the customer itself, after discounts, allowances, re-rates
    for item, (_, amount) in rollup.items():
        if item.startswith(LINE):
            origin, kind, *_, override_id, _ = json.loads(item[len(LINE):])
            if origin == period and kind in ("usage", "discount", "free_allowance", "adjustment"):
                own += amount
                if kind == "free_allowance" and override_id is not None:
                    paid[override_id] = paid.get(override_id, 0) - amount
    return [_allowance_line(allowance_id, give) for allowance_id, give in given_back(back, own, paid).items()]


def given_back(back: int, own: int, paid: Mapping[str, int]) -> dict[str, int]:
    """Of a true-up's money back (`back` > 0), what goes back to each free allowance (id -> units):
    what the customer did not pay itself of the period's usage (`own`), to the allowances that paid
    it (`paid`), the last id first, each up to what it paid."""
    excess, out = back - max(own, 0), {}
    for allowance_id in sorted(paid, reverse=True):
        give = min(excess, paid[allowance_id])
        if give > 0:
            excess -= give
            out[allowance_id] = give
    return out


def _allowances_pay(rollup: Rollup, period: str, more: int, allowances: Sequence[FreeAllowance]
                    ) -> list[dict[str, Any]]:
    taken: dict[str, int] = {}  # allowance id -> what it paid of the period's usage
    for item, (_, amount) in rollup.items():
        if item.startswith(LINE):
            origin, kind, *_, override_id, _ = json.loads(item[len(LINE):])
            if origin == period and kind == "free_allowance" and override_id is not None:
                taken[override_id] = taken.get(override_id, 0) - amount
    return [_allowance_line(allowance_id, -take) for allowance_id, take in paying(more, taken, allowances).items()]


def paying(more: int, taken: Mapping[str, int], allowances: Sequence[FreeAllowance]) -> dict[str, int]:
    """Of what a true-up charges more (`more` > 0), what each free allowance in force at the period's
    end pays (id -> units): each, in their order, up to its room left (its amount less what it paid
    of the period's usage, `taken`)."""
    out: dict[str, int] = {}
    for allowance in allowances:
        take = min(more, int(allowance.amount.scaleb(SCALE)) - taken.get(allowance.id, 0) - out.get(allowance.id, 0))
        if take > 0:
            more -= take
            out[allowance.id] = out.get(allowance.id, 0) + take
    return out


def _allowance_line(allowance_id: str, units: int) -> dict[str, Any]:
    return {"kind": "free_allowance", "token_type": None, "quantity": 0, "unit_price": None, "amount_units": units,
            "exact": str(Decimal(units).scaleb(-SCALE)), "rule_id": None, "price_version": None, "model": None,
            "tier": None, "override_id": allowance_id}


def allowances_at_end(w: Wallet, label: str) -> tuple[FreeAllowance, ...]:
    """The free allowances in force at the end of `w`'s period `label` (its overrides then)."""
    if w.overrides is None:
        return ()
    in_force = w.overrides.at(period_named(label, w.customer.cycle).end - timedelta(microseconds=1))
    return in_force.overrides.allowances if in_force is not None else ()


def counters_given_back(state: State, customer_id: str, label: str, book: PriceBook | None,
                        lines: Sequence[Mapping[str, Any]]) -> list[UsageCounted]:
    """What a true-up gives back to each free allowance (its positive `free_allowance` lines)
    its period's counters no longer count as taken, so late usage of the period gets what the
    allowance has left: off the close's book's counter first, then the other books' (by id),
    each at most what it holds (a counter is never negative). What the allowance pays of a
    true-up (a negative line) counts as taken, on the close's book's counter."""
    given: dict[str, int] = {}
    taken: dict[str, int] = {}
    for line in lines:
        if line["kind"] == "free_allowance" and line.get("override_id") is not None:
            key, units = ALLOWANCE + line["override_id"], int(line["amount_units"])
            if units > 0:
                given[key] = given.get(key, 0) + units
            else:
                taken[key] = taken.get(key, 0) - units
    out = [UsageCounted(customer_id, label, book.id, taken)] if taken and book is not None else []
    books = sorted({b for cid, period, b in state.period_usage if cid == customer_id and period == label},
                   key=lambda b: (book is None or b != book.id, b))
    for book_id in books:
        held, moves = state.period_usage[(customer_id, label, book_id)], {}
        for key, units in given.items():
            take = min(units, max(held.get(key, 0), 0))
            if take > 0:
                moves[key], given[key] = -take, units - take
        if moves:
            out.append(UsageCounted(customer_id, label, book_id, moves))
    return out


def _true_up(state: State, w: Wallet, label: str, lines: list[dict[str, Any]], now: datetime,
             rules: Mapping[str, tuple[RulePaid, ...]], several: frozenset[str] = frozenset(),
             flat: frozenset[tuple[str, str]] = frozenset(), moved: frozenset[str] = frozenset()):
    """The true-up's legs: more charged is paid like usage (lots, then the receivable); money back
    goes where the money of the charges each rule rated came from, as a re-rate's
    (wallets.core.money_back: the lots that paid them, the last consumed first, a promotion's back to
    it; then what the customer owes), and the rest becomes credit (a paid lot). A rule two versions
    or more tier by volume (`several`: a line each, at each one's price) gives each line's back to
    what paid the charges its version rated, each charge's overcharge at that price, the rest shared
    over the payers; recorded per charge as a one-line rule's (its lines all one way: `whole`), so a
    re-rate after the close corrects each charge's part, and its entry keeps each version's line
    (`versions`, closing) for verify's per-charge tie. A charge of a version pricing the rule flat
    (`flat`: (rule id, version)) is final at its price: no line's overcharge of it. A line's
    discounts' lines take their share of it back: its money back is net of them (each_charge_first)."""
    amount = sum(line["amount_units"] for line in lines)
    cid = w.customer.id
    # the rules every charge of which is priced per charge (none re-rated: `moved`); a rule two versions tier
    # (each line giving back only its own version's charges) only where its lines all go one way:
    # one charging more beside one giving back, the charges' parts would not tie to the rule's line
    ways: dict[str, set[bool]] = {}
    for line in lines:
        if line.get("rule_id") in several and line.get("override_id") is None:
            ways.setdefault(line["rule_id"], set()).add(line["amount_units"] > 0)
    whole = {rule_id for rule_id, paid in rules.items() if len(ways.get(rule_id, ())) < 2 and rule_id not in moved
             and all(units is not None for _, _, _, units, *_ in paid)}
    # what each rule's line at the book's price gave back of each charge (a re-rate correcting the
    # true-up counts it, rerate_true_ups): nothing of a line giving nothing back; a line giving back
    # is recorded below only when every charge of its rule is priced per charge (none re-rated)
    parts: dict[str, dict[int, int]] = {line["rule_id"]: {} for line in lines if line.get("rule_id")
                                        and line.get("override_id") is None and line["amount_units"] >= 0
                                        and (line["rule_id"] not in several or line["rule_id"] in whole)}
    if amount > 0:
        s = settlement(w, None, amount, False, now)
        return settlement_legs(w, s), None, funding(w, None, s), parts, ()
    if amount == 0:
        return Legs(w.customer.currency), None, (), parts, ()
    receivable = chart.receivable_account(cid)
    order = money_back.last_consumed_first(w)
    shares: dict[str, int] = {receivable: 0}
    taken: dict[tuple[int, str], int] = {}  # what earlier lines take back of each charge, by payer
    placed: dict[tuple[int, str], int] = {}  # what each payer got of each charge's part (true_up_payers)
    for line in lines:  # what the rule's charges paid, less what earlier lines take back of them
        paid = rules.get(line.get("rule_id") or "", ())
        if line["amount_units"] < 0 and paid:
            mine = None
            if line.get("override_id") is None and line["rule_id"] in whole:
                mine = parts.setdefault(line["rule_id"], {})
            # each charge's overcharge at its version's price: its own line's (a flat version's none)
            paid = tuple((c, a, v, u, ch, *rest) if not rest or ((line["rule_id"], rest[0]) not in flat and (
                line["rule_id"] not in several or rest[0] == line["price_version"])) else (c, a, v, None, None, *rest)
                for c, a, v, u, ch, *rest in paid)
            net = -line["amount_units"] - sum(x["amount_units"] for x in lines if line.get("override_id") is None
                                              and x.get("override_id") is not None and x["rule_id"] == line["rule_id"]
                                              and x["price_version"] == line["price_version"])
            need, rest = money_back.each_charge_first(shares, taken, line, paid, receivable, order, parts=mine,
                                                      placed=placed if mine is not None else None, net=net)
            money_back.share(shares, taken, rest, need, receivable, order)
    legs, paid_back, lot = money_back.give_back(state, w, shares, -amount, now, f"volume true-up {label}")
    # the rows follow the postings: what the receivable got beside its charges' parts (a line no part
    # of which is per charge, a rule's rest) came off what is owed first, as a re-rate's (to_credit)
    own = shares.get(receivable, 0) - sum(v for (_, a), v in placed.items() if a == receivable)
    money_back.to_credit(placed, paid_back, lot, receivable, own)
    return legs, lot, paid_back, parts, money_back.payer_rows(parts, placed)


@dataclass(frozen=True, slots=True)
class Closing:
    """A period's volume true-up as its close posts it, and the rollup its invoice is built from."""

    lines: tuple[dict[str, Any], ...]
    posted: JournalEntry | None
    lot: LotOpened | None  # credit the money back (or rounding down) beyond what is owed opens
    paid: tuple[tuple[str, int], ...]  # what paid (or got back) the difference, by account
    rollup: Rollup  # the period's rollup with the true-up entry's items
    # what the true-up gave back of each charge, by rule (the rules it priced per charge): its
    # TrueUpChargesGiven, kept in true_up_charges, not in the entry's metadata
    parts: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    # what each payer got of each charge's part, over the rules (true_up_payers: money_back.payer_rows)
    payers: tuple[tuple[int, str | None, int], ...] = ()


def _rounding(state: State, w: Wallet, rollup: Rollup, paid: Sequence[tuple[str, int]],
              credits: Sequence[Unapplied]) -> tuple[int, int]:
    """What the close posts against the platform's rounding account so that the amount due, less
    what top-ups already paid of it, is whole minor units (`due_rounding`), or, when the period's
    corrections gave back more than it owes, so that the rest, which pays the customer's open
    invoices (`apply_corrections`), is; and what of it, rounded down, is credit rather than off the
    receivable: (rounding, credit). Rounded down, it takes off the receivable no more than it owes
    once the true-up (`paid`) is posted. A prepaid invoice that top-ups paid to within the
    difference keeps its exact figure (no rounding). A postpaid one's amount due is whole minor
    units all the same: what the rounding takes off beyond what is owed (a correction billed in a
    later period, before this close, gave that much back off the receivable already) becomes
    credit, as money back beyond what is owed does."""
    due = amount_due_units(rollup)
    parts, _ = unapplied_parts(credits, due)
    noted = rollup.get(NOTED, (0, 0))[1]  # the notes' money: whole, rounded once by each note
    rounding = due_rounding(due, sum(part for _, part in parts), w.customer.currency, noted)
    funded = rollup.get("funded:receivable", (0, 0))[1]
    if funded < 0 and open_invoices(state, w.customer.id):  # the invoices it pays keep whole minor units
        rounding = whole_rounding(funded, w.customer.currency, noted)
    receivable = chart.receivable_account(w.customer.id)
    owed = max(0, w.receivable - (w.credit_held or 0)) + sum(a for account, a in paid if account == receivable)
    if rounding >= 0 or owed >= -rounding:
        return rounding, 0
    return (rounding, -rounding - owed) if w.customer.billing == "postpaid" else (0, 0)


def _with_later_adjustments(state: State, w: Wallet, label: str, rollup: Rollup) -> Rollup:
    """`rollup` with the adjustment lines of period `label`'s own usage that re-rates billed in a
    later period (one made in its grace window): the true-up counts the charges as they stand."""
    prefix = f'{LINE}["{label}","adjustment",'
    extra = [found for period, r in state.rollups.get(w.customer.id, {}).items() if period > label
             if (found := {item: qa for item, qa in r.items() if item.startswith(prefix)})]
    if not extra:
        return rollup
    combined = dict(rollup)
    for found in extra:
        merge(combined, found)
    return combined


def closing(state: State, w: Wallet, label: str, rollup: Rollup, book: PriceBook | None, now: datetime,
            credits: Sequence[Unapplied] = ()) -> Closing:
    """The true-up of period `label` if it closed `now` with `w`'s balances, the rounding of its
    amount due (`_rounding`, with the top-ups' unapplied payments of the receivable, `credits`),
    posted as one entry, and the rollup its invoice shows: the close and the upcoming invoice's
    preview both build the invoice by it."""
    rollup = dict(rollup)
    moves = rerated_moves(state.rerated.get((w.customer.id, label), ()))
    counted = _with_later_adjustments(state, w, label, rollup)
    # the units a contract price or a version pricing the rule flat rated: final at their price, they
    # reach the rule's tier as the period's counters counted them (the upcoming invoice promised it)
    priced = contract_units(book, rollup, label, state.rerated.get((w.customer.id, label), ()))
    rules = volume_rules(book, counted, label, moves, priced)
    several = frozenset(r.id for r, *_ in rules if sum(x.id == r.id for x, *_ in rules) > 1)
    versions = {v.version: v for v in book.versions} if book is not None else {}
    listed = state.rule_funding.get((w.customer.id, label), {})
    # the rules listing a charge a re-rate moved: their parts are not recorded per charge (verify
    # reads each charge's overcharge off its lines as charged)
    moved = frozenset(rule_id for rule_id, paid in listed.items() if any(row[3] is None for row in paid))
    funded = moved_funding(listed, moves, told_moves(counted, label, moves))
    flat = frozenset((rule_id, row[5]) for rule_id, paid in funded.items()
                     for row in paid if len(row) > 5 and row[5] and flat_in(versions, rule_id, row[5]))
    lines = true_up_lines(rules, volume_discounts(book, rollup, label), priced)
    lines += allowance_lines(rollup, label, lines, allowances_at_end(w, label))
    cid, cur = w.customer.id, w.customer.currency
    legs, lot, paid, parts, payers = (_true_up(state, w, label, lines, now, funded, several, flat, moved) if lines
                                      else (Legs(cur), None, (), {}, ()))
    kinds = {code: x.kind for code, x in w.lots.items()}
    if lot is not None:
        kinds[lot.code] = lot.kind
    # the true-up's lines (on the invoice whether or not they move money) and what paid them
    merge(rollup, entry_rollup(w.customer, None, kinds, [(label, x) for x in lines], paid))
    rounding, credit = _rounding(state, w, rollup, paid, credits)
    if rounding > 0:
        legs.debit(chart.receivable_account(cid), rounding).credit(chart.rounding_account(cur), rounding)
    elif rounding < 0:
        legs.debit(chart.rounding_account(cur), -rounding).credit(chart.receivable_account(cid), -rounding - credit)
    if credit:  # the true-up's credit lot takes it, or one of its own
        lot = (opened_lot(state, w, "topup", credit, TOPUP_PRIORITY, None, now, reference=f"invoice rounding {label}")
               if lot is None else msgspec.structs.replace(lot, granted=lot.granted + credit))
        legs.credit(lot.code, credit)
        kinds[lot.code] = lot.kind
    if lines:
        # what it gave to where the money of lots closed before it went, for each (a grant revoked
        # in whole: promotions): a correction may take it back from there (store.load_payers)
        moved = money_back.closed_moves(w, paid, now)
        # of a rule two versions tier and given back charge by charge (`parts`), each version's line:
        # verify ties each charge's part to its own version's (its price of the tier reached, its amount)
        # (of a rule one volume version tiers beside one pricing it flat, its line: its own charges)
        split = [[ln["rule_id"], ln["price_version"], ln["unit_price"], ln["amount_units"]] for ln in lines
                 if (ln["rule_id"] in several or any(r == ln["rule_id"] for r, _ in flat))
                 and ln["rule_id"] in parts and ln.get("override_id") is None]
        posted = entry(f"true-up:{cid}:{label}", "volume_true_up", legs, cid, now,
                       {"period": label, "rules": [line["rule_id"] for line in lines],
                        **({"versions": split} if split else {}),
                        **({"amount_due_rounding": rounding} if rounding else {}),
                        **({"closed_lots": moved} if moved else {}),
                        # what it posted each account beyond its payer rows: verify ties the rows to it
                        **({"beyond_payer_rows": money_back.beyond_rows(legs, payers)} if parts else {})})
    else:
        posted = entry(f"invoice-rounding:{cid}:{label}", "invoice_rounding", legs, cid, now,
                       {"period": label, "amount_due_rounding": rounding})
    if posted is not None:  # the movement of its postings (its lines and what paid them are in)
        merge(rollup, entry_rollup(w.customer, posted, kinds))
    return Closing(tuple(lines), posted, lot, paid, rollup, parts, payers)


def upcoming_invoice(state: State, period: Period, now: datetime, book: PriceBook | None
                     ) -> tuple[Rollup, Balances, list[tuple[Unapplied, int]]]:
    """The invoice of `period` (the customer's current one) as its close would finalize it if it
    came `now`: (its rollup, its opening balances, the top-ups' payments its close counts as paid).
    The earlier periods still open (in their grace window) close first, by the close's own rules:
    their true-ups move the balances this period's true-up is paid from, and their invoices take
    the top-ups' unapplied payments first. `state.wallet` is left as it is."""
    w = state.require_wallet()
    w = replace(w, lots={code: replace(lot) for code, lot in w.lots.items()})  # followed below, a copy
    rollups = state.rollups.get(w.customer.id, {})
    credits: Sequence[Unapplied] = state.unapplied.get(w.customer.id, ())
    for label in sorted(x for x in rollups if x < period.label):
        earlier = closing(state, w, label, rollups[label], book, now, credits)
        if earlier.lot is not None:
            lot = earlier.lot
            w.lots[lot.code] = Lot(lot.lot_id, lot.code, lot.kind, lot.granted, lot.priority, lot.expires_at,
                                   lot.created_at, 0, False, lot.reason, lot.reference)
        if earlier.posted is not None:
            w.apply(earlier.posted.postings)
        _, credits = unapplied_parts(credits, amount_due_units(earlier.rollup))
    opening = opening_of(Balances(sum(lot.balance for lot in w.lots.values()), w.reserved, w.receivable),
                         rollups, period.label)
    rollup = closing(state, w, period.label, rollups.get(period.label, {}), book, now, credits).rollup
    parts, _ = unapplied_parts(credits, amount_due_units(rollup))
    return rollup, opening, parts


def close_period(state: State, cmd: ClosePeriod, now: datetime, book: PriceBook | None) -> Decision:
    w = state.require_wallet()
    c = w.customer
    if c.open_period_start is None or c.open_period_start != cmd.period_start:
        return NOTHING_DUE  # closed already (or another period is first)
    period = period_of(c.open_period_start, c.cycle)
    if close_due_at(period, c.grace_s) > now:
        return NOTHING_DUE
    rollups = state.rollups.get(c.id, {})
    opening = opening_of(Balances(sum(lot.balance for lot in w.lots.values()), w.reserved, w.receivable),
                         rollups, period.label)
    closed = closing(state, w, period.label, rollups.get(period.label, {}), book, now,
                     state.unapplied.get(c.id, ()))
    rollup, posted = closed.rollup, closed.posted
    effects: list[Any] = []
    sources = list(state.corrections.get(c.id, ()))  # what gave money back off the receivable
    if closed.lines:
        back = -sum(a for account, a in closed.paid if account == chart.receivable_account(c.id))
        if back > 0:
            sources.insert(0, Unapplied(None, f"true-up:{period.label}", back, now))
        effects.append(TrueUpPosted(c.id, period.label, closed.lines, closed.paid))
        if closed.parts:
            effects.append(TrueUpChargesGiven(c.id, period.label, None, money_back.given_rows(closed.parts),
                                              closed.payers))
        effects += counters_given_back(state, c.id, period.label, book, closed.lines)
    if closed.lot is not None:  # money back beyond what is owed: the true-up's, the rounding's
        effects.append(closed.lot)
    year = now.astimezone(UTC).year
    seq = state.invoice_seqs.get((cmd.issuer, year), 0) + 1
    number, invoice_id = invoice_number(cmd.issuer, year, seq), state.ids("inv")
    content = document(c, period, rollup, opening, Header(invoice_id, number, "finalized", now))
    nxt = following(period, c.cycle)
    due_at = datetime.fromisoformat(content["due_at"].replace("Z", "+00:00"))
    total, due = total_of(rollup), amount_due_units(rollup)
    effects += [
        InvoiceFinalized(c.id, invoice_id, period.label, period.start, period.end, cmd.issuer, year, seq, number,
                         c.currency, total, due, due_at, content, now),
        PeriodAdvanced(c.id, nxt.start, close_due_at(nxt, c.grace_s)),
        state.event("invoice.finalized", c.id, f"invoice.finalized:{c.id}:{period.label}", now, {
            "invoice_id": invoice_id, "number": number, "customer_name": content.get("customer_name"),
            "period": period.label, "total": content["total"],
            "amount_due": content["amount_due"], "due_at": content["due_at"], "currency": c.currency}),
    ]
    # what top-ups paid off the receivable before this usage was invoiced pays this invoice
    issued = InvoiceDue(invoice_id, c.id, number, c.currency, due, {}, period.start)
    effects += apply_unapplied(state, issued, now)
    if due == 0:  # paid from its issue, as its view says: a receiver waiting for invoice.paid hears it
        effects.append(paid_event(state, issued, 0, now))
    # money given back off the receivable beyond what this period owes pays the older invoices; when
    # the close rounded it up to whole minor units, the rounding (this close's entry) pays the rest
    rounded = rollup.get("rounded", (0, 0))[1]
    given_back = -rollup.get("funded:receivable", (0, 0))[1] - rounded
    if rounded < 0 < given_back:
        sources.append(Unapplied(None, f"rounding:{period.label}", -rounded, now))
    effects += apply_corrections(state, c.id, max(0, given_back), sources, now)
    result = InvoiceClosed(invoice_id, number, c.id, period.label, total, due, posted.key if posted else None,
                           currency=c.currency)
    return Decision(Outcome(result.code, result), posted, tuple(effects))


def pay_invoice(state: State, cmd: PayInvoice, now: datetime, book: PriceBook | None) -> Decision:
    """Cash against the receivable, up to what the invoice still has due; the same reference
    again with the same amount is the same payment (answered again, posted once)."""
    w = state.require_wallet()
    invoice = state.invoices.get(cmd.invoice_id)
    if invoice is None or invoice.customer_id != w.customer.id:
        raise NotFoundError(f"no invoice {cmd.invoice_id}", invoice_id=cmd.invoice_id)
    if cmd.currency != invoice.currency:
        raise CurrencyMismatchError(f"invoice {invoice.number} is in {invoice.currency}, not {cmd.currency}",
                                    invoice_id=invoice.id, currency=invoice.currency)
    check_reference(cmd.reference)
    if cmd.reference in invoice.payments:
        if invoice.payments[cmd.reference] != cmd.amount:
            raise ConflictError(f"payment {cmd.reference!r} of invoice {invoice.number} was of another amount")
        owed = max(0, w.receivable - (w.credit_held or 0))
        # the entry of the payment answered first: loaded (its id), or posted earlier in this batch (its key)
        by = invoice.entries.get(cmd.reference)
        result = PaymentResult(invoice.id, invoice.number, cmd.reference, cmd.amount, invoice.paid,
                               invoice.amount_due, True, by if isinstance(by, str) else None,
                               by if isinstance(by, int) else None, currency=invoice.currency,
                               remaining=payable(invoice.amount_due - invoice.paid, owed, invoice.currency))
        return Decision(Outcome("replayed", result))
    left = invoice.amount_due - invoice.paid
    if cmd.amount != left:  # what is left may hold a fraction a credit note's exact money back left
        whole_minor_units(cmd.amount, invoice.currency)
    owed = max(0, w.receivable - (w.credit_held or 0))
    more = payable(left, owed, invoice.currency)
    if cmd.amount > more:
        raise OverpaymentError(
            f"a payment of {format_money(cmd.amount, invoice.currency)} {invoice.currency} exceeds the "
            f"{format_money(more, invoice.currency)} still due on invoice {invoice.number}",
            invoice_id=invoice.id, amount_due=format_money(more, invoice.currency))
    cur, cid = w.customer.currency, w.customer.id
    effects = payment_effects(state, invoice, cmd.amount, cmd.reference, now)
    payment_id = effects[0].payment_id
    legs = Legs(cur).debit(chart.cash_account(cur), cmd.amount).credit(chart.receivable_account(cid), cmd.amount)
    posted = entry(f"invoice-payment:{invoice.id}:{payment_id}", "invoice_payment", legs, cid, now,
                   {"invoice_id": invoice.id, "number": invoice.number, "reference": cmd.reference})
    paid = invoice.paid + cmd.amount
    result = PaymentResult(invoice.id, invoice.number, cmd.reference, cmd.amount, paid, invoice.amount_due, False,
                           posted.key if posted else None, currency=invoice.currency,
                           remaining=payable(left - cmd.amount, owed - cmd.amount, invoice.currency))
    return Decision(Outcome(result.code, result), posted, tuple(effects))
