"""Migration 0029: a batch appends what it adds to each customer's billing period (rollup items,
usage counters) as a period delta, folded into `period_rollups` and `usage_counters` later. The
readers (invoice close, upcoming invoice, graduated tiers) are exact with none, some or all of
the deltas folded; the audit sees a delta tampered with; the database refuses nonsense deltas."""
from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest
from alembic import command
from billing_kit import BillingKit
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.audit import LEDGER_CHECKS, Report, seals_intact, verify
from ledger.lanes import lane_count, lane_of
from wallets import engine as engine_module
from wallets import jobs, store
from wallets.audit import WALLET_CHECKS

DEC_1_GRACE_OVER = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
TIERED = {"id": "tiered", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "g-in", "model": "model-g", "token_type": "input", "tier_mode": "graduated",
     "tiers": [{"up_to": 1_000_000, "price": "10"}, {"up_to": None, "price": "5"}]},
]}


async def _scalar(conn, sql: str, **params):
    return (await conn.execute(text(sql), params)).scalar()


async def fold(bk: BillingKit, cid: str) -> int:
    """Fold `cid`'s lane (its queued charges and period deltas); how many charges were folded."""
    return await bk.db.run(lambda conn: _scalar(conn, "SELECT wallets_fold_usage(ledger_lane(:c)::smallint)", c=cid))


async def count(bk: BillingKit, table: str, cid: str) -> int:
    return await bk.db.read(lambda conn: _scalar(conn, f"SELECT count(*) FROM {table} WHERE customer_id = :c", c=cid))


async def failed_checks(bk: BillingKit, *, seals: bool = True) -> dict[str, str]:
    """seals=False: every check but the seals', which reads seals.hash_version (migration 0042)."""
    async def run(conn) -> Report:
        if seals:
            return await verify(conn, WALLET_CHECKS)
        checks = [check for check in (*LEDGER_CHECKS, *WALLET_CHECKS) if check is not seals_intact]
        return Report(tuple([await check(conn) for check in checks]))
    report = await bk.db.read(run)
    return {c.name: c.detail for c in report.checks if not c.ok}


def figures(invoice: dict) -> dict:
    """An invoice's content without what names the document or its customer."""
    return {k: v for k, v in invoice.items()
            if k not in ("id", "number", "customer_id", "customer_name", "content_hash", "issued_at")}


async def seed_usage(bk: BillingKit, cid: str, *, fold_between: bool) -> None:
    """The seed example of the issue: three model-a events (1,000 in, 500 out), then two reserved
    model-b calls (2,000 in, 1,000 out), a top-up between; the events folded when `fold_between`."""
    for _ in range(3):
        await bk.event(cid, "model-a", 1000, 500)
    await bk.top_up(cid, "5.00")
    if fold_between:
        assert await fold(bk, cid) > 0
    for _ in range(2):
        rid = await bk.reserve(cid, "model-b", "1.00")
        await bk.settle(cid, rid, 2000, 1000)


async def apart(bk: BillingKit, names: list[str]) -> list[str]:
    """Customer ids starting with `names`, each in a lane of its own (a fold folds a whole lane)."""
    lanes = await bk.db.read(lane_count)
    ids: list[str] = []
    for name in names:
        n = 0
        while lane_of(f"{name}{n or ''}", lanes) in {lane_of(i, lanes) for i in ids}:
            n += 1
        ids.append(await bk.customer(f"{name}{n or ''}", billing_mode="postpaid"))
    return ids


