"""Audit primitives: the trial balance, and `verify`, which proves the journal is whole.

Each check is a plain query that returns what is wrong, naming the entry or the account, so an
auditor can act on the report rather than on a bare `false`. Other layers add their own checks.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.seal import seal_problems

LIMIT = 50  # problems listed per check; the count is always exact


@dataclass(frozen=True, slots=True)
class TrialBalanceLine:
    account: str
    asset: str
    debits: int
    credits: int

    @property
    def balance(self) -> int:
        return self.debits - self.credits


@dataclass(frozen=True, slots=True)
class TrialBalance:
    lines: tuple[TrialBalanceLine, ...]
    totals: dict[str, tuple[int, int]]  # asset -> (total debits, total credits)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    problems: tuple[str, ...] = ()
    # How long the check took in microseconds (`timed`), for `tokentill audit verify --timings`: which
    # check is slow. Not part of what a check found: left out of comparisons. An integer: this module
    # is a money module, no float in it (tests/unit/ledger/test_no_float.py).
    micros: int | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class Report:
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


CheckFn = Callable[[AsyncConnection], Awaitable[Check]]


async def trial_balance(conn: AsyncConnection, asset: str | None = None,
                        customers: Sequence[str] | None = None) -> TrialBalance:
    """Every account's debits and credits (in `asset`, if given). With `customers`, only the
    accounts of those customers: a part of the ledger, whose totals need not agree."""
    rows = (await conn.execute(text(
        """SELECT a.code, a.asset, sum(b.debits)::numeric AS d, sum(b.credits)::numeric AS c
             FROM accounts a JOIN account_balances b ON b.account_id = a.id
            WHERE (CAST(:asset AS text) IS NULL OR a.asset = :asset)
              AND (CAST(:customers AS text[]) IS NULL OR a.customer_id = ANY(CAST(:customers AS text[])))
            GROUP BY a.code, a.asset ORDER BY a.asset, a.code"""),
        {"asset": asset, "customers": None if customers is None else list(customers)})).all()
    return tally(TrialBalanceLine(r.code, r.asset, int(r.d), int(r.c)) for r in rows)


def tally(lines: Iterable[TrialBalanceLine]) -> TrialBalance:
    """A trial balance of `lines`, with its totals per asset."""
    lines = tuple(lines)
    totals: dict[str, tuple[int, int]] = {}
    for line in lines:
        d, c = totals.get(line.asset, (0, 0))
        totals[line.asset] = (d + line.debits, c + line.credits)
    return TrialBalance(lines, totals)


def problems_check(name: str, problems: Sequence[str], ok_detail: str) -> Check:
    """A check of what is wrong (`problems`, each naming it): ok when there is none."""
    if not problems:
        return Check(name, True, ok_detail)
    return Check(name, False, f"{len(problems)} found; first: {problems[0]}", tuple(problems[:LIMIT]))


async def _query_check(conn: AsyncConnection, name: str, sql: str, ok_detail: str) -> Check:
    return problems_check(name, [row[0] for row in (await conn.execute(text(sql))).all()], ok_detail)


async def entries_balanced(conn: AsyncConnection) -> Check:
    """Each entry's postings, those of its lane (as the export and the seals read them: a posting
    in another lane is the lanes check's), balance per asset, and there are two or more."""
    return await _query_check(conn, "entries_balanced", """
        SELECT format('entry %s does not balance in %s by %s', j.id, a.asset, sum(p.amount))
          FROM journal_entries j JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
          JOIN accounts a ON a.id = p.account_id
         GROUP BY j.lane, j.id, a.asset HAVING sum(p.amount) <> 0
        UNION ALL
        SELECT format('entry %s has fewer than two postings', j.id)
          FROM journal_entries j
         WHERE (SELECT count(*) FROM postings p WHERE p.lane = j.lane AND p.entry_id = j.id) < 2
        """, "every entry balances per asset")


