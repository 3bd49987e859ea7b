"""Worked examples of price book format 2, amounts written out by hand (prices per 1M tokens,
or per call for web searches)."""

from datetime import UTC, datetime

import pytest
from pricing_testkit import AT, load_fixture

from pricing.errors import InvalidUsageError, PriceBookValidationError, UnpricedModelError
from pricing.estimate import estimate_upper_bound
from pricing.normalize import normalize_anthropic, normalize_openai
from pricing.parse import parse_version
from pricing.rating import rate
from pricing.reference import load_reference_book
from pricing.units import line_label
from pricing.usage import Usage

BOOK = {
    "id": "real", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2, "rules": [
        {"id": "g-in", "model": "gpt-x", "token_type": "input", "price": "2.50",
         "prompt_tiers": [{"above": 272000, "price": "5.00"}]},
        {"id": "g-out", "model": "gpt-x", "token_type": "output", "price": "15.00",
         "prompt_tiers": [{"above": 272000, "price": "22.50"}]},
        {"id": "g-in-flex", "model": "gpt-x", "token_type": "input", "price": "1.25", "match": {"service_tier": "flex"},
         "label": "flex"},
        {"id": "g-out-flex", "model": "gpt-x", "token_type": "output", "price": "7.50",
         "match": {"service_tier": "flex"}, "label": "flex"},
        {"id": "a-in", "model": "claude-x", "token_type": "input", "price": "3.00"},
        {"id": "a-out", "model": "claude-x", "token_type": "output", "price": "15.00"},
        {"id": "a-write", "model": "claude-x", "token_type": "cache_write", "price": "3.75"},
        {"id": "a-write-1h", "model": "claude-x", "token_type": "cache_write_1h", "price": "6.00"},
        {"id": "a-search", "model": "claude-x", "token_type": "web_search", "price": "0.01"},
        {"id": "rt-in", "model": "realtime-x", "token_type": "input", "price": "2.50"},
        {"id": "rt-audio-in", "model": "realtime-x", "token_type": "input_audio", "price": "40.00"},
        {"id": "rt-out", "model": "realtime-x", "token_type": "output", "price": "10.00"},
        {"id": "rt-audio-out", "model": "realtime-x", "token_type": "output_audio", "price": "80.00"},
        {"id": "d-in", "model": "deep-x", "token_type": "input", "price": "0.27"},
        {"id": "d-in-night", "model": "deep-x", "token_type": "input", "price": "0.135",
         "hours": {"from": "16:30", "to": "00:30"}, "label": "off-peak"},
    ]}
VERSION = parse_version(BOOK)


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 2, hour, minute, 17, tzinfo=UTC)


def rated(model, tokens, when=AT, dims=None):
    return rate(Usage(model, tokens, when, dims or {}), VERSION)


def described(rating):
    return [(line_label(ln.token_type, ln.note), ln.quantity, ln.amount_units) for ln in rating.lines]


def test_a_300k_token_prompt_past_a_272k_tier_prices_every_token_of_the_call_at_the_long_context_price():
    rating = rated("gpt-x", {"input": 300_000, "output": 1_000})
    # 300,000 x $5.00 / 1M = $1.50; 1,000 x $22.50 / 1M = $0.0225
    assert described(rating) == [("input (long context)", 300_000, 1_500_000_000),
                                 ("output (long context)", 1_000, 22_500_000)]
    assert rating.total_units == 1_522_500_000


def test_a_prompt_of_exactly_272k_tokens_stays_at_the_base_price():
    rating = rated("gpt-x", {"input": 272_000, "output": 1_000})
    # 272,000 x $2.50 / 1M = $0.68; 1,000 x $15.00 / 1M = $0.015
    assert described(rating) == [("input", 272_000, 680_000_000), ("output", 1_000, 15_000_000)]


def test_a_reserve_whose_prompt_would_cross_the_tier_holds_at_the_higher_tier():
    hold = estimate_upper_bound(VERSION, "gpt-x", 300_000, 2_000, {}, AT)
    # 300,000 x $5.00 + 2,000 x $22.50, per 1M
    assert hold.total_units == 1_500_000_000 + 45_000_000
    below = estimate_upper_bound(VERSION, "gpt-x", 200_000, 2_000, {}, AT)
    assert below.total_units == 500_000_000 + 30_000_000  # 200,000 x $2.50 + 2,000 x $15.00


