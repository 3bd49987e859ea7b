from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pricing_testkit import AT, version, worked_example_version

from pricing.errors import InvalidUsageError, UnpricedModelError
from pricing.estimate import estimate_upper_bound, held_choices, held_prompt_tokens
from pricing.overrides import ContractPrice, Discount, Overrides
from pricing.parse import parse_book, parse_version
from pricing.rating import rate
from pricing.usage import Usage

REASONER = version(
    {"id": "r-in", "model": "reasoner", "token_type": "input", "price": "1.10"},
    {"id": "r-out", "model": "reasoner", "token_type": "output", "price": "4.40"},
    {"id": "r-think", "model": "reasoner", "token_type": "reasoning", "price": "6.00"},
    {
        "id": "t-in",
        "model": "tiered",
        "token_type": "input",
        "tiers": [{"up_to": 1000, "price": "2"}, {"up_to": None, "price": "3"}],
    },
    {"id": "t-out", "model": "tiered", "token_type": "output", "price": "8"},
    {"id": "fee", "token_type": "request", "price": "0.002", "match": {"feature": "search"}},
)


def test_the_bound_is_prompt_at_input_plus_max_output_at_output_plus_the_request_fee():
    rating = estimate_upper_bound(worked_example_version(), "model-a", 1200, 500, {}, AT)
    assert [(ln.token_type, ln.quantity, ln.amount, ln.rule_id) for ln in rating.lines] == [
        ("input", 1200, Decimal("0.012"), "a-in"),
        ("output", 500, Decimal("0.010"), "a-out"),
        ("request", 1, Decimal("0.01"), "call"),
    ]
    assert rating.total_units == 32_000_000


def test_the_output_budget_is_priced_at_the_dearer_of_output_and_reasoning():
    rating = estimate_upper_bound(REASONER, "reasoner", 1000, 2000, {}, AT)
    assert [(ln.token_type, ln.unit_price, ln.amount, ln.rule_id) for ln in rating.lines] == [
        ("input", Decimal("1.10"), Decimal("0.0011"), "r-in"),
        ("reasoning", Decimal("6.00"), Decimal("0.012"), "r-think"),
    ]
    with_fee = estimate_upper_bound(REASONER, "reasoner", 1000, 2000, {"feature": "search"}, AT)
    assert with_fee.total == Decimal("0.0151")


def test_a_call_without_output_needs_no_output_price():
    embedder = version({"id": "e-in", "model": "embedder", "token_type": "input", "price": "0.02"})
    rating = estimate_upper_bound(embedder, "embedder", 1000, 0, {}, AT)
    assert [(ln.token_type, ln.amount) for ln in rating.lines] == [("input", Decimal("0.00002"))]
    with pytest.raises(UnpricedModelError):
        estimate_upper_bound(embedder, "embedder", 1000, 1, {}, AT)


def test_tiered_rules_count_at_their_dearest_tier():
    rating = estimate_upper_bound(REASONER, "tiered", 10, 0, None, AT)
    assert [(ln.unit_price, ln.amount) for ln in rating.lines] == [(Decimal("3"), Decimal("0.00003"))]


def test_an_output_budget_is_held_at_a_contract_price_of_an_output_side_type_the_book_bills_at_output():
    """Book: model-a input $1 and output $20 per 1M, no reasoning rule (reasoning is billed at the
    output rule). The customer's contract prices model-a's reasoning at $50 per 1M, which a settle
    of reasoning charges. The hold of 1,000 prompt and 1,000 output tokens took the output budget
    at $20/M only: 1,000 x $1/M + 1,000 x $20/M = $0.021 (21,000,000 units), where a settle of
    1,000 input and 1,000 reasoning tokens is 1,000 x $1/M + 1,000 x $50/M = $0.051; now the budget
    is held at the dearest, the contract's $50/M: $0.051 (51,000,000 units)."""
    book = parse_version({"id": "c", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "in", "model": "model-a", "token_type": "input", "price": "1"},
        {"id": "out", "model": "model-a", "token_type": "output", "price": "20"}]})
    dear = Overrides(contract_prices=(ContractPrice("r", Decimal("50"), model="model-a", token_type="reasoning"),))
    held = estimate_upper_bound(book, "model-a", 1000, 1000, None, AT, overrides=dear)
    settled = rate(Usage("model-a", {"input": 1000, "reasoning": 1000}, AT), book, dear)
    assert settled.total_units == 51_000_000
    assert held.total_units == 51_000_000
    assert [(ln.token_type, ln.unit_price, ln.override_id) for ln in held.lines] == [
        ("input", Decimal("1"), None), ("reasoning", Decimal("50"), "r")]


