"""Bounded price-book work (issue 9, item 6): the ambiguity check finds exactly the ties the
pairwise definition finds, while visiting rules a near-linear number of times; a version posted
is held to documented limits, each refused with the field it concerns."""
from __future__ import annotations

from decimal import Decimal
from fnmatch import fnmatchcase
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pricing_testkit import JAN_1, version

from pricing.ambiguity import find_ties
from pricing.books import (
    MAX_DIMENSION_SETS,
    MAX_MATCH_DIMENSIONS,
    MAX_PATTERNS,
    MAX_RULES,
    MAX_TIERS,
    Rule,
)
from pricing.errors import PriceBookValidationError
from pricing.parse import parse_rule, parse_version


def fields_of(exc: PriceBookValidationError) -> set[str]:
    return {f["field"] for f in exc.fields}


def body(rules: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "b", "currency": "USD", "effective_from": JAN_1, "rules": rules, **extra}


def big_book(n: int) -> list[dict[str, Any]]:
    """A catalogue as books are written: exact models x token types, some regional variants,
    a few model families by pattern, one per-request fee."""
    rules: list[dict[str, Any]] = [{"id": "call", "token_type": "request", "price": "0.001"}]
    i = 0
    while len(rules) < n:
        model = f"model-{i:05d}"
        rules += [{"id": f"{model}-{t}", "model": model, "token_type": t, "price": "1.25"}
                  for t in ("input", "output", "cached_input")]
        if i % 10 == 0:
            rules.append({"id": f"{model}-eu", "model": model, "token_type": "input", "price": "3",
                          "match": {"region": "eu"}})
        if i % 100 == 0:
            rules.append({"id": f"family-{i}", "model": f"family-{i:05d}-*", "token_type": "input", "price": "2"})
        i += 1
    return rules[:n]


# ----------------------------------------------------------------- the check, against its definition

def literal_ends(pattern: str) -> tuple[str, str]:
    cut = min((pattern.index(c) for c in "*?[" if c in pattern), default=len(pattern))
    end = max((pattern.rindex(c) for c in "*?]" if c in pattern), default=-1)
    return pattern[:cut], pattern[end + 1:]


def typed(match):
    return {(k, type(v), v) for k, v in match}


def tie_by_definition(a: Rule, b: Rule, rules=()) -> bool:
    """The documented rule, pair by pair: same token type, model specificity and number of
    dimensions, no shared dimension with two values (type included), models that can meet, and
    no rule of the same model and type whose dimensions are exactly both rules' together."""
    if a.token_type != b.token_type or len(a.match) != len(b.match):
        return False
    both = typed(a.match) | typed(b.match)
    if a.model == b.model and len(both) > len(a.match) and any(
            c.token_type == a.token_type and c.model == a.model and typed(c.match) == both for c in rules):
        return False
    da, db = dict(a.match), dict(b.match)
    if any(k in db and (type(db[k]) is not type(v) or db[k] != v) for k, v in da.items()):
        return False
    if a.model is None or b.model is None:
        return a.model is None and b.model is None
    pattern_a, pattern_b = (any(c in m for c in "*?[") for m in (a.model, b.model))
    if pattern_a != pattern_b:
        return False
    if not pattern_a:
        return a.model == b.model
    (pa, sa), (pb, sb) = literal_ends(a.model), literal_ends(b.model)
    return (pa.startswith(pb) or pb.startswith(pa)) and (sa.endswith(sb) or sb.endswith(sa))


MODELS = st.sampled_from([None, "m", "n", "gpt-4o", "gpt-4o*", "gpt-4o-mini*", "gpt-*", "*-mini", "claude-*"])
DIMENSIONS = st.dictionaries(st.sampled_from(["region", "batch", "tier"]),
                             st.sampled_from(["eu", "us", 1, True, "1"]), max_size=3)
RULES = st.lists(st.tuples(st.sampled_from(["input", "output"]), MODELS, DIMENSIONS), max_size=40)


@settings(max_examples=300, deadline=None)
@given(RULES)
def test_the_indexed_check_finds_exactly_the_ties_of_the_pairwise_definition(specs):
    rules = [Rule(f"r{i}", t, price=Decimal(1), model=m, match=d) for i, (t, m, d) in enumerate(specs)]
    expected = [(i, j) for i in range(len(rules)) for j in range(i + 1, len(rules))
                if tie_by_definition(rules[i], rules[j], rules)]
    found = find_ties(rules, limit=10_000)
    assert found.pairs == expected
    assert not found.truncated