def test_30000_one_hour_cache_write_tokens_are_priced_apart_from_five_minute_writes():
    usage = normalize_anthropic({"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 30_000,
                                 "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                                    "ephemeral_1h_input_tokens": 30_000}})
    rating = rated("claude-x", usage.token_counts())
    assert described(rating) == [("cache write (1 hour)", 30_000, 180_000_000)]  # 30,000 x $6.00 / 1M


def test_an_audio_round_trip_prices_audio_in_and_out_at_their_own_prices():
    usage = normalize_openai({"prompt_tokens": 1_200, "completion_tokens": 600, "total_tokens": 1_800,
                              "prompt_tokens_details": {"audio_tokens": 1_000, "cached_tokens": 0},
                              "completion_tokens_details": {"audio_tokens": 500, "reasoning_tokens": 0}})
    rating = rated("realtime-x", usage.token_counts())
    # text in 200 x $2.50, audio in 1,000 x $40, text out 100 x $10, audio out 500 x $80 (per 1M)
    assert described(rating) == [("input", 200, 500_000), ("output", 100, 1_000_000),
                                 ("audio input", 1_000, 40_000_000), ("audio output", 500, 40_000_000)]
    assert rating.total_units == 81_500_000


def test_three_web_searches_are_a_line_of_their_own():
    usage = normalize_anthropic({"input_tokens": 100, "output_tokens": 50,
                                 "server_tool_use": {"web_search_requests": 3}})
    rating = rated("claude-x", usage.token_counts())
    # 100 x $3 / 1M + 50 x $15 / 1M + 3 x $0.01
    assert described(rating) == [("input", 100, 300_000), ("output", 50, 750_000), ("web search", 3, 30_000_000)]
    assert rating.total_units == 31_050_000


@pytest.mark.parametrize(("hour", "minute", "price_units", "label"), [
    (17, 0, 135_000_000, "input (off-peak)"),  # in the window
    (16, 29, 270_000_000, "input"),            # a minute before it opens
    (16, 30, 135_000_000, "input (off-peak)"),  # it opens at 16:30
    (0, 29, 135_000_000, "input (off-peak)"),   # past midnight, still in it
    (0, 30, 270_000_000, "input"),             # it closes at 00:30 (excluded)
])
def test_an_off_peak_call_is_priced_by_the_time_of_day_of_the_usage(hour, minute, price_units, label):
    rating = rated("deep-x", {"input": 1_000_000}, at(hour, minute))
    assert described(rating) == [(label, 1_000_000, price_units)]


def test_a_flex_tier_call_read_from_the_providers_usage_is_priced_at_the_flex_price():
    usage = normalize_openai({"input_tokens": 10_000, "output_tokens": 2_000, "service_tier": "flex",
                              "input_tokens_details": {"cached_tokens": 0},
                              "output_tokens_details": {"reasoning_tokens": 0}})
    assert usage.dimensions() == {"service_tier": "flex"}
    rating = rated("gpt-x", usage.token_counts(), dims=usage.dimensions())
    # 10,000 x $1.25 / 1M + 2,000 x $7.50 / 1M
    assert described(rating) == [("input (flex)", 10_000, 12_500_000), ("output (flex)", 2_000, 15_000_000)]
    default = rated("gpt-x", usage.token_counts())
    assert default.total_units == 25_000_000 + 30_000_000  # the standard tier: $2.50 and $15.00


def test_an_openai_embeddings_usage_has_no_completion_tokens_and_is_input_only():
    usage = normalize_openai({"prompt_tokens": 8, "total_tokens": 8})
    assert usage.token_counts() == {"input": 8}


def test_the_openai_cache_write_field_is_read_as_cache_writes():
    usage = normalize_openai({"prompt_tokens": 1_000, "completion_tokens": 10, "total_tokens": 1_010,
                              "prompt_tokens_details": {"cached_tokens": 200, "cache_write_tokens": 300}})
    assert usage.token_counts() == {"input": 500, "cached_input": 200, "cache_write": 300, "output": 10}


def test_the_unpriced_policy_is_explicit_per_book():
    body = {"id": "emb", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
            "rules": [{"id": "e-in", "model": "embed-x", "token_type": "input", "price": "0.02"}]}
    usage = Usage("embed-x", {"input": 1_000_000, "output": 5}, AT)
    with pytest.raises(UnpricedModelError):
        rate(usage, parse_version(body))  # the default: error
    zero = parse_version({**body, "unpriced": "zero"})
    assert [(ln.token_type, ln.amount_units) for ln in rate(usage, zero).lines] == [("input", 20_000_000)]
    with pytest.raises(UnpricedModelError):  # zero is for the types of a model it prices, not other models
        rate(Usage("other-model", {"input": 5}, AT), zero)


@pytest.mark.parametrize(("unit", "calls", "units"), [
    ("request", 1, 10_000_000), ("web_search", 2, 20_000_000), ("audio_seconds", 7_200, 20_000_000),
    ("input_audio_seconds", 7_200, 20_000_000), ("input_characters", 2_000_000, 20_000_000)])
def test_a_per_call_price_for_every_model_does_not_make_an_unknown_model_free_under_unpriced_zero(unit, calls, units):
    """A format 2 book, `unpriced: zero`: model-a input at $10 per 1M, and a price of a unit that
    is no token for every model (a rule with no model): a $0.01 fee per request, web searches at
    $0.01 a call, audio at $0.01 an hour, characters at $0.01 per 1M. A misspelt model-aa's 1M
    input tokens were charged that unit alone, $0.01 for its request (before beee636), $0.02 (2 x
    $0.01) for 2 searches (before 180d768), 2 hours (7,200 s) or 2M characters: its tokens free,
    the rule naming no model made every model one the book "prices". By hand now: model-aa is
    unpriced_model (reserve and settle); model-a's 1M input tokens $10.00 (10,000,000,000 units)
    and its unit (1 x $0.01 = 10,000,000; 2 x $0.01 = 20,000,000), its 5 output tokens free (a
    type of a model the book prices, unpriced: zero)."""
    body = {"id": "fee", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
            "unpriced": "zero", "rules": [{"id": "a-in", "model": "model-a", "token_type": "input", "price": "10"},
                                          {"id": "call", "token_type": unit, "price": "0.01"}]}
    zero = parse_version(body)
    assert not zero.prices_model("model-aa") and zero.prices_model("model-a")
    with pytest.raises(UnpricedModelError):
        rate(Usage("model-aa", {"input": 1_000_000, unit: calls}, AT), zero)
    with pytest.raises(UnpricedModelError):
        estimate_upper_bound(zero, "model-aa", 1_000_000, 0, None, AT)
    known = rate(Usage("model-a", {"input": 1_000_000, "output": 5, unit: calls}, AT), zero)
    assert [(ln.token_type, ln.amount_units) for ln in known.lines] == [("input", 10_000_000_000), (unit, units)]
    assert known.total_units == 10_000_000_000 + units


def test_a_format_1_book_rates_format_2_usage_exactly_as_before():
    book = load_reference_book()
    anthropic = normalize_anthropic(load_fixture("anthropic_message_cache_read_web_search.json")["usage"])
    assert dict(anthropic.extra) == {"cache_write_1h": 1024, "web_search": 1}
    rating = rate(Usage("claude-sonnet-4-20250514", anthropic.token_counts(), AT), book.version_at(AT))
    # as before format 2: the 1-hour writes at the cache-write price, the search not billed
    before = rate(Usage("claude-sonnet-4-20250514", {"input": 6039, "cached_input": 188086, "cache_write": 1024,
                                                     "output": 931}, AT), book.version_at(AT))
    assert rating.lines == before.lines and rating.total_units == before.total_units


def test_a_format_1_book_refuses_what_only_format_2_knows():
    body = {**BOOK, "format": 1}
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body)
    assert any("format 2" in f["message"] for f in info.value.fields)


def test_overlapping_hours_for_one_model_and_type_are_refused():
    rules = [{"id": "a", "model": "m", "token_type": "input", "price": "1", "hours": {"from": "22:00", "to": "02:00"}},
             {"id": "b", "model": "m", "token_type": "input", "price": "2", "hours": {"from": "01:00", "to": "03:00"}}]
    with pytest.raises(PriceBookValidationError) as info:
        parse_version({"id": "h", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                       "rules": rules})
    assert [f["field"] for f in info.value.fields] == ["rules[1].hours"]


def _hours_version(rules):
    return parse_version({"id": "h", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "rules": rules})


@pytest.mark.parametrize("a, b", [
    # one model: each rule one dimension and a window; a flex call from the EU at 18:30 matches both
    ({"id": "a", "model": "m", "match": {"region": "eu"}, "hours": {"from": "16:00", "to": "20:00"}},
     {"id": "b", "model": "m", "match": {"service_tier": "flex"}, "hours": {"from": "18:00", "to": "22:00"}}),
    # patterns that both match gpt-4o-mini, windows that share 18:00-20:00
    ({"id": "a", "model": "gpt-4o*", "hours": {"from": "16:00", "to": "20:00"}},
     {"id": "b", "model": "gpt-4*", "hours": {"from": "18:00", "to": "22:00"}}),
])
def test_rules_whose_different_windows_overlap_where_both_match_are_refused_not_left_to_fail_rating(a, b):
    rules = [{"id": "base", "model": "m", "token_type": "input", "price": "1"},
             {**a, "token_type": "input", "price": "2"}, {**b, "token_type": "input", "price": "3"}]
    with pytest.raises(PriceBookValidationError) as info:
        _hours_version(rules)  # was accepted, and every such call at 18:30 then failed to rate
    assert [f["field"] for f in info.value.fields] == ["rules[2]"]
    assert "ambiguous with rule 'a'" in info.value.fields[0]["message"]


def test_different_windows_that_never_overlap_stay_apart_and_each_prices_its_own_hours():
    version = _hours_version([
        {"id": "base", "model": "m", "token_type": "input", "price": "1"},
        {"id": "a", "model": "m", "token_type": "input", "price": "2", "match": {"region": "eu"},
         "hours": {"from": "16:00", "to": "20:00"}},
        {"id": "b", "model": "m", "token_type": "input", "price": "3", "match": {"service_tier": "flex"},
         "hours": {"from": "20:00", "to": "16:00"}}])
    dims = {"region": "eu", "service_tier": "flex"}
    # 1M tokens: $2.00 by rule a at 19:59, $3.00 by rule b at 20:00 (its `from`; a's `to` is excluded)
    assert [(ln.rule_id, ln.amount_units) for ln in rated_with(version, at(19, 59), dims).lines] == [
        ("a", 2_000_000_000)]
    assert [(ln.rule_id, ln.amount_units) for ln in rated_with(version, at(20, 0), dims).lines] == [
        ("b", 3_000_000_000)]


def rated_with(version, when, dims):
    return rate(Usage("m", {"input": 1_000_000}, when, dims), version)


def test_a_reserve_for_an_audio_model_holds_its_output_budget_at_the_audio_output_price():
    # max_output_tokens bounds every output token, audio ones included: 2,000 of them may all be
    # audio at $80/M ($0.16), so the hold must cover that, not 2,000 at the $10/M text price ($0.02)
    hold = estimate_upper_bound(VERSION, "realtime-x", 1_000, 2_000, {}, AT)
    assert [(ln.token_type, ln.quantity, ln.amount_units) for ln in hold.lines] == [
        ("input", 1_000, 2_500_000), ("output_audio", 2_000, 160_000_000)]
    settled = rated("realtime-x", {"input": 1_000, "output_audio": 2_000})
    assert settled.total_units == hold.total_units  # the call that spends it all fits its hold
    # a text model's output-side types fall back to its output price: its hold is as before
    assert [(ln.token_type, ln.amount_units) for ln in
            estimate_upper_bound(VERSION, "claude-x", 1_000, 2_000, {}, AT).lines] == [
        ("input", 3_000_000), ("output", 30_000_000)]


def test_audio_input_the_caller_counted_is_held_at_the_audio_input_price():
    # 600 of 1,000 prompt tokens are audio at $40/M: held $0.024 + $0.001, not $0.0025 at the text price
    hold = estimate_upper_bound(VERSION, "realtime-x", 1_000, 0, {}, AT, input_audio_tokens=600)
    assert [(ln.token_type, ln.quantity, ln.amount_units) for ln in hold.lines] == [
        ("input", 400, 1_000_000), ("input_audio", 600, 24_000_000)]
    assert rated("realtime-x", {"input": 400, "input_audio": 600}).total_units == hold.total_units
    # a model without an audio input price holds its audio at its input price, as the settle charges it
    text = estimate_upper_bound(VERSION, "claude-x", 1_000, 0, {}, AT, input_audio_tokens=600)
    assert text.total_units == estimate_upper_bound(VERSION, "claude-x", 1_000, 0, {}, AT).total_units
    with pytest.raises(InvalidUsageError, match="input_audio_tokens"):
        estimate_upper_bound(VERSION, "realtime-x", 100, 0, {}, AT, input_audio_tokens=101)


def test_an_estimate_reads_the_hours_in_utc_whatever_the_offset_of_its_time():
    from datetime import timedelta, timezone

    paris = timezone(timedelta(hours=1))
    # 17:00+01:00 is 16:00 UTC, before the 16:30 UTC off-peak window: the peak $0.27/M
    hold = estimate_upper_bound(VERSION, "deep-x", 1_000_000, 0, {}, datetime(2026, 3, 2, 17, 0, tzinfo=paris))
    assert [(ln.rule_id, ln.amount_units) for ln in hold.lines] == [("d-in", 270_000_000)]
    assert hold.lines == estimate_upper_bound(VERSION, "deep-x", 1_000_000, 0, {}, at(16, 0)).lines


def test_a_window_ending_at_midnight_does_not_overlap_one_starting_at_midnight():
    version = _hours_version([
        {"id": "day", "model": "m", "token_type": "input", "price": "1"},
        {"id": "evening", "model": "m", "token_type": "input", "price": "2", "hours": {"from": "18:00", "to": "00:00"}},
        {"id": "night", "model": "m", "token_type": "input", "price": "3", "hours": {"from": "00:00", "to": "06:00"}}])
    # was refused: "rules[2].hours: overlaps the hours of rule 'evening'"
    assert [ln.rule_id for ln in rated_with(version, at(23, 59), {}).lines] == ["evening"]
    assert [ln.rule_id for ln in rated_with(version, at(0, 0), {}).lines] == ["night"]
    assert [ln.rule_id for ln in rated_with(version, at(6, 0), {}).lines] == ["day"]