def test_contract_prices_apply_and_so_does_a_discount_of_every_line_but_not_one_of_a_token_type():
    """A discount with no token type takes its share off whatever lines the call is billed, so
    the hold takes it off too; one of a token type may miss the type billed (reasoning is not
    output), so the hold leaves it out, as before."""
    contract = ContractPrice("c", Decimal("1"), model="model-a", token_type="input")
    overrides = Overrides(contract_prices=(contract,), discounts=(Discount("d", Decimal("50")),))
    rating = estimate_upper_bound(worked_example_version(), "model-a", 1000, 0, {}, AT, overrides=overrides)
    assert [(ln.kind, ln.unit_price, ln.override_id) for ln in rating.lines] == [
        ("usage", Decimal("1"), "c"),
        ("usage", Decimal("0.01"), None),
        ("discount", Decimal("-0.5"), "d"),
        ("discount", Decimal("-0.005"), "d"),
    ]
    typed = Overrides(contract_prices=(contract,), discounts=(Discount("d", Decimal("50"), token_type="input"),))
    rating = estimate_upper_bound(worked_example_version(), "model-a", 1000, 0, {}, AT, overrides=typed)
    assert [(ln.kind, ln.unit_price, ln.override_id) for ln in rating.lines] == [
        ("usage", Decimal("1"), "c"),
        ("usage", Decimal("0.01"), None),
    ]


def test_an_unpriced_model_cannot_be_estimated():
    with pytest.raises(UnpricedModelError) as info:
        estimate_upper_bound(worked_example_version(), "model-z", 10, 10, {}, AT)
    assert info.value.code == "unpriced_model"
    only_input = version({"id": "in", "model": "m", "token_type": "input", "price": "1"})
    with pytest.raises(UnpricedModelError):
        estimate_upper_bound(only_input, "m", 10, 1, {}, AT)


def test_a_book_picks_the_version_in_force_at_the_estimate_time():
    book = parse_book(
        {
            "id": "standard",
            "currency": "USD",
            "versions": [
                {
                    "effective_from": "2026-01-01T00:00:00Z",
                    "rules": [
                        {"id": "in1", "token_type": "input", "price": "1"},
                        {"id": "out1", "token_type": "output", "price": "1"},
                    ],
                },
                {
                    "effective_from": "2026-02-01T00:00:00Z",
                    "rules": [
                        {"id": "in2", "token_type": "input", "price": "2"},
                        {"id": "out2", "token_type": "output", "price": "2"},
                    ],
                },
            ],
        }
    )
    january = estimate_upper_bound(book, "any", 1_000_000, 0, {}, datetime(2026, 1, 31, tzinfo=UTC))
    february = estimate_upper_bound(book, "any", 1_000_000, 0, {}, datetime(2026, 2, 1, tzinfo=UTC))
    assert (january.total, february.total) == (Decimal(1), Decimal(2))


@pytest.mark.parametrize("bad", [1.5, -1, True, "10"])
def test_counts_must_be_non_negative_integers(bad):
    with pytest.raises(InvalidUsageError) as info:
        estimate_upper_bound(worked_example_version(), "model-a", bad, 10, {}, AT)
    assert [f["field"] for f in info.value.fields] == ["prompt_tokens"]


# ------------------------------------------------------------- earlier turns the body does not show

