"""Probes of the record a re-rate keeps of what it posted each account beyond its payer rows
(`beyond_payer_rows`, 552421a): tampering verify must name, honest ledgers it must not, and the
record's hash through a jsonl export verified offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from billing_kit import BillingKit
from sqlalchemy import text
from test_close_true_up_funding import _closed_per_charge, _damaged, _lot, _rerated, _rerated_again
from test_rerate_volume_true_up import CLOSED, DEC_1, NOV_1, applied, live_lots, november_usage, verified, vol
from test_true_up_payers import _payers, _split_charge

from ledger import seal
from ledger.accounts import ensure_asset
from wallets import chart, rerating
from wallets.service import CustomerSpec

CENT = 10_000_000  # atomic units (9 decimals) of $0.01
YEN = 1_000_000_000  # atomic units (9 decimals) of ¥1


async def _records(bk: BillingKit, cid: str) -> list[dict]:
    """The re-rate entries' `beyond_payer_rows` of `cid`, in entry order ({} where none)."""
    rows = await bk.db.read(
        lambda conn: conn.execute(
            text(
                "SELECT metadata FROM journal_entries WHERE kind = 'rerate_adjustment' AND customer_id = :c ORDER BY id"
            ),
            {"c": cid},
        )
    )
    return [m.get("beyond_payer_rows", {}) for (m,) in rows]