def test_the_pairwise_definition_agrees_with_globbing_on_the_documented_examples():
    # the conservative pattern test never calls two globs disjoint when a name matches both
    for a, b, name in (("gpt-4o*", "gpt-4o-mini*", "gpt-4o-mini-2024"), ("*-mini", "gpt-*", "gpt-mini")):
        assert fnmatchcase(name, a) and fnmatchcase(name, b)
        assert tie_by_definition(Rule("a", "input", price=Decimal(1), model=a),
                                 Rule("b", "input", price=Decimal(1), model=b))


@pytest.mark.parametrize("n", [3_000, 10_000])
def test_the_check_visits_each_rule_a_bounded_number_of_times(n):
    rules = parse_version(body(big_book(n))).rules  # valid: no ties
    check = find_ties(rules)
    assert check.pairs == []
    # every pair compared would be n(n-1)/2: 4.5 million for 3,000 rules, 50 million for 10,000
    assert check.work <= 4 * n, check.work
    print(f"\n{n} rules: {check.work} rule visits and pattern comparisons (pairwise: {n * (n - 1) // 2})")


def test_a_book_full_of_ties_lists_the_first_hundred_and_says_there_are_more():
    rules = [{"id": f"r{i}", "model": "m", "token_type": "input", "price": "1"} for i in range(5_000)]
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body(rules))
    assert len(info.value.fields) == 101
    assert info.value.fields[-1]["field"] == "rules" and "more than 100" in info.value.fields[-1]["message"]
    assert info.value.fields[0] == {"field": "rules[1]", "message": info.value.fields[0]["message"]}
    assert "'r0'" in info.value.fields[0]["message"]


# ----------------------------------------------------------------------------------- limits

def test_more_rules_than_the_limit_are_refused_at_once_naming_rules():
    rule = {"id": "r", "token_type": "input", "price": "1"}
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body([rule] * (MAX_RULES + 1)))  # all duplicates: refused before any is read
    assert info.value.fields == [{"field": "rules",
                                  "message": f"at most {MAX_RULES} rules per version (this one has 10001)"}]


def test_too_many_dimensions_or_tiers_in_a_rule_are_refused_naming_the_rule():
    dims = {f"d{i}": "x" for i in range(MAX_MATCH_DIMENSIONS + 1)}
    tiers = [{"up_to": i + 1, "price": "1"} for i in range(MAX_TIERS)] + [{"up_to": None, "price": "1"}]
    rules = [{"id": "ok", "token_type": "output", "price": "1"},
             {"id": "dims", "token_type": "input", "price": "1", "match": dims},
             {"id": "tiers", "token_type": "input", "model": "m", "tiers": tiers}]
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body(rules))
    assert fields_of(info.value) == {"rules[1].match", "rules[2].tiers"}
    # at the limits exactly, both are fine
    dims.popitem()
    tiers.pop(0)
    assert len(parse_version(body(rules)).rules) == 3


def test_too_many_sets_of_dimension_names_or_patterns_are_refused():
    name_sets = [{"id": f"r{i}", "token_type": "input", "price": "1", "match": {f"d{i}": "x"}, "model": f"m{i}"}
                 for i in range(MAX_DIMENSION_SETS + 1)]
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body(name_sets))
    assert fields_of(info.value) == {"rules"} and "sets of match dimension names" in str(info.value)
    patterns = [{"id": f"p{i}", "token_type": "input", "price": "1", "model": f"fam{i:04d}-*"}
                for i in range(MAX_PATTERNS + 1)]
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body(patterns))
    assert fields_of(info.value) == {"rules"} and "model patterns" in str(info.value)
    assert len(parse_version(body(patterns[:-1])).rules) == MAX_PATTERNS


def test_a_stored_version_is_read_back_without_the_limits_on_posting():
    rule = {"id": "r", "token_type": "input", "price": "1", "match": {f"d{i}": 1 for i in range(20)}}
    with pytest.raises(PriceBookValidationError):
        parse_version(body([rule]))
    assert parse_version(body([rule]), limits=False).rules[0].id == "r"


# ------------------------------------------------------------------------ plausibility bounds

