"""What `tokentill prices import` posts, decided before any write: everything for a new book,
nothing for unchanged prices, one version from the given time for changed ones."""
from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

pytest.importorskip("genai_prices")

from pricing.genai import provider_books
from wallets.books import StoredVersion
from wallets.price_import import plan_versions

NOW = datetime(2026, 12, 2, 12, tzinfo=UTC)


def stored(versions):
    return [StoredVersion("genai-openai", "USD", at.isoformat(), at, copy.deepcopy(rules), NOW)
            for at, rules in versions]


@pytest.fixture(scope="module")
def plan():
    (book,) = provider_books("openai", "gpt-4o", taken_on="2026-12-02")
    return book


def test_a_new_book_gets_every_dated_version_of_the_snapshot(plan):
    versions, conflicts = plan_versions(plan, [], NOW)
    assert versions == plan.versions and conflicts == []
    assert all(r["model"] in plan.names["gpt-4o"] and r["source_date"] for _, rules in versions for r in rules)


def test_the_same_prices_imported_again_post_nothing_even_with_newer_source_dates(plan):
    later = provider_books("openai", "gpt-4o", taken_on="2027-01-15")[0]
    assert plan_versions(later, stored(plan.versions), NOW) == ([], [])


def test_changed_prices_post_one_version_from_the_given_time_and_keep_other_models_rules(plan):
    mine = {"id": "mine-in", "model": "mine", "token_type": "input", "price": "1"}
    book = stored([(at, [*rules, mine]) for at, rules in plan.versions])
    changed = copy.deepcopy(plan)
    for _, rules in changed.versions:
        for rule in rules:
            if rule["token_type"] == "input" and "match" not in rule:
                rule["price"] = "9.99"
    versions, conflicts = plan_versions(changed, book, NOW)
    assert conflicts == [] and [at for at, _ in versions] == [NOW]
    (rules,) = [r for _, r in versions]
    assert mine in rules
    assert [r["price"] for r in rules if r["token_type"] == "input" and r.get("model") == "gpt-4o"
            and "match" not in r] == ["9.99"]


def test_a_stored_version_at_that_very_time_with_other_prices_is_a_conflict_and_nothing_is_posted(plan):
    book = stored([*plan.versions, (NOW, [{"id": "x", "model": "gpt-4o", "token_type": "input", "price": "1"}])])
    versions, conflicts = plan_versions(plan, book, NOW)
    assert versions == [] and len(conflicts) == 1


def test_a_later_stored_version_that_would_bring_the_old_prices_back_is_a_conflict_not_a_silent_revert(plan):
    # an earlier import scheduled the snapshot's prices from next month; the new data changes
    # gpt-4o's input price from now on: the stored version of next month would restore the old
    # price then, so the import must say so rather than post a change that lasts a month
    next_month = datetime(2027, 1, 1, tzinfo=UTC)
    book = stored([*plan.versions, (next_month, plan.versions[-1][1])])
    changed = copy.deepcopy(plan)
    for _, rules in changed.versions:
        for rule in rules:
            if rule["token_type"] == "input" and "match" not in rule:
                rule["price"] = "9.99"
    versions, conflicts = plan_versions(changed, book, NOW)
    assert versions == [] and conflicts == ["a stored version takes effect at 2027-01-01T00:00:00Z "
                                            "with other prices"]
    # unchanged data still posts nothing and reports nothing
    assert plan_versions(plan, book, NOW) == ([], [])
