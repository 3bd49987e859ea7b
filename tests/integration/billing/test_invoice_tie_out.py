"""Tie-out, as a property: random workloads of top-ups, grants, reserves, settles (captures too),
releases, expiries, usage events (late ones included), re-rates (a corrected price version posted
after the fact, previewed, then applied to each customer, closed periods included) and closes
across period boundaries, for a prepaid and a postpaid customer. Workloads come in phases, most
ending just past their period's end and grace with its close, so that most examples invoice usage,
bill late usage on a later invoice, re-rate invoiced periods (credit and debit notes, their
rounding) and have closes round money given back. For every closed period of each customer,
computed here from the postings and the charge records, independently of the rollups:
- the invoice's lines sum to its total, and the total is the revenue its period's entries posted;
- credits applied (by lot kind) are the lot debits that paid its charges (directly, or through
  the hold pieces they consumed), less what re-rates gave back to those lots (money back for a
  lot expired since goes to breakage instead: less credit applied, and expired), and what the
  receivable paid is the amount charged to account; what credit notes rounded off their money is
  the credit note rounding; the three sum to the total;
- the amount due is that, when positive, plus the close's rounding (the period's postings to the
  rounding account, within half a cent; a postpaid invoice asks whole cents; when corrections gave
  more back than the period owes, the rounding makes what pays the open invoices whole cents); balances move by
  exactly the period's postings, each period opening where the one before closed;
- top-ups, grants and expirations are the period's cash, promotions and breakage postings;
- what the invoices leave open (amount due less paid) is what the receivable says is owed;
and over both customers the invoices sum to their revenue postings. All exact, to the unit."""
from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from billing_kit import BillingKit
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from ledger.accounts import ensure_asset
from ledger.db import connect
from ledger.errors import LedgerError
from pricing.errors import PricingError
from tests.integration.wallets.wallet_kit import Clock
from wallets import chart, rerating
from wallets.ageing import ageing
from wallets.audit import full_verify
from wallets.billing import close_due
from wallets.expiry import expire_grants, expire_reservations
from wallets.periods import Cycle, period_of

START = datetime(2026, 10, 20, 9, tzinfo=UTC)
CENT = 10_000_000  # a cent in atomic units (10^-9 dollars)
_examples = itertools.count()

WHO = st.integers(0, 1)
GRACE = timedelta(hours=1)  # the customers' grace window (the default)


def _usage() -> st.SearchStrategy:
    """hours late: late usage lands after a close (2 h: in the period a period_end just closed)"""
    return st.tuples(st.just("usage"), WHO, st.integers(0, 150_000), st.integers(0, 80_000),
                     st.sampled_from([0, 0, 2, 30, 400]))


def _rerate_op() -> st.SearchStrategy:
    """a corrected version in force from `hours` ago (or since the last one), pricing model-a's
    input at `price`, re-rated"""
    return st.tuples(st.just("rerate"), st.integers(1, 2000), st.sampled_from(["7.00", "10.00", "13.50"]))


# one_of picks its (distinct) strategies alike: usage three times as likely as the others (most
# periods have usage to invoice), re-rates twice
OPS = st.one_of(
    st.tuples(st.just("advance"), st.integers(1, 400)),
    st.tuples(st.just("topup"), WHO, st.integers(1, 3000)),
    st.tuples(st.just("grant"), WHO, st.integers(1, 2000), st.none() | st.integers(1, 500)),
    st.tuples(st.just("reserve"), WHO, st.integers(1, 3000), st.integers(1, 200)),
    st.tuples(st.just("settle"), WHO, st.integers(0, 20), st.integers(0, 150_000), st.integers(0, 80_000),
              st.booleans()),
    st.tuples(st.just("release"), WHO, st.integers(0, 20)),
    _usage(), _usage(), _usage(),
    st.tuples(st.just("expire")),
    st.tuples(st.just("close")),
    _rerate_op(), _rerate_op(),
)
# the clock to `minutes` past the current period's end and grace, and the close: most workloads
# cross a period end or more (a phase ends so 3 times in 4), so later usage is late, re-rates
# correct invoiced periods (credit and debit notes) and closes round what corrections gave back
PERIOD_END = st.tuples(st.just("period_end"), st.integers(0, 120))
PHASE = st.tuples(st.lists(OPS, min_size=2, max_size=10), st.sampled_from([False, True, True, True]), PERIOD_END)
WORKLOADS = st.lists(PHASE, min_size=2, max_size=4).map(
    lambda phases: [op for ops, ends, end in phases for op in (*ops, *([end] if ends else []))])
