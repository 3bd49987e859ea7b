"""A re-rate of a volume-tiered rule over a period already closed corrects the close's true-up too:
the period ends at the corrected version's price of the tier reached, not at the graduated
corrected charges less the old version's true-up.

By hand. Book `vol`, model-v output volume-tiered. v1: $20/M up to 100,000 tokens, $10/M beyond.
November: 60,000 tokens on the 5th, 70,000 on the 20th (postpaid). Rated graduated during the
month: 60,000 x $20/M = $1.20; 40,000 x $20/M + 30,000 x $10/M = $0.80 + $0.30 = $1.10; $2.30 in
all. The close: 130,000 reached the second tier, all at $10/M = $1.30, true-up -$1.00.
v2 (the fix, from November 1st): $16/M up to 100,000, $8/M beyond. The charges re-rated: 60,000 x
$16/M = $0.96; 40,000 x $16/M + 30,000 x $8/M = $0.64 + $0.24 = $0.88; $1.84 (-$0.46). At v2's
tier reached, 130,000 x $8/M = $1.04, so the true-up is $1.04 - $1.84 = -$0.80 where -$1.00 was
posted: +$0.20. The re-rate moves -$0.46 + $0.20 = -$0.26, and November ends at $1.04 (it ended
at $1.84 - $1.00 = $0.84).
v3 (from November 2nd): $18/M up to 100,000, $9/M beyond: 60,000 x $18/M = $1.08; 40,000 x $18/M +
30,000 x $9/M = $0.72 + $0.27 = $0.99; $2.07 (+$0.23 on v2's $1.84). At v3's tier reached,
130,000 x $9/M = $1.17: true-up $1.17 - $2.07 = -$0.90, where -$0.80 stands: -$0.10. The re-rate
moves +$0.23 - $0.10 = +$0.13 (a debit note), and November ends at $1.17."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import beanquery
import pytest
from beancount import loader
from beancount.core import data
from billing_kit import BillingKit
from sqlalchemy import text

from ledger import export
from ledger.audit import trial_balance, verify
from wallets import rerating
from wallets.audit import WALLET_CHECKS


def vol(version: str, effective_from: str, low: str, high: str, rule: str = "v-out") -> dict[str, Any]:
    """Book `vol`: its rule `rule` rates model-v output, volume-tiered: `low` per 1M up to 100,000
    tokens, `high` beyond."""
    return {"id": "vol", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": rule, "model": "model-v", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 100_000, "price": low}, {"up_to": None, "price": high}]}]}


V1 = vol("v1", "2026-01-01T00:00:00Z", "20", "10")
V2 = vol("v2", "2026-11-01T00:00:00Z", "16", "8")
V3 = vol("v3", "2026-11-02T00:00:00Z", "18", "9")
NOV_1, NOV_2, DEC_1 = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC),
                       datetime(2026, 12, 1, tzinfo=UTC))
CLOSED = datetime(2026, 12, 1, 1, tzinfo=UTC)  # November's close: 01:00 on December 1st


def spec(version: str, start: datetime = NOV_1) -> rerating.RerateSpec:
    return rerating.RerateSpec("vol", version, start, DEC_1, None)


async def vol_customer(bk: BillingKit, cid: str, billing_mode: str = "prepaid") -> str:
    """Customer `cid` on book `vol` (V1, added now), made November 1st at 09:00."""
    await bk.add_book(V1)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    return await bk.customer(cid, billing_mode=billing_mode, book="vol")


async def november_usage(bk: BillingKit, cid: str, usage=((5, 60_000), (20, 70_000))) -> None:
    """`cid`'s model-v output tokens, each (day, tokens[, region]) at noon of that November day: by
    default 60,000 on the 5th and 70,000 on the 20th (at V1: $1.20 and $0.80 + $0.30 = $1.10)."""
    for day, tokens, *region in usage:
        bk.clock.now = datetime(2026, 11, day, 12, tzinfo=UTC)
        await bk.event(cid, "model-v", 0, tokens, dimensions={"region": region[0]} if region else None)


async def applied(bk: BillingKit, rerate: rerating.RerateSpec) -> dict[str, Any]:
    """The re-rate applied now, by the kit's engine: its answer."""
    return await rerating.apply(bk.db, bk.service.engine, rerate, None)


async def previewed(bk: BillingKit, rerate: rerating.RerateSpec) -> dict[str, Any]:
    return await rerating.preview(bk.db, bk.service.engine.books, rerate)


