"""Money back to a lot that was spent lands on that lot, and later charges spend it, now that a
batch's load reads no spent lot (migration 0072: `lots.empty`, written by the batch that moves
the lot's balance across 0). Worked by hand; the seed book: model-a $10/M input, $0.01 a request."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from billing_kit import BillingKit
from sqlalchemy import text

from ledger.accounts import customer_balances
from ledger.audit import verify
from tests.integration.billing.test_rerate import V1, V2, spec
from tests.integration.wallets.wallet_kit import usd
from wallets import chart, rerating
from wallets.audit import WALLET_CHECKS
from wallets.batch import Batch


async def _lots(bk: BillingKit, cid: str, *lot_ids: str) -> list[tuple[int, bool]]:
    """Each lot's balance and its `empty` mark."""
    async def read(conn):
        balances = await customer_balances(conn, cid)
        marks = dict((await conn.execute(text("SELECT id, empty FROM lots WHERE id = ANY(:ids)"),
                                         {"ids": list(lot_ids)})).all())
        return [(balances[chart.lot_account(cid, lot)].normal, marks[lot]) for lot in lot_ids]

    return await bk.db.read(read)


async def _verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def test_a_released_hold_goes_back_to_the_lot_it_emptied_and_the_next_charge_spends_it(bk: BillingKit):
    cid = await bk.customer("held")
    a = (await bk.top_up(cid, "1.00")).grant.id
    rid = await bk.reserve(cid, "model-a", "1.00")  # holds all of A: A holds nothing
    assert await _lots(bk, cid, a) == [(0, True)]
    await bk.release(cid, rid)  # $1.00 back to A
    assert await _lots(bk, cid, a) == [(usd("1.00"), False)]
    b = (await bk.top_up(cid, "5.00")).grant.id
    await bk.event(cid, "model-a", 40_000, 0)  # $0.40 + $0.01: from A, the older lot
    assert await _lots(bk, cid, a, b) == [(usd("0.59"), False), (usd("5.00"), False)]
    await _verified(bk)


async def test_a_rerate_gives_back_to_the_spent_lot_that_paid_and_the_next_charge_spends_it(fresh_db):
    bk = BillingKit(fresh_db)
    await bk.add_book(V1)
    cid = await bk.customer("rerated", book="fix")
    a = (await bk.top_up(cid, "10.01")).grant.id
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))  # $10.00 + $0.01: all of A
    b = (await bk.top_up(cid, "5.00")).grant.id
    assert await _lots(bk, cid, a, b) == [(0, True), (usd("5.00"), False)]
    await bk.add_book(V2)  # model-a input $8/M from November: the charge is $8.01, $2.00 back to A
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["delta"] == "-2.00" and done["errors"] == []
    assert await _lots(bk, cid, a, b) == [(usd("2.00"), False), (usd("5.00"), False)]
    # 100,000 input tokens at $8/M and the request: $0.81, from A (the older lot), not from B
    await bk.event(cid, "model-a", 100_000, 0)
    assert await _lots(bk, cid, a, b) == [(usd("1.19"), False), (usd("5.00"), False)]
    await _verified(bk)


async def test_a_lot_an_older_server_gave_money_back_to_is_named_by_verify_and_the_readme_repair_unmarks_it(
        bk: BillingKit, monkeypatch):
    """A server older than 0072 still running in a rolling deploy writes a batch's rows without the
    marks (Batch._lot_marks stubbed out stands in for it): a hold it releases goes back to the lot
    it emptied, which stays marked, so no later load reads it. verify names it; README's statement
    (Migrations, 0072) unmarks it, and the next charge spends it."""
    cid = await bk.customer("older")
    a = (await bk.top_up(cid, "1.00")).grant.id
    rid = await bk.reserve(cid, "model-a", "1.00")  # all of A held: A marked
    with monkeypatch.context() as m:
        m.setattr(Batch, "_lot_marks", lambda self: None)  # a 0071 server's batch
        await bk.release(cid, rid)
    assert await _lots(bk, cid, a) == [(usd("1.00"), True)]
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    lots = next(c for c in report.checks if c.name == "lots")
    assert lots.problems == (f"lot {a} is marked empty, yet its account holds {usd('1.00')}",)
    readme = (Path(__file__).parents[3] / "README.md").read_text()
    repair = readme.split("```sql\nUPDATE lots l SET empty = false", 1)[1].split("```", 1)[0]

    async def run(conn):
        await conn.exec_driver_sql("UPDATE lots l SET empty = false" + repair)
    await bk.db.run(run)
    assert await _lots(bk, cid, a) == [(usd("1.00"), False)]
    b = (await bk.top_up(cid, "5.00")).grant.id
    await bk.event(cid, "model-a", 40_000, 0)  # $0.40 + $0.01: from A, the older lot
    assert await _lots(bk, cid, a, b) == [(usd("0.59"), False), (usd("5.00"), False)]
    await _verified(bk)