def test_plausibility_bounds_are_optional_and_old_books_parse_unchanged():
    plain = version({"id": "in", "token_type": "input", "price": "1"})
    assert plain.max_charge_per_request is None and plain.context_window is None
    bounded = parse_version(body(
        [{"id": "a-in", "model": "a", "token_type": "input", "price": "1", "context_window": 128_000},
         {"id": "a-out", "model": "a", "token_type": "output", "price": "2"},
         {"id": "b-in", "model": "b", "token_type": "input", "price": "1", "context_window": 8_000}],
        max_charge_per_request="5.00", context_window=1_000_000))
    assert bounded.max_charge_per_request == Decimal("5.00")
    assert bounded.context_window_for(["a-in", "a-out"]) == 128_000
    assert bounded.context_window_for(["a-in", "b-in"]) == 8_000  # the tightest of the rules used
    assert bounded.context_window_for(["a-out", None]) == 1_000_000  # the version's
    assert plain.context_window_for(["in"]) is None


@pytest.mark.parametrize(("extra", "field"), [
    ({"max_charge_per_request": 5.0}, "max_charge_per_request"),
    ({"max_charge_per_request": "0"}, "max_charge_per_request"),
    ({"max_charge_per_request": "0.0000000001"}, "max_charge_per_request"),
    ({"max_charge_per_request": "-1"}, "max_charge_per_request"),
    ({"context_window": 0}, "context_window"),
    ({"context_window": True}, "context_window"),
    ({"context_window": "100"}, "context_window"),
])
def test_bad_plausibility_bounds_are_refused_naming_the_field(extra, field):
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body([{"id": "r", "token_type": "input", "price": "1"}], **extra))
    assert fields_of(info.value) == {field}


def test_a_rule_context_window_must_be_a_positive_integer():
    with pytest.raises(PriceBookValidationError) as info:
        parse_version(body([{"id": "r", "token_type": "input", "price": "1", "context_window": -5}]))
    assert fields_of(info.value) == {"rules[0].context_window"}


# ----------------------------------------------------------------- windows of hours

def minutes_of(hours: tuple[int, int]) -> set[int]:
    start, end = hours
    return {m for m in range(24 * 60) if (start <= m < end if start < end else m >= start or m < end)}


def window_tie_by_definition(a: Rule, b: Rule, rules) -> bool:
    """The rule with hours counted as a dimension: two windows meet when they share a minute;
    two rules of one model, type and match with different windows are window_errors' to name."""
    if a.token_type != b.token_type or len(a.keyed_match) != len(b.keyed_match):
        return False
    both = typed(a.keyed_match) | typed(b.keyed_match)
    if a.model == b.model and len(both) > len(a.keyed_match) and any(
            c.token_type == a.token_type and c.model == a.model and typed(c.keyed_match) == both for c in rules):
        return False
    if a.hours is not None and b.hours is not None:
        if not minutes_of(a.hours) & minutes_of(b.hours):
            return False
        if a.model == b.model and a.match == b.match and a.hours != b.hours:
            return False
    da, db = dict(a.match), dict(b.match)
    if any(k in db and (type(db[k]) is not type(v) or db[k] != v) for k, v in da.items()):
        return False
    return a.model == b.model


WINDOWS = st.sampled_from([None, None, (60, 120), (100, 200), (1380, 60), (1439, 0), (0, 30), (1200, 0)])
WINDOWED = st.lists(st.tuples(st.sampled_from(["m", "n"]), DIMENSIONS, WINDOWS), max_size=30)


@settings(max_examples=300, deadline=None)
@given(WINDOWED)
def test_windows_of_hours_tie_exactly_where_they_share_a_minute(specs):
    rules = [Rule(f"r{i}", "input", price=Decimal(1), model=m, match=d, hours=h)
             for i, (m, d, h) in enumerate(specs)]
    expected = [(i, j) for i in range(len(rules)) for j in range(i + 1, len(rules))
                if window_tie_by_definition(rules[i], rules[j], rules)]
    assert find_ties(rules, limit=10_000).pairs == expected