def lines(done: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """A re-rate's lines of its one customer: (token type, old amount, new amount, delta)."""
    return [(ln["token_type"], ln["old_amount"], ln["new_amount"], ln["delta"]) for ln in done["customers"][0]["lines"]]


async def verified(bk: BillingKit) -> None:
    report = await bk.db.read(lambda conn: verify(conn, WALLET_CHECKS))
    assert report.ok, [c for c in report.checks if not c.ok]


async def live_lots(bk: BillingKit, cid: str) -> dict[str, tuple[str, int]]:
    """The customer's lots with money left: lot id -> (kind, remaining units)."""
    return {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants if g.remaining}


async def rerate_entries(bk: BillingKit) -> list[Any]:
    return list(await bk.db.read(lambda conn: conn.execute(text(
        "SELECT id FROM journal_entries WHERE kind = 'rerate_adjustment' ORDER BY id"))))


def beancount_balances(url: str, path) -> dict[str, Decimal]:
    """The Beancount export's balance of every account (bean-query), by account code."""
    with export.connect(url) as conn, open(path, "w") as out:
        export.write_beancount(conn, out)
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    code_of = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    rows = beanquery.connect(f"beancount:{path}").execute("SELECT account, sum(number) GROUP BY account").fetchall()
    return {code_of[account]: total for account, total in rows}


async def test_a_rerate_of_a_closed_period_corrects_its_volume_true_up_to_the_new_versions_tiers(
        fresh_db, scratch_url, tmp_path) -> None:
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "volume", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    assert (november["total"], november["subtotals"]["true_ups"], november["amount_due"]) == ("1.30", "-1.00", "1.30")
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)

    seen = await previewed(bk, spec("v2"))
    assert seen["delta"] == "-0.26" and seen["errors"] == []
    assert seen["customers"] == [{
        "customer_id": cid, "charges": 2, "old_amount": "1.30", "new_amount": "1.04", "delta": "-0.26",
        "lines": [{"model": "model-v", "token_type": "output", "old_amount": "2.30", "new_amount": "1.84",
                   "delta": "-0.46"},
                  {"model": "model-v", "token_type": "volume_true_up", "old_amount": "-1.00", "new_amount": "-0.80",
                   "delta": "0.20"}]}]
    assert await rerate_entries(bk) == []  # a preview changes nothing

    done = await applied(bk, spec("v2"))
    assert done["customers"] == [{**seen["customers"][0], "entry_ids": done["customers"][0]["entry_ids"]}]
    assert done["delta"] == "-0.26" and done["errors"] == []
    [note] = done["credit_notes"]
    assert (note["kind"], note["total"], note["invoice_id"]) == ("credit", "-0.26", november["id"])
    document = await bk.db.read(lambda conn: rerating.credit_note(conn, note["id"]))
    assert [(ln["token_type"], ln["old_amount"], ln["new_amount"], ln["amount"]) for ln in document["lines"]] == [
        ("output", "2.30", "1.84", "-0.46"), ("volume_true_up", "-1.00", "-0.80", "0.20")]
    assert (document["amount"], document["amount_rounding"]) == ("-0.26", "0.00")
    # the closed invoice stays as issued; what is left to pay of it is what November costs at v2
    [after] = await bk.invoices(cid)
    assert after == {**november, "amount_remaining": "1.04", "credit_notes": [  # the note beside it
        {"id": note["id"], "number": note["number"], "kind": "credit", "total": "-0.26",
         "issued_at": document["issued_at"]}]}
    assert (await bk.service.wallet(cid)).receivable == 1_040_000_000
    # December's invoice carries the correction, with the period it corrects
    upcoming = await bk.upcoming(cid)
    assert [(ln["kind"], ln["model"], ln["token_type"], ln["amount"], ln["original_period"])
            for ln in upcoming["lines"]] == [("volume_true_up", "model-v", "output", "0.20", "2026-11"),
                                             ("adjustment", "model-v", "output", "-0.46", "2026-11")]
    assert (upcoming["total"], upcoming["subtotals"]["true_ups"]) == ("-0.26", "0.20")
    # the same re-rate again moves nothing more
    again = await applied(bk, spec("v2"))
    assert again == done and len(await rerate_entries(bk)) == 1
    assert (await previewed(bk, spec("v2")))["customers"] == []
    await verified(bk)

    # a second fix moves the true-up from where the first left it: -0.80 to -0.90
    await bk.add_book(V3)
    third = await applied(bk, spec("v3", NOV_2))
    assert third["delta"] == "0.13", third
    assert lines(third) == [("output", "1.84", "2.07", "0.23"),
                                                          ("volume_true_up", "-0.80", "-0.90", "-0.10")]
    [debit] = third["credit_notes"]
    assert (debit["kind"], debit["total"]) == ("debit", "0.13")
    assert (await bk.service.wallet(cid)).receivable == 1_170_000_000  # November at v3: 130,000 x $9/M
    await bk.close(datetime(2027, 1, 1, 1, tzinfo=UTC))
    _, december = await bk.invoices(cid)
    by_kind: dict[str, Decimal] = {}
    for ln in december["lines"]:
        by_kind[ln["kind"]] = by_kind.get(ln["kind"], Decimal(0)) + Decimal(ln["amount"])
    assert by_kind == {"volume_true_up": Decimal("0.10"), "adjustment": Decimal("-0.23")}
    assert december["total"] == "-0.13"
    await verified(bk)
    trial = await bk.db.read(lambda conn: trial_balance(conn))
    expected = {line.account: Decimal(line.debits - line.credits).scaleb(-9) for line in trial.lines}
    found = beancount_balances(scratch_url, tmp_path / "journal.beancount")
    assert {code: found.get(code, Decimal(0)) for code in expected} == expected


