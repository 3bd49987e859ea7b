"""API.md's token types `audio`, `image` and `tool` price what they name. Before, a book could
store such a rule and it priced nothing: gpt-4o audio at $40 per 1M beside input at $2.50
charged 1M audio input tokens $2.50. Amounts by hand, prices per 1M tokens."""

from datetime import UTC, datetime

import pytest

from pricing.errors import UnpricedModelError
from pricing.estimate import estimate_upper_bound
from pricing.normalize import normalize_canonical, normalize_openai
from pricing.parse import parse_version
from pricing.rating import rate
from pricing.usage import Usage

AT = datetime(2026, 5, 1, 12, tzinfo=UTC)
RULES = [
    {"id": "in", "model": "gpt-4o-audio", "token_type": "input", "price": "2.50"},
    {"id": "out", "model": "gpt-4o-audio", "token_type": "output", "price": "10.00"},
    {"id": "audio", "model": "gpt-4o-audio", "token_type": "audio", "price": "40.00"},
    {"id": "img", "model": "gpt-4o-audio", "token_type": "image", "price": "5.00"},
    {"id": "cached", "model": "gpt-4o-audio", "token_type": "cached_input", "price": "1.25"},
    {"id": "t-in", "model": "text-model", "token_type": "input", "price": "2.50"},
    {"id": "t-out", "model": "text-model", "token_type": "output", "price": "10.00"},
]


def version(book_format: int, rules=RULES):
    return parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                          "format": book_format, "rules": rules})


def lines(rating):
    return [(ln.token_type, ln.quantity, ln.rule_id, ln.amount_units) for ln in rating.lines]


@pytest.mark.parametrize("book_format", [1, 2])
@pytest.mark.parametrize("general", [False, True])
def test_audio_and_image_tokens_are_priced_by_the_books_audio_and_image_rules(book_format, general):
    usage = Usage("gpt-4o-audio", {"input": 1_000, "input_audio": 1_000_000, "output_audio": 500_000,
                                   "input_image": 2_000, "output": 100}, AT)
    # input 1,000 x 2.50 = 0.0025; audio 1,500,000 x 40 = 60.00 (in and out alike: one price);
    # image 2,000 x 5 = 0.01; output 100 x 10 = 0.001 (9 decimals: 2,500,000 units = 0.0025)
    rating = rate(usage, version(book_format), general=general)
    expected = {("input", 1_000, "in", 2_500_000), ("output", 100, "out", 1_000_000)}
    if book_format == 1:  # folded into the format 1 types
        expected |= {("audio", 1_500_000, "audio", 60_000_000_000), ("image", 2_000, "img", 10_000_000)}
    else:  # each its own line, priced by its fallback
        expected |= {("input_audio", 1_000_000, "audio", 40_000_000_000),
                     ("output_audio", 500_000, "audio", 20_000_000_000), ("input_image", 2_000, "img", 10_000_000)}
    assert set(lines(rating)) == expected
    assert rating.total_units == 60_013_500_000


@pytest.mark.parametrize("book_format", [1, 2])
def test_cached_audio_is_cached_input_where_the_book_prices_that_else_audio(book_format):
    usage = Usage("gpt-4o-audio", {"cached_input_audio": 1_000_000}, AT)
    assert [(ln.rule_id, ln.amount_units) for ln in rate(usage, version(book_format)).lines] == [
        ("cached", 1_250_000_000)]
    without = version(book_format, [r for r in RULES if r["id"] != "cached"])
    assert [(ln.rule_id, ln.amount_units) for ln in rate(usage, without).lines] == [("audio", 40_000_000_000)]


@pytest.mark.parametrize("book_format", [1, 2])
def test_a_model_without_an_audio_rule_prices_its_audio_as_before(book_format):
    usage = Usage("text-model", {"input_audio": 1_000_000, "output_audio": 1_000_000}, AT)
    rating = rate(usage, version(book_format))
    assert {ln.rule_id for ln in rating.lines} == {"t-in", "t-out"}
    assert rating.total_units == 12_500_000_000  # 2.50 + 10.00


def test_an_openai_usage_with_audio_tokens_is_charged_the_audio_price():
    normalized = normalize_openai({"prompt_tokens": 1_000_100, "completion_tokens": 0,
                                   "prompt_tokens_details": {"audio_tokens": 1_000_000}})
    usage = Usage("gpt-4o-audio", normalized.token_counts(), AT)
    # 100 text tokens at 2.50 and 1M audio at 40: 40.00025, not 2.50025 at the input price
    assert rate(usage, version(1)).total_units == 40_000_250_000


@pytest.mark.parametrize("book_format", [1, 2])
def test_audio_output_is_held_at_the_audio_price_when_it_is_the_dearest(book_format):
    hold = estimate_upper_bound(version(book_format), "gpt-4o-audio", 1_000, 1_000, {}, AT)
    # prompt 1,000 x 2.50 = 0.0025; output budget 1,000 at the dearest output side, audio's 40 = 0.04
    assert hold.total_units == 42_500_000
    text = estimate_upper_bound(version(book_format), "text-model", 1_000, 1_000, {}, AT)
    assert text.total_units == 12_500_000  # 0.0025 + 0.01: no audio rule of its own


def test_tool_tokens_are_priced_by_a_tool_rule_else_as_input():
    normalized = normalize_canonical({"input_tokens": 1_000, "tool_tokens": 2_000})
    usage = Usage("gpt-4o-audio", normalized.token_counts(), AT)
    with_tool = version(1, [*RULES, {"id": "tool", "model": "gpt-4o-audio", "token_type": "tool", "price": "1.00"}])
    assert lines(rate(usage, with_tool)) == [("input", 1_000, "in", 2_500_000), ("tool", 2_000, "tool", 2_000_000)]
    assert lines(rate(usage, version(1))) == [("input", 1_000, "in", 2_500_000), ("tool", 2_000, "in", 5_000_000)]


def test_audio_tokens_of_a_format_1_type_with_no_rule_are_unpriced():
    with pytest.raises(UnpricedModelError):
        rate(Usage("text-model", {"audio": 10}, AT), version(1))
