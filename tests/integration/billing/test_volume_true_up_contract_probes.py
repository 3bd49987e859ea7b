"""Review probes of contract-priced units counted toward a volume rule's tier (1f08b21, 6f530ca):
the neighbours its tests left out. The book and customers of `test_volume_true_up_contract_units`
(model-* output volume-tiered, $20/M to 1,000,000, $10/M beyond; model-a at a $5/M contract from
November 1st, 09:00) unless said otherwise. All figures are worked by hand."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from billing_kit import BillingKit
from sqlalchemy import text
from test_volume_true_up_contract_units import (
    CENT,
    CLOSED,
    NOV_1,
    _charges,
    _customer,
    _lots,
    _true_ups,
    _usage,
    _verified,
    contract,
    shared,
)

from ledger.accounts import ensure_asset
from wallets import rerating
from wallets.service import CustomerSpec


async def test_a_graduated_rule_with_contract_units_has_no_true_up(bk: BillingKit) -> None:
    """The rule graduated (not volume): $20/M to 1,000,000, $10/M beyond. model-a's 1,200,000 at the
    contract ($6.00) count in the counter; model-b's 300,000 on the 20th, on from 1,200,000: $10/M,
    $3.00. A graduated rule is final at its price: no true-up, $9.00 (contract units change nothing)."""
    await bk.add_book({"id": "grad", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "g-out", "model": "model-*", "token_type": "output", "tier_mode": "graduated",
         "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]})
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    cid = await bk.customer("contract-graduated", billing_mode="postpaid", book="grad")
    await bk.service.add_overrides(cid, {"contract_prices": [contract("model-a", "5")]}, bk.clock.now)
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (20, "model-b", 300_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"]) == ([], "9.00")
    await _verified(bk)


async def test_a_contract_in_another_currency_reaches_the_tier(bk: BillingKit) -> None:
    """A JPY book (no minor units): ¥2,000/M to 1,000,000, ¥1,000/M beyond; model-a at a ¥500/M
    contract. model-b's 300,000 on the 2nd from 0: 300,000 x ¥2,000/M = ¥600; model-a's 1,200,000 on
    the 5th: 1,200,000 x ¥500/M = ¥600. 1,500,000 reach ¥1,000/M: 300,000 x ¥1,000/M = ¥300 less ¥600,
    -¥300; ¥900 in all (¥1,200 counted alone)."""
    await bk.db.run(lambda conn: ensure_asset(conn, "JPY", 9))
    body = shared("v1", "2026-01-01T00:00:00Z", "2000", "1000")
    await bk.add_book({**body, "id": "yen", "currency": "JPY"})
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    await bk.service.create_customer(CustomerSpec("contract-yen", "contract-yen", "JPY", "postpaid", "yen", None, None))
    await bk.service.add_overrides("contract-yen", {"contract_prices": [contract("model-a", "500")]}, bk.clock.now)
    await _usage(bk, "contract-yen", [(2, "model-b", 300_000), (5, "model-a", 1_200_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices("contract-yen")
    assert (_true_ups(invoice), invoice["total"], invoice["currency"]) == (
        [("model-*", 300_000, "1000", "-300")], "900", "JPY")
    await _verified(bk)


async def test_a_contract_under_a_version_pricing_the_rule_flat_counts_as_book_priced_units_there_do(
        bk: BillingKit) -> None:
    """v1 prices the rule flat at $20/M; v2 from the 15th tiers it by volume as the shared book. The
    counter counts every unit of the rule, so model-b's 300,000 on the 20th under v2, on from the
    5th's 1,200,000, cost $10/M, $3.00. What a version pricing the rule flat rated is final at its
    price but reaches the tier at the close too, as the counter counted it (README), contract-priced
    or not: 1,500,000 reach $10/M, v2's 300,000 x $10/M = $3.00 less $3.00, nothing to true up.
    model-a's 1,200,000 at the contract ($6.00): $9.00; at the book's flat $20/M ($24.00) instead (no
    contract): $27.00. Before, the close counted v2's 300,000 alone, at $20/M: +$3.00, $12.00 and
    $30.00, more than the period's charges and the counters had priced them at."""
    await bk.add_book({"id": "shared", "version": "v1", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                       "rules": [{"id": "v-out", "model": "model-*", "token_type": "output", "price": "20"}]})
    await bk.add_book(shared("v2", "2026-11-15T00:00:00Z", "20", "10"))
    bk.clock.now = datetime(2026, 11, 1, 9, tzinfo=UTC)
    totals = []
    for cid, contracts in (("contract-flat", [contract("model-a", "5")]), ("book-flat", [])):
        await bk.customer(cid, billing_mode="postpaid", book="shared")
        if contracts:
            await bk.service.add_overrides(cid, {"contract_prices": contracts}, datetime(2026, 11, 1, 9, tzinfo=UTC))
    for cid in ("contract-flat", "book-flat"):
        await _usage(bk, cid, [(5, "model-a", 1_200_000), (20, "model-b", 300_000)])
    await bk.close(CLOSED)
    for cid in ("contract-flat", "book-flat"):
        [invoice] = await bk.invoices(cid)
        totals.append((_true_ups(invoice), invoice["total"]))
    assert totals == [([], "9.00"), ([], "27.00")]
    await _verified(bk)


