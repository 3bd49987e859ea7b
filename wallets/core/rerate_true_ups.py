"""What a re-rate makes of a closed period's volume true-up, as a pure rule.

The close trued each volume-tiered rule up at the tier the period's units of it reached (those of
every version tiering it by volume), each version's units at its own price of that tier, less what
graduated rating charged (wallets.core.invoicing.true_up_lines). A re-rate over that period
changes what the charges cost; the true-up must follow, or the period ends at the corrected
charges less the old version's true-up (neither price). So the re-rate that corrects the charges
billed in the period also corrects its true-up to what the same rule gives with the charges as
re-rated (the book's price; a discount's share of the true-up stays as the close made it): the
true-up the period should have, less what its close and earlier re-rates posted. Applied again it
finds nothing to move.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pricing.books import PriceBook, Rule
from pricing.lines import Rating
from pricing.rating import volume_tier_price
from wallets.core.invoicing import CONTRACT, flat_in, given_back, paying, true_up_lines
from wallets.core.money_back import overcharged
from wallets.core.rating import ALLOWANCE

if TYPE_CHECKING:
    from wallets.core.rerating import ChargeOnRecord, Correction, RerateInput

KIND = "volume_true_up"  # the token type a true-up's correction shows under, beside the charges' rows


@dataclass(frozen=True, slots=True)
class TrueUpFix:
    """A volume rule's true-up of a closed period: what stands (`old`) and what it should be (`new`)."""

    period: str
    rule_id: str
    model: str
    token_type: str
    version: str
    quantity: int
    unit_price: str | None
    tier: int | None
    old: int
    new: int
    charges: tuple[ChargeOnRecord, ...] = ()  # the period's charges its rule rated (what paid them gets money back)
    pieces: tuple[tuple[int, int, int], ...] = ()  # (charge id, units, amount) of the rule, as re-rated
    # what the true-ups so far (the close's, earlier re-rates') gave back of each charge, by id; None:
    # not kept (a close before they were kept, or a rule they did not price per charge)
    given: Mapping[int, int] | None = None
    # (charge id, unit price) where the rule's charges stand at versions of their own prices of the
    # tier reached (two versions or more tier it by volume): each charge's overcharge is at its own
    prices: tuple[tuple[int, str], ...] = ()

    @property
    def delta(self) -> int:
        return self.new - self.old

    @property
    def allowance_id(self) -> str | None:
        """The free allowance whose share of the true-up this corrects (None: a rule's true-up)."""
        return self.rule_id[len(ALLOWANCE):] if self.rule_id.startswith(ALLOWANCE) else None

    def line(self) -> dict[str, Any]:
        """Its line on the invoice it is billed on (no quantity: the close's line counted the units);
        an allowance's share, a `free_allowance` line of no price version, as the close's."""
        if self.allowance_id is not None:
            return {"kind": "free_allowance", "model": None, "token_type": None, "quantity": 0, "unit_price": None,
                    "amount_units": self.delta, "rule_id": None, "price_version": None, "tier": None,
                    "override_id": self.allowance_id}
        return {"kind": KIND, "model": self.model or None, "token_type": self.token_type, "quantity": 0,
                "unit_price": self.unit_price, "amount_units": self.delta, "rule_id": self.rule_id,
                "price_version": self.version, "tier": self.tier, "override_id": None}

    def parts(self) -> dict[int, int]:
        """What this correction gives back of each charge (taken back: negative): its overcharge at
        the tier reached less what the true-ups before gave back of it, the charges in order, up to
        the correction (as money_back.each_charge_first places money back): what the entry keeps,
        `given` of the next correction. A charge whose part runs against the correction (taken back
        of in a true-up corrected down, given back to in one corrected up: a re-rate of some of the
        rule's charges moves the tier's price under the others) counts too, as far as the others'
        parts beyond the correction make room for it, so the parts still sum to the correction (none,
        where no part goes its way: what the true-ups before gave back was not kept whole)."""
        if self.given is None or not self.delta:
            return {}
        line, left, out = self.line(), -self.delta, {}
        pieces = {charge: (units, amount) for charge, units, amount in self.pieces}
        dues = {}
        prices = dict(self.prices)
        for charge in sorted(pieces.keys() | self.given.keys()):  # a charge gone from the rule: 0 over
            priced = {**line, "unit_price": prices[charge]} if charge in prices else line
            over = overcharged(priced, *pieces[charge]) if charge in pieces and self.unit_price is not None else 0
            dues[charge] = over - self.given.get(charge, 0)
        sign = 1 if left > 0 else -1
        room = max(0, sum(due * sign for due in dues.values() if due * sign > 0) - left * sign)
        for charge, due in dues.items():  # against the correction, as far as the others make room
            part = -min(-due * sign, room) * sign
            if due * sign < 0 and part:
                out[charge], left, room = part, left - part, room + part * sign
        for charge, due in dues.items():
            part = min(due, left) if left > 0 else max(due, left)
            if due * sign > 0 and part:
                out[charge], left = part, left - part
        return out

    def record(self) -> list[Any]:
        """As the entry's metadata keeps it (`true_ups`: what verify and the apply's answer read)."""
        return [self.period, self.rule_id, self.model, self.old, self.new]