async def balances_match_postings(conn: AsyncConnection) -> Check:
    return await _query_check(conn, "cached_balances", """
        SELECT format('account %s stripe %s: cached %s/%s, postings say %s/%s', a.code, b.stripe,
                      b.debits, b.credits, coalesce(s.d, 0), coalesce(s.c, 0))
          FROM account_balances b JOIN accounts a ON a.id = b.account_id
          LEFT JOIN (SELECT account_id, stripe,
                            sum(amount) FILTER (WHERE amount > 0) AS d,
                            -sum(amount) FILTER (WHERE amount < 0) AS c
                       FROM postings GROUP BY account_id, stripe) s
            ON s.account_id = b.account_id AND s.stripe = b.stripe
         WHERE b.debits <> coalesce(s.d, 0) OR b.credits <> coalesce(s.c, 0)
        UNION ALL
        SELECT format('posting %s names account %s stripe %s, which has no balance row',
                      p.id, p.account_id, p.stripe)
          FROM postings p LEFT JOIN account_balances b
            ON b.account_id = p.account_id AND b.stripe = p.stripe
         WHERE b.account_id IS NULL
        """, "cached balances equal posting sums")


async def bounds_hold(conn: AsyncConnection) -> Check:
    return await _query_check(conn, "bounds", """
        SELECT format('account %s is at %s, below its bound %s', a.code,
                      b.normal_sign * (b.debits - b.credits), a.lower_bound)
          FROM account_balances b JOIN accounts a ON a.id = b.account_id
         WHERE a.lower_bound IS NOT NULL AND b.normal_sign * (b.debits - b.credits) < a.lower_bound
        """, "no account is below its bound")


async def one_customer_per_entry(conn: AsyncConnection) -> Check:
    return await _query_check(conn, "one_customer_per_entry", """
        SELECT format('entry %s (customer %s) posts to account %s of customer %s',
                      j.id, coalesce(j.customer_id, 'none'), a.code, a.customer_id)
          FROM journal_entries j JOIN postings p ON p.lane = j.lane AND p.entry_id = j.id
          JOIN accounts a ON a.id = p.account_id
         WHERE a.customer_id IS NOT NULL AND a.customer_id IS DISTINCT FROM j.customer_id
        """, "every entry touches its own customer's accounts only")


async def lanes_consistent(conn: AsyncConnection) -> Check:
    """An entry and its postings share a lane, its customer's: the export and the seals read an
    entry's postings in its lane, so a posting elsewhere is left out of both (and of the books)."""
    return await _query_check(conn, "lanes", """
        SELECT format('entry %s (customer %s) is in lane %s, not its customer''s lane %s',
                      j.id, coalesce(j.customer_id, 'none'), j.lane, ledger_entry_lane(j.customer_id))
          FROM journal_entries j
         WHERE j.lane <> ledger_entry_lane(j.customer_id)
        UNION ALL
        SELECT format('posting %s of entry %s is in lane %s, %s', p.id, p.entry_id, p.lane,
                      coalesce('its entry in lane ' || (SELECT string_agg(j.lane::text, ' and ' ORDER BY j.lane)
                                                          FROM journal_entries j WHERE j.id = p.entry_id),
                               'and no entry ' || p.entry_id || ' exists'))
          FROM postings p
         WHERE NOT EXISTS (SELECT 1 FROM journal_entries j WHERE j.lane = p.lane AND j.id = p.entry_id)
        """, "every entry and its postings are in its customer's lane")


async def entry_ids_unique(conn: AsyncConnection) -> Check:
    """No two entries share an id. The key is (lane, id), so each lane alone refuses a second
    entry of an id; ids come from one sequence (no writer gives one twice), and the seals, the
    export and the checks name an entry by its id alone: a copy of an entry in another lane (a
    superuser, triggers off) was read as the entry itself, altered."""
    return await _query_check(conn, "entry_ids", """
        SELECT format('entries of lanes %s share id %s: an entry''s id names one entry '
                      '(the seals, the export and these checks name entries by it)',
                      string_agg(lane::text, ' and ' ORDER BY lane), id)
          FROM journal_entries GROUP BY id HAVING count(*) > 1 ORDER BY id
        """, "no two entries share an id")