_versions = itertools.count(1)


def _book(book_id: str, version: str, effective_from: datetime, price: str) -> dict:
    rules = [{**rule, "price": price} if rule["id"] == "a-in" else rule for rule in BillingKit.SEED["rules"]]
    return {**BillingKit.SEED, "id": book_id, "version": version, "effective_from": effective_from.isoformat(),
            "rules": rules}


async def _rerate(bk: BillingKit, customers: list[str], hours: int, price: str, *, since_latest: bool = True) -> None:
    """Post a corrected version from `hours` ago (to the microsecond, unique in the book), or,
    `since_latest`, from just after the book's latest version when that is later (a correction of
    what the last one priced: no later version cuts the range short, so it reaches back into the
    periods closed since), then preview and apply its re-rate to each customer over the time it
    is in force, up to now; the preview is exactly what apply posted."""
    n, book_id = next(_versions), await bk.db.read(lambda conn: conn.scalar(text(
        "SELECT price_book FROM customers WHERE id = :c"), {"c": customers[0]}))
    start = bk.clock.now - timedelta(hours=hours, microseconds=n)
    if since_latest:
        latest = await bk.db.read(lambda conn: conn.scalar(text(
            "SELECT max(effective_from) FROM price_book_versions WHERE book_id = :b"), {"b": book_id}))
        start = max(start, latest + timedelta(microseconds=n))
    await bk.add_book(_book(book_id, f"fix-{n}", start, price))
    later = await bk.db.read(lambda conn: conn.scalar(text(
        "SELECT min(effective_from) FROM price_book_versions WHERE book_id = :b AND effective_from > :at"),
        {"b": book_id, "at": start}))
    now = bk.clock.now + timedelta(seconds=1)  # usage of this very instant included
    end = min(now, later) if later is not None else now
    if end <= start:
        return
    for cid in customers:
        spec = rerating.RerateSpec(book_id, f"fix-{n}", start, end, cid)
        seen = await rerating.preview(bk.db, bk.service.engine.books, spec)
        done = await rerating.apply(bk.db, bk.service.engine, spec, None)
        assert done["errors"] == []
        assert [{k: v for k, v in c.items() if k != "entry_ids"} for c in done["customers"]] == seen["customers"]
        assert done["delta"] == seen["delta"]


def units(amount: str) -> int:
    return int(Decimal(amount).scaleb(9))


