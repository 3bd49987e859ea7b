"""Money a correction gives back (a re-rate's, a close's volume true-up), where the money of the
charges it corrects came from: what the receivable paid goes off what is owed, what lots paid goes
back to them (the last consumed first, up to what each paid and was granted; a revoked grant's is
revoked again, an expired one's goes to breakage), then what is owed, and only the rest becomes
credit (a paid lot)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

from pricing.books import per_units
from pricing.money import per_amount, pricing_context
from wallets import chart
from wallets.core.commands import TOPUP_PRIORITY
from wallets.core.credits import opened_lot
from wallets.core.decision import LotOpened
from wallets.core.legs import Legs
from wallets.core.state import RulePaid, State
from wallets.model import Wallet, consumption_key


def given_rows(parts: Mapping[str, Mapping[int, int]]) -> tuple[tuple[str, int | None, int], ...]:
    """What a true-up gave back of each charge, by rule, as true_up_charges keeps it: (rule id,
    charge id, units) of each charge given (or taken) back something, in order; a rule that gave
    nothing back of any charge, (rule id, None, 0): kept, where a rule not there was not."""
    rows: list[tuple[str, int | None, int]] = []
    for rule_id in sorted(parts):
        given = [(rule_id, charge, units) for charge, units in sorted(parts[rule_id].items()) if units]
        rows += given or [(rule_id, None, 0)]
    return tuple(rows)


def payer_rows(parts: Mapping[str, Mapping[int, int]], placed: Mapping[tuple[int, str], int]
               ) -> tuple[tuple[int, str | None, int], ...]:
    """What a true-up gave back of each charge by payer, as true_up_payers keeps it: (charge id,
    account, units) of each charge it gave (or took) back something of over all its rules
    (`parts`, rule id -> charge id -> units), each payer's part (`placed`: (charge id, account) ->
    units), and what none of them got (None: the rest of the charge's part), nonzero, in order."""
    total: dict[int, int] = {}
    for given in parts.values():
        for charge, units in given.items():
            total[charge] = total.get(charge, 0) + units
    by_charge: dict[int, list[tuple[str, int]]] = {}
    for (charge, account), units in placed.items():
        if units:
            by_charge.setdefault(charge, []).append((account, units))
    rows: list[tuple[int, str | None, int]] = []
    for charge in sorted(total.keys() | by_charge.keys()):
        mine = sorted(by_charge.get(charge, ()))
        rows += [(charge, account, units) for account, units in mine]
        if rest := total.get(charge, 0) - sum(units for _, units in mine):
            rows.append((charge, None, rest))
    return tuple(rows)


def beyond_rows(legs: Legs, rows: Iterable[tuple[int, str | None, int]]) -> dict[str, int]:
    """What a true-up's entry gave each account back (credited it, less debited it) beyond that
    account's payer rows (`rows`, payer_rows), nonzero, by account: kept in the entry's metadata
    (`beyond_payer_rows`, part of its hash) so verify ties each payer's rows to its posting, the
    posting being the rows and this (a re-rate's charge decreases and increases, a rule's rest,
    the revenue's and rounding's legs)."""
    out = {p.account: -p.amount for p in legs.postings()}
    for _, account, units in rows:
        if account is not None:
            out[account] = out.get(account, 0) - units
    return {account: units for account, units in sorted(out.items()) if units}


def to_credit(placed: dict[tuple[int, str], int], paid: Sequence[tuple[str, int]], lot: LotOpened | None,
              receivable: str, own: int = 0) -> None:
    """The payer rows follow the postings: of what `placed` gives the receivable of each charge's
    true-up part, what did not come off what is owed (what `paid` gives it back in all, counted
    against `own` first, then those parts) went to the paid credit lot the correction opened, so the
    rows name that lot (the later charges' first) and a take-back later takes it from there first.
    `own`: what the receivable got back beside the parts, which no row names (a re-rate's charge
    decreases, a true-up's rest): counted against the parts first, the lot would be made of it alone,
    no row would name it, and a take-back of the parts would go onto what is owed beside it."""
    if lot is None:
        return
    parts = sum(v for (_, a), v in placed.items() if a == receivable and v > 0)
    move = min(lot.granted, max(0, parts - max(0, -dict(paid).get(receivable, 0) - own)))
    for charge, account in sorted(placed, reverse=True):
        if account == receivable and move > 0 and placed[(charge, account)] > 0:
            part = min(move, placed[(charge, account)])
            placed[(charge, account)] -= part
            placed[(charge, lot.code)] = placed.get((charge, lot.code), 0) + part
            move -= part


def rounded(placed: dict[tuple[int, str], int], shares: Mapping[str, int], paid_back: Sequence[tuple[str, int]],
            lot: LotOpened | None, receivable: str, step: int, rounding: str,
            bound: Mapping[tuple[int, str], int] | None = None) -> None:
    """The payer rows follow the postings of a give-back in multiples of `step` (a note's whole
    minor units, give_back): what an account was posted differs from its exact share (`shares`) by
    at most `step` (the receivable's share rounded down, the fraction left to the last lot given
    money back, and the note's own rounding, which takes back the close's and the notes' before it:
    a whole `step` where both were half of one, -$0.09 moving -$0.08 on an invoice whose close
    rounded $1.125 down); that difference is its part rows', not the exact parts': taken off its rows (the
    last charge's first, none below nothing) or added to its last charge's row, and the opposite
    named `rounding` (the rounding account's: never a payer's bound; take_back takes it from there).
    The receivable beside a credit lot is to_credit's (its rows already follow what came off what
    is owed); the credit lot is named by to_credit alone. `bound`: (charge id, account) -> the most
    its row may hold (what the account paid of the charge less what the true-ups before gave it of
    it): the difference added goes to the last charge's row it fits in, none (the rows keep the
    exact parts) where it fits in no row, so no payer's rows of a charge sum to more than it paid."""
    if step <= 1:
        return
    got = {account: -units for account, units in paid_back}
    for account, asked in shares.items():
        if lot is not None and account in (receivable, lot.code):
            continue
        diff = got.get(account, 0) - asked
        rows = sorted((key for key, units in placed.items() if key[1] == account and units > 0), reverse=True)
        if not diff or abs(diff) > step or not rows:
            continue
        fits = [key for key in rows if bound is None or key not in bound or placed[key] + diff <= bound[key]]
        moves = [(fits[0], diff)] if diff > 0 and fits else []
        for key in rows if diff < 0 else ():
            part = min(-diff, placed[key])
            moves.append((key, -part))
            diff += part
        for (charge, payer), units in moves:
            placed[(charge, payer)] += units
            placed[(charge, rounding)] = placed.get((charge, rounding), 0) - units


def last_consumed_first(w: Wallet) -> Callable[[str], tuple[int, str]]:
    """The lots in the reverse of their consumption order, then accounts not loaded (swept lots:
    their part goes to breakage)."""
    consumed = {lot.code: i for i, lot in enumerate(sorted(w.lots.values(), key=consumption_key))}
    return lambda account: (-consumed[account], account) if account in consumed else (1, account)


def share(shares: dict[str, int], taken: dict[tuple[int, str], int], paid: Mapping[tuple[int, str], int],
          need: int, receivable: str, order: Callable[[str], tuple[int, str]],
          room: dict[str, int] | None = None) -> int:
    """Adds to `shares` what of `need` back goes to what paid the charges of `paid` ((charge id,
    account) -> what that account paid of it), the last consumed first: the receivable (usage falls
    on it after the lots) up to what it paid of them (what is owed bounds it later: give_back); then
    each lot, up to what it paid of each charge less what earlier corrections took back of that
    charge (`taken`, which it updates: a charge two rules rated gives back what it paid once,
    charges of other rules are not counted against it) and, with `room` (which it updates), what the
    lot has left in them all after corrections already posted. Returns what of `need` none took.

    The receivable's share is of this `need` alone, not all it paid of these charges: give_back
    pays the receivable's shares of every charge first, so a share beyond `need` took the money
    back of other charges, their lots' (a grant's decrease paid off what the customer owes)."""
    left: dict[str, list[tuple[tuple[int, str], int]]] = {}
    for key, amount in sorted(paid.items()):
        if key[1] == receivable:
            part = min(need, amount)
            if part > 0:
                shares[receivable] = shares.get(receivable, 0) + part
                need -= part
        else:
            left.setdefault(key[1], []).append((key, amount - taken.get(key, 0)))
    for account in sorted(left, key=order):
        for key, amount in left[account]:
            part = min(need, amount, room.get(account, need) if room is not None else need)
            if part > 0:
                if room is not None and account in room:
                    room[account] -= part
                shares[account] = shares.get(account, 0) + part
                taken[key] = taken.get(key, 0) + part
                need -= part
    return need


def overcharged(line: Mapping[str, Any], units: int, charged: int) -> int:
    """What a charge's `units` of a true-up line's rule, `charged` so, cost above the line's price
    of the tier reached (rounded up: what the charge costs at it is never short)."""
    with pricing_context():
        cost = per_amount(units * Decimal(line["unit_price"]), per_units(line["token_type"])).scaleb(chart.ASSET_SCALE)
    return charged - int(cost.to_integral_value(rounding=ROUND_CEILING))


def each_charge_first(shares: dict[str, int], taken: dict[tuple[int, str], int], line: Mapping[str, Any],
                      paid: Sequence[RulePaid], receivable: str, order: Callable[[str], tuple[int, str]],
                      given: Mapping[int, int] | None = None, parts: dict[int, int] | None = None,
                      room: dict[str, int] | None = None, placed: dict[tuple[int, str], int] | None = None,
                      prices: Mapping[int, str] | None = None, net: int | None = None
                      ) -> tuple[int, dict[tuple[int, str], int]]:
    """Of a true-up line's money back, what each charge of its rule was overcharged (its units at
    the tier reached cost less than graduated rating charged them) goes to what paid that charge:
    off what is owed up to what the receivable paid of it, then to the lots that paid it, the last
    consumed first (`share`, bounded by `room` when given). A lot that paid the early, dearer units
    gets their difference, not the whole true-up because it was consumed last, and the receivable no
    more than its charges' difference. A re-rate's correction of a true-up counts, of each charge,
    what the true-ups before gave back of it (`given`: the close's and earlier corrections'). Adds
    to `parts` what it gives back of each charge (what the entry records, `given` of the next one).
    Each charge's part is counted against the line whether or not its payers could take it all (an
    allowance paid the rest of it): the charges after it get what the line left after it, as
    TrueUpFix.parts counts a re-rate's, so the parts never sum to more than the line (and verify
    ties a close's record to it charge by charge; `prices`: charge id -> the unit price of its own
    version, where the rule's versions price the tier apart); what its payers could not take is
    shared with the rest. A charge a discount took its share off (a paid row's seventh field, what
    the rule's discount lines took off it) was paid that much less: its payers get its part less
    the same share (a part of $9.00 of a charge of $12.00 half off: $4.50), and `net` is what of the
    line is money back (the line less its discounts' lines, which take their share of it back).
    Each payer of a charge gets at most what it paid of it less what it got back of it already
    (`taken`: of this correction's lines and, a re-rate's, what the true-ups before gave it,
    store.true_up_payers), the receivable too; adds to `placed` what each payer got
    of each charge's part ((charge id, account) -> units: what true_up_payers keeps). Returns what
    is left of the money back and what paid the rule's charges to share it over as before
    (rounding, a re-rated charge's, a part not taken; the receivable's of the charges above left
    out)."""
    left = -line["amount_units"]  # what the line has left for the charges after each one's part
    need = left if net is None else net
    lots: dict[int, dict[tuple[int, str], int]] = {}
    owed: dict[int, int] = {}
    over: dict[int, int] = {}
    cut: dict[int, tuple[int, int]] = {}  # a discounted charge's: (what it cost after them, before)
    for charge, account, amount, units, charged, *more in paid:
        if account is None or account == receivable:
            owed[charge] = owed.get(charge, 0) + amount
        else:
            lots.setdefault(charge, {})[(charge, account)] = amount
        if units is not None and charged is not None and line.get("unit_price") is not None:
            priced = {**line, "unit_price": prices[charge]} if prices and charge in prices else line
            over[charge] = overcharged(priced, units, charged) - (given or {}).get(charge, 0)
            if len(more) > 1 and more[1] and charged > 0:
                cut[charge] = (charged + more[1], charged)
    for charge in sorted(over):
        part = min(left, over[charge])
        if part > 0:
            left -= part
            if parts is not None:
                parts[charge] = parts.get(charge, 0) + part
        if charge in cut and part > 0:  # its payers paid it less its discount
            part = min(need, part * cut[charge][0] // cut[charge][1])
        rec = min(part, owed.get(charge, 0) - taken.get((charge, receivable), 0))
        if rec > 0:
            shares[receivable] = shares.get(receivable, 0) + rec
            taken[(charge, receivable)] = taken.get((charge, receivable), 0) + rec
            if placed is not None:
                placed[(charge, receivable)] = placed.get((charge, receivable), 0) + rec
            need, part = need - rec, part - rec
        if part > 0 and charge in lots:
            before = {key: taken.get(key, 0) for key in lots[charge]}
            need -= part - share(shares, taken, lots[charge], part, receivable, order, room)
            for key in lots[charge] if placed is not None else ():
                if taken.get(key, 0) != before[key]:
                    placed[key] = placed.get(key, 0) + taken.get(key, 0) - before[key]
    rest = {(c, receivable if a is None else a): v for c, a, v, *_ in paid
            if not (c in over and (a is None or a == receivable))}
    return need, rest


def take_back(w: Wallet, takes: Mapping[int, int], payers: Mapping[int, Sequence[tuple[str, int]]],
              now: datetime, most: int | None = None, expired_by: datetime | None = None,
              given: Mapping[int, int] | None = None, gets: Mapping[str, int] | None = None,
              got: Mapping[int, Mapping[str, int]] | None = None,
              placed: dict[tuple[int, str], int] | None = None) -> dict[str, int]:
    """What a true-up corrected up takes back of each charge (`takes`: charge id -> units > 0), from
    what paid that charge (`payers`: charge id -> (account, units)), the reverse of how the money
    back reached it (each_charge_first): the lots that paid it, the first consumed first, each up to
    what it paid of it and still has; then the receivable, up to what it paid of it, from the paid
    credit lots its parts went to first (to_credit: named in the rows of `got`, any charge's), each up
    to what it still has, and only the rest onto what is owed, the reverse of give_back's (off what
    is owed first, the rest credit); in all at most `most`. Account -> units. A lot closed since
    takes it from where its money went (taken_from): one expired by `expired_by`, the period's end,
    before any true-up gave back, what it paid, for what was given back to it went to breakage; one
    closed after it (live at the close: expired, or a grant revoked in whole), up to what went there
    for it (`Lot.closed_with`: what it held when it closed and what corrections since gave there for
    it less what they took, store.load_payers; an expired one not swept yet, and one loaded without
    it, its balance) and what it `gets` back beside it (a decrease's share, which goes where its
    money went too): had the close known the price, it would have held that much less then, and
    breakage (or the revocation) got that much less. What none of them can give (a lot spent since,
    one closed holding less than what came back to it: spent before it closed) is the caller's to
    take as usage is, from the live lots in consumption order: had the lot got less back, that usage
    would have fallen on the lots after it. With `given` (charge id -> what the
    true-ups before gave back of it), each takes at most what it got of that: the receivable first,
    then the lots the last consumed first, each up to what it paid (each_charge_first), so a lot the
    money back did not reach gives none (an expired one none from breakage). Of a charge in `got`
    (charge id -> account -> what each payer got back of it, store.true_up_payers), each payer
    takes at most that, as kept, not as `given` reads it; the receivable what it got and what the
    rows of credit lots that did not pay the charge hold for it. Adds to `placed` what it takes of
    each charge from each payer ((charge id, account) -> units)."""
    receivable = chart.receivable_account(w.customer.id)
    order = last_consumed_first(w)
    have: dict[str, int | None] = {}
    for code, lot in w.lots.items():
        if lot.live(now):
            if lot.balance > 0:
                have[code] = lot.balance
        elif (not lot.revoked and expired_by is not None and lot.expires_at is not None
              and lot.expires_at <= expired_by):
            have[code] = None
        else:  # closed after the period's end: at most what it held then, and what it gets back now
            held = lot.closed_with
            if held is None:  # not loaded so: an expired lot not swept yet holds its balance
                held = lot.balance if not lot.swept and not lot.revoked else 0
            if held + (gets or {}).get(code, 0) > 0:
                have[code] = held + (gets or {}).get(code, 0)
    # the paid credit lots the receivable's parts went to (to_credit): named in the rows of a charge
    # they did not pay (verify counts them as the receivable), live and holding money
    credit = sorted({account for charge, by in (got or {}).items() if charge in payers for account, units in by.items()
                     if units > 0 and account not in {a for a, _ in payers[charge]} and account in w.lots
                     and w.lots[account].live(now) and have.get(account)}, key=lambda a: consumption_key(w.lots[a]))
    out: dict[str, int] = {}
    # of a charge in `got`, what the rounding account holds of its parts (a note's rounding: rounded)
    # comes back from there first (a row, no posting), and what its payers got beyond the parts (a
    # note's rounded up: held negative) is taken from them with the rest: the rounding account's
    # money is never taken from a payer, nor a payer's left with it
    rounding = chart.rounding_account(w.customer.currency)
    held = {charge: got[charge].get(rounding, 0) for charge in takes if got is not None and charge in got}
    kept = {charge: min(need, r) if r > 0 else r for charge, need in takes.items() if (r := held.get(charge, 0))}
    takes = {charge: need - kept.get(charge, 0) for charge, need in takes.items()}
    for charge, units in kept.items() if placed is not None else ():
        placed[(charge, rounding)] = placed.get((charge, rounding), 0) + units
    left = sum(takes.values()) if most is None else most

    def take(charge: int, account: str, part: int) -> None:
        nonlocal left
        if part > 0:
            out[account] = out.get(account, 0) + part
            if placed is not None:
                placed[(charge, account)] = placed.get((charge, account), 0) + part
            if (held := have.get(account)) is not None:
                have[account] = held - part
            left -= part

    for charge, need in sorted(takes.items()):
        paid: dict[str, int] = {}
        for account, units in payers.get(charge, ()):
            paid[account] = paid.get(account, 0) + units
        if got is not None and charge in got:  # what each payer got back of it, as kept
            # the receivable's share: what it got, and what its parts put into (or took from) paid
            # credit lots, which did not pay the charge (to_credit)
            proxy = sum(units for account, units in got[charge].items() if account not in paid and account != rounding)
            paid = {account: min(units, max(got[charge].get(account, 0) + (proxy if account == receivable else 0), 0))
                    for account, units in paid.items()}
        elif given is not None:  # what each got back of it, as each_charge_first gave it
            back = given.get(charge, 0)
            for account in sorted(paid, key=lambda a: (a != receivable, order(a))):
                paid[account] = min(paid[account], back)
                back -= paid[account]
        for account in sorted((a for a in paid if a in have), key=lambda a: consumption_key(w.lots[a])):
            cap = need if have[account] is None else have[account]
            part = min(need, left, paid[account], cap)
            take(charge, account, part)
            need -= max(part, 0)
        if receivable in paid:
            # the receivable's share comes from the paid credit lots first, then onto what is owed:
            # the reverse of give_back, which took off what is owed first and made credit of the rest
            rest = max(0, min(need, left, paid[receivable]))
            for account in credit:
                part = min(rest, have[account] or 0)
                take(charge, account, part)
                rest -= max(part, 0)
            take(charge, receivable, rest)
    return out


def taken_from(w: Wallet, account: str, now: datetime) -> str:
    """The account debited for what take_back takes of `account`: itself; for a grant revoked in
    whole since, promotions (the revocation gave what it held back there); for a lot expired since,
    breakage (what came back to it went there, as give_back sends it)."""
    lot = w.lots.get(account)
    if lot is None or lot.live(now):
        return account
    return chart.promotions_account(w.customer.currency) if lot.revoked else chart.breakage_account(w.customer.currency)


def closed_moves(w: Wallet, paid: Iterable[tuple[str, int]], now: datetime) -> dict[str, int]:
    """Of what a correction paid (or got back) by account (`paid`, given back negative), what it gave
    to where the money of a lot closed since went for it (promotions, breakage: give_back,
    taken_from), taken from there negative: lot account -> units. Kept in its entry's metadata
    (`closed_lots`), it bounds what later corrections take from there for the lot (Lot.closed_with)."""
    out: dict[str, int] = {}
    for account, units in paid:
        lot = w.lots.get(account)
        if units and lot is not None and not lot.live(now):
            out[account] = out.get(account, 0) - units
    return {account: units for account, units in sorted(out.items()) if units}


def give_back(state: State, w: Wallet, shares: dict[str, int], back: int, now: datetime, reference: str,
              step: int = 1) -> tuple[Legs, tuple[tuple[str, int], ...], LotOpened | None]:
    """Legs of `back` (> 0) out of revenue by `shares` (`share`): the receivable's first, up to what
    is owed, in multiples of `step` (a credit note's: whole minor units, so the invoice it corrects
    is left with whole minor units to pay); then each lot's; then what is still owed; the rest
    opens a paid credit lot (`reference`). With what each account got back (negative) and the lot."""
    cid, cur = w.customer.id, w.customer.currency
    receivable = chart.receivable_account(cid)
    order = last_consumed_first(w)
    shares = dict(shares)
    owed = max(0, w.receivable - (w.credit_held or 0))
    legs = Legs(cur).debit(chart.revenue_account(cur), back)
    paid_back: dict[str, int] = {}

    def give(account: str, amount: int, to: str | None = None) -> None:
        """`amount` of what `account` paid comes back, credited to `to` (by default itself)."""
        nonlocal back
        if amount > 0:
            legs.credit(to or account, amount)
            paid_back[account] = paid_back.get(account, 0) - amount
            back -= amount

    rec = min(back, shares.pop(receivable, 0), owed)
    rec -= rec % step
    give(receivable, rec)
    owed -= rec
    room: dict[str, int] = {}  # what each live lot given money back could still take
    for account, part_of in sorted(shares.items(), key=lambda item: order(item[0])):
        lot = w.lots.get(account)
        if lot is not None and lot.live(now):
            part = min(back, part_of, lot.granted - lot.balance)
            give(account, part)
            if part > 0:
                room[account] = lot.granted - lot.balance - part
        elif lot is not None and lot.revoked:
            # A grant revoked in whole since: closed for good, what comes back to it is revoked
            # again (to the promotions the revocation credited), as a hold given back to it is.
            give(account, min(back, part_of), to=chart.promotions_account(cur))
        else:
            # The lot has expired since (swept, or due to be): had the charge cost less, the
            # difference would have stayed in it and gone to breakage at its expiry, as a hold
            # given back to a swept lot does (legs.return_target). The customer gets no credit
            # from an expired promotion; the invoice counts it as expired.
            give(account, min(back, part_of), to=chart.breakage_account(cur))
    more = min(back, owed)
    give(receivable, more - more % step)
    # A note's money is whole minor units, and what the lots took back of it exact: the fraction
    # left (what rounding it up added, or what the receivable did not take) goes to the last lot
    # given money back, so that credit the note opens is whole minor units too.
    for account in reversed(room):
        give(account, min(back % step, room[account]))
    lot_opened: LotOpened | None = None
    if back:
        lot_opened = opened_lot(state, w, "topup", back, TOPUP_PRIORITY, None, now, reference=reference)
        give(lot_opened.code, back)
    return legs, tuple(sorted(paid_back.items())), lot_opened
