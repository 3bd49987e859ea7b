"""The expiry jobs' reads of what is due read the due rows, not the lane's, also once PostgreSQL
plans them generically: psycopg prepares a statement from its 2nd run (ledger/db.py,
prepare_threshold) and PostgreSQL may plan it for any parameters from the 6th, when the job's
`now` is no longer in the plan (tests/integration/plan_reads.py: counted from the plan, never timed)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from wallet_kit import Kit

from tests.integration.plan_reads import explained, generic, rows_read
from wallets import chart, expiry


async def _clone(kit: Kit, table: str, row: str, n: int, changed: dict[str, str]) -> None:
    """`n` more rows as `row` of `table`, `changed`'s columns as given (`g`: 1 to n), foreign keys
    and guards off for the copy."""
    async def clone(conn) -> None:
        cols = [c for (c,) in await conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = :t "
            "AND table_schema = current_schema() ORDER BY ordinal_position"), {"t": table})]
        picked = ", ".join(changed.get(c, c) for c in cols)
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picked} FROM {table}, "
                                f"generate_series(1, {n}) g WHERE id = :row"), {"row": row})

    await kit.db.run(clone)


async def _clone_lots(kit: Kit, lot: str, n: int) -> None:
    """`n` more lots as `lot`, of its customer, not due: a third without an expiry, a third
    expiring in a year, a third expired already."""
    await _clone(kit, "lots", lot, n, {
        "id": "id || '-' || g", "account_id": "-g", "account_code": "account_code || '-' || g",
        "expires_at": "CASE g % 3 WHEN 0 THEN NULL WHEN 1 THEN expires_at + interval '1 year' "
                      "ELSE expires_at END",
        "expired_at": "CASE g % 3 WHEN 2 THEN expires_at END",
        "expired_amount": "CASE g % 3 WHEN 2 THEN granted END",
    })


async def test_the_due_lots_read_reads_the_due_lots_also_planned_generically(kit: Kit):
    """`due` has 3 grants past their expiry; `filler` 20,001 lots that are not due (one grant
    expiring in 2 hours, cloned 20,000 times: 6,666 with no expiry, 6,667 a year later, 6,667
    expired already). A page of the due lots finds the 3 and reads those 3 lots (lots_due, which
    holds the unexpired lots with an expiry, from its start to `now`), planned for its `now` and
    planned generically. Before, the generic plan walked lots_id over every lot with an id past
    the page's last (the first page: all 20,004) and filtered them."""
    due, filler = await kit.customer("due"), await kit.customer("filler")
    soon = kit.clock.now + timedelta(hours=1)
    lots = sorted([(await kit.grant(due, "1.00", expires_at=soon)).grant.id for _ in range(3)])
    seed = (await kit.grant(filler, "1.00", expires_at=soon + timedelta(hours=1))).grant.id
    await _clone_lots(kit, seed, 20_000)
    at = soon + timedelta(minutes=30)  # past the 3, before the filler's

    for plan in (explained, generic):
        rows, spy = await plan(kit.db, lambda conn: expiry.due(conn, expiry.DUE_LOTS, (at, "", expiry.PAGE)),
                               analyze=("lots",))
        assert [tuple(r) for r in rows] == [(lot, due) for lot in lots], plan
        assert rows_read(spy.plans, "lots") == 3, plan


async def test_the_due_reservations_read_reads_the_due_reservations_also_planned_generically(kit: Kit):
    """`due` has 3 held reservations past their expiry (300 s); `filler` 20,001 that are not due
    (one held for an hour, cloned 20,000 times: 10,000 held a year longer, 10,000 released). A
    page of the due reservations finds the 3 and reads those 3 (reservations_open, which holds
    the held and capturing ones, from its start to `now`), planned for its `now` and planned
    generically. Before, the generic plan could not use reservations_open at all (its `status =
    ANY($1)` proves nothing about the index's `status IN ('held', 'capturing')`) and walked
    reservations_id over every reservation past the page's last: the first page, all 20,004."""
    due, filler = await kit.customer("due"), await kit.customer("filler")
    await kit.top_up(due, "10.00")
    await kit.top_up(filler, "10.00")
    held = sorted([(await kit.reserve(due, f"r{i}", amount="1.00", ttl_seconds=300)).reservation.id
                   for i in range(3)])
    seed = (await kit.reserve(filler, "long", amount="1.00", ttl_seconds=3600)).reservation.id
    await _clone(kit, "reservations", seed, 20_000, {
        "id": "id || '-' || g", "request_id": "request_id || '-' || g",
        "expires_at": "expires_at + CASE g % 2 WHEN 0 THEN interval '1 year' ELSE interval '0' END",
        "status": "CASE g % 2 WHEN 0 THEN status ELSE 'released' END",
        "released": "CASE g % 2 WHEN 0 THEN released ELSE amount - captured END",
        "closed_at": "CASE g % 2 WHEN 0 THEN closed_at ELSE created_at END",
    })
    at = kit.clock.now + timedelta(minutes=10)  # past the 3's 300 s, before the filler's hour

    for plan in (explained, generic):
        rows, spy = await plan(kit.db, lambda conn: expiry.due(
            conn, expiry.DUE_RESERVATIONS, (list(chart.OPEN_STATUSES), at, "", expiry.PAGE)),
            analyze=("reservations",))
        assert [tuple(r) for r in rows] == [(r, due) for r in held], plan
        assert rows_read(spy.plans, "reservations") == 3, plan