async def _play(bk: BillingKit, customers: list[str], ops: list[tuple]) -> None:
    held: dict[int, list[str]] = defaultdict(list)
    for op in ops:
        kind, args = op[0], op[1:]
        try:
            if kind == "advance":
                bk.clock.now += timedelta(hours=args[0])
            elif kind == "topup":
                await bk.top_up(customers[args[0]], f"{args[1] / 100:.2f}")
            elif kind == "grant":
                expires = None if args[2] is None else bk.clock.now + timedelta(hours=args[2])
                await bk.grant(customers[args[0]], f"{args[1] / 100:.2f}", expires)
            elif kind == "reserve":
                held[args[0]].append(await bk.reserve(customers[args[0]], "model-a", f"{args[1] / 100:.2f}",
                                                      ttl_seconds=args[2] * 3600))
            elif kind in ("settle", "release") and held[args[0]]:
                rid = held[args[0]][args[1] % len(held[args[0]])]
                if kind == "settle":
                    await bk.settle(customers[args[0]], rid, args[2], args[3], final=args[4])
                else:
                    await bk.release(customers[args[0]], rid)
            elif kind == "usage":
                await bk.event(customers[args[0]], "model-a", args[1], args[2],
                               at=bk.clock.now - timedelta(hours=args[3]))
            elif kind == "expire":
                await expire_reservations(bk.db, bk.clock.now)
                await expire_grants(bk.db, bk.clock.now)
            elif kind == "close":
                await close_due(bk.db, bk.clock.now, customers=customers)
            elif kind == "period_end":
                bk.clock.now = period_of(bk.clock.now, Cycle()).end + GRACE + timedelta(minutes=args[0])
                await close_due(bk.db, bk.clock.now, customers=customers)
            elif kind == "rerate":
                await _rerate(bk, customers, *args)
        except (LedgerError, PricingError):
            pass  # a refusal (insufficient funds, a closed reservation) is an outcome, not a failure


_POSTED = """
SELECT j.metadata ->> 'period' AS period, j.kind, a.code, sum(p.amount)::bigint AS amount
  FROM journal_entries j JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
  JOIN accounts a ON a.id = p.account_id
 WHERE j.customer_id = :c GROUP BY 1, 2, 3"""
_CHARGES = """
SELECT c.reservation_id, c.seq, c.from_hold::bigint, c.from_lots::bigint, c.from_receivable::bigint,
       c.entry_id, j.metadata ->> 'period' AS period
  FROM charges c JOIN journal_entries j ON j.id = c.entry_id AND j.customer_id = c.customer_id
 WHERE c.customer_id = :c ORDER BY c.reservation_id NULLS FIRST, c.seq"""


async def _facts(conn, cid: str) -> dict:
    posted = [tuple(r) for r in await conn.execute(text(_POSTED), {"c": cid})]
    charges = [tuple(r) for r in await conn.execute(text(_CHARGES), {"c": cid})]
    holds = defaultdict(list)
    for rid, _seq, code, amount in await conn.execute(text(
            "SELECT h.reservation_id, h.seq, h.account_code, h.amount::bigint FROM reservation_holds h "
            "JOIN reservations r ON r.id = h.reservation_id WHERE r.customer_id = :c ORDER BY 1, 2"), {"c": cid}):
        holds[rid].append((code, amount))
    lots = [tuple(r) for r in await conn.execute(text(
        "SELECT account_code, kind, expires_at FROM lots WHERE customer_id = :c"), {"c": cid})]
    kinds = {code: kind for code, kind, _ in lots}
    # a re-rate's money back for a lot expired since is credited to breakage, not to the lot; only
    # grants expire in these workloads (top-ups and re-rate credit lots never do), so it was a grant's
    assert all(kind == "grant" for _, kind, expires_at in lots if expires_at is not None)
    lot_debits = defaultdict(dict)
    for entry_id, code, amount in await conn.execute(text(
            "SELECT p.entry_id, a.code, p.amount::bigint FROM postings p JOIN accounts a ON a.id = p.account_id "
            "JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id "
            "WHERE j.customer_id = :c AND p.amount > 0 AND a.code LIKE :lots"),
            {"c": cid, "lots": f"liability:customer:{cid}:lot:%"}):
        lot_debits[entry_id][code] = amount
    adjusted = [tuple(r) for r in await conn.execute(text(
        "SELECT j.metadata ->> 'period', a.code, p.amount::bigint FROM postings p "
        "JOIN accounts a ON a.id = p.account_id JOIN journal_entries j ON j.lane = p.lane AND j.id = p.entry_id "
        "WHERE j.customer_id = :c AND j.kind = 'rerate_adjustment' "
        "AND (a.code LIKE :lots OR a.code = :recv OR a.code = :breakage OR a.code = :rounding)"),
        {"c": cid, "lots": f"liability:customer:{cid}:lot:%", "recv": chart.receivable_account(cid),
         "breakage": chart.breakage_account("USD"), "rounding": chart.rounding_account("USD")})]
    return {"posted": posted, "charges": charges, "holds": holds, "kinds": kinds, "lot_debits": lot_debits,
            "adjusted": adjusted}


