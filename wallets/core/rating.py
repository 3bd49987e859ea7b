"""Rating one call for a wallet: its usage at its own time, graduated tiers continuing from the
customer's period to date, and the plausibility bounds a charge must stay within."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from ledger.model import MAX_POSTING
from pricing.books import PriceBook, PriceVersion
from pricing.errors import UnpricedModelError
from pricing.fast_rating import charges_requests
from pricing.money import DEFAULT_SCALE, format_money, pricing_context, round_entry
from pricing.overrides import Overrides
from pricing.rating import Rating, rate
from pricing.units import PROMPT_TYPES, line_label
from pricing.usage import PeriodToDate, Usage
from wallets.errors import ImplausibleUsageError, WalletValidationError
from wallets.model import Customer, Wallet
from wallets.periods import period_of

CONTEXT_TOKEN_TYPES = (*sorted(PROMPT_TYPES), "output", "reasoning", "output_audio", "output_image",
                       "output_video", "citation")  # disjoint counts
_CONTEXT = frozenset(CONTEXT_TOKEN_TYPES)

# (customer, billing period, book) -> rule -> units rated earlier in the period
ALLOWANCE = "allowance:"  # + a free allowance's id: the atomic units taken from it, in the same counters
PeriodUsage = Mapping[tuple[str, str, str], Mapping[str, int]]


def billing_period(at: datetime, customer: Customer) -> str:
    """The billing period of a usage time, by the customer's cycle (calendar months in UTC by
    default): graduated tiers continue from that period's counters, even once it is closed."""
    return period_of(at, customer.cycle).label


def book_for(wallet: Wallet, book: PriceBook | None) -> PriceBook:
    if book is None:
        raise UnpricedModelError(f"customer {wallet.customer.id} has no price book "
                                 f"({wallet.customer.price_book or 'none set'}) to price with")
    return book


def rate_call(wallet: Wallet, book: PriceBook | None, period_usage: PeriodUsage, model: str,
              tokens: Mapping[str, int], at: datetime, dimensions: Mapping[str, Any], *,
              with_request_fee: bool, reported: Mapping[str, Any] | None = None) -> Rating:
    """Rate one call's usage at its own time; a book's per-request fee is charged once per call.
    What the provider reported about the price (its service tier, in the stored usage's
    ``dimensions``) overrides the caller's dimensions."""
    book = book_for(wallet, book)
    if reported and reported.get("dimensions"):
        dimensions = {**dimensions, **reported["dimensions"]}
    version = book.version_at(at)
    usage = Usage(model, {k: v for k, v in tokens.items() if v}, at, dimensions)
    if with_request_fee and charges_requests(version, model, usage.dimensions, usage.occurred_at):
        usage = usage.with_request()
    key = (wallet.customer.id, billing_period(at, wallet.customer), book.id)
    so_far = period_usage.get(key, {})
    in_force = wallet.overrides.at(at) if wallet.overrides is not None else None
    if in_force is None:  # most customers: the fast path (pricing.fast_rating) stays theirs
        return rate(usage, version, period_to_date=so_far)
    if in_force.overrides.allowances:
        so_far = allowances_of_every_book(period_usage, key, so_far)
    return rate(usage, version, in_force.overrides, period_to_date(so_far))


def allowances_of_every_book(period_usage: PeriodUsage, key: tuple[str, str, str], so_far: Mapping[str, int]
                             ) -> dict[str, int]:
    """`so_far` (the counters of `key`'s customer, period and book) with what the period's usage of
    the customer's other books took of each free allowance: an allowance is money per billing
    period, whatever book rated the usage (the counters are kept per book)."""
    cid, period, book_id = key
    out = dict(so_far)
    for (c, p, b), counts in period_usage.items():
        if c == cid and p == period and b != book_id:
            for rule_id, units in counts.items():
                if rule_id.startswith(ALLOWANCE):
                    out[rule_id] = out.get(rule_id, 0) + units
    return out


