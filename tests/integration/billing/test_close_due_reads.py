"""The close job's read of the customers whose period is due reads the due customers, not all of
them, also once PostgreSQL plans it generically (psycopg prepares it from its 2nd run, PostgreSQL
may plan it for any parameters from its 6th; tests/integration/plan_reads.py: counted from the
plan, never timed)."""
from __future__ import annotations

from datetime import timedelta

from billing_kit import BillingKit
from sqlalchemy import text

from tests.integration.plan_reads import explained, generic, rows_read
from wallets import billing


async def test_the_due_periods_read_reads_the_due_customers_also_planned_generically(bk: BillingKit):
    """`a`, `b` and `c` close on the same day; `later`, cloned 20,000 times, a year after. The
    read of the customers due by a day after their close finds the 3 and reads those 3 customers
    (customers_close_due, from its start to `at`), planned for its `at` and planned generically.
    Before, the generic plan walked the customers' primary key over every customer with an id
    past the page's last and filtered them: the first page, all 20,004 (3 + 1 + 20,000)."""
    due = [await bk.customer(cid) for cid in ("a", "b", "c")]
    later = await bk.customer("later")

    async def clone(conn) -> None:  # `later`'s copies, their period closing a year after the 3's
        cols = [c for (c,) in await conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'customers' "
            "AND table_schema = current_schema() AND is_generated = 'NEVER' ORDER BY ordinal_position"))]
        picked = ", ".join({"id": "id || '-' || g"}.get(c, c) for c in cols)
        await conn.execute(text("UPDATE customers SET next_close_at = next_close_at + interval '1 year' "
                                "WHERE id = :c"), {"c": later})
        await conn.execute(text("SET LOCAL session_replication_role = replica"))
        await conn.execute(text(f"INSERT INTO customers ({', '.join(cols)}) SELECT {picked} FROM customers, "
                                f"generate_series(1, 20000) g WHERE id = :c"), {"c": later})

    await bk.db.run(clone)
    at = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT max(next_close_at) + interval '1 day' FROM customers WHERE id = ANY(:ids)"), {"ids": due}))
    at = at.scalar_one()
    assert at < (await bk.db.read(lambda conn: conn.execute(text(
        "SELECT next_close_at FROM customers WHERE id = :c"), {"c": later}))).scalar_one() - timedelta(days=300)

    for plan in (explained, generic):
        rows, spy = await plan(bk.db, lambda conn: billing.due_periods(conn, at, "", None), analyze=("customers",))
        assert sorted(r[0] for r in rows) == sorted(due), plan
        assert rows_read(spy.plans, "customers") == 3, plan