async def test_the_invoice_is_the_same_with_the_deltas_folded_or_not(bk: BillingKit) -> None:
    """`partly` closes with the events folded and the reserved calls' deltas queued; `queued`
    with nothing folded; `folded` with everything folded. The upcoming invoice is the same before
    and after a fold, and the three invoices are the hand-calculated one."""
    partly, queued, folded = await apart(bk, ["partly", "queued", "folded"])
    for cid in (partly, queued, folded):
        await seed_usage(bk, cid, fold_between=cid == partly)
    assert await count(bk, "period_deltas", queued) == 8  # a batch each: 3 events, a top-up, 2 reserves, 2 settles
    assert await count(bk, "period_rollups", queued) == 0 and await count(bk, "usage_counters", queued) == 0
    assert await count(bk, "period_deltas", partly) == 4 and await count(bk, "period_rollups", partly) > 0
    assert await failed_checks(bk) == {}  # verify counts the unfolded deltas

    before = await bk.upcoming(folded)
    assert await fold(bk, folded) == 5  # its charges (and its 8 deltas)
    assert await count(bk, "period_deltas", folded) == 0
    assert await bk.upcoming(folded) == before
    assert await bk.upcoming(partly) == {**before, "customer_id": partly, "customer_name": partly}
    assert await bk.upcoming(queued) == {**before, "customer_id": queued, "customer_name": queued}
    twice = await bk.db.read(lambda conn: store.load_rollups(conn, [(queued, "2026-12"), (queued, "2026-11")]))
    assert twice == await bk.db.read(lambda conn: store.load_rollups(conn, [(queued, "2026-11")]))
    assert twice[queued]["2026-11"]["revenue"] == (0, 150_000_000)  # $0.15, counted once

    closed = await bk.close(DEC_1_GRACE_OVER)
    assert sorted(c.customer_id for c in closed) == sorted([partly, queued, folded])
    assert await count(bk, "period_deltas", queued) == 8  # closed with its deltas queued
    invoices = {cid: (await bk.invoices(cid))[0] for cid in (partly, queued, folded)}
    want = figures(invoices[folded])
    assert figures(invoices[partly]) == want and figures(invoices[queued]) == want
    # By hand (test_invoices' seed example): model-a 3,000 in $0.03, 1,500 out $0.03, 3 requests
    # $0.03; model-b 4,000 in $0.02, 2,000 out $0.02, 2 requests $0.02. Postpaid: model-a's $0.09
    # before the top-up goes to the account, model-b's $0.06 is paid from the $5.00 top-up.
    assert [(ln["model"], ln["token_type"], ln["quantity"], ln["amount"]) for ln in want["lines"]] == [
        ("model-a", "input", 3000, "0.03"), ("model-a", "output", 1500, "0.03"), ("model-a", "request", 3, "0.03"),
        ("model-b", "input", 4000, "0.02"), ("model-b", "output", 2000, "0.02"), ("model-b", "request", 2, "0.02")]
    assert want["total"] == "0.15" and want["top_ups"] == "5.00"
    assert want["credits_applied"]["paid"] == "0.06" and want["charged_to_account"] == "0.09"
    assert want["amount_due"] == "0.09"
    assert want["closing_balance"] == {"credits": "4.94", "reserved": "0.00", "receivable": "0.09"}
    assert await failed_checks(bk) == {}


async def test_a_graduated_tier_crossed_by_usage_partly_folded_and_partly_queued(bk: BillingKit) -> None:
    """600,000 units folded and 300,000 queued before a call of 300,000: its first 100,000 are
    priced in the first tier ($10/M) and the other 200,000 in the second ($5/M), as when nothing
    or everything was folded. Counting the folded units only would price all of it at $10/M."""
    await bk.add_book(TIERED)
    bk.clock.now = datetime(2026, 11, 2, 9, tzinfo=UTC)
    charged = {}
    for mode in ("partly", "queued", "folded"):
        cid = await bk.customer(f"tiers-{mode}", billing_mode="postpaid", book="tiered")
        await bk.event(cid, "model-g", 600_000, 0)  # $6.00
        if mode != "queued":
            await fold(bk, cid)
        await bk.event(cid, "model-g", 300_000, 0)  # $3.00
        if mode == "folded":
            await fold(bk, cid)
        elif mode == "partly":
            counters = await bk.db.read(lambda conn, c=cid: conn.execute(text(
                "SELECT quantity FROM usage_counters WHERE customer_id = :c"), {"c": c}))
            assert [int(q) for (q,) in counters] == [600_000]  # the rest is in a delta
        charged[mode] = (await bk.event(cid, "model-g", 300_000, 0)).charged
    assert charged == dict.fromkeys(("partly", "queued", "folded"), 2_000_000_000)  # $1.00 + $1.00
    for mode in ("partly", "queued", "folded"):
        rid = await bk.reserve(f"tiers-{mode}", "model-g", "10.00")  # a settle continues the tiers too
        assert (await bk.settle(f"tiers-{mode}", rid, 100_000, 0)).charged == 500_000_000  # 100,000 at $5/M
    await bk.close(DEC_1_GRACE_OVER)
    for mode in ("partly", "queued", "folded"):
        [invoice] = await bk.invoices(f"tiers-{mode}")
        assert [(ln["quantity"], ln["unit_price"], ln["tier"], ln["amount"]) for ln in invoice["lines"]] == [
            (1_000_000, "10", 0, "10.00"), (300_000, "5", 1, "1.50")]
    assert await failed_checks(bk) == {}


