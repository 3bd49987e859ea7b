from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext

import pytest
from pricing_testkit import AT, version, worked_example_version

from pricing.errors import InvalidUsageError, PriceBookValidationError, UnpricedModelError
from pricing.money import format_amount
from pricing.overrides import ContractPrice, Discount, FreeAllowance, Overrides
from pricing.parse import parse_book, parse_version
from pricing.rating import PeriodToDate, Usage, rate, rate_usage, volume_true_up


def amounts(rating):
    return [(ln.kind, ln.model, ln.token_type, ln.amount) for ln in rating.lines]


def test_worked_example_prices_each_line_exactly():
    rating = rate(
        [
            Usage("model-a", {"input": 1000, "output": 400, "request": 10}, AT),
            Usage("model-b", {"input": 2000}, AT),
        ],
        worked_example_version(),
    )
    assert amounts(rating) == [
        ("usage", "model-a", "input", Decimal("0.010000")),
        ("usage", "model-a", "output", Decimal("0.008000")),
        ("usage", "model-a", "request", Decimal("0.100000")),
        ("usage", "model-b", "input", Decimal("0.010000")),
    ]
    assert [ln.amount_units for ln in rating.lines] == [10_000_000, 8_000_000, 100_000_000, 10_000_000]
    assert [ln.rule_id for ln in rating.lines] == ["a-in", "a-out", "call", "b-in"]
    assert [ln.unit_price for ln in rating.lines] == [
        Decimal("10"),
        Decimal("20"),
        Decimal("0.01"),
        Decimal("5"),
    ]
    assert {ln.price_version for ln in rating.lines} == {"2026-01-01T00:00:00Z"}
    assert rating.total == Decimal("0.128000")
    assert rating.total_units == 128_000_000
    assert format_amount(rating.total_units) == "0.128"


def test_a_request_fee_without_model_is_charged_per_model_that_made_the_calls():
    rating = rate(
        [
            Usage("model-a", {"input": 1000, "output": 400, "request": 4}, AT),
            Usage("model-b", {"input": 2000, "request": 6}, AT),
        ],
        worked_example_version(),
    )
    assert amounts(rating) == [
        ("usage", "model-a", "input", Decimal("0.010000")),
        ("usage", "model-a", "output", Decimal("0.008000")),
        ("usage", "model-a", "request", Decimal("0.040000")),
        ("usage", "model-b", "input", Decimal("0.010000")),
        ("usage", "model-b", "request", Decimal("0.060000")),
    ]
    assert rating.total_units == 128_000_000


def test_usage_lines_of_one_model_and_rule_are_merged():
    rating = rate(
        [Usage("model-a", {"input": 600}, AT), Usage("model-a", {"input": 400}, AT)], worked_example_version()
    )
    assert [(ln.quantity, ln.amount) for ln in rating.lines] == [(1000, Decimal("0.01"))]


def test_zero_counts_produce_no_lines_and_cost_nothing():
    rating = rate(Usage("model-a", {"input": 0, "output": 0}, AT), worked_example_version())
    assert rating.lines == ()
    assert (rating.total, rating.total_units) == (Decimal(0), 0)


def test_reasoning_is_priced_as_output_and_cache_reads_as_input_when_the_book_is_silent():
    rating = rate(
        Usage("model-a", {"reasoning": 500, "cached_input": 1000, "cache_write": 100}, AT),
        worked_example_version(),
    )
    assert [(ln.token_type, ln.rule_id, ln.amount) for ln in rating.lines] == [
        ("cached_input", "a-in", Decimal("0.01")),
        ("cache_write", "a-in", Decimal("0.001")),
        ("reasoning", "a-out", Decimal("0.01")),
    ]


def test_usage_that_no_rule_prices_is_an_error_never_zero():
    with pytest.raises(UnpricedModelError) as info:
        rate(Usage("model-c", {"input": 1}, AT), worked_example_version())
    assert info.value.code == "unpriced_model"
    with pytest.raises(UnpricedModelError):
        rate(Usage("model-a", {"image": 3}, AT), worked_example_version())


def test_usage_before_the_version_took_effect_is_unpriced():
    with pytest.raises(UnpricedModelError):
        rate(Usage("model-a", {"input": 1}, datetime(2025, 12, 31, tzinfo=UTC)), worked_example_version())


