from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pricing_testkit import AT, version

from pricing.books import PriceBook, PriceVersion, Rule, Tier
from pricing.errors import PriceBookValidationError, UnpricedModelError
from pricing.parse import parse_book, parse_version


def fields_of(exc: PriceBookValidationError) -> set[str]:
    return {f["field"] for f in exc.fields}


def test_version_validation_lists_every_offending_field_at_once():
    with pytest.raises(PriceBookValidationError) as info:
        version(
            {"id": "a", "token_type": "input", "price": "1"},
            {"id": "a", "token_type": "output", "price": "1"},
            {"id": "b", "token_type": "tokens", "price": "1"},
            {"id": "c", "token_type": "output", "model": "m", "price": "-1"},
            {"id": "d", "token_type": "input", "model": "m", "price": 0.5},
            {
                "id": "e",
                "token_type": "input",
                "model": "n",
                "tiers": [
                    {"up_to": 100, "price": "2"},
                    {"up_to": 100, "price": "1"},
                    {"up_to": None, "price": "1"},
                ],
            },
            {"id": "f", "token_type": "input", "model": "o", "tiers": [{"up_to": 100, "price": "2"}]},
        )
    assert info.value.code == "validation_error"
    assert {
        "rules[2].token_type",
        "rules[3].price",
        "rules[4].price",
        "rules[5].tiers[1].up_to",
        "rules[6].tiers[0].up_to",
    } <= fields_of(info.value)


def test_duplicate_rule_ids_are_refused():
    with pytest.raises(PriceBookValidationError) as info:
        version(
            {"id": "a", "token_type": "input", "price": "1"},
            {"id": "a", "token_type": "output", "price": "1"},
        )
    assert fields_of(info.value) == {"rules[1].id"}


@pytest.mark.parametrize(
    "rule",
    [
        {"id": "x", "token_type": "input"},
        {"id": "x", "token_type": "input", "price": "1", "tiers": [{"up_to": None, "price": "1"}]},
        {"id": "x", "token_type": "input", "price": "1", "tier_mode": "volume"},
        {"id": "x", "token_type": "input", "price": "1", "tier_mode": "stepped"},
        {"id": "x", "token_type": "input", "price": "1e3"},
        {"id": "x", "token_type": "input", "price": "NaN"},
        {"id": "x", "token_type": "input", "price": "1", "match": {"region": 1.5}},
        {"id": "x", "token_type": "input", "price": "1", "match": {"model": "m"}},
        {"id": "x", "token_type": "input", "price": "1", "colour": "blue"},
        {"id": "", "token_type": "input", "price": "1"},
        {
            "id": "x",
            "token_type": "input",
            "tiers": [{"up_to": 0, "price": "1"}, {"up_to": None, "price": "1"}],
        },
        {
            "id": "x",
            "token_type": "input",
            "tiers": [{"up_to": 10, "price": "1"}, {"up_to": None, "price": -1}],
        },
    ],
)
def test_malformed_rules_are_refused(rule):
    with pytest.raises(PriceBookValidationError) as info:
        version(rule)
    assert all(f["field"].startswith("rules[0]") for f in info.value.fields)


def test_naive_or_missing_effective_from_is_refused():
    with pytest.raises(PriceBookValidationError) as info:
        parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00", "rules": []})
    assert fields_of(info.value) == {"effective_from"}
    with pytest.raises(PriceBookValidationError):
        PriceVersion("b", "USD", datetime(2026, 1, 1), ())