def true_up_fixes(data: RerateInput, found: Sequence[Correction], ratings: Mapping[int, Rating],
                  earlier: Mapping[int, Rating] | None = None) -> list[TrueUpFix]:
    """The corrections of `data.period`'s volume true-ups, when that period is closed and the
    re-rate corrects charges billed in it (`found`; `ratings`: the re-rated charges' ratings by id).
    Of each volume rule that rated a re-rated charge: the true-up with every charge billed in the
    period as it stands after the re-rate, the close's rule: the units of the versions tiering it by
    volume reach the tier, each version's at its own price of it (a version pricing it flat: its
    units final at its price, they reach the tier too, as the period's counters counted them); one
    correction a rule, its line at the latest of them,
    against the true-up posted so far (`data.true_ups`). A charge not re-rated now counts under the
    rules of the version an earlier re-rate rated it with (`earlier`: its rating then, by id), not
    those it was first charged under; under the rule re-rated charges of the same token type moved
    to from it, when the version re-rated to names that rule otherwise."""
    book, period = data.book, data.period
    if book is None or period not in data.invoices:
        return []
    if not any((x.charge.billed_in or period) == period for x in found):
        return []
    order = {v.version: i for i, v in enumerate(book.versions)}
    versions = {v.version: v for v in book.versions}
    # rule id -> (version, the rule of that version that rated them) -> [units, amount charged]
    basis: dict[str, dict[tuple[str, str], list[int]]] = {}
    touched: set[str] = set()
    rated: dict[str, dict[int, ChargeOnRecord]] = {}  # rule id -> the charges it rated, by id
    per_charge: dict[str, dict[int, list[int]]] = {}  # rule id -> charge id -> [units, amount]
    renamed = _renamed(data, ratings, earlier or {})
    at: dict[str, dict[int, tuple[str, str]]] = {}  # rule id -> charge id -> (version, its rule there)
    # rule id -> the units contract prices and versions pricing the rule flat rated (they reach the tier)
    contracts: dict[str, int] = {}
    for charge in data.charges:
        if (charge.billed_in or period) != period:
            continue  # a late charge of another period, or one billed later: its close never trued it up
        rating = ratings.get(charge.id)
        _count_contract_units(contracts, versions, charge, rating, data.version.version)
        if rating is not None:
            pieces = [(ln.rule_id, ln.rule_id, ln.price_version, ln.quantity, ln.amount_units) for ln in rating.lines
                      if ln.kind == "usage" and ln.rule_id is not None and ln.override_id is None]
            touched.update(rule_id for rule_id, *_ in pieces)
            # the rule it stood under loses it (one the version still has, beside the one rating it now)
            touched.update(ln["rule_id"] for ln in _lines(charge, (earlier or {}).get(charge.id))
                           if ln["kind"] == "usage" and ln.get("rule_id") and ln.get("override_id") is None)
        else:
            # (the rule it counts for, the rule of its version that rated it, ...): renamed only where
            # the version in force at its time names its rule otherwise (a later one it is not under keeps it)
            kept = _in_force(book, charge)
            pieces = [(rule_id if rule_id in kept else renamed.get(rule_id, rule_id), rule_id, *rest)
                      for rule_id, *rest in _standing(charge, (earlier or {}).get(charge.id))]
        for rule_id, source, version, quantity, amount in pieces:
            if flat_in(versions, source, version):  # a version pricing the rule flat (or graduated): final
                contracts[rule_id] = contracts.get(rule_id, 0) + quantity  # at its price, it reaches the tier
                continue
            rated.setdefault(rule_id, {})[charge.id] = charge
            piece = per_charge.setdefault(rule_id, {}).setdefault(charge.id, [0, 0])
            piece[0] += quantity
            piece[1] += amount
            at.setdefault(rule_id, {})[charge.id] = (version, source)
            held = basis.setdefault(rule_id, {}).setdefault((version, source), [0, 0])
            held[0] += quantity
            held[1] += amount
    fixes = []
    for rule_id in sorted(touched & basis.keys()):  # a rule left with none of them: _orphaned
        # each version tiering the rule by volume at its own tiers, their units together reaching the tier
        # (a version that named the rule otherwise prices its units by the rule it rated them with)
        counted, tiers = [], {}
        for (version, source), (quantity, amount) in sorted(basis[rule_id].items(),
                                                            key=lambda b: (order.get(b[0][0], -1), b[0][1])):
            rule = next((r for r in versions[version].rules if r.id == source), None) if version in versions else None
            if rule is not None and rule.tier_mode == "volume" and rule.tiers and (quantity or amount):
                counted.append((replace(rule, id=rule_id), version, quantity, amount))
                tiers[(version, source)] = rule
        if not counted:
            continue
        rule, version, *_ = counted[-1]  # the latest: the correction's line names it
        quantity = sum(q for *_, q, _ in counted)
        reached = quantity + contracts.get(rule_id, 0)
        lines = [ln for ln in true_up_lines(counted, contracts=contracts) if ln["override_id"] is None]
        new, old = sum(ln["amount_units"] for ln in lines), data.true_ups.get(rule_id, 0)
        shown = next((ln for ln in lines if ln["price_version"] == version), None)
        price = shown["unit_price"] if shown else None
        prices: tuple[tuple[int, str], ...] = ()
        if len(counted) > 1:  # each charge's overcharge is at its own version's price of the tier reached
            price = str(volume_tier_price(rule, reached))
            prices = tuple((c, str(volume_tier_price(tiers[where], reached)))
                           for c, where in sorted(at[rule_id].items()) if where in tiers)
        if new != old:
            fixes.append(TrueUpFix(period, rule_id, rule.model or "", rule.token_type, version, quantity,
                                   price, shown["tier"] if shown else _tier(rule, reached),
                                   old, new, tuple(rated[rule_id].values()),
                                   tuple((c, u, a) for c, (u, a) in sorted(per_charge[rule_id].items())),
                                   _given(data, rule_id, old), prices))
    fixes += _orphaned(data, basis)
    return fixes + allowance_fixes(data, found, fixes)


