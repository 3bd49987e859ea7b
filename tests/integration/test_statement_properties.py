"""Acceptance 2 of issue 13, as properties over random workloads posted to PostgreSQL:

- a statement's opening balance plus its postings is its closing balance, the opening is the
  balance at `from` and the closing the balance at `to`, and its pages are one listing;
- the balance of every account at random instants (entry times themselves included, where the
  half-open rule bites), alone and in the trial balance, equals a reference model: the sum of
  the postings of entries that occurred before the instant.

Entries go in out of time order, in random transaction groups, on customer accounts and on
striped platform accounts (read as a whole).
"""
from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.accounts import open_account
from ledger.journal import current_snapshot
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries
from ledger.statements import balance_at, find_account, statement_page, trial_balance_at

BASE = datetime(2031, 3, 1, tzinfo=UTC)
CUSTOMER_ACCOUNTS = 2  # indexes 0, 1: the customer's; 2, 3: platform accounts (striped)
AMOUNT = st.integers(-10**12, 10**12).filter(bool)

entries = st.lists(st.tuples(
    st.booleans(),  # the customer's entry (any account) or the platform's (platform accounts only)
    st.integers(0, 50),  # occurred_at, in seconds after BASE: ties are common
    st.lists(st.tuples(st.integers(0, 3), AMOUNT), min_size=1, max_size=3),
    st.integers(0, 3),  # the account that balances the entry
), min_size=1, max_size=20)
instant = st.integers(-1, 52).map(lambda s: BASE + timedelta(seconds=s))


def _codes(tag: str) -> tuple[str, list[str]]:
    customer = f"sp-{tag}"
    return customer, [f"liability:customer:{customer}:lot:{tag}", f"asset:customer:{customer}:receivable:{tag}",
                      f"income:platform:sp:{tag}", f"asset:platform:sp:{tag}"]


async def _open(db, customer: str, codes: list[str]) -> None:
    async def work(conn):
        types = [AccountType.LIABILITY, AccountType.ASSET, AccountType.INCOME, AccountType.ASSET]
        for i, (code, type_) in enumerate(zip(codes, types, strict=True)):
            await open_account(conn, AccountSpec(code, type_, "USD", customer if i < CUSTOMER_ACCOUNTS else None,
                                                 stripes=1 if i < CUSTOMER_ACCOUNTS else 4 + 4 * i))
    await db.run(work)


def _journal(tag: str, customer: str, codes: list[str], drawn) -> list[JournalEntry]:
    made = []
    for n, (own, second, legs, balancer) in enumerate(drawn):
        pick = (lambda i: codes[i]) if own else (lambda i: codes[CUSTOMER_ACCOUNTS + i % 2])
        postings = [Posting(pick(i), amount, "USD") for i, amount in legs]
        residual = -sum(amount for _, amount in legs)
        if residual:
            postings.append(Posting(pick(balancer), residual, "USD"))
        if len(postings) < 2:  # the legs cancelled out: add a pair that does too
            postings += [Posting(pick(balancer), 1, "USD"), Posting(pick(balancer), -1, "USD")]
        made.append(JournalEntry(f"sp:{tag}:{n}", "test", tuple(postings), customer if own else None,
                                 BASE + timedelta(seconds=second)))
    return made


def _before(journal: list[JournalEntry], code: str, at: datetime | None) -> tuple[int, int]:
    """The reference model: (debits, credits) of `code` over the entries that occurred before `at`."""
    amounts = [p.amount for e in journal if at is None or e.occurred_at < at for p in e.postings if p.account == code]
    return sum(a for a in amounts if a > 0), -sum(a for a in amounts if a < 0)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(drawn=entries, groups=st.lists(st.integers(1, 5), min_size=1, max_size=20),
       instants=st.lists(instant, min_size=1, max_size=6), ranges=st.lists(
           st.tuples(st.none() | instant, st.none() | instant), min_size=1, max_size=3))
def test_statements_and_balances_at_instants_follow_the_reference_model(loop_db, drawn, groups, instants, ranges):
    loop, db = loop_db
    tag = uuid.uuid4().hex[:10]
    customer, codes = _codes(tag)
    journal = _journal(tag, customer, codes, drawn)
    loop.run_until_complete(_open(db, customer, codes))
    ids: dict[str, int] = {}
    rest, sizes = list(journal), iter(groups * len(journal))
    while rest:  # random transaction groups, in order of keys, not of time
        size = next(sizes)
        group, rest = rest[:size], rest[size:]
        posted = loop.run_until_complete(db.run(lambda conn, g=group: post_entries(conn, g)))
        ids.update({r.key: r.entry_id for r in posted})

    async def check(conn):
        tb_codes = set(codes)
        for at in instants:
            tb = {line.account: (line.debits, line.credits) for line in (await trial_balance_at(conn, at)).lines
                  if line.account in tb_codes}
            for code in codes:
                expected = _before(journal, code, at)
                assert await balance_at(conn, await find_account(conn, code), at) == expected, (code, at)
                assert tb.get(code, (0, 0)) == expected, (code, at)
        snapshot = await current_snapshot(conn)
        for start, end in ranges:
            if start is not None and end is not None and end < start:
                start, end = end, start
            for code in codes:
                await _check_statement(conn, journal, ids, code, start, end, snapshot)

    loop.run_until_complete(db.read(check))


async def _check_statement(conn, journal, ids, code, start, end, snapshot) -> None:
    account = await find_account(conn, code)
    whole = await statement_page(conn, account, start, end, snapshot, None, 1000)
    opening_d, opening_c = _before(journal, code, start) if start is not None else (0, 0)
    closing_d, closing_c = _before(journal, code, end)
    assert whole.opening == opening_d - opening_c
    assert whole.closing == closing_d - closing_c
    assert whole.opening + whole.debits - whole.credits == whole.closing
    keys = [(ln.occurred_at, ln.entry_id, ln.posting_id) for ln in whole.lines]
    assert keys == sorted(keys)
    running = whole.opening
    for ln in whole.lines:
        running += ln.amount
        assert ln.balance == running
    assert running == whole.closing
    in_range = Counter((ids[e.key], p.amount) for e in journal for p in e.postings if p.account == code
                       and (start is None or e.occurred_at >= start) and (end is None or e.occurred_at < end))
    assert Counter((ln.entry_id, ln.amount) for ln in whole.lines) == in_range
    paged, after = [], None
    while True:  # two lines a page: the same listing, the same running balances
        page = await statement_page(conn, account, start, end, snapshot, after, 2)
        assert (page.opening, page.closing) == (whole.opening, whole.closing)
        paged += page.lines
        if len(page.lines) < 2:
            break
        last = page.lines[-1]
        after = (last.occurred_at, last.entry_id, last.posting_id)
    assert paged == list(whole.lines)
