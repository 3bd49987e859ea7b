"""Re-rating after a price fix (issue 11, acceptance 5), worked by hand: the preview is exactly
what apply posts, per customer, model and token type; applying twice (or at once, twice) moves
money once; a second correction adjusts by its difference only; credit notes tie out to the
adjustment entries; money goes back where it came from; verify stays ok."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from alembic import command
from billing_kit import BillingKit
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from ledger.audit import trial_balance, verify
from wallets import expiry, rerating
from wallets.audit import WALLET_CHECKS
from wallets.errors import (
    ConflictError,
    InvalidRangeError,
    UnknownPriceBookError,
    UnknownPriceVersionError,
    VersionNotInForceError,
)

NOV_1 = datetime(2026, 11, 1, tzinfo=UTC)
NOV_2 = datetime(2026, 11, 2, tzinfo=UTC)
DEC_1 = datetime(2026, 12, 1, tzinfo=UTC)
DEC_1_GRACE_OVER = datetime(2026, 12, 1, 1, 0, tzinfo=UTC)
DEC_2 = datetime(2026, 12, 2, tzinfo=UTC)


def book(version: str, effective_from: str, a_in: str) -> dict[str, Any]:
    return {"id": "fix", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": "a-in", "model": "model-a", "token_type": "input", "price": a_in},
        {"id": "a-out", "model": "model-a", "token_type": "output", "price": "20.00"},
        {"id": "b-in", "model": "model-b", "token_type": "input", "price": "5.00"},
        {"id": "b-out", "model": "model-b", "token_type": "output", "price": "10.00"},
        {"id": "call", "token_type": "request", "price": "0.01"},
    ]}


V1 = book("v1", "2026-01-01T00:00:00Z", "10.00")
V2 = book("v2", "2026-11-01T00:00:00Z", "8.00")  # the fix: model-a input was $8/M from November on
V3 = book("v3", "2026-11-02T00:00:00Z", "9.00")  # and then a second fix, from the 2nd


def units(amount: str) -> int:
    return int(Decimal(amount).scaleb(9))


def spec(version: str, start: datetime = NOV_1, end: datetime = DEC_1, customer: str | None = None):
    return rerating.RerateSpec("fix", version, start, end, customer)


async def entries(bk: BillingKit, kind: str = "rerate_adjustment") -> list[Any]:
    return list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id, customer_id FROM journal_entries WHERE kind = :k ORDER BY id"), {"k": kind})))


async def revenue_of(bk: BillingKit, entry_id: int) -> int:
    return int(await bk.db.read(lambda conn: conn.scalar(text(
        """SELECT -coalesce(sum(p.amount), 0) FROM postings p JOIN accounts a ON a.id = p.account_id
            WHERE p.entry_id = :e AND a.code LIKE 'income:platform:usage:%'"""), {"e": entry_id})))


async def wallet(bk: BillingKit, cid: str):
    return await bk.service.wallet(cid)


async def verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


@pytest.fixture
async def fixed(fresh_db) -> BillingKit:
    kit = BillingKit(fresh_db)
    await kit.add_book(V1)
    return kit


async def test_preview_is_exactly_what_apply_posts_and_a_credit_note_ties_out(fixed: BillingKit) -> None:
    bk = fixed
    cid = await bk.customer("pre", book="fix")
    await bk.top_up(cid, "10.00")
    at = datetime(2026, 11, 10, tzinfo=UTC)
    rid = await bk.reserve(cid, "model-a", "1.00")
    await bk.settle(cid, rid, 50_000, 0)  # $0.50 + $0.01 (Nov 23), from the hold
    await bk.event(cid, "model-a", 1_000_000, 100_000, at=at)  # $10 + $2 + $0.01 under v1
    await bk.event(cid, "model-b", 1_000_000, 0, at=at)  # $5.01: model-b is not corrected
    # $17.53 charged; $10 from the lot, $7.53 on the receivable (overdrawn)
    await bk.close(DEC_1_GRACE_OVER)
    [invoice] = await bk.invoices(cid)
    assert invoice["total"] == "17.53"
    await bk.add_book(V2)
    bk.clock.now = DEC_2

    seen = await rerating.preview(bk.db, bk.service.engine.books, spec("v2"))
    # by hand: model-a input 1,050,000 tokens at $8/M instead of $10/M: 10.50 -> 8.40, -2.10; the two
    # charges it corrects stood at $0.51 + $12.01 = $12.52 and stand at $0.41 + $10.01 = $10.42 (their
    # output and call fees as they were: counted, not listed); model-b's $5.01 is not corrected
    assert seen["customers"] == [{"customer_id": cid, "charges": 2, "old_amount": "12.52", "new_amount": "10.42",
                                  "delta": "-2.10", "lines": [{"model": "model-a", "token_type": "input",
                                                              "old_amount": "10.50", "new_amount": "8.40",
                                                              "delta": "-2.10"}]}]
    assert seen["delta"] == "-2.10"
    assert await entries(bk) == []  # a preview changes nothing

    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), "fix-1")
    assert done["customers"] == [{**seen["customers"][0], "entry_ids": done["customers"][0]["entry_ids"]}]
    assert done["delta"] == seen["delta"] and done["errors"] == []
    [(entry_id, owner)] = await entries(bk)
    assert owner == cid and done["customers"][0]["entry_ids"] == [entry_id]
    assert await revenue_of(bk, entry_id) == -2_100_000_000
    [note] = done["credit_notes"]
    assert note["number"] == "CN-2026-000001" and note["kind"] == "credit" and note["total"] == "-2.10"
    assert note["invoice_id"] == invoice["id"]
    document = await bk.db.read(lambda conn: rerating.credit_note(conn, note["id"]))
    assert document["entry_id"] == entry_id and document["invoice_number"] == invoice["number"]
    assert document["lines"] == [{"model": "model-a", "token_type": "input", "old_amount": "10.50",
                                  "new_amount": "8.40", "amount": "-2.10"}]
    # Each charge's decrease goes back to what paid it, the last consumed first: the hold's charge
    # ($0.51, 50,000 input tokens: $0.50 -> $0.40) was paid by the lot alone, its $0.10 back to the
    # lot; the 10th's ($12.01: the lot's $9.49 left, then $2.52 on the receivable) -$2.00 off what
    # the receivable paid of it ($2.52, consumed last): $7.53 - $2.00 = $5.53 owed. (It took all
    # $2.10 off the receivable, counting all it paid, $2.52, against both decreases: $5.43.)
    w = await wallet(bk, cid)
    assert w.receivable == 5_530_000_000 and w.available == 100_000_000
    # The closed invoice is untouched; the next one carries the adjustment with its period. What
    # may still be paid on it is what is owed: the $2.00 is off the receivable already.
    [after] = await bk.invoices(cid)
    # it names its credit note beside its document as issued (the $2.10 the adjustment took off)
    noted = [{"id": note["id"], "number": note["number"], "kind": "credit", "total": "-2.10",
              "issued_at": after["credit_notes"][0]["issued_at"]}]
    assert after == {**invoice, "amount_remaining": "5.53", "credit_notes": noted}
    assert invoice["amount_remaining"] == "7.53" and invoice["credit_notes"] == []
    upcoming = await bk.upcoming(cid)
    assert [(ln["kind"], ln["model"], ln["token_type"], ln["amount"], ln["original_period"])
            for ln in upcoming["lines"]] == [("adjustment", "model-a", "input", "-2.10", "2026-11")]
    assert upcoming["total"] == "-2.10" and upcoming["subtotals"]["adjustments"] == "-2.10"
    assert upcoming["adjustments"] == upcoming["lines"]
    await verified(bk)


async def test_applying_twice_moves_money_once_and_a_second_fix_adjusts_by_its_difference(
        fixed: BillingKit) -> None:
    bk = fixed
    cid = await bk.customer("pre", book="fix")
    await bk.top_up(cid, "20.00")
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))  # $10.01
    await bk.add_book(V2)
    first = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    again = await rerating.apply(bk.db, bk.service.engine, spec("v2"), "other-key")
    assert again == first and first["delta"] == "-2.00"
    assert len(await entries(bk)) == 1
    # Open period: no credit note; the money goes back to the lot it came from.
    assert first["credit_notes"] == []
    w = await wallet(bk, cid)
    assert w.available == 11_990_000_000 and len(w.grants) == 1  # back into the same lot
    # v3 ($9/M) from Nov 2: the charge stands at v2's $8.01, so it moves by +$1.00, not +$2.00 - ...
    await bk.add_book(V3)
    third = await rerating.apply(bk.db, bk.service.engine, spec("v3", start=NOV_2), None)
    assert third["customers"][0]["lines"] == [{"model": "model-a", "token_type": "input", "old_amount": "8.00",
                                               "new_amount": "9.00", "delta": "1.00"}]
    w = await wallet(bk, cid)
    assert w.available == 10_990_000_000
    assert len(await entries(bk)) == 2
    # the same re-rate under an Idempotency-Key used for another one is a conflict
    await rerating.apply(bk.db, bk.service.engine, spec("v3", start=NOV_2, customer=cid), "k")
    with pytest.raises(ConflictError):
        await rerating.apply(bk.db, bk.service.engine, spec("v3", start=NOV_2), "k")
    assert len(await entries(bk)) == 2  # that one found nothing left to move
    await verified(bk)


async def test_a_fix_that_drops_the_request_fee_gives_each_call_s_fee_back_once(fixed: BillingKit) -> None:
    bk = fixed
    cid = await bk.customer("fee", book="fix")
    await bk.top_up(cid, "20.00")
    rid = await bk.reserve(cid, "model-a", "5.00")
    await bk.settle(cid, rid, 100_000, 0, final=False)  # $1.00 and the call's $0.01 fee (Nov 23)
    await bk.settle(cid, rid, 100_000, 0)  # $1.00: the fee was paid by the first capture
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))  # $10.01
    assert (await wallet(bk, cid)).available == 7_980_000_000  # $20 - $12.02
    # the fix: the same prices from November, without the per-request fee
    await bk.add_book({**V1, "version": "no-fee", "effective_from": "2026-11-01T00:00:00Z",
                       "rules": [r for r in V1["rules"] if r["id"] != "call"]})
    seen = await rerating.preview(bk.db, bk.service.engine.books, spec("no-fee"))  # was: unpriced_model
    done = await rerating.apply(bk.db, bk.service.engine, spec("no-fee"), None)
    assert done["errors"] == [] and done["delta"] == seen["delta"] == "-0.02"
    assert done["customers"][0]["lines"] == [{"model": "model-a", "token_type": "request", "old_amount": "0.02",
                                              "new_amount": "0.00", "delta": "-0.02"}]
    assert (await wallet(bk, cid)).available == 8_000_000_000
    await verified(bk)


async def test_a_customer_the_fix_cannot_rate_is_listed_in_the_preview_s_errors_as_apply_lists_it(
        fixed: BillingKit) -> None:
    bk = fixed
    a, b = await bk.customer("uses-a", book="fix"), await bk.customer("uses-b", book="fix")
    for cid in (a, b):
        await bk.top_up(cid, "20.00")
    at = datetime(2026, 11, 10, tzinfo=UTC)
    await bk.event(a, "model-a", 1_000_000, 0, at=at)  # $10.01
    await bk.event(b, "model-b", 1_000_000, 0, at=at)  # $5.01
    # the fix prices model-a input at $8/M and has no rule for model-b: b's charge cannot be rated
    await bk.add_book({**V2, "version": "a-only", "rules": [r for r in V2["rules"] if not r["id"].startswith("b-")]})
    seen = await rerating.preview(bk.db, bk.service.engine.books, spec("a-only"))  # was: unpriced_model, all of it
    done = await rerating.apply(bk.db, bk.service.engine, spec("a-only"), None)
    assert [c["customer_id"] for c in seen["customers"]] == [c["customer_id"] for c in done["customers"]] == [a]
    assert seen["delta"] == done["delta"] == "-2.00"
    assert [(e["customer_id"], e["period"], e["code"]) for e in seen["errors"]] == [(b, "2026-11", "unpriced_model")]
    assert [(e["customer_id"], e["period"], e["code"]) for e in done["errors"]] == [(b, "2026-11", "unpriced_model")]
    await verified(bk)


async def test_money_back_from_a_promotional_grant_expired_since_goes_to_breakage(fixed: BillingKit) -> None:
    bk = fixed
    cid = await bk.customer("promo", book="fix")
    await bk.grant(cid, "20.00", expires_at=datetime(2026, 11, 24, tzinfo=UTC))
    await bk.top_up(cid, "5.00")
    # $10.01 under v1, paid by the grant (consumed first: it expires); then the grant expires
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    assert await expiry.expire_grants(bk.db, bk.clock.now) == 1
    breakage_before = await account_total(bk, "income:platform:breakage:USD")
    assert breakage_before == -9_990_000_000  # the grant's remainder: $20.00 - $10.01
    await bk.add_book(V2)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["delta"] == "-2.00"
    # had the charge been $8.01, the grant would have left $11.99 to breakage: the $2.00 goes
    # there, not to the customer (no credit lot: the paid top-up stays the only live lot)
    [(entry_id, _)] = await entries(bk)
    assert await revenue_of(bk, entry_id) == -2_000_000_000
    assert await account_total(bk, "income:platform:breakage:USD") == breakage_before - 2_000_000_000
    w = await wallet(bk, cid)
    assert w.available == 5_000_000_000 and len(w.grants) == 1
    await verified(bk)


async def account_total(bk: BillingKit, code: str) -> int:
    """An account's balance, its stripes summed (signed, debit > 0)."""
    return int(await bk.db.read(lambda conn: conn.scalar(text(
        """SELECT coalesce(sum(p.amount), 0) FROM postings p JOIN accounts a ON a.id = p.account_id
            WHERE a.code = :c OR a.code LIKE :stripes"""), {"c": code, "stripes": code + ":%"})))