async def test_money_a_true_up_correction_gives_back_of_promotion_paid_usage_goes_back_to_the_promotion(
        fresh_db) -> None:
    """Prepaid, a $5.00 promotional grant pays it all. v1 as above: $1.20 + $1.10 = $2.30 from the
    grant ($2.70 left), the close's true-up -$1.00 back to it too ($3.70; it paid the charges). The
    fix keeps $20/M to 100,000 and drops the tier beyond to $5/M: the charges $1.20 and
    $0.80 + 30,000 x $5/M = $0.95 (-$0.15); at the tier reached 130,000 x $5/M = $0.65, the true-up
    $0.65 - $2.15 = -$1.50 where -$1.00 stands (-$0.50); -$0.65 in all. The grant paid those charges:
    all $0.65 goes back to it ($4.35: $0.65 spent, the usage at the tier reached). Before, the $0.15
    did and the $0.50 became paid credit, and the close's $1.00 was a paid credit lot too."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "promoted")
    grant = await bk.grant(cid, "5.00")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    lots = {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants}
    assert lots == {grant.grant.id: ("grant", 3_700_000_000)}  # the close's money back
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "20", "5"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.65"  # the first charge stays $1.20: only the second is corrected
    assert lines(done) == [("output", "1.10", "0.95", "-0.15"),
                                                         ("volume_true_up", "-1.00", "-1.50", "-0.50")]
    after = {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants}
    assert after == {grant.grant.id: ("grant", 4_350_000_000)}  # no paid credit from the promotion
    await verified(bk)


async def test_a_rerate_of_part_of_a_closed_period_trues_up_each_charge_at_its_own_versions_tiers(
        fresh_db) -> None:
    """v2 ($16/M to 100,000, $8/M beyond) from November 10th only: the charge of the 5th stays at
    v1's $1.20, the one of the 20th is re-rated from the 60,000 before it: 40,000 x $16/M + 30,000
    x $8/M = $0.88 (-$0.22). The period's 130,000 reach the second tier of both versions, each one's
    units at its own price of it: v1's 60,000 at $10/M = $0.60 less $1.20, v2's 70,000 at $8/M =
    $0.56 less $0.88: the true-up -$0.92 where -$1.00 stands (+$0.08): -$0.14 in all, and November
    stands at $0.60 + $0.56 = $1.16. (All 130,000 at v2's $8/M, the latest version's, gave -$1.04,
    -$0.26 in all, $1.04: v1's units at v2's price.)"""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "part", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    await bk.add_book(vol("v2", "2026-11-10T00:00:00Z", "16", "8"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    part = spec("v2", datetime(2026, 11, 10, tzinfo=UTC))
    seen = await previewed(bk, part)
    done = await applied(bk, part)
    assert done["delta"] == seen["delta"] == "-0.14"
    assert lines(done) == [("output", "1.10", "0.88", "-0.22"), ("volume_true_up", "-1.00", "-0.92", "0.08")]
    assert (await bk.service.wallet(cid)).receivable == 1_160_000_000
    await verified(bk)


async def test_a_period_re_rated_while_open_is_trued_up_at_its_close_from_the_charges_as_re_rated(
        fresh_db) -> None:
    """The same usage, re-rated to v2 on November 25th, before the close: the charges $2.30 ->
    $1.84 (-$0.46), on November's own invoice. The close trues up at the tiers of the latest
    version that rated the rule, v2 now: 130,000 x $8/M = $1.04, less the $1.84 the charges stand
    at: -$0.80, and November totals $2.30 - $0.46 - $0.80 = $1.04. It trued up from the charges as
    first rated, at v1: $1.30 - $2.30 = -$1.00, a total of $0.84."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "open", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.46" and done["credit_notes"] == []
    upcoming = await bk.upcoming(cid)
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    assert [(ln["kind"], ln["quantity"], ln["unit_price"], ln["amount"]) for ln in november["lines"]] == [
        ("usage", 100_000, "20", "2.00"), ("usage", 30_000, "10", "0.30"),
        ("volume_true_up", 130_000, "8", "-0.80"), ("adjustment", 0, None, "-0.46")]
    assert (november["total"], november["amount_due"]) == ("1.04", "1.04")
    assert upcoming["total"] == "1.04"  # the upcoming invoice said what the close did
    await verified(bk)


