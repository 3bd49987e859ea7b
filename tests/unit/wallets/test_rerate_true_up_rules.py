"""A closed period's volume true-up under a re-rate, and a re-rated open period's at its close, as
pure rules (no database), worked by hand. Rule v-out, model-v output, volume-tiered: v1 $20/M to
100,000 tokens, $10/M beyond; v2 $16/M and $8/M. November: 60,000 tokens ($1.20) and 70,000
($0.80 + $0.30 = $1.10), trued up at close to 130,000 x $10/M = $1.30: -$1.00."""
from __future__ import annotations

from datetime import UTC, datetime

from pricing.books import PriceBook
from pricing.override_versions import history
from pricing.parse import parse_version
from wallets.core.billing import add, line_item
from wallets.core.invoicing import contract_units, rerated_moves, true_up_lines, volume_rules
from wallets.core.rerate_true_ups import true_up_fixes
from wallets.core.rerating import ChargeOnRecord, RerateInput, corrections

NOV_1, DEC_1 = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
M = 1_000_000_000  # a dollar in atomic units


def version(name: str, effective_from: str, low: str, high: str):
    return parse_version({"id": "vol", "version": name, "currency": "USD", "effective_from": effective_from,
                          "rules": [{"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
                                     "tiers": [{"up_to": 100_000, "price": low}, {"up_to": None, "price": high}]}]})


V1 = version("v1", "2026-01-01T00:00:00Z", "20", "10")
V2 = version("v2", "2026-11-01T00:00:00Z", "16", "8")
BOOK = PriceBook("vol", "USD", (V1, V2))


def charge(n: int, day: int, parts: list[tuple[int, int, int]], billed_in: str = "2026-11") -> ChargeOnRecord:
    """A charge rated by v1: (tier, tokens, amount in cents) per usage line."""
    lines = tuple({"kind": "usage", "token_type": "output", "quantity": q, "amount_units": cents * M // 100,
                   "rule_id": "v-out", "tier": tier, "price_version": "v1"} for tier, q, cents in parts)
    total = sum(line["amount_units"] for line in lines)
    return ChargeOnRecord(n, datetime(2026, 11, day, tzinfo=UTC), "model-v", {}, {}, lines, total, total, None,
                          billed_in=billed_in)


NOVEMBER = (charge(1, 5, [(0, 60_000, 120)]), charge(2, 20, [(0, 40_000, 80), (1, 30_000, 30)]))
CLOSED = {"2026-11": ("inv_1", "INV-2026-000001")}


def fixes(data: RerateInput):
    ratings: dict = {}
    found = corrections(data, NOV_1, DEC_1, ratings)
    return found, true_up_fixes(data, found, ratings)