async def accounts_match_their_codes(conn: AsyncConnection) -> Check:
    """An account's type and customer as its code states them (wallets/chart.py): the code's first
    part, when it is a type, is the account's type, and `<type>:customer:<id>:...` is customer
    <id>'s account. The offline verifier (`ledger.offline`) checks an export's account records so."""
    return await _query_check(conn, "accounts", """
        SELECT format('account %s is of type %s, but its code says %s', code, type, split_part(code, ':', 1))
          FROM accounts
         WHERE split_part(code, ':', 1) IN ('asset', 'liability', 'equity', 'income', 'expense')
           AND split_part(code, ':', 1) <> type
        UNION ALL
        SELECT format('account %s is of customer %s, but its code names another', code, coalesce(customer_id, 'none'))
          FROM accounts
         WHERE code ~ '^[^:]*:customer:'  -- the rest of the code starts with the customer's id and a colon
           AND (customer_id IS NULL
                OR NOT starts_with(substr(code, length(split_part(code, ':', 1)) + 11), customer_id || ':'))
        """, "every account's type and customer are those its code states")


async def trial_balance_zero(conn: AsyncConnection) -> Check:
    tb = await trial_balance(conn)
    off = [f"{asset}: debits {d} != credits {c}" for asset, (d, c) in tb.totals.items() if d != c]
    return Check("trial_balance", not off, off[0] if off else "debits equal credits in every asset",
                 tuple(off))


async def seals_intact(conn: AsyncConnection) -> Check:
    problems = await seal_problems(conn)
    if not problems:
        last = (await conn.execute(text(
            "SELECT id, encode(chain_hash, 'hex') AS head FROM seals ORDER BY id DESC LIMIT 1"))).first()
        head = f"; the chain ends at {last.head} (seal {last.id}): keep it apart, for --expect-head" if last else ""
        return Check("seals", True, "every sealed entry is as it was sealed" + head)
    return Check("seals", False, f"{len(problems)} found; first: {problems[0]}", tuple(problems[:LIMIT]))


async def head_check(conn: AsyncConnection, head: str) -> Check:
    """Whether the chain passes through `head` (a seal's chain hash, in hex, kept apart from the
    database: published, mailed, from an earlier export): a seal must have it. With `seals_intact`
    (every seal chained to the one before it from the first), the history up to that seal is then
    the one that head was taken of. The seals check alone cannot show a chain rewritten from some
    seal on (the last seals deleted, what they sealed altered, sealed again): it is whole in itself."""
    row = (await conn.execute(text(
        """SELECT s.id, (SELECT count(*) FROM seals l WHERE l.id > s.id) AS after
             FROM seals s WHERE s.chain_hash = decode(:head, 'hex') ORDER BY s.id LIMIT 1"""),
        {"head": head})).first()
    if row is None:
        sealed = (await conn.execute(text("SELECT EXISTS (SELECT 1 FROM seals)"))).scalar_one()
        why = ("the chain was rewritten since that head was taken (or the head is another ledger's)" if sealed
               else "the database has no seal (every seal deleted, or the head is another ledger's)")
        return problems_check("head", [f"no seal has chain hash {head}: {why}"], "")
    return Check("head", True, f"seal {row.id} has chain hash {head}: the chain passes through it "
                 f"({row.after} seal(s) after it)")


LEDGER_CHECKS: tuple[CheckFn, ...] = (
    entries_balanced, balances_match_postings, bounds_hold, one_customer_per_entry, accounts_match_their_codes,
    lanes_consistent, entry_ids_unique,
    trial_balance_zero, seals_intact,
)


async def timed(check: CheckFn, conn: AsyncConnection) -> Check:
    """`check`'s result, with the microseconds it took."""
    started = time.perf_counter_ns()
    found = await check(conn)
    return replace(found, micros=(time.perf_counter_ns() - started) // 1000)


async def verify(conn: AsyncConnection, extra: tuple[CheckFn, ...] = ()) -> Report:
    """Run every check on one snapshot; a failing check names what is wrong (and each says how long
    it took)."""
    return Report(tuple([await timed(check, conn) for check in (*LEDGER_CHECKS, *extra)]))
