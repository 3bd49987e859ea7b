"""Migration 0009 moves a database's data into lanes and back without losing an entry: verify is
ok before and after, balances and entry counts are equal, seals still match, and a request
answered before the move replays after it."""
from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from api.runtime import sync_url
from ledger.audit import balances_match_postings, bounds_hold, trial_balance_zero
from ledger.db import connect
from ledger.lanes import lane_count
from migrations import runner
from wallets.jobs import seal_journal

sys.path.insert(0, str(Path(__file__).parent / "wallets"))
from wallet_kit import Kit

COUNTS = """SELECT (SELECT count(*) FROM journal_entries), (SELECT count(*) FROM postings),
                   (SELECT count(*) FROM reservations), (SELECT count(*) FROM charges),
                   (SELECT count(*) FROM lots), (SELECT count(*) FROM seals)"""
BALANCES = """SELECT a.code, sum(b.debits)::text, sum(b.credits)::text FROM accounts a
                JOIN account_balances b ON b.account_id = a.id GROUP BY a.code ORDER BY a.code"""
PRE_LANE_CHECKS = (balances_match_postings, bounds_hold, trial_balance_zero)
# Today's entries_balanced and one_customer_per_entry read an entry's postings in its lane (a column
# 0008 lacks); before lanes, an entry's postings are those of its id.
UNBALANCED_BEFORE_LANES = """
    SELECT (SELECT count(*) FROM (SELECT 1 FROM postings p JOIN accounts a ON a.id = p.account_id
                                   GROUP BY p.entry_id, a.asset HAVING sum(p.amount) <> 0) unbalanced),
           (SELECT count(*) FROM journal_entries j
             WHERE (SELECT count(*) FROM postings p WHERE p.entry_id = j.id) < 2),
           (SELECT count(*) FROM journal_entries j JOIN postings p ON p.entry_id = j.id
              JOIN accounts a ON a.id = p.account_id
             WHERE a.customer_id IS NOT NULL AND a.customer_id IS DISTINCT FROM j.customer_id)"""


def _state(url: str) -> tuple[tuple, list]:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            return tuple(conn.execute(text(COUNTS)).one()), [tuple(r) for r in conn.execute(text(BALANCES))]
    finally:
        engine.dispose()


def _migrate(url: str, revision: str, *, lanes: int | None = None) -> None:
    engine = create_engine(sync_url(url))
    try:
        with engine.connect() as conn:
            config = runner.alembic_config()
            config.attributes["connection"] = conn
            config.attributes["lanes"] = lanes
            (command.upgrade if revision == "head" else command.downgrade)(config, revision)
            conn.commit()
    finally:
        engine.dispose()


async def _book(kit: Kit, tag: str) -> list[str]:
    """Customers with top-ups, grants, settled, released and open reservations, usage events."""
    customers = []
    for n in range(12):
        cid = await kit.customer(f"m{n}")
        customers.append(cid)
        await kit.top_up(cid, "5")
        await kit.grant(cid, "1")
        done = await kit.reserve(cid, f"{tag}-{n}-a", amount="0.50")
        await kit.settle(cid, done.reservation.id, input_tokens=100, output_tokens=20)
        gone = await kit.reserve(cid, f"{tag}-{n}-b", amount="0.25")
        await kit.release(cid, gone.reservation.id)
        await kit.reserve(cid, f"{tag}-{n}-c", amount="0.10")  # left open
        await kit.usage_event(cid, f"{tag}-{n}-evt", input_tokens=10)
    return customers


async def test_data_moves_into_lanes_and_back_and_verify_holds_throughout(scratch_url: str, tag: str):
    db = connect(scratch_url, pool_size=4)
    kit = Kit(db, tag)
    try:
        await kit.setup_book()
        customers = await _book(kit, tag)
        await seal_journal(db)
        assert (await kit.verify()).ok
        before = _state(scratch_url)
        assert before[0][0] > 12 * 6
    finally:
        await db.dispose()

    _migrate(scratch_url, "0008")  # the data as it was before lanes
    at_0008 = _state(scratch_url)
    assert at_0008 == before
    db = connect(scratch_url, pool_size=4)
    try:  # today's lanes and seals checks read lane columns 0008 lacks; the seals are checked again at head
        checks = [await db.read(check) for check in PRE_LANE_CHECKS]
        assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    finally:
        await db.dispose()
    engine = create_engine(sync_url(scratch_url))
    with engine.connect() as conn:
        assert tuple(conn.execute(text(UNBALANCED_BEFORE_LANES)).one()) == (0, 0, 0)
    engine.dispose()

    _migrate(scratch_url, "head", lanes=4)  # into 4 lanes this time
    assert _state(scratch_url) == before
    db = connect(scratch_url, pool_size=4)
    kit = Kit(db, tag)
    try:
        assert await db.read(lane_count) == 4
        report = await kit.verify()
        assert report.ok, [c for c in report.checks if not c.ok]
        engine = create_engine(sync_url(scratch_url))
        with engine.connect() as conn:
            lanes = dict(conn.execute(text("SELECT id, lane FROM customers WHERE id = ANY(:c)"),
                                      {"c": customers}).all())
            misplaced = conn.execute(text(
                "SELECT count(*) FROM reservations r JOIN customers c ON c.id = r.customer_id "
                "WHERE r.lane <> c.lane")).scalar()
        engine.dispose()
        assert misplaced == 0 and len(set(lanes.values())) > 1
        # A reserve answered before the move replays after it, and new work goes on.
        again = await kit.reserve(customers[0], f"{tag}-0-c", amount="0.10")
        assert again.replayed
        await kit.top_up(customers[1], "1")
        await seal_journal(db)
        report = await kit.verify()
        assert report.ok, [c for c in report.checks if not c.ok]
    finally:
        await db.dispose()
