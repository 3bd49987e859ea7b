"""Opening a customer's accounts (and its currency's platform accounts) in the database."""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.accounts import ensure_asset, open_accounts
from wallets.chart import ASSET_SCALE, customer_specs, platform_specs


async def open_customer_accounts(conn: AsyncConnection, customer_id: str, currency: str) -> None:
    """The currency, its platform accounts and the customer's own fixed accounts (idempotent;
    two statements, as creating a customer holds the accounts' lock)."""
    await ensure_asset(conn, currency, ASSET_SCALE)
    await open_accounts(conn, [*platform_specs(currency), *customer_specs(customer_id, currency)])
