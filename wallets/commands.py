"""The reservation commands: reserve, settle (captures), release, and expiry.

Each `apply` checks and computes first and changes the batch's state last, so a command that
is refused leaves nothing behind but what it deliberately records (a refusal, for replays).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pricing.books import PriceBook, PriceVersion
from pricing.errors import UnpricedModelError
from pricing.estimate import estimate_upper_bound
from pricing.money import format_amount
from pricing.rating import Rating, rate
from pricing.usage import Usage
from wallets import chart
from wallets.batch import Batch, IdemKey
from wallets.errors import (
    ConflictError,
    ImplausibleUsageError,
    InsufficientFundsError,
    NotFoundError,
    ReservationClosedError,
)
from wallets.model import (
    Hold,
    Legs,
    Reservation,
    Wallet,
    allocate,
    new_id,
    pieces_left,
    return_target,
    settlement,
    settlement_legs,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    customer_id: str
    idem: IdemKey | None = None
    exclusive = False  # True: alone among its customer's commands in a batch
    needs_book = False  # True: rates usage with the customer's price book

    def conflict_keys(self) -> set[tuple[str, ...]]:
        keys = self._keys()
        if self.idem is not None:
            keys.add(("idem", self.idem.scope, self.idem.key))
        return keys

    def _keys(self) -> set[tuple[str, ...]]:
        return set()

    def needs(self) -> dict[str, list[Any]]:
        return {}

    def rating_time(self, wallets: Mapping[str, Wallet]) -> datetime | None:
        """The usage time this command rates at, if it rates (its billing period's counters load)."""
        return None

    def apply(self, batch: Batch) -> Any:
        raise NotImplementedError


def book_of(batch: Batch, wallet: Wallet) -> PriceBook:
    book = batch.books.get(wallet.customer.id)
    if book is None:
        raise UnpricedModelError(f"customer {wallet.customer.id} has no price book "
                                 f"({wallet.customer.price_book or 'none set'}) to price with")
    return book


def rate_call(batch: Batch, wallet: Wallet, model: str, tokens: Mapping[str, int], at: datetime,
              dimensions: Mapping[str, Any], *, with_request_fee: bool) -> Rating:
    """Rate one call's usage at its own time, graduated tiers continuing from the customer's
    period to date; a book's per-request fee is charged once per call."""
    book = book_of(batch, wallet)
    version = book.version_at(at)
    counts = {k: v for k, v in tokens.items() if v}
    usage = Usage(model, counts, at, dimensions)
    if with_request_fee and version.find_rule("request", model, usage.dimension_dict) is not None:
        usage = Usage(model, {**counts, "request": 1}, at, dimensions)
    return rate(usage, version, period_to_date=batch.period_to_date(wallet.customer.id, at, book.id))



CONTEXT_TOKEN_TYPES = ("input", "cached_input", "cache_write", "output", "reasoning")  # disjoint counts


def implausibility(wallet: Wallet, version: PriceVersion, rating: Rating, tokens: Mapping[str, int],
                   charged_before: int = 0) -> ImplausibleUsageError | None:
    """The plausibility bound a call breaks, if any: its charge (with what the request was charged
    before) past the customer's max_charge_per_request, or else its book version's; its input +
    output tokens past the context window of the rules that priced it, or else the version's."""
    limit, source = wallet.customer.max_charge_per_request, "customer"
    if limit is None and version.max_charge_per_request is not None:
        limit, source = int(version.max_charge_per_request.scaleb(rating.scale)), "price_book"
    charge = charged_before + rating.total_units
    if limit is not None and charge > limit:
        currency = wallet.customer.currency
        return ImplausibleUsageError(
            f"a charge of {format_amount(charge)} {currency} for one request exceeds the {source.replace('_', ' ')}'s "
            f"max_charge_per_request of {format_amount(limit)} {currency}",
            limit="max_charge_per_request", maximum=format_amount(limit), value=format_amount(charge), source=source)
    window = version.context_window_for(line.rule_id for line in rating.lines)
    used = sum(tokens.get(t, 0) for t in CONTEXT_TOKEN_TYPES)
    if window is not None and used > window:
        return ImplausibleUsageError(
            f"{used} input and output tokens exceed the context window of {window} tokens",
            limit="context_window", maximum=window, value=used, source="price_book")
    return None


def charge_lines(rating: Rating) -> list[dict[str, Any]]:
    return [{"kind": ln.kind, "token_type": ln.token_type, "quantity": ln.quantity,
             "unit_price": str(ln.unit_price), "amount_units": ln.amount_units, "exact": str(ln.amount),
             "rule_id": ln.rule_id, "price_version": ln.price_version, "model": ln.model,
             "tier": ln.tier, "override_id": ln.override_id} for ln in rating.lines]


# ---------------------------------------------------------------------------------- reserve

@dataclass(frozen=True, slots=True)
class ReservationSummary:
    id: str
    request_id: str
    customer_id: str
    model: str
    currency: str
    status: str
    amount: int
    created_at: str
    expires_at: str

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


@dataclass(slots=True)
class ReserveResult:
    reservation: ReservationSummary
    replayed: bool
    entry_key: str | None = None
    entry_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reserve(Command):
    request_id: str
    request_hash: bytes
    model: str
    ttl_seconds: int
    amount: int | None = None  # the hold, when the caller gives it
    prompt_tokens: int | None = None
    max_output_tokens: int | None = None
    dimensions: Mapping[str, Any] = field(default_factory=dict)
    estimate: Mapping[str, Any] | None = None  # what is stored about the estimate

    @property
    def needs_book(self) -> bool:  # type: ignore[override]
        return self.amount is None

    @property
    def scope(self) -> str:
        return f"reserve:{self.customer_id}"

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reserve", self.customer_id, self.request_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"idempotency": [(self.scope, self.request_id)]}

    def hold_amount(self, batch: Batch, wallet: Wallet) -> int:
        if self.amount is not None:
            return self.amount
        rating = estimate_upper_bound(book_of(batch, wallet), self.model, self.prompt_tokens or 0,
                                      self.max_output_tokens or 0, self.dimensions, batch.now)
        return rating.total_units

    def apply(self, batch: Batch) -> ReserveResult:
        w = batch.wallet(self.customer_id)
        stored = batch.loaded.idempotency.get((self.scope, self.request_id))
        if stored is not None:
            if stored.request_hash != self.request_hash:
                raise ConflictError(f"request_id {self.request_id} was used with another request",
                                    request_id=self.request_id)
            if stored.status == 201:
                return ReserveResult(ReservationSummary(**stored.body), replayed=True)
            raise InsufficientFundsError(stored.body["detail"], customer_id=w.customer.id,
                                         request_id=self.request_id)
        amount = self.hold_amount(batch, w)
        pieces = self._pieces(w, amount, batch.now)
        if isinstance(pieces, str):
            batch.add("idempotency", {"scope": self.scope, "key": self.request_id,
                                      "request_hash": self.request_hash, "status": 402,
                                      "response": {"code": "insufficient_funds", "detail": pieces}})
            raise InsufficientFundsError(pieces, customer_id=w.customer.id, request_id=self.request_id)
        return self._hold(batch, w, amount, pieces)

    def _pieces(self, w: Wallet, amount: int, now: datetime) -> list[tuple[str, int]] | str:
        if w.blocked:
            return (f"wallet {w.customer.id} is blocked: its receivable {format_amount(w.receivable)} "
                    f"is past its overdraft limit {format_amount(w.customer.overdraft_limit or 0)}")
        sources = [(lot.code, lot.balance) for lot in w.live_lots(now)]
        sources.append((chart.receivable_account(w.customer.id), w.headroom()))
        pieces = allocate(sources, amount)
        if pieces is None:
            return (f"a hold of {format_amount(amount)} {w.customer.currency} exceeds what wallet "
                    f"{w.customer.id} can draw: {format_amount(w.available(now))} available"
                    + ("" if not w.customer.overdraft_limit else
                       f" plus {format_amount(w.headroom() or 0)} of overdraft"))
        return pieces

    def _hold(self, batch: Batch, w: Wallet, amount: int, pieces: list[tuple[str, int]]) -> ReserveResult:
        now, cid = batch.now, w.customer.id
        r = Reservation(new_id("res"), cid, self.request_id, self.request_hash, self.model, amount, "held",
                        now, now + timedelta(seconds=self.ttl_seconds),
                        [Hold(i, account, a) for i, (account, a) in enumerate(pieces)],
                        dict(self.dimensions), dict(self.estimate) if self.estimate is not None else None,
                        new=True)
        legs = Legs(w.customer.currency).credit(chart.reserved_account(cid), amount)
        for account, a in pieces:
            legs.debit(account, a)
        r.entry_key = batch.post(w, f"reserve:{r.id}", "reserve", legs,
                                 {"reservation_id": r.id, "request_id": self.request_id, "model": self.model})
        w.reservations[r.id] = r
        summary = ReservationSummary(r.id, r.request_id, cid, r.model, w.customer.currency, r.status, amount,
                                     r.created_at.isoformat(), r.expires_at.isoformat())
        batch.add("idempotency", {"scope": self.scope, "key": self.request_id, "request_hash": self.request_hash,
                                  "status": 201, "response": summary.as_dict()})
        return batch.track(ReserveResult(summary, replayed=False, entry_key=r.entry_key))


# ----------------------------------------------------------------------------------- settle

@dataclass(slots=True)
class SettleResult:
    reservation_id: str
    status: str
    charged: int
    released: int
    lines: list[dict[str, Any]]
    price_book: str
    price_version: str
    replayed: bool
    currency: str
    entry_key: str | None = None
    entry_id: int | None = None


def settle_result_from_charge(charge: Mapping[str, Any], status: str, currency: str) -> SettleResult:
    return SettleResult(charge["reservation_id"], status, int(charge["charged"]), int(charge["released"]),
                        list(charge["lines"]), charge["price_book"], charge["price_version"], True, currency,
                        None, charge["entry_id"])


def reservation_in(batch: Batch, w: Wallet, reservation_id: str) -> Reservation:
    r = w.reservations.get(reservation_id)
    if r is None:
        raise NotFoundError(f"no reservation {reservation_id}", reservation_id=reservation_id)
    return r


@dataclass(frozen=True, slots=True, kw_only=True)
class Settle(Command):
    reservation_id: str
    request_hash: bytes
    tokens: Mapping[str, int]  # canonical counts by rating token type
    usage: Mapping[str, Any]  # as reported, stored with the charge
    final: bool = True
    capture_id: str | None = None
    forced_by: str | None = None  # an admin key's id: charge usage past the plausibility bounds
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

    def apply(self, batch: Batch) -> SettleResult:
        w = batch.wallet(self.customer_id)
        r = reservation_in(batch, w, self.reservation_id)
        currency = w.customer.currency
        if self.capture_id and self.capture_id in r.capture_ids:
            digest, charge = r.capture_ids[self.capture_id]
            if digest != self.request_hash:
                raise ConflictError(f"capture {self.capture_id} was sent with another body")
            return settle_result_from_charge(charge, r.status, currency)
        if r.status in ("settled", "released"):
            if r.status == "settled" and self.final and r.final_hash == self.request_hash and r.final_charge:
                return settle_result_from_charge(r.final_charge, r.status, currency)
            raise ReservationClosedError(f"reservation {r.id} is already {r.status}", reservation_id=r.id,
                                         reservation_status=r.status)
        rating = rate_call(batch, w, r.model, self.tokens, r.created_at, r.dimensions,
                           with_request_fee=r.captures == 0)
        forced = self._forced(implausibility(w, book_of(batch, w).version_at(r.created_at), rating, self.tokens,
                                             r.charged))
        s = settlement(w, r, rating.total_units, self.final, batch.now)
        key = batch.post(w, f"settle:{r.id}:{r.captures}", "settle", settlement_legs(w, s),
                         {"reservation_id": r.id, "request_id": r.request_id, "capture": r.captures,
                          "final": self.final, "price_book": rating.book_id,
                          "price_version": rating.price_version, **forced})
        batch.count(w.customer.id, r.created_at, rating.book_id, rating.rule_quantities())
        lines = charge_lines(rating)
        batch.add("charges", {
            "customer_id": w.customer.id, "reservation_id": r.id, "event_id": None,
            "request_id": r.request_id, "seq": r.captures, "capture_id": self.capture_id, "final": self.final,
            "request_hash": self.request_hash, "model": r.model, "occurred_at": r.created_at,
            "usage": {**self.usage, **forced}, "dimensions": r.dimensions, "price_book": rating.book_id,
            "price_version": rating.price_version, "lines": lines, "charged": s.cost,
            "from_hold": s.from_hold, "from_lots": sum(a for _, a in s.from_lots),
            "from_receivable": s.from_receivable, "released": s.released, "entry_key": key})
        if r.is_open:
            r.captured += s.from_hold
        r.charged += s.cost
        r.captures += 1
        r.dirty = True
        if self.final:
            if r.is_open:
                r.released += s.released
                r.closed_at = batch.now
            r.status = "settled"
        elif r.is_open:
            r.status = "capturing"
        return batch.track(SettleResult(r.id, r.status, s.cost, s.released, lines, rating.book_id,
                                        rating.price_version, False, currency, key))

    def _forced(self, problem: ImplausibleUsageError | None) -> dict[str, Any]:
        """Nothing for plausible usage; a refusal (the hold stays as it is), unless an admin key
        forces it: then what was forced past which bound, and by whom, for the charge's trace."""
        if problem is None:
            return {}
        if self.forced_by is None:
            raise problem
        return {"forced": {"by": self.forced_by, **problem.context}}


# ------------------------------------------------------------------------- release / expire

@dataclass(slots=True)
class ReleaseResult:
    reservation_id: str
    status: str
    released: int
    replayed: bool
    entry_key: str | None = None
    entry_id: int | None = None


def give_back(batch: Batch, w: Wallet, r: Reservation, status: str, kind: str) -> ReleaseResult:
    """Return what is left of the hold to where it came from, and close the reservation."""
    pieces = pieces_left(r.holds, r.captured)
    left = sum(a for _, a in pieces)
    legs = Legs(w.customer.currency).debit(chart.reserved_account(w.customer.id), left)
    for account, amount in pieces:
        legs.credit(return_target(w, account), amount)
    key = batch.post(w, f"{kind}:{r.id}", kind, legs, {"reservation_id": r.id, "request_id": r.request_id})
    r.released += left
    r.status, r.closed_at, r.dirty = status, batch.now, True
    return batch.track(ReleaseResult(r.id, status, left, False, key))


@dataclass(frozen=True, slots=True, kw_only=True)
class Release(Command):
    reservation_id: str

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reservation", self.reservation_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"reservation_ids": [self.reservation_id]}

    def apply(self, batch: Batch) -> ReleaseResult:
        w = batch.wallet(self.customer_id)
        r = reservation_in(batch, w, self.reservation_id)
        if r.status == "released":
            return ReleaseResult(r.id, r.status, r.released, True)
        if not r.is_open:
            raise ReservationClosedError(f"reservation {r.id} is already {r.status}", reservation_id=r.id,
                                         reservation_status=r.status)
        return give_back(batch, w, r, "released", "release")


@dataclass(frozen=True, slots=True, kw_only=True)
class ExpireReservation(Command):
    """Job: a reservation past its expiry gives its hold back (once; a no-op otherwise)."""

    reservation_id: str

    def _keys(self) -> set[tuple[str, ...]]:
        return {("reservation", self.reservation_id)}

    def needs(self) -> dict[str, list[Any]]:
        return {"reservation_ids": [self.reservation_id]}

    def apply(self, batch: Batch) -> ReleaseResult | None:
        w = batch.wallet(self.customer_id)
        r = w.reservations.get(self.reservation_id)
        if r is None or not r.is_open or r.expires_at > batch.now:
            return None
        result = give_back(batch, w, r, "expired", "expire")
        batch.outbox("reservation.expired", w.customer.id, f"reservation.expired:{r.id}", {
            "reservation_id": r.id, "request_id": r.request_id, "released": format_amount(result.released),
            "currency": w.customer.currency})
        return result