def test_bad_currency_is_refused():
    with pytest.raises(PriceBookValidationError) as info:
        parse_version({"id": "b", "currency": "usd", "effective_from": "2026-01-01T00:00:00Z", "rules": []})
    assert fields_of(info.value) == {"currency"}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"token_type": "input"}, {"token_type": "input"}),
        ({"token_type": "input", "model": "m"}, {"token_type": "input", "model": "m"}),
        ({"token_type": "input", "model": "gpt-4o*"}, {"token_type": "input", "model": "gpt-4o-mini*"}),
        (
            {"token_type": "input", "match": {"region": "eu"}},
            {"token_type": "input", "match": {"batch": True}},
        ),
        (
            {"token_type": "input", "match": {"region": "eu"}},
            {"token_type": "input", "match": {"region": "eu"}},
        ),
    ],
)
def test_ties_that_precedence_cannot_break_are_refused_when_the_version_is_built(first, second):
    with pytest.raises(PriceBookValidationError) as info:
        version({"id": "r1", "price": "1", **first}, {"id": "r2", "price": "2", **second})
    assert fields_of(info.value) == {"rules[1]"}
    assert "ambiguous" in info.value.fields[0]["message"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"token_type": "input"}, {"token_type": "output"}),
        ({"token_type": "input", "model": "m"}, {"token_type": "input", "model": "n"}),
        ({"token_type": "input", "model": "m"}, {"token_type": "input", "model": "m*"}),
        ({"token_type": "input", "model": "gpt-*"}, {"token_type": "input", "model": "claude-*"}),
        ({"token_type": "input", "model": "*-mini"}, {"token_type": "input", "model": "*-large"}),
        (
            {"token_type": "input", "match": {"region": "eu"}},
            {"token_type": "input", "match": {"region": "us"}},
        ),
        ({"token_type": "input"}, {"token_type": "input", "match": {"region": "us"}}),
    ],
)
def test_rules_that_precedence_orders_are_accepted(first, second):
    built = version({"id": "r1", "price": "1", **first}, {"id": "r2", "price": "2", **second})
    assert [r.id for r in built.rules] == ["r1", "r2"]


PRECEDENCE = version(
    {"id": "any", "token_type": "input", "price": "1"},
    {"id": "any-eu", "token_type": "input", "price": "2", "match": {"region": "eu"}},
    {"id": "pattern", "token_type": "input", "price": "3", "model": "gpt-4o*"},
    {
        "id": "pattern-eu-batch",
        "token_type": "input",
        "price": "4",
        "model": "gpt-4o*",
        "match": {"region": "eu", "batch": True},
    },
    {"id": "exact", "token_type": "input", "price": "5", "model": "gpt-4o"},
)


@pytest.mark.parametrize(
    ("model", "dimensions", "rule_id"),
    [
        ("gpt-4o", {}, "exact"),
        ("gpt-4o", {"region": "eu", "batch": True}, "exact"),
        ("gpt-4o-mini", {}, "pattern"),
        ("gpt-4o-mini", {"region": "eu"}, "pattern"),
        ("gpt-4o-mini", {"region": "eu", "batch": True}, "pattern-eu-batch"),
        ("gpt-4o-mini", {"region": "eu", "batch": "true"}, "pattern"),
        ("claude", {}, "any"),
        ("claude", {"region": "eu"}, "any-eu"),
        ("claude", {"region": "us"}, "any"),
    ],
)
def test_exact_model_beats_pattern_beats_any_model_then_more_dimensions_win(model, dimensions, rule_id):
    assert PRECEDENCE.resolve("input", model, dimensions).id == rule_id


def test_patterns_are_case_sensitive_globs():
    built = version({"id": "p", "token_type": "input", "price": "1", "model": "gpt-4o*"})
    assert built.find_rule("input", "GPT-4o", {}) is None
    assert built.find_rule("input", "gpt-4o-2024-08-06", {}).id == "p"


def test_reasoning_falls_back_to_output_and_cache_types_to_input():
    built = version(
        {"id": "in", "token_type": "input", "price": "1", "model": "m"},
        {"id": "out", "token_type": "output", "price": "2", "model": "m"},
    )
    assert built.resolve("reasoning", "m", {}).id == "out"
    assert built.resolve("cached_input", "m", {}).id == "in"
    assert built.resolve("cache_write", "m", {}).id == "in"


def test_a_rule_for_the_type_itself_beats_the_fallback():
    built = version(
        {"id": "in", "token_type": "input", "price": "1", "model": "m"},
        {"id": "cached", "token_type": "cached_input", "price": "0.1"},
    )
    assert built.resolve("cached_input", "m", {}).id == "cached"