async def test_a_re_rate_in_the_grace_window_counts_in_the_closing_period_s_true_up(fresh_db) -> None:
    """The same usage, re-rated to v2 at 00:30 on December 1st, in November's grace window: the
    correction (-$0.46) is billed in December, on its invoice. November's close trues up the
    charges as they stand, $1.84, at v2's tier reached: 130,000 x $8/M - $1.84 = -$0.80, so
    November totals $2.30 - $0.80 = $1.50 and with December's -$0.46 the usage costs $1.04. It
    trued up the charges as first rated, -$1.00 at v1: $1.30 - $0.46 = $0.84 in all."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "grace", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.add_book(V2)
    bk.clock.now = datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.46" and done["credit_notes"] == []
    await bk.close(datetime(2026, 12, 1, 1, 1, tzinfo=UTC))
    [november] = await bk.invoices(cid)
    [true_up] = [ln for ln in november["lines"] if ln["kind"] == "volume_true_up"]
    assert (true_up["unit_price"], true_up["amount"], november["total"]) == ("8", "-0.80", "1.50")
    upcoming = await bk.upcoming(cid)
    assert (upcoming["period"]["label"], upcoming["total"]) == ("2026-12", "-0.46")
    assert (await bk.service.wallet(cid)).receivable == 1_040_000_000
    await verified(bk)


TWO_MODELS = [("a", "model-x", "output"), ("b", "model-y", "output")]


def two_models(version: str, effective_from: str, high: str,
               rules: list[tuple[str, str, str]] = TWO_MODELS) -> dict[str, Any]:
    """Book `two`: each (rule id, model, token type) of `rules` volume-tiered, $20/M up to 100,000
    tokens, `high` per million beyond; by default rules a (model-x output) and b (model-y output)."""
    return {"id": "two", "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": rule, "model": model, "token_type": token_type, "tier_mode": "volume",
         "tiers": [{"up_to": 100_000, "price": "20"}, {"up_to": None, "price": high}]}
        for rule, model, token_type in rules]}


async def two_models_used(bk: BillingKit, cid: str, high: str, grant: str) -> tuple[str, str]:
    """Customer `cid` on book `two` (two_models v1, `high` $/M beyond 100,000) made November 1st at
    09:00 with a grant of `grant`; November 5th at noon, 200,000 model-x output tokens ($2.00 +
    100,000 x `high`) and 120,000 model-y ($2.00 + 20,000 x `high`). The customer and the grant's lot."""
    await bk.add_book(two_models("v1", "2026-01-01T00:00:00Z", high))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer(cid, book="two")
    lot = (await bk.grant(cid, grant)).grant.id
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-x", 0, 200_000)
    await bk.event(cid, "model-y", 0, 120_000)
    return cid, lot


async def test_a_rerate_correcting_two_models_true_ups_gives_a_promotion_back_all_it_paid_of_each(
        fresh_db) -> None:
    """Prepaid, a $10.00 grant pays it all. v1 $20/M to 100,000, $10/M beyond: model-x 200,000
    tokens $2.00 + $1.00 = $3.00, model-y 120,000 $2.00 + $0.20 = $2.20 ($4.80 left). The close:
    a 200,000 x $10/M = $2.00 (-$1.00), b 120,000 x $10/M = $1.20 (-$1.00): $2.00 back ($6.80).
    v2 drops the tier beyond to $1/M: model-x $2.10 (-$0.90), model-y $2.02 (-$0.18); true-ups
    a $0.20 - $2.10 = -$1.90, b $0.12 - $2.02 = -$1.90 (-$0.90 each where -$1.00 stands): -$2.88.
    The grant paid every one of these charges: all goes back to it ($9.68: it has paid the $0.32
    November now costs). Before, b's share was the $2.20 model-y paid less all the grant had taken
    back of model-x's too ($1.98): $0.22; the grant got $2.20 and $0.68 became paid credit."""
    bk = BillingKit(fresh_db)
    cid, grant = await two_models_used(bk, "two-models", "10", "10.00")
    await bk.close(CLOSED)
    assert await live_lots(bk, cid) == {grant: ("grant", 6_800_000_000)}
    await bk.add_book(two_models("v2", "2026-11-01T00:00:00Z", "1"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, rerating.RerateSpec("two", "v2", NOV_1, DEC_1, None))
    assert done["delta"] == "-2.88"
    after = {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants if g.remaining}
    assert after == {grant: ("grant", 9_680_000_000)}
    await verified(bk)


async def test_a_rerate_after_a_close_counts_only_what_its_true_up_left_in_the_charges(fresh_db) -> None:
    """Prepaid: a $2.00 grant, then a $5.00 top-up. v1: the grant pays $1.20 and $0.80 of the
    $1.10, the top-up $0.30 ($4.70). The close's -$1.00: $0.30 to the top-up (consumed last, back to
    $5.00), $0.70 to the grant. The fix ($20/M, $5/M beyond) moves -$0.65 (-$0.15 on the second
    charge, -$0.50 on the true-up). The top-up has nothing left in the charges (the close gave back
    all it paid): all $0.65 goes to the grant ($1.35: $0.65 spent, 130,000 at $5/M), the top-up stays
    at $5.00, no paid lot. Before, the re-rate counted the top-up's $0.30 again ($0.30 of the
    re-rate's share; its lot had no room), so $0.30 of the grant's money became a paid credit lot."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "twice")
    grant = await bk.grant(cid, "2.00")
    top_up = await bk.top_up(cid, "5.00")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    lots = {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants}
    assert lots == {grant.grant.id: ("grant", 700_000_000), top_up.grant.id: ("topup", 5_000_000_000)}
    await bk.add_book(vol("v2", "2026-11-01T00:00:00Z", "20", "5"))
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.65"
    after = {g.id: (g.kind, g.remaining) for g in (await bk.service.wallet(cid)).grants}
    assert after == {grant.grant.id: ("grant", 1_350_000_000), top_up.grant.id: ("topup", 5_000_000_000)}
    await verified(bk)


async def test_a_rerate_to_a_version_that_renamed_the_volume_rule_corrects_the_close_s_true_up_once(
        fresh_db) -> None:
    """As the first test, but v2 ($16/M, $8/M from November 1st) names the rule `v-out-b`. Every
    charge re-rated is rated by `v-out-b` now: its true-up at v2's tier reached is $1.04 - $1.84 =
    -$0.80, and the close's -$1.00 of `v-out`, a rule that rates none of the period's charges any
    more, is taken back (+$1.00): -$0.46 - $0.80 + $1.00 = -$0.26, November at $1.04 (130,000 at
    $8/M), as with the rule's name kept. Before, the -$1.00 stayed beside the new -$0.80 (counted
    from 0): -$1.26, November at $0.04, the volume discount given twice."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "renamed", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    renamed = vol("v2", "2026-11-01T00:00:00Z", "16", "8", rule="v-out-b")
    await bk.add_book(renamed)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    seen = await previewed(bk, spec("v2"))
    assert seen["delta"] == "-0.26" and seen["errors"] == []
    done = await applied(bk, spec("v2"))
    assert done["delta"] == "-0.26"
    [line] = [ln for ln in done["customers"][0]["lines"] if ln["token_type"] == "volume_true_up"]
    assert (line["old_amount"], line["new_amount"], line["delta"]) == ("-1.00", "-0.80", "0.20")
    assert (await previewed(bk, spec("v2")))["customers"] == []
    [november] = await bk.invoices(cid)
    assert (november["total"], november["subtotals"]["true_ups"]) == ("1.30", "-1.00")
    upcoming = await bk.upcoming(cid)
    assert (upcoming["total"], upcoming["subtotals"]["true_ups"]) == ("-0.26", "0.20")
    await verified(bk)