def _given(data: RerateInput, rule_id: str, old: int) -> Mapping[int, int] | None:
    """What the true-ups so far gave back of each of the rule's charges (store.true_up_given): none
    of any where they kept none and its true-up stands at 0 (a line of 0 at the close, or no line:
    a rule its charges were moved to after it); None: not kept."""
    kept = data.true_up_given.get(rule_id)
    return kept if kept is not None or old else {}


def _count_contract_units(contracts: dict[str, int], versions: Mapping[str, Any], charge: ChargeOnRecord,
                          rating: Rating | None, now: str) -> None:
    """Adds to `contracts` (rule id -> units) what a contract price rated of the charge (under any
    version of the book), as charged (the close's rollup has them so: invoicing.contract_units),
    or, where a re-rate rated them under another rule id, under that rule and the version it re-rated
    to (`rating`, this re-rate's, at version `now`; else the last re-rate's kept rules, CONTRACT): the
    period's counters counted them, so they reach the rule's tier, and their price is the customer's
    own, trued up never."""
    if rating is not None:
        moved = {CONTRACT + (ln.token_type or ln.kind): ln.rule_id for ln in rating.lines
                 if ln.kind == "usage" and ln.rule_id is not None and ln.override_id is not None}
        version_now = now
    else:
        moved, version_now = dict(charge.rules or {}), charge.rerated_to or ""
    for line in charge.lines:
        rule_id, version = line.get("rule_id"), line.get("price_version") or ""
        if line["kind"] != "usage" or not rule_id or line.get("override_id") is None:
            continue
        rule_now = moved.get(CONTRACT + (line.get("token_type") or line["kind"]))
        if rule_now is not None and rule_now != rule_id:
            rule_id, version = rule_now, version_now
        if version in versions:
            contracts[rule_id] = contracts.get(rule_id, 0) + int(line["quantity"])


