"""The journal's filters and pages against a reference model, over random workloads (Hypothesis).

Each example posts entries of two customers and of none, at random times (ties included), kinds
and request ids, then lists them with random filters (customer, account, kind, request id, time
range, a key's visible customers) and a random page size: the pages, joined, are exactly the
entries the reference filter keeps, in (occurred_at, id) order, with the postings they were
posted with.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.accounts import open_account
from ledger.journal import JournalFilter, current_snapshot, journal_page
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries
from ledger.statements import find_account

BASE = datetime(2032, 6, 1, tzinfo=UTC)
KINDS = ("topup", "reserve", "settle")
REQUESTS = ("r0", "r1")

drawn_entries = st.lists(st.tuples(
    st.sampled_from([0, 1, None]),  # customer 0, 1, or none
    st.integers(0, 20),  # seconds after BASE
    st.sampled_from(KINDS),
    st.sampled_from([*REQUESTS, None]),
    st.integers(1, 10**9),
), min_size=0, max_size=25)
maybe_instant = st.none() | st.integers(-1, 21).map(lambda s: BASE + timedelta(seconds=s))
filters = st.fixed_dictionaries({
    "scope": st.sampled_from(["both", "c0", "platform"]),  # what a key may see, or the example's platform account
    "customer": st.sampled_from([None, 0, 1]),
    "account": st.sampled_from([None, "own0", "platform"]),
    "kind": st.sampled_from([None, *KINDS]),
    "request_id": st.sampled_from([None, *REQUESTS]),
    "start": maybe_instant,
    "end": maybe_instant,
})


async def _post(db, tag: str, drawn) -> tuple[list[str], dict[str, str], list[tuple[int, JournalEntry]]]:
    customers = [f"jp-{tag}-0", f"jp-{tag}-1"]
    codes = {"own0": f"liability:customer:{customers[0]}:jp", "own1": f"liability:customer:{customers[1]}:jp",
             "platform": f"asset:platform:jp:{tag}", "equity": f"equity:jp:{tag}"}

    async def accounts(conn):
        await open_account(conn, AccountSpec(codes["platform"], AccountType.ASSET, "USD", stripes=4))
        await open_account(conn, AccountSpec(codes["equity"], AccountType.EQUITY, "USD"))
        for n, c in enumerate(customers):
            await open_account(conn, AccountSpec(codes[f"own{n}"], AccountType.LIABILITY, "USD", c))

    await db.run(accounts)
    journal = []
    for n, (who, second, kind, request_id, amount) in enumerate(drawn):
        other = codes["equity"] if who is None else codes[f"own{who}"]
        journal.append(JournalEntry(
            f"jp:{tag}:{n}", kind, (Posting(codes["platform"], amount, "USD"), Posting(other, -amount, "USD")),
            None if who is None else customers[who], BASE + timedelta(seconds=second),
            {"request_id": request_id} if request_id else {}))
    posted = await db.run(lambda conn: post_entries(conn, journal)) if journal else []
    return customers, codes, [(r.entry_id, e) for r, e in zip(posted, journal, strict=True)]


def _reference(entries, f: JournalFilter, account_code: str | None) -> list[int]:
    kept = [(e.occurred_at, i) for i, e in entries
            if (f.customer is None or e.customer_id == f.customer)
            and (f.visible is None or e.customer_id in f.visible)
            and (account_code is None or any(p.account == account_code for p in e.postings))
            and (f.kind is None or e.kind == f.kind)
            and (f.request_id is None or e.metadata.get("request_id") == f.request_id)
            and (f.start is None or e.occurred_at >= f.start) and (f.end is None or e.occurred_at < f.end)]
    return [i for _, i in sorted(kept)]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(drawn=drawn_entries, chosen=filters, limit=st.integers(1, 7))
def test_pages_of_any_filter_are_exactly_the_reference_listing_in_time_order(loop_db, drawn, chosen, limit):
    loop, db = loop_db
    customers, codes, entries = loop.run_until_complete(_post(db, uuid.uuid4().hex[:10], drawn))
    scope = chosen["scope"]
    account_key = chosen["account"] or ("platform" if scope == "platform" else None)
    account_code = codes[account_key] if account_key else None

    async def listing(conn):
        account = await find_account(conn, account_code) if account_code else None
        f = JournalFilter(
            chosen["start"], chosen["end"],
            None if chosen["customer"] is None else customers[chosen["customer"]],
            account.id if account else None, account.customer_id if account else None,
            chosen["kind"], chosen["request_id"],
            {"both": tuple(customers), "c0": (customers[0],), "platform": None}[scope])
        snapshot, pages, after = await current_snapshot(conn), [], None
        while True:
            page = await journal_page(conn, f, snapshot, after, limit)
            assert len(page) <= limit
            pages.append(page)
            if len(page) < limit:
                return f, [e for p in pages for e in p]
            after = (page[-1].occurred_at, page[-1].id)

    f, listed = loop.run_until_complete(db.read(listing))
    assert [e.id for e in listed] == _reference(entries, f, account_code)
    by_id = dict(entries)
    for record in listed:
        posted = by_id[record.id]
        assert (record.kind, record.customer_id, record.occurred_at, record.metadata) == (
            posted.kind, posted.customer_id, posted.occurred_at, dict(posted.metadata))
        assert sorted((p.account, p.amount) for p in record.postings) == sorted(
            (p.account, p.amount) for p in posted.postings)
        assert record.seal.status in ("pending", "sealed")