async def test_the_fold_job_folds_every_delta_when_traffic_stops(bk: BillingKit) -> None:
    """Six customers' usage, and a seventh's top-up alone, in a lane of its own: a lane with
    deltas and no charge queued is folded too."""
    *customers, topped = await apart(bk, [f"idle{n}" for n in range(7)])
    for n, cid in enumerate(customers):
        await bk.event(cid, "model-a", 1000 + n, 500)
        rid = await bk.reserve(cid, "model-b", "1.00")
        await bk.settle(cid, rid, 2000, 100 * n)
    await bk.top_up(topped, "3.00")
    customers.append(topped)
    queued = await bk.db.read(lambda conn: _scalar(conn, "SELECT count(*) FROM period_deltas"))
    assert queued == 3 * 6 + 1
    before = [await bk.upcoming(cid) for cid in customers]
    assert await jobs.fold_usage(bk.db) == 2 * 6  # the charges, and the deltas with them
    assert await bk.db.read(lambda conn: _scalar(conn, "SELECT count(*) FROM period_deltas")) == 0
    assert [await bk.upcoming(cid) for cid in customers] == before
    assert await jobs.fold_usage(bk.db) == 0  # nothing left
    assert await failed_checks(bk) == {}


@pytest.mark.parametrize("limit", ["FOLD_AFTER", "FOLD_CUSTOMER_AFTER"])
async def test_a_batch_folds_its_lane_once_enough_deltas_are_queued_there(bk: BillingKit, monkeypatch, limit):
    """Reserves write deltas and no charge: the deltas alone reach the engine's limits."""
    monkeypatch.setattr(engine_module, "FOLD_AFTER", 1000)
    monkeypatch.setattr(engine_module, "FOLD_CUSTOMER_AFTER", 1000)
    monkeypatch.setattr(engine_module, limit, 3)
    cid = await bk.customer("holding")
    await bk.top_up(cid, "5.00")
    await bk.reserve(cid, "model-a", "1.00")
    assert await count(bk, "period_deltas", cid) == 2
    before = await bk.upcoming(cid)
    await bk.reserve(cid, "model-a", "1.00")
    assert await count(bk, "period_deltas", cid) == 0
    assert await count(bk, "period_rollups", cid) > 0
    after = await bk.upcoming(cid)
    assert after["opening_balance"] == before["opening_balance"]
    assert (before["closing_balance"]["reserved"], after["closing_balance"]["reserved"]) == ("1.00", "2.00")
    assert await failed_checks(bk) == {}


DELTA = ("INSERT INTO period_deltas (lane, customer_id, period, items, quantities, amounts, books, rules, counts) "
         "VALUES (ledger_lane(:c), :c, :p, CAST(:items AS text[]), CAST(:q AS numeric[]), CAST(:a AS numeric[]), "
         "CAST(:books AS text[]), CAST(:rules AS text[]), CAST(:counts AS numeric[]))")


def delta(cid: str, period: str = "2026-11", items=(), q=(), a=(), books=(), rules=(), counts=()) -> dict:
    return {"c": cid, "p": period, "items": list(items), "q": list(q), "a": list(a), "books": list(books),
            "rules": list(rules), "counts": list(counts)}