def test_a_price_change_at_t_rates_usage_by_its_own_time_not_processing_time():
    change = datetime(2026, 2, 1, 9, 30, tzinfo=UTC)
    book = parse_book(
        {
            "id": "standard",
            "currency": "USD",
            "versions": [
                {
                    "effective_from": "2026-01-01T00:00:00Z",
                    "rules": [{"id": "old", "model": "m", "token_type": "input", "price": "10"}],
                },
                {
                    "effective_from": "2026-02-01T09:30:00Z",
                    "rules": [{"id": "new", "model": "m", "token_type": "input", "price": "12"}],
                },
            ],
        }
    )
    before = rate_usage(Usage("m", {"input": 1_000_000}, change - timedelta(seconds=1)), book)
    at_change = rate_usage(Usage("m", {"input": 1_000_000}, change), book)
    assert (before.lines[0].rule_id, before.price_version, before.total) == (
        "old",
        "2026-01-01T00:00:00Z",
        Decimal("10"),
    )
    assert (at_change.lines[0].rule_id, at_change.price_version, at_change.total) == (
        "new",
        "2026-02-01T09:30:00Z",
        Decimal("12"),
    )
    # the book was last changed well before "now"; replaying late usage still gets the old price
    late_replay = rate_usage(Usage("m", {"input": 1_000_000}, datetime(2026, 1, 15, tzinfo=UTC)), book)
    assert late_replay.lines[0].rule_id == "old"


def test_usage_records_spanning_two_versions_must_be_rated_apart():
    book = parse_book(
        {
            "id": "standard",
            "currency": "USD",
            "versions": [
                {
                    "effective_from": "2026-01-01T00:00:00Z",
                    "rules": [{"id": "a", "token_type": "input", "price": "1"}],
                },
                {
                    "effective_from": "2026-02-01T00:00:00Z",
                    "rules": [{"id": "b", "token_type": "input", "price": "2"}],
                },
            ],
        }
    )
    with pytest.raises(InvalidUsageError):
        rate_usage(
            [
                Usage("m", {"input": 1}, datetime(2026, 1, 2, tzinfo=UTC)),
                Usage("m", {"input": 1}, datetime(2026, 2, 2, tzinfo=UTC)),
            ],
            book,
        )


TIERED = version(
    {
        "id": "tiered",
        "model": "m",
        "token_type": "input",
        "tiers": [
            {"up_to": 1000, "price": "10"},
            {"up_to": 5000, "price": "8"},
            {"up_to": None, "price": "5"},
        ],
    },
    {"id": "out", "model": "m", "token_type": "output", "price": "20"},
    {
        "id": "vol",
        "model": "v",
        "token_type": "input",
        "tier_mode": "volume",
        "tiers": [{"up_to": 1000, "price": "10"}, {"up_to": None, "price": "8"}],
    },
)


def test_graduated_tiers_continue_from_the_period_to_date_quantity():
    rating = rate(Usage("m", {"input": 4500}, AT), TIERED, period_to_date={"tiered": 900})
    # 900 already used: 100 more at $10, 4000 at $8, the last 400 at $5 (per 1M)
    assert [(ln.tier, ln.quantity, ln.unit_price, ln.amount) for ln in rating.lines] == [
        (0, 100, Decimal("10"), Decimal("0.001")),
        (1, 4000, Decimal("8"), Decimal("0.032")),
        (2, 400, Decimal("5"), Decimal("0.002")),
    ]
    assert rating.total == Decimal("0.035")
    assert rating.rule_quantities() == {"tiered": 4500}


def test_a_usage_entirely_inside_a_later_tier_has_one_line():
    rating = rate(Usage("m", {"input": 10}, AT), TIERED, period_to_date=PeriodToDate({"tiered": 7000}))
    assert [(ln.tier, ln.quantity, ln.unit_price) for ln in rating.lines] == [(2, 10, Decimal("5"))]


def test_volume_tiers_rate_graduated_during_the_period_and_true_up_at_close():
    rating = rate(Usage("v", {"input": 1500}, AT), TIERED)
    assert rating.total == Decimal("0.014")  # 1000 at $10 + 500 at $8
    # at close all 1500 units cost $8: 0.012, so 0.002 goes back to the customer
    assert volume_true_up(TIERED.resolve("input", "v", {}), 1500, rating.total) == Decimal("-0.002")
    assert volume_true_up(TIERED.resolve("input", "v", {}), 800, Decimal("0.008")) == Decimal("0")
    # 800 units of a version whose period, with another version's units, reached 1500: all 800 at
    # $8 = 0.0064, less the 0.008 charged
    assert volume_true_up(TIERED.resolve("input", "v", {}), 800, Decimal("0.008"), 1500) == Decimal("-0.0016")
    with pytest.raises(InvalidUsageError):
        volume_true_up(TIERED.resolve("input", "v", {}), 800, Decimal(0), -1)
    with pytest.raises(ValueError):
        volume_true_up(TIERED.resolve("input", "m", {}), 1500, Decimal(0))


