"""The chart of accounts of a wallet, and the platform accounts every currency needs.

Customer accounts (one customer each, single-row, bounded):
  liability:customer:<id>:lot:<lot>   one per top-up or grant; what remains of it (bound 0)
  liability:customer:<id>:reserved    held by open reservations (bound 0)
  asset:customer:<id>:receivable      what the customer owes: overdraft, postpaid (bound 0)
Platform accounts (one per currency, striped so that no single row serializes the service):
  asset:platform:cash:<cur>  expense:platform:promotions:<cur>
  income:platform:usage:<cur>  income:platform:breakage:<cur>
"""
from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.accounts import ensure_asset, open_account
from ledger.model import AccountSpec, AccountType

PLATFORM_STRIPES = 16
ASSET_SCALE = 9  # atomic unit of every wallet currency: 10**-9 (token prices are tiny)


def lot_account(customer_id: str, lot_id: str) -> str:
    return f"liability:customer:{customer_id}:lot:{lot_id}"


def reserved_account(customer_id: str) -> str:
    return f"liability:customer:{customer_id}:reserved"


def receivable_account(customer_id: str) -> str:
    return f"asset:customer:{customer_id}:receivable"


def cash_account(currency: str) -> str:
    return f"asset:platform:cash:{currency}"


def promotions_account(currency: str) -> str:
    return f"expense:platform:promotions:{currency}"


def revenue_account(currency: str) -> str:
    return f"income:platform:usage:{currency}"


def breakage_account(currency: str) -> str:
    return f"income:platform:breakage:{currency}"


def platform_specs(currency: str) -> list[AccountSpec]:
    return [
        AccountSpec(cash_account(currency), AccountType.ASSET, currency, stripes=PLATFORM_STRIPES),
        AccountSpec(promotions_account(currency), AccountType.EXPENSE, currency, stripes=PLATFORM_STRIPES),
        AccountSpec(revenue_account(currency), AccountType.INCOME, currency, stripes=PLATFORM_STRIPES),
        AccountSpec(breakage_account(currency), AccountType.INCOME, currency, stripes=PLATFORM_STRIPES),
    ]


def customer_specs(customer_id: str, currency: str) -> list[AccountSpec]:
    return [
        AccountSpec(reserved_account(customer_id), AccountType.LIABILITY, currency, customer_id, 0),
        AccountSpec(receivable_account(customer_id), AccountType.ASSET, currency, customer_id, 0),
    ]


def lot_spec(customer_id: str, lot_id: str, currency: str) -> AccountSpec:
    return AccountSpec(lot_account(customer_id, lot_id), AccountType.LIABILITY, currency, customer_id, 0)


async def open_customer_accounts(conn: AsyncConnection, customer_id: str, currency: str) -> None:
    """The currency, its platform accounts and the customer's own fixed accounts (idempotent)."""
    await ensure_asset(conn, currency, ASSET_SCALE)
    for spec in (*platform_specs(currency), *customer_specs(customer_id, currency)):
        await open_account(conn, spec)