async def test_verify_finds_a_delta_added_removed_or_naming_another_period(bk: BillingKit) -> None:
    cid = await bk.customer("tamper", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    rid = await bk.reserve(cid, "model-b", "1.00")
    await bk.settle(cid, rid, 2000, 1000)
    assert await failed_checks(bk) == {}

    async def tampered(sql: str, params: dict) -> dict[str, str]:
        """What verify finds with `sql` run, then undone."""
        async with bk.db.engine.connect() as conn:
            await conn.execute(text(sql), params)
            report = await verify(conn, WALLET_CHECKS)
            await conn.rollback()
        return {c.name: c.detail for c in report.checks if not c.ok}

    # revenue, and its line, that no entry posted
    found = await tampered(DELTA, delta(cid, items=["revenue", 'line:["2026-11","usage"]', "funded:receivable"],
                                        q=[0, 1, 0], a=[5, 5, 5]))
    assert list(found) == ["period_rollups"] and cid in found["period_rollups"]
    # units the charges did not rate
    found = await tampered(DELTA, delta(cid, books=["seed"], rules=["a-in"], counts=[7]))
    assert list(found) == ["usage_counters"] and "a-in" in found["usage_counters"]
    # a period none of the customer's entries is billed in (with items the postings do not check)
    found = await tampered(DELTA, delta(cid, "2026-07", items=["topups"], q=[0], a=[5]))
    assert list(found) == ["period_rollups"] and "2026-07" in found["period_rollups"]
    # a delta taken away unfolded: the settle's reserved, revenue, receivable and counters
    found = await tampered("DELETE FROM period_deltas WHERE customer_id = :c AND 'revenue' = ANY(items) "
                           "AND 'a-in' <> ALL(rules)", {"c": cid})
    assert sorted(found) == ["period_rollups", "usage_counters"], found
    assert await failed_checks(bk) == {}


async def test_a_delta_is_never_changed_and_the_table_never_truncated(bk: BillingKit) -> None:
    cid = await bk.customer("frozen", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    lane = await bk.db.read(lambda conn: _scalar(conn, "SELECT ledger_lane(:c)", c=cid))
    for sql in ("UPDATE period_deltas SET amounts = amounts WHERE customer_id = :c",
                "TRUNCATE period_deltas", f"TRUNCATE period_deltas_l{lane}"):
        with pytest.raises(DBAPIError, match="not allowed"):
            await bk.db.run(lambda conn, s=sql: conn.execute(text(s), {"c": cid}))
    assert await count(bk, "period_deltas", cid) == 1
    assert await failed_checks(bk) == {}


REVENUE = {"items": ["revenue"], "q": [0], "a": [1]}
COUNTED = {"books": ["seed"], "rules": ["a-in"], "counts": [1]}


@pytest.mark.parametrize(("case", "error"), [
    ({**REVENUE, "period": "2026-1"}, "period_deltas_period_label"),
    ({**REVENUE, "a": []}, "period_deltas_items_parallel"),
    ({**REVENUE, "q": [0, 0]}, "period_deltas_items_parallel"),
    ({**COUNTED, "rules": ["a-in", "a-out"]}, "period_deltas_counts_parallel"),
    ({**COUNTED, "counts": []}, "period_deltas_counts_parallel"),
    ({}, "period_deltas_not_empty"),
    ({**REVENUE, "items": [""]}, "wallets_rollup_item_check"),
    ({**REVENUE, "items": ["x" * 2001]}, "wallets_rollup_item_check"),
    ({**REVENUE, "items": [None]}, "wallets_rollup_item does not allow null"),
    ({**REVENUE, "a": [None]}, "wallets_units does not allow null"),
    ({**REVENUE, "a": [1.5]}, "wallets_units_check"),
    ({**REVENUE, "q": [-(10**30)]}, "wallets_units_check"),
    ({**COUNTED, "counts": [-(10**30)]}, "wallets_count_check"),  # down is fine (0036: a give-back), not this
    ({**COUNTED, "counts": [0.5]}, "wallets_count_check"),
    ({**COUNTED, "rules": [""]}, "wallets_counter_key_check"),
    ({**COUNTED, "books": [None]}, "wallets_counter_key does not allow null"),
])
async def test_the_database_refuses_a_nonsense_delta(bk: BillingKit, case: dict, error: str) -> None:
    cid = await bk.customer("nonsense", billing_mode="postpaid")
    with pytest.raises(DBAPIError, match=error):
        await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, **case)))
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, **REVENUE, **COUNTED)))  # the same, sane
    assert await count(bk, "period_deltas", cid) == 1