CUSTOM = Overrides(
    contract_prices=(
        ContractPrice("contract-a-out", Decimal("15"), model="model-a", token_type="output"),
        ContractPrice("contract-b", Decimal("4"), model="model-b"),
    ),
)


def test_a_contract_price_replaces_the_unit_price_and_names_the_override():
    rating = rate(
        [
            Usage("model-a", {"input": 1000, "output": 400, "reasoning": 600, "request": 1}, AT),
            Usage("model-b", {"input": 2000, "output": 1000, "request": 1}, AT),
        ],
        worked_example_version(),
        CUSTOM,
    )
    got = [
        (ln.model, ln.token_type, ln.unit_price, ln.amount, ln.rule_id, ln.override_id) for ln in rating.lines
    ]
    assert got == [
        ("model-a", "input", Decimal("10"), Decimal("0.01"), "a-in", None),
        ("model-a", "output", Decimal("15"), Decimal("0.006"), "a-out", "contract-a-out"),
        ("model-a", "reasoning", Decimal("15"), Decimal("0.009"), "a-out", "contract-a-out"),
        ("model-a", "request", Decimal("0.01"), Decimal("0.01"), "call", None),
        ("model-b", "input", Decimal("4"), Decimal("0.008"), "b-in", "contract-b"),
        ("model-b", "output", Decimal("4"), Decimal("0.004"), "b-out", "contract-b"),
        ("model-b", "request", Decimal("0.01"), Decimal("0.01"), "call", None),
    ]


@pytest.mark.parametrize(("unit", "quantity"), [
    ("web_search", 2), ("file_search", 2), ("code_execution", 2), ("input_message", 2), ("document_page", 2),
    ("annotated_document_page", 2), ("audio_seconds", 7_200), ("input_audio_seconds", 7_200),
    ("input_characters", 2_000_000)])
def test_a_contract_price_without_a_token_type_prices_no_unit_priced_per_call(unit, quantity):
    """A format 2 book: model-a input at $10 per 1M and a $0.01 price of `unit` for every model
    (a call, a page, a message; an hour of audio; 1M characters). The customer's contract prices
    model-a at $8 (no token type: per 1M tokens, as a contract without a token type never prices
    `request`). Before, it priced model-a's 2 calls (2 hours: 7,200 s; 2M characters) at $8
    each, $16.00, where the book's are 2 x $0.01 = $0.02. By hand now: 1,000,000 input tokens at
    the contract's $8/M = $8.00 (8,000,000,000 units) and 2 of `unit` at the book's $0.01 = $0.02
    (20,000,000 units): $8.02, 8,020,000,000 units. A contract naming the type still prices it:
    $0.005 each, 2 x $0.005 = $0.01 (10,000,000 units)."""
    book = parse_version({"id": "calls", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10"},
                                    {"id": "per-call", "token_type": unit, "price": "0.01"}]})
    usage = Usage("model-a", {"input": 1_000_000, unit: quantity}, AT)
    untyped = Overrides(contract_prices=(ContractPrice("a-any", Decimal("8"), model="model-a"),))
    rating = rate(usage, book, untyped)
    assert [(ln.token_type, ln.amount_units, ln.override_id) for ln in rating.lines] == [
        ("input", 8_000_000_000, "a-any"), (unit, 20_000_000, None)]
    assert rating.total_units == 8_020_000_000
    typed = Overrides(contract_prices=(ContractPrice("a-calls", Decimal("0.005"), model="model-a", token_type=unit),))
    assert [(ln.token_type, ln.amount_units, ln.override_id) for ln in rate(usage, book, typed).lines] == [
        ("input", 10_000_000_000, None), (unit, 10_000_000, "a-calls")]