def _tier(rule: Rule, quantity: int) -> int:
    """The index of the tier `quantity` units of the volume rule reach."""
    return next(i for i, t in enumerate(rule.tiers) if t.up_to is None or quantity <= t.up_to)


def allowance_fixes(data: RerateInput, found: Sequence[Correction], fixes: Sequence[TrueUpFix]) -> list[TrueUpFix]:
    """What the free allowances' share of a closed period's true-up money back becomes, by the close's
    rule (wallets.core.invoicing.given_back), over the usage of every book billed in it (the other
    books' as it stands, `data.others`), with the charges billed in it as re-rated (`found`) and
    its true-ups as corrected (`fixes`), against what the close and earlier re-rates gave them
    (`data.given_back`): an allowance (rule id `allowance:<id>`) gives back what it no longer paid, or
    takes what it now paid, so it is not given back twice and its counter stays what it took. A true-up
    that charges more (a dearer tier's) is paid by the allowances in force at the period's end, each
    up to what it has left after the usage as re-rated (invoicing.paying), as the close's is."""
    period = data.period
    if data.book is None or period not in data.invoices:
        return []
    moved = {x.charge.id: x for x in found if (x.charge.billed_in or period) == period}
    if not moved:
        return []
    paid: dict[str, int] = {}  # allowance id -> what it pays of the period's charges as re-rated
    own = 0  # what they cost the customer itself as re-rated (the other books' as they stand)
    for charge in (*data.charges, *data.others):
        if (charge.billed_in or period) != period:
            continue
        x = moved.get(charge.id)
        counted = charge.counted()
        for allowance_id, units in (x.allowance_moves if x is not None else {}).items():
            counted[ALLOWANCE + allowance_id] = counted.get(ALLOWANCE + allowance_id, 0) + units
        for key, units in counted.items():
            if key.startswith(ALLOWANCE):
                paid[key[len(ALLOWANCE):]] = paid.get(key[len(ALLOWANCE):], 0) + units
        own += sum((x.new if x is not None else charge.standing()).values())
    back = -(data.true_up_total + sum(f.delta for f in fixes))
    if back >= 0:
        new = given_back(back, own, paid)
    else:  # a negative share each: what the allowance pays of it
        in_force = (data.overrides.at(data.period_end - timedelta(microseconds=1))
                    if data.overrides is not None and data.period_end is not None else None)
        new = {a: -units for a, units in paying(-back, paid, in_force.overrides.allowances if in_force else ()).items()}
    return [TrueUpFix(period, ALLOWANCE + a, "", "free_allowance", "", 0, None, None,
                      data.given_back.get(a, 0), new.get(a, 0))
            for a in sorted({*data.given_back, *new}) if data.given_back.get(a, 0) != new.get(a, 0)]


