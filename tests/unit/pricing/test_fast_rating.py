"""The fast path of rating gives the very Rating of the general path: the same lines, amounts
with the same exponents (they are stored as text), the same exact total and rounded units."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.estimate import estimate_upper_bound
from pricing.parse import parse_version
from pricing.rating import rate
from pricing.units import TOKEN_TYPES
from pricing.usage import Usage

PRICES = st.decimals(min_value=Decimal(0), max_value=Decimal(1000), places=6).map(lambda d: format(d.normalize(), "f"))
TYPES = ["input", "cached_input", "cache_write", "cache_write_1h", "output", "reasoning", "input_audio",
         "output_audio", "web_search", "request"]


@st.composite
def books(draw):
    rules = []
    for i, token_type in enumerate(draw(st.lists(st.sampled_from(TYPES), min_size=1, max_size=6, unique=True))):
        rule = {"id": f"r{i}", "model": "m", "token_type": token_type, "price": draw(PRICES)}
        if token_type != "request" and draw(st.booleans()):
            rule["prompt_tiers"] = [{"above": draw(st.integers(0, 5_000)), "price": draw(PRICES)}]
        rules.append(rule)
        night, flex = draw(st.booleans()), draw(st.booleans())
        for suffix, extra in (("night", night), ("flex", flex), ("flex-night", night and flex)):
            if extra:  # a flex rule and an off-peak rule need one for both, which outranks them
                rules.append({"id": f"r{i}-{suffix}", "model": "m", "token_type": token_type, "price": draw(PRICES),
                              **({"hours": {"from": "22:00", "to": "06:00"}} if "night" in suffix else {}),
                              **({"match": {"service_tier": "flex"}} if "flex" in suffix else {}), "label": suffix})
    return parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                          "unpriced": draw(st.sampled_from(["zero", "error"])), "rules": rules})


USAGES = st.tuples(
    st.dictionaries(st.sampled_from(TYPES), st.integers(0, 10**9), max_size=len(TYPES)),
    st.integers(0, 24 * 60 - 1),
    st.sampled_from([{}, {"service_tier": "flex"}, {"service_tier": "priority", "feature": "chat"}]))


def as_text(rating):
    return ([(ln._replace(amount=str(ln.amount), unit_price=str(ln.unit_price))) for ln in rating.lines],
            str(rating.total), rating.total_units)


@settings(max_examples=400, deadline=None)
@given(books(), USAGES)
def test_the_fast_path_rates_exactly_as_the_general_path(version, shape):
    tokens, minute, dims = shape
    usage = Usage("m", tokens, datetime(2026, 5, 1, tzinfo=UTC) + timedelta(minutes=minute), dims)
    try:
        general = rate(usage, version, general=True)
    except Exception as exc:  # an unpriced usage: the fast path must refuse it the same way
        try:
            rate(usage, version)
        except type(exc):
            return
        raise AssertionError("the fast path priced what the general path refused") from exc
    fast = rate(usage, version)
    assert as_text(fast) == as_text(general)
    assert fast == general


def test_both_paths_take_the_prompt_tier_only_past_its_threshold():
    version = parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "format": 2,
                             "rules": [{"id": "in", "model": "m", "token_type": "input", "price": "1",
                                        "prompt_tiers": [{"above": 1000, "price": "2"}]}]})
    at = datetime(2026, 5, 1, tzinfo=UTC)
    for prompt, units in ((999, 999_000), (1000, 1_000_000), (1001, 2_002_000)):  # $1 or $2 per 1M tokens
        usage = Usage("m", {"input": prompt - 1, "cached_input": 1}, at)  # cached tokens count toward the prompt
        assert rate(usage, version).total_units == rate(usage, version, general=True).total_units == units


FORMAT_1_TYPES = ["input", "cached_input", "cache_write", "output", "reasoning", "audio", "image", "request"]
FOLDED = ["cache_write_1h", "input_audio", "cached_input_audio", "output_audio", "input_image", "cached_input_image",
          "output_image", "web_search", "tool"]
FINE_PRICES = st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=12).map(
    lambda d: format(d.normalize(), "f"))  # down to 10**-12 per million tokens: amounts past the atomic unit


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FORMAT_1_TYPES), min_size=1, max_size=6, unique=True), st.data(),
       st.dictionaries(st.sampled_from(FORMAT_1_TYPES + FOLDED), st.integers(0, 10**9), max_size=8))
def test_a_format_1_book_rates_folded_types_alike_on_both_paths(types, data, tokens):
    """A format 1 book folds format 2 types into its own (audio input as input, a one-hour cache
    write as cache_write, ...), which may put them out of order; both paths give one Rating."""
    rules = [{"id": f"r{i}", "model": "m", "token_type": t, "price": data.draw(FINE_PRICES)}
             for i, t in enumerate(types)]
    version = parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                             "rules": rules})
    usage = Usage("m", tokens, datetime(2026, 5, 1, tzinfo=UTC))
    try:
        general = rate(usage, version, general=True)
    except Exception as exc:
        try:
            rate(usage, version)
        except type(exc):
            return
        raise AssertionError("the fast path priced what the general path refused") from exc
    fast = rate(usage, version)
    assert as_text(fast) == as_text(general)
    assert [ln.token_type for ln in fast.lines] == sorted((ln.token_type for ln in fast.lines), key=TOKEN_TYPES.index)



def test_a_true_dimension_is_not_rated_by_a_rule_matching_1_whichever_came_first():
    """Rules match dimension values by type as well (`true` is not `1`), but the compiled plans
    were kept per (model, dimensions) where Python's True == 1 (and hash alike): a call with
    plan=true after one with plan=1 took the plan=1 rule, $1 per 1M, where the book's rule for
    any plan is $4 (and the other way round, plan=1 after plan=true paid $4)."""
    for order in ((1, True), (True, 1), (0, False), (False, 0)):
        version = parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
            {"id": "one", "model": "m", "token_type": "input", "price": "1", "match": {"plan": 1}},
            {"id": "zero", "model": "m", "token_type": "input", "price": "2", "match": {"plan": 0}},
            {"id": "any", "model": "m", "token_type": "input", "price": "4"}]})
        for plan in order:  # (a dict keyed by these would fold True into 1 too)
            expected = ("any", "4.00") if type(plan) is bool else ("one", "1.00") if plan else ("zero", "2.00")
            usage = Usage("m", {"input": 1_000_000}, datetime(2026, 5, 1, tzinfo=UTC), {"plan": plan})
            [line] = rate(usage, version).lines
            assert (line.rule_id, f"{line.amount:.2f}") == expected, (order, plan)
            hold = estimate_upper_bound(version, "m", 1_000_000, 0, {"plan": plan}, datetime(2026, 5, 1, tzinfo=UTC))
            assert [(x.rule_id, f"{x.amount:.2f}") for x in hold.lines] == [expected], (order, plan)  # a reserve's