def test_contract_precedence_prefers_the_model_then_the_token_type():
    overrides = Overrides(
        contract_prices=(
            ContractPrice("all-output", Decimal("1"), token_type="output"),
            ContractPrice("a-any", Decimal("2"), model="model-a"),
            ContractPrice("a-output", Decimal("3"), model="model-a", token_type="output"),
        )
    )
    assert overrides.contract_for("model-a", "output", "output").id == "a-output"
    assert overrides.contract_for("model-a", "input", "input").id == "a-any"
    assert overrides.contract_for("model-b", "output", "output").id == "all-output"
    assert overrides.contract_for("model-b", "input", "input") is None


def test_a_discount_is_its_own_negative_line_and_usage_lines_stay_gross():
    overrides = Overrides(discounts=(Discount("promo", Decimal("10"), model="model-a"),))
    rating = rate(Usage("model-a", {"input": 1000, "output": 400}, AT), worked_example_version(), overrides)
    assert [(ln.kind, ln.token_type, ln.unit_price, ln.amount, ln.override_id) for ln in rating.lines] == [
        ("usage", "input", Decimal("10"), Decimal("0.010"), None),
        ("usage", "output", Decimal("20"), Decimal("0.008"), None),
        ("discount", "input", Decimal("-1"), Decimal("-0.001"), "promo"),
        ("discount", "output", Decimal("-2"), Decimal("-0.0008"), "promo"),
    ]
    assert rating.total == Decimal("0.0162")
    assert rating.total_units == 16_200_000


def test_a_discount_of_a_token_type_covers_the_usage_its_rule_prices_through_a_fallback():
    """A discount on `output` takes its share off reasoning the book bills at its output rule (it
    has no reasoning rule), as a contract price on `output` prices it; one on `input` off cache
    reads billed at the input rule. Reasoning had no discount line: 10 % off output charged 600
    reasoning tokens in full."""
    overrides = Overrides(discounts=(Discount("out-10", Decimal("10"), token_type="output"),
                                     Discount("in-20", Decimal("20"), model="model-a", token_type="input")))
    usage = Usage("model-a", {"input": 1000, "cached_input": 500, "output": 400, "reasoning": 600}, AT)
    rating = rate(usage, worked_example_version(), overrides)
    got = [(ln.token_type, ln.rule_id, ln.unit_price, ln.amount, ln.override_id)
           for ln in rating.lines if ln.kind == "discount"]
    assert sorted(got) == [
        ("cached_input", "a-in", Decimal("-2"), Decimal("-0.001"), "in-20"),
        ("input", "a-in", Decimal("-2"), Decimal("-0.002"), "in-20"),
        ("output", "a-out", Decimal("-2"), Decimal("-0.0008"), "out-10"),
        ("reasoning", "a-out", Decimal("-2"), Decimal("-0.0012"), "out-10"),
    ]
    # usage 0.01 + 0.005 + 0.008 + 0.012 = 0.035, less 0.005 of discounts
    assert rating.total == Decimal("0.03")


def test_a_discount_of_output_leaves_reasoning_the_book_prices_by_a_rule_of_its_own():
    book = version({"id": "out", "model": "m", "token_type": "output", "price": "20"},
                   {"id": "think", "model": "m", "token_type": "reasoning", "price": "30"})
    overrides = Overrides(discounts=(Discount("out-10", Decimal("10"), token_type="output"),))
    rating = rate(Usage("m", {"output": 1000, "reasoning": 1000}, AT), book, overrides)
    assert [(ln.token_type, ln.amount) for ln in rating.lines if ln.kind == "discount"] == [
        ("output", Decimal("-0.002"))]
    only_reasoning = Overrides(discounts=(Discount("r-50", Decimal("50"), token_type="reasoning"),))
    rating = rate(Usage("model-a", {"output": 1000, "reasoning": 1000}, AT), worked_example_version(),
                  only_reasoning)
    assert [(ln.token_type, ln.amount) for ln in rating.lines if ln.kind == "discount"] == [
        ("reasoning", Decimal("-0.01"))]