async def test_a_delta_names_an_existing_customer_in_its_own_lane(bk: BillingKit) -> None:
    cid = await bk.customer("laned", billing_mode="postpaid")
    good = delta(cid, items=["topups"], q=[0], a=[1])
    with pytest.raises(DBAPIError, match="period_deltas_lane_of_customer"):
        await bk.db.run(lambda conn: conn.execute(text(DELTA.replace("ledger_lane(:c)", "(ledger_lane(:c) + 1) % "
                                                                    "(SELECT lanes FROM ledger_settings)")), good))
    lane = await bk.db.read(lambda conn: _scalar(conn, "SELECT ledger_lane('nobody')"))
    for table in ("period_deltas", f"period_deltas_l{lane}"):  # checked per statement, by either name
        with pytest.raises(DBAPIError, match="no customer nobody") as refused:
            await bk.db.run(lambda conn, t=table: conn.execute(text(DELTA.replace("period_deltas", t)),
                                                               {**good, "c": "nobody"}))
        assert isinstance(refused.value.orig, psycopg.errors.ForeignKeyViolation)
    await bk.db.run(lambda conn: conn.execute(text(DELTA), good))
    assert await count(bk, "period_deltas", cid) == 1


async def test_the_downgrade_folds_the_pending_deltas(bk: BillingKit, migrating) -> None:
    cid = await bk.customer("down", billing_mode="postpaid")
    await seed_usage(bk, cid, fold_between=False)
    before = await bk.upcoming(cid)
    conn, config = migrating
    command.downgrade(config, "0028")
    conn.commit()
    assert conn.execute(text("SELECT to_regclass('period_deltas')")).scalar() is None
    rollups = conn.execute(text("SELECT count(*) FROM period_rollups WHERE customer_id = :c"),
                           {"c": cid}).scalar()
    assert rollups > 0
    assert await failed_checks(bk, seals=False) == {}  # at 0028: the rollups and counters alone
    command.upgrade(config, "head")
    conn.commit()
    assert await count(bk, "period_deltas", cid) == 0
    assert await bk.upcoming(cid) == before
    await bk.event(cid, "model-a", 1000, 500)  # written as a delta again
    assert await count(bk, "period_deltas", cid) == 1
    assert await failed_checks(bk) == {}


FREE = {"id": "free", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "f-in", "model": "model-f", "token_type": "input", "price": "0"},
    {"id": "f-out", "model": "model-f", "token_type": "output", "price": "0"},
]}
# a usage line of $5.00 and an allowance line taking it off: lines netting 0, as a free call's
ZERO_NET = ['line:["2026-07","usage","model-f","input","f-in","10",null,null,"2026-01-01T00:00:00Z"]',
            'line:["2026-07","free_allowance",null,null,null,"0",null,"fa","2026-01-01T00:00:00Z"]']


async def tampered_report(bk: BillingKit, *sqls: tuple[str, dict]) -> dict[str, tuple[str, ...]]:
    """What verify finds with `sqls` run (and the lanes folded after each when asked), then undone."""
    async with bk.db.engine.connect() as conn:
        for sql, params in sqls:
            await conn.execute(text(sql), params)
        report = await verify(conn, WALLET_CHECKS)
        await conn.rollback()
    return {c.name: c.problems for c in report.checks if not c.ok}


FOLD = ("SELECT wallets_fold_usage(ledger_lane(:c)::smallint)", {})


async def test_verify_names_a_zero_net_delta_in_a_period_the_customer_has_no_charge_in(bk: BillingKit) -> None:
    """A customer with free calls (charges without entries) in 2026-11: a delta of lines netting 0
    in 2026-07, where it has neither an entry nor a charge, put usage on a July invoice that
    nothing backs; verify passed it (it accepted lines netting 0 of any customer with a free
    call, whatever the period)."""
    await bk.add_book(FREE)
    cid = await bk.customer("freebie", billing_mode="postpaid", book="free")
    await bk.event(cid, "model-f", 1000, 500)
    assert await bk.db.read(lambda conn: _scalar(
        conn, "SELECT count(*) FROM charges WHERE customer_id = :c AND entry_id IS NULL", c=cid)) == 1
    assert await failed_checks(bk) == {}
    fake = (DELTA, delta(cid, "2026-07", items=ZERO_NET, q=[500_000, 0], a=[5_000_000_000, -5_000_000_000]))
    found = await tampered_report(bk, fake)
    assert list(found) == ["period_rollups"], found
    assert any(cid in p and "2026-07" in p for p in found["period_rollups"]), found
    # folded into period_rollups (the fold job ran): named all the same
    found = await tampered_report(bk, fake, (FOLD[0], {"c": cid}))
    assert list(found) == ["period_rollups"], found
    assert any(cid in p and "2026-07" in p for p in found["period_rollups"]), found
    # the same lines in 2026-11, where its free call is billed: no charge billed there has them
    found = await tampered_report(bk, (DELTA, delta(cid, "2026-11", items=[i.replace("2026-07", "2026-11")
                                                                           for i in ZERO_NET],
                                                    q=[500_000, 0], a=[5_000_000_000, -5_000_000_000])))
    assert list(found) == ["period_rollups"], found
    assert len(found["period_rollups"]) == 2 and all(
        f"customer {cid}, period 2026-11, " in p and "the charges billed in the period 0, 0" in p
        for p in found["period_rollups"]), found
    assert await failed_checks(bk) == {}