WINDOWED = version(
    {"id": "w-in", "model": "windowed", "token_type": "input", "price": "1", "context_window": 128_000},
    {"id": "w-out", "model": "windowed", "token_type": "output", "price": "2"},
    {"id": "p-in", "model": "plain", "token_type": "input", "price": "1"},
    {"id": "p-out", "model": "plain", "token_type": "output", "price": "2"},
)


def test_a_call_that_continues_a_conversation_holds_its_prompt_at_the_books_context_window():
    rating = estimate_upper_bound(WINDOWED, "windowed", 500, 1000, {}, AT, prior_context_tokens=400_000)
    assert [(ln.token_type, ln.quantity) for ln in rating.lines] == [("input", 128_000), ("output", 1000)]
    assert rating.total == Decimal("0.130")  # 128,000 x $1/M + 1,000 x $2/M (was 0.0025: the body's 500)
    alone = estimate_upper_bound(WINDOWED, "windowed", 500, 1000, {}, AT)
    assert alone.lines[0].quantity == 500  # a call that carries its whole prompt: its count


def test_a_book_that_knows_no_context_window_holds_the_context_the_caller_gives():
    rating = estimate_upper_bound(WINDOWED, "plain", 500, 1000, {}, AT, prior_context_tokens=400_000)
    assert rating.lines[0].quantity == 400_000 and rating.total == Decimal("0.402")


def test_a_prompt_counted_past_the_context_it_continues_is_held_at_its_count():
    rating = estimate_upper_bound(WINDOWED, "windowed", 200_000, 10, {}, AT, prior_context_tokens=400_000)
    assert rating.lines[0].quantity == 200_000


def test_the_context_held_reaches_the_long_context_tier():
    tiered = parse_version({"id": "t", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                            "rules": [{"id": "in", "model": "long", "token_type": "input", "price": "1",
                                       "prompt_tiers": [{"above": 272_000, "price": "2"}]},
                                      {"id": "out", "model": "long", "token_type": "output", "price": "2"}]})
    rating = estimate_upper_bound(tiered, "long", 100, 0, {}, AT, prior_context_tokens=400_000)
    assert (rating.lines[0].quantity, rating.lines[0].unit_price, rating.total) == (400_000, Decimal("2"),
                                                                                    Decimal("0.8"))


@pytest.mark.parametrize("bad", [-1, True, 1.5])
def test_a_bad_prior_context_is_refused(bad):
    with pytest.raises(InvalidUsageError):
        estimate_upper_bound(WINDOWED, "plain", 500, 1000, {}, AT, prior_context_tokens=bad)


def _searching(*rules, **fields):
    return parse_version({"id": "s", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "rules": [{"id": "s-in", "model": "claude", "token_type": "input", "price": "3"},
                                    {"id": "s-out", "model": "claude", "token_type": "output", "price": "15"},
                                    *rules], **fields})


def test_server_tool_uses_are_held_at_their_per_call_price():
    # Anthropic's web search: $10 per 1,000 searches; 5 searches at most: $0.05
    book = _searching({"id": "search", "token_type": "web_search", "price": "0.01"})
    rating = estimate_upper_bound(book, "claude", 1000, 100, {}, AT, tool_uses={"web_search": 5})
    assert [(ln.token_type, ln.quantity, ln.amount, ln.rule_id) for ln in rating.lines] == [
        ("input", 1000, Decimal("0.003"), "s-in"),
        ("output", 100, Decimal("0.0015"), "s-out"),
        ("web_search", 5, Decimal("0.05"), "search"),
    ]


def test_a_server_tool_no_rule_prices_is_refused_before_the_call_not_given_away():
    with pytest.raises(UnpricedModelError):
        estimate_upper_bound(_searching(), "claude", 1000, 100, {}, AT, tool_uses={"web_search": 5})
    # a book that rates what it does not price at nothing, as its settle will
    zero = estimate_upper_bound(_searching(unpriced="zero"), "claude", 1000, 100, {}, AT, tool_uses={"web_search": 5})
    assert [ln.token_type for ln in zero.lines] == ["input", "output"]


def test_a_format_1_book_holds_no_server_tool_fee_as_it_charges_none():
    rating = estimate_upper_bound(worked_example_version(), "model-a", 1200, 500, {}, AT, tool_uses={"web_search": 5})
    assert rating.total_units == 32_000_000