async def test_a_contract_added_mid_period_counts_from_its_effective_date(bk: BillingKit, scratch_url: str,
                                                                          tmp_path: Path) -> None:
    """No contract until November 10th: model-a's 300,000 on the 2nd at the book's $20/M, $6.00; the
    contract ($5/M) from the 10th: model-a's 1,200,000 on the 12th, $6.00. 1,500,000 reach $10/M:
    the 2nd's 300,000 x $10/M = $3.00 less $6.00, -$3.00, $9.00 in all, the upcoming invoice alike.
    The ledger verifies in the database and as a jsonl export offline."""
    cid = await _customer(bk, "contract-mid-period", contracts=())
    await bk.service.add_overrides(cid, {"contract_prices": [contract("model-a", "5")]},
                                   datetime(2026, 11, 10, tzinfo=UTC))
    await _usage(bk, cid, [(2, "model-a", 300_000), (12, "model-a", 1_200_000)])
    bk.clock.now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    upcoming = await bk.upcoming(cid)
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    expected = ([("model-*", 300_000, "10", "-3.00")], "9.00")
    assert (_true_ups(upcoming), upcoming["total"]) == (_true_ups(invoice), invoice["total"]) == expected
    await _verified(bk)
    assert _offline_verified(scratch_url, tmp_path).returncode == 0


async def test_two_versions_tiering_the_rule_and_a_contract_give_each_version_s_line_to_its_payer(
        bk: BillingKit) -> None:
    """Prepaid; v2 (from the 15th) $16/M to 1,000,000, $8/M beyond. A $6.00 grant (the 1st) pays
    model-b's 300,000 on the 2nd under v1 from 0 ($20/M, $6.00); a $10.00 top-up (the 3rd) model-a's
    1,200,000 on the 5th at the contract ($6.00, $4.00 left) and model-b's 300,000 on the 20th under
    v2, on from 1,500,000 ($8/M, $2.40: $1.60 left). The close: 1,800,000 reach both versions' second
    tier: v1's 300,000 x $10/M = $3.00 less $6.00, -$3.00; v2's 300,000 x $8/M = $2.40 less $2.40, 0.
    -$3.00 to the grant that paid the 2nd: grant $3.00, top-up $1.60; $11.40 in all (6.00 + 6.00 +
    2.40 - 3.00)."""
    cid = await _customer(bk, "contract-two-versions", "prepaid")
    await bk.add_book(shared("v2", "2026-11-15T00:00:00Z", "16", "8"))
    await _usage(bk, cid, [(1, "grant", "6.00"), (2, "model-b", 300_000), (3, "topup", "10.00"),
                           (5, "model-a", 1_200_000), (20, "model-b", 300_000)])
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert ([t for t in _true_ups(invoice) if t[3] != "0.00"], invoice["total"]) == (
        [("model-*", 300_000, "10", "-3.00")], "11.40")
    assert await _lots(bk, cid) == {"grant": 300 * CENT, "topup": 160 * CENT}
    await _verified(bk)