async def test_verify_names_a_folded_rollup_in_a_period_the_customer_has_nothing_billed_in(bk: BillingKit) -> None:
    """A top-up of $5.00 that no entry posted, folded into July's rollup (a customer billed only
    in November): the stray check looked at unfolded deltas only."""
    cid = await bk.customer("folded", billing_mode="postpaid")
    await bk.event(cid, "model-a", 1000, 500)
    assert await failed_checks(bk) == {}
    found = await tampered_report(bk, (DELTA, delta(cid, "2026-07", items=["topups"], q=[0], a=[5_000_000_000])),
                                  (FOLD[0], {"c": cid}))
    assert await bk.db.read(lambda conn: _scalar(conn, "SELECT count(*) FROM period_deltas WHERE customer_id = :c",
                                                 c=cid)) >= 1  # undone: the real deltas are still queued
    assert list(found) == ["period_rollups"], found
    assert any(cid in p and "2026-07" in p for p in found["period_rollups"]), found
    # a charge moved to another period than its entry's (triggers off)
    found = await tampered_report(bk, ("ALTER TABLE charges DISABLE TRIGGER charges_immutable", {}),
                                  ("UPDATE charges SET period = '2026-07' WHERE customer_id = :c", {"c": cid}))
    assert list(found) == ["period_rollups"], found
    assert [p for p in found["period_rollups"] if "2026-07" in p and "2026-11" in p and f"customer {cid}" in p], found
    assert await failed_checks(bk) == {}


async def _counter(bk: BillingKit, cid: str, rule: str) -> object:
    return await bk.db.read(lambda conn: _scalar(
        conn, "SELECT quantity FROM usage_counters WHERE customer_id = :c AND period = '2026-11' AND rule_id = :r",
        c=cid, r=rule))


async def test_a_counter_moved_down_by_a_delta_after_its_fold_folds_to_what_is_left(bk: BillingKit) -> None:
    """A free allowance's counter folded at $1.00 (10^9 units), then a re-rate's move of -$0.60
    queued (the call now takes $0.40 of it): the fold upserted the delta's sum, -6 * 10^8, as the
    row it proposes, which PostgreSQL checks (quantity >= 0) before ON CONFLICT adds it to the
    folded row, so the fold failed, and with it every later fold of the lane and every batch of
    the lane that reached the fold's threshold (500 on its usage events) for good. Now the
    counter folds to 4 * 10^8; a move down of a counter with nothing folded stays queued (0060)."""
    cid = await bk.customer("given-back", billing_mode="postpaid")
    rule = "allowance:free-5"
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, books=["seed"], rules=[rule],
                                                                   counts=[1_000_000_000])))
    await fold(bk, cid)
    assert await _counter(bk, cid, rule) == 1_000_000_000
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, books=["seed"], rules=[rule],
                                                                   counts=[-600_000_000])))
    await fold(bk, cid)
    assert await _counter(bk, cid, rule) == 400_000_000
    assert await count(bk, "period_deltas", cid) == 0
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, books=["seed"], rules=["allowance:none"],
                                                                   counts=[-1])))
    await fold(bk, cid)  # left queued (0060), not raised
    assert await _counter(bk, cid, "allowance:none") is None
    assert await count(bk, "period_deltas", cid) == 1


