"""Persistence of assets and accounts, and reads of their cached balances."""
from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.errors import AccountMismatchError, UnknownAccountError
from ledger.model import AccountSpec, AccountType


@dataclass(frozen=True, slots=True)
class Balance:
    account: str
    asset: str
    debits: int
    credits: int
    normal_sign: int

    @property
    def normal(self) -> int:
        """The balance in the account's normal direction (what a customer lot holds, say)."""
        return self.normal_sign * (self.debits - self.credits)


async def ensure_asset(conn: AsyncConnection, code: str, scale: int) -> None:
    await conn.execute(
        text("INSERT INTO assets (code, scale) VALUES (:c, :s) ON CONFLICT (code) DO NOTHING"),
        {"c": code, "s": scale},
    )


async def open_account(conn: AsyncConnection, spec: AccountSpec) -> int:
    """Create the account if it is new; an existing one must match the spec. Returns its id."""
    row = (await conn.execute(
        text("""INSERT INTO accounts (code, type, asset, customer_id, lower_bound, stripes)
                VALUES (:code, :type, :asset, :customer, :bound, :stripes)
                ON CONFLICT (code) DO NOTHING RETURNING id"""),
        {"code": spec.code, "type": spec.type.value, "asset": spec.asset,
         "customer": spec.customer_id, "bound": spec.lower_bound, "stripes": spec.stripes},
    )).first()
    if row:
        return int(row[0])
    existing = (await conn.execute(
        text("SELECT id, type, asset, customer_id FROM accounts WHERE code = :code"), {"code": spec.code}
    )).one()
    if (AccountType(existing.type), existing.asset, existing.customer_id) != (
            spec.type, spec.asset, spec.customer_id):
        raise AccountMismatchError(f"account {spec.code} exists with another type, asset or customer",
                                   account=spec.code)
    return int(existing.id)


async def open_accounts(conn: AsyncConnection, specs: list[AccountSpec]) -> None:
    """`open_account` for several accounts in one statement: the new ones are created (in the
    order given), every existing one must match its spec."""
    rows = (await conn.execute(
        text("""WITH s AS (SELECT * FROM jsonb_to_recordset(CAST(:specs AS jsonb))
                               AS s (code text, type text, asset text, customer_id text, lower_bound numeric,
                                     stripes smallint, n bigint)),
                     new AS (INSERT INTO accounts (code, type, asset, customer_id, lower_bound, stripes)
                             SELECT code, type, asset, customer_id, lower_bound, stripes FROM s ORDER BY n
                             ON CONFLICT (code) DO NOTHING)
                -- the statement's snapshot: the accounts that existed before it
                SELECT a.code, a.type, a.asset, a.customer_id FROM accounts a JOIN s ON s.code = a.code"""),
        {"specs": json.dumps([{"code": x.code, "type": x.type.value, "asset": x.asset, "customer_id": x.customer_id,
                               "lower_bound": x.lower_bound, "stripes": x.stripes, "n": n}
                              for n, x in enumerate(specs)])},
    )).all()
    wanted = {x.code: x for x in specs}
    for row in rows:
        spec = wanted[row.code]
        if (AccountType(row.type), row.asset, row.customer_id) != (spec.type, spec.asset, spec.customer_id):
            raise AccountMismatchError(f"account {spec.code} exists with another type, asset or customer",
                                       account=spec.code)


_BALANCES = """
SELECT a.code, a.asset, b.normal_sign,
       sum(b.debits)::numeric AS debits, sum(b.credits)::numeric AS credits
  FROM accounts a JOIN account_balances b ON b.account_id = a.id
 WHERE {where}
 GROUP BY a.code, a.asset, b.normal_sign ORDER BY a.code
"""


async def balances(conn: AsyncConnection, codes: list[str]) -> dict[str, Balance]:
    rows = await conn.execute(text(_BALANCES.format(where="a.code = ANY(:codes)")), {"codes": codes})
    return {r.code: Balance(r.code, r.asset, int(r.debits), int(r.credits), r.normal_sign) for r in rows}


async def customer_balances(conn: AsyncConnection, customer_id: str) -> dict[str, Balance]:
    rows = await conn.execute(text(_BALANCES.format(where="a.customer_id = :c")), {"c": customer_id})
    return {r.code: Balance(r.code, r.asset, int(r.debits), int(r.credits), r.normal_sign) for r in rows}


async def balance(conn: AsyncConnection, code: str) -> Balance:
    found = await balances(conn, [code])
    if code not in found:
        raise UnknownAccountError(f"no account {code}", account=code)
    return found[code]
