"""Pure rules of entry construction: balance per asset, integers only, stable request hashes."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import InvalidEntryError, UnbalancedEntryError
from ledger.model import MAX_POSTING, AccountSpec, AccountType, JournalEntry, Posting, residual_by_asset

ASSETS = st.sampled_from(["USD", "EUR", "TOKENS"])
ACCOUNTS = st.sampled_from([f"acct:{i}" for i in range(6)])
AMOUNTS = st.integers(min_value=1, max_value=10**15)
AT = datetime(2026, 11, 23, tzinfo=UTC)


@st.composite
def balanced_postings(draw) -> tuple[Posting, ...]:
    """Legs drawn freely, then one closing leg per asset: a balanced entry by construction."""
    legs = draw(st.lists(st.tuples(ACCOUNTS, AMOUNTS, ASSETS, st.booleans()),
                         min_size=1, max_size=8))
    postings = [Posting(acct, amount if debit else -amount, asset) for acct, amount, asset, debit in legs]
    for asset, total in residual_by_asset(postings).items():
        postings.append(Posting("acct:closing", -total, asset))
    if len(postings) < 2:
        postings.append(Posting("acct:x", 1, "USD"))
        postings.append(Posting("acct:y", -1, "USD"))
    return tuple(draw(st.permutations(postings)))


@given(balanced_postings())
def test_an_entry_whose_postings_sum_to_zero_per_asset_is_accepted(postings):
    entry = JournalEntry("k", "test", postings, occurred_at=AT)
    assert residual_by_asset(entry.postings) == {}
    for asset in {p.asset for p in postings}:
        assert sum(p.amount for p in postings if p.asset == asset) == 0


@given(balanced_postings(), st.integers(min_value=1, max_value=10**6))
def test_changing_any_one_amount_unbalances_the_entry(postings, delta):
    last = postings[-1]
    if last.amount + delta == 0:
        delta += 1
    changed = (*postings[:-1], Posting(last.account, last.amount + delta, last.asset))
    with pytest.raises(UnbalancedEntryError):
        JournalEntry("k", "test", changed, occurred_at=AT)


@given(balanced_postings())
def test_a_balanced_entry_in_one_asset_cannot_be_offset_by_another_asset(postings):
    skewed = (*postings, Posting("acct:a", 5, "USD"), Posting("acct:b", -5, "EUR"))
    with pytest.raises(UnbalancedEntryError) as err:
        JournalEntry("k", "test", skewed, occurred_at=AT)
    assert err.value.context["residual"] == {"USD": 5, "EUR": -5}


@given(balanced_postings())
def test_the_request_hash_depends_on_content_not_on_object_identity(postings):
    one = JournalEntry("k", "test", postings, occurred_at=AT)
    two = JournalEntry("k", "test", tuple(postings), occurred_at=AT)
    assert one.request_hash() == two.request_hash()
    other = JournalEntry("k", "other-kind", postings, occurred_at=AT)
    assert other.request_hash() != one.request_hash()


@pytest.mark.parametrize("amount", [1.5, 1.0, Decimal("1"), "1", True, 0, MAX_POSTING + 1, -(MAX_POSTING + 1)])
def test_postings_take_non_zero_integers_of_atomic_units_only(amount):
    with pytest.raises(InvalidEntryError):
        Posting("acct", amount, "USD")


def test_an_entry_needs_two_postings_a_key_and_an_aware_time():
    with pytest.raises(InvalidEntryError):
        JournalEntry("k", "t", (Posting("a", 1, "USD"),), occurred_at=AT)
    with pytest.raises(InvalidEntryError):
        JournalEntry("", "t", (Posting("a", 1, "USD"), Posting("b", -1, "USD")), occurred_at=AT)
    with pytest.raises(InvalidEntryError):
        JournalEntry("k", "t", (Posting("a", 1, "USD"), Posting("b", -1, "USD")),
                     occurred_at=datetime(2026, 1, 1))


def test_bounded_accounts_cannot_be_striped():
    with pytest.raises(InvalidEntryError):
        AccountSpec("x", AccountType.LIABILITY, "USD", lower_bound=0, stripes=4)
    assert AccountType.LIABILITY.normal_sign == -1 and AccountType.ASSET.normal_sign == 1