def _offline_verified(url: str, tmp_path: Path, *window: str) -> str:
    """`audit export --format jsonl` of the ledger (of a window: `--from`, `--to`), then `audit
    verify --file` of it, offline: what it printed."""
    path = tmp_path / "journal.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "export", "--format", "jsonl", "--out", str(path), *window],
        env={**os.environ, "TOKENTILL_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "beyond_payer_rows" in path.read_text()
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    verified = subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", "verify", "--file", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return verified.stdout


async def _sealed(bk: BillingKit) -> None:
    assert await bk.db.run(seal.seal_once) is not None


async def test_rows_moved_between_two_re_rates_of_one_payer_are_named(fresh_db) -> None:
    """The module's split charge re-rated twice (test_true_up_payers): of the 5th the first re-rate
    gave A $0.30, the second took $0.18 back. $0.10 of A's first row moved to its second (A's rows
    of the 5th $0.20 and -$0.08: A's rows in all unchanged, $0.12) is named: each re-rate's rows of
    the 5th no longer sum to what it gave back of it, and each entry's posting to A is not its rows
    and its record."""
    bk = BillingKit(fresh_db)
    cid = "moved-across"
    a, _ = await _split_charge(bk, cid)
    first = await _rerated(bk, "20", "5")
    again = await _rerated_again(bk, "20", "8")
    await verified(bk)
    charge = min(c for _, c, _ in await _payers(bk, cid))
    params = {"a": chart.lot_account(cid, a), "c": charge, "r1": first["rerate_id"], "r2": again["rerate_id"]}
    damaged = await _damaged(
        bk,
        params,
        "UPDATE true_up_payers SET units = units - 100000000 WHERE rerate_id = :r1 AND charge_id = :c AND payer = :a",
        "UPDATE true_up_payers SET units = units + 100000000 WHERE rerate_id = :r2 AND charge_id = :c AND payer = :a",
    )
    assert damaged[0] == "credit_notes" and len(damaged) > 1, damaged


async def test_a_row_for_an_account_the_entry_never_posted_is_named(fresh_db) -> None:
    """The second re-rate took $0.18 of the 5th from A. $0.05 of it given instead to a lot of
    another customer (A's row -$0.23, the other's +$0.05: the 5th's sum kept) is named: the entry
    posted that account nothing."""
    bk = BillingKit(fresh_db)
    cid = "stranger-row"
    a, _ = await _split_charge(bk, cid)
    await _rerated(bk, "20", "5")
    again = await _rerated_again(bk, "20", "8")
    charge = min(c for _, c, _ in await _payers(bk, cid))
    stranger = chart.lot_account("someone-else", "lot-x")
    params = {"a": chart.lot_account(cid, a), "c": charge, "r": again["rerate_id"], "x": stranger}
    damaged = await _damaged(
        bk,
        params,
        """
        INSERT INTO true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer, units, created_at, written)
        SELECT lane, customer_id, period, rerate_id, charge_id, :x, 50000000, created_at, written
          FROM true_up_payers WHERE rerate_id = :r AND charge_id = :c AND payer = :a""",
        "UPDATE true_up_payers SET units = units - 50000000 WHERE rerate_id = :r AND charge_id = :c AND payer = :a",
        ordered=True,
    )
    assert damaged[0] == "credit_notes" and any(stranger in p for p in damaged), damaged


async def test_the_record_altered_with_the_rows_is_caught_by_the_entry_s_hash(fresh_db) -> None:
    """As test_verify_names_the_payers_whose_re_rate_rows_were_moved_between_them, A's row of the
    5th made -$0.08 and a B row of -$0.10 added, and the record made to match: A -$0.09 - $0.10 =
    -$0.19 beyond its rows (-$0.08 - $0.19 = the -$0.27 posted), B +$0.10 (-$0.22 + $0.10 = the
    -$0.12 posted). The per-charge sums, the bounds and the record now agree; the sealed entry's
    hash does not."""
    bk = BillingKit(fresh_db)
    cid = "record-forged"
    a, b = await _split_charge(bk, cid)
    await _rerated(bk, "20", "5")
    again = await _rerated_again(bk, "20", "8")
    payer_a, payer_b = chart.lot_account(cid, a), chart.lot_account(cid, b)
    record = (await _records(bk, cid))[-1]
    assert record[payer_a] == -9 * CENT and payer_b not in record, record
    await _sealed(bk)
    await verified(bk)
    charge = min(c for _, c, _ in await _payers(bk, cid))
    forged = {**record, payer_a: -19 * CENT, payer_b: 10 * CENT}
    params = {"a": payer_a, "b": payer_b, "c": charge, "r": again["rerate_id"], "m": json.dumps(forged)}
    rows = (
        """INSERT INTO true_up_payers (lane, customer_id, period, rerate_id, charge_id, payer, units, created_at,
                                           written)
               SELECT lane, customer_id, period, rerate_id, charge_id, :b, -100000000, created_at, written
                 FROM true_up_payers WHERE rerate_id = :r AND charge_id = :c AND payer = :a""",
        "UPDATE true_up_payers SET units = -80000000 WHERE rerate_id = :r AND charge_id = :c AND payer = :a",
    )
    forge = """UPDATE journal_entries SET metadata = jsonb_set(metadata, '{beyond_payer_rows}', CAST(:m AS jsonb))
                WHERE kind = 'rerate_adjustment' AND metadata ->> 'rerate_id' = :r"""
    damaged = await _damaged(bk, params, *rows, forge)
    assert "credit_notes" not in damaged, damaged  # the record and the rows agree: only the hash tells
    assert damaged and damaged[0] != "credit_notes", damaged
    assert any("altered" in p or "hash" in p for p in damaged[1:]), damaged


async def test_a_ledger_of_re_rates_of_mixed_payers_verifies_and_its_export_offline(
    fresh_db, scratch_url, tmp_path: Path
) -> None:
    """Honest ledgers: the split charge re-rated twice (lots A and B), a top-up and a grant whose
    first re-rate posted no entry, a postpaid customer (the receivable), a JPY customer's split
    charge re-rated twice; each verifies, sealed, in the database and as a jsonl export offline,
    whole and as a window; the re-rate entries carry their records."""
    bk = BillingKit(fresh_db)
    split, post, yen = "mixed-split", "mixed-post", "mixed-yen"
    _, b = await _split_charge(bk, split)
    _, grant = await _closed_per_charge(bk, "mixed-no-entry", grant_expires=None)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.customer(post, billing_mode="postpaid", book="vol")
    await november_usage(bk, post)
    # JPY, a book of its own: ¥2,000/M to 100,000, ¥1,000/M beyond (the module's prices x 100 in
    # yen: ¥100 and ¥500 top-ups, the 5th ¥120 split ¥100/¥20, the 20th ¥80 + ¥30 = ¥110)
    await bk.db.run(lambda conn: ensure_asset(conn, "JPY", 9))
    await bk.add_book({**vol("y1", "2026-01-01T00:00:00Z", "2000", "1000"), "id": "yen", "currency": "JPY"})
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.service.create_customer(CustomerSpec(yen, yen, "JPY", "prepaid", "yen", 0, None))
    ya = await _lot(bk, yen, "topup", "100")
    bk.clock.now = datetime(2026, 11, 2, 12, tzinfo=UTC)
    await _lot(bk, yen, "topup", "500")
    await november_usage(bk, yen)
    await bk.close(CLOSED)
    # the volume book re-rated to $30/M and $10/M: the no-entry customer's lines net 0 (test_close_
    # true_up_funding), the others' do not; then to $30/M and $5/M
    first = await _rerated(bk, "30", "10")
    assert [c["entry_ids"] for c in first["customers"] if c["customer_id"] == "mixed-no-entry"] == [[]], first
    await _rerated_again(bk, "30", "5", on=datetime(2026, 12, 3, tzinfo=UTC))
    # the yen book: ¥2,000/M and ¥500/M, then ¥2,000/M and ¥800/M (as test_true_up_payers in yen:
    # the second takes ¥18 of the 5th back from A and ¥12 of the 20th from B, A pays the 20th's +¥9)
    await bk.add_book({**vol("y2", "2026-11-01T00:00:00Z", "2000", "500"), "id": "yen", "currency": "JPY"})
    await applied(bk, rerating.RerateSpec("yen", "y2", NOV_1, DEC_1, None))
    await bk.add_book({**vol("y3", "2026-11-02T00:00:00Z", "2000", "800"), "id": "yen", "currency": "JPY"})
    bk.clock.now = datetime(2026, 12, 4, tzinfo=UTC)
    await applied(bk, rerating.RerateSpec("yen", "y3", datetime(2026, 11, 2, tzinfo=UTC), DEC_1, None))
    # A: paid ¥100 of the 5th, got ¥40 back at the close and ¥30 of y2, y3 took ¥18 and the 20th's ¥9:
    # ¥100 - ¥100 + ¥40 + ¥30 - ¥18 - ¥9 = ¥43, ¥9 of the ¥27 debited beyond A's rows
    assert (await live_lots(bk, yen))[ya] == ("topup", 43 * YEN)
    assert (await _records(bk, yen))[-1][chart.lot_account(yen, ya)] == -9 * YEN
    # the $30/M and $5/M re-rate of each volume customer: the 20th $1.20 + 30,000 x $5/M = $1.35 (-$0.15,
    # beyond the rows, to the 20th's payer), revenue -$0.15 - $0.50 (the true-up's $0.50 more back)
    lot = {
        split: chart.lot_account(split, b),
        "mixed-no-entry": chart.lot_account("mixed-no-entry", grant),
        post: chart.receivable_account(post),
    }
    for cid, payer in lot.items():
        record = (await _records(bk, cid))[-1]
        assert record["income:platform:usage:USD"] == -65 * CENT, (cid, record)
        assert record[payer] == 15 * CENT, (cid, record)
    await verified(bk)
    await _sealed(bk)
    await verified(bk)
    assert "verified offline: 23 entries, 1 seals intact" in _offline_verified(scratch_url, tmp_path)
    window = tmp_path / "window"
    window.mkdir()  # December's re-rates: their seal, whole
    assert "entries, 1 seals intact" in _offline_verified(
        scratch_url, window, "--from", "2026-12-01T00:00:00Z", "--to", "2026-12-05T00:00:00Z"
    )


async def test_a_re_rate_entry_written_before_the_record_verifies(fresh_db) -> None:
    """A database written before 552421a: the re-rate entries keep no `beyond_payer_rows` (taken
    out by hand, nothing sealed). Verify passes as it did: such an entry is not tied."""
    bk = BillingKit(fresh_db)
    cid = "no-record"
    await _split_charge(bk, cid)
    await _rerated(bk, "20", "5")
    await _rerated_again(bk, "20", "8")
    assert all(await _records(bk, cid))
    assert (
        await _damaged(
            bk,
            {"c": cid},
            """UPDATE journal_entries SET metadata = metadata - 'beyond_payer_rows'
                                               WHERE customer_id = :c AND kind = 'rerate_adjustment'""",
        )
        == []
    )