@pytest.mark.parametrize("uses", [{"web_search": -1}, {"web_search": True}, {"input": 3}, {"nope": 1}])
def test_bad_server_tool_uses_are_refused(uses):
    with pytest.raises(InvalidUsageError):
        estimate_upper_bound(worked_example_version(), "model-a", 1, 1, {}, AT, tool_uses=uses)


@pytest.mark.parametrize(("model", "prompt", "prior", "held"), [
    ("windowed", 500, 400_000, 128_000), ("plain", 500, 400_000, 400_000), ("windowed", 200_000, 400_000, 200_000),
    ("plain", 500, None, 500)])
def test_the_prompt_a_token_budget_counts_is_the_one_the_money_holds(model, prompt, prior, held):
    assert held_prompt_tokens(WINDOWED, model, prompt, {}, AT, prior) == held
    rating = estimate_upper_bound(WINDOWED, model, prompt, 0, {}, AT, prior_context_tokens=prior)
    assert rating.lines[0].quantity == held


def test_a_prompt_written_to_the_cache_is_held_at_the_dearer_of_its_write_and_input_price():
    book = _searching({"id": "w5", "model": "claude", "token_type": "cache_write", "price": "3.75"},
                      {"id": "w1h", "model": "claude", "token_type": "cache_write_1h", "price": "6"})
    lines = {t: estimate_upper_bound(book, "claude", 1000, 0, {}, AT, prompt_cache_write=t).lines[0]
             for t in (None, "cache_write", "cache_write_1h")}
    assert [(ln.quantity, ln.amount, ln.rule_id) for ln in lines.values()] == [
        (1000, Decimal("0.003"), "s-in"), (1000, Decimal("0.00375"), "w5"), (1000, Decimal("0.006"), "w1h")]
    # a book that prices no write holds the prompt at input, its fallback
    assert estimate_upper_bound(_searching(), "claude", 1000, 0, {}, AT,
                                prompt_cache_write="cache_write_1h").lines[0].rule_id == "s-in"
    # a format 1 book knows one cache write: a one-hour write is held at it
    assert estimate_upper_bound(worked_example_version(), "model-a", 1200, 0, {}, AT,
                                prompt_cache_write="cache_write_1h").total_units >= \
        estimate_upper_bound(worked_example_version(), "model-a", 1200, 0, {}, AT).total_units
    with pytest.raises(InvalidUsageError):
        estimate_upper_bound(book, "claude", 1000, 0, {}, AT, prompt_cache_write="input")


TIERED_SERVICE = version(
    {"id": "in", "model": "gpt", "token_type": "input", "price": "2"},
    {"id": "out", "model": "gpt", "token_type": "output", "price": "8"},
    {"id": "in-pri", "model": "gpt", "token_type": "input", "price": "3.5", "match": {"service_tier": "priority"}},
    {"id": "out-pri", "model": "gpt", "token_type": "output", "price": "14", "match": {"service_tier": "priority"}},
    {"id": "out-flex", "model": "gpt", "token_type": "output", "price": "4", "match": {"service_tier": "flex"}},
)


def test_a_dimension_the_provider_chooses_is_held_at_its_dearest_value_in_the_book():
    """OpenAI's service_tier "auto" (or none) is served at the tier the project is set to, which the
    answer reports: the hold is the dearest the book prices it at (was: the standard prices)."""
    standard = estimate_upper_bound(TIERED_SERVICE, "gpt", 1000, 1000, {}, AT)
    assert standard.total_units == (2 * 1000 + 8 * 1000) * 1000  # 0.01 at 9 decimals
    chosen = estimate_upper_bound(TIERED_SERVICE, "gpt", 1000, 1000, {}, AT, chosen_by_provider=("service_tier",))
    assert [(ln.token_type, ln.rule_id) for ln in chosen.lines] == [("input", "in-pri"), ("output", "out-pri")]
    assert chosen.total_units == (3_500 + 14_000) * 1000  # 0.0175
    # a value the caller fixed is not the provider's to choose; a book without such rules holds as before
    assert estimate_upper_bound(TIERED_SERVICE, "gpt", 1000, 1000, {"service_tier": "flex"}, AT).total_units == \
        (2 + 4) * 1000 * 1000
    assert estimate_upper_bound(REASONER, "reasoner", 1000, 0, {}, AT, chosen_by_provider=("service_tier",)) \
        == estimate_upper_bound(REASONER, "reasoner", 1000, 0, {}, AT)


