"""The README's Configuration table and its list of commands are what the code reads and serves:
every environment variable a module or a test reads is a row of the table, every row one the code
reads, and every command of the CLI is named in the README."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from api.cli import parser
from api.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VARIABLE = re.compile(r"TOKENTILL_[A-Z0-9_]+")


def _rows() -> dict[str, str]:
    """Each variable of the Configuration table, with its row's meaning."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `(TOKENTILL_[A-Z0-9_]+)` \|[^|]*\|(.*)\|$", section, re.MULTILINE)
    }


def _table() -> set[str]:
    return set(_rows())


def _read_by_the_code() -> set[str]:
    found: set[str] = set()
    for package in ("api", "ledger", "wallets", "pricing", "migrations", "tests"):
        for path in (ROOT / package).rglob("*.py"):
            found |= set(VARIABLE.findall(path.read_text()))
    return found


def test_every_variable_the_code_reads_is_in_the_configuration_table_and_no_other():
    table, code = _table(), _read_by_the_code()
    assert len(table) > 30  # the table was found
    assert code - table == set(), "read by the code, missing from the README's Configuration table"
    assert table - code == set(), "in the README's Configuration table, read by no code"


def _subcommands(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((a.choices for a in p._actions if isinstance(a, argparse._SubParsersAction)), {})


def _commands(p: argparse.ArgumentParser, prefix: str = "tokentill") -> list[str]:
    subcommands = _subcommands(p)
    if not subcommands:
        return [prefix]
    return [c for name, sub in subcommands.items() for c in _commands(sub, f"{prefix} {name}")]


def test_every_command_of_the_cli_is_named_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    commands = _commands(parser())
    assert "tokentill keys revoke" in commands and "tokentill spool flush" in commands
    assert [c for c in commands if c not in readme] == []
    bench = next(a for a in _subcommands(parser())["bench"]._actions if a.dest == "target")
    assert [t for t in bench.choices if f"tokentill bench {t}" not in readme] == []


def test_help_after_any_command_prints_its_usage_as_the_readme_says(capsys):
    """README: "`tokentill --help` (and `--help` after any command)": each exits 0 with its usage."""
    for command in ["tokentill", *_commands(parser())]:
        words = command.split()[1:]
        try:
            parser().parse_args([*words, "--help"])
        except SystemExit as stopped:
            assert stopped.code == 0, command
        assert capsys.readouterr().out.startswith(f"usage: {command}"), command


def _refuses(name: str, value: str) -> bool:
    try:  # beside a read timeout of 1 s, which a hold must outlast by the settle margin (10 s): 13 is taken
        Settings.from_env({"TOKENTILL_GATEWAY_READ_TIMEOUT_SECONDS": "1", name: value})
    except SystemExit:
        return True
    return False


def test_the_durations_that_take_whole_seconds_only_say_so():
    """Most durations take a fraction (2.5 s); the rows of those that stop the start on one say
    "(whole seconds": a README that said nothing left the refusal to be found at a deploy."""
    durations = {name: meaning for name, meaning in _rows().items() if name.endswith("_SECONDS")}
    assert len(durations) > 10 and all(not _refuses(name, "13") for name in durations)
    whole = {name for name in durations if _refuses(name, "12.5")}
    assert whole == {name for name, meaning in durations.items() if "(whole seconds" in meaning}


def test_the_architecture_names_every_module_an_import_contract_binds():
    """The README's Architecture says what `lint-imports` keeps apart: each forbidden contract's
    source modules, named in backticks, and as many contracts as pyproject.toml has."""
    import tomllib

    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    readme = (ROOT / "README.md").read_text()
    paragraph = readme.split("Dependencies point one way", 1)[1].split("\n\n", 1)[0]
    sources = [m for c in contracts if c["type"] == "forbidden" for m in c["source_modules"]]
    assert [m for m in sources if f"`{m}`" not in paragraph] == []
    assert f"{len(contracts)} contracts" in paragraph


def _flags(p: argparse.ArgumentParser, prefix: str = "tokentill") -> list[str]:
    own = [f"{prefix} {o}" for a in p._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    return own + [f for name, sub in _subcommands(p).items() for f in _flags(sub, f"{prefix} {name}")]


def test_every_flag_of_the_cli_is_named_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    flags = _flags(parser())
    assert "tokentill bench --profile" in flags
    assert [f for f in flags if f.rsplit(" ", 1)[1] not in readme] == []