def _orphaned(data: RerateInput, basis: Mapping[str, Any]) -> list[TrueUpFix]:
    """The true-ups posted of rules that rate none of the period's charges billed in it any more (a
    version the charges were re-rated to names the rule otherwise): each goes back to 0, or the
    rule under its new name is trued up beside it and the volume discount is given twice."""
    book, period, fixes = data.book, data.period, []
    for rule_id, old in sorted(data.true_ups.items()):
        if not old or rule_id in basis or book is None:
            continue
        found = [(v.version, r) for v in book.versions for r in v.rules if r.id == rule_id]
        if not found:
            continue
        version, rule = found[-1]  # the latest version that has it (the close's)
        charges = tuple(ch for ch in data.charges if (ch.billed_in or period) == period
                        and any(ln.get("rule_id") == rule_id for ln in ch.lines))
        # each charge takes back what the true-ups so far gave back of it (none over, the rule gone)
        fixes.append(TrueUpFix(period, rule_id, rule.model or "", rule.token_type, version, 0, None, None, old, 0,
                               charges, given=data.true_up_given.get(rule_id)))
    return fixes


def _renamed(data: RerateInput, ratings: Mapping[int, Rating], earlier: Mapping[int, Rating]) -> dict[str, str]:
    """The rule each charge re-rated now stood under (of a token type) -> the rule rating it now, where
    they differ and the version re-rated to has no rule of the old name (it names the rule otherwise):
    a rule it still has (beside another rating some of the token type's charges, by their dimensions)
    keeps the charges left under it, and so does one whose charges re-rated went to two rules or more
    (split by their dimensions: which of them a charge left out would go to, it was not re-rated to say)."""
    kept = {rule.id for rule in data.version.rules}
    seen: dict[str, set[str]] = {}
    for charge in data.charges:
        rating = ratings.get(charge.id)
        if rating is None:
            continue
        now = {ln.token_type: ln.rule_id for ln in rating.lines
               if ln.kind == "usage" and ln.rule_id is not None and ln.override_id is None}
        for line in _lines(charge, earlier.get(charge.id)):
            rule_id, new = line.get("rule_id"), now.get(line.get("token_type"))
            if (line["kind"] == "usage" and line.get("override_id") is None and rule_id and new and new != rule_id
                    and rule_id not in kept):
                seen.setdefault(rule_id, set()).add(new)
    return {rule_id: new for rule_id, (new, *others) in seen.items() if not others}


def _in_force(book: PriceBook, charge: ChargeOnRecord) -> frozenset[str]:
    """The rule ids of the book's version in force at the charge's usage time (none before its first)."""
    first = book.versions[0].effective_from
    return frozenset(r.id for r in book.version_at(charge.occurred_at).rules) if charge.occurred_at >= first \
        else frozenset()


def _lines(charge: ChargeOnRecord, rerated: Rating | None) -> Sequence[Mapping[str, Any]]:
    """The charge's lines as its last re-rate rated it (`rerated`), or as charged."""
    return charge.lines if rerated is None else [
        {"kind": ln.kind, "token_type": ln.token_type, "rule_id": ln.rule_id, "override_id": ln.override_id,
         "price_version": ln.price_version, "quantity": ln.quantity, "amount_units": ln.amount_units}
        for ln in rerated.lines]


def _standing(charge: ChargeOnRecord, rerated: Rating | None = None) -> Iterable[tuple[str, str, int, int]]:
    """(rule, version, units, amount) of a charge not re-rated now, at the book's price: its usage
    lines (as its last re-rate rated it, `rerated`, when one did: the rules it stands under), each
    moved to what it stands at now by model and token type."""
    lines = _lines(charge, rerated)
    charged: dict[tuple[str, str], int] = {}
    for line in lines:
        key = (charge.model, line.get("token_type") or line["kind"])
        charged[key] = charged.get(key, 0) + int(line["amount_units"])
    moved = {k: v - charged.get(k, 0) for k, v in charge.standing().items()}
    out = []
    for line in lines:
        if line["kind"] != "usage" or line.get("rule_id") is None or line.get("override_id") is not None:
            continue
        key = (charge.model, line.get("token_type") or line["kind"])
        out.append((line["rule_id"], line.get("price_version") or "", int(line["quantity"]),
                    int(line["amount_units"]) + moved.pop(key, 0)))
    return out


__all__ = ["KIND", "TrueUpFix", "allowance_fixes", "true_up_fixes"]