async def test_a_volume_rule_renamed_mid_period_is_trued_up_under_each_name(fresh_db) -> None:
    """v1's `v-out` ($20/M to 100,000, $10/M beyond) rates 120,000 tokens on November 5th:
    $2.00 + $0.20 = $2.20; v2 (from November 15th) names it `v-out-b`, whose tiers count from 0:
    150,000 on the 20th, $2.00 + $0.50 = $2.50. The close trues up each name on its own units:
    120,000 x $10/M = $1.20 (-$1.00) and 150,000 x $10/M = $1.50 (-$1.00); neither is lost, and
    November is $2.70 (270,000 at $10/M, as with one name)."""
    bk = BillingKit(fresh_db)
    await bk.add_book(V1)
    renamed = vol("v2", "2026-11-15T00:00:00Z", "20", "10", rule="v-out-b")
    await bk.add_book(renamed)
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("renamed-close", billing_mode="postpaid", book="vol")
    await november_usage(bk, cid, [(5, 120_000), (20, 150_000)])
    await bk.close(CLOSED)
    [november] = await bk.invoices(cid)
    assert sorted((ln["rule_id"], ln["amount"]) for ln in november["lines"] if ln["kind"] == "volume_true_up") == [
        ("v-out", "-1.00"), ("v-out-b", "-1.00")]
    assert (november["total"], november["subtotals"]["true_ups"]) == ("2.70", "-2.00")
    await verified(bk)


def _flat(book: str, version: str, effective_from: str, price: str) -> dict[str, Any]:
    return {"id": book, "version": version, "currency": "USD", "effective_from": effective_from, "rules": [
        {"id": f"{book}-out", "model": "model-v", "token_type": "output", "price": price}]}


