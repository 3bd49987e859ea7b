"""The wallet commands api/ and the jobs submit to the engine, and the results they answer.
Both are plain values of the pure core (wallets/core), where the rules that decide them live."""
from __future__ import annotations

from wallets.core.commands import (
    GRANT_PRIORITY,
    MAX_TTL_SECONDS,
    TOPUP_PRIORITY,
    ClosePeriod,
    Command,
    ExpireLot,
    ExpireReservation,
    Extend,
    Grant,
    PayInvoice,
    RecordUsage,
    RefundCredit,
    Release,
    Reserve,
    ReverseGrant,
    Settle,
    TopUp,
)
from wallets.core.results import (
    CreditResult,
    ExpiryResult,
    ExtendResult,
    LotView,
    RefundResult,
    ReleaseResult,
    ReservationSummary,
    ReserveResult,
    ReversalResult,
    SettleResult,
    UsageResult,
    WalletView,
    lot_view,
    wallet_view,
)

__all__ = [
    "GRANT_PRIORITY", "MAX_TTL_SECONDS", "TOPUP_PRIORITY", "ClosePeriod", "Command", "CreditResult", "ExpireLot",
    "ExpireReservation", "ExpiryResult", "Extend", "ExtendResult", "Grant", "LotView", "PayInvoice", "RecordUsage",
    "RefundCredit", "RefundResult",
    "Release", "ReleaseResult", "ReservationSummary", "Reserve", "ReserveResult", "ReversalResult", "ReverseGrant",
    "Settle", "SettleResult", "TopUp",
    "UsageResult", "WalletView", "lot_view", "wallet_view",
]
