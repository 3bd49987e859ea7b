"""`tokentill bench --help` says what `--workers` and `--requests` are in each bench that reads
them, in which benches they do nothing, and their defaults: `--workers` read "concurrent posting
tasks", the ledger bench's meaning alone, where six benches read it (HTTP clients, lifecycles at
once, seeding tasks), and `--requests` "console: requests per page", where the invoices bench
reads it too."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import api.bench
from api.cli import parser

# each bench's module (api/bench/<module>.py) and its name on the command line
TARGETS = {"ledger_bench": "ledger", "lifecycle_bench": "lifecycle", "faults": "faults", "ingest_bench": "ingest",
           "gateway_bench": "gateway", "budget_bench": "budgets", "rating_bench": "rating",
           "console_bench": "console", "export_bench": "export", "invoice_bench": "invoices"}


def _bench() -> argparse.ArgumentParser:
    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return subcommands.choices["bench"]


def _help(option: str) -> tuple[str, object]:
    """The option's help as `--help` prints it, on one line, and its default."""
    bench = _bench()
    action = next(a for a in bench._actions if option in a.option_strings)
    return " ".join(bench._get_formatter()._expand_help(action).split()), action.default


def _reading(name: str) -> set[str]:
    """The benches whose module reads `args.<name>`."""
    folder = Path(api.bench.__file__).parent
    return {target for module, target in TARGETS.items()
            if f"args.{name}" in (folder / f"{module}.py").read_text()}


def _named(text: str) -> tuple[set[str], set[str]]:
    """The benches a help names as `bench: what it is`, and those it says do not use the option."""
    uses, _, unused = text.partition("not used by ")
    return set(re.findall(r"\b([a-z]+): ", uses)), set(re.findall(r"\b([a-z]+)\b", unused)) & set(TARGETS.values())


def test_workers_says_what_it_is_in_each_bench_that_reads_it_and_its_default():
    text, default = _help("--workers")
    uses, unused = _named(text)
    # read by ledger, lifecycle, faults, ingest, gateway and console (grep args.workers api/bench)
    assert uses == _reading("workers") == {"ledger", "lifecycle", "faults", "ingest", "gateway", "console"}, text
    assert unused == {"budgets", "rating", "export", "invoices"}, text
    assert default == 64 and "(default 64)" in text, text
    assert "at most 8" in text  # ingest_bench: max(1, min(args.workers, 8))


def test_requests_says_what_it_is_in_each_bench_that_reads_it_and_its_default():
    text, default = _help("--requests")
    uses, unused = _named(text)
    assert uses == _reading("requests") == {"console", "invoices"}, text
    assert unused == set(TARGETS.values()) - {"console", "invoices"}, text
    assert default == 200 and "(default 200)" in text, text
    assert "5 untimed" in text  # both time n >= 5 only: the first 5 warm the caches and the pool


def test_every_option_of_bench_has_a_help():
    """--pgbench-clients had none: --help printed its name alone."""
    missing = [a.option_strings for a in _bench()._actions if a.option_strings and not a.help]
    assert missing == []