def period_to_date(so_far: Mapping[str, int]) -> PeriodToDate:
    """The period's counters as rating takes them: units per rule, and money taken from each free
    allowance (counted in atomic units under ALLOWANCE + its id, beside the rules)."""
    rules = [(k, v) for k, v in so_far.items() if not k.startswith(ALLOWANCE)]
    used = [(k[len(ALLOWANCE):], Decimal(v).scaleb(-DEFAULT_SCALE)) for k, v in so_far.items()
            if k.startswith(ALLOWANCE)]
    return PeriodToDate(tuple(rules), tuple(used))


def period_counts(rating: Rating) -> dict[str, int]:
    """What a charge adds to its period's counters: units per rule, and atomic units taken from
    each free allowance (ALLOWANCE + its id)."""
    out = rating.rule_quantities()
    for line in rating.lines:
        if line.kind == "free_allowance" and line.override_id is not None:
            key = ALLOWANCE + line.override_id
            out[key] = out.get(key, 0) - line.amount_units
    return out


def overrides_at(wallet: Wallet, at: datetime) -> Overrides | None:
    """The customer's overrides in force at `at` (None: none)."""
    in_force = wallet.overrides.at(at) if wallet.overrides is not None else None
    return in_force.overrides if in_force is not None else None


def override_version(wallet: Wallet, at: datetime) -> int | None:
    """The version of the customer's overrides in force at `at` (None: none)."""
    in_force = wallet.overrides.at(at) if wallet.overrides is not None else None
    return in_force.version if in_force is not None else None


def unpostable(amount: int, currency: str, field: str, what: str = "charge",
               held_prompt: int | None = None) -> WalletValidationError | None:
    """A charge or hold past what one posting holds (a bigint of atomic units): a 422 naming the
    field it came from, before any leg is built; forcing cannot help, no ledger entry can carry it.
    `held_prompt`: the prompt tokens a hold counted for a call continuing a conversation (its
    earlier turns at the model's context window), told beside it (was: only the tokens sent)."""
    if amount <= MAX_POSTING:
        return None
    most = format_money(MAX_POSTING, currency)
    held = f", its prompt held at {held_prompt} tokens (its earlier turns at the model's context window)" \
        if held_prompt is not None else ""
    return WalletValidationError(field, f"a {what} of {format_money(amount, currency)} {currency}{held} is more "
                                        f"than one journal entry can carry ({most} {currency})")


def tools_unpostable(rating: Rating, tool_uses: Mapping[str, int], result_tokens: int, without: int,
                     currency: str) -> WalletValidationError | None:
    """A hold past what one posting holds (`unpostable`) named by its per-call tools
    (`estimate.tool_uses`) where they are its larger part: their fees (each tool's uses and fee per
    use, after the customer's discounts) and the input tokens held for their results
    (`result_tokens`, of the prompt), which is the hold less `without` (the same hold without the
    tools nor their results); else None (the prompt and output cap are, `unpostable`'s field). So
    the caller is not told its output cap made the hold too big when its tools did (was: only when
    the fees alone passed what a posting holds; ~920,000,000 web searches whose fees fit and whose
    results did not were blamed on max_tokens). The gateway names its tools' field: api.gateway.proxy."""
    tools = rating.total_units - without
    if tools < without:
        return None
    lines = [line for line in rating.lines if line.token_type in tool_uses and line.quantity]
    fees = round_entry([line.amount for line in lines], rating.scale)[0]
    with pricing_context():
        each = [(line, round_entry([line.amount / line.quantity], rating.scale)[0])
                for line in lines if line.kind == "usage"]

    def shown(units: int) -> str:
        return f"{format_money(units, currency, rating.scale)} {currency}"

    told = ", ".join(f"{line.quantity} {line.token_type} at {shown(fee)} each" for line, fee in each)
    told = f"{told}: " if told else ""  # tools of no fee (a web fetch): their results alone
    parts = f"tool fees of {shown(fees)}" + (
        f" and {result_tokens} input tokens of their results ({shown(tools - fees)})" if result_tokens else "")
    most = f"more than one journal entry can carry ({format_money(MAX_POSTING, currency)} {currency})"
    if tools > MAX_POSTING:
        message = f"{told}{parts}, {most}, whatever the prompt and output (a hold of {shown(rating.total_units)})"
    else:
        message = (f"{told}{parts}, {shown(tools)} of a hold of {shown(rating.total_units)}, {most}; "
                   f"{shown(without)} without them")
    return WalletValidationError("estimate.tool_uses", message)


