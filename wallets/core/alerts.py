"""Alerts on a wallet's state after a command: balance.low when available falls below the
customer's threshold, wallet.blocked when the receivable passes the overdraft limit, once per
crossing (re-armed when it recovers)."""
from __future__ import annotations

from datetime import datetime

from pricing.money import format_amount
from wallets import chart
from wallets.core.decision import CustomerFlagged, Effect
from wallets.core.state import State
from wallets.model import Wallet

SCALE = chart.ASSET_SCALE


def alerts(state: State, w: Wallet, now: datetime) -> tuple[Effect, ...]:
    c = w.customer
    available = w.available(now)
    low = c.low_balance_threshold is not None and available < c.low_balance_threshold
    if low == c.low_balance_alerted and w.blocked == c.blocked:
        return ()
    effects: list[Effect] = [CustomerFlagged(c.id, low, w.blocked)]
    if low and not c.low_balance_alerted:
        effects.append(state.event("balance.low", c.id, f"balance.low:{c.id}:{state.ids('x')}", now, {
            "available": format_amount(available, SCALE), "currency": c.currency,
            "threshold": format_amount(c.low_balance_threshold or 0, SCALE)}))
    if w.blocked != c.blocked:
        topic = "wallet.blocked" if w.blocked else "wallet.unblocked"
        effects.append(state.event(topic, c.id, f"{topic}:{c.id}:{state.ids('x')}", now, {
            "receivable": format_amount(w.receivable, SCALE), "currency": c.currency,
            "overdraft_limit": format_amount(c.overdraft_limit or 0, SCALE)}))
    return tuple(effects)