def test_the_hold_tells_the_values_of_the_providers_choices_it_was_priced_at():
    """What a settlement whose answer does not tell its tier is charged at (api.gateway.forwarding):
    the dearest variant's value, priority here (3.5 + 14 per million against 2 + 8 standard and
    2 + 4 flex, 1,000 each way: 0.0175); none when the call as given is the dearest (the first of
    equals: a book without such rules), or fixes the value itself."""
    rating, held = held_choices(TIERED_SERVICE, "gpt", 1000, 1000, {}, AT, ("service_tier",))
    assert held == {"service_tier": "priority"} and rating.total_units == (3_500 + 14_000) * 1000
    assert rating == estimate_upper_bound(TIERED_SERVICE, "gpt", 1000, 1000, {}, AT,
                                          chosen_by_provider=("service_tier",))
    assert held_choices(REASONER, "reasoner", 1000, 0, {}, AT, ("service_tier",))[1] == {}
    assert held_choices(TIERED_SERVICE, "gpt", 1000, 1000, {"service_tier": "flex"}, AT)[1] == {}


GEO_TIER = version(
    {"id": "in", "model": "claude", "token_type": "input", "price": "1"},
    {"id": "out", "model": "claude", "token_type": "output", "price": "2"},
    {"id": "out-pri", "model": "claude", "token_type": "output", "price": "5", "match": {"service_tier": "priority"}},
    {"id": "out-us", "model": "claude", "token_type": "output", "price": "3", "match": {"inference_geo": "us"}},
    {"id": "out-pri-us", "model": "claude", "token_type": "output", "price": "20",
     "match": {"service_tier": "priority", "inference_geo": "us"}},
)


def test_two_dimensions_the_provider_chooses_are_held_at_their_dearest_pair():
    """An Anthropic call leaving its tier and its geography to the provider, whose usage reports
    both (the settle is rated at the pair). Output at $2/M, $5/M at priority, $3/M in the US, $20/M
    at priority in the US: 1,000 input at $1/M ($0.001) and 1,000 output at $20/M ($0.020) may be
    billed, $0.021 (21,000,000 units at 9 decimals). The hold took one value at a time: priority
    $0.001 + $0.005 = $0.006 (6,000,000), and a settle at the pair charged $0.015 past it."""
    rating, held = held_choices(GEO_TIER, "claude", 1000, 1000, {}, AT, ("service_tier", "inference_geo"))
    assert rating.total_units == (1 + 20) * 1000 * 1000
    assert held == {"service_tier": "priority", "inference_geo": "us"}
    # the caller fixing one, the other is the provider's: priority fixed, $0.021 with us; us fixed, alike
    assert held_choices(GEO_TIER, "claude", 1000, 1000, {"service_tier": "priority"}, AT,
                        ("inference_geo",))[0].total_units == 21 * 1000 * 1000
    # one at a time as before where no rule matches a pair: TIERED_SERVICE's priority, 0.0175
    assert held_choices(TIERED_SERVICE, "gpt", 1000, 1000, {}, AT, ("service_tier", "inference_geo"))[0] \
        .total_units == (3_500 + 14_000) * 1000