def test_a_free_allowance_pays_what_is_left_of_it_as_its_own_line():
    overrides = Overrides(allowances=(FreeAllowance("free-tier", Decimal("0.05")),))
    usage = Usage("model-a", {"input": 4000}, AT)  # $0.04
    fresh = rate(usage, worked_example_version(), overrides)
    assert [(ln.kind, ln.amount, ln.override_id) for ln in fresh.lines] == [
        ("usage", Decimal("0.04"), None),
        ("free_allowance", Decimal("-0.04"), "free-tier"),
    ]
    assert fresh.total_units == 0
    partly_used = rate(
        usage, worked_example_version(), overrides, PeriodToDate(allowance_used={"free-tier": "0.04"})
    )
    assert [(ln.kind, ln.amount) for ln in partly_used.lines] == [
        ("usage", Decimal("0.04")),
        ("free_allowance", Decimal("-0.01")),
    ]
    assert partly_used.total == Decimal("0.03")
    used_up = rate(
        usage, worked_example_version(), overrides, PeriodToDate(allowance_used={"free-tier": "0.05"})
    )
    assert [ln.kind for ln in used_up.lines] == ["usage"]


def test_discounts_apply_before_the_allowance():
    overrides = Overrides(
        discounts=(Discount("half", Decimal("50")),), allowances=(FreeAllowance("free", Decimal("1")),)
    )
    rating = rate(Usage("model-a", {"input": 4000}, AT), worked_example_version(), overrides)
    assert [(ln.kind, ln.amount) for ln in rating.lines] == [
        ("usage", Decimal("0.04")),
        ("discount", Decimal("-0.02")),
        ("free_allowance", Decimal("-0.02")),
    ]
    assert rating.total == 0


def test_a_free_allowance_that_pays_a_call_whole_pays_its_exact_amount_to_the_last_digit():
    # 77,745 audio seconds at $811 an hour: $17,514.220833333333333333333333333333, 35 digits; the
    # allowance line was negated under the global 28-digit context, -17514.22083333333333333333333,
    # which left an exact total of 3.333333E-24 for a call the allowance paid whole
    book = parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "rules": [{"id": "a", "model": "m", "token_type": "audio_seconds", "price": "811"}]})
    overrides = Overrides(allowances=(FreeAllowance("free", Decimal("20000")),))
    rating = rate(Usage("m", {"audio_seconds": 77_745}, AT), book, overrides)
    assert [(ln.kind, ln.amount) for ln in rating.lines] == [
        ("usage", Decimal("17514.220833333333333333333333333333")),
        ("free_allowance", Decimal("-17514.220833333333333333333333333333")),
    ]
    assert rating.total == 0 and rating.total_units == 0


def test_overrides_are_validated_when_built():
    with pytest.raises(PriceBookValidationError):
        Overrides(discounts=(Discount("a", Decimal("60")), Discount("b", Decimal("50"))))
    with pytest.raises(PriceBookValidationError):
        Overrides(
            contract_prices=(
                ContractPrice("x", Decimal(1), model="m"),
                ContractPrice("y", Decimal(2), model="m"),
            )
        )
    with pytest.raises(PriceBookValidationError):
        Overrides(discounts=(Discount("x", Decimal("5")),), allowances=(FreeAllowance("x", Decimal("1")),))
    with pytest.raises(PriceBookValidationError):
        ContractPrice("x", Decimal(1))
    with pytest.raises(PriceBookValidationError):
        Discount("x", Decimal("0"))
    with pytest.raises(PriceBookValidationError) as info:
        FreeAllowance("x", 0.5)  # type: ignore[arg-type]
    assert info.value.fields[0]["field"] == "amount"


@pytest.mark.parametrize(
    "tokens",
    [{"input": 1.0}, {"input": True}, {"input": -1}, {"input": "10"}, {"tokens": 5}, {"input": 10**16}],
)
def test_usage_refuses_non_integer_negative_or_unknown_counts(tokens):
    with pytest.raises(InvalidUsageError) as info:
        Usage("model-a", tokens, AT)
    assert info.value.code == "validation_error"
    assert info.value.fields[0]["field"].startswith("tokens.")


def test_usage_refuses_naive_times_and_float_dimensions():
    with pytest.raises(InvalidUsageError):
        Usage("m", {"input": 1}, datetime(2026, 1, 1))
    with pytest.raises(InvalidUsageError) as info:
        Usage("m", {"input": 1}, AT, {"tier": 1.5})
    assert info.value.fields == [{"field": "dimensions.tier", "message": "must be a string, int or bool"}]


