"""A re-rate's payer rows in the JSON-lines export (version 3: `payer` records, counted by the end
record), tied by the offline verifier to the re-rate's entry as `audit verify` ties them: of each
account, the rows and what the entry recorded beyond them (`beyond_payer_rows`, in its hash) sum to
what the entry gave it back.

By hand (test_close_true_up_funding): book `vol`, $20/M to 100,000 output tokens, $10/M beyond. A
$1.20 top-up pays the 5th's 60,000 tokens ($1.20), a $5.00 grant the 20th's 70,000 ($0.80 + $0.30 =
$1.10). The close (130,000 x $10/M = $1.30, -$1.00) gives $0.60 of the 5th back to the top-up and
$0.40 of the 20th to the grant. The fix, $20/M and $5/M: the 20th is $0.80 + 30,000 x $5/M = $0.95
(-$0.15, to the grant that paid it); the true-up 130,000 x $5/M - $2.15 = -$1.50 where -$1.00
stands, $0.50 more back, split between the two payers: the 5th costs $0.30 at $5/M, $0.90 below its
$1.20, the close gave back $0.60: $0.30 to the top-up; the 20th costs $0.35, $0.60 below its $0.95,
the close gave back $0.40: $0.20 to the grant. The re-rate's rows: [5th, top-up, $0.30], [20th,
grant, $0.20]; its entry gives the top-up $0.30 (its row) and the grant $0.35 ($0.20 its row, $0.15
beyond: the 20th's own decrease)."""

from __future__ import annotations

import io
import json

from billing_kit import BillingKit
from test_close_true_up_funding import _closed_per_charge, _rerated

from ledger import export, seal
from ledger.offline import verify_lines
from wallets import chart

CENT = 10_000_000  # atomic units (9 decimals) of $0.01


def _exported(url: str) -> list[dict]:
    out = io.StringIO()
    with export.connect(url) as conn:
        export.write_jsonl(conn, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def _verified(records: list[dict]) -> list[str]:
    return verify_lines(json.dumps(r).encode() for r in records).problems


async def test_a_re_rate_s_payer_rows_are_exported_and_tied_offline_to_its_entry(scratch_url, fresh_db) -> None:
    bk = BillingKit(fresh_db)
    cid = "exported-payers"
    top_up, grant = await _closed_per_charge(bk, cid, grant_expires=None)
    done = await _rerated(bk, "20", "5")
    rerate_id = done["rerate_id"]
    (entry_id,) = done["customers"][0]["entry_ids"]
    assert await bk.db.run(seal.seal_once) is not None
    records = _exported(scratch_url)
    t, g = chart.lot_account(cid, top_up), chart.lot_account(cid, grant)
    payers = [r for r in records if r["type"] == "payer"]
    fifth, twentieth = sorted(r["charge_id"] for r in payers)
    kept = [(r["rerate_id"], r["customer_id"], r["period"], r["charge_id"], r["payer"], r["units"]) for r in payers]
    assert kept == [
        (rerate_id, cid, "2026-11", fifth, t, 30 * CENT),
        (rerate_id, cid, "2026-11", twentieth, g, 20 * CENT),
    ]
    assert records[0]["version"] == 3 and records[-1]["payers"] == 2, (records[0], records[-1])
    assert _verified(records) == []
    # one payer row edited: the top-up's $0.30 made $0.40, which its entry posted it $0.30 of, none beyond
    edited = [dict(r, units=40 * CENT) if r["type"] == "payer" and r["payer"] == t else r for r in records]
    assert _verified(edited) == [
        f"true-up record of re-rate {rerate_id} of customer {cid}, 2026-11: its payers' rows give {t} 400000000 back, "
        f"its entry {entry_id} posted it 300000000 (0 of it beyond its payers' rows, as it recorded)"
    ]
    # moved to the grant: the top-up's rows give it 0 of its $0.30, the grant's $0.50 of its $0.35 ($0.15 beyond)
    moved = [dict(r, payer=g) if r["type"] == "payer" and r["payer"] == t else r for r in records]
    named = _verified(moved)
    assert len(named) == 2 and {p.split(": ", 1)[1] for p in named} == {
        f"its payers' rows give {g} 500000000 back, its entry {entry_id} posted it 350000000 (150000000 of it beyond "
        "its payers' rows, as it recorded)",
        f"its payers' rows give {t} 0 back, its entry {entry_id} posted it 300000000 (0 of it beyond its payers' "
        "rows, as it recorded)",
    }, named
    # removed, with the end record's count: the top-up's row is missing
    removed = [r for r in records if not (r["type"] == "payer" and r["payer"] == t)]
    removed[-1] = dict(removed[-1], payers=1)
    assert [p.split(": ", 1)[1] for p in _verified(removed)] == [
        f"its payers' rows give {t} 0 back, its entry {entry_id} posted it 300000000 (0 of it beyond its payers' "
        "rows, as it recorded)"
    ]
    # the same file as a version 2 export wrote it (no payer record, no count): still verifies
    before = [dict(r, version=2) if r["type"] == "export" else r for r in records if r["type"] != "payer"]
    before[-1] = {k: v for k, v in before[-1].items() if k != "payers"}
    assert _verified(before) == []
    # the grant's row given twice (the end record counting 3): named as such, and the grant's rows then
    # give it $0.40, of the $0.35 its entry posted it ($0.15 beyond)
    grant_row = next(r for r in records if r["type"] == "payer" and r["payer"] == g)
    twice = [*records[:-1], grant_row, dict(records[-1], payers=3)]
    assert _verified(twice) == [
        f"line {len(records)}: re-rate {rerate_id} of customer {cid}, 2026-11 gives {g} of charge {twentieth} twice "
        "(a true-up writes one row a charge and payer)",
        f"true-up record of re-rate {rerate_id} of customer {cid}, 2026-11: its payers' rows give {g} 400000000 back, "
        f"its entry {entry_id} posted it 350000000 (150000000 of it beyond its payers' rows, as it recorded)",
    ]
    # a payer record in a version 2 file, which no export of that version writes: named, not tied
    old = [dict(r, version=2) if r["type"] == "export" else r for r in records]
    assert _verified(old) == [
        f"line {n}: a payer record in a version 2 export (written from version 3 on: not tied here)"
        for n, r in enumerate(records, 1)
        if r["type"] == "payer"
    ]
