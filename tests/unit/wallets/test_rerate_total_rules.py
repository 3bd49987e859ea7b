"""A re-rate's customer totals over plain values: its old and new amounts are what its corrected
charges (and true-ups) stood at before and after, every (model, token type) row counted, so new -
old is its delta; its lines are the rows that changed, their deltas adding up to it."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from wallets.core.rerating import Correction, type_rows
from wallets.rerating import _customer_view

KEYS = [("model-a", "input"), ("model-a", "output"), ("model-a", "request"), ("model-a", "free_allowance")]
AMOUNTS = st.integers(-(10**12), 10**12)
LINES = st.dictionaries(st.sampled_from(KEYS), AMOUNTS, max_size=4)
CORRECTIONS = st.lists(st.builds(lambda old, new: Correction(None, old, new), LINES, LINES), min_size=1, max_size=5)
FIXES = st.lists(
    st.builds(
        lambda m, o, n: SimpleNamespace(model=m, old=o, new=n),
        st.sampled_from(["model-a", "model-b"]),
        AMOUNTS,
        AMOUNTS,
    ),
    max_size=3,
)


def test_a_row_left_as_it_was_is_counted_in_the_totals_not_listed() -> None:
    # by hand, the prober's charges in atomic units ($1 = 10^9): input 0.009 + 0.009 -> 0.005 + 0.005,
    # the allowance -0.005 on the first both times: 0.013 -> 0.005, delta -0.008, the input line alone listed
    found = [
        Correction(
            None,
            {("model-a", "input"): 9_000_000, ("model-a", "free_allowance"): -5_000_000},
            {("model-a", "input"): 5_000_000, ("model-a", "free_allowance"): -5_000_000},
        ),
        Correction(None, {("model-a", "input"): 9_000_000}, {("model-a", "input"): 5_000_000}),
    ]
    view = _customer_view("c", 2, type_rows(found, every=True), "USD")
    assert (view["old_amount"], view["new_amount"], view["delta"]) == ("0.013", "0.005", "-0.008")
    assert view["lines"] == [
        {"model": "model-a", "token_type": "input", "old_amount": "0.018", "new_amount": "0.01", "delta": "-0.008"}
    ]


@settings(max_examples=300, deadline=None)
@given(CORRECTIONS, FIXES)
def test_a_customer_s_new_less_old_is_its_delta_and_its_lines_add_up_to_it(found, fixes) -> None:
    view = _customer_view("c", len(found), type_rows(found, fixes, every=True), "USD")
    old, new, delta = (Decimal(view[k]) for k in ("old_amount", "new_amount", "delta"))
    scale = Decimal(10) ** -9
    assert old == (sum(x.old_amount for x in found) + sum(f.old for f in fixes)) * scale
    assert new == (sum(x.new_amount for x in found) + sum(f.new for f in fixes)) * scale
    assert new - old == delta and view["delta_units"] * scale == delta
    assert sum(Decimal(ln["delta"]) for ln in view["lines"]) == delta
    assert all(Decimal(ln["delta"]) != 0 for ln in view["lines"])
    # the lines are the changed rows, as the charges' own rows say
    assert [(ln["model"], ln["token_type"]) for ln in view["lines"]] == [
        (r["model"], r["token_type"]) for r in type_rows(found, fixes)
    ]