def _funding_by_period(cid: str, facts: dict) -> dict[str, dict[str, int]]:
    """What paid each period's charges, by source, from the charge records, the holds they drew
    on and the lot debits of their entries."""
    paid: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    consumed: dict[str, int] = defaultdict(int)
    receivable = chart.receivable_account(cid)
    for rid, _, from_hold, from_lots, from_receivable, entry_id, period in facts["charges"]:
        if from_hold:
            start, end, position = consumed[rid], consumed[rid] + from_hold, 0
            for code, amount in facts["holds"][rid]:
                take = max(0, min(end, position + amount) - max(start, position))
                if take:
                    paid[period]["account" if code == receivable else facts["kinds"][code]] += take
                position += amount
            consumed[rid] = end
        debits = facts["lot_debits"].get(entry_id, {})
        assert sum(debits.values()) == from_lots
        for code, amount in debits.items():
            paid[period][facts["kinds"][code]] += amount
        paid[period]["account"] += from_receivable
    # re-rates: more charged is paid from lots and the receivable (debits), money back goes to them,
    # or to breakage for a (grant) lot expired since: that much less of the grant paid the period;
    # a credit (debit) note's rounding of its money to whole cents paid the rest of the correction
    for period, code, amount in facts["adjusted"]:
        if code == chart.breakage_account("USD"):
            paid[period]["grant"] += amount
        elif code == chart.rounding_account("USD"):
            paid[period]["rounding"] += amount
        else:
            paid[period]["account" if code == receivable else facts["kinds"][code]] += amount
    return paid


def _check_customer(cid: str, invoices: list[dict], facts: dict) -> int:
    moved: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    cur = "USD"
    for period, kind, code, amount in facts["posted"]:
        m = moved[period]
        if code == chart.revenue_account(cur):
            m["revenue"] -= amount
        elif code == chart.breakage_account(cur):
            m["expired"] -= amount
        elif code == chart.promotions_account(cur):
            m["grants"] += amount
        elif code == chart.cash_account(cur):
            m["topups" if kind == "topup" else "payments"] += amount
        elif code == chart.receivable_account(cid):
            m["receivable"] += amount
        elif code == chart.reserved_account(cid):
            m["reserved"] -= amount
        elif code == chart.rounding_account(cur):  # the close's; a note's is funding (_funding_by_period)
            m["rounded"] -= amount if kind != "rerate_adjustment" else 0
        else:
            m["credits"] -= amount
    funding = _funding_by_period(cid, facts)
    previous = None
    for invoice in invoices:
        period = invoice["period"]["label"]
        m, f = moved[period], funding[period]
        total = units(invoice["total"])
        assert sum(units(line["amount"]) for line in invoice["lines"]) == total
        assert total == m["revenue"]
        assert units(invoice["credits_applied"]["promotional"]) == f["grant"]
        assert units(invoice["credits_applied"]["paid"]) == f["topup"]
        assert units(invoice["charged_to_account"]) == f["account"]
        assert units(invoice["credit_note_rounding"]) == f["rounding"]
        assert f["grant"] + f["topup"] + f["account"] + f["rounding"] == total
        # the close rounds what is left to pay to whole cents, half to even: within half a cent; or,
        # when the period's corrections gave more back than it owes, what pays the open invoices
        assert abs(m["rounded"]) <= CENT // 2 and (f["account"] != 0 or not m["rounded"])
        if f["account"] < 0 and m["rounded"]:
            assert (f["account"] + m["rounded"]) % CENT == 0
        assert units(invoice["amount_due"]) == (f["account"] + m["rounded"] if f["account"] > 0 else 0)
        assert units(invoice["amount_due_rounding"]) == m["rounded"]
        if invoice["billing"] == "postpaid":  # no top-up pays its invoices: it asks whole cents
            assert units(invoice["amount_due"]) % CENT == 0, invoice
        assert units(invoice["top_ups"]) == m["topups"] and units(invoice["grants"]) == m["grants"]
        assert units(invoice["expired"]) == m["expired"]
        for name in ("credits", "reserved", "receivable"):
            opening, closing = units(invoice["opening_balance"][name]), units(invoice["closing_balance"][name])
            assert closing - opening == m[name], (period, name)
            if previous is not None:
                assert opening == units(previous["closing_balance"][name])
        previous = invoice
    return sum(units(i["total"]) for i in invoices)


