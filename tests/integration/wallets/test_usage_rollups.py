"""Issue 11: the usage report reads daily rollups kept up with the charges, and answers exactly
what the charges themselves say, for every grouping and any range (whole UTC days from the
rollups, partial days and usage dimensions from the charges). From migration 0026 the charges are
folded into the rollups in bulk, later: the report is exact with none, some or all of them folded."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from wallet_kit import BOOK, T0, Kit

from ledger.audit import verify
from wallets import books, jobs, price_overrides, reports
from wallets import engine as engine_module
from wallets.audit import WALLET_CHECKS, usage_rollups_match_charges
from wallets.commands import RecordUsage

START = datetime(2026, 11, 23, tzinfo=UTC)  # the kit's first day; T0 is its noon
# A second price version from the third day on: other rules, another price for model-x input,
# model-y priced too, so line keys and versions vary.
LATER = {"currency": "USD", "effective_from": (START + timedelta(days=2)).isoformat().replace("+00:00", "Z"),
         "rules": [*BOOK["rules"][1:],
                   {"id": "x-in-2", "model": "model-x", "token_type": "input", "price": "1500"},
                   {"id": "y-all", "model": "model-y", "token_type": "input", "price": "700"},
                   {"id": "y-out", "model": "model-y", "token_type": "output", "price": "900"}]}
GROUPS = ["model", "token_type", "kind", "rule_id", "price_version", "day", "month", "feature"]

# Events: minutes after START over five days (midnights and their neighbours drawn often).
minute = st.one_of(st.integers(0, 5 * 1440 - 1), st.sampled_from([1439, 1440, 1441, 2880, 2879, 4320]))
events = st.lists(st.tuples(minute, st.sampled_from(["model-x", "model-y"]), st.integers(0, 5000),
                            st.integers(0, 5000), st.sampled_from([None, "chat", "search"])),
                  min_size=0, max_size=25)
instant = st.one_of(st.none(), st.integers(-1440, 6 * 1440).map(lambda m: START + timedelta(minutes=m)),
                    st.integers(-1, 6).map(lambda d: START + timedelta(days=d)))
queries = st.lists(st.tuples(instant, instant, st.lists(st.sampled_from(GROUPS), unique=True, max_size=4)),
                   min_size=1, max_size=6)


async def _raw(conn, cid: str, start, end, group_by: list[str]) -> list[dict]:
    """The reference: every charge's lines expanded, as the report read them before the rollups,
    always by token type too (a row never adds two units), and, in rows of several kinds, the
    quantity of the usage lines only (a discount's line restates it)."""
    group_by = group_by if "token_type" in group_by else [*group_by, "token_type"]
    exprs = [f"c.dimensions ->> '{n}'" if n == "feature" else reports.GROUPS[n] for n in group_by]
    cols = "".join(f"{e} AS g{i}, " for i, e in enumerate(exprs))
    keys = ", ".join(f"g{i}" for i in range(len(exprs)))
    counted = "true" if "kind" in group_by else "l->>'kind' = 'usage'"
    rows = await conn.execute(text(f"""
        SELECT {cols} coalesce(sum((l->>'quantity')::bigint) FILTER (WHERE {counted}), 0) AS q,
               sum((l->>'amount_units')::numeric) AS a,
               count(DISTINCT c.id) AS n
          FROM charges c CROSS JOIN LATERAL jsonb_array_elements(c.lines) l
         WHERE c.customer_id = :c AND (CAST(:s AS timestamptz) IS NULL OR c.occurred_at >= :s)
           AND (CAST(:e AS timestamptz) IS NULL OR c.occurred_at < :e)
         {f"GROUP BY {keys} ORDER BY {keys}" if exprs else ""}"""), {"c": cid, "s": start, "e": end})
    return [{**{n: getattr(r, f"g{i}") for i, n in enumerate(group_by)}, "quantity": int(r.q),
             "amount": reports.money(r.a, "USD"), "charges": r.n} for r in rows if r.a is not None]


async def fold(db, cid: str) -> int:
    """Fold the queued charges of `cid`'s lane into the rollups; how many were folded."""
    return await db.run(lambda conn: _scalar(conn, "SELECT wallets_fold_usage(ledger_lane(:c)::smallint)", c=cid))


async def _scalar(conn, sql: str, **params):
    return (await conn.execute(text(sql), params)).scalar()


async def _workload(db, drawn, fold_at: int | None = None) -> str:
    kit = Kit(db, uuid.uuid4().hex[:12])
    await kit.setup_book()
    await db.run(lambda conn: books.add_version(conn, {**LATER, "id": kit.book}))
    cid = await kit.customer("roll", billing="postpaid", overdraft=None)
    # 10 % off model-y: discount lines (a quantity each, restated) on the later days' charges
    await db.run(lambda conn: price_overrides.add_version(
        conn, cid, {"discounts": [{"id": "y-off", "model": "model-y", "percent": "10"}]},
        START - timedelta(days=1), START))
    for n, (m, model, tin, tout, feature) in enumerate(drawn):
        tokens = {"input": tin, "output": tout}
        await kit.service.submit(RecordUsage(  # model-y is priced from the later version on
            customer_id=cid, event_id=f"e{n}", request_hash=repr(tokens).encode(),
            model=model if m >= 2 * 1440 else "model-x",
            occurred_at=START + timedelta(minutes=m), tokens=tokens, usage=tokens,
            dimensions={} if feature is None else {"feature": feature}))
        if n == fold_at:
            await fold(db, cid)
    return cid


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(drawn=events, asked=queries, fold_at=st.one_of(st.none(), st.integers(0, 25)))
def test_the_report_equals_the_raw_charges_for_any_grouping_and_range(loop_db, drawn, asked, fold_at):
    """With the charges up to the `fold_at`-th folded into the rollups and the rest queued, then
    with every one folded."""
    loop, db = loop_db

    async def run():
        cid = await _workload(db, drawn, fold_at)
        for folded in (False, True):
            if folded:
                await fold(db, cid)
                assert await db.read(lambda conn: _scalar(
                    conn, "SELECT count(*) FROM usage_unfolded WHERE customer_id = :c", c=cid)) == 0
            for start, end, group_by in asked:
                got = await db.read(lambda conn, s=start, e=end, g=group_by: reports.usage(conn, cid, s, e, g))
                want = await db.read(lambda conn, s=start, e=end, g=group_by: _raw(conn, cid, s, e, g))
                assert got["rows"] == want, (start, end, group_by, folded)
            check = await db.read(usage_rollups_match_charges)
            assert check.ok, check.detail

    loop.run_until_complete(run())


def test_the_plan_reads_whole_utc_days_from_the_rollups_and_only_the_edges_raw():
    noon, day = START + timedelta(hours=12), timedelta(days=1)
    level, days, raw = reports.usage_plan(noon, noon + 3 * day, ["model"])
    assert (level, days) == (3, ((START + day).date(), (START + 3 * day).date()))  # by token type too
    assert raw == [(noon, START + day), (START + 3 * day, noon + 3 * day)]
    assert reports.usage_plan(START, START + 2 * day, ["token_type", "kind", "rule_id"]) == (
        0, (START.date(), (START + 2 * day).date()), [])
    assert reports.usage_plan(None, None, []) == (3, (None, None), [])
    assert reports.usage_plan(None, START, ["day", "model", "token_type"]) == (3, (None, START.date()), [])
    assert reports.usage_plan(START, None, ["rule_id"])[0] == 2
    assert reports.usage_plan(START, START + day, ["feature", "model"]) == (None, None, [(START, START + day)])
    assert reports.usage_plan(noon, noon + day, ["model"]) == (None, None, [(noon, noon + day)])  # no whole day


async def test_verify_finds_a_rollup_that_differs_from_the_charges(kit: Kit):
    cid = await kit.customer("tamper", billing="postpaid", overdraft=None)
    await kit.usage_event(cid, "e1", input_tokens=1000, output_tokens=500, at=T0)
    assert await fold(kit.db, cid) >= 1
    assert (await kit.verify()).ok
    await kit.db.run(lambda conn: conn.execute(text(
        "UPDATE usage_rollups SET amount = amount + 1 WHERE customer_id = :c AND level = 3"), {"c": cid}))
    report = await kit.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["usage_rollups"], failed
    assert cid in failed[0].detail


async def test_the_migration_backfills_the_rollups_of_existing_charges(kit: Kit, migrating):
    cid = await kit.customer("old", billing="postpaid", overdraft=None)
    for n, at in enumerate([T0, T0 + timedelta(hours=13), T0 + timedelta(days=1, hours=5)]):
        await kit.usage_event(cid, f"e{n}", input_tokens=1000 * (n + 1), output_tokens=250, at=at)
    before = await kit.db.read(lambda conn: reports.usage(conn, cid, None, None, ["day", "token_type"]))
    conn, config = migrating
    command.downgrade(config, "0017")
    conn.commit()
    command.upgrade(config, "head")
    conn.commit()
    rows = conn.execute(text("SELECT count(*) FROM usage_rollups WHERE customer_id = :c"), {"c": cid}).scalar()
    assert rows > 0
    assert (await kit.verify()).ok
    after = await kit.db.read(lambda conn: reports.usage(conn, cid, None, None, ["day", "token_type"]))
    assert after == before
    assert [(r["day"], r["token_type"], r["charges"]) for r in after["rows"]] == [
        ("2026-11-23", "input", 1), ("2026-11-23", "output", 1), ("2026-11-24", "input", 2),
        ("2026-11-24", "output", 2)]  # noon on the 23rd; 01:00 and 17:00 on the 24th (UTC days)


async def test_verify_finds_a_charge_taken_out_of_the_queue_without_being_folded(kit: Kit):
    cid = await kit.customer("unqueued", billing="postpaid", overdraft=None)
    await kit.usage_event(cid, "e1", input_tokens=1000, output_tokens=500, at=T0)
    await kit.usage_event(cid, "e2", input_tokens=10, output_tokens=5, at=T0)
    assert (await kit.verify()).ok  # queued, not folded: the rollups need not have them yet
    await kit.db.run(lambda conn: conn.execute(text(
        "DELETE FROM usage_unfolded WHERE customer_id = :c AND charge_id = (SELECT min(charge_id) "
        "FROM usage_unfolded WHERE customer_id = :c)"), {"c": cid}))
    report = await kit.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["usage_rollups"], failed
    assert cid in failed[0].detail


async def test_the_queue_is_written_only_by_the_charges_trigger(kit: Kit):
    cid = await kit.customer("forged", billing="postpaid", overdraft=None)
    await kit.usage_event(cid, "e1", input_tokens=1000, output_tokens=500, at=T0)
    charge, lane = await kit.db.read(lambda conn: _row(conn, "SELECT id, lane FROM charges WHERE customer_id = :c",
                                                       c=cid))
    await fold(kit.db, cid)
    for table in ("usage_unfolded", f"usage_unfolded_l{lane}"):  # folded, queued again: counted twice
        with pytest.raises(DBAPIError, match="only by the charges"):
            await kit.db.run(lambda conn, t=table: conn.execute(text(
                f"INSERT INTO {t} (lane, customer_id, charge_id) VALUES (:l, :c, :i)"),
                {"l": lane, "c": cid, "i": charge}))
    with pytest.raises(DBAPIError, match="not allowed"):
        await kit.db.run(lambda conn: conn.execute(text("TRUNCATE usage_unfolded")))
    assert (await kit.verify()).ok


async def _row(conn, sql: str, **params):
    return (await conn.execute(text(sql), params)).one()


@pytest.mark.parametrize("limit", ["FOLD_AFTER", "FOLD_CUSTOMER_AFTER"])
async def test_the_engine_folds_a_lane_once_enough_charges_are_queued_there(kit: Kit, monkeypatch, limit):
    """A batch folds its lane's queue (every queued charge of the lane, whoever queued it) once
    this process queued FOLD_AFTER charges there, or FOLD_CUSTOMER_AFTER of one customer; the
    report is the same before and after."""
    monkeypatch.setattr(engine_module, "FOLD_AFTER", 1000)
    monkeypatch.setattr(engine_module, "FOLD_CUSTOMER_AFTER", 1000)
    monkeypatch.setattr(engine_module, limit, 3)
    cid = await kit.customer("folding", billing="postpaid", overdraft=None)

    async def queued() -> int:
        return await kit.db.read(lambda conn: _scalar(
            conn, "SELECT count(*) FROM usage_unfolded WHERE customer_id = :c", c=cid))

    await kit.usage_event(cid, "e1", input_tokens=1000, output_tokens=500, at=T0)
    await kit.usage_event(cid, "e2", input_tokens=100, output_tokens=50, at=T0)
    assert await queued() == 2
    before = await kit.db.read(lambda conn: reports.usage(conn, cid, None, None, ["model", "token_type"]))
    await kit.usage_event(cid, "e3", input_tokens=10, output_tokens=10, at=T0 + timedelta(days=1))
    assert await queued() == 0
    after = await kit.db.read(lambda conn: reports.usage(conn, cid, None, None, ["model", "token_type"]))
    assert [r["charges"] for r in after["rows"]] == [r["charges"] + 1 for r in before["rows"]]
    assert (await kit.verify()).ok


async def test_the_fold_job_folds_every_lane_s_queue_when_traffic_stops(kit: Kit):
    """Batches fold only once enough charges are queued; the scheduled job folds whatever is left,
    lane by lane, and the report is the same before and after."""
    customers = [await kit.customer(f"idle{n}", billing="postpaid", overdraft=None) for n in range(6)]
    for n, cid in enumerate(customers):
        await kit.usage_event(cid, f"e{n}", input_tokens=100 + n, output_tokens=50, at=T0)
        await kit.usage_event(cid, f"f{n}", input_tokens=10, output_tokens=5 + n, at=T0 + timedelta(days=1))
    queued = await kit.db.read(lambda conn: _scalar(
        conn, "SELECT count(*) FROM usage_unfolded WHERE customer_id = ANY(:c)", c=customers))
    assert queued == 2 * len(customers)

    async def report(cid: str):
        return await kit.db.read(lambda conn: reports.usage(conn, cid, None, None, ["day", "model", "token_type"]))

    before = [await report(cid) for cid in customers]
    assert await jobs.fold_usage(kit.db) >= queued  # and any other test's left in the database
    assert await kit.db.read(lambda conn: _scalar(conn, "SELECT count(*) FROM usage_unfolded")) == 0
    assert [await report(cid) for cid in customers] == before
    assert await jobs.fold_usage(kit.db) == 0  # nothing left
    assert (await kit.verify()).ok
    assert "fold_usage" in [job.name for job in jobs.jobs(60)]


async def test_the_fold_reads_only_the_queued_charges_of_a_customer_with_many(kit: Kit, monkeypatch):
    """Each queued charge is found by its key (migration 0027): folding a few charges of a customer
    with hundreds already folded reads those few, not all of the customer's (0026's probe also
    matched the customer, and the planner then read every charge of theirs for each one queued)."""
    monkeypatch.setattr(engine_module, "FOLD_CUSTOMER_AFTER", 10_000)  # folded here only
    cid = await kit.customer("busy", billing="postpaid", overdraft=None)

    def events(prefix: str, n: int) -> list[RecordUsage]:
        tokens = {"input": 100, "output": 10}
        return [RecordUsage(customer_id=cid, event_id=f"{prefix}{i}", request_hash=f"{prefix}{i}".encode(),
                            model="model-x", occurred_at=T0, tokens=tokens, usage=tokens) for i in range(n)]

    await kit.service.submit_many(events("old", 600))
    assert await fold(kit.db, cid) == 600
    await kit.service.submit_many(events("new", 5))

    async def folded_reading(conn):
        lane = await _scalar(conn, "SELECT ledger_lane(:c)", c=cid)
        read = f"SELECT idx_tup_fetch + seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'charges_l{lane}'"
        before = await _scalar(conn, read)
        count = await _scalar(conn, "SELECT wallets_fold_usage(CAST(:l AS smallint))", l=lane)
        return count, await _scalar(conn, read) - before

    assert await kit.db.run(folded_reading) == (5, 5)
    assert (await kit.verify()).ok


async def _levels(db, cid: str) -> list[tuple[int, str | None, str | None, str | None, int]]:
    return [tuple(r) for r in await db.read(lambda conn: conn.execute(text(
        "SELECT level, token_type, kind, rule_id, charges FROM usage_rollups WHERE customer_id = :c "
        "ORDER BY level, token_type, kind, rule_id"), {"c": cid}))]


async def test_a_fold_keeps_only_the_levels_that_keep_the_token_type(kit: Kit):
    """The report always groups by token type (`unit_groups`), so it reads levels 0-3 only: a
    charge with an input and an output line folds into 2 rows at each of those 4 levels (8 rows),
    not also the 6 rows that leave the token type out (1 + 2 + 2 + 1 at levels 4-7: 14 in all)."""
    cid = await kit.customer("levels", billing="postpaid", overdraft=None)
    await kit.usage_event(cid, "e1", input_tokens=1000, output_tokens=500, at=T0)
    await kit.usage_event(cid, "e2", input_tokens=10, output_tokens=1, at=T0 + timedelta(hours=1))
    assert await fold(kit.db, cid) == 2
    want = [(level, tt, None if level & 2 else "usage", None if level & 1 else rule, 2)
            for level in range(4) for tt, rule in (("input", "x-in"), ("output", "x-out"))]
    assert await _levels(kit.db, cid) == want
    assert (await kit.verify()).ok
    for group_by in (["model"], [], ["kind"], ["rule_id", "day"]):
        got = await kit.db.read(lambda conn, g=group_by: reports.usage(conn, cid, START, START + timedelta(days=2), g))
        want_rows = await kit.db.read(lambda conn, g=group_by: _raw(conn, cid, START, START + timedelta(days=2), g))
        assert got["rows"] == want_rows, group_by


async def test_the_rollups_refuse_a_row_without_its_token_type(kit: Kit):
    """No rollup row may leave the token type out (levels 4-7): a report never reads one, so one
    written by hand could only go stale; the database refuses it (raw SQL)."""
    cid = await kit.customer("nolevel4", billing="postpaid", overdraft=None)
    for level in (4, 7):
        with pytest.raises(DBAPIError, match="usage_rollups_level_check"):
            await kit.db.run(lambda conn, lv=level: conn.execute(text(
                "INSERT INTO usage_rollups (lane, customer_id, day, level, model, price_version, token_type, kind, "
                "rule_id, quantity, amount, charges) VALUES (ledger_lane(:c), :c, '2026-11-23', :lv, 'model-x', 1, "
                "NULL, NULL, NULL, 1, 1, 1)"), {"c": cid, "lv": lv}))


async def test_the_migration_drops_the_unread_levels_and_its_downgrade_restores_them(kit: Kit, migrating):
    cid = await kit.customer("relevel", billing="postpaid", overdraft=None)
    await kit.usage_event(cid, "e1", input_tokens=1000, output_tokens=500, at=T0)
    await kit.usage_event(cid, "e2", input_tokens=7, output_tokens=3, at=T0 + timedelta(days=1))
    await fold(kit.db, cid)
    await kit.usage_event(cid, "e3", input_tokens=5, output_tokens=5, at=T0)  # queued at the downgrade
    conn, config = migrating
    command.downgrade(config, "0055")
    conn.commit()
    counts = conn.execute(text("SELECT day::text, level, charges FROM usage_rollups WHERE customer_id = :c "
                               "AND level >= 4 ORDER BY day, level, token_type, kind, rule_id"),
                          {"c": cid}).all()
    command.upgrade(config, "head")
    conn.commit()
    left = conn.execute(text("SELECT count(*) FROM usage_rollups WHERE level >= 4")).scalar()
    # the 23rd: e1 and e3 (2 charges), the 24th: e2; level 4 and 6 one row per token type's rule
    assert [tuple(r) for r in counts] == [
        ("2026-11-23", 4, 2), ("2026-11-23", 4, 2), ("2026-11-23", 5, 2), ("2026-11-23", 6, 2),
        ("2026-11-23", 6, 2), ("2026-11-23", 7, 2),
        ("2026-11-24", 4, 1), ("2026-11-24", 4, 1), ("2026-11-24", 5, 1), ("2026-11-24", 6, 1),
        ("2026-11-24", 6, 1), ("2026-11-24", 7, 1)]
    assert left == 0
    assert (await kit.verify()).ok
