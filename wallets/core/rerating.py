"""Re-rating, as pure rules: what a corrected price version makes of charges already posted, and
the decision that corrects them.

A charge keeps the usage it was rated for (its usage lines' quantities by token type, its
dimensions, its usage time). Re-rating rates it again with the corrected version, graduated
tiers continuing, as at the time, from the period's earlier charges (re-rated too, in order); its
difference from what the charge now stands at (as charged, or as its last re-rate left it) is
what moves. A charge is re-rated to a version at most once, so v2 then v3 adjusts by v3 - v2;
a version of its customer's overrides counts as a version too (the one in force at its usage
time): a second backdated override change re-rates it again under the same book version.

The money moves in one balanced entry per customer and period the charges were billed in (their
usage's, or a later one's for charges that arrived after their period closed):
- more charged: paid like usage, from the live lots in consumption order, then the receivable; a
  charge re-rated dearer whose period's true-up correction gives back a part of it pays its
  increase out of that part first (its own payers'), and only the rest like usage; beside charges
  corrected down, each decrease still goes back to what paid it (as money back, below)
  and all the increases are paid like usage, not the net alone;
- money back: where the charges' money came from, the receivable first (what it paid), then the
  lots that paid each decreased charge, up to its decrease, the last consumed first (while live,
  up to what each was granted), then what the customer still owes, and the rest becomes credit
  (a paid lot); beside charges corrected up, each decrease still goes back whole so and the
  increases are paid like usage, not netted off it;
- usage revenue moves by the difference;
- of a closed period, its volume true-ups move to what the charges as re-rated give
  (wallets.core.rerate_true_ups), in the same entry.
The entry is billed in the period of its own time: the first open one, unless it is made in a
period's grace window, before that period's close, then in the next one, whose close applies
what it gave back beyond what that period owes to the open invoices. Its lines are marked
`adjustment`, with the charges' original period. When the charges were billed on an invoice
finalized already (their period's, or for charges that arrived after its close, the later one
they were billed on), a credit note (a debit note for an increase) documents the correction of
that invoice, its lines the entry's by model and token type: one note per invoice, for all the
charges it carried. Charges billed in a period still open are corrected exactly, with no note:
on its invoice, or, corrected in its grace window, on the next one's.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import msgspec

from pricing.books import PriceBook, PriceVersion
from pricing.errors import wire_time
from pricing.fast_rating import charges_requests
from pricing.money import format_money
from pricing.override_versions import OverrideHistory
from pricing.rating import rate
from pricing.units import TYPE_OF_FIELD
from pricing.usage import Usage
from wallets import chart
from wallets.core.billing import bill_to_name, line_decimals, round_line
from wallets.core.commands import TOPUP_PRIORITY, RerateCharges
from wallets.core.credits import opened_lot
from wallets.core.decision import (
    AdjustmentPosted,
    ChargeAdjusted,
    CreditNoteIssued,
    Decision,
    LotOpened,
    Outcome,
    TrueUpChargesGiven,
    TrueUpsCorrected,
    UsageCounted,
)
from wallets.core.invoicing import CONTRACT
from wallets.core.legs import Legs, entry, funding, return_target, settlement, settlement_legs
from wallets.core.money_back import (
    beyond_rows,
    closed_moves,
    each_charge_first,
    give_back,
    given_rows,
    last_consumed_first,
    payer_rows,
    rounded,
    share,
    take_back,
    taken_from,
    to_credit,
)
from wallets.core.rating import ALLOWANCE, period_counts, period_to_date
from wallets.core.rerate_true_ups import KIND as TRUE_UP
from wallets.core.rerate_true_ups import TrueUpFix, true_up_fixes
from wallets.core.state import State

TypeKey = tuple[str, str]  # (model, token type; or the line's kind for a line of no token type)


@dataclass(frozen=True, slots=True)
class ChargeOnRecord:
    """A charge as stored: what it was rated for, what it cost, what paid it, and how earlier
    re-rates left it."""

    id: int
    occurred_at: datetime
    model: str
    dimensions: Mapping[str, Any]
    usage: Mapping[str, Any]
    lines: tuple[Mapping[str, Any], ...]
    charged: int
    from_receivable: int
    funding: tuple[tuple[str, int], ...] | None  # None: not recorded (charges before migration 0019)
    current: Mapping[TypeKey, int] | None = None  # amounts after its last re-rate (None: as charged)
    # (book version, overrides version in force at its usage time, 0: none) it was re-rated to
    versions: frozenset[tuple[str, int]] = frozenset()
    seq: int = 0  # its capture of the call (0: a usage event, or a call's first charge, which pays the fee)
    allowance_moves: Mapping[str, int] = field(default_factory=dict)  # its re-rates' moves, by allowance id
    billed_in: str | None = None  # the period its entry was billed in (a late charge's is after its usage time's)
    rerated_to: str | None = None  # the book version its last re-rate rated it with (None: not re-rated)
    # the rules its last re-rate rated its usage with at the book's price, by token type (None: not
    # re-rated, or not kept: an adjustment before migration 0087)
    rules: Mapping[str, str] | None = None

    def tokens(self) -> dict[str, int]:
        """The usage it was rated for (the per-request fee aside: whether it is due is the corrected
        version's to say, see rerated_lines)."""
        return charged_tokens(self.usage, self.lines)

    def standing(self) -> dict[TypeKey, int]:
        return dict(self.current) if self.current is not None else by_type(self.model, self.lines)

    def counted(self) -> dict[str, int]:
        """What it counts in its period's counters now: the units its lines rated per rule, and
        what it takes from each free allowance, as charged and then as its re-rates moved it."""
        out = rule_quantities(self.lines)
        for allowance_id, units in self.allowance_moves.items():
            out[ALLOWANCE + allowance_id] = out.get(ALLOWANCE + allowance_id, 0) + units
        return out


def charged_tokens(usage: Mapping[str, Any] | Any, lines: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """The counts by rating token type a charge was rated for, from what it stored: every count of
    the canonical usage stored with it, those its version left unpriced or folded included; else its
    usage lines' quantities (the per-request fee aside)."""
    canonical = usage.get("canonical") if isinstance(usage, Mapping) else None
    if isinstance(canonical, Mapping):
        counts = {TYPE_OF_FIELD[name]: value for name, value in canonical.items() if name in TYPE_OF_FIELD}
        return {t: v for t, v in counts.items() if t != "request" and type(v) is int and v}
    out: dict[str, int] = {}
    for line in lines:
        if line["kind"] == "usage" and line.get("token_type") and line["token_type"] != "request":
            out[line["token_type"]] = out.get(line["token_type"], 0) + int(line["quantity"])
    return {k: v for k, v in out.items() if v}


@dataclass(frozen=True, slots=True)
class RerateInput:
    """What re-rating one customer's period needs: the corrected version, the period's charges of
    the book (by usage time; those after the range only for what they took of free allowances),
    and the finalized invoices of the periods they were billed in."""

    version: PriceVersion
    charges: tuple[ChargeOnRecord, ...]
    invoices: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # billed-in period -> (id, number)
    overrides: OverrideHistory | None = None  # the customer's price overrides: those in force at each usage rate it
    period: str = ""  # the period of the charges' usage times
    book: PriceBook | None = None  # the book: the versions a closed period's true-up takes its tiers from
    true_ups: Mapping[str, int] = field(default_factory=dict)  # rule id -> its true-up posted (book price)
    # billing period -> account -> what it still has in the charges billed in it (store.paid_left)
    paid_left: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    true_up_total: int = 0  # every true-up line of the closed period (a discount's share included)
    given_back: Mapping[str, int] = field(default_factory=dict)  # allowance id -> its true-up lines so far
    # rule id -> charge id -> what its true-ups so far gave back of the charge (store.true_up_given);
    # a rule not there: not kept, its correction's money back is shared over its charges' payers
    true_up_given: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    # charge id -> account -> what that payer got back of the charge from the true-ups so far, every
    # rule (store.true_up_payers); a charge not there: its split not kept, read from its total
    true_up_payers: Mapping[int, Mapping[str, int]] = field(default_factory=dict)
    # the period's charges of the customer's other books: what they took of each free allowance
    # (the charges re-rated do not take it again), and what the customer itself paid of their usage,
    # which the close's split of a true-up's money back counts (invoicing.allowance_lines)
    others: tuple[ChargeOnRecord, ...] = ()
    period_end: datetime | None = None  # the period's end: the allowances in force then pay a dearer true-up
    # invoice id -> (its close's rounding of the amount due, its notes' totals so far, what they moved)
    # (store.noted_so_far): a note moves the running total rounded once (note_money)
    noted: Mapping[str, tuple[int, int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Correction:
    charge: ChargeOnRecord
    old: Mapping[TypeKey, int]
    new: Mapping[TypeKey, int]
    overrides_version: int = 0  # the customer's overrides that rated it (0: none)
    allowance_moves: Mapping[str, int] = field(default_factory=dict)  # allowance id -> units more taken
    # the rules of its usage at the book's price by token type, as it stood and as re-rated (usage_rules)
    old_rules: Mapping[str, str] = field(default_factory=dict)
    new_rules: Mapping[str, str] = field(default_factory=dict)

    @property
    def old_amount(self) -> int:
        return sum(self.old.values())

    @property
    def new_amount(self) -> int:
        return sum(self.new.values())

    @property
    def delta(self) -> int:
        return self.new_amount - self.old_amount


@dataclass(slots=True)
class Rerated:
    customer_id: str
    period: str
    charges: int
    delta: int
    credit_note: str | None = None
    entry_key: str | None = None
    entry_id: int | None = None

    code = "rerated"


def by_type(model: str, lines: Iterable[Mapping[str, Any]]) -> dict[TypeKey, int]:
    """Amounts (atomic units) by (model, token type) of priced lines."""
    out: dict[TypeKey, int] = {}
    for line in lines:
        key = (model, line.get("token_type") or line["kind"])
        out[key] = out.get(key, 0) + int(line["amount_units"])
    return out


def rerated_lines(charge: ChargeOnRecord, version: PriceVersion, so_far: Mapping[str, int],
                  overrides: OverrideHistory | None = None):
    """The charge's usage rated with `version`, graduated tiers continuing from `so_far`; the
    per-request fee as a call is charged it (wallets.core.rating.rate_call): by a call's first
    charge, when a rule of `version` prices it (a fee the correction drops comes back, one it
    adds is charged)."""
    dimensions = dict(charge.dimensions)
    reported = charge.usage.get("dimensions") if isinstance(charge.usage, Mapping) else None
    if isinstance(reported, Mapping):
        dimensions.update(reported)
    usage = Usage(charge.model, charge.tokens(), charge.occurred_at, dimensions)
    if charge.seq == 0 and charges_requests(version, charge.model, usage.dimensions, usage.occurred_at):
        usage = usage.with_request()
    in_force = overrides.at(charge.occurred_at) if overrides is not None else None
    if in_force is None:
        return rate(usage, version, period_to_date=dict(so_far))
    return rate(usage, version, in_force.overrides, period_to_date(so_far))


def overrides_version(charge: ChargeOnRecord, overrides: OverrideHistory | None) -> int:
    """The version of the customer's overrides in force at the charge's usage time (0: none)."""
    in_force = overrides.at(charge.occurred_at) if overrides is not None else None
    return in_force.version if in_force is not None else 0


def corrections(data: RerateInput, range_from: datetime, range_to: datetime,
                ratings: dict[int, Any] | None = None) -> list[Correction]:
    """Each charge of the range whose amounts the corrected version changes (in usage-time order,
    the charges billed after the period, late, after its own). Graduated tiers continue from the
    period's earlier charges: those before the range count as they were rated (their rules'
    quantities, as the period's usage counters have them), those in it as re-rated; a late charge
    from them all, and from what the true-ups so far gave back to each free allowance. The charges
    after the range keep what they took of each free allowance (they are not re-rated), so those in
    it take at most what the others left of it. `ratings`, when given, receives each re-rated
    charge's rating by id."""
    so_far: dict[str, int] = {}
    # the period's charges of other books keep what they took of each allowance too (money per
    # period, whatever book rated the usage: wallets.core.rating.allowances_of_every_book)
    for charge in (*(ch for ch in data.charges if ch.occurred_at >= range_to), *data.others):
        for key, units in charge.counted().items():
            if key.startswith(ALLOWANCE):
                so_far[key] = so_far.get(key, 0) + units
    out: list[Correction] = []
    # a charge billed after its period (arrived after the close) was rated after the period's own
    # charges, and after the close's true-up gave back to the free allowances (its counters then):
    # re-rated so, it is not re-rated as if it came first
    late = [ch for ch in data.charges if ch.billed_in is not None and ch.billed_in != data.period]
    ids = {ch.id for ch in late}
    for charge in (*(ch for ch in data.charges if ch.id not in ids), *late):
        if late and charge is late[0]:
            for allowance_id, units in data.given_back.items():
                so_far[ALLOWANCE + allowance_id] = so_far.get(ALLOWANCE + allowance_id, 0) - units
        if charge.occurred_at >= range_to:
            continue
        if charge.occurred_at < range_from:
            counted = charge.counted()
        else:
            rating = rerated_lines(charge, data.version, so_far, data.overrides)
            if ratings is not None:
                ratings[charge.id] = rating
            counted = period_counts(rating)
            old = {k: v for k, v in charge.standing().items() if v}
            new = {k: v for k, v in by_type(charge.model, (
                {"kind": ln.kind, "token_type": ln.token_type, "amount_units": ln.amount_units}
                for ln in rating.lines)).items() if v}
            ours = overrides_version(charge, data.overrides)
            # a version naming the rule otherwise moves the units to that rule's volume, whatever they cost
            was, now = standing_rules(charge, data), usage_rules(rating.lines)
            if (old != new or was != now) and (data.version.version, ours) not in charge.versions:
                out.append(Correction(charge, old, new, ours, _allowance_moves(charge.counted(), counted), was, now))
        for rule_id, quantity in counted.items():
            so_far[rule_id] = so_far.get(rule_id, 0) + quantity
    return out


def usage_rules(lines: Iterable[Any]) -> dict[str, str]:
    """The rule of each token type's usage lines at the book's price, and of a contract price's
    under CONTRACT and the token type (they count toward the rule's volume: a re-rate moving them to
    another rule id is kept, invoicing.contract_units), of a charge's stored lines or a rating's."""
    out = {}
    for line in lines:
        get = line.get if isinstance(line, Mapping) else lambda name, ln=line: getattr(ln, name)
        if get("kind") == "usage" and get("rule_id") is not None:
            out[("" if get("override_id") is None else CONTRACT) + (get("token_type") or get("kind"))] = get("rule_id")
    return out


def standing_rules(charge: ChargeOnRecord, data: RerateInput) -> dict[str, str]:
    """The rules the charge's usage at the book's price stands under, by token type: its last
    re-rate's (kept since migration 0087; before, rated again with the version it re-rated to), or
    as charged."""
    if charge.rules is not None:  # kept before a contract price's rule was: where it was charged
        return {**{k: v for k, v in usage_rules(charge.lines).items() if k.startswith(CONTRACT)}, **charge.rules}
    version = next((v for v in data.book.versions if v.version == charge.rerated_to), None) if data.book else None
    if version is None:
        return usage_rules(charge.lines)
    return usage_rules(rerated_lines(charge, version, {}, data.overrides).lines)


def _allowance_moves(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """Units taken from each free allowance (by id) after, less before."""
    keys = {k for k in (*before, *after) if k.startswith(ALLOWANCE)}
    moves = {k[len(ALLOWANCE):]: after.get(k, 0) - before.get(k, 0) for k in sorted(keys)}
    return {k: v for k, v in moves.items() if v}


def rule_quantities(lines: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Units priced per rule by a charge's stored usage lines, and atomic units it took from each
    free allowance (as the period's counters have them: wallets.core.rating.period_counts)."""
    out: dict[str, int] = {}
    for line in lines:
        if line["kind"] == "usage" and line.get("rule_id") is not None:
            out[line["rule_id"]] = out.get(line["rule_id"], 0) + int(line["quantity"])
        elif line["kind"] == "free_allowance" and line.get("override_id") is not None:
            key = ALLOWANCE + line["override_id"]
            out[key] = out.get(key, 0) - int(line["amount_units"])
    return out


def _labels(model: str, token_type: str) -> dict[str, str | None]:
    """An adjustment line's model and token type: a free allowance's lines have neither."""
    if token_type == "free_allowance":
        return {"model": None, "token_type": None}
    return {"model": model, "token_type": token_type}


def type_rows(found: Iterable[Correction], fixes: Iterable[TrueUpFix] = (), *,
              every: bool = False) -> list[dict[str, Any]]:
    """Old and new amounts and their difference by model and token type (atomic units); a volume
    true-up's correction under its rule's model and `volume_true_up`. The rows that changed; with
    `every`, those the corrections left as they were too (what the charges stood at, in all)."""
    sums: dict[TypeKey, list[int]] = {}
    for x in found:
        for key in set(x.old) | set(x.new):
            row = sums.setdefault(key, [0, 0])
            row[0] += x.old.get(key, 0)
            row[1] += x.new.get(key, 0)
    for f in fixes:
        row = sums.setdefault((f.model, TRUE_UP), [0, 0])
        row[0] += f.old
        row[1] += f.new
    return [{"model": m, "token_type": t, "old_amount": o, "new_amount": n, "delta": n - o}
            for (m, t), (o, n) in sorted(sums.items()) if every or n != o]


def _paid_by(charge: ChargeOnRecord, receivable: str) -> dict[tuple[int, str], int]:
    """What paid `charge`: (charge id, account) -> amount."""
    out: dict[tuple[int, str], int] = {}
    paid = charge.funding if charge.funding is not None else ((receivable, charge.from_receivable),)
    for account, amount in paid:
        out[(charge.id, account)] = out.get((charge.id, account), 0) + amount
    return out


def room_left(groups: Sequence[Group], billed: str | None = None) -> dict[str, int]:
    """What each lot still has in the corrected periods' charges: what it paid of them less what
    their corrections so far (a close's true-up, earlier re-rates) gave it back (store.paid_left).
    A re-rate after the close gives a lot back no more than that, so money the close gave back is
    not given twice. With `billed` (a command with sources), of the charges billed in that period
    only (of every usage period, counted once), which its entries alone correct: what the same
    batch gives back of another period's charges is not read stale, a lot's money there is not
    counted as room here, and what an earlier entry gave back of this period's charges is counted
    whichever usage periods this re-rate's range covers."""
    room: dict[str, int] = {}
    counted: set[str] = set()  # a billing period's room is the same under each usage period billed in it
    for _, data, _, _ in groups:
        for period, left in data.paid_left.items():
            if (billed is None or period == billed) and period not in counted:
                counted.add(period)
                for account, amount in left.items():
                    room[account] = room.get(account, 0) + amount
    # lots alone: an earlier note's rounding leg (or a close's, in its true-up) left the rounding account
    # "room", and what a decrease could not place went there as to a lot, then on to breakage
    return {account: max(0, left) for account, left in room.items() if chart.is_lot_account(account)}


def _takes(fixes: Sequence[TrueUpFix], parts: Mapping[str, Mapping[int, int]], receivable: str
           ) -> tuple[dict[int, int], dict[int, tuple[tuple[str, int], ...]], dict[int, int]]:
    """What the true-ups corrected up take back of each charge (charge id -> units > 0: what the
    true-ups before gave back of it beyond its overcharge at the tier reached, TrueUpFix.parts),
    what paid each of their rules' charges (charge id -> (account, units)), and what the true-ups
    before gave back of each charge taken back of (TrueUpFix.given: take_back takes from each payer
    at most what it got)."""
    takes: dict[int, int] = {}
    payers: dict[int, tuple[tuple[str, int], ...]] = {}
    given: dict[int, int] = {}
    for f in fixes:
        for charge, units in parts.get(f.rule_id, {}).items():
            if units < 0:  # of a correction down too: a charge it takes back of (TrueUpFix.parts)
                takes[charge] = takes.get(charge, 0) - units
                given[charge] = given.get(charge, 0) + (f.given or {}).get(charge, 0)
        for ch in f.charges:
            payers[ch.id] = tuple((account, v) for (_, account), v in _paid_by(ch, receivable).items())
    return takes, payers, given


def _taken_then_usage(w: Any, took: Mapping[str, int], rest: int, now: datetime,
                      gets: Mapping[str, int] | None = None):
    """Legs of more charged: what `took` takes back from each account (take_back), the `rest` paid
    like usage from what the lots have left after it (live lots in consumption order, then the
    receivable); and what paid it all, by account. `gets`: lots given money back beside it (a
    decrease), each to where money back to it goes (legs.return_target; a lot closed since, as
    give_back sends it: where its money went, taken_from), before the usage."""
    gets = gets or {}

    def target(account: str) -> str:
        lot = w.lots.get(account)
        return taken_from(w, account, now) if lot is not None and not lot.live(now) else return_target(w, account)

    after = replace(w, lots={code: replace(lot, balance=lot.balance - took.get(code, 0) + (
        gets.get(code, 0) if target(code) == code else 0)) for code, lot in w.lots.items()})
    s = settlement(after, None, rest, False, now)
    legs, paid = settlement_legs(after, s), dict(funding(after, None, s))
    for account, units in gets.items():
        legs.credit(target(account), units)
        paid[account] = paid.get(account, 0) - units
    if gets:
        legs.debit(chart.revenue_account(w.customer.currency), sum(gets.values()))
    for account, units in took.items():
        legs.debit(taken_from(w, account, now), units)
        paid[account] = paid.get(account, 0) + units
    legs.credit(chart.revenue_account(w.customer.currency), sum(took.values()))
    return legs, tuple(sorted(paid.items()))


def _refund(state: State, cmd: RerateCharges, found: list[Correction], back: int, now: datetime, step: int = 1,
            fixes: Sequence[TrueUpFix] = (), room: dict[str, int] | None = None,
            takes: tuple[Mapping[int, int], Mapping[int, Any], Mapping[int, int]] = ({}, {}, {}),
            expired_by: datetime | None = None, got: Mapping[int, Mapping[str, int]] | None = None,
            placed: dict[tuple[int, str], int] | None = None):
    """Legs of money back (`back` > 0), where the decreased charges' money came from (and a true-up
    corrected down: of each charge its rule rated, what the charge is overcharged at the tier reached
    less what the true-ups before gave back of it, to what paid that charge, as the close gives it,
    money_back.each_charge_first, TrueUpFix.parts; the rest, or all of it when what they gave
    back of each charge was not kept, over the money of all its charges: a promotion's goes back to
    it), as wallets.core.money_back gives it, each lot at most what it still has in the charges
    (`room`, room_left); what goes back on the receivable in multiples of `step`. A charge re-rated
    dearer nets its increase with what the true-ups give back of it (its payers get only the part
    beyond it; only the increase beyond the part is paid like usage, after what goes back: it does
    not come off the money back), so money does not move between payers that never paid the charge. A true-up corrected
    up beside them takes back of each charge what the true-ups before gave back of it beyond its
    overcharge (`takes`: _takes), from what paid that charge (money_back.take_back), off what it gets
    back or, beyond it, taken from it; where it takes more than the decreases give (`back` <= 0: the
    correction charges -`back`), what it takes beyond what each payer gets back is taken from it and
    the rest paid like usage (_taken_then_usage). `got`: what each payer got back of each charge
    from the true-ups before (store.true_up_payers): in all a payer gets back of a charge no more
    than it paid of it, and gives back no more than it got; `placed` receives what each payer gets
    of each charge's true-up part (taken back: negative; what became the credit lot, its: to_credit)."""
    w = state.require_wallet()
    receivable = chart.receivable_account(w.customer.id)
    order = last_consumed_first(w)
    # what the receivable paid of the decreased charges; then, of each one's decrease, what goes
    # back to the lots that paid it, the last consumed first
    shares: dict[str, int] = {receivable: 0}
    # what each charge gives back, by payer (money_back.share): what the true-ups before gave first
    # (a credit lot the receivable's part went to counts as the receivable: it did not pay the charge)
    charges = (*(x.charge for x in found), *(ch for f in fixes for ch in f.charges))
    payers_of = {ch.id: {a for _, a in _paid_by(ch, receivable)} for ch in charges}
    funded = {key: units for ch in charges for key, units in _paid_by(ch, receivable).items()}  # what each paid
    taken: dict[tuple[int, str], int] = {}
    for charge, by in (got or {}).items():
        for account, units in by.items():
            if account == chart.rounding_account(w.customer.currency):  # a note's rounding: no payer's bound
                continue
            key = (charge, account if account in payers_of.get(charge, (account,)) else receivable)
            taken[key] = taken.get(key, 0) + units
    room = dict(room) if room is not None else None
    # what a true-up corrected up beside takes back of a charge now makes room to give back of it
    # again (a re-rate moving it to another rule: its old rule's part taken back, its new rule's given)
    ahead: dict[tuple[int, str], int] = {}
    take_back(w, *takes[:2], now, expired_by=expired_by, given=takes[2], got=got, placed=ahead)
    for (charge, account), units in ahead.items():
        key = (charge, account if account in payers_of.get(charge, (account,)) else receivable)
        taken[key] = taken.get(key, 0) - units
        if room is not None and account in room:
            room[account] += units
    taken = {key: units for key, units in taken.items() if units > 0}
    given_now: dict[tuple[int, str], int] = {}

    def paid_by(charge: ChargeOnRecord) -> dict[tuple[int, str], int]:
        return _paid_by(charge, receivable)

    unplaced = 0  # what neither the receivable nor a lot took of a decrease (a lot's room short)
    # what of the decreases is the receivable's: of each, up to what it paid of that charge (share),
    # and its charges' true-up parts (each_charge_first)
    owes_less = 0
    own = 0  # of it, what no true-up part's row names (the decreases', a true-up's rest): to_credit

    def shared(paid: dict[tuple[int, str], int], need: int) -> None:
        nonlocal unplaced, owes_less, own
        before = shares.get(receivable, 0)
        unplaced += share(shares, taken, paid, need, receivable, order, room)
        owes_less += shares.get(receivable, 0) - before
        own += shares.get(receivable, 0) - before

    def credited(legs: Legs, paid: tuple[tuple[str, int], ...], lot: LotOpened | None):
        """The rows follow the postings: what of the receivable's parts became the credit lot."""
        if placed is not None:
            to_credit(placed, paid, lot, receivable, own)
        return legs, paid, lot

    for x in found:
        if x.delta < 0:
            shared(paid_by(x.charge), -x.delta)
    # a charge re-rated dearer pays its increase first out of what the true-ups give back of it (its
    # own payers' part): only the rest of it is paid like usage, in consumption order
    rise = {x.charge.id: x.delta for x in found if x.delta > 0}
    for f in fixes:  # what the rule's charges paid, less what corrections before take back of each
        parts = f.parts()
        netted = {c: min(v, rise.get(c, 0)) for c, v in parts.items() if v > 0 and rise.get(c, 0) > 0}
        for charge, units in netted.items():
            rise[charge] -= units
        # what it gives back: the correction down, and what it takes back of other charges beside
        # (`takes`); of a correction up, what it gives back to charges against it (TrueUpFix.parts);
        # less what pays the charges' own increases
        need = (-f.delta - sum(v for v in parts.values() if v < 0) if f.delta < 0 else sum(
            v for v in parts.values() if v > 0)) - sum(netted.values())
        if need > 0:
            paid = {k: v for charge in f.charges for k, v in paid_by(charge).items()}
            if f.given is not None and f.unit_price is not None:
                pieces = {c: (u, a) for c, u, a in f.pieces}
                rows = [(c, a, v, *pieces.get(c, (None, None))) for (c, a), v in sorted(paid.items())]
                # a charge's part netted with its increase counts as given back already
                given = {c: f.given.get(c, 0) + netted.get(c, 0) for c in f.given.keys() | netted.keys()}
                before = shares.get(receivable, 0)
                need, paid = each_charge_first(shares, taken, {**f.line(), "amount_units": -need}, rows, receivable,
                                               order, given, None, room, given_now, dict(f.prices))
                owes_less += shares.get(receivable, 0) - before  # the receivable's charges' parts
            if f.delta < 0 or need > 0:
                shared(paid, need)
    if room is not None:
        # a lot's room is what it has left in all the charges, which an earlier charge's decrease
        # may have used where the lot's money was in another: the rest goes to the lots that still
        # have room, the last consumed first, before any of it becomes a paid lot
        for account in sorted(room, key=order):
            part = min(unplaced, room[account])
            if part > 0:
                shares[account] = shares.get(account, 0) + part
                room[account] -= part
                unplaced -= part
    if placed is not None:
        for key, units in given_now.items():
            placed[key] = placed.get(key, 0) + units
    debits: dict[str, int] = {}
    closing = {a: v for a, v in shares.items() if a != receivable}  # a closed lot's, where its money went
    took_now: dict[tuple[int, str], int] = {}
    for account, units in take_back(w, *takes[:2], now, expired_by=expired_by, given=takes[2], gets=closing,
                                    got=got, placed=took_now).items():
        net = 0 if account == receivable else min(units, shares.get(account, 0))
        if net:
            shares[account] -= net
        if units > net:
            debits[account] = units - net
    if placed is not None:
        for key, units in took_now.items():
            placed[key] = placed.get(key, 0) - units
    if back + sum(debits.values()) <= 0:
        # a true-up corrected up by more than the decreases beside it: each payer's take nets with
        # what it gets back of them (the receivable's too), the rest is paid like usage
        net = min(debits.get(receivable, 0), shares.get(receivable, 0))
        if net:
            debits[receivable] -= net
        # a lot with a decrease but nothing taken gets its share back all the same (a revoked
        # grant's revoked again, an expired one's to breakage: legs.return_target), and the
        # increase it would have netted is paid like usage
        gets = {a: v for a, v in shares.items() if v > 0 and a != receivable}
        # the receivable's decrease (beyond what its take netted) comes off what is owed, up to it,
        # in multiples of `step` (as give_back's), and beyond it opens a paid credit lot (give_back's
        # rest): not off the increases, which would pay usage the promotions paid with the customer's cash
        owed = min(owes_less - net, max(0, w.receivable - (w.credit_held or 0)))
        if owed - owed % step > 0:
            gets[receivable] = owed - owed % step
        credit = owes_less - net - gets.get(receivable, 0)
        credit -= credit % step
        legs, paid = _taken_then_usage(w, debits, -back - sum(debits.values()) + sum(gets.values()) + max(0, credit),
                                       now, gets)
        if credit <= 0:
            if placed is not None:  # the rows follow the whole minor units posted (as give_back's: rounded)
                rounded(placed, {receivable: owes_less - net}, ((receivable, -gets.get(receivable, 0)),), None,
                        receivable, step, chart.rounding_account(w.customer.currency))
            return legs, tuple((a, v) for a, v in paid if v), None
        lot = opened_lot(state, w, "topup", credit, TOPUP_PRIORITY, None, now,
                         reference=f"re-rate {cmd.rerate_id} {cmd.period}")
        legs.debit(chart.revenue_account(w.customer.currency), credit).credit(lot.code, credit)
        return credited(*_credit_before_owing(legs, {**dict(paid), lot.code: -credit}, lot, receivable, step))
    # money back beside increases: each decrease goes back whole to what paid it (what the shares
    # place), and the increases beyond their own true-up parts are paid like usage after it, not
    # netted off the money back (which cut the payers given back last in order)
    rises = min(sum(v for v in rise.values() if v > 0),
                max(0, sum(v for v in shares.values() if v > 0) - back - sum(debits.values())))
    # what it takes back onto what is owed beside is owed too: the money back comes off it first
    owing = replace(w, receivable=w.receivable + debits.get(receivable, 0))
    legs, paid_back, lot = give_back(state, owing, shares, back + sum(debits.values()) + rises, now,
                                     f"re-rate {cmd.rerate_id} {cmd.period}", step)
    if placed is not None:  # the rows follow what a note's whole minor units posted to each payer
        # each payer's rows of a charge at most what it paid of it less what the true-ups before gave it
        bound = {key: units - (got or {}).get(key[0], {}).get(key[1], 0) for key, units in funded.items()}
        rounded(placed, shares, paid_back, lot, receivable, step, chart.rounding_account(w.customer.currency), bound)
    if not debits and not rises:
        return credited(legs, paid_back, lot)
    paid = dict(paid_back)
    for account, units in debits.items():
        legs.debit(taken_from(w, account, now), units)
        paid[account] = paid.get(account, 0) + units
    legs.credit(chart.revenue_account(w.customer.currency), sum(debits.values()) + rises)
    if rises:  # from the live lots as the give-back and take-backs left them, then the receivable
        after = replace(w, lots={code: replace(x, balance=x.balance - paid.get(code, 0)) for code, x in w.lots.items()})
        s = settlement(after, None, rises, False, now)
        for account, units in (*s.from_lots, (receivable, s.from_receivable)):
            legs.debit(account, units)
            paid[account] = paid.get(account, 0) + units
    return credited(*_credit_before_owing(legs, paid, lot, receivable, step))


def _credit_before_owing(legs: Legs, paid: dict[str, int], lot: LotOpened | None, receivable: str, step: int):
    """What the increases put on the receivable is paid first by the credit lot the same correction
    opens (a live lot: usage pays from it before anything is owed), in multiples of `step`, so a
    customer never ends both holding that credit and owing more for it; the lot opens with the rest."""
    shift = min(paid.get(receivable, 0), lot.granted if lot is not None else 0)
    shift -= shift % step
    if lot is not None and shift > 0:
        legs.debit(lot.code, shift).credit(receivable, shift)
        paid[receivable] -= shift
        paid[lot.code] += shift
        lot = msgspec.structs.replace(lot, granted=lot.granted - shift) if lot.granted > shift else None
    return legs, tuple(sorted((a, v) for a, v in paid.items() if v)), lot


Group = tuple[str, RerateInput, list[Correction], list[TrueUpFix]]


def _found(state: State, cmd: RerateCharges) -> list[Group]:
    """The corrections `cmd` posts, by the period of their usage time: of each source period (its
    charges rated as a whole, graduated tiers continuing), those billed in `cmd.period` (without
    sources: every correction of `cmd.period`'s usage); and, of `cmd.period` itself when closed,
    the corrections of its volume true-ups (wallets.core.rerate_true_ups)."""
    out = []
    for source in cmd.sources or (cmd.period,):
        data = state.rerates.get((cmd.customer_id, source))
        if data is None:
            continue
        ratings: dict[int, Any] = {}
        found = corrections(data, cmd.range_from, cmd.range_to, ratings)
        if cmd.sources:
            found = [x for x in found if (x.charge.billed_in or source) == cmd.period]
        if found:
            fixes = true_up_fixes(data, found, ratings, earlier_ratings(data)) if source == cmd.period else []
            out.append((source, data, found, fixes))
    return out


def rerated_period(data: RerateInput, range_from: datetime, range_to: datetime
                   ) -> tuple[list[Correction], list[TrueUpFix]]:
    """A period's corrections and its true-ups' (the preview's view of what apply posts)."""
    ratings: dict[int, Any] = {}
    found = corrections(data, range_from, range_to, ratings)
    return found, true_up_fixes(data, found, ratings, earlier_ratings(data))


def earlier_ratings(data: RerateInput) -> dict[int, Any]:
    """The charges an earlier re-rate moved, each rated with the version its last re-rate rated it
    with: the rules they stand under (a version may name a rule otherwise), for the volume true-up
    (wallets.core.rerate_true_ups)."""
    versions = {v.version: v for v in data.book.versions} if data.book is not None else {}
    return {ch.id: rerated_lines(ch, versions[ch.rerated_to], {}, data.overrides) for ch in data.charges
            if ch.rerated_to in versions}


def _corrected_invoice(cmd: RerateCharges, groups: Sequence[Group]) -> tuple[str, str] | None:
    """The finalized invoice the corrected charges were billed on, if any: the invoice of the
    period they were billed in (commands with sources: one period, that invoice carried them all);
    without sources, their usage period's, else (late charges only) the first later one's.
    Charges billed in a period still open are corrected on its invoice, exactly, with no note."""
    invoices = {period: invoice for _, data, _, _ in groups for period, invoice in data.invoices.items()}
    billed = {x.charge.billed_in for _, _, found, _ in groups for x in found} & invoices.keys()
    if cmd.sources:
        return invoices.get(cmd.period) if cmd.period in billed else None
    if not billed:
        return None
    return invoices[cmd.period if cmd.period in billed else min(billed)]


def rerate_charges(state: State, cmd: RerateCharges, now: datetime, book: Any) -> Decision:
    w = state.require_wallet()
    c = w.customer
    groups = _found(state, cmd)
    found = [x for _, _, xs, _ in groups for x in xs]
    if not found:
        return Decision(Outcome(Rerated.code, Rerated(c.id, cmd.period, 0, 0)))
    fixes = [f for *_, fs in groups for f in fs]
    net = sum(x.delta for x in found) + sum(f.delta for f in fixes)
    rows = type_rows(found, fixes)
    invoice = _corrected_invoice(cmd, groups) if net else None
    noted = invoice is not None  # a credit (or debit) note documents the correction of that invoice
    # A note's money is whole minor units (its lines and total stay exact): the invoice's corrections
    # so far rounded once, half to even, less what its earlier notes moved (note_money); the
    # difference goes to the platform's rounding account.
    decimals = line_decimals(c.currency)
    money = note_money(net, decimals, *_noted(groups, invoice[0])) if invoice is not None else net
    rounding = money - net
    lot = None
    # what each true-up's correction gives back of each charge, by rule, where the true-ups kept it
    # (true_up_charges, with or without an entry: the next correction counts it)
    parts = {f.rule_id: given for f in fixes if f.given is not None if (given := f.parts())}
    # a true-up corrected up takes back of each charge from what paid it (what the true-ups before
    # gave it back), not from the lots in consumption order: as if the close had known the price
    takes = _takes(fixes, parts, chart.receivable_account(c.id))
    # what each payer got of each charge from the true-ups so far (true_up_payers), and gets now
    got = next((data.true_up_payers for source, data, _, _ in groups if source == cmd.period), {})
    placed: dict[tuple[int, str], int] = {}
    # beside decreases, what it takes back of each charge nets with what that charge's payers get back
    decreased = (any(x.delta < 0 for x in found) or any(f.delta < 0 for f in fixes)
                 or any(units > 0 for given in parts.values() for units in given.values()))
    # a lot expired by the period's end was expired at every true-up's give-back (all after it),
    # so what came back to it went to breakage; one closed later (expired, revoked in whole) may
    # have spent it: it gives at most what it held when it closed (money_back.take_back)
    expired_by = min((data.period_end for _, data, _, _ in groups if data.period_end is not None), default=None)
    # beside decreases (or true-up parts given back), each goes to what paid its charge and the
    # increases are paid like usage (_refund), not netted with them across payers
    if money > 0 and not decreased:
        took_now: dict[tuple[int, str], int] = {}
        took = take_back(w, *takes[:2], now, money, expired_by, takes[2], got=got, placed=took_now)
        placed = {key: -units for key, units in took_now.items()}
        legs, paid = _taken_then_usage(w, took, money - sum(took.values()), now)
    elif money or _between_payers(found, parts):
        room = room_left(groups, cmd.period if cmd.sources else None)
        unit = 10 ** (chart.ASSET_SCALE - decimals)
        # whole minor units but after a note of before notes were rounded (moved its exact total)
        step = unit if noted and money % unit == 0 else 1
        legs, paid, lot = _refund(state, cmd, found, -money, now, step, fixes, room, takes, expired_by, got, placed)
    else:
        legs, paid = Legs(c.currency), ()
    if rounding:  # revenue moves by the exact correction, the rounding account by the difference
        legs.credit(chart.revenue_account(c.currency), -rounding).credit(chart.rounding_account(c.currency), rounding)
        paid = (*paid, (chart.rounding_account(c.currency), -rounding))
    origin = groups[0][0]  # the (earliest) period of the corrected charges' usage
    # what it gave to (or took from) where the money of lots closed since went, for each: the next
    # correction takes from there at most what is left for the lot (store.load_payers)
    moved = closed_moves(w, paid, now)
    payers = payer_rows(parts, placed) if parts else ()
    posted = entry(f"rerate:{cmd.rerate_id}:{c.id}:{cmd.period}", "rerate_adjustment", legs, c.id, now,
                   {"rerate_id": cmd.rerate_id, "original_period": origin, "price_book": cmd.book_id,
                    "price_version": cmd.version, "charges": [x.charge.id for x in found],
                    **({"true_ups": [f.record() for f in fixes]} if fixes else {}),
                    **({"closed_lots": moved} if moved else {}),
                    **({"amount_rounding": rounding} if rounding else {}),
                    # what it posted each account beyond its payer rows: verify ties the rows to it
                    **({"beyond_payer_rows": beyond_rows(legs, payers)} if parts else {})})
    # its lines by the period of their usage (`original_period` on the invoice); what paid them once
    effects: list[Any] = [*([lot] if lot is not None else [])]
    if posted is None and fixes:  # lines netting 0: no entry's metadata keeps the true-ups' corrections
        effects.append(TrueUpsCorrected(c.id, cmd.rerate_id, cmd.period, tuple(tuple(f.record()) for f in fixes),
                                        payers))
    if parts:
        effects.append(TrueUpChargesGiven(c.id, cmd.period, cmd.rerate_id, given_rows(parts), payers))
    for i, (source, _, xs, fs) in enumerate(groups):
        # a free allowance's change under the allowance line's own labels (no model, no token type:
        # `by_type` keys it by its kind), as the usage report keys it, not as `model | free_allowance`
        lines = tuple({"kind": "adjustment", **_labels(r["model"], r["token_type"]), "quantity": 0,
                       "unit_price": None, "amount_units": r["delta"], "rule_id": None,
                       "price_version": cmd.version, "tier": None, "override_id": None} for r in type_rows(xs))
        effects.append(AdjustmentPosted(c.id, source, (*lines, *(f.line() for f in fs)), paid if i == 0 else ()))
    note = None
    if noted and posted is not None:
        year = now.astimezone(UTC).year
        seq = state.credit_note_seqs.get((cmd.issuer, year), 0) + 1
        number = f"{cmd.issuer}-{year:04d}-{seq:06d}"
        note_id = state.ids("cn")
        invoice_id, invoice_number = invoice
        content = {
            "id": note_id, "number": number, "kind": "credit" if net < 0 else "debit", "customer_id": c.id,
            "customer_name": bill_to_name(c), "currency": c.currency, "invoice_id": invoice_id,
            "invoice_number": invoice_number,
            "period": origin, "rerate_id": cmd.rerate_id, "price_book": cmd.book_id,
            "price_version": cmd.version, "charges": len(found),
            "lines": [{"model": r["model"], "token_type": r["token_type"],
                       "old_amount": format_money(r["old_amount"], c.currency),
                       "new_amount": format_money(r["new_amount"], c.currency),
                       "amount": format_money(r["delta"], c.currency)} for r in rows],
            "total": format_money(net, c.currency),
            # the money the note moved: its total in whole minor units, and what that rounding added
            "amount": format_money(money, c.currency), "amount_rounding": format_money(rounding, c.currency),
            "issued_at": wire_time(now)}
        note = CreditNoteIssued(c.id, note_id, invoice_id, cmd.rerate_id, cmd.issuer, year, seq, number,
                                c.currency, net, content, now)
        effects.append(note)
    for source, _, xs, fs in groups:
        moved: dict[str, int] = {}
        for f in fs:  # what a true-up gives back to an allowance it no longer counts as taken
            if f.allowance_id is not None:
                moved[f.rule_id] = moved.get(f.rule_id, 0) - f.delta
        for x in xs:
            effects.append(ChargeAdjusted(
                c.id, x.charge.id, cmd.version, cmd.rerate_id, source, x.old_amount, x.new_amount,
                _pairs(x.old), _pairs(x.new), note.credit_note_id if note is not None else None,
                x.overrides_version, dict(x.allowance_moves), dict(x.old_rules), dict(x.new_rules)))
            for allowance_id, units in x.allowance_moves.items():
                moved[ALLOWANCE + allowance_id] = moved.get(ALLOWANCE + allowance_id, 0) + units
        if any(moved.values()):  # what the charges now take from their period's allowances: not given again
            effects.append(UsageCounted(c.id, source, cmd.book_id, {k: v for k, v in moved.items() if v}))
    result = Rerated(c.id, cmd.period, len(found), net, note.number if note is not None else None,
                     posted.key if posted is not None else None)
    return Decision(Outcome(result.code, result), posted, tuple(effects))


def _noted(groups: Sequence[Group], invoice_id: str) -> tuple[int, int, int]:
    """The corrected invoice's (close's rounding, notes' totals, what they moved) (RerateInput.noted)."""
    return next((data.noted[invoice_id] for _, data, _, _ in groups if invoice_id in data.noted), (0, 0, 0))


def note_money(net: int, decimals: int, due_rounding: int, totals: int, moved: int) -> int:
    """What a credit or debit note of exact total `net` moves, in whole minor units: the invoice's
    corrections with it (`totals` + `net`), less what its close's rounding added to the amount due,
    rounded once (half to even), less what its notes before moved (`moved`). So what the invoice
    made due plus its notes' money is always its corrected total rounded once (postpaid: 4.5 yen, due
    4, re-rated to 3, 9, then 4.497 yen moves -1, +6, -5: 3, 9, 4 owed), and a prepaid invoice's
    lots, which paid the exact total, have paid it within half a minor unit, for ever; each note
    rounding its own total drifted with each re-rate. A note's sign is its total's: where a note
    issued before notes were rounded (its exact total counted as moved) left the running figure
    the other way, this one moves 0 and the next one catches up."""
    money = round_line(totals + net - due_rounding, decimals) - moved
    return money if money * net > 0 else 0


def _between_payers(found: Iterable[Correction], parts: Mapping[str, Mapping[int, int]]) -> bool:
    """Whether a re-rate netting to 0 still moves money between payers: a charge whose correction and
    the true-ups' parts of it (TrueUpFix.parts: given back, taken back) do not net to 0 (its usage
    costs more or less in all); its part goes to or from what paid it (_refund), as of a re-rate that
    does not net to 0. Where each charge's own nets to 0, nothing moves."""
    cost: dict[int, int] = {}
    for x in found:
        cost[x.charge.id] = cost.get(x.charge.id, 0) + x.delta
    for given in parts.values():
        for charge, units in given.items():
            cost[charge] = cost.get(charge, 0) - units
    return any(cost.values())


def _pairs(amounts: Mapping[TypeKey, int]) -> tuple[tuple[str, str, int], ...]:
    return tuple((m, t, a) for (m, t), a in sorted(amounts.items()))




__all__ = ["ChargeOnRecord", "Correction", "RerateInput", "Rerated", "by_type", "corrections", "rerate_charges",
           "rerated_period", "standing_rules", "type_rows", "usage_rules"]
