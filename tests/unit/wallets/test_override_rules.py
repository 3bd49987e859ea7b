"""Price overrides in the wallet rules, without a database: the period counters of a free
allowance, and the close's volume true-up, which must leave contract-priced usage alone."""
from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from pricing.books import PriceBook
from pricing.overrides import ContractPrice, Discount, FreeAllowance, Overrides
from pricing.parse import parse_version
from pricing.rating import rate
from pricing.usage import Usage
from wallets.core.billing import line_item
from wallets.core.invoicing import true_up_lines, volume_discounts, volume_rules
from wallets.core.rating import charge_lines, period_counts, period_to_date

VOLUME = parse_version({"id": "vol", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
     "tiers": [{"up_to": 1_000_000, "price": "20"}, {"up_to": None, "price": "10"}]}]})
AT = datetime(2026, 11, 5, tzinfo=UTC)


def test_contract_priced_usage_of_a_volume_rule_gets_no_true_up_at_close() -> None:
    book = PriceBook("vol", "USD", (VOLUME,))
    contract = Overrides(contract_prices=(ContractPrice("c", Decimal("3"), model="model-v"),))
    rollup = {}
    for overrides in (None, contract):  # 1.5M output tokens at the book's price, 1.5M at the contract's
        rating = rate(Usage("model-v", {"output": 1_500_000}, AT), VOLUME, overrides)
        for line in charge_lines(rating, 1 if overrides else None):
            item = line_item("2026-11", line)
            q, a = rollup.get(item, (0, 0))
            rollup[item] = (q + line["quantity"], a + line["amount_units"])
    [(rule, _, quantity, amount)] = volume_rules(book, rollup, "2026-11")
    # only the book-priced 1.5M count: 1M at $20/M + 0.5M at $10/M = $25 charged during the period
    assert rule.id == "v-out" and quantity == 1_500_000 and amount == 25 * 10**9



def test_a_discount_ending_mid_period_takes_its_share_off_the_volume_true_up_of_the_usage_it_covered() -> None:
    """600,000 tokens at 50 % off (1M at $20/M: 12.00, less 6.00), then the discount ends and 700,000
    more come at the book's price (400,000 x $20/M + 300,000 x $10/M = 11.00): 17.00 charged. At
    close all 1.3M are at $10/M: 13.00 at the book's price (a true-up of -10.00), and the first
    600,000 half off: 3.00 of discount, where 6.00 was taken (+3.00). 10.00 in all, by hand:
    600,000 x $10/M x 50 % + 700,000 x $10/M."""
    book = PriceBook("vol", "USD", (VOLUME,))
    half = Overrides(discounts=(Discount("half", Decimal("50"), model="model-v"),))
    rollup: dict[str, tuple[int, int]] = {}
    for overrides, tokens, so_far in ((half, 600_000, {}), (None, 700_000, {"v-out": 600_000})):
        rating = rate(Usage("model-v", {"output": tokens}, AT), VOLUME, overrides, so_far)
        for line in charge_lines(rating, 1 if overrides else None):
            item = line_item("2026-11", line)
            q, a = rollup.get(item, (0, 0))
            rollup[item] = (q + line["quantity"], a + line["amount_units"])
    lines = true_up_lines(volume_rules(book, rollup, "2026-11"), volume_discounts(book, rollup, "2026-11"))
    assert [(x["quantity"], x["unit_price"], x["amount_units"], x["override_id"]) for x in lines] == [
        (1_300_000, "10", -10 * 10**9, None), (600_000, "-5", 3 * 10**9, "half")]  # -5: as the charge writes -10
    charged = sum(a for item, (_, a) in rollup.items())
    assert charged + sum(x["amount_units"] for x in lines) == 10 * 10**9

def test_a_free_allowance_is_counted_in_atomic_units_and_read_back_as_money() -> None:
    version = parse_version({"id": "b", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "in", "model": "m", "token_type": "input", "price": "10"}]})
    free = Overrides(allowances=(FreeAllowance("f", Decimal("1.5")),))
    first = rate(Usage("m", {"input": 100_000}, AT), version, free)  # $1.00, all of it free
    counts = period_counts(first)
    assert counts == {"in": 100_000, "allowance:f": 10**9}
    second = rate(Usage("m", {"input": 100_000}, AT), version, free, period_to_date(counts))
    assert second.total_units == 5 * 10**8  # $0.50 of the allowance left: $0.50 charged


def _discounted_true_up(prices: tuple[str, str], percent: str) -> tuple[list[str], list[str]]:
    """1.5M output tokens of a volume rule (1M at prices[0] per 1M, beyond at prices[1]) at
    `percent` off: the unit prices of the charge's discount lines and of the true-up's lines."""
    version = parse_version({"id": "vol", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
        {"id": "v-out", "model": "model-v", "token_type": "output", "tier_mode": "volume",
         "tiers": [{"up_to": 1_000_000, "price": prices[0]}, {"up_to": None, "price": prices[1]}]}]})
    book = PriceBook("vol", "USD", (version,))
    off = Overrides(discounts=(Discount("off", Decimal(percent), model="model-v"),))
    rollup: dict[str, tuple[int, int]] = {}
    charged = charge_lines(rate(Usage("model-v", {"output": 1_500_000}, AT), version, off), 1)
    for line in charged:
        item = line_item("2026-11", line)
        q, a = rollup.get(item, (0, 0))
        rollup[item] = (q + line["quantity"], a + line["amount_units"])
    lines = true_up_lines(volume_rules(book, rollup, "2026-11"), volume_discounts(book, rollup, "2026-11"))
    return ([x["unit_price"] for x in charged if x["kind"] == "discount"],
            [x["unit_price"] for x in lines])


def test_a_discount_s_true_up_line_shows_its_unit_price_as_the_charge_s_discount_lines_do() -> None:
    # 10 % off: the charge's discount lines at each tier's price, -150 and -100 (of 1500 and 1000),
    # -0.20 and -0.10 (of 2.00 and 1.00); the true-up's at the tier reached, -100 and -0.10, written
    # as those are, not -100.0 and -0.100 (the price times the share 0.1)
    assert _discounted_true_up(("1500", "1000"), "10") == (["-150", "-100"], ["1000", "-100"])
    assert _discounted_true_up(("2.00", "1.00"), "10") == (["-0.20", "-0.10"], ["1.00", "-0.10"])
    # a percent with decimals of its own: 12.5 % of 1.00 is -0.125, as the charge's line writes it
    # (2.00 x 12.5 / 100 = -0.250), not -0.12500
    assert _discounted_true_up(("2.00", "1.00"), "12.5") == (["-0.250", "-0.125"], ["1.00", "-0.125"])