async def test_a_re_rate_after_the_close_moving_contract_units_to_another_rule_id_counts_them_there(
        bk: BillingKit) -> None:
    """model-a's 1,200,000 at the contract on the 5th ($6.00), model-b's 300,000 on the 6th on from
    them: $10/M, $3.00. Closed $9.00, nothing trued up. On December 2nd v3 (from November 1st) names
    the rule `v-out-b` (the same tiers) and November 1st-15th is re-rated to it: the contract's charge
    stays $6.00, under `v-out-b`; model-b's 300,000 on from its 1,200,000 there, $3.00. `v-out-b`'s
    1,500,000 reach $10/M: 300,000 x $10/M = $3.00 less $3.00, nothing to true up: the re-rate moves
    0.00, November stays $9.00. Before, the re-rate counted the contract's units under `v-out`, where
    they were charged, and trued model-b's 300,000 up alone at $20/M: +$3.00, $12.00."""
    cid = await _customer(bk, "contract-moved-after-close")
    await _usage(bk, cid, [(5, "model-a", 1_200_000), (6, "model-b", 300_000)])
    await bk.close(CLOSED)
    bk.clock.now = datetime(2026, 12, 2, tzinfo=UTC)
    await bk.add_book({"id": "shared", "version": "v3", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                       "rules": [{"id": "v-out-b", "model": "model-*", "token_type": "output", "tier_mode": "volume",
                                  "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]})
    done = await rerating.apply(bk.db, bk.service.engine,
                                rerating.RerateSpec("shared", "v3", NOV_1, datetime(2026, 11, 15, tzinfo=UTC)), None)
    assert done["errors"] == [] and done["delta"] == "0.00", done
    assert (await bk.service.wallet(cid)).receivable == 900 * CENT
    await _verified(bk)


def _offline_verified(url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """`audit export --format jsonl` of the ledger, then `audit verify --file` of it, offline."""
    path = tmp_path / "journal.jsonl"
    env: dict[str, Any] = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    done = subprocess.run([sys.executable, "-m", "api.cli", "audit", "export", "--format", "jsonl", "--out", str(path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    verified = subprocess.run([sys.executable, "-m", "api.cli", "audit", "verify", "--file", str(path)],
                              env=env, capture_output=True, text=True, timeout=120)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return verified


async def test_prepaid_contract_units_moved_before_the_close_give_the_overcharge_to_its_payer(bk: BillingKit) -> None:
    """Prepaid. A $6.00 grant (the 1st) pays model-b's 300,000 on the 2nd from 0 ($20/M, $6.00); a
    $10.00 top-up (the 3rd) model-a's 1,200,000 on the 5th at the contract ($6.00, $4.00 left). On
    the 25th v3 (from November 1st) names the rule `v-out-b` (the same tiers) and November 1st-15th
    is re-rated to it: both charges cost what they did (0.00), both now under `v-out-b`. The close:
    `v-out-b`'s 1,500,000 reach $10/M, model-b's 300,000 x $10/M = $3.00 less $6.00, -$3.00, back to
    the grant that paid it: grant $3.00, top-up $4.00, November $9.00."""
    cid = await _customer(bk, "contract-moved-prepaid", "prepaid")
    await _usage(bk, cid, [(1, "grant", "6.00"), (2, "model-b", 300_000), (3, "topup", "10.00"),
                           (5, "model-a", 1_200_000)])
    await bk.add_book({"id": "shared", "version": "v3", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                       "rules": [{"id": "v-out-b", "model": "model-*", "token_type": "output", "tier_mode": "volume",
                                  "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]})
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine,
                                rerating.RerateSpec("shared", "v3", NOV_1, datetime(2026, 11, 15, tzinfo=UTC)), None)
    assert done["errors"] == [] and done["delta"] == "0.00", done
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"]) == ([("model-*", 300_000, "10", "-3.00")], "9.00")
    assert await _lots(bk, cid) == {"grant": 300 * CENT, "topup": 400 * CENT}
    await _verified(bk)


async def test_contract_units_moved_off_the_rule_before_the_close_leave_its_charges_given_back_each_its_own(
        bk: BillingKit) -> None:
    """Prepaid. A $12.00 grant (the 1st) pays model-b's 600,000 on the 2nd from 0 ($20/M, $12.00); a
    $20.00 top-up (the 3rd) pays model-a's 1,200,000 on the 5th at the contract ($6.00) and model-b's
    600,000 on the 20th on from 1,800,000 ($10/M, $6.00): $8.00 left. On the 25th v3 (from November
    1st) names the rule `v-out-b` (the same tiers) and the 5th alone is re-rated to it (November 5th
    to 6th): $6.00 still, its contract units now under `v-out-b` (its re-rate's rules:
    `contract:output`). The close: `v-out`'s own 1,200,000 (the 2nd's and the 20th's) reach $10/M:
    $12.00 less $18.00, -$6.00, the 2nd's overcharge ($12.00 less 600,000 at $10/M), to the grant
    that paid it ($6.00; the 20th's $6.00 less $6.00: nothing); `v-out-b` has no units at the book's
    price: no line. November $24.00 - $6.00 = $18.00, the top-up $8.00. The close records the 2nd's
    part of `v-out` ($6.00) and verify ties it, counting the 5th under `v-out-b` where the close
    did. Before, the close listed the 5th under `v-out` (its re-rate's rules read by the token type
    alone, as charged) as a charge a re-rate moved, and recorded no part of `v-out`."""
    cid = await _customer(bk, "contract-moved-off", "prepaid")
    await _usage(bk, cid, [(1, "grant", "12.00"), (2, "model-b", 600_000), (3, "topup", "20.00"),
                           (5, "model-a", 1_200_000), (20, "model-b", 600_000)])
    assert await _lots(bk, cid) == {"topup": 800 * CENT}  # the grant spent
    await bk.add_book({"id": "shared", "version": "v3", "currency": "USD", "effective_from": "2026-11-01T00:00:00Z",
                       "rules": [{"id": "v-out-b", "model": "model-*", "token_type": "output", "tier_mode": "volume",
                                  "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]})
    bk.clock.now = datetime(2026, 11, 25, tzinfo=UTC)
    done = await rerating.apply(bk.db, bk.service.engine, rerating.RerateSpec(
        "shared", "v3", datetime(2026, 11, 5, tzinfo=UTC), datetime(2026, 11, 6, tzinfo=UTC)), None)
    assert done["errors"] == [] and done["delta"] == "0.00", done
    await bk.close(CLOSED)
    [invoice] = await bk.invoices(cid)
    assert (_true_ups(invoice), invoice["total"]) == ([("model-*", 1_200_000, "10", "-6.00")], "18.00")
    assert await _lots(bk, cid) == {"grant": 600 * CENT, "topup": 800 * CENT}
    second = min(await _charges(bk, cid))
    records = await bk.db.read(lambda conn: conn.execute(text(
        "SELECT rule_id, charge_id, units FROM true_up_charges WHERE customer_id = :c AND rerate_id IS NULL"
        " ORDER BY rule_id, charge_id"), {"c": cid}))
    assert [(r, c, int(u)) for r, c, u in records] == [("v-out", second, 600 * CENT)]
    await _verified(bk)