def prompt_unpostable(rating: Rating, total: int, currency: str) -> WalletValidationError | None:
    """A hold past what one posting holds (`unpostable`) whose prompt alone passes it, whatever
    the output cap: named by it (`estimate.input_tokens`), its tokens held (with the earlier turns
    a continued conversation holds at its context window) and their price (the rating's prompt
    lines, after the customer's discounts); else None. So the caller is not told its output cap
    made the hold too big when its prompt did (was: a responses call continuing a conversation,
    held at a 10,000,000-token window at 1,000 USD a token, was refused naming max_output_tokens
    10 and 8 prompt tokens). The gateway names its prompt's field: api.gateway.proxy."""
    lines = [line for line in rating.lines if line.token_type in PROMPT_TYPES and line.quantity]
    units = round_entry([line.amount for line in lines], rating.scale)[0]
    if units <= MAX_POSTING:
        return None
    tokens = sum(line.quantity for line in lines if line.kind == "usage")
    return WalletValidationError("estimate.input_tokens", f"a prompt held at {tokens} tokens, "
                                 f"{format_money(units, currency, rating.scale)} {currency}, more than one journal "
                                 f"entry can carry ({format_money(MAX_POSTING, currency)} {currency}), whatever the "
                                 f"output cap (a hold of {format_money(total, currency, rating.scale)} {currency})")


def implausibility(wallet: Wallet, version: PriceVersion, rating: Rating, tokens: Mapping[str, int],
                   charged_before: int = 0) -> ImplausibleUsageError | None:
    """The plausibility bound a call breaks, if any: its charge (with what the request was charged
    before) past the customer's max_charge_per_request, or else its book version's; its input +
    output tokens past the context window of the rules that priced it, or else the version's."""
    problem = _past_max_charge(wallet, version, charged_before + rating.total_units, "a charge", rating.scale)
    if problem is not None:
        return problem
    window = version.context_window_for(line.rule_id for line in rating.lines)
    used = sum(count for token_type, count in tokens.items() if token_type in _CONTEXT)
    if window is not None and used > window:
        return ImplausibleUsageError(
            f"{used} input and output tokens exceed the context window of {window} tokens",
            limit="context_window", maximum=window, value=used, source="price_book")
    return None


def hold_implausibility(wallet: Wallet, version: PriceVersion, amount: int) -> ImplausibleUsageError | None:
    """A hold past what one request may be charged (the customer's max_charge_per_request, else
    its book version's): the call it holds for could be answered and never charged, since a
    settle past the maximum is refused."""
    return _past_max_charge(wallet, version, amount, "a hold")


def _past_max_charge(wallet: Wallet, version: PriceVersion, amount: int, what: str,
                     scale: int = DEFAULT_SCALE) -> ImplausibleUsageError | None:
    limit, source = wallet.customer.max_charge_per_request, "customer"
    if limit is None and version.max_charge_per_request is not None:
        limit, source = int(version.max_charge_per_request.scaleb(scale)), "price_book"
    if limit is None or amount <= limit:
        return None
    currency = wallet.customer.currency
    amount_text, limit_text = format_money(amount, currency), format_money(limit, currency)
    return ImplausibleUsageError(
        f"{what} of {amount_text} {currency} for one request exceeds the {source.replace('_', ' ')}'s "
        f"max_charge_per_request of {limit_text} {currency}",
        limit="max_charge_per_request", maximum=limit_text, value=amount_text, source=source)


def charge_lines(rating: Rating, overrides_version: int | None = None) -> list[dict[str, Any]]:
    """The lines a charge stores; a line an override priced (a contract price, a discount, a free
    allowance) also names the version of the customer's overrides it came from."""
    return [{"kind": ln.kind, "token_type": ln.token_type, "quantity": ln.quantity,
             "unit_price": str(ln.unit_price), "amount_units": ln.amount_units, "exact": str(ln.amount),
             "rule_id": ln.rule_id, "price_version": ln.price_version, "model": ln.model,
             "tier": ln.tier, "override_id": ln.override_id, "description": line_label(ln.token_type, ln.note),
             **({"overrides_version": overrides_version} if ln.override_id is not None else {})}
            for ln in rating.lines]