async def test_a_rerate_of_one_book_counts_what_the_lots_paid_of_the_period_under_every_book(fresh_db) -> None:
    """A $10.00 grant. Book `fa` ($20/M) rates 150,000 tokens on November 5th ($3.00); the
    customer moves to book `fb` ($10/M): 100,000 on the 20th ($1.00); $6.00 left. After the close,
    `fa` v2 ($0/M) gives all $3.00 back to the grant ($9.00), then `fb` v2 ($5/M) $0.50 ($9.50):
    the grant paid $4.00 of the period and got $3.00 back, $1.00 is still in it. Counting what it
    paid of `fb`'s charges ($1.00) against what every re-rate of the period gave back ($3.00) left
    no room, and the $0.50 became a paid credit lot."""
    bk = BillingKit(fresh_db)
    await bk.add_book(_flat("fa", "v1", "2026-01-01T00:00:00Z", "20"))
    await bk.add_book(_flat("fb", "v1", "2026-01-01T00:00:00Z", "10"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("two-books", book="fa")
    grant = await bk.grant(cid, "10.00")
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 150_000)
    bk.clock.now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    await bk.service.change_customer(cid, {"price_book": "fb"}, "test")
    bk.clock.now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 100_000)
    await bk.close(CLOSED)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    for book, price, delta in [("fa", "0", "-3.00"), ("fb", "5", "-0.50")]:
        await bk.add_book(_flat(book, "v2", "2026-11-01T00:00:00Z", price))
        done = await applied(bk, rerating.RerateSpec(book, "v2", NOV_1, DEC_1, None))
        assert done["delta"] == delta
    assert await live_lots(bk, cid) == {grant.grant.id: ("grant", 9_500_000_000)}
    await verified(bk)


async def late_and_own_charges(bk: BillingKit, name: str, late: int, own: int) -> tuple[str, Any, Any]:
    """v1 at $20/M (below 100,000). Prepaid `name`: a $0.50 grant, then a $5.00 top-up (October 1st);
    10,000 tokens on October 10th; October closes; on November 5th a late event of October 25th of
    `late` tokens, on November 10th `own` tokens. The customer id, the grant and the top-up."""
    await bk.add_book(vol("v1", "2026-01-01T00:00:00Z", "20", "10"))
    bk.clock.now = datetime(2026, 10, 1, 9, tzinfo=UTC)
    cid = await bk.customer(name, book="vol")
    grant = await bk.grant(cid, "0.50")
    top_up = await bk.top_up(cid, "5.00")
    bk.clock.now = datetime(2026, 10, 10, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, 10_000)
    await bk.close(datetime(2026, 11, 1, 1, tzinfo=UTC))
    bk.clock.now = datetime(2026, 11, 5, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, late, at=datetime(2026, 10, 25, 12, tzinfo=UTC))
    bk.clock.now = datetime(2026, 11, 10, 12, tzinfo=UTC)
    await bk.event(cid, "model-v", 0, own)
    return cid, grant, top_up


async def test_a_second_rerate_counts_what_a_rerate_of_late_and_own_charges_gave_back(fresh_db) -> None:
    """Prepaid: a $0.50 grant, then a $5.00 top-up (consumed last). v1 at $20/M (below 100,000).
    October 10th: 10,000 tokens, $0.20 (the grant). October closes. November 5th, a late event of
    October 25th: 25,000 tokens, $0.50 billed in November (the grant's last $0.30, the top-up $0.20);
    November 10th: 10,000, $0.20 (the top-up, at $4.60). The top-up paid $0.40 in all.
    v2 at $12/M: October's entry -$0.08 (the grant); November's entry corrects October's late
    charge (-$0.20) and November's own (-$0.08): the top-up, consumed last, gets both ($4.88).
    v3 at $4/M: October's -$0.08 (the grant); November's -$0.20 and -$0.08, of which the top-up has
    only $0.12 left in the charges ($0.40 paid, $0.28 given back): $5.00, and the grant the other
    $0.16 ($0.08 + $0.08 + $0.16 = $0.32, the charges at $0.04 + $0.10 + $0.04 = $0.18 of $0.90).
    Before, November's first entry (corrections of two usage periods) was not counted as given
    back at all: the top-up got $0.28 again, $0.16 past its $5.00, and that much of the grant's
    money became a paid credit lot (refundable as cash)."""
    bk = BillingKit(fresh_db)
    cid, grant, top_up = await late_and_own_charges(bk, "late2", 25_000, 10_000)
    assert await live_lots(bk, cid) == {top_up.grant.id: ("topup", 4_600_000_000)}
    oct_1, oct_2 = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 2, tzinfo=UTC)
    await bk.add_book(vol("v2", "2026-10-01T00:00:00Z", "12", "6"))
    bk.clock.now = datetime(2026, 11, 12, tzinfo=UTC)
    first = await applied(bk, spec("v2", oct_1))
    assert first["delta"] == "-0.36"
    assert await live_lots(bk, cid) == {grant.grant.id: ("grant", 80_000_000),
                                        top_up.grant.id: ("topup", 4_880_000_000)}
    await bk.add_book(vol("v3", "2026-10-02T00:00:00Z", "4", "2"))
    bk.clock.now = datetime(2026, 11, 13, tzinfo=UTC)
    second = await applied(bk, spec("v3", oct_2))
    assert second["delta"] == "-0.36"
    assert await live_lots(bk, cid) == {grant.grant.id: ("grant", 320_000_000),
                                        top_up.grant.id: ("topup", 5_000_000_000)}
    await verified(bk)