def test_rounding_is_once_per_entry_and_lines_tie_out_to_the_total():
    built = version({"id": "odd", "token_type": "input", "price": "0.0000015"})
    rating = rate(
        [Usage("a", {"input": 1}, AT), Usage("b", {"input": 1}, AT), Usage("c", {"input": 1}, AT)], built
    )
    # each line is 1.5e-12 USD = 0.0015 units; the total 0.0045 rounds to 0 units
    assert rating.total == Decimal("0.0000000000045")
    assert rating.total_units == 0
    assert [ln.amount_units for ln in rating.lines] == [0, 0, 0]
    half = version({"id": "half", "token_type": "input", "price": "0.0005"})
    lines = rate(
        [Usage("a", {"input": 1}, AT), Usage("b", {"input": 2}, AT), Usage("c", {"input": 2}, AT)], half
    )
    # 0.5, 1.0, 1.0 units: total 2.5 -> 2 (half even); 1 + 1 floors, no unit left for the 0.5 line
    assert (lines.total_units, [ln.amount_units for ln in lines.lines]) == (2, [0, 1, 1])



def test_a_discount_of_an_amount_with_many_digits_is_rated_exactly_not_an_internal_error():
    """Every input here is valid (a price of at most 10^9 with 18 decimals, a count of at most
    10^15, a percent with 18 decimals), but the discount's exact amount has 62 digits, past the
    60 of the pricing context, which trapped it as Inexact: a usage event or reserve was a 500
    where the same usage without the discount was a 422 (a charge no posting can carry).

    By hand: A = (1e15 - 1) x (1e9 - 1e-18) / 1M = 1e18 - 1e3 - 1e-9 + 1e-24
    (999999999999998999.999999999000000000000001, 42 digits);
    the discount takes A x 0.50000000000000000001 = A/2 + A x 1e-20, so the net is
    A/2 - A x 1e-20 = (5e17 - 500 - 5e-10 + 5e-25) - (1e-2 - 1e-17 - 1e-29 + 1e-44),
    in atomic units (1e-9) 5e26 - 5e11 - 1e7 - 0.5 + 1e-8 + ...
    = 499,999,999,999,999,499,989,999,999.50000001..., rounded half-even:
    499,999,999,999,999,499,990,000,000."""
    priced = parse_version({"id": "big", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "in", "model": "model-a", "token_type": "input", "price": "999999999.999999999999999999"}]})
    half = Overrides(discounts=(Discount("half", "50.000000000000000001"),))
    rating = rate(Usage("model-a", {"input": 10**15 - 1}, AT), priced, half)
    usage, discount = rating.lines
    assert usage.amount == Decimal("999999999999998999.999999999000000000000001")
    with localcontext(Context(prec=200)):
        assert discount.amount == -(usage.amount / 2 + usage.amount.scaleb(-20))
    assert rating.total_units == 499_999_999_999_999_499_990_000_000


def test_a_discount_of_a_unit_priced_per_hour_is_rated_exactly_past_60_digits():
    """The per-hour path beside the per-1M one above: audio seconds at 999,999,999.999999999999999999
    an hour, 10^15 - 1 seconds, 50.000000000000000001 % off. The amount is the quotient kept to 30
    places (pricing.money.per_amount), 43 significant digits; its discount's share (a percent of 20
    digits) 63, past the 60 digits the pricing context held before (trapped as Inexact, a 500).

    By hand: A = (1e24 - 1e9 - 1e-3 + 1e-18) / 3,600: 1e24/3,600 - 1e9/3,600 = ...777,500,000 (the
    repeating 7s cancel), less 2.77...e-7, plus 2.77...e-22: 277,777,777,777,777,499,999.9999997222...
    222 4999... (the 22nd place 4, 9s after it), to 30 places .999999722222222222222500000000 (up);
    net = A x (0.5 - 1e-20), in atomic units A x 1e9 / 2 - A x 1e-11
    = 138,888,888,888,888,749,999,999,999,861.11... - 2,777,777,777.78 = ...749,997,222,222,083.33,
    rounded half-even: 138,888,888,888,888,749,997,222,222,083."""
    priced = parse_version({"id": "hour", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                            "rules": [{"id": "aud", "model": "model-a", "token_type": "audio_seconds",
                                       "price": "999999999.999999999999999999"}]})
    half = Overrides(discounts=(Discount("half", "50.000000000000000001"),))
    rating = rate(Usage("model-a", {"audio_seconds": 10**15 - 1}, AT), priced, half)
    usage, discount = rating.lines
    assert usage.amount == Decimal("277777777777777499999.999999722222222222222500000000")
    with localcontext(Context(prec=200)):
        assert discount.amount == -(usage.amount / 2 + usage.amount.scaleb(-20))
    assert rating.total_units == 138_888_888_888_888_749_997_222_222_083
