"""The wallet commands as plain values: what a caller asks for, and what state deciding it needs
(its conflict keys keep two commands on one reservation or key out of one batch)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wallets import chart
from wallets.core.idempotency import IdemKey
from wallets.model import Wallet

TOPUP_PRIORITY, GRANT_PRIORITY = 100, 50
MAX_TTL_SECONDS = 7 * 86400  # the longest a hold may be asked for, at a reserve or an extension


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    customer_id: str
    idem: IdemKey | None = None
    exclusive = False  # True: alone among its customer's commands in a batch
    # True (with exclusive): decided first among its customer's commands in a batch, on the state
    # loaded fresh, as alone; those that are not exclusive may ride after it
    leads = False
    needs_book = False  # True: rates usage with the customer's price book

    def conflict_keys(self) -> set[tuple[str, ...]]:
        keys = self._keys()
        if self.idem is not None:
            keys.add(("idem", self.idem.scope, self.idem.key))
        return keys

    def _keys(self) -> set[tuple[str, ...]]:
        return set()

    def needs(self) -> dict[str, list[Any]]:
        """What the shell loads besides the customer's wallet, by the store's names."""
        return {}

    def rating_time(self, wallets: Mapping[str, Wallet]) -> datetime | None:
        """The usage time this command rates at, if it rates (its billing period's counters load)."""
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserve(Command):
    request_id: str
    request_hash: bytes
    model: str
    ttl_seconds: int
    amount: int | None = None  # the hold, when the caller gives it
    prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    prompt_audio_tokens: int = 0  # of prompt_tokens, audio: held at the audio input price
    # the call continues a conversation prompt_tokens does not count: its prompt is held at the
    # book's context window for the model, else at this (pricing.estimate)
    prior_context_tokens: int | None = None
    # the most uses of per-call tools the provider runs itself ({"web_search": 5}): held at their price
    tool_uses: Mapping[str, int] = field(default_factory=dict)
    # of prompt_tokens, the input tokens held for those tools' results (the gateway's): a hold no
    # journal entry can carry is named by its tools when they are its larger part (rating.tools_unpostable)
    tool_result_tokens: int = 0
    # the call may write its prompt to the provider's cache ("cache_write", "cache_write_1h"): held at that price
    prompt_cache_write: str | None = None
    # dimensions the provider chooses and its answer reports (service_tier "auto"): held at the dearest value
    chosen_by_provider: tuple[str, ...] = ()
    # the service tiers a gateway call that names its tier may be billed at (api.gateway.calls.SERVED_TIERS:
    # flex as named, priority or default): the free check tries just those. (): any the book's rules match
    served_tiers: tuple[str, ...] = ()
    # prices above the standard ones the call may be billed, which the book must set itself, else the
    # reserve is refused unpriced_model (pricing.premium): "cache_write_1h", "long_context"; and the
    # names of its dimensions set to a premium value (speed: fast, service_tier: priority)
    premiums: tuple[str, ...] = ()
    premium_dimensions: tuple[str, ...] = ()
    dimensions: Mapping[str, Any] = field(default_factory=dict)
    estimate: Mapping[str, Any] | None = None  # what is stored about the estimate
    # dimensions a caller that may not choose prices named itself (a customer's key, through the
    # gateway): refused when a rule of the book matches one (processing: batch, service_tier)
    caller_dimensions: tuple[str, ...] = ()
    # only the answer kept for its request id (the gateway's reclaim of a reserve left unanswered):
    # none kept, NothingKeptError, and nothing held, counted or alerted
    kept_only: bool = False

    needs_book = True  # every hold: one given as an amount too, for a model the book prices (reservations._priced)

    @property
    def scope(self) -> str:
        """The idempotency scope of its request id: per customer."""
        return f"reserve:{self.customer_id}"

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reserve", self.customer_id, self.request_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"idempotency": [(self.scope, self.request_id)]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle(Command):
    reservation_id: str
    request_hash: bytes
    tokens: Mapping[str, int]  # canonical counts by rating token type
    usage: Mapping[str, Any]  # as reported, stored with the charge
    final: bool = True
    capture_id: str | None = None
    forced_by: str | None = None  # an admin key's id: charge usage past the plausibility bounds
    # sent over HTTP by a key other than an admin's: a gateway call's reservation is not its to close
    from_caller: bool = False
    # its usage refused, sent only to be answered as the settle kept for its body (the
    # reservation's final, or its capture_id's): never rated (api.routes.reservations.settle_outcome)
    kept_only: bool = False
    needs_book = True

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reservation", self.reservation_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"reservation_ids": [self.reservation_id],
                "capture_ids": [self.capture_id] if self.capture_id else []}

    def rating_time(self, wallets: Mapping[str, Wallet]) -> datetime | None:
        w = wallets.get(self.customer_id)
        r = w.reservations.get(self.reservation_id) if w else None
        return r.created_at if r else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Release(Command):
    reservation_id: str
    from_caller: bool = False  # as Settle's

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reservation", self.reservation_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"reservation_ids": [self.reservation_id]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Extend(Command):
    """Keep an open reservation's hold for `ttl_seconds` from now: a later expiry, nothing else."""

    reservation_id: str
    ttl_seconds: int

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reservation", self.reservation_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"reservation_ids": [self.reservation_id]}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireReservation(Release):
    """Job: a reservation past its expiry gives its hold back (once; a no-op otherwise)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TopUp(Command):
    """Paid credit. For a prepaid customer it first pays off what the receivable says is owed
    for settled usage (not what open reservations hold on credit); the rest becomes a lot."""

    amount: int
    reference: str = ""
    priority: int = TOPUP_PRIORITY
    expires_at: datetime | None = None
    exclusive = True  # needs the credit held on the receivable, read fresh from the database

    def needs(self) -> dict[str, list[Any]]:
        return {"credit_held_for": [self.customer_id]}


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant(Command):
    """Promotional or contractual credit, paid for by the platform's promotions expense."""

    amount: int
    priority: int = GRANT_PRIORITY
    expires_at: datetime | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class LotCommand(Command):
    """A command on one lot: it loads that lot (even emptied or swept) and conflicts on it."""

    lot_id: str

    @property
    def code(self) -> str:
        return chart.lot_account(self.customer_id, self.lot_id)

    def _keys(self) -> set[tuple[str, ...]]:
        return {("lot", self.lot_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"lot_codes": [self.code]}


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireLot(LotCommand):
    """Job: a lot past its expiry gives its remainder to breakage revenue, exactly once."""


def payout_key(customer_id: str, reference: str) -> tuple[str, ...]:
    """The conflict key of a customer's payout reference (the processor's or bank's refund id): a
    top-up's refund and a refund of overpaid credit under one reference never share a batch, so
    the second sees the first posted (one reference, one payout, whichever kind)."""
    return ("payout", customer_id, reference)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReverseGrant(LotCommand):
    """Give back (part of) a lot's unheld remainder: a top-up's is refunded to the platform's cash,
    a grant's revoked to its promotions expense; a lot a correction opened is refused. Without
    `amount`: all of it (a refund: its whole minor units, see wallets.core.credits.reverse_grant)."""

    amount: int | None = None
    reason: str = ""
    reference: str = ""

    def _keys(self) -> set[tuple[str, ...]]:  # one payout reference: the second sees the first posted
        keys = {("lot", self.lot_id)}  # LotCommand's (slots: no bare super())
        return keys | {payout_key(self.customer_id, self.reference)} if self.reference else keys


@dataclass(frozen=True, slots=True, kw_only=True)
class RefundCredit(Command):
    """Pay back in cash `amount` of the customer's credit that is its own overpaid cash: what a
    re-rate, a volume true-up or a close's rounding gave back beyond what it owed, of usage it had
    paid in cash (wallets.core.refunds)."""

    amount: int
    reference: str
    currency: str | None = None  # None: the customer's
    reason: str = ""
    exclusive = True  # reads the customer's cash and credit held on the receivable, fresh
    # decided first, it reads them as loaded; what the customer's other commands in the batch change
    # (holds, usage, lots: untracked credit held on the receivable, cash a reversal pays out) comes after
    leads = True

    def _keys(self) -> set[tuple[str, ...]]:
        return {("refund", self.customer_id), payout_key(self.customer_id, self.reference)}

    def needs(self) -> dict[str, list[Any]]:
        return {"credit_held_for": [self.customer_id]}


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordUsage(Command):
    """A post-hoc usage event: rated at its own time, paid from the lots, then the receivable.
    Event ids are per customer: another customer's event of the same id is another event."""

    event_id: str
    request_hash: bytes  # of the body with its timestamp as the instant (wire_time), kept with the event
    model: str
    occurred_at: datetime
    tokens: Mapping[str, int]
    usage: Mapping[str, Any]
    dimensions: Mapping[str, Any] = field(default_factory=dict)
    # of the body with its timestamp spelled as an event kept before the hash read the instant
    # was kept with (as sent, Z, +00:00, .000, another offset, ...): given when request_hash met a
    # conflict, the one hash the route found among its spellings (before the lane's transaction)
    earlier: tuple[bytes, ...] = ()
    # its usage refused, sent only to be answered as the event kept under its id (a duplicate, or
    # a conflict): never rated (inputs.usage_or_kept)
    kept_only: bool = False
    needs_book = True

    def _keys(self) -> set[tuple[str, ...]]:
        return {("event", self.customer_id, self.event_id)}

    def rating_time(self, wallets: Mapping[str, Wallet]) -> datetime | None:
        return self.occurred_at

    def needs(self) -> dict[str, list[Any]]:
        return {"events": [(self.customer_id, self.event_id)]}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClosePeriod(Command):
    """Job: close the customer's period that starts at `period_start` once its grace window is
    over: post the volume true-up, then finalize the invoice under the issuer's next number."""

    period_start: datetime
    issuer: str = "INV"
    exclusive = True  # reads the period's rollup, which the customer's other commands change
    needs_book = True  # volume tiers are trued up with the customer's price book

    def _keys(self) -> set[tuple[str, ...]]:
        return {("close", self.customer_id)}

    def rating_time(self, wallets: Mapping[str, Wallet]) -> datetime | None:
        return self.period_start  # its counters: what the true-up gives back to allowances moves them

    def needs(self) -> dict[str, list[Any]]:
        return {"credit_held_for": [self.customer_id]}


@dataclass(frozen=True, slots=True, kw_only=True)
class PayInvoice(Command):
    """A payment of a finalized invoice's amount due: cash in, the receivable down."""

    invoice_id: str
    amount: int
    currency: str
    reference: str = ""
    exclusive = True  # reads the credit held on the receivable, fresh from the database

    def _keys(self) -> set[tuple[str, ...]]:
        return {("invoice", self.invoice_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"credit_held_for": [self.customer_id]}



@dataclass(frozen=True, slots=True, kw_only=True)
class RerateCharges(Command):
    """Re-rate the customer's charges billed in one period (`period`) priced with `book_id`
    whose usage time falls in [range_from, range_to), with the corrected `version`: one balanced
    adjustment entry for what changed, linked to each charge it corrects, and a credit (or debit)
    note when that period's invoice, which carried them, is finalized. `sources` are the periods
    of their usage times (the period's own; earlier ones for late charges), each rated as a whole
    (graduated tiers); without them, every charge of `period`'s usage, wherever it was billed. A
    charge already re-rated to `version` is left."""

    rerate_id: str
    book_id: str
    version: str
    range_from: datetime
    range_to: datetime
    period: str
    issuer: str = "CN"
    sources: tuple[str, ...] = ()
    exclusive = True  # reads and adjusts the charges of the period

    def _keys(self) -> set[tuple[str, ...]]:
        return {("rerate", self.customer_id, self.period)}

    def needs(self) -> dict[str, list[Any]]:
        return {"credit_held_for": [self.customer_id]}