async def test_a_rerate_of_own_charges_alone_counts_what_a_rerate_with_late_charges_gave_back(fresh_db) -> None:
    """Prepaid: a $0.50 grant, then a $5.00 top-up (consumed last). v1 at $20/M (below 100,000).
    October 10th: 10,000 tokens, $0.20 (the grant, $0.30 left). October closes. November 5th, a
    late event of October 25th: 5,000 tokens, $0.10 billed in November (the grant, $0.20 left);
    November 10th: 25,000, $0.50 (the grant's last $0.20, the top-up $0.30: $4.70).
    v2 at $12/M over October and November: October's entry -$0.08 (the grant); November's entry
    corrects the late charge (-$0.04, the grant) and November's own (-$0.20, the top-up, consumed
    last: $4.90). v3 at $4/M over November alone: its charge $0.30 -> $0.10, -$0.20, of which the
    top-up has only $0.10 left in it ($0.30 paid, $0.20 given back): the top-up $5.00, the grant
    the other $0.10 ($0.20 + $0.08 + $0.04 + $0.10 = $0.42). Before, November's first entry (it
    also corrected October's late charge) was counted as given back under October alone, so a
    re-rate of November's usage alone found the top-up's whole $0.30 as room: it got $0.20 again,
    $0.10 past its $5.00 a paid credit lot (refundable as cash) of the grant's money."""
    bk = BillingKit(fresh_db)
    cid, grant, top_up = await late_and_own_charges(bk, "late3", 5_000, 25_000)
    assert await live_lots(bk, cid) == {top_up.grant.id: ("topup", 4_700_000_000)}
    await bk.add_book(vol("v2", "2026-10-01T00:00:00Z", "12", "6"))
    bk.clock.now = datetime(2026, 11, 12, tzinfo=UTC)
    first = await applied(bk, spec("v2", datetime(2026, 10, 1, tzinfo=UTC)))
    assert first["delta"] == "-0.32"
    assert await live_lots(bk, cid) == {grant.grant.id: ("grant", 120_000_000),
                                        top_up.grant.id: ("topup", 4_900_000_000)}
    await bk.add_book(vol("v3", "2026-11-01T00:00:00Z", "4", "2"))
    bk.clock.now = datetime(2026, 11, 13, tzinfo=UTC)
    second = await applied(bk, spec("v3", NOV_1))
    assert second["delta"] == "-0.20"
    assert await live_lots(bk, cid) == {grant.grant.id: ("grant", 220_000_000),
                                        top_up.grant.id: ("topup", 5_000_000_000)}
    await verified(bk)


@pytest.mark.parametrize("v3_name", ["v-out-b", "v-out"])
async def test_a_second_rerate_of_part_of_a_period_counts_the_charges_left_under_the_name_they_were_rerated_to(
        fresh_db, v3_name) -> None:
    """As the renamed test: v1's `v-out` rated November's 60,000 (5th, $1.20) and 70,000 (20th,
    $1.10); the close trued up -$1.00 (130,000 at $10/M = $1.30). A re-rate to v2 (`v-out-b`, $16/M,
    $8/M) of the whole month: $0.96 + $0.88 = $1.84, true-up $1.04 - $1.84 = -$0.80 (`v-out` back to
    0), November at $1.04. Then v3 keeps the name `v-out-b` at $18/M up to 100,000, $9/M beyond,
    and a re-rate to it of November 2nd-15th only: the 5th's 60,000 x $18/M = $1.08 (+$0.12); the
    20th's stays at v2's $0.88, rated by `v-out-b`. The true-up of `v-out-b` counts both charges,
    130,000 reaching the second tier, each version's units at its own price of it: v3's 60,000 at
    $9/M = $0.54 less $1.08, v2's 70,000 at $8/M = $0.56 less $0.88: -$0.86 where -$0.80 stands,
    -$0.06. The re-rate moves +$0.06 and November ends at $1.10 (all 130,000 at v3's $9/M, $1.17,
    gave -$0.79 and +$0.13: v2's units at v3's price). Counting the 20th under the name
    it was first rated by (`v-out`, v1) left `v-out-b` with the 5th's 60,000 alone, at the first
    tier (true-up 0, +$0.80): +$0.92, November at $1.96, the volume discount lost. v3 naming it
    `v-out` again moves the same: the 20th counts under the name the 5th moved to from `v-out-b`,
    whose -$0.80 goes back to 0 beside `v-out`'s -$0.86 (one row: -$0.80 -> -$0.86), the 20th's units
    priced by the rule v2 rated them with (`v-out-b`, $8/M)."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "renamed-twice", billing_mode="postpaid")
    await november_usage(bk, cid)
    await bk.close(CLOSED)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    for version, start, low, high in [("v2", "2026-11-01T00:00:00Z", "16", "8"),
                                      ("v3", "2026-11-02T00:00:00Z", "18", "9")]:
        renamed = vol(version, start, low, high, rule="v-out-b" if version == "v2" else v3_name)
        await bk.add_book(renamed)
        if version == "v2":
            assert (await applied(bk, spec("v2")))["delta"] == "-0.26"
    half = rerating.RerateSpec("vol", "v3", NOV_2, datetime(2026, 11, 15, tzinfo=UTC), None)
    done = await applied(bk, half)
    assert done["delta"] == "0.06"
    [line] = [ln for ln in done["customers"][0]["lines"] if ln["token_type"] == "volume_true_up"]
    assert (line["old_amount"], line["new_amount"], line["delta"]) == ("-0.80", "-0.86", "-0.06")
    upcoming = await bk.upcoming(cid)
    # December: the first re-rate's -$0.46 + $0.20, this one's +$0.12 - $0.06; $1.30 - $0.20 = $1.10
    assert (upcoming["total"], upcoming["subtotals"]["true_ups"]) == ("-0.20", "0.14")
    await verified(bk)


async def test_a_partial_rerate_counts_a_charge_left_under_its_rule_when_the_version_still_has_it(fresh_db) -> None:
    """v1's `v-out` rates all model-v output: the 5th's 60,000 tokens (region us, $1.20) and the
    20th's 70,000 (region eu, $1.10), trued up at close to 130,000 x $10/M = $1.30 (-$1.00). The fix
    (from November 1st) keeps `v-out` as it was and adds `v-eu` for region eu ($16/M to 100,000, $8/M
    beyond). Re-rated from November 10th, the 20th's 70,000 go to `v-eu`, the first of that rule:
    70,000 x $16/M = $1.12 (+$0.02); `v-eu` reached its first tier: true-up 0. The 5th is left under
    `v-out`, which the fix still has: 60,000 tokens, its first tier, $1.20 (true-up 0, where -$1.00
    stands: +$1.00). The re-rate moves +$1.02 and November stands at $1.20 + $1.12 = $2.32. Before,
    the 5th was counted under `v-eu` as if renamed: 130,000 at $8/M = $1.04 (true-up -$1.28) and
    November stood at $1.04, the us usage at the eu volume price."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "split", billing_mode="postpaid")
    await november_usage(bk, cid, [(5, 60_000, "us"), (20, 70_000, "eu")])
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 1_300_000_000
    fix = vol("v2", "2026-11-01T00:00:00Z", "20", "10")
    fix["rules"].append({"id": "v-eu", "model": "model-v", "token_type": "output", "match": {"region": "eu"},
                         "tier_mode": "volume", "tiers": [{"up_to": 100_000, "price": "16"},
                                                          {"up_to": None, "price": "8"}]})
    await bk.add_book(fix)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2", datetime(2026, 11, 10, tzinfo=UTC)))
    assert done["delta"] == "1.02", done
    assert (await bk.service.wallet(cid)).receivable == 2_320_000_000
    await verified(bk)


