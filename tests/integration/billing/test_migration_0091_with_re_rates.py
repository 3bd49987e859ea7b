"""Migration 0091 (`rerate_true_ups.payer_rows`) moved down and up by `tokentill migrate` on a
database holding a re-rate that posted no entry: the record is kept (its corrections, the apply's
answer), the new column is as immutable as the rest of its row, verify passes at 0090 (no column:
nothing to tie) and again at 0091 with the record written before it (payer_rows NULL: its rows are
tied to nothing but their charges' sums and the bounds, as the README says), and the ledger goes on
(a second re-rate, which posts an entry, verifies).

By hand (test_close_true_up_funding): the close gives $0.60 of the 5th back to the top-up and $0.40
of the 20th to the grant; the fix to $30/M and $10/M nets 0 (no entry) and keeps the 5th's $0.60
and the 20th's $0.40 given to none of their payers; the second fix, $30/M and $5/M, gives $0.30 of
the 5th to the top-up and $0.20 of the 20th to the grant, and the period's true-up moves by -$0.65
(the 20th -$0.15, the true-up -$0.50)."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from billing_kit import BillingKit
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from test_close_true_up_funding import _damaged, _no_entry_rerate, _rerated_again
from test_rerate_volume_true_up import verified

from wallets import chart

CENT = 10_000_000  # atomic units (9 decimals) of $0.01


async def _cli(url: str, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    return proc.returncode or 0, out.decode(), err.decode()


async def _kept(bk: BillingKit, cid: str) -> list[tuple]:
    """The customer's rerate_true_ups rows: (re-rate, period, corrections' count, payer_rows or None)."""
    has = await bk.db.read(
        lambda conn: conn.scalar(
            text(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'rerate_true_ups'::regclass "
                "AND attname = 'payer_rows' AND NOT attisdropped"
            )
        )
    )
    rows = await bk.db.read(
        lambda conn: conn.execute(
            text(
                f"""SELECT rerate_id, period, jsonb_array_length(true_ups), {"payer_rows" if has else "NULL"}
              FROM rerate_true_ups WHERE customer_id = :c ORDER BY id"""
            ),
            {"c": cid},
        )
    )
    return [tuple(row) for row in rows]


async def test_migrate_down_and_up_past_0091_keeps_a_no_entry_re_rate_that_verifies(fresh_db, scratch_url) -> None:
    bk = BillingKit(fresh_db)
    cid = "m0091-no-entry"
    top_up, grant, rerate_id = await _no_entry_rerate(bk, cid)
    [(_, period, corrections, payer_rows)] = await _kept(bk, cid)
    fifth, twentieth = sorted(charge for charge, _, _ in payer_rows)
    assert (period, corrections) == ("2026-11", 1)
    assert sorted(map(tuple, payer_rows)) == [(fifth, None, 60 * CENT), (twentieth, None, 40 * CENT)]
    await verified(bk)
    # the new column is under the row's immutability trigger (0064: BEFORE UPDATE OR DELETE, each row)
    with pytest.raises(DBAPIError, match="not allowed"):
        await bk.db.run(
            lambda conn: conn.execute(
                text("UPDATE rerate_true_ups SET payer_rows = '[]' WHERE rerate_id = :r"), {"r": rerate_id}
            )
        )

    code, out, err = await _cli(scratch_url, "migrate", "--to", "0090")
    assert (code, out) == (0, "migrated to 0090\n"), err
    assert await _kept(bk, cid) == [(rerate_id, "2026-11", 1, None)]  # the record kept, the column gone
    code, out, err = await _cli(scratch_url, "audit", "verify")
    assert code == 0, out + err

    code, out, err = await _cli(scratch_url, "migrate")
    assert (code, out) == (0, "migrated to 0091\n"), err
    assert await _kept(bk, cid) == [(rerate_id, "2026-11", 1, None)]  # written before 0091: NULL
    code, out, err = await _cli(scratch_url, "audit", "verify")
    assert code == 0, out + err
    # NULL: not tied (README, true-up payers): the 5th's row given by hand to the top-up that paid it
    params = {"r": rerate_id, "c": fifth, "t": chart.lot_account(cid, top_up)}
    moved = "UPDATE true_up_payers SET payer = :t WHERE rerate_id = :r AND charge_id = :c"
    assert await _damaged(bk, params, moved) == []

    again = await _rerated_again(bk, "30", "5", on=None)
    assert again["delta"] == "-0.65" and len(again["customers"][0]["entry_ids"]) == 1, again
    given = await bk.db.read(
        lambda conn: conn.execute(
            text("SELECT charge_id, payer, units FROM true_up_payers WHERE rerate_id = :r ORDER BY charge_id"),
            {"r": again["rerate_id"]},
        )
    )
    assert [(c, p, int(u)) for c, p, u in given] == [
        (fifth, chart.lot_account(cid, top_up), 30 * CENT),
        (twentieth, chart.lot_account(cid, grant), 20 * CENT),
    ]
    await verified(bk)
    assert len(await _kept(bk, cid)) == 1  # it posted an entry: no record of its own
