"""The full audit: the ledger's own checks plus the product's (added as wallets grow)."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.audit import CheckFn, Report, verify

WALLET_CHECKS: tuple[CheckFn, ...] = ()


async def full_verify(conn: AsyncConnection) -> Report:
    return await verify(conn, WALLET_CHECKS)
