"""The reservation rules: reserve, settle (captures), release, extension and expiry, as pure decisions."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from pricing.books import PriceBook
from pricing.errors import PricingError, UnpricedModelError
from pricing.estimate import (
    REPORTED_DIMENSIONS,
    charges_other_types,
    estimate_upper_bound,
    held_choices,
    held_prompt_tokens,
    premiums_priced,
    reportable_variants,
)
from pricing.money import format_money
from pricing.normalize import UNSPLIT
from pricing.rating import Rating
from wallets import chart
from wallets.core import budgets, idempotency
from wallets.core.commands import MAX_TTL_SECONDS, Extend, Release, Reserve, Settle
from wallets.core.decision import (
    NOTHING_DUE,
    AnswerKept,
    ChargeRecorded,
    Decision,
    HoldPiece,
    Outcome,
    ReservationChanged,
    ReservationExtended,
    ReservationOpened,
    UsageCounted,
)
from wallets.core.legs import Legs, allocate, entry, funding, pieces_left, return_target, settlement, settlement_legs
from wallets.core.rating import (
    billing_period,
    book_for,
    charge_lines,
    hold_implausibility,
    implausibility,
    override_version,
    overrides_at,
    period_counts,
    prompt_unpostable,
    rate_call,
    tools_unpostable,
    unpostable,
)
from wallets.core.results import REPLAYED, ExtendResult, ReleaseResult, ReservationSummary, ReserveResult, SettleResult
from wallets.core.state import State, wire_time
from wallets.errors import (
    ConflictError,
    ExtensionTooShortError,
    ForbiddenError,
    InsufficientFundsError,
    NotFoundError,
    NothingKeptError,
    ReservationClosedError,
    WalletValidationError,
)
from wallets.model import Reservation, Wallet

HELD_AT = "held_at"  # in a hold's stored estimate: the provider's choices it was priced at (_kept_estimate)


def reserve(state: State, cmd: Reserve, now: datetime, book: PriceBook | None) -> Decision:
    """Hold `amount` (or the upper bound priced from the estimate) from the lots in consumption
    order, then the receivable up to the overdraft headroom; refused (and the refusal kept for
    replays of the request id) when that cannot cover it or the wallet is blocked."""
    w = state.require_wallet()
    error_context = {"customer_id": w.customer.id, "request_id": cmd.request_id}
    kept = idempotency.check(state.answers.get((cmd.scope, cmd.request_id)), cmd.request_hash,
                             f"request_id {cmd.request_id}", request_id=cmd.request_id)
    if kept is not None:
        if kept.code == InsufficientFundsError.code:  # its amounts as first answered (none kept before them)
            amounts = {k: kept.body[k] for k in SHORT_OF_FUNDS if k in kept.body}
            return Decision.refuse(InsufficientFundsError(kept.body["detail"], **error_context, **amounts))
        summary = _as_now(w, ReservationSummary(**kept.body), now)
        return Decision(Outcome(REPLAYED, ReserveResult(summary, replayed=True, held_at=_held_at(w, summary.id))))
    if cmd.kept_only:
        raise NothingKeptError("request_id", f"nothing is kept under request_id {cmd.request_id}")
    amount, held_at = cmd.amount, {}
    rating: Rating | None = None  # priced from the estimate
    if amount is None:  # held_at: the values of the provider's choices (its tier) the hold was priced at
        rating, held_at = _held(w, book, cmd, now, cmd.prompt_tokens or 0, cmd.tool_uses)
        amount = rating.total_units
    else:
        _priced(book_for(w, book), cmd.model, now)
        if cmd.premiums:  # the price it names (cache_ttl "1h"): its book sets it, as for an estimate
            premiums_priced(book_for(w, book), cmd.model, cmd.dimensions, now, cmd.premiums, cmd.prompt_cache_write)
    too_big = unpostable(amount, w.customer.currency, "estimate", "hold")
    if too_big is not None and cmd.prior_context_tokens is not None:  # the prompt it held, not the one sent
        too_big = unpostable(amount, w.customer.currency, "estimate", "hold", held_prompt_tokens(
            book_for(w, book), cmd.model, cmd.prompt_tokens or 0, cmd.dimensions, now, cmd.prior_context_tokens))
    if too_big is not None:  # named by the tools (their fees, their results) where they are its larger part
        tools = None
        if rating is not None and (cmd.tool_uses or cmd.tool_result_tokens):
            without = _held(w, book, cmd, now, (cmd.prompt_tokens or 0) - cmd.tool_result_tokens, {})[0]
            tools = tools_unpostable(rating, cmd.tool_uses, cmd.tool_result_tokens, without.total_units,
                                     w.customer.currency)
        # else named by the prompt where it alone makes it too big, whatever the output cap
        prompt = None if tools or rating is None else prompt_unpostable(rating, amount, w.customer.currency)
        return Decision.refuse(tools or prompt or too_big)
    # a hold past what one request may be charged starts a call whose settle is refused: the call,
    # once made, is answered whether or not its settle is taken. Not kept: the maximum may change
    past = hold_implausibility(w, book_for(w, book).version_at(now), amount)
    if past is not None:
        return Decision.refuse(past)
    priced = cmd.caller_dimensions and book_for(w, book).version_at(now).priced_dimensions.intersection(
        cmd.caller_dimensions)
    if priced:  # not kept: the book may change
        name = min(priced)
        return Decision.refuse(WalletValidationError(  # the gateway's header, where they come from
            f"x-tokentill-dimensions.{name}", f"the price book prices by {name}: the call sets it, not the caller"))
    prompt = cmd.prompt_tokens
    if cmd.prior_context_tokens is not None:  # token budgets count what the money holds (and one made later)
        prompt = held_prompt_tokens(book_for(w, book), cmd.model, cmd.prompt_tokens or 0, cmd.dimensions, now,
                                    cmd.prior_context_tokens)
    rid = state.ids("res")
    counted = budgets.on_reserve(state, w, rid, cmd.model, cmd.dimensions, amount,
                                 (prompt, cmd.max_output_tokens), now, cmd.request_id)
    if isinstance(counted, Decision):  # a budget refusal is not kept: the window may make room
        return counted
    pieces = _pieces(w, amount, now)
    if amount == 0 and not isinstance(pieces, str) and not _draws(w, now) and not _free(w, book, cmd, now):
        pieces = (f"wallet {w.customer.id} has nothing to draw ({_nothing_to_draw(w)}): a hold of 0 "
                  f"starts only a call its prices make free, and {cmd.model} is not free for this customer")
    if isinstance(pieces, str):
        amounts = short_of_funds(w, amount, now)
        return Decision.refuse(InsufficientFundsError(pieces, **error_context, **amounts), AnswerKept(
            cmd.scope, cmd.request_id, cmd.request_hash, InsufficientFundsError.code, {"detail": pieces, **amounts}))
    decision = _hold(w, cmd, rid, amount, pieces, now, (prompt, cmd.max_output_tokens), held_at)
    return Decision(decision.outcome, decision.entry, (*decision.effects, *counted))


def _held(w: Wallet, book: PriceBook | None, cmd: Reserve, now: datetime, prompt_tokens: int,
          tool_uses: Mapping[str, int]) -> tuple[Rating, dict[str, Any]]:
    """The hold priced from a reserve's estimate (pricing.estimate.held_choices), with `prompt_tokens`
    and `tool_uses` (the estimate's, or without its tools and their results)."""
    return held_choices(book_for(w, book), cmd.model, prompt_tokens, cmd.max_output_tokens or 0, cmd.dimensions,
                        now, cmd.chosen_by_provider, input_audio_tokens=cmd.prompt_audio_tokens,
                        prior_context_tokens=cmd.prior_context_tokens, tool_uses=tool_uses,
                        prompt_cache_write=cmd.prompt_cache_write, premiums=cmd.premiums,
                        premium_dimensions=cmd.premium_dimensions, overrides=overrides_at(w, now))


def _as_now(w: Wallet, first: ReservationSummary, now: datetime) -> ReservationSummary:
    """A request id's replay answers its reservation as it is now (its status and expiry; the hold
    as first made): the first answer's "held" told a caller retrying the id that it still held
    credit after a release, a settle or the expiry. The first answer when it is not loaded (kept
    before lanes)."""
    r = w.reservations.get(first.id)
    if r is None:
        return first
    return replace(first, status=status_at(r.status, r.expires_at, now), expires_at=r.expires_at.isoformat())


def _held_at(w: Wallet, reservation_id: str) -> dict[str, Any]:
    """The values of the provider's choices a replayed hold was priced at (kept in its estimate,
    `_hold`): the gateway's call going on with its kept hold is charged at them, as the first
    answer's would be, where the provider's answer does not tell them. None kept: {}."""
    r = w.reservations.get(reservation_id)
    held = (r.estimate or {}).get(HELD_AT) if r is not None else None
    return dict(held) if isinstance(held, Mapping) else {}


def _priced(book: PriceBook, model: str, now: datetime) -> None:
    """A hold given as an amount is for a model the book prices (a rule of the version in force
    names it, by name, pattern or no model; a per-call fee for every model does not): else the
    call would run, its settle be refused `unpriced_model` and its usage go unbilled. Not kept:
    the book may change."""
    version = book.version_at(now)
    if not version.prices_model(model):
        raise UnpricedModelError(f"no rule of price book {book.id} version {version.version} prices model {model}",
                                 model=model)


def _nothing_to_draw(w: Wallet) -> str:
    """Why a wallet `_draws` nothing, in its currency's digits: no credit, and no overdraft or one
    all drawn (a limit the receivable reaches but does not pass, which is not blocked)."""
    currency = w.customer.currency
    limit = w.customer.overdraft_limit or 0
    overdraft = f"its overdraft limit {format_money(limit, currency)} all drawn" if limit else "no overdraft"
    return f"{format_money(0, currency)} available, {overdraft}"


def _draws(w: Wallet, now: datetime) -> bool:
    """Whether the wallet has anything a hold could draw: credit in a live lot, or overdraft."""
    headroom = w.headroom()
    return bool(w.live_lots(now)) or headroom is None or headroom > 0


def _free(w: Wallet, book: PriceBook | None, cmd: Reserve, now: datetime) -> bool:
    """Whether the call's prices make it free (a price of 0, a 100 % discount): one input and one
    output token, any per-request fee, and what else it carries (the per-call tools it may run, a
    cache write, premium prices) price at exactly 0 (not a price whose one token rounds to 0 atomic
    units, as $0.0002 per 1M does), and so does every other type a settle may report (cached or
    image input, reasoning, audio output: charges_other_types, at a rule's dearest tier: a prompt the
    provider counts past a long-context tier the estimate did not reach), at every service tier and
    geography the provider may report (reportable_variants: its usage's report prices the settle,
    whatever the call named or left to it), but for a gateway call naming its service tier, only at
    the tiers it may be served at (`served_tiers`: flex, or priority and default). The per-call
    tools count as the gateway declares them (`tool_uses`: a call without them runs none); any
    call else may report any, and each the book prices counts. Hour rules count at the reserve's
    minute, which rates its settles. Unpriced is not free, but for output where the book prices
    none for the model (an embeddings model): a settle's output would be `unpriced_model`, never
    charged."""
    if book is None:
        return False
    overrides = overrides_at(w, now)
    names = tuple(n for n in dict.fromkeys((*REPORTED_DIMENSIONS, *cmd.chosen_by_provider))
                  if not (cmd.served_tiers and n == "service_tier"))
    try:
        variants = reportable_variants(book, cmd.model, cmd.dimensions, now, names)
    except PricingError:
        return False
    if cmd.served_tiers:
        variants = [{**variant, "service_tier": tier} for tier in cmd.served_tiers for variant in variants]
    return all(_free_at(book, cmd, dimensions, now, overrides) for dimensions in variants)


def _free_at(book: PriceBook, cmd: Reserve, dimensions: dict[str, Any], now: datetime, overrides: Any) -> bool:
    """`_free` for one set of the call's dimensions."""
    for outputs in (1, 0):
        try:
            return estimate_upper_bound(book, cmd.model, 1, outputs, dimensions, now,
                                        input_audio_tokens=min(cmd.prompt_audio_tokens, 1), tool_uses=cmd.tool_uses,
                                        prompt_cache_write=cmd.prompt_cache_write, premiums=cmd.premiums,
                                        premium_dimensions=cmd.premium_dimensions,
                                        overrides=overrides).total == 0 \
                and not charges_other_types(book, cmd.model, dimensions, now, overrides,
                                            tools=(cmd.estimate or {}).get("source") != "gateway")
        except UnpricedModelError as unpriced:
            if unpriced.token_type != "output":
                return False
        except PricingError:
            return False
    return False


# The amounts an insufficient_funds refusal of a hold names (decimal strings, as the wallet's own
# answer spells money), kept with it so that its replays name them as first answered.
SHORT_OF_FUNDS = ("needed", "available", "overdraft_headroom", "currency")


def short_of_funds(w: Wallet, amount: int, now: datetime) -> dict[str, str]:
    """What a refused hold needed and what the wallet had: its `available` credit (the wallet's
    `available`) and, where it has an overdraft limit (more than 0), the `overdraft_headroom` left
    under it, as the refusal's detail says them."""
    cur, headroom = w.customer.currency, w.headroom()
    return {"needed": format_money(amount, cur), "available": format_money(w.available(now), cur),
            **({"overdraft_headroom": format_money(headroom, cur)} if w.customer.overdraft_limit else {}),
            "currency": cur}


def _pieces(w: Wallet, amount: int, now: datetime) -> list[tuple[str, int]] | str:
    """Where a hold comes from, or why it cannot be held."""
    if w.blocked:
        return (f"wallet {w.customer.id} is blocked: its receivable {format_money(w.receivable, w.customer.currency)} "
                f"is past its overdraft limit {format_money(w.customer.overdraft_limit or 0, w.customer.currency)}")
    sources = [(lot.code, lot.balance) for lot in w.live_lots(now)]
    sources.append((chart.receivable_account(w.customer.id), w.headroom()))
    pieces = allocate(sources, amount)
    if pieces is None:
        return (f"a hold of {format_money(amount, w.customer.currency)} {w.customer.currency} exceeds what wallet "
                f"{w.customer.id} can draw: {format_money(w.available(now), w.customer.currency)} available"
                + ("" if not w.customer.overdraft_limit else
                   f" plus {format_money(w.headroom() or 0, w.customer.currency)} of overdraft"))
    return pieces


def _hold(w: Wallet, cmd: Reserve, rid: str, amount: int, pieces: list[tuple[str, int]],
          now: datetime, tokens: tuple[int | None, int | None], held_at: dict[str, Any]) -> Decision:
    cid = w.customer.id
    expires_at = now + timedelta(seconds=cmd.ttl_seconds)
    legs = Legs(w.customer.currency).credit(chart.reserved_account(cid), amount)
    for account, a in pieces:
        legs.debit(account, a)
    posted = entry(f"reserve:{rid}", "reserve", legs, cid, now,
                   {"reservation_id": rid, "request_id": cmd.request_id, "model": cmd.model})
    summary = ReservationSummary(rid, cmd.request_id, cid, cmd.model, w.customer.currency, chart.HELD, amount,
                                 now.isoformat(), expires_at.isoformat())
    opened = ReservationOpened(cid, rid, cmd.request_id, cmd.request_hash, cmd.model, amount, now, expires_at,
                               tuple(HoldPiece(i, account, a) for i, (account, a) in enumerate(pieces)),
                               dict(cmd.dimensions), _kept_estimate(cmd.estimate, held_at),
                               None if tokens == (None, None) else tokens)
    kept = AnswerKept(cmd.scope, cmd.request_id, cmd.request_hash, "reserved", summary.as_dict())
    result = ReserveResult(summary, replayed=False, entry_key=posted.key if posted else None, held_at=held_at)
    return Decision(Outcome(result.code, result), posted, (opened, kept))


def _kept_estimate(estimate: Mapping[str, Any] | None, held_at: dict[str, Any]) -> dict[str, Any] | None:
    """What is stored about a hold's estimate, with the values of the provider's choices it was
    priced at, if any (`held_at`), for its replays (`_held_at`)."""
    if estimate is None:
        return None
    return {**estimate, HELD_AT: dict(held_at)} if held_at else dict(estimate)


def reservation_of(w: Wallet, reservation_id: str) -> Reservation:
    r = w.reservations.get(reservation_id)
    if r is None:
        raise NotFoundError(f"no reservation {reservation_id}", reservation_id=reservation_id)
    return r


def _gateways_own(r: Reservation, from_caller: bool) -> None:
    """A gateway call's reservation is settled (or released) by the gateway with what the upstream
    reported: its caller, which may otherwise close its customer's reservations, closing it first
    would leave the answer uncharged (the gateway's settle then finds it closed)."""
    if from_caller and (r.estimate or {}).get("source") == "gateway":
        raise ForbiddenError(f"reservation {r.id} is a gateway call's: the gateway settles it",
                             reservation_id=r.id)


def _replayed_settle(charge: dict[str, Any], status: str, currency: str) -> Decision:
    result = SettleResult(charge["reservation_id"], status, int(charge["charged"]), int(charge["released"]),
                          list(charge["lines"]), charge["price_book"], charge["price_version"], True, currency,
                          None, charge["entry_id"])
    return Decision(Outcome(result.code, result))


def _kept_settle(r: Reservation, cmd: Settle, currency: str) -> Decision | None:
    """The settle kept for `cmd`'s body, answered again: its capture_id's (another body under it
    is a conflict), or the reservation's final, sent again."""
    if cmd.capture_id and cmd.capture_id in r.capture_ids:
        digest, charge = r.capture_ids[cmd.capture_id]
        if digest != cmd.request_hash:
            raise ConflictError(f"capture {cmd.capture_id} was sent with another body")
        return _replayed_settle(charge, r.status, currency)
    if r.status == chart.SETTLED and cmd.final and r.final_hash == cmd.request_hash and r.final_charge:
        return _replayed_settle(r.final_charge, r.status, currency)
    return None


def _kept_only(r: Reservation, cmd: Settle, currency: str) -> Decision:
    """A settle whose usage the route refused: answered as the settle kept for its body (as that
    body, read, is answered), never rated; with none kept, NothingKeptError (the route's 422)."""
    kept = _kept_settle(r, cmd, currency)
    if kept is None:
        raise NothingKeptError("usage", f"refused, and reservation {r.id} keeps no settle of this body")
    _gateways_own(r, cmd.from_caller)
    return kept


def settle(state: State, cmd: Settle, now: datetime, book: PriceBook | None) -> Decision:
    """Charge reported usage, rated at the reservation's time: from the hold, then the lots, then
    the receivable (never refused for lack of funds). A final settle gives the unused hold back."""
    w = state.require_wallet()
    r = reservation_of(w, cmd.reservation_id)
    currency = w.customer.currency
    if cmd.kept_only:
        return _kept_only(r, cmd, currency)
    _gateways_own(r, cmd.from_caller)
    kept = _kept_settle(r, cmd, currency)
    if kept is not None:
        return kept
    if r.status in (chart.SETTLED, chart.RELEASED):
        # A capture with an id of its own reports usage that happened; one that arrives after the
        # reservation closed (the SDK spooled it and its block's exit released or settled first)
        # is charged like a late settle after expiry, once by its id. A second final is refused.
        late_capture = not cmd.final and cmd.capture_id is not None
        if not late_capture:
            why = "" if cmd.final else ": a capture after the close is charged by its capture_id, and this one has none"
            raise ReservationClosedError(f"reservation {r.id} is already {r.status}{why}", reservation_id=r.id,
                                         reservation_status=r.status)
    tokens, usage = at_cache_ttl(r, cmd.tokens, cmd.usage)
    rating = rate_call(w, book, state.period_usage, r.model, tokens, r.created_at, r.dimensions,
                       with_request_fee=r.captures == 0, reported=usage)
    too_big = unpostable(rating.total_units, currency, "usage")  # no posting carries it: forcing cannot help
    if too_big is not None:
        return Decision.refuse(too_big)  # nothing charged: the hold stays as it is
    problem = implausibility(w, book_for(w, book).version_at(r.created_at), rating, tokens, r.charged)
    if problem is not None and cmd.forced_by is None:
        return Decision.refuse(problem)  # nothing charged: the hold stays as it is
    forced = {} if problem is None else {"forced": {"by": cmd.forced_by, **problem.context}}
    s = settlement(w, r, rating.total_units, cmd.final, now)
    posted = entry(f"settle:{r.id}:{r.captures}", "settle", settlement_legs(w, s), w.customer.id, now,
                   {"reservation_id": r.id, "request_id": r.request_id, "capture": r.captures,
                    "final": cmd.final, "price_book": rating.book_id, "price_version": rating.price_version,
                    **forced})
    lines = charge_lines(rating, override_version(w, r.created_at))
    charge = ChargeRecorded(
        w.customer.id, r.id, None, r.request_id, r.captures, cmd.capture_id, cmd.final, cmd.request_hash, r.model,
        r.created_at, {**usage, **forced}, r.dimensions, rating.book_id, rating.price_version, tuple(lines),
        s.cost, s.from_hold, s.from_lots_total, s.from_receivable, s.released, funding(w, r, s))
    counted = UsageCounted(w.customer.id, billing_period(r.created_at, w.customer), rating.book_id,
                           period_counts(rating))
    status, released, closed_at = r.status, r.released, r.closed_at
    if cmd.final:
        if r.is_open:
            released, closed_at = released + s.released, now
        status = chart.SETTLED
    elif r.is_open:
        status = chart.CAPTURING
    changed = ReservationChanged(w.customer.id, r.id, status, r.captured + (s.from_hold if r.is_open else 0),
                                 released, r.charged + s.cost, r.captures + 1, closed_at)
    result = SettleResult(r.id, status, s.cost, s.released, lines, rating.book_id, rating.price_version, False,
                          currency, posted.key if posted else None)
    spent = budgets.on_settle(state, w, r, s.cost, tokens, cmd.final, now)
    return Decision(Outcome(result.code, result), posted, (charge, counted, changed, *spent))


def at_cache_ttl(r: Reservation, tokens: Mapping[str, int],
                 usage: Mapping[str, Any]) -> tuple[Mapping[str, int], Mapping[str, Any]]:
    """A settle's counts with the cache writes its usage gave in all but not by TTL (`UNSPLIT`:
    normalized as 5-minute writes) taken at the TTL the reservation names, where it names one
    hour (its estimate's `prompt_cache_write`: the gateway's, or an HTTP reserve's `cache_ttl`):
    Anthropic bills them at the one-hour price, twice input where 5 minutes are 1.25 times. The
    stored canonical usage says so too, which a re-rate reads."""
    unsplit = usage.get(UNSPLIT) if isinstance(usage, Mapping) else None
    moved = min(unsplit, tokens.get("cache_write", 0)) if type(unsplit) is int and unsplit > 0 else 0
    if not moved or (r.estimate or {}).get("prompt_cache_write") != "cache_write_1h":
        return tokens, usage
    counts = {**tokens, "cache_write": tokens["cache_write"] - moved,
              "cache_write_1h": tokens.get("cache_write_1h", 0) + moved}
    counts = {t: v for t, v in counts.items() if v}
    canonical = usage.get("canonical")
    if isinstance(canonical, Mapping):
        canonical = {**canonical, "cache_write_tokens": counts.get("cache_write", 0),
                     "cache_write_1h_tokens": counts["cache_write_1h"]}
        usage = {**usage, "canonical": canonical}
    return counts, usage


def give_back(w: Wallet, r: Reservation, status: str, kind: str, now: datetime) -> Decision:
    """Return what is left of the hold to where it came from, and close the reservation."""
    pieces = pieces_left(r.holds, r.captured)
    left = sum(a for _, a in pieces)
    legs = Legs(w.customer.currency).debit(chart.reserved_account(w.customer.id), left)
    for account, amount in pieces:
        legs.credit(return_target(w, account), amount)
    posted = entry(f"{kind}:{r.id}", kind, legs, w.customer.id, now,
                   {"reservation_id": r.id, "request_id": r.request_id})
    changed = ReservationChanged(w.customer.id, r.id, status, r.captured, r.released + left, r.charged,
                                 r.captures, now)
    result = ReleaseResult(r.id, status, left, False, posted.key if posted else None,
                           currency=w.customer.currency)
    return Decision(Outcome(result.code, result), posted, (changed, *budgets.on_release(w, r)))


def release(state: State, cmd: Release, now: datetime, book: PriceBook | None) -> Decision:
    w = state.require_wallet()
    r = reservation_of(w, cmd.reservation_id)
    _gateways_own(r, cmd.from_caller)
    if r.status == chart.RELEASED:
        # the entry of the release answered first: loaded, or posted earlier in this batch (its key)
        result = ReleaseResult(r.id, r.status, r.released, True, f"release:{r.id}", r.release_entry,
                               currency=w.customer.currency)
        return Decision(Outcome(result.code, result))
    if not r.is_open:
        raise ReservationClosedError(f"reservation {r.id} is already {r.status}", reservation_id=r.id,
                                     reservation_status=r.status)
    return give_back(w, r, chart.RELEASED, "release", now)


def status_at(status: str, expires_at: datetime, now: datetime) -> str:
    """A reservation's status as of `now`: held or capturing past its `expires_at` is expired, as
    `extend` refuses it, though its hold stays reserved until the expiry job gives it back (a late
    settle is still charged)."""
    return chart.EXPIRED if status in (chart.HELD, chart.CAPTURING) and expires_at <= now else status


def extend(state: State, cmd: Extend, now: datetime, book: PriceBook | None) -> Decision:
    """Keep an open reservation's hold until `now + ttl_seconds` (at most MAX_TTL_SECONDS, as a
    reserve): only while it is held or capturing and not yet past its expiry, and only to a later
    expiry. Nothing is posted: the hold stays where it is, only its expiry moves."""
    w = state.require_wallet()
    r = reservation_of(w, cmd.reservation_id)
    if not r.is_open:
        raise ReservationClosedError(f"reservation {r.id} is already {r.status}", reservation_id=r.id,
                                     reservation_status=r.status)
    if status_at(r.status, r.expires_at, now) == chart.EXPIRED:  # the job has not released it yet: it will
        raise ReservationClosedError(f"reservation {r.id} expired at {wire_time(r.expires_at)}",
                                     reservation_id=r.id, reservation_status=chart.EXPIRED)
    if not 1 <= cmd.ttl_seconds <= MAX_TTL_SECONDS:
        raise WalletValidationError("ttl_seconds", f"must be from 1 to {MAX_TTL_SECONDS} seconds")
    expires_at = now + timedelta(seconds=cmd.ttl_seconds)
    if expires_at <= r.expires_at:
        raise ExtensionTooShortError(
            f"reservation {r.id} is held until {wire_time(r.expires_at)}: {cmd.ttl_seconds} s from now "
            f"({wire_time(expires_at)}) is not later", reservation_id=r.id,
            expires_at=wire_time(r.expires_at))
    result = ExtendResult(r.id, r.status, expires_at.isoformat())
    return Decision(Outcome(result.code, result), None,
                    (ReservationExtended(w.customer.id, r.id, expires_at),))


def expire_reservation(state: State, cmd: Release, now: datetime, book: PriceBook | None) -> Decision:
    """Job: a reservation past its expiry gives its hold back, once (nothing is due otherwise)."""
    w = state.require_wallet()
    r = w.reservations.get(cmd.reservation_id)
    if r is None or not r.is_open or r.expires_at > now:
        return NOTHING_DUE
    decision = give_back(w, r, chart.EXPIRED, "expire", now)
    event = state.event("reservation.expired", w.customer.id, f"reservation.expired:{r.id}", now, {
        "reservation_id": r.id, "request_id": r.request_id,
        "released": format_money(decision.outcome.body.released, w.customer.currency), "currency": w.customer.currency})
    return Decision(decision.outcome, decision.entry, (*decision.effects, event))