def test_a_closed_period_s_true_up_moves_to_the_corrected_version_s_tier_reached():
    data = RerateInput(V2, NOVEMBER, CLOSED, None, "2026-11", BOOK, {"v-out": -1 * M})
    found, [fix] = fixes(data)
    # the charges $2.30 -> $0.96 + $0.88 = $1.84; the true-up 130,000 x $8/M - $1.84 = -$0.80
    assert sum(x.delta for x in found) == -46 * M // 100
    assert (fix.old, fix.new, fix.delta, fix.unit_price, fix.tier) == (-M, -80 * M // 100, 20 * M // 100, "8", 1)
    assert [c.id for c in fix.charges] == [1, 2]


def test_no_true_up_moves_while_the_period_is_open_or_when_what_stands_is_right():
    assert fixes(RerateInput(V2, NOVEMBER, {}, None, "2026-11", BOOK, {}))[1] == []  # not closed
    assert fixes(RerateInput(V2, NOVEMBER, CLOSED, None, "2026-11", BOOK, {"v-out": -80 * M // 100}))[1] == []


def test_charges_billed_in_a_later_period_are_not_the_closed_period_s_true_up():
    late = (charge(1, 5, [(0, 60_000, 120)], "2026-12"), charge(2, 20, [(0, 40_000, 80), (1, 30_000, 30)], "2026-12"))
    assert fixes(RerateInput(V2, late, CLOSED, None, "2026-11", BOOK, {"v-out": -1 * M}))[1] == []


def _item(kind: str, model: str, token_type: str, rule_id: str | None, version_: str, override: str | None = None):
    return line_item("2026-11", {"kind": kind, "model": model, "token_type": token_type, "rule_id": rule_id,
                                 "unit_price": None, "tier": None, "override_id": override,
                                 "price_version": version_})


def test_the_close_counts_a_re_rate_of_the_open_period_for_the_rule_that_rated_its_token_type():
    rollup = {_item("usage", "model-v", "output", "v-out", "v1"): (130_000, 230 * M // 100),
              _item("adjustment", "model-v", "output", None, "v2"): (0, -46 * M // 100)}
    [(rule, version_, quantity, amount)] = volume_rules(BOOK, rollup, "2026-11")
    assert (rule.id, version_, quantity, amount) == ("v-out", "v2", 130_000, 184 * M // 100)
    # a discount shares the token type: its adjustment is not the rule's alone, the charges stand as rated
    rollup[_item("discount", "model-v", "output", "v-out", "v1", "d10")] = (130_000, -23 * M // 100)
    [(_, version_, _, amount)] = volume_rules(BOOK, rollup, "2026-11")
    assert (version_, amount) == ("v1", 230 * M // 100)


def test_the_close_counts_the_charges_a_re_rate_moved_under_the_version_they_stand_at_now():
    """The 5th (60,000 tokens, $1.20 at v1) re-rated before the close to vf, `v-out` flat $5/M from
    October 1st: $0.30 (-$0.90), final at that price. The 20th's 70,000 ($1.10 at v1) alone reach a
    tier: v1's, at $1.10. Re-rated to v2 instead ($16/M: $0.96, -$0.24): v1's 70,000 at $1.10 and
    v2's 60,000 at $0.96 reach the second tier together (130,000), each version's units at its own
    price of it: 70,000 x $10/M = $0.70 less $1.10, -$0.40; 60,000 x $8/M = $0.48 less $0.96, -$0.48;
    -$0.88 (all 130,000 at v2's $8/M, $1.04 less $2.06, gave -$1.02). The adjustment lines alone do not
    tell which version's units moved: every version's units at the latest's tiers, vf's, flat: none."""
    flat = parse_version({"id": "vol", "version": "vf", "currency": "USD", "effective_from": "2026-10-01T00:00:00Z",
                          "rules": [{"id": "v-out", "model": "model-v", "token_type": "output", "price": "5"}]})
    book = PriceBook("vol", "USD", (V1, flat, V2))
    [fifth, twentieth] = NOVEMBER
    usage: dict[str, tuple[int, int]] = {}
    for ln in (*fifth.lines, *twentieth.lines):
        add(usage, line_item("2026-11", {**ln, "model": "model-v"}), ln["quantity"], ln["amount_units"])
    to_flat = {**usage, _item("adjustment", "model-v", "output", None, "vf"): (0, -90 * M // 100)}
    assert volume_rules(book, to_flat, "2026-11") == []
    moves = rerated_moves([("model-v", fifth.lines, "vf", [("model-v", "output", 30 * M // 100)],
                            {"output": "v-out"}, 1)])
    [(rule, version_, quantity, amount)] = volume_rules(book, to_flat, "2026-11", moves)
    assert (rule.id, version_, quantity, amount) == ("v-out", "v1", 70_000, 110 * M // 100)
    to_v2 = {**usage, _item("adjustment", "model-v", "output", None, "v2"): (0, -24 * M // 100)}
    moves = rerated_moves([("model-v", fifth.lines, "v2", [("model-v", "output", 96 * M // 100)],
                            {"output": "v-out"}, 1)])
    found = volume_rules(book, to_v2, "2026-11", moves)
    assert [(rule.id, version_, quantity, amount) for rule, version_, quantity, amount in found] == [
        ("v-out", "v1", 70_000, 110 * M // 100), ("v-out", "v2", 60_000, 96 * M // 100)]
    assert [(x["price_version"], x["unit_price"], x["amount_units"]) for x in true_up_lines(found)] == [
        ("v1", "10", -40 * M // 100), ("v2", "8", -48 * M // 100)]


CLOSE_GAVE = {"v-out": {1: 60 * M // 100, 2: 40 * M // 100}}  # at $10/M: $1.20 - $0.60, $1.10 - $0.70


def test_a_true_up_s_correction_gives_back_of_each_charge_its_overcharge_less_what_the_close_gave_back():
    """The close gave back $0.60 of the 5th's charge and $0.40 of the 20th's. v1' ($20/M, $5/M
    beyond): the 5th stays $1.20 and costs $0.30 at the tier reached ($0.90 over: $0.30 more back);
    the 20th is $0.95 and costs $0.35 ($0.60 over: $0.20 more); the true-up -$1.50 - -$1.00: -$0.50."""
    cheap = version("v1b", "2026-11-01T00:00:00Z", "20", "5")
    data = RerateInput(cheap, NOVEMBER, CLOSED, None, "2026-11", PriceBook("vol", "USD", (V1, cheap)),
                       {"v-out": -1 * M}, true_up_given=CLOSE_GAVE)
    _, [fix] = fixes(data)
    assert (fix.delta, fix.pieces) == (-50 * M // 100, ((1, 60_000, 120 * M // 100), (2, 70_000, 95 * M // 100)))
    assert fix.parts() == {1: 30 * M // 100, 2: 20 * M // 100}


def test_a_true_up_corrected_up_takes_back_of_each_charge_what_the_close_gave_back_beyond_its_overcharge():
    """v2: the charges $0.96 and $0.88 cost $0.48 and $0.56 at $8/M: $0.48 and $0.32 over, where
    the close gave back $0.60 and $0.40: $0.12 and $0.08 taken back, the true-up's +$0.20."""
    data = RerateInput(V2, NOVEMBER, CLOSED, None, "2026-11", BOOK, {"v-out": -1 * M}, true_up_given=CLOSE_GAVE)
    _, [fix] = fixes(data)
    assert fix.parts() == {1: -12 * M // 100, 2: -8 * M // 100}


def test_a_true_up_whose_close_kept_nothing_per_charge_is_shared_as_before():
    """A close before what it gave back of each charge was kept: the fix has nothing per charge (its
    money back is shared over the money of all the rule's charges, the last consumed first)."""
    _, [fix] = fixes(RerateInput(V2, NOVEMBER, CLOSED, None, "2026-11", BOOK, {"v-out": -1 * M}))
    assert (fix.given, fix.parts()) == (None, {})


def _lots(*lots: tuple[str, int, int, datetime | None]):
    """A wallet of lots (id, priority, balance in cents, expiry), each granted $5.00."""
    from wallets import chart
    from wallets.model import Customer, Lot, Wallet
    customer = Customer("c", "", "USD", "prepaid", None, None, None, False, False, NOV_1)
    made = {chart.lot_account("c", i): Lot(i, chart.lot_account("c", i), "grant", 500 * M // 100, p, exp, NOV_1,
                                           cents * M // 100) for i, p, cents, exp in lots}
    return Wallet(customer, made, 0, 0)


def test_a_true_up_corrected_up_takes_back_from_what_paid_each_charge_the_first_consumed_first():
    """Taken back: $0.30 of charge 1 (paid by lot `t`, $1.20) and $0.20 of charge 2 (paid $0.50 by
    the grant `g`, consumed first, $0.60 by the top-up `t`, and $0.10 on the receivable). Charge 1:
    $0.30 from `t`, which has $0.60 left ($0.30). Charge 2: `g` first, up to what it has ($0.05):
    $0.05; then `t`, $0.15. A cap of $0.40 in all stops at `t`'s $0.05 of charge 2. With `g`
    expired by the period's end (November 30th), charge 2's $0.20 all from it, up to what it paid
    ($0.50), debited to breakage, where what came back to it went. With `g` expired after it
    (December 10th, taken back December 15th), live at the close: what came back to it may have been
    spent before it expired, so from breakage at most what it held when it closed: not swept yet,
    its $0.05 (the sweep moves it there), then `t` $0.15; swept holding nothing, none: `t`, $0.20
    (it paid $0.60, has $0.60). With `g` revoked in whole instead, holding nothing then, and `t`
    down to $0.05: `t` $0.05, then the receivable up to what it paid ($0.10), and $0.05 is left to
    be paid as usage is; revoked holding $0.04, `g` gives that (debited to promotions, where the
    revocation put it), and with $0.02 it gets back beside it, $0.06."""
    from wallets import chart
    from wallets.core.money_back import take_back, taken_from
    t, g, rec = chart.lot_account("c", "t"), chart.lot_account("c", "g"), chart.receivable_account("c")
    w = _lots(("t", 100, 60, None), ("g", 50, 5, datetime(2027, 1, 31, tzinfo=UTC)))
    payers = {1: ((t, 120 * M // 100),), 2: ((t, 60 * M // 100), (g, 50 * M // 100), (rec, 10 * M // 100))}
    takes = {1: 30 * M // 100, 2: 20 * M // 100}
    assert take_back(w, takes, payers, DEC_1) == {t: 45 * M // 100, g: 5 * M // 100}
    assert take_back(w, takes, payers, DEC_1, 40 * M // 100) == {t: 35 * M // 100, g: 5 * M // 100}
    # the close gave back $0.40 of charge 2: $0.10 off what is owed, then $0.30 to `t` (consumed
    # last), none to `g`: its $0.20 all from `t`; had it given $0.05, all off what is owed: $0.05
    assert take_back(w, {2: 20 * M // 100}, payers, DEC_1, given={2: 40 * M // 100}) == {t: 20 * M // 100}
    assert take_back(w, {2: 20 * M // 100}, payers, DEC_1, given={2: 5 * M // 100}) == {rec: 5 * M // 100}
    w.lots[g].expires_at = datetime(2026, 11, 30, tzinfo=UTC)
    assert take_back(w, {2: 20 * M // 100}, payers, DEC_1, expired_by=DEC_1) == {g: 20 * M // 100}
    assert (taken_from(w, g, DEC_1), taken_from(w, t, DEC_1)) == (chart.breakage_account("USD"), t)
    w.lots[g].expires_at = datetime(2026, 12, 10, tzinfo=UTC)
    dec_15 = datetime(2026, 12, 15, tzinfo=UTC)
    assert take_back(w, {2: 20 * M // 100}, payers, dec_15, expired_by=DEC_1) == {g: 5 * M // 100, t: 15 * M // 100}
    w.lots[g].swept, w.lots[g].balance, w.lots[g].closed_with = True, 0, 0
    assert take_back(w, {2: 20 * M // 100}, payers, dec_15, expired_by=DEC_1) == {t: 20 * M // 100}
    w.lots[g].swept, w.lots[g].closed_with = False, None
    w.lots[g].expires_at, w.lots[g].revoked, w.lots[t].balance = None, True, 5 * M // 100
    assert take_back(w, {2: 20 * M // 100}, payers, DEC_1) == {t: 5 * M // 100, rec: 10 * M // 100}
    w.lots[g].closed_with = 4 * M // 100
    assert take_back(w, {2: 20 * M // 100}, payers, DEC_1) == {g: 4 * M // 100, t: 5 * M // 100, rec: 10 * M // 100}
    assert take_back(w, {2: 20 * M // 100}, payers, DEC_1, gets={g: 2 * M // 100}) == {
        g: 6 * M // 100, t: 5 * M // 100, rec: 9 * M // 100}
    assert taken_from(w, g, DEC_1) == chart.promotions_account("USD")


def test_contract_priced_units_reach_the_tier_at_the_close_and_are_not_trued_up():
    """60,000 tokens at a $5/M contract (`c`, $0.30) under v1 and 70,000 at the book's price rated on
    from the counter's 60,000 (40,000 x $20/M + 30,000 x $10/M = $1.10): 130,000 reach v1's $10/M,
    the 70,000 x $10/M = $0.70 less $1.10, -$0.40; the contract's 60,000 are not trued up. Counted
    alone, the 70,000 stay in the first tier: 70,000 x $20/M = $1.40 less $1.10, +$0.30. A contract
    under a version pricing the rule flat counts toward the tier too, as the counters count it (its
    60,000: before, none)."""
    rollup = {_item("usage", "model-v", "output", "v-out", "v1", "c"): (60_000, 30 * M // 100),
              _item("usage", "model-v", "output", "v-out", "v1"): (70_000, 110 * M // 100)}
    rules = volume_rules(BOOK, rollup, "2026-11")
    assert [(r.id, v, q, a) for r, v, q, a in rules] == [("v-out", "v1", 70_000, 110 * M // 100)]
    contracts = contract_units(BOOK, rollup, "2026-11")
    assert contracts == {"v-out": 60_000}
    [line] = true_up_lines(rules, contracts=contracts)
    assert (line["quantity"], line["unit_price"], line["amount_units"]) == (70_000, "10", -40 * M // 100)
    [alone] = true_up_lines(rules)
    assert (alone["unit_price"], alone["amount_units"]) == ("20", 30 * M // 100)
    flat = parse_version({"id": "vol", "version": "f", "currency": "USD", "effective_from": "2026-10-01T00:00:00Z",
                          "rules": [{"id": "v-out", "model": "model-*", "token_type": "output", "price": "2"}]})
    assert contract_units(PriceBook("vol", "USD", (V1, flat)), {
        _item("usage", "model-v", "output", "v-out", "f", "c"): (60_000, 30 * M // 100)}, "2026-11") == {
        "v-out": 60_000}


def test_a_re_rate_after_the_close_counts_contract_priced_units_toward_the_tier():
    """The charges above (the contract's 60,000, $0.30, on the 5th; it ends on the 15th; then
    70,000 at the book's price, $1.10, on the 20th), closed with a
    true-up of -$0.40. Re-rated to v2 ($16/M, $8/M): the contract's stay $0.30; the 70,000 on from
    60,000: 40,000 x $16/M + 30,000 x $8/M = $0.88; 130,000 reach $8/M: 70,000 x $8/M = $0.56 less
    $0.88 = -$0.32 where -$0.40 stands: +$0.08. Counted alone, -$0.40 -> 70,000 x $16/M = $1.12 less
    $0.88 = +$0.24 (+$0.64)."""
    line = {"kind": "usage", "token_type": "output", "quantity": 60_000, "amount_units": 30 * M // 100,
            "rule_id": "v-out", "tier": None, "price_version": "v1", "override_id": "c", "unit_price": "5"}
    first = ChargeOnRecord(1, datetime(2026, 11, 5, tzinfo=UTC), "model-v", {}, {"output": 60_000}, (line,),
                           30 * M // 100, 30 * M // 100, None, billed_in="2026-11")
    overrides = history([(1, NOV_1, {"contract_prices": [
        {"id": "c", "model": "model-v", "token_type": "output", "price": "5"}]}),
        (2, datetime(2026, 11, 15, tzinfo=UTC), {})])
    data = RerateInput(V2, (first, charge(2, 20, [(0, 40_000, 80), (1, 30_000, 30)])), CLOSED, overrides, "2026-11",
                       BOOK, {"v-out": -40 * M // 100})
    found, [fix] = fixes(data)
    assert sum(x.delta for x in found) == -22 * M // 100
    assert (fix.old, fix.new, fix.unit_price, fix.tier) == (-40 * M // 100, -32 * M // 100, "8", 1)