async def _example(url: str, ops: list[tuple], price: str) -> dict[str, list[dict]]:
    """Play `ops` for a prepaid and a postpaid customer, re-rate it all at `price`, close and check
    every invoice; their invoices, prepaid first."""
    db = connect(url, pool_size=2)
    try:
        bk = BillingKit(db, Clock(START))
        n = next(_examples)
        await bk.add_book({**BillingKit.SEED, "id": f"seed{n}"})  # its own book: re-rates add versions to it
        customers = [await bk.customer(f"pre{n}", book=f"seed{n}"),
                     await bk.customer(f"post{n}", billing_mode="postpaid", book=f"seed{n}")]
        await _play(bk, customers, ops)
        # and last, a correction of the whole workload (closed periods included), as a re-rate does:
        # up to the first correction the workload posted, and of what its last one priced
        hours = int((bk.clock.now - START).total_seconds() // 3600) + 401
        await _rerate(bk, customers, hours, price, since_latest=False)
        if any(op[0] == "rerate" for op in ops):
            await _rerate(bk, customers, hours, price)
        end = period_of(bk.clock.now, Cycle()).end + timedelta(hours=2)  # everything billed is due
        await close_due(db, end, customers=customers)
        invoiced = revenue = 0
        invoices = {cid: await bk.invoices(cid) for cid in customers}
        for cid in customers:
            facts = await db.read(lambda conn, cid=cid: _facts(conn, cid))
            invoiced += _check_customer(cid, invoices[cid], facts)
            revenue -= sum(amount for _, _, code, amount in facts["posted"] if code == chart.revenue_account("USD"))
        assert invoiced == revenue  # over both customers: the invoices are their revenue postings
        # every period with entries is invoiced: what the invoices leave open is what is owed, no
        # more, no less (holds given back first: what they keep on credit is owed by no invoice)
        await expire_reservations(db, end + timedelta(days=400))
        for cid in customers:
            left = sum(units(i["amount_due"]) - units(i["amount_paid"]) for i in await bk.invoices(cid))
            assert left == (await bk.service.wallet(cid)).receivable, cid
        # the receivables ageing then: every penny owed is on an open invoice, nothing unbilled and
        # no correction unapplied, and its invoices are those the documents say are open
        aged = {r.customer_id: r for r in await db.read(
            lambda conn: ageing(conn, end + timedelta(days=401), customers=customers))}
        for cid in customers:
            owed = (await bk.service.wallet(cid)).receivable
            row = aged.get(cid)
            assert (row.receivable, row.unbilled, row.unapplied_credit) == (owed, 0, 0) if owed else row is None, cid
            open_ = {i["id"]: units(i["amount_due"]) - units(i["amount_paid"]) for i in await bk.invoices(cid)
                     if units(i["amount_due"]) != units(i["amount_paid"])}
            assert {a.invoice.invoice_id: a.outstanding for a in (row.invoices if row else ())} == open_, cid
        return invoices
    finally:
        await db.dispose()


def test_invoices_tie_out_to_the_postings_through_random_workloads(scratch_url: str) -> None:
    _scratch(scratch_url)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(WORKLOADS, st.sampled_from(["7.00", "13.50"]))
    def run(ops: list[tuple], price: str) -> None:
        asyncio.run(_example(scratch_url, ops, price))

    run()

    async def verified():
        db = connect(scratch_url, pool_size=1)
        try:
            return await db.read(full_verify)
        finally:
            await db.dispose()

    report = asyncio.run(verified())
    assert report.ok, [c for c in report.checks if not c.ok]


def _scratch(url: str) -> None:
    async def setup():
        db = connect(url, pool_size=1)
        await db.run(lambda conn: ensure_asset(conn, "USD", 9))
        await BillingKit(db).add_book(BillingKit.SEED)
        await db.dispose()

    asyncio.run(setup())


def test_money_back_for_a_grant_expired_since_is_promotion_not_applied(scratch_url: str) -> None:
    """The example Hypothesis found (shrunk): a $0.02 grant expiring in 1 h holds a $0.02
    reservation; at its expiry 1 input token is settled ($0.01 a call + $0.00001 at $10/M =
    $0.01001, from the hold, i.e. the grant); the closing re-rate at $7/M makes it $0.010007. The
    $0.000003 back is owed to the grant, expired since, so it goes to breakage (ac60c1d): the
    invoice is $0.010007, all promotional, and $0.000003 expired. The recount failed before
    (promotional 0.010007 != 0.010010: it did not count the breakage leg of the re-rate as money
    back from the grant, and its credits then summed to more than the invoice's total)."""
    _scratch(scratch_url)
    ops = [("advance", 1), ("grant", 0, 2, 1), ("reserve", 0, 2, 1), ("advance", 1), ("settle", 0, 0, 1, 0, False)]
    prepaid, _postpaid = asyncio.run(_example(scratch_url, ops, "7.00")).values()
    [invoice] = prepaid
    assert (invoice["total"], invoice["credits_applied"], invoice["charged_to_account"], invoice["expired"]) == (
        "0.010007", {"promotional": "0.010007", "paid": "0.00", "total": "0.010007"}, "0.00", "0.000003")


def test_a_postpaid_close_rounds_off_more_than_a_correction_before_it_left_owed(scratch_url: str) -> None:
    """A workload of the kind behind a failure seen once in ~1,820 examples (its ops were lost: a
    postpaid invoice asking $0.00001), built by hand: the postpaid customer's $0.01 top-up is
    credit; one input token on October 20th costs $0.01001, $0.00001 of it charged to account; on
    November 1st 00:00, in October's grace window, a fix ($7/M) gives $0.000003 back off the
    receivable, billed in November: $0.000007 owed. October's close (with November's, at the next
    period end) rounds its $0.00001 due down to $0.00, more than the receivable owes: it posted no
    rounding, and the invoice asked $0.00001. It takes $0.000007 off the receivable now, and the
    $0.000003 beyond becomes credit."""
    _scratch(scratch_url)
    ops = [("topup", 1, 1), ("usage", 1, 1, 0, 0), ("advance", 279), ("rerate", 300, "7.00"), ("period_end", 0)]
    _prepaid, postpaid = asyncio.run(_example(scratch_url, ops, "7.00")).values()
    october, november, december = postpaid  # the period end of the 1st closes October and November
    assert (october["charged_to_account"], october["amount_due"], october["amount_due_rounding"]) == (
        "0.00001", "0.00", "-0.00001")
    # its close's credit; the receivable less what October rounded off (November gave the rest back)
    assert (october["closing_balance"]["credits"], october["closing_balance"]["receivable"]) == (
        "0.000003", "0.000003")
    assert (november["charged_to_account"], november["amount_due"]) == ("-0.000003", "0.00")
    assert december["total"] == "0.00"