async def test_a_counter_its_deltas_would_take_below_0_stays_queued_and_its_lane_folds_on(bk: BillingKit,
                                                                                          monkeypatch) -> None:
    """One customer's queued deltas would take a counter below 0: `-1` of an allowance with
    nothing folded, and -2 * 10^8 of one folded at 10^8. The fold raised (0057) or failed the
    counter's CHECK, so every fold of the lane failed and so did every batch of the lane that
    reached the fold's threshold: a neighbour in the same lane could not record usage. Now that
    customer's period stays queued (the fold warns) and the rest of the lane folds; a later delta
    bringing the counters back to 0 or more folds it."""
    monkeypatch.setattr(engine_module, "FOLD_CUSTOMER_AFTER", 2)
    lanes = await bk.db.read(lane_count)
    stuck = await bk.customer("stuck", billing_mode="postpaid")
    n = 0
    while lane_of(f"neighbour{n}", lanes) != lane_of(stuck, lanes):
        n += 1
    neighbour = await bk.customer(f"neighbour{n}", billing_mode="postpaid")
    folded, none = "allowance:folded", "allowance:none"
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(stuck, books=["seed"], rules=[folded],
                                                                   counts=[100_000_000])))
    await fold(bk, stuck)
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(
        stuck, items=["x"], q=[1], a=[0], books=["seed", "seed"], rules=[folded, none],
        counts=[-200_000_000, -1])))
    # the neighbour's usage: its second event's batch reaches the threshold and folds the lane
    for _ in range(2):
        await bk.event(neighbour, "model-a", 1000, 500)
    assert await count(bk, "period_deltas", neighbour) == 0 and await count(bk, "usage_counters", neighbour) > 0
    assert await count(bk, "period_deltas", stuck) == 1  # its period left queued, nothing of it folded
    assert await _counter(bk, stuck, folded) == 100_000_000 and await _counter(bk, stuck, none) is None
    assert await count(bk, "period_rollups", stuck) == 0
    await jobs.fold_usage(bk.db)  # the job folds every lane, this one too, without failing
    assert await count(bk, "period_deltas", neighbour) == 0 and await count(bk, "period_deltas", stuck) == 1
    # a later delta brings both back: 10^8 - 2 * 10^8 + 1.5 * 10^8 = 5 * 10^7; -1 + 3 = 2
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(
        stuck, books=["seed", "seed"], rules=[folded, none], counts=[150_000_000, 3])))
    await fold(bk, stuck)
    assert await count(bk, "period_deltas", stuck) == 0
    assert await _counter(bk, stuck, folded) == 50_000_000 and await _counter(bk, stuck, none) == 2
    assert await count(bk, "period_rollups", stuck) == 1


async def test_the_counters_the_fold_keeps_queued_are_a_prometheus_gauge(bk: BillingKit) -> None:
    """0060 keeps a period whose deltas would take a counter below 0 queued and only warns in the
    server log; operators see them as `tokentill_usage_counters_kept_queued`, set by each
    fold_usage run. Two counters of one customer's period below 0 (-1 with nothing folded, and
    10^8 folded less 3 * 10^8 queued): the gauge goes up by 2; a delta bringing one back to 0
    (+1) takes it down by 1, and one bringing the other to 5 * 10^7 down to where it was."""
    cid = await bk.customer("gauged", billing_mode="postpaid")
    folded, none = "allowance:folded", "allowance:none"

    async def gauge() -> float | None:
        await jobs.fold_usage(bk.db)
        return REGISTRY.get_sample_value("tokentill_usage_counters_kept_queued")

    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, books=["seed"], rules=[folded],
                                                                   counts=[100_000_000])))
    before = await gauge()  # other tests' customers may have counters kept queued too
    assert before is not None
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(
        cid, books=["seed", "seed"], rules=[folded, none], counts=[-300_000_000, -1])))
    assert await gauge() == before + 2
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, books=["seed"], rules=[none], counts=[1])))
    assert await gauge() == before + 1
    await bk.db.run(lambda conn: conn.execute(text(DELTA), delta(cid, books=["seed"], rules=[folded],
                                                                   counts=[250_000_000])))
    assert await gauge() == before
    assert await _counter(bk, cid, folded) == 50_000_000 and await count(bk, "period_deltas", cid) == 0
