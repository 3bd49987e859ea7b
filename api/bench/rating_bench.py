"""`tokentill bench rating`: rating, usages rated per second on one core, no database.

The book is imported from genai-prices' bundled snapshot (openrouter's models, in snapshot
order, until the version has `--rules` rules, 2,000 by default; format 2, as
`tokentill prices import` makes it). The usages are provider usage shapes over those models
(input, cached input, output, reasoning; every tenth past a prompt-size tier where the model
has one), built before the clock starts.

The headline figure is rating as the wallet engine does it for a settle or a usage event
(`wallets.core.rating.rate_call`): the book's version at the usage's time, the usage built and
validated from the settle's token counts, the per-request fee, the customer's period to date
(the counters of the rules this customer used this period), then
`pricing.rating.rate`. The second figure is `pricing.rating.rate` alone over prebuilt usages.
Goal: 100,000 usages/s on one core. Figures are per second of wall time and per second of this
process's CPU time: on a shared machine the second is the one core's rate.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pricing.books import PriceBook, PriceVersion
from pricing.genai import provider_books
from pricing.parse import parse_version
from pricing.rating import rate
from pricing.usage import Usage
from wallets.core.rating import billing_period, rate_call
from wallets.model import Customer, Wallet

GOAL = 100_000  # usages/s on one core
PROVIDER = "openrouter"
SHAPES = 4096


def imported_version(rules: int) -> PriceVersion:
    """The first `rules` rules (whole models) of the provider's book in force now."""
    (plan,) = provider_books(PROVIDER, taken_on=datetime.now(UTC).date().isoformat())
    current = plan.versions[-1][1]
    by_model: dict[str, list[dict]] = {}
    for rule in current:
        by_model.setdefault(rule["model"], []).append(rule)
    chosen: list[dict] = []
    for model_rules in by_model.values():
        if len(chosen) >= rules:
            break
        chosen.extend(model_rules)
    return parse_version({"id": "bench", "currency": "USD", "effective_from": plan.versions[-1][0].isoformat(),
                          "rules": chosen, "format": 2, "unpriced": "zero"})


def usages(version: PriceVersion, count: int = SHAPES, seed: int = 1) -> list[Usage]:
    rng = random.Random(seed)
    models = sorted({r.model for r in version.rules if r.model})
    tiered = {r.model for r in version.rules if r.prompt_tiers}
    at = datetime.now(UTC)
    out = []
    for i in range(count):
        model = rng.choice(models)
        prompt = rng.randint(10, 20_000) + (300_000 if model in tiered and i % 10 == 0 else 0)
        cached = rng.randint(0, prompt // 2)
        output = rng.randint(1, 4_000)
        reasoning = rng.randint(0, output) if i % 3 == 0 else 0
        tokens = {"input": prompt - cached, "cached_input": cached, "output": output - reasoning,
                  "reasoning": reasoning}
        out.append(Usage(model, {k: v for k, v in tokens.items() if v}, at - timedelta(seconds=i)))
    return out


def engine_calls(version: PriceVersion, shapes: list[Usage]) -> Callable[[], int]:
    """One pass of the shapes through the wallet engine's rating, as a settle calls it: token
    counts as the settle command carries them (zeros included), the customer's counters of the
    period holding the rules of the 16 models it used first."""
    book = PriceBook(version.book_id, version.currency, (version,))
    customer = Customer("bench", "bench", version.currency, "prepaid", book.id, None, None, False, False,
                        version.effective_from)
    wallet = Wallet(customer, {}, 0, 0)
    counters: dict[str, int] = {}
    for usage in [u for u in shapes if u.model in {s.model for s in shapes[:16]}]:
        for rule_id, quantity in rate(usage, version).rule_quantities().items():
            counters[rule_id] = counters.get(rule_id, 0) + quantity
    period_usage = {(customer.id, billing_period(u.occurred_at, customer), book.id): counters for u in shapes}
    period_usage[("another", "2026-01", book.id)] = {}
    calls = [(u.model, {"input": 0, "cached_input": 0, "cache_write": 0, "output": 0, "reasoning": 0,
                        **dict(u.tokens)}, u.occurred_at) for u in shapes]

    def one_pass() -> int:
        for model, tokens, at in calls:
            rate_call(wallet, book, period_usage, model, tokens, at, {}, with_request_fee=True, reported={})
        return len(calls)
    return one_pass


def pure_calls(version: PriceVersion, shapes: list[Usage]) -> Callable[[], int]:
    def one_pass() -> int:
        for usage in shapes:
            rate(usage, version)
        return len(shapes)
    return one_pass


def measure(one_pass: Callable[[], int], seconds: float) -> tuple[int, float, float]:
    """Run passes for `seconds`: (usages rated, wall seconds, CPU seconds)."""
    one_pass()  # warm: rules resolved once per version, as a long-running server has them
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        done += one_pass()
    return done, time.perf_counter() - start, time.process_time() - cpu


def _figures(done: int, elapsed: float, cpu: float) -> dict[str, float]:
    return {"usages": done, "seconds": round(elapsed, 2), "cpu_seconds": round(cpu, 2),
            "usages_per_second": round(done / elapsed), "usages_per_cpu_second": round(done / cpu),
            "ratio_to_goal": round(done / cpu / GOAL, 2)}


def main(args: argparse.Namespace) -> int:
    built = time.perf_counter()
    version = imported_version(args.rules)
    shapes = usages(version)
    load = time.perf_counter() - built
    engine = _figures(*measure(engine_calls(version, shapes), args.seconds))
    pure = _figures(*measure(pure_calls(version, shapes), args.seconds))
    figures = {"rules": len(version.rules), "models": len({r.model for r in version.rules}), **engine,
               "goal": GOAL, "rate_alone": pure, "book_build_seconds": round(load, 2),
               "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(figures))
        return 0
    for name, f in (("wallet engine (rate_call)", engine), ("pricing.rating.rate alone", pure)):
        print(f"rating, {name}: {figures['rules']} rules ({figures['models']} models), {f['usages']} usages in "
              f"{f['seconds']:.1f} s ({f['cpu_seconds']:.1f} s of CPU): {f['usages_per_second']:,} usages/s, "
              f"{f['usages_per_cpu_second']:,} per CPU second on one core, {f['ratio_to_goal']:.2f}x the goal "
              f"of {GOAL:,}/s")
    print(f"load average {figures['load_average']:.2f}; book built in {load:.1f} s")
    return 0
