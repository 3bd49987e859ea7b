"""Alerts on a wallet's state after a command: balance.low when available falls below the
customer's threshold, wallet.blocked when the receivable passes the overdraft limit, once per
crossing (re-armed when it recovers)."""
from __future__ import annotations

from datetime import datetime

from pricing.money import format_money
from wallets.core.decision import CustomerFlagged, Effect
from wallets.core.state import State
from wallets.model import Wallet


def alert_due(w: Wallet, now: datetime) -> bool:
    """Whether the wallet has crossed a line since its last alerts: `alerts` has effects for it.
    Asked after every command (a usage event's included), so it needs no State."""
    c = w.customer
    low = c.low_balance_threshold is not None and w.available(now) < c.low_balance_threshold
    return low != c.low_balance_alerted or w.blocked != c.blocked


def alerts(state: State, w: Wallet, now: datetime) -> tuple[Effect, ...]:
    if not alert_due(w, now):
        return ()
    c = w.customer
    available = w.available(now)
    low = c.low_balance_threshold is not None and available < c.low_balance_threshold
    effects: list[Effect] = [CustomerFlagged(c.id, low, w.blocked)]
    if low and not c.low_balance_alerted:
        effects.append(state.event("balance.low", c.id, f"balance.low:{c.id}:{state.ids('x')}", now, {
            "available": format_money(available, c.currency), "currency": c.currency,
            "threshold": format_money(c.low_balance_threshold or 0, c.currency)}))
    if w.blocked != c.blocked:
        topic = "wallet.blocked" if w.blocked else "wallet.unblocked"
        effects.append(state.event(topic, c.id, f"{topic}:{c.id}:{state.ids('x')}", now, {
            "receivable": format_money(w.receivable, c.currency), "currency": c.currency,
            # null: unlimited, as the customer says (0.00 read as a wallet still past its limit)
            "overdraft_limit": None if c.overdraft_limit is None else format_money(c.overdraft_limit, c.currency)}))
    return tuple(effects)
