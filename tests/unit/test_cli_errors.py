"""The command line's refusals: bad arguments are usage errors (exit 2) and an unreachable
database is one line and exit 3, never a traceback."""
from __future__ import annotations

import pytest

from api.cli import DATABASE_UNREACHABLE, main, parser


def test_the_cli_refuses_a_port_out_of_range_as_a_usage_error(capsys):
    assert parser().parse_args(["serve", "--port", "0"]).port == 0
    for bad in ("99999", "-1", "http"):
        with pytest.raises(SystemExit) as raised:
            parser().parse_args(["serve", "--port", bad])
        assert raised.value.code == 2 and "argument --port: not a port" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["audit", "verify"], ["keys", "list"], ["migrate"], ["billing", "close"]])
def test_a_command_whose_database_cannot_be_reached_says_so_and_exits_3(command, monkeypatch, capsys):
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")  # port 1: refused
    assert main(command) == DATABASE_UNREACHABLE == 3
    err = capsys.readouterr().err
    assert err.startswith("error: cannot reach the database: connection failed") and "Traceback" not in err
