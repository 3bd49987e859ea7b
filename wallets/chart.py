"""The chart of accounts of a wallet, the reservation statuses and the wallets' currency scale:
each defined here once. Pure values (no database): SQL receives them as parameters.

Customer accounts (one customer each, single-row, bounded):
  liability:customer:<id>:lot:<lot>   one per top-up or grant; what remains of it (bound 0)
  liability:customer:<id>:reserved    held by open reservations (bound 0)
  asset:customer:<id>:receivable      what the customer owes: overdraft, postpaid (bound 0)
Platform accounts (one per currency, striped so that no single row serializes the service):
  asset:platform:cash:<cur>  expense:platform:promotions:<cur>
  income:platform:usage:<cur>  income:platform:breakage:<cur>
  income:platform:rounding:<cur>  what rounding invoices' amounts due to the currency's minor unit
                                  gained (rounded up) or lost (rounded down), against the receivable
"""
from __future__ import annotations

from ledger.model import AccountSpec, AccountType
from pricing.money import DEFAULT_SCALE

PLATFORM_STRIPES = 16
ASSET_SCALE = DEFAULT_SCALE  # atomic unit of every wallet currency: 10**-9 (token prices are tiny)

# Reservation statuses: open ones still hold credit; the others are final.
HELD, CAPTURING, SETTLED, RELEASED, EXPIRED = "held", "capturing", "settled", "released", "expired"
OPEN_STATUSES = (HELD, CAPTURING)


# A customer's fixed accounts as (before, after) its id: SQL that builds them from a customer id
# column gets these as parameters (`%(reserved_before)s || c.id || %(reserved_after)s`).
RESERVED_CODE = ("liability:customer:", ":reserved")
RECEIVABLE_CODE = ("asset:customer:", ":receivable")
LOT_CODE = ("liability:customer:", ":lot:")  # then the lot's id


def lot_account(customer_id: str, lot_id: str) -> str:
    return LOT_CODE[0] + customer_id + LOT_CODE[1] + lot_id


def is_lot_account(code: str) -> bool:
    """Whether `code` is a customer's lot (customer ids hold no ':', so no other code matches)."""
    return code.startswith(LOT_CODE[0]) and LOT_CODE[1] in code[len(LOT_CODE[0]):]


def reserved_account(customer_id: str) -> str:
    return RESERVED_CODE[0] + customer_id + RESERVED_CODE[1]


def receivable_account(customer_id: str) -> str:
    return RECEIVABLE_CODE[0] + customer_id + RECEIVABLE_CODE[1]


SQL_PARAMETERS: dict[str, str | list[str]] = {
    "open_statuses": list(OPEN_STATUSES),  # `r.status = ANY(%(open_statuses)s::text[])`
    "reserved_before": RESERVED_CODE[0], "reserved_after": RESERVED_CODE[1],
    "receivable_before": RECEIVABLE_CODE[0], "receivable_after": RECEIVABLE_CODE[1],
}


def cash_account(currency: str) -> str:
    return f"asset:platform:cash:{currency}"


def promotions_account(currency: str) -> str:
    return f"expense:platform:promotions:{currency}"


def revenue_account(currency: str) -> str:
    return f"income:platform:usage:{currency}"


def breakage_account(currency: str) -> str:
    return f"income:platform:breakage:{currency}"


def rounding_account(currency: str) -> str:
    return f"income:platform:rounding:{currency}"


def rounding_spec(currency: str) -> AccountSpec:
    """Opened with a currency's other platform accounts, and by the first close that rounds an
    amount due in a currency whose customers predate it (no migration: it is opened on use)."""
    return AccountSpec(rounding_account(currency), AccountType.INCOME, currency, stripes=PLATFORM_STRIPES)


def platform_specs(currency: str) -> list[AccountSpec]:
    return [
        AccountSpec(cash_account(currency), AccountType.ASSET, currency, stripes=PLATFORM_STRIPES),
        AccountSpec(promotions_account(currency), AccountType.EXPENSE, currency, stripes=PLATFORM_STRIPES),
        AccountSpec(revenue_account(currency), AccountType.INCOME, currency, stripes=PLATFORM_STRIPES),
        AccountSpec(breakage_account(currency), AccountType.INCOME, currency, stripes=PLATFORM_STRIPES),
        rounding_spec(currency),
    ]


def customer_specs(customer_id: str, currency: str) -> list[AccountSpec]:
    return [
        AccountSpec(reserved_account(customer_id), AccountType.LIABILITY, currency, customer_id, 0),
        AccountSpec(receivable_account(customer_id), AccountType.ASSET, currency, customer_id, 0),
    ]


def lot_spec(customer_id: str, lot_id: str, currency: str) -> AccountSpec:
    return AccountSpec(lot_account(customer_id, lot_id), AccountType.LIABILITY, currency, customer_id, 0)
