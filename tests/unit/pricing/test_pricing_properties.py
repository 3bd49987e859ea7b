"""Property tests of rating: integers and Decimals only, never a float."""

from datetime import datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st
from pricing_testkit import AT, version, walk_values

from pricing.money import pricing_context
from pricing.overrides import Discount, FreeAllowance, Overrides
from pricing.parse import parse_version
from pricing.rating import Rating, Usage, rate
from pricing.units import TOKEN_TYPES

FLAT_TYPES = ("input", "cached_input", "output", "reasoning", "request")
prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=0, max_value=10**9)
token_maps = st.fixed_dictionaries({t: counts for t in FLAT_TYPES})


@st.composite
def flat_versions(draw):
    rules = [{"id": f"r-{t}", "model": "m", "token_type": t, "price": str(draw(prices))} for t in FLAT_TYPES]
    return version(*rules)


def combined(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {t: a[t] + b[t] for t in FLAT_TYPES}


@given(flat_versions(), token_maps, token_maps)
def test_with_flat_rules_rating_a_plus_b_equals_rating_a_plus_rating_b(built, a, b):
    together = rate(Usage("m", combined(a, b), AT), built)
    apart = [rate(Usage("m", a, AT), built), rate(Usage("m", b, AT), built)]
    assert together.total == apart[0].total + apart[1].total  # exact in Decimal
    # each entry rounds once (half a unit at most), so two entries differ from one by <= 1 unit
    assert abs(together.total_units - apart[0].total_units - apart[1].total_units) <= 1


@st.composite
def graduated_cases(draw):
    """Tiers, a period-to-date start and a quantity that crosses at least one boundary."""
    bounds = sorted(draw(st.sets(st.integers(min_value=1, max_value=10**7), min_size=1, max_size=5)))
    tier_prices = draw(st.lists(prices, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    start = draw(st.integers(min_value=0, max_value=bounds[-1] - 1))
    to_next = min(b for b in bounds if b > start) - start
    quantity = draw(st.integers(min_value=to_next + 1, max_value=to_next + 2 * 10**7))
    return bounds, tier_prices, start, quantity


def cumulative_cost(bounds: list[int], tier_prices: list[Decimal], n: int) -> Decimal:
    """Cost of the first n units, per 1M: each tier charges for the part of [0, n) it covers."""
    cost, lower = Decimal(0), 0
    for upper, price in zip([*bounds, None], tier_prices, strict=True):
        top = n if upper is None else min(n, upper)
        cost += max(0, top - lower) * price
        lower = upper if upper is not None else lower
    return cost / 1_000_000


@given(graduated_cases())
def test_graduated_tiers_are_exact_across_any_number_of_boundaries(case):
    bounds, tier_prices, start, quantity = case
    tiers = [{"up_to": b, "price": str(p)} for b, p in zip([*bounds, None], tier_prices, strict=True)]
    built = version({"id": "g", "model": "m", "token_type": "input", "tiers": tiers})
    rating = rate(Usage("m", {"input": quantity}, AT), built, period_to_date={"g": start})
    expected = cumulative_cost(bounds, tier_prices, start + quantity) - cumulative_cost(
        bounds, tier_prices, start
    )
    assert rating.total == expected
    assert sum(ln.quantity for ln in rating.lines) == quantity
    assert len(rating.lines) >= 2  # the boundary was crossed: one line per tier touched
    assert all(ln.amount == ln.quantity * ln.unit_price / 1_000_000 for ln in rating.lines)


def test_graduated_tiers_match_a_hand_computed_example():
    tiers = [{"up_to": 1000, "price": "3"}, {"up_to": 2000, "price": "2"}, {"up_to": None, "price": "1"}]
    built = version({"id": "g", "model": "m", "token_type": "input", "tiers": tiers})
    # units 501..3500: 500 at $3, 1000 at $2, 1500 at $1 = 1500 + 2000 + 1500 = 5000 per 1M
    rating = rate(Usage("m", {"input": 3000}, AT), built, period_to_date={"g": 500})
    assert rating.total == Decimal("0.005")


@st.composite
def usage_batches(draw):
    models = ["m", "n"]
    records = draw(
        st.lists(
            st.tuples(st.sampled_from(models), token_maps.map(lambda d: {k: v for k, v in d.items() if v})),
            min_size=1,
            max_size=5,
        )
    )
    return [Usage(model, tokens, AT) for model, tokens in records]


TIERED_BOOK = version(
    {
        "id": "in",
        "token_type": "input",
        "tiers": [{"up_to": 10**9, "price": "3"}, {"up_to": None, "price": "1"}],
    },
    {"id": "cached", "token_type": "cached_input", "price": "0.3"},
    {"id": "out", "token_type": "output", "price": "15.000001"},
    {"id": "think", "model": "n", "token_type": "reasoning", "price": "7.5"},
    {"id": "fee", "token_type": "request", "price": "0.000333"},
)
OVERRIDES = Overrides(
    discounts=(Discount("d", Decimal("12.5"), token_type="output"),),
    allowances=(FreeAllowance("free", Decimal("0.7")),),
)


@settings(max_examples=60)
@given(usage_batches(), st.randoms(use_true_random=False))
def test_the_result_never_depends_on_the_order_of_records_or_token_types(usages, rnd):
    shuffled = list(usages)
    rnd.shuffle(shuffled)
    reordered = []
    for usage in shuffled:
        items = list(usage.token_counts.items())
        rnd.shuffle(items)
        reordered.append(Usage(usage.model, dict(items), usage.occurred_at))
    ptd = {"in": 999_999_000}
    assert rate(usages, TIERED_BOOK, OVERRIDES, ptd) == rate(reordered, TIERED_BOOK, OVERRIDES, ptd)


@settings(max_examples=60)
@given(usage_batches(), st.integers(min_value=0, max_value=12))
def test_no_float_anywhere_and_lines_tie_out_to_the_total(usages, scale):
    rating = rate(usages, TIERED_BOOK, OVERRIDES, {"in": 999_999_000}, scale=scale)
    assert isinstance(rating, Rating)
    leaves = walk_values(rating)
    assert not any(isinstance(v, float) for v in leaves)
    assert {type(v) for v in leaves} <= {str, int, Decimal, type(None), datetime}
    for line in rating.lines:
        assert type(line.quantity) is int and type(line.amount_units) is int
        assert type(line.unit_price) is Decimal and type(line.amount) is Decimal
    assert sum(ln.amount_units for ln in rating.lines) == rating.total_units
    exact_units = rating.total.scaleb(scale)
    assert abs(rating.total_units - exact_units) <= Decimal("0.5")
    assert all(abs(ln.amount_units - ln.amount.scaleb(scale)) < 1 for ln in rating.lines)
    assert rating.total >= 0


ALL_TYPES = list(TOKEN_TYPES)
FINE = st.decimals(min_value=0, max_value=100, places=9, allow_nan=False, allow_infinity=False)


def _text(value: Decimal) -> str:
    return format(value.normalize(), "f")


@st.composite
def format_2_books(draw):
    """A format 2 book for model m: flat, prompt-tiered (dearer past the threshold) or graduated
    rules over any token types, per-hour units included."""
    rules = []
    for i, token_type in enumerate(draw(st.lists(st.sampled_from(ALL_TYPES), min_size=1, max_size=10, unique=True))):
        base, kind = draw(FINE), draw(st.sampled_from(["flat", "prompt", "tiers"]))
        rule = {"id": f"r{i}", "model": "m", "token_type": token_type}
        if kind == "tiers" and token_type != "request":
            rule["tiers"] = [{"up_to": draw(st.integers(1, 10**6)), "price": _text(base)},
                             {"up_to": None, "price": _text(draw(FINE))}]
        else:
            rule["price"] = _text(base)
            if kind == "prompt" and token_type != "request":
                rule["prompt_tiers"] = [{"above": draw(st.integers(0, 5000)), "price": _text(base + draw(FINE))}]
        rules.append(rule)
    return parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "unpriced": "zero", "rules": rules})


PAYS_ALL = Overrides(discounts=(Discount("d", Decimal("12.5")),), allowances=(FreeAllowance("f", Decimal(10**9)),))
ANY_OVERRIDES = st.sampled_from([
    None,
    Overrides(discounts=(Discount("d", Decimal("12.5")),)),
    Overrides(discounts=(Discount("d", Decimal("33")),), allowances=(FreeAllowance("f", Decimal("0.001")),)),
    PAYS_ALL,
])


@settings(max_examples=400, deadline=None)
@given(format_2_books(), st.dictionaries(st.sampled_from(ALL_TYPES), st.integers(0, 10**7), max_size=12),
       st.sampled_from(ALL_TYPES), st.integers(1, 10**6), st.integers(0, 10**7), ANY_OVERRIDES)
def test_for_random_books_rating_is_monotonic_never_negative_and_ties_out_exactly(
        built, tokens, more_of, more, so_far, overrides):
    """One more unit of anything never costs less; no total and no usage line is negative; the
    lines' units sum to the total's, and their exact amounts to the exact total, which is 0 when
    a free allowance pays the call whole."""
    ptd = {rule.id: so_far for rule in built.rules}
    more_tokens = {**tokens, more_of: tokens.get(more_of, 0) + more}
    fewer, bigger = (rate(Usage("m", t, AT), built, overrides, ptd) for t in (tokens, more_tokens))
    for rating in (fewer, bigger):
        assert rating.total >= 0 and rating.total_units >= 0
        assert overrides is not PAYS_ALL or rating.total == 0
        assert all(ln.amount >= 0 and ln.amount_units >= 0 for ln in rating.lines if ln.kind == "usage")
        assert sum(ln.amount_units for ln in rating.lines) == rating.total_units
        with pricing_context():  # exact: the global context keeps 28 digits
            assert sum((ln.amount for ln in rating.lines), Decimal(0)) == rating.total
    assert bigger.total >= fewer.total and bigger.total_units >= fewer.total_units
    if overrides is None:
        assert rate(Usage("m", tokens, AT), built, None, ptd, general=True) == fewer
