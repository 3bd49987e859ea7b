"""Every route of the wallets, for create_app to register in one line."""
from __future__ import annotations

from api.routes import (
    budgets,
    charges,
    customers,
    invoices,
    price_books,
    price_overrides,
    receivables,
    refunds,
    rerates,
    reservations,
    settlements,
    usage,
)

ROUTES = [
    price_books.post_price_book, price_books.get_price_book, price_books.get_price_version,
    price_books.import_price_books,
    customers.create_customer, customers.get_customer, customers.change_customer,
    customers.customer_changes, customers.get_wallet, customers.top_up, customers.grant, customers.reverse_grant,
    reservations.create_reservation, reservations.settle, reservations.release, reservations.extend,
    reservations.get_reservation,
    settlements.settle_many,
    usage.post_usage_events, usage.get_usage,
    charges.get_charge_trace,
    *budgets.ROUTES,
    invoices.list_invoices, invoices.upcoming_invoice, invoices.get_invoice, invoices.pay_invoice,
    invoices.close_periods,
    *rerates.ROUTES,
    *price_overrides.ROUTES,
    *receivables.ROUTES,
    *refunds.ROUTES,
]