def test_a_premium_price_the_call_may_be_billed_must_be_the_books_own():
    """pricing.premium: a one-hour cache write, long context and a premium dimension value are
    refused unless a rule of their own prices them (a fallback, a rule without prompt tiers or
    without the dimension would rate them cheaper), whatever the unpriced policy."""
    def held(book, dims=None, **kw):
        return estimate_upper_bound(book, "claude", 1000, 10, dims or {}, AT, **kw).total_units

    five = {"id": "w5", "model": "claude", "token_type": "cache_write", "price": "3.75"}
    for book in (_searching(five), _searching(five, unpriced="zero")):
        with pytest.raises(UnpricedModelError, match="cache_write_1h"):
            held(book, prompt_cache_write="cache_write_1h", premiums=("cache_write_1h",))
    hour = _searching(five, {"id": "w1h", "model": "claude", "token_type": "cache_write_1h", "price": "6"})
    assert held(hour, prompt_cache_write="cache_write_1h", premiums=("cache_write_1h",)) == \
        held(hour, prompt_cache_write="cache_write_1h")
    with pytest.raises(UnpricedModelError, match="prompt_tiers"):
        held(_searching(), premiums=("long_context",))
    tiers = [{"above": 200_000, "price": "6"}]
    long = parse_version({"id": "l", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "rules": [{"id": "l-in", "model": "claude", "token_type": "input", "price": "3",
                                     "prompt_tiers": tiers},
                                    {"id": "l-out", "model": "claude", "token_type": "output", "price": "15",
                                     "prompt_tiers": [{"above": 200_000, "price": "22.5"}]}]})
    assert held(long, premiums=("long_context",)) == held(long)  # cache reads fall back to the tiered input
    with pytest.raises(UnpricedModelError, match="speed"):
        held(_searching(), {"speed": "fast"}, premium_dimensions=("speed",))
    fast = _searching({"id": "fast-out", "model": "claude", "token_type": "output", "price": "90",
                       "match": {"speed": "fast"}})
    assert held(fast, {"speed": "fast"}, premium_dimensions=("speed",)) == held(fast, {"speed": "fast"})
    with pytest.raises(InvalidUsageError):
        held(_searching(), premiums=("cheap",))
    with pytest.raises(InvalidUsageError):
        held(_searching(), premium_dimensions=("speed",))  # not a dimension of the call


def test_audio_the_call_may_be_billed_needs_an_audio_rule_not_the_text_price():
    with pytest.raises(UnpricedModelError, match="input_audio"):
        estimate_upper_bound(_searching(), "claude", 1000, 10, {}, AT, input_audio_tokens=100,
                             premiums=("input_audio",))
    with pytest.raises(UnpricedModelError, match="output_audio"):
        estimate_upper_bound(_searching(), "claude", 1000, 10, {}, AT, premiums=("output_audio",))
    for rule in ({"id": "a", "model": "claude", "token_type": "input_audio", "price": "48"},
                 {"id": "a", "model": "claude", "token_type": "audio", "price": "48"}):
        estimate_upper_bound(_searching(rule), "claude", 1000, 10, {}, AT, input_audio_tokens=100,
                             premiums=("input_audio",))


def test_the_prompt_is_held_at_the_input_price_whatever_dearer_prompt_types_the_book_prices():
    """README (Reserve): the prompt is held at the input price; cached or image input the book prices
    dearer, reported by the settle, is charged above the hold. Input $1/M, cached input $2/M, image
    input $3/M: 1,000 prompt tokens hold 1,000 x $1 / 1M = $0.001 (1,000,000 units at 9 decimals)."""
    dearer = parse_version({"id": "standard", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                            "format": 2, "rules": [
                                {"id": "in", "model": "m", "token_type": "input", "price": "1"},
                                {"id": "cached", "model": "m", "token_type": "cached_input", "price": "2"},
                                {"id": "image", "model": "m", "token_type": "input_image", "price": "3"}]})
    held = estimate_upper_bound(dearer, "m", 1000, 0, {}, AT)
    assert [(ln.token_type, ln.rule_id) for ln in held.lines] == [("input", "in")]
    assert held.total_units == 1_000_000