async def test_a_partial_rerate_to_a_version_that_split_the_rule_in_two_keeps_the_charges_left_under_their_own(
        fresh_db) -> None:
    """v1's `v-out` rates all model-v output: the 5th's 60,000 tokens (region us), the 15th's 20,000
    (us) and the 20th's 20,000 (eu), 100,000 at $20/M: $2.00, its first tier (true-up 0). The fix
    (from November 1st) has no `v-out` but `v-us` ($20/M to 100,000, $10/M beyond, as v1) and `v-eu`
    ($16/M to 50,000, $8/M beyond). Re-rated from November 10th, the 15th goes to `v-us` at $0.40 as
    charged, the 20th to `v-eu`: 20,000 x $16/M = $0.32 (-$0.08), each in its first tier (true-up
    0); the 5th, left out, stays under `v-out`: 60,000 at $20/M, its first tier (true-up 0). The
    re-rate moves -$0.08 and November stands at $1.92 (us $1.60, eu $0.32). Before, `v-out` was
    taken as renamed to the rule of the last charge re-rated, `v-eu`: the 5th's us tokens counted
    there, 80,000 at $8/M = $0.64 against $1.52 charged (true-up -$0.88): -$0.96, November at $1.04,
    where the same re-rate with the 15th in eu and the 20th in us moved -$0.08."""
    bk = BillingKit(fresh_db)
    cid = await vol_customer(bk, "split2", billing_mode="postpaid")
    await november_usage(bk, cid, [(5, 60_000, "us"), (15, 20_000, "us"), (20, 20_000, "eu")])
    await bk.close(CLOSED)
    assert (await bk.service.wallet(cid)).receivable == 2_000_000_000
    fix = vol("v2", "2026-11-01T00:00:00Z", "20", "10")
    fix["rules"] = [{**fix["rules"][0], "id": "v-us", "match": {"region": "us"}},
                    {"id": "v-eu", "model": "model-v", "token_type": "output", "match": {"region": "eu"},
                     "tier_mode": "volume", "tiers": [{"up_to": 50_000, "price": "16"},
                                                      {"up_to": None, "price": "8"}]}]
    await bk.add_book(fix)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    done = await applied(bk, spec("v2", datetime(2026, 11, 10, tzinfo=UTC)))
    assert done["delta"] == "-0.08", done
    assert (await bk.service.wallet(cid)).receivable == 1_920_000_000
    await verified(bk)