def test_no_rule_and_no_fallback_is_unpriced_model():
    built = version({"id": "in", "token_type": "input", "price": "1", "model": "m"})
    with pytest.raises(UnpricedModelError) as info:
        built.resolve("output", "m", {})
    assert info.value.code == "unpriced_model"
    assert (info.value.model, info.value.token_type) == ("m", "output")
    with pytest.raises(UnpricedModelError):
        built.resolve("input", "other-model", {})
    with pytest.raises(UnpricedModelError):
        built.resolve("audio", "m", {})  # audio and image tokens of a format 1 type have no fallback
    assert built.resolve("tool", "m", {}).id == "in"  # tool_tokens are prompt tokens the caller counted apart


def book_with_change(at: datetime) -> PriceBook:
    return parse_book(
        {
            "id": "standard",
            "currency": "USD",
            "versions": [
                {
                    "effective_from": "2026-01-01T00:00:00Z",
                    "rules": [{"id": "v1", "token_type": "input", "price": "1"}],
                },
                {
                    "effective_from": at.isoformat(),
                    "rules": [{"id": "v2", "token_type": "input", "price": "2"}],
                },
            ],
        }
    )


def test_the_version_in_force_is_the_latest_effective_at_or_before_the_time():
    change = datetime(2026, 2, 1, tzinfo=UTC)
    book = book_with_change(change)
    assert book.version_at(change - timedelta(seconds=1)).rules[0].id == "v1"
    assert book.version_at(change).rules[0].id == "v2"
    assert book.version_at(AT).rules[0].id == "v2"
    with pytest.raises(UnpricedModelError):
        book.version_at(datetime(2025, 12, 31, 23, 59, 59, tzinfo=UTC))


def test_versions_are_identified_by_their_effective_time_unless_named():
    assert version({"id": "a", "token_type": "input", "price": "1"}).version == "2026-01-01T00:00:00Z"
    named = parse_version(
        {
            "id": "b",
            "currency": "USD",
            "effective_from": "2026-01-01T01:00:00+01:00",
            "version": "7",
            "rules": [],
        }
    )
    assert named.version == "7"
    assert named.effective_from == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_book_refuses_versions_of_another_book_or_two_at_one_time():
    v1 = version({"id": "a", "token_type": "input", "price": "1"})
    with pytest.raises(PriceBookValidationError):
        PriceBook("other", "USD", (v1,))
    with pytest.raises(PriceBookValidationError):
        PriceBook("standard", "USD", (v1, v1))


def test_rules_built_directly_normalize_prices_and_dimensions():
    rule = Rule(
        "r",
        "input",
        model="m",
        match={"region": "eu"},
        tiers=({"up_to": 10, "price": "2"}, Tier(None, Decimal(1))),
    )  # type: ignore[arg-type]
    assert rule.match == (("region", "eu"),)
    assert rule.tiers == (Tier(10, Decimal(2)), Tier(None, Decimal(1)))
    assert rule.max_price() == Decimal(2)
    with pytest.raises(PriceBookValidationError) as info:
        Rule("r", "input", price=1.5)  # type: ignore[arg-type]
    assert fields_of(info.value) == {"price"}


def test_a_version_knows_the_dimensions_its_rules_price_by():
    """What a customer's key may not name in its dimensions (wallets.core.reservations): every
    name some rule matches, whatever its value, and nothing a rule does not match."""
    v = version({"id": "in", "token_type": "input", "price": "1"},
                {"id": "in-batch", "token_type": "input", "price": "0.5", "match": {"processing": "batch"}},
                {"id": "out-flex", "token_type": "output", "price": "2",
                 "match": {"service_tier": "flex", "region": "eu"}})
    assert v.priced_dimensions == frozenset({"processing", "service_tier", "region"})
    assert version({"id": "in", "token_type": "input", "price": "1"}).priced_dimensions == frozenset()