def test_discounts_covering_a_type_are_summed_and_never_take_off_more_than_its_price():
    """The free check sums the discounts covering a type (`off < 100`), as rating takes each one's
    share off the line: 60 % of every line and 40 % of cached input take 100 % of it. Cached input
    at $10/M, 1,000 tokens: 10,000,000 units - 6,000,000 - 4,000,000 = 0, and the check calls it
    free; 60 % and 30 % leave 10,000,000 x 10 % = 1,000,000, not free. Discounts adding up to more
    than 100 % (60 % and 50 %: a charge of -10 %) are refused when the overrides are built."""
    from pricing.books import PriceBookValidationError
    from pricing.estimate import charges_other_types
    from pricing.rating import rate
    from pricing.usage import Usage
    book = version({"id": "in", "model": "model-c", "token_type": "input", "price": "0"},
                   {"id": "out", "model": "model-c", "token_type": "output", "price": "0"},
                   {"id": "cached", "model": "model-c", "token_type": "cached_input", "price": "10"})
    for second, left in (("40", 0), ("30", 1_000_000)):
        overrides = Overrides(discounts=(Discount("all", Decimal("60")),
                                         Discount("cache", Decimal(second), token_type="cached_input")))
        assert rate(Usage("model-c", {"cached_input": 1000}, AT), book, overrides).total_units == left
        assert charges_other_types(book, "model-c", {}, AT, overrides) is (left > 0)
    with pytest.raises(PriceBookValidationError, match="more than 100"):
        Overrides(discounts=(Discount("all", Decimal("60")), Discount("cache", Decimal("50"), model="model-c")))


def test_an_estimate_with_no_prompt_needs_no_input_price():
    """A model its book prices on output alone is held for its output budget when the estimate
    has no prompt, as a settle of its output alone is charged (it was unpriced_model naming
    input, a price 0 tokens do not need); a prompt still needs one, and a model no rule names
    is still refused."""
    voice = version({"id": "v-out", "model": "voice", "token_type": "output", "price": "15"})
    rating = estimate_upper_bound(voice, "voice", 0, 1000, {}, AT)
    # 1,000 output tokens at $15 per 1M = $0.015
    assert [(ln.token_type, ln.quantity, ln.amount) for ln in rating.lines] == [("output", 1000, Decimal("0.015"))]
    assert rate(Usage("voice", {"output": 1000}, AT, {}), voice).total == rating.total
    with pytest.raises(UnpricedModelError) as prompt:
        estimate_upper_bound(voice, "voice", 1, 1000, {}, AT)
    assert prompt.value.token_type == "input"
    with pytest.raises(UnpricedModelError):
        estimate_upper_bound(voice, "nobody", 0, 0, {}, AT)


def test_an_estimate_whose_prompt_is_all_audio_needs_no_text_input_price():
    """Guard (review of 41885b0): the change skips the prompt's text line where the prompt has no
    text tokens, so a prompt all audio (`input_audio_tokens` equal to `prompt_tokens`) on a model its
    book prices on audio input and output alone is held too (before 41885b0: unpriced_model naming
    input); a prompt with any text still needs the input price. By hand: 100 audio tokens at $40 per
    1M = $0.004, 1,000 output tokens at $80 per 1M = $0.08, held $0.084, what rate() charges them."""
    rules = [{"id": "v-in", "model": "voice", "token_type": "input_audio", "price": "40"},
             {"id": "v-out", "model": "voice", "token_type": "output", "price": "80"}]
    voice = parse_version({"id": "audio-voice", "currency": "USD", "format": 2,
                           "effective_from": "2026-01-01T00:00:00Z", "rules": rules})
    rating = estimate_upper_bound(voice, "voice", 100, 1000, {}, AT, input_audio_tokens=100)
    assert [(ln.token_type, ln.quantity, ln.amount) for ln in rating.lines] == [
        ("input_audio", 100, Decimal("0.004")), ("output", 1000, Decimal("0.08"))]
    assert rating.total == Decimal("0.084")
    assert rate(Usage("voice", {"input_audio": 100, "output": 1000}, AT, {}), voice).total == rating.total
    with pytest.raises(UnpricedModelError) as text:  # 40 of the 100 tokens are text
        estimate_upper_bound(voice, "voice", 100, 1000, {}, AT, input_audio_tokens=60)
    assert text.value.token_type == "input"
