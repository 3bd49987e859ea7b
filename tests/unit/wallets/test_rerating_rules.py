"""The re-rating rule over plain values (no database), worked by hand: graduated tiers continue
from the period's earlier charges, a charge stands at its last re-rate, one already re-rated
to a version is left alone, and money back goes to the lots that paid each charge."""
from __future__ import annotations

from datetime import UTC, datetime

from pricing.parse import parse_version
from wallets import chart
from wallets.core.commands import RerateCharges
from wallets.core.rerating import ChargeOnRecord, RerateInput, corrections, rerate_charges, type_rows
from wallets.core.state import State
from wallets.model import Customer, Lot, Wallet

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)


def version(name: str, a_in: list[dict]) -> object:
    return parse_version({"id": "b", "version": name, "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                          "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "tiers": a_in}]})


def charge(n: int, day: int, tokens: int, amount: int, rule_lines=None, **more) -> ChargeOnRecord:
    lines = rule_lines or [{"kind": "usage", "token_type": "input", "quantity": tokens, "amount_units": amount,
                            "rule_id": "a-in"}]
    return ChargeOnRecord(n, datetime(2026, 11, day, tzinfo=UTC), "model-a", {}, {}, tuple(lines), amount, 0, None,
                          **more)


FLAT_8 = version("v2", [{"up_to": None, "price": "8.00"}])
# $10/M for the period's first 1,000,000 input tokens, then $5/M
TIERED = version("v2", [{"up_to": 1_000_000, "price": "10.00"}, {"up_to": None, "price": "5.00"}])


def test_a_flat_correction_is_the_difference_per_model_and_token_type():
    found = corrections(RerateInput(FLAT_8, (charge(1, 5, 500_000, 5_000_000_000),)), NOV_1, DEC_1)
    [x] = found
    assert (x.old_amount, x.new_amount, x.delta) == (5_000_000_000, 4_000_000_000, -1_000_000_000)
    assert type_rows(found) == [{"model": "model-a", "token_type": "input", "old_amount": 5_000_000_000,
                                 "new_amount": 4_000_000_000, "delta": -1_000_000_000}]


def test_graduated_tiers_continue_from_the_earlier_charges_of_the_period():
    # Nov 2 (before the range): 800,000 tokens as rated; Nov 20 (in it): 600,000 tokens, charged $6.00 flat.
    data = RerateInput(TIERED, (charge(1, 2, 800_000, 8_000_000_000), charge(2, 20, 600_000, 6_000_000_000)))
    [x] = corrections(data, datetime(2026, 11, 10, tzinfo=UTC), DEC_1)
    # 200,000 left at $10/M = $2.00, then 400,000 at $5/M = $2.00
    assert x.charge.id == 2 and x.new_amount == 4_000_000_000 and x.delta == -2_000_000_000


def test_charges_in_the_range_carry_the_tiers_as_re_rated():
    # both in the range, both charged $12/M: 800,000 -> $8.00 (tier 1); 600,000 -> $2.00 + $2.00
    data = RerateInput(TIERED, (charge(1, 2, 800_000, 9_600_000_000), charge(2, 20, 600_000, 7_200_000_000)))
    first, second = corrections(data, NOV_1, DEC_1)
    assert (first.new_amount, first.delta) == (8_000_000_000, -1_600_000_000)
    assert (second.new_amount, second.delta) == (4_000_000_000, -3_200_000_000)


def test_a_charge_stands_at_its_last_re_rate_and_is_re_rated_to_a_version_once():
    adjusted = charge(1, 5, 500_000, 5_000_000_000, current={("model-a", "input"): 4_500_000_000},
                      versions=frozenset({("v1-fix", 0)}))
    [x] = corrections(RerateInput(FLAT_8, (adjusted,)), NOV_1, DEC_1)
    assert (x.old_amount, x.delta) == (4_500_000_000, -500_000_000)  # v3 - v2, not v3 - charged
    done = charge(1, 5, 500_000, 5_000_000_000, versions=frozenset({("v2", 0)}))
    assert corrections(RerateInput(FLAT_8, (done,)), NOV_1, DEC_1) == []


def test_a_request_fee_is_rated_again_from_the_charge_s_request_line():
    lines = [{"kind": "usage", "token_type": "input", "quantity": 500_000, "amount_units": 5_000_000_000,
              "rule_id": "a-in"},
             {"kind": "usage", "token_type": "request", "quantity": 1, "amount_units": 20_000_000, "rule_id": "call"}]
    [x] = corrections(RerateInput(_flat("v2", fee=True), (charge(1, 5, 0, 5_020_000_000, lines),)), NOV_1, DEC_1)
    assert x.new == {("model-a", "input"): 4_000_000_000, ("model-a", "request"): 10_000_000}


