"""`tokentill bench rating`: pure rating, usages rated per second on one core, no database.

The book is imported from genai-prices' bundled snapshot (openrouter's models, in snapshot
order, until the version has `--rules` rules, 2,000 by default; format 2, as
`tokentill prices import` makes it). The usages are provider usage shapes over those models
(input, cached input, output, reasoning; every tenth past a prompt-size tier where the model
has one), built before the clock starts: the figure is `pricing.rating.rate` alone, as a settle
calls it. Goal: 100,000 usages/s on one core. The figure is given per second of wall time and
per second of this process's CPU time: on a shared machine the second is the one core's rate.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta

from pricing.books import PriceVersion
from pricing.genai import provider_books
from pricing.parse import parse_version
from pricing.rating import rate
from pricing.usage import Usage

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


def measure(version: PriceVersion, shapes: list[Usage], seconds: float) -> tuple[int, float, float]:
    """Rate the shapes round-robin for `seconds`: (usages rated, wall seconds, CPU seconds)."""
    done, start, cpu = 0, time.perf_counter(), time.process_time()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for usage in shapes:
            rate(usage, version)
        done += len(shapes)
    return done, time.perf_counter() - start, time.process_time() - cpu


def main(args: argparse.Namespace) -> int:
    built = time.perf_counter()
    version = imported_version(args.rules)
    shapes = usages(version)
    load = time.perf_counter() - built
    rate(shapes[0], version)  # warm
    done, elapsed, cpu = measure(version, shapes, args.seconds)
    wall_rate, cpu_rate = done / elapsed, done / cpu
    figures = {"rules": len(version.rules), "models": len({r.model for r in version.rules}),
               "usages": done, "seconds": round(elapsed, 2), "cpu_seconds": round(cpu, 2),
               "usages_per_second": round(wall_rate), "usages_per_cpu_second": round(cpu_rate),
               "goal": GOAL, "ratio_to_goal": round(cpu_rate / GOAL, 2),
               "book_build_seconds": round(load, 2), "load_average": os.getloadavg()[0]}
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"rating: {figures['rules']} rules ({figures['models']} models), {done} usages in {elapsed:.1f} s "
              f"({cpu:.1f} s of CPU): {wall_rate:,.0f} usages/s, {cpu_rate:,.0f} per CPU second on one core, "
              f"{cpu_rate / GOAL:.2f}x the goal of {GOAL:,}/s (load average {figures['load_average']:.2f}; "
              f"book built in {load:.1f} s)")
    return 0
