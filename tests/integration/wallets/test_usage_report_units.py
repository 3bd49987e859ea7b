"""The usage report never adds quantities of different units into one number: whatever the
grouping, a row's `quantity` counts one token type (input tokens, output tokens, calls), and its
amounts still sum to what the charges charged. Read from the daily rollups (whole UTC days) and
from the charges (partial days, usage dimensions), before and after the charges are folded: the
same rows either way.

Book: model-x input $1.00 per 1,000 tokens, output $2.00 per 1,000, $0.01 a call (request)."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text
from wallet_kit import T0, Kit

from wallets import books, price_overrides, reports
from wallets.commands import RecordUsage

START = T0 - timedelta(hours=12)  # the UTC midnight that starts T0's day
RULES = [{"id": "x-in", "model": "model-x", "token_type": "input", "price": "1000"},
         {"id": "x-out", "model": "model-x", "token_type": "output", "price": "2000"},
         {"id": "call", "token_type": "request", "price": "0.01"}]
# (when, input tokens, output tokens, calls, feature)
CALLS = [(T0, 1000, 500, 1, "chat"), (T0 + timedelta(hours=13), 2000, 250, 1, "search")]
# By hand from the prices: input 3,000 tokens $3.00; output 750 tokens $1.50; 2 calls $0.02.
BY_TYPE = {"input": (3000, "3.00", 2), "output": (750, "1.50", 2), "request": (2, "0.02", 2)}
# Ranges: everything, two whole UTC days (rollups), and partial days at both edges (charges).
RANGES = [(None, None), (START, START + timedelta(days=2)),
          (T0 - timedelta(hours=1), T0 + timedelta(hours=14))]


async def _customer(kit: Kit, name: str, overrides: dict | None = None) -> str:
    kit.book = f"units-{name}-{kit.tag}"  # the kit's own book has no price for calls
    await kit.db.run(lambda conn: books.add_version(conn, {
        "id": kit.book, "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": RULES}))
    cid = await kit.customer(name, billing="postpaid", overdraft=None)
    if overrides is not None:
        await kit.db.run(lambda conn: price_overrides.add_version(conn, cid, overrides, START - timedelta(days=1),
                                                                  T0))
    for n, (at, tin, tout, calls, feature) in enumerate(CALLS):
        tokens = {"input": tin, "output": tout, "request": calls}
        await kit.service.submit(RecordUsage(
            customer_id=cid, event_id=f"e{n}", request_hash=repr(tokens).encode(), model="model-x",
            occurred_at=at, tokens=tokens, usage=tokens, dimensions={"feature": feature}))
    return cid


async def _fold(kit: Kit, cid: str) -> int:
    return await kit.db.run(lambda conn: _scalar(conn, "SELECT wallets_fold_usage(ledger_lane(:c)::smallint)", c=cid))


async def _scalar(conn, sql: str, **params):
    return (await conn.execute(text(sql), params)).scalar()


async def _report(kit: Kit, cid: str, start, end, group_by: list[str]) -> dict:
    return await kit.db.read(lambda conn: reports.usage(conn, cid, start, end, group_by))


def _cents(amount: str) -> int:
    whole, cents = amount.split(".")
    return int(whole) * 100 + (-1 if whole.startswith("-") else 1) * int(cents)


async def test_a_row_never_adds_input_tokens_output_tokens_and_calls(kit: Kit):
    """Before: group_by=model answered one row, quantity 3,752 (3,000 input tokens + 750 output
    tokens + 2 calls); now a row per token type, each in its own unit, the amounts unchanged."""
    cid = await _customer(kit, "units")
    charged = await kit.db.read(lambda conn: _scalar(
        conn, "SELECT sum(charged) FROM charges WHERE customer_id = :c", c=cid))
    for folded in (False, True):
        if folded:
            assert await _fold(kit, cid) == len(CALLS)
        for start, end in RANGES:
            for asked in (["model"], ["day"], [], ["model", "token_type"], ["feature"]):
                got = await _report(kit, cid, start, end, asked)
                rows = got["rows"]
                assert "token_type" in got["group_by"], (asked, got["group_by"])
                assert all({*got["group_by"], "quantity", "amount", "charges"} == set(r) for r in rows)
                if asked in ([], ["model"], ["model", "token_type"]):
                    want = [{**({"model": "model-x"} if "model" in asked else {}), "token_type": t,
                             "quantity": q, "amount": a, "charges": n} for t, (q, a, n) in BY_TYPE.items()]
                    assert rows == want, (asked, start, end, folded)
                # any grouping: each token type's quantities add up to its own total, never another's
                per_type: dict[str, int] = {}
                for r in rows:
                    per_type[r["token_type"]] = per_type.get(r["token_type"], 0) + r["quantity"]
                assert per_type == {t: q for t, (q, _, _) in BY_TYPE.items()}, (asked, start, end, folded)
                # and the money is exactly what the charges charged ($4.52 in all)
                assert sum(_cents(r["amount"]) for r in rows) == 452 == charged // 10**7, (asked, folded)


async def test_the_day_grouping_splits_each_day_by_token_type(kit: Kit):
    cid = await _customer(kit, "days")
    for folded in (False, True):
        if folded:
            await _fold(kit, cid)
        got = await _report(kit, cid, START, START + timedelta(days=2), ["day"])
        assert got["group_by"] == ["day", "token_type"]
        assert [(r["day"], r["token_type"], r["quantity"], r["amount"]) for r in got["rows"]] == [
            ("2026-11-23", "input", 1000, "1.00"), ("2026-11-23", "output", 500, "1.00"),
            ("2026-11-23", "request", 1, "0.01"),
            ("2026-11-24", "input", 2000, "2.00"), ("2026-11-24", "output", 250, "0.50"),
            ("2026-11-24", "request", 1, "0.01")], folded


async def test_a_discount_line_does_not_count_the_tokens_it_discounts_again(kit: Kit):
    """A discount's line restates the quantity it takes a percentage off. Before: with 10 % off
    input, the report's input row said 6,000 tokens for the 3,000 used (the usage line's and the
    discount's); now 3,000, at $2.70 ($3.00 less 10 %), unless the rows are split by kind, where
    the discount's own row says what it covered."""
    cid = await _customer(kit, "discount", {"discounts": [
        {"id": "ten-off", "model": "model-x", "token_type": "input", "percent": "10"}]})
    charged = await kit.db.read(lambda conn: _scalar(
        conn, "SELECT sum(charged) FROM charges WHERE customer_id = :c", c=cid))
    assert charged == 422 * 10**7  # $2.70 + $1.50 + $0.02
    net = {"input": (3000, "2.70", 2), "output": (750, "1.50", 2), "request": (2, "0.02", 2)}
    for folded in (False, True):
        if folded:
            assert await _fold(kit, cid) == len(CALLS)
        for start, end in RANGES:
            for asked in ([], ["model"], ["feature"], ["day"], ["rule_id"], ["price_version"]):
                rows = (await _report(kit, cid, start, end, asked))["rows"]
                per_type: dict[str, tuple[int, int]] = {}
                for r in rows:
                    q, cents = per_type.get(r["token_type"], (0, 0))
                    per_type[r["token_type"]] = (q + r["quantity"], cents + _cents(r["amount"]))
                assert per_type == {t: (q, _cents(a)) for t, (q, a, _) in net.items()}, (asked, start, end, folded)
            by_kind = (await _report(kit, cid, start, end, ["kind"]))["rows"]
            assert [(r["kind"], r["token_type"], r["quantity"], r["amount"]) for r in by_kind] == [
                ("discount", "input", 3000, "-0.30"), ("usage", "input", 3000, "3.00"),
                ("usage", "output", 750, "1.50"), ("usage", "request", 2, "0.02")], (start, end, folded)