def _flat(name: str, *, fee: bool) -> object:
    rules = [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "8.00"}]
    if fee:
        rules.append({"id": "call", "token_type": "request", "price": "0.01"})
    return parse_version({"id": "b", "version": name, "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                          "rules": rules})


def test_a_correction_that_drops_a_wrong_request_fee_gives_the_fee_back():
    # charged $5.00 for 500,000 input tokens at $10/M and a $0.02 fee; the fix: $8/M and no fee
    lines = [{"kind": "usage", "token_type": "input", "quantity": 500_000, "amount_units": 5_000_000_000,
              "rule_id": "a-in"},
             {"kind": "usage", "token_type": "request", "quantity": 1, "amount_units": 20_000_000, "rule_id": "call"}]
    [x] = corrections(RerateInput(_flat("v2", fee=False), (charge(1, 5, 0, 5_020_000_000, lines),)), NOV_1, DEC_1)
    assert x.new == {("model-a", "input"): 4_000_000_000}  # was: unpriced_model, the re-rate refused
    assert x.delta == -1_020_000_000


def test_a_correction_that_adds_a_forgotten_request_fee_charges_it_once_per_call():
    # a call charged $5.00 (no fee then) and a later capture of another call ($1.00): the fix
    # adds the $0.01 fee, which the call's first charge pays and its later captures do not
    first = charge(1, 5, 500_000, 5_000_000_000)
    later = charge(2, 6, 100_000, 1_000_000_000, seq=1)
    found = corrections(RerateInput(_flat("v2", fee=True), (first, later)), NOV_1, DEC_1)
    assert [(x.charge.id, x.new) for x in found] == [
        (1, {("model-a", "input"): 4_000_000_000, ("model-a", "request"): 10_000_000}),
        (2, {("model-a", "input"): 800_000_000})]


def test_a_correction_prices_what_the_call_reported_that_the_first_version_left_unpriced():
    # rated with an `unpriced: zero` book that priced input only: 3 web searches and 1,000 output
    # tokens were reported (the canonical usage stored with the charge) but not charged; the fix
    # prices them: $0.01 a search, $20/M output
    fixed = parse_version({"id": "b", "version": "v2", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                           "format": 2, "unpriced": "zero", "rules": [
                               {"id": "a-in", "model": "model-a", "token_type": "input", "price": "10.00"},
                               {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
                               {"id": "a-search", "model": "model-a", "token_type": "web_search", "price": "0.01"}]})
    usage = {"source": "anthropic_usage", "canonical": {"input_tokens": 500_000, "cached_input_tokens": 0,
                                                         "cache_write_tokens": 0, "output_tokens": 1_000,
                                                         "reasoning_tokens": 0, "web_search_calls": 3}}
    reported = ChargeOnRecord(1, datetime(2026, 11, 5, tzinfo=UTC), "model-a", {}, usage,
                              ({"kind": "usage", "token_type": "input", "quantity": 500_000,
                                "amount_units": 5_000_000_000, "rule_id": "a-in"},), 5_000_000_000, 0, None)
    [x] = corrections(RerateInput(fixed, (reported,)), NOV_1, DEC_1)
    assert x.new == {("model-a", "input"): 5_000_000_000, ("model-a", "output"): 20_000_000,
                     ("model-a", "web_search"): 30_000_000}
    assert x.delta == 50_000_000


# ------------------------------------------------------------------------------------------
# Money back goes to the lots that paid the re-rated charges (the rule's decision, no database).

CID = "acme"
LATE_NOV = datetime(2026, 11, 25, tzinfo=UTC)


def lot(lot_id: str, priority: int, granted: int, balance: int) -> Lot:
    return Lot(lot_id, chart.lot_account(CID, lot_id), "topup", granted, priority, None, NOV_1, balance)


def refund_postings(charges: tuple[ChargeOnRecord, ...], *lots) -> dict[str, int]:
    """The adjustment entry's postings (signed, debit > 0) re-rating `charges` to FLAT_8."""
    customer = Customer(CID, "Acme", "USD", "prepaid", "b", 0, None, False, False, NOV_1, 1)
    wallet = Wallet(customer, {x.code: x for x in lots}, 0, 0)
    state = State(CID, wallet, rerates={(CID, "2026-11"): RerateInput(FLAT_8, charges)})
    cmd = RerateCharges(customer_id=CID, rerate_id="rr_1", book_id="b", version="v2", range_from=NOV_1,
                        range_to=DEC_1, period="2026-11")
    decision = rerate_charges(state, cmd, LATE_NOV, None)
    assert decision.entry is not None
    assert sum(p.amount for p in decision.entry.postings) == 0
    return {p.account: p.amount for p in decision.entry.postings}


def paid_by(n: int, *pieces: tuple[Lot, int]) -> ChargeOnRecord:
    """Charge `n`: 500,000 input tokens charged $5.00 at $10/M, paid by these (lot, amount) pieces."""
    return ChargeOnRecord(n, datetime(2026, 11, n, tzinfo=UTC), "model-a", {}, {}, (
        {"kind": "usage", "token_type": "input", "quantity": 500_000, "amount_units": 5_000_000_000,
         "rule_id": "a-in"},), 5_000_000_000, 0, tuple(sorted((x.code, amount) for x, amount in pieces)))


def test_each_charge_s_money_goes_back_to_the_lot_that_paid_it():
    # two charges of $5.00, one paid by lot a, the other by lot b; each re-rated to $4.00: $1.00 back to each
    a, b = lot("lot_a", 10, 10_000_000_000, 5_000_000_000), lot("lot_b", 10, 10_000_000_000, 5_000_000_000)
    postings = refund_postings((paid_by(1, (a, 5_000_000_000)), paid_by(2, (b, 5_000_000_000))), a, b)
    assert postings[a.code] == -1_000_000_000 and postings[b.code] == -1_000_000_000
    assert postings["income:platform:usage:USD"] == 2_000_000_000


def test_a_charge_s_money_goes_back_to_the_lot_it_consumed_last():
    # one $5.00 charge paid $3.00 by `first` (consumed first: lower priority number), then $2.00 by
    # `second`; re-rated to $4.00: the $1.00 goes back to `second`, whatever the lots' ids sort as
    first, second = lot("lot_z", 1, 3_000_000_000, 0), lot("lot_a", 5, 10_000_000_000, 8_000_000_000)
    postings = refund_postings((paid_by(1, (first, 3_000_000_000), (second, 2_000_000_000)),), first, second)
    assert postings.get(first.code, 0) == 0 and postings[second.code] == -1_000_000_000


def test_money_back_from_a_lot_expired_since_goes_to_breakage_not_to_the_customer():
    # a $5.00 charge paid by a promotional grant that expired on Nov 20 (before the re-rate on
    # Nov 25), re-rated to $4.00: the $1.00 would have expired with the grant, so it goes to
    # breakage revenue; no credit lot is opened and the expired lot takes nothing back
    promo = Lot("lot_p", chart.lot_account(CID, "lot_p"), "grant", 5_000_000_000, 1,
                datetime(2026, 11, 20, tzinfo=UTC), NOV_1, 0)
    paid = lot("lot_paid", 10, 10_000_000_000, 10_000_000_000)  # live, untouched by the charge
    postings = refund_postings((paid_by(1, (promo, 5_000_000_000)),), promo, paid)
    assert postings == {"income:platform:usage:USD": 1_000_000_000,
                        chart.breakage_account("USD"): -1_000_000_000}


def test_money_back_from_a_swept_lot_goes_to_breakage_and_a_live_lot_s_part_to_the_lot():
    # $3.00 paid by a grant since swept (not loaded at all), $2.00 by a live paid lot; re-rated to
    # $4.00: the $1.00 goes back to the live lot, consumed last
    swept = lot("lot_s", 1, 3_000_000_000, 0)
    live = lot("lot_l", 5, 10_000_000_000, 8_000_000_000)
    postings = refund_postings((paid_by(1, (swept, 3_000_000_000), (live, 2_000_000_000)),), live)
    assert postings == {"income:platform:usage:USD": 1_000_000_000, live.code: -1_000_000_000}
    # two charges each paid $5.00 wholly by the swept grant: $2.00 back, all of it to breakage
    postings = refund_postings((paid_by(1, (swept, 5_000_000_000)), paid_by(2, (swept, 5_000_000_000))), live)
    assert postings == {"income:platform:usage:USD": 2_000_000_000,
                        chart.breakage_account("USD"): -2_000_000_000}