def test_a_window_for_each_minute_of_the_day_is_checked_without_comparing_every_pair():
    def hhmm(m: int) -> str:
        return f"{m // 60 % 24:02d}:{m % 60:02d}"

    def minute_rules(match: dict[str, str]) -> list[dict[str, Any]]:
        return [{"id": f"{next(iter(match.values()))}{m}", "model": "m", "token_type": "input", "price": "1",
                 "match": match, "hours": {"from": hhmm(m), "to": hhmm(m + 1)}} for m in range(24 * 60)]

    # 1,440 one-minute windows for flex calls of one model and type: none overlaps another
    flex = parse_version(body(minute_rules({"tier": "flex"}), format=2))  # was ~4 s: every pair compared twice
    check = find_ties(flex.rules)
    assert check.pairs == [] and check.work <= 4 * len(flex.rules), check.work
    # and 1,440 more for EU calls: a flex call from the EU matches two rules at each minute
    both = (*flex.rules, *(parse_rule(r) for r in minute_rules({"region": "eu"})))
    ties = find_ties(both, limit=10_000)
    assert ties.pairs == [(m, 24 * 60 + m) for m in range(24 * 60)]
    assert ties.work <= 8 * len(both), ties.work


def test_a_rule_id_or_model_past_200_characters_is_refused_but_loads_when_stored():
    rules = [{"id": "x" * 201, "token_type": "input", "price": "1"},
             {"id": "ok", "model": "m" * 201, "token_type": "input", "price": "1"},
             {"id": "y" * 200, "model": "m" * 200, "token_type": "output", "price": "1"}]
    with pytest.raises(PriceBookValidationError) as refused:
        parse_version(body(rules))
    assert fields_of(refused.value) == {"rules[0].id", "rules[1].model"}
    assert len(parse_version(body(rules), limits=False).rules) == 3  # versions stored before the limit


def _tiers_by_geographies(tiers: int, geographies: int, model: str = "m") -> list[dict[str, Any]]:
    """Output priced at each service tier, each geography and each pair of them, for one model."""
    rules: list[dict[str, Any]] = [{"id": f"{model}-in", "model": model, "token_type": "input", "price": "1"},
                                   {"id": f"{model}-out", "model": model, "token_type": "output", "price": "2"}]
    for t in range(tiers):
        rules.append({"id": f"{model}-t{t}", "model": model, "token_type": "output", "price": str(3 + t),
                      "match": {"service_tier": f"t{t}"}})
        rules += [{"id": f"{model}-t{t}-g{g}", "model": model, "token_type": "output", "price": str(100 + t + g),
                   "match": {"service_tier": f"t{t}", "inference_geo": f"g{g}"}} for g in range(geographies)]
    rules += [{"id": f"{model}-g{g}", "model": model, "token_type": "output", "price": str(50 + g),
               "match": {"inference_geo": f"g{g}"}} for g in range(geographies)]
    return rules


def test_the_tier_and_geography_combinations_a_hold_prices_are_bounded():
    """A call's hold (and the free check) prices every combination of the service_tier and
    inference_geo values the version's rules for its model match, the call's own values
    included (pricing.estimate.reportable_variants): (1 + tiers) x (1 + geographies) estimates per
    reserve. 10 tiers x 30 geographies were (1 + 10) x (1 + 30) = 341 estimates each reserve
    (where one value at a time was 1 + 10 + 30 = 41): at most 64 now, refused when posted
    (`rules`), a stored version still loads. 7 x 7: (1 + 7) x (1 + 7) = 64, taken; 7 x 8 = 8 x 9 =
    72, refused. Another model's values do not count towards this one's; a rule for every model
    (no model, or a pattern) counts towards each."""
    from datetime import UTC, datetime

    from pricing.estimate import reportable_variants
    with pytest.raises(PriceBookValidationError) as refused:
        parse_version(body(_tiers_by_geographies(10, 30), format=2))
    assert fields_of(refused.value) == {"rules"}
    assert "341" in str(refused.value)
    assert len(parse_version(body(_tiers_by_geographies(10, 30), format=2), limits=False).rules) == 342
    with pytest.raises(PriceBookValidationError):
        parse_version(body(_tiers_by_geographies(7, 8), format=2))
    taken = parse_version(body([*_tiers_by_geographies(7, 7), *_tiers_by_geographies(7, 7, "n")], format=2))
    at = datetime(2026, 3, 1, tzinfo=UTC)
    assert len(reportable_variants(taken, "m", {}, at)) == 64
    shared = {"id": "all-g7", "token_type": "input", "price": "9", "match": {"inference_geo": "g7"}}
    with pytest.raises(PriceBookValidationError):  # g7 for every model: 8 x 9 = 72 for m
        parse_version(body([*_tiers_by_geographies(7, 7), shared], format=2))