async def test_two_concurrent_applies_move_money_once(fixed: BillingKit) -> None:
    bk = fixed
    customers = [await bk.customer(f"c{i}", billing_mode="postpaid", book="fix") for i in range(4)]
    for cid in customers:
        for _ in range(3):
            await bk.event(cid, "model-a", 333_333, 10, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    await bk.add_book(V2)
    bk.clock.now = DEC_2
    one, two = await asyncio.gather(rerating.apply(bk.db, bk.service.engine, spec("v2"), None),
                                    rerating.apply(bk.db, bk.service.engine, spec("v2"), None))
    assert one == two
    assert len(await entries(bk)) == 4 and len(one["credit_notes"]) == 4
    assert sorted(n["number"] for n in one["credit_notes"]) == [f"CN-2026-00000{i}" for i in range(1, 5)]
    # 3 calls of 333,333 input tokens: $3.33333 each at $10/M, $2.666664 at $8/M (exact at 9 decimals)
    for c in one["customers"]:
        assert c["lines"] == [{"model": "model-a", "token_type": "input", "old_amount": "9.99999",
                               "new_amount": "7.999992", "delta": "-1.999998"}]
    for note in one["credit_notes"]:
        document = await bk.db.read(lambda conn, n=note: rerating.credit_note(conn, n["id"]))
        assert units(document["total"]) == sum(units(ln["amount"]) for ln in document["lines"])
        assert await revenue_of(bk, document["entry_id"]) == units(document["total"]) == -1_999_998_000
    await verified(bk)


async def test_bad_requests_are_refused_with_stable_codes(fixed: BillingKit) -> None:
    bk = fixed
    await bk.add_book(V2)
    cases = [
        (rerating.RerateSpec("nope", "v2", NOV_1, DEC_1), UnknownPriceBookError),
        (spec("v9"), UnknownPriceVersionError),
        (spec("v2", start=DEC_1, end=NOV_1), InvalidRangeError),
        (spec("v2", start=DEC_1, end=DEC_1), InvalidRangeError),
        (spec("v1"), VersionNotInForceError),  # v2 took over on Nov 1
        (spec("v2", start=datetime(2026, 10, 1, tzinfo=UTC)), VersionNotInForceError),
    ]
    for wrong, error in cases:
        with pytest.raises(error):
            await rerating.preview(bk.db, bk.service.engine.books, wrong)
        with pytest.raises(error):
            await rerating.apply(bk.db, bk.service.engine, wrong, None)


async def test_the_database_guards_adjustments_and_credit_notes(fixed: BillingKit) -> None:
    bk = fixed
    cid = await bk.customer("post", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    await bk.add_book(V2)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    [note] = done["credit_notes"]
    attempts = [
        "UPDATE credit_notes SET total = total - 1",
        "DELETE FROM credit_notes",
        "TRUNCATE credit_notes CASCADE",
        "UPDATE charge_adjustments SET new_amount = new_amount + 1",
        "DELETE FROM charge_adjustments",
        "UPDATE rerates SET version = 'v1'",
        # a second adjustment of the charge to the same version
        """INSERT INTO charge_adjustments (lane, charge_id, corrected_version, rerate_id, customer_id, period,
                  old_amount, new_amount, old_lines, new_lines)
           SELECT lane, charge_id, corrected_version, rerate_id, customer_id, period, new_amount, old_amount,
                  new_lines, old_lines FROM charge_adjustments""",
        # a credit note numbered past a gap
        """INSERT INTO credit_notes (id, lane, customer_id, invoice_id, rerate_id, kind, issuer, year, seq, number,
                  currency, total, entry_id, content, content_hash, issued_at)
           SELECT 'cn_gap', lane, customer_id, invoice_id, rerate_id, kind, issuer, year, 3, 'CN-2026-000003',
                  currency, total, entry_id, jsonb_set(jsonb_set(content, '{id}', '"cn_gap"'), '{number}',
                  '"CN-2026-000003"'), sha256(convert_to(jsonb_set(jsonb_set(content, '{id}', '"cn_gap"'),
                  '{number}', '"CN-2026-000003"')::text, 'UTF8')), issued_at FROM credit_notes""",
    ]
    for sql in attempts:
        with pytest.raises(DBAPIError):
            await bk.db.run(lambda conn, sql=sql: conn.execute(text(sql)))
    assert (await bk.db.read(lambda conn: rerating.credit_note(conn, note["id"])))["total"] == "-2.00"
    await verified(bk)


# A copy of credit note seq 1 under another re-rate (so its (re-rate, invoice) pair is new), with
# its own id, seq, number, content and hash: only the numbering can refuse it.
FORGED_NOTE = """
INSERT INTO credit_notes (id, lane, customer_id, invoice_id, rerate_id, kind, issuer, year, seq, number,
                          currency, total, entry_id, content, content_hash, issued_at)
SELECT f.id, c.lane, c.customer_id, c.invoice_id, %(rerate)s, c.kind, c.issuer, c.year, f.seq, f.number,
       c.currency, c.total, c.entry_id, f.content, sha256(convert_to(f.content::text, 'UTF8')), c.issued_at
  FROM credit_notes c
 CROSS JOIN LATERAL (SELECT %(id)s::text AS id, %(seq)s::bigint AS seq,
                            c.issuer || '-' || lpad(c.year::text, 4, '0') || '-' || lpad(%(seq)s::text, 6, '0')
                              AS number) n
 CROSS JOIN LATERAL (SELECT n.id, n.seq, n.number,
                            jsonb_set(jsonb_set(c.content, '{id}', to_jsonb(n.id)), '{number}', to_jsonb(n.number))
                              AS content) f
 WHERE c.seq = 1"""


async def test_credit_note_numbers_have_no_gap_and_no_duplicate_even_when_raced(fixed: BillingKit, scratch_url) -> None:
    bk = fixed
    cid = await bk.customer("post", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    await bk.add_book(V2)
    [note] = (await rerating.apply(bk.db, bk.service.engine, spec("v2"), None))["credit_notes"]
    with psycopg.connect(scratch_url) as conn:
        for rerate in ("rr-x", "rr-a", "rr-b"):
            conn.execute("INSERT INTO rerates (id, book_id, version, range_from, range_to, customer_filter) "
                         "SELECT %s, book_id, version, range_from, range_to, %s FROM rerates LIMIT 1", (rerate, rerate))
    with psycopg.connect(scratch_url) as conn:
        for seq in (3, 1):  # past a gap; the number already issued
            with pytest.raises(psycopg.errors.CheckViolation, match="would leave a gap"), conn.transaction():
                conn.execute(FORGED_NOTE, {"rerate": "rr-x", "id": f"cn-{seq}", "seq": seq})
    # Two writers that both see seq 1 as the last: the second to commit is refused, not numbered twice.
    with psycopg.connect(scratch_url) as a, psycopg.connect(scratch_url, autocommit=True) as b:
        a.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        assert a.execute("SELECT max(seq) FROM credit_notes").fetchone()[0] == 1  # a's snapshot
        b.execute(FORGED_NOTE, {"rerate": "rr-b", "id": "cn-b", "seq": 2})
        with pytest.raises(psycopg.errors.UniqueViolation) as refused:
            a.execute(FORGED_NOTE, {"rerate": "rr-a", "id": "cn-a", "seq": 2})
        assert refused.value.diag.constraint_name in ("credit_notes_number_key", "credit_notes_issuer_year_seq_key")
    with psycopg.connect(scratch_url) as conn:
        rows = conn.execute("SELECT id, seq FROM credit_notes ORDER BY seq").fetchall()
    assert rows == [(note["id"], 1), ("cn-b", 2)]


async def test_going_below_migration_0019_is_refused_while_adjustments_exist(fixed: BillingKit, migrating) -> None:
    bk = fixed
    cid = await bk.customer("pre", book="fix")
    await bk.top_up(cid, "20.00")
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.add_book(V2)
    await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    conn, config = migrating
    with pytest.raises(DBAPIError, match="re-rates were applied"):
        command.downgrade(config, "0018")
    conn.rollback()
    # each migration is a transaction of its own: those above 0019 went down; up again to verify
    command.upgrade(config, "head")
    conn.commit()
    assert len(await entries(bk)) == 1
    await verified(bk)


async def test_a_credit_note_larger_than_the_next_period_s_usage_pays_the_invoice_it_corrects(
        fixed: BillingKit) -> None:
    """Money a credit note gives back off the receivable is netted into the next invoice's
    amount due; when it is more than that period's usage, the rest paid down the receivable the
    corrected invoice is owed on, so it counts there as paid. It was dropped (the next amount due
    is never below 0): the corrected invoice stayed open for more than was owed, and paying it in
    full was refused as an overpayment. By hand: November 1,000,000 input tokens at $10/M + $0.01
    = $10.01 invoiced; the fix ($8/M) gives $2.00 back, billed in December, whose one call costs
    $0.008 + $0.01 + $0.01 = $0.028: December's amount due is $0, and the $1.972 left over pays
    November's $10.01. That left $8.038 to pay, a fraction of a cent: December's close now rounds
    what pays the older invoices to whole minor units, half to even ($1.97; $0.002 back on the
    receivable, credited to the rounding account, shown as December's amount_due_rounding), so
    $8.04 is what is owed and left to pay."""
    bk = fixed
    cid = await bk.customer("post", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    await bk.add_book(V2)
    bk.clock.now = DEC_2
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    [note] = done["credit_notes"]
    assert note["total"] == "-2.00"
    await bk.event(cid, "model-a", 1000, 500)
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (november["amount_due"], december["amount_due"], december["total"]) == ("10.01", "0.00", "-1.972")
    assert december["amount_due_rounding"] == "0.002"
    assert (await wallet(bk, cid)).receivable == 8_040_000_000
    assert (november["payment_status"], november["amount_paid"], november["amount_remaining"]) == (
        "partially_paid", "1.97", "8.04"), november
    assert [(p["amount"], p["reference"]) for p in november["payments"]] == [
        ("1.97", f"credit-note:{note['number']}")]
    paid = await bk.pay(cid, november["id"], "8.04", "wire-1")
    assert paid.status == "paid"
    assert (await wallet(bk, cid)).receivable == 0
    await verified(bk)


async def test_a_re_rate_billed_after_its_period_ended_but_before_its_close_pays_that_invoice(
        fixed: BillingKit) -> None:
    """A re-rate run after the charges' period ended but before it closed is billed in the period
    of its own time (no credit note: nothing was invoiced yet), while the corrected charges are on
    the earlier invoice: the money it gave back off the receivable made the later period's amount
    due negative (shown as 0) and the earlier invoice stayed open for more than was owed (found by
    the tie-out property). By hand: November $10.01 on the receivable; on December 5th the fix
    ($8/M) gives $2.00 back off it, billed in December; November's invoice has $2.00 of it paid and
    $8.01 left, what is owed."""
    bk = fixed
    cid = await bk.customer("late-fix", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 5, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["credit_notes"] == [] and done["delta"] == "-2.00"
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (november["amount_due"], december["amount_due"], december["total"]) == ("10.01", "0.00", "-2.00")
    assert (await wallet(bk, cid)).receivable == 8_010_000_000
    assert (november["payment_status"], november["amount_paid"]) == ("partially_paid", "2.00"), november
    assert [(p["amount"], p["reference"]) for p in november["payments"]] == [("2.00", f"rerate:{done['rerate_id']}")]
    paid = await bk.pay(cid, november["id"], "8.01", "wire-1")
    assert paid.status == "paid"
    await verified(bk)


async def test_a_late_charge_billed_in_an_open_period_is_corrected_there_without_a_credit_note(
        fixed: BillingKit) -> None:
    """A charge whose usage time is in an invoiced period but which arrived after its close is
    billed in the open period (`original_period` marks it): correcting it corrects no invoice. It
    was given a credit note against the earlier invoice, which never carried it, and the note's
    whole minor units rounded the correction away: the next invoice showed the exact adjustment
    in its total while the receivable kept the full charge (found by the tie-out property). By
    hand: November closes empty; on December 2nd one input token used on November 20th arrives,
    $0.00001 + $0.01 = $0.01001 billed in December; the fix ($8/M) makes it $0.010008: no note,
    the exact $0.000002 back off the receivable, December's total $0.010008, due $0.01."""
    bk = fixed
    cid = await bk.customer("late-usage", billing_mode="postpaid", book="fix")
    await bk.close(DEC_1_GRACE_OVER)
    bk.clock.now = DEC_2
    await bk.event(cid, "model-a", 1, 0, at=datetime(2026, 11, 20, tzinfo=UTC))
    await bk.add_book(V2)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["credit_notes"] == [] and done["delta"] == "-0.000002"
    assert (await wallet(bk, cid)).receivable == 10_008_000
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert november["total"] == "0.00"
    assert (december["total"], december["charged_to_account"], december["amount_due"]) == (
        "0.010008", "0.010008", "0.01")
    await verified(bk)


async def test_a_credit_note_corrects_the_invoice_that_carried_the_late_charges(fixed: BillingKit) -> None:
    """Usage of November arriving in December is on December's invoice: once that is finalized,
    a re-rate of November issues its credit note against it, not against November's (which was
    issued before the usage arrived). By hand: 1,000,000 input tokens used on November 20th
    arrive on December 2nd, $10.01 on December's invoice; the fix ($8/M) credits $2.00 of it."""
    bk = fixed
    cid = await bk.customer("late-note", billing_mode="postpaid", book="fix")
    await bk.close(DEC_1_GRACE_OVER)
    bk.clock.now = DEC_2
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 20, tzinfo=UTC))
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (november["total"], december["total"]) == ("0.00", "10.01")
    await bk.add_book(V2)
    bk.clock.now = datetime(2027, 1, 2, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    [note] = done["credit_notes"]
    assert (note["total"], note["invoice_id"]) == ("-2.00", december["id"])
    document = await bk.db.read(lambda conn: rerating.credit_note(conn, note["id"]))
    assert document["invoice_number"] == december["number"] and document["period"] == "2026-11"
    await verified(bk)


async def test_money_back_the_close_rounds_up_pays_the_older_invoice_whole_cents(fixed: BillingKit) -> None:
    """A correction billed in a later period, before the corrected period closed (no note: exact),
    gives back more than that period owes; its close rounds what pays the open invoices to whole
    cents, half to even. Rounded up, the invoice it paid recorded only the correction's exact part,
    so it was left with a fraction the receivable did not owe (found by the tie-out property). By
    hand: 2,501 input tokens on November 10th, $0.02501 + $0.01 = $0.03501, due $0.04; the fix ($8/M)
    on December 1st gives $0.005002 back, billed in December; December's close rounds it to $0.01
    ($0.004998 from the rounding account), November's invoice has $0.01 paid and $0.03 left, owed."""
    bk = fixed
    cid = await bk.customer("round-up", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 2_501, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["credit_notes"] == [] and done["delta"] == "-0.005002"
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (november["total"], november["amount_due"]) == ("0.03501", "0.04")
    assert (december["total"], december["amount_due"], december["amount_due_rounding"]) == (
        "-0.005002", "0.00", "-0.004998")
    assert [(p["amount"], p["reference"]) for p in november["payments"]] == [
        ("0.005002", f"rerate:{done['rerate_id']}"), ("0.004998", "rounding:2026-12")]
    assert (november["amount_paid"], november["amount_remaining"]) == ("0.01", "0.03")
    assert (await wallet(bk, cid)).receivable == 30_000_000
    assert (await bk.pay(cid, november["id"], "0.03", "wire-1")).status == "paid"
    assert (await wallet(bk, cid)).receivable == 0
    await verified(bk)


async def test_money_back_before_the_close_leaves_less_owed_than_the_rounding_takes_off(fixed: BillingKit) -> None:
    """A correction billed in the next period, before the corrected period closed, gives back part
    of what that period charged to account; the close rounds the amount due down by more than the
    receivable still owes. The close posted no rounding then (its guard: never below what the
    receivable owes), and the postpaid invoice asked $0.00001 (found by the tie-out property).
    By hand: a postpaid customer's $0.01 top-up is credit; one input token on November 10th costs
    $0.01001, $0.01 from the credit, $0.00001 charged to account; the fix ($8/M) on December 1st
    00:30 gives $0.000002 back off the receivable, billed in December: $0.000008 owed. November's
    close rounds $0.00001 due down to $0.00 ($0.00001 off): $0.000008 off the receivable, the
    $0.000002 the correction already gave back becomes credit (as money back beyond what is owed
    does). December: total -$0.000002, nothing due; the receivable owes nothing."""
    bk = fixed
    cid = await bk.customer("short", billing_mode="postpaid", book="fix")
    bk.clock.now = datetime(2026, 11, 10, tzinfo=UTC)
    await bk.top_up(cid, "0.01")
    await bk.event(cid, "model-a", 1, 0)
    assert (await wallet(bk, cid)).receivable == 10_000
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["credit_notes"] == [] and done["delta"] == "-0.000002"
    assert (await wallet(bk, cid)).receivable == 8_000
    await bk.close(DEC_1_GRACE_OVER)
    [november] = await bk.invoices(cid)
    assert (november["total"], november["charged_to_account"]) == ("0.01001", "0.00001")
    assert (november["amount_due"], november["amount_due_rounding"]) == ("0.00", "-0.00001"), november
    after = await wallet(bk, cid)
    assert (after.receivable, after.available) == (0, 2_000)
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (december["total"], december["charged_to_account"], december["amount_due"]) == (
        "-0.000002", "-0.000002", "0.00")
    assert (await wallet(bk, cid)).receivable == 0
    await verified(bk)


async def test_the_invoice_billing_a_credit_note_shows_what_the_note_rounded(fixed: BillingKit) -> None:
    """A credit note moves whole cents (its money), its total stays the exact correction: the
    invoice it is billed on shows the difference as credit_note_rounding, so what paid its total
    (credits, charged to account, that) sums to it. By hand: November $0.03501 invoiced (2,501
    input tokens), the fix ($8/M) credits $0.005002, moving $0.01 off the receivable: December's
    total -0.005002, charged to account -0.01, credit note rounding 0.004998."""
    bk = fixed
    cid = await bk.customer("note-round", billing_mode="postpaid", book="fix")
    await bk.event(cid, "model-a", 2_501, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    await bk.close(DEC_1_GRACE_OVER)
    await bk.add_book(V2)
    bk.clock.now = DEC_2
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    [note] = done["credit_notes"]
    assert note["total"] == "-0.005002"
    upcoming = await bk.upcoming(cid)
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    _, december = await bk.invoices(cid)
    for invoice in (upcoming, december):
        assert (invoice["total"], invoice["charged_to_account"], invoice["credit_note_rounding"]) == (
            "-0.005002", "-0.01", "0.004998")
        assert invoice["credits_applied"]["total"] == "0.00"
    await verified(bk)


async def _late_and_own_usage_on_december_s_invoice(bk: BillingKit, cid: str) -> tuple[dict, dict]:
    """1,000,000 input tokens on November 25th (on November's invoice, $10.01), 1,000,000 used on
    November 28th arriving on December 2nd and 1,000,000 on December 3rd (both on December's
    invoice, $20.02); both periods closed; the fix ($8/M from November on) posted on January 2nd."""
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    await bk.event(cid, "model-a", 1_000_000, 0)
    await bk.close(DEC_1_GRACE_OVER)
    bk.clock.now = DEC_2
    await bk.event(cid, "model-a", 1_000_000, 0, at=datetime(2026, 11, 28, tzinfo=UTC))
    bk.clock.now = datetime(2026, 12, 3, tzinfo=UTC)
    await bk.event(cid, "model-a", 1_000_000, 0)
    await bk.close(datetime(2027, 1, 1, 1, 0, tzinfo=UTC))
    november, december = await bk.invoices(cid)
    assert (november["total"], december["total"]) == ("10.01", "20.02")
    await bk.add_book(V2)
    bk.clock.now = datetime(2027, 1, 2, tzinfo=UTC)
    return november, december


async def test_a_re_rate_correcting_late_charges_and_their_invoice_s_own_issues_its_notes(
        fixed: BillingKit) -> None:
    """December's invoice carries November's late usage ($10.01) and December's own ($10.01); a
    re-rate from November 26th (after November's own usage) to January corrects both by -$2.00
    ($8/M). The command of November's charges noted them against December's invoice (the one that
    carried them, e38f58a), and so did December's own: two notes of one re-rate against one
    invoice, which the database refuses (UNIQUE (rerate_id, invoice_id), migration 0019), and the
    whole apply failed (IntegrityError; found by the tie-out property once its workloads closed
    periods and re-rated them). Now what December's invoice carried is corrected in one entry
    with one note against it: -$4.00, its period November's (the earliest usage corrected), the
    adjustment lines -$2.00 for 2026-11 and -$2.00 for 2026-12 on January's invoice."""
    bk = fixed
    cid = await bk.customer("late-and-own", billing_mode="postpaid", book="fix")
    _november, december = await _late_and_own_usage_on_december_s_invoice(bk, cid)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2", datetime(2026, 11, 26, tzinfo=UTC),
                                                                datetime(2027, 1, 1, tzinfo=UTC)), None)
    assert done["errors"] == [] and done["delta"] == "-4.00"
    [note] = done["credit_notes"]
    document = await bk.db.read(lambda conn: rerating.credit_note(conn, note["id"]))
    assert (document["invoice_id"], document["total"], document["amount"], document["period"], document["charges"]) \
        == (december["id"], "-4.00", "-4.00", "2026-11", 2)
    await bk.close(datetime(2027, 2, 1, 1, 0, tzinfo=UTC))
    january = (await bk.invoices(cid))[-1]
    assert sorted((line["original_period"], line["amount"]) for line in january["lines"]
                  if line["kind"] == "adjustment") == [("2026-11", "-2.00"), ("2026-12", "-2.00")]
    assert january["total"] == "-4.00"
    await verified(bk)


async def test_a_re_rate_of_a_period_with_late_charges_notes_each_invoice_what_it_carried(
        fixed: BillingKit) -> None:
    """The same usage, re-rated from November 1st: November's own charge was on November's invoice,
    its late one on December's. The command of November's charges issued one note, against
    November's invoice, for both (-$4.00): November's invoice, which carried $10.01 of them, was
    credited $4.00 and December's, which carried the late $10.01, nothing for it. Now (README,
    Re-rating: a note documents the correction of the invoice that carried the charges): -$2.00
    against November's invoice, -$4.00 against December's (its late and its own charge)."""
    bk = fixed
    cid = await bk.customer("late-split", billing_mode="postpaid", book="fix")
    november, december = await _late_and_own_usage_on_december_s_invoice(bk, cid)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2", NOV_1, datetime(2027, 1, 1, tzinfo=UTC)), None)
    assert done["errors"] == [] and done["delta"] == "-6.00"
    assert sorted((note["invoice_id"] == december["id"], note["total"]) for note in done["credit_notes"]) == [
        (False, "-2.00"), (True, "-4.00")]
    assert {note["invoice_id"] for note in done["credit_notes"]} == {november["id"], december["id"]}
    again = await rerating.apply(bk.db, bk.service.engine, spec("v2", NOV_1, datetime(2027, 1, 1, tzinfo=UTC)), None)
    assert again == done  # the same re-rate again moves nothing and answers the same
    await verified(bk)


async def test_the_notes_of_one_re_rate_share_their_issue_time_and_page_one_at_a_time_by_number(
        fixed: BillingKit) -> None:
    """The late split above: one re-rate issues two notes at one time (January 2nd), -$2.00 and
    -$4.00; the customer's list by 1 is two pages of one (the tie broken by number), each once."""
    bk = fixed
    cid = await bk.customer("late-pages", billing_mode="postpaid", book="fix")
    await _late_and_own_usage_on_december_s_invoice(bk, cid)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2", NOV_1, datetime(2027, 1, 1, tzinfo=UTC)), None)
    first, after = await bk.db.read(lambda conn: rerating.credit_notes(conn, cid, None, 1))
    second, last = await bk.db.read(lambda conn: rerating.credit_notes(conn, cid, after, 1))
    notes = first["credit_notes"] + second["credit_notes"]
    assert (len(notes), last, len({n["issued_at"] for n in notes})) == (2, None, 1)
    assert [n["number"] for n in notes] == sorted(n["number"] for n in done["credit_notes"])
    assert sorted(n["total"] for n in notes) == ["-2.00", "-4.00"]


async def _lot_balances(bk: BillingKit, cid: str) -> dict[str, int]:
    """Every lot of the customer, expired or revoked too: lot id -> its balance (credit > 0)."""
    rows = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id, account_code FROM lots WHERE customer_id = :c"), {"c": cid}))
    return {lot: -await account_total(bk, code) for lot, code in rows.all()}


async def test_a_rerate_that_raises_a_charge_pays_the_extra_in_consumption_order_at_its_own_time(
        fixed: BillingKit) -> None:
    """DESIGN.md: lots are consumed by priority (lower first), then earliest expiry (none last), then
    the oldest; a live lot only. November 1st, in this order: a $5.00 top-up T (priority 100), a
    $1.00 grant L (50, expiring January 31st), a $2.00 grant E (50, expiring November 25th), a $0.30
    grant S (50, expiring December 20th) and a $1.00 grant P (60, no expiry). November 10th, 100,000
    input tokens of model-a at $10/M + $0.01 = $1.01, from E (earliest expiry): $0.99 left. The
    11th a $1.00 grant R of priority 10, revoked whole the 12th. E expires the 25th; no expiry job
    runs, so its $0.99 stays on it. The fix, the 26th: $14/M, the charge $1.41, +$0.40, paid at the
    re-rate's time: R revoked and E expired pay nothing; S (priority 50, December 20th) $0.30, all it
    has; then L (January 31st) $0.10: $0.90. P and T untouched. A settle at the same time would
    take the same lots: oldest first would take L's, none-last-ignored T's, and the expired E's
    earliest expiry would make it first."""
    from wallets.core.commands import Grant, ReverseGrant
    bk = fixed
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("raised", book="fix")
    t = (await bk.top_up(cid, "5.00")).grant.id
    big = datetime(2027, 1, 31, tzinfo=UTC)
    lots = {}
    for name, amount, priority, expires in [("L", "1.00", 50, big),
                                            ("E", "2.00", 50, datetime(2026, 11, 25, tzinfo=UTC)),
                                            ("S", "0.30", 50, datetime(2026, 12, 20, tzinfo=UTC)),
                                            ("P", "1.00", 60, None)]:
        bk.clock.now = bk.clock.now.replace(minute=bk.clock.now.minute + 1)
        lots[name] = (await bk.service.submit(Grant(customer_id=cid, amount=units(amount), priority=priority,
                                                    expires_at=expires))).grant.id
    await bk.event(cid, "model-a", 100_000, 0, at=datetime(2026, 11, 10, tzinfo=UTC))
    bk.clock.now = datetime(2026, 11, 11, tzinfo=UTC)
    lots["R"] = (await bk.service.submit(Grant(customer_id=cid, amount=units("1.00"), priority=10))).grant.id
    bk.clock.now = datetime(2026, 11, 12, tzinfo=UTC)
    await bk.service.submit(ReverseGrant(customer_id=cid, lot_id=lots["R"], reason="abuse"))
    before = {t: units("5.00"), lots["L"]: units("1.00"), lots["E"]: units("0.99"), lots["S"]: units("0.30"),
              lots["P"]: units("1.00"), lots["R"]: 0}
    assert await _lot_balances(bk, cid) == before
    await bk.add_book(book("v2", "2026-11-01T00:00:00Z", "14.00"))
    bk.clock.now = datetime(2026, 11, 26, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, spec("v2"), None)
    assert done["delta"] == "0.40", done
    assert await _lot_balances(bk, cid) == {**before, lots["S"]: 0, lots["L"]: units("0.90")}
    trial = await bk.db.read(lambda conn: trial_balance(conn, "USD"))
    assert trial.totals["USD"][0] == trial.totals["USD"][1]
    await verified(bk)
