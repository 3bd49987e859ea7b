"""Customer overrides: contract prices, percentage discounts and free allowances.

- A contract price replaces the book's unit price (flat; tiers of the book rule no longer
  apply) for a model and/or token type; the line carries the override id. Precedence: model
  specificity first (exact > pattern > any), then token type (the usage's own type > the type
  the book priced it as through a fallback > any type). A contract without a token type never
  applies to a type that counts no tokens (``pricing.units.NOT_TOKENS``: ``request``, a tool call,
  a page, a message, seconds of audio, characters): a per-token price is not theirs. Ties are refused.
- A discount takes a percentage off every usage line it covers (by the line's model, and its
  own token type or the type the book priced it as through a fallback, as a contract price),
  as its own negative line.
- A free allowance is money per billing period; it pays for what is left after discounts, up
  to what remains of it given the period-to-date use the caller passes in, as its own line.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from pricing.books import TOKEN_TYPES, is_pattern, model_rank, patterns_may_overlap
from pricing.errors import PriceBookValidationError, field_error
from pricing.money import to_decimal
from pricing.units import NOT_TOKENS

_MAX_DECIMALS = 18


def _decimal(value: object, name: str, errors: list[dict[str, str]]) -> Decimal:
    try:
        result = to_decimal(value, name)
    except (TypeError, ValueError) as exc:
        errors.append(field_error(name, str(exc).split(": ", 1)[-1]))
        return Decimal(0)
    if -result.as_tuple().exponent > _MAX_DECIMALS:  # type: ignore[operator]
        errors.append(field_error(name, f"at most {_MAX_DECIMALS} decimals"))
    return result


def _check_scope(model: object, token_type: object, errors: list[dict[str, str]]) -> None:
    if model is not None and (not isinstance(model, str) or not model):
        errors.append(field_error("model", "must be a non-empty string or absent"))
    if token_type is not None and token_type not in TOKEN_TYPES:
        errors.append(field_error("token_type", f"must be one of {', '.join(TOKEN_TYPES)}"))


def _check_id(value: object, errors: list[dict[str, str]]) -> None:
    if not isinstance(value, str) or not value:
        errors.append(field_error("id", "must be a non-empty string"))


@dataclass(frozen=True, slots=True)
class ContractPrice:
    """A customer's own unit price (per 1M tokens, or per call for a type priced per call)."""

    id: str
    price: Decimal
    model: str | None = None
    token_type: str | None = None

    def __post_init__(self) -> None:
        errors: list[dict[str, str]] = []
        _check_id(self.id, errors)
        _check_scope(self.model, self.token_type, errors)
        if self.model is None and self.token_type is None:
            errors.append(field_error("model", "a contract price needs a model, a token type or both"))
        object.__setattr__(self, "price", _decimal(self.price, "price", errors))
        if errors:
            raise PriceBookValidationError(errors)

    def rank(self, model: str, token_type: str, priced_as: str) -> tuple[int, int] | None:
        """Precedence key when this contract applies to the usage line, else None."""
        m = model_rank(self.model, model)
        if m is None:
            return None
        if self.token_type is None:
            return None if token_type in NOT_TOKENS else (m, 0)
        if self.token_type == token_type:
            return (m, 2)
        return (m, 1) if self.token_type == priced_as else None


@dataclass(frozen=True, slots=True)
class Discount:
    """A percentage (0 < percent <= 100) off the usage lines of a model and/or token type."""

    id: str
    percent: Decimal
    model: str | None = None
    token_type: str | None = None

    def __post_init__(self) -> None:
        errors: list[dict[str, str]] = []
        _check_id(self.id, errors)
        _check_scope(self.model, self.token_type, errors)
        percent = _decimal(self.percent, "percent", errors)
        if not errors and not 0 < percent <= 100:
            errors.append(field_error("percent", "must be greater than 0 and at most 100"))
        object.__setattr__(self, "percent", percent)
        if errors:
            raise PriceBookValidationError(errors)

    def covers(self, model: str, token_type: str, priced_as: str | None = None) -> bool:
        """Whether this discount applies to a usage line of this model and token type, or that
        the book priced as `priced_as` (its rule's type) through a fallback, as a contract
        price of that type would price it: a discount on output takes its share off the
        reasoning billed at the output rule."""
        if model_rank(self.model, model) is None:
            return False
        return self.token_type is None or self.token_type in (token_type, priced_as)


@dataclass(frozen=True, slots=True)
class FreeAllowance:
    """Money the customer may consume free in each billing period."""

    id: str
    amount: Decimal

    def __post_init__(self) -> None:
        errors: list[dict[str, str]] = []
        _check_id(self.id, errors)
        amount = _decimal(self.amount, "amount", errors)
        if not errors and amount <= 0:
            errors.append(field_error("amount", "must be positive"))
        object.__setattr__(self, "amount", amount)
        if errors:
            raise PriceBookValidationError(errors)


@dataclass(frozen=True, slots=True)
class Overrides:
    """All of one customer's overrides; validated as a whole when built."""

    contract_prices: tuple[ContractPrice, ...] = ()
    discounts: tuple[Discount, ...] = ()
    allowances: tuple[FreeAllowance, ...] = ()

    def __post_init__(self) -> None:
        for name in ("contract_prices", "discounts", "allowances"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        errors = _override_errors(self)
        if errors:
            raise PriceBookValidationError(errors)

    def contract_for(self, model: str, token_type: str, priced_as: str) -> ContractPrice | None:
        """The contract price that applies to a usage line, by the documented precedence."""
        ranked = [(c.rank(model, token_type, priced_as), c) for c in self.contract_prices]
        ranked = [(r, c) for r, c in ranked if r is not None]
        if not ranked:
            return None
        best = max(r for r, _ in ranked)
        winners = [c for r, c in ranked if r == best]
        if len(winners) > 1:
            raise PriceBookValidationError("contract_prices", f"ambiguous: {[c.id for c in winners]}")
        return winners[0]


def _contracts_may_tie(a: ContractPrice, b: ContractPrice) -> bool:
    if a.token_type != b.token_type:
        return False
    if a.model is None or b.model is None:
        return a.model is None and b.model is None
    if is_pattern(a.model) != is_pattern(b.model):
        return False
    return patterns_may_overlap(a.model, b.model) if is_pattern(a.model) else a.model == b.model


def _override_errors(o: Overrides) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    ids = [x.id for group in (o.contract_prices, o.discounts, o.allowances) for x in group]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        errors.append(field_error("id", f"duplicate override id {dup!r}"))
    cps = o.contract_prices
    for i, a in enumerate(cps):
        for j in range(i + 1, len(cps)):
            if _contracts_may_tie(a, cps[j]):
                errors.append(field_error(f"contract_prices[{j}]", f"ambiguous with {a.id!r}"))
    if sum((d.percent for d in o.discounts), Decimal(0)) > 100:
        errors.append(field_error("discounts", "discount percentages add up to more than 100"))
    return errors
