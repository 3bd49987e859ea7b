"""The command line's refusals: bad arguments are usage errors (exit 2) and an unreachable
database is one line and exit 3, never a traceback."""
from __future__ import annotations

import subprocess
import sys

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


@pytest.mark.parametrize("url, reason", [
    ("postgresql://postgres@db.invalid/tokentill", "failed to resolve host 'db.invalid'"),  # a typo in the host
    ("postgresql://postgres@/tokentill?host=/nonexistent/dir", "connection is bad: connection to server on socket"),
])
def test_a_host_that_does_not_resolve_is_a_database_that_cannot_be_reached(url, reason, monkeypatch, capsys):
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
    assert main(["keys", "list"]) == DATABASE_UNREACHABLE
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the database: {reason}") and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["serve", "--workers", "0"], ["gateway", "--workers", "-2"], ["gateway", "--max-output-tokens", "0"],
    ["serve", "--workers", "100000"], ["gateway", "--workers", "1025"],
    ["bench", "lifecycle", "--workers-per-server", "1025"],
    ["gateway", "--upstream-openai", "ftp://example.com"], ["gateway", "--upstream-anthropic", "api.anthropic.com"],
    ["audit", "verify", "--expect-head", "zz"],  # on the database too (it checks a seal has the head)
    # a typo in the head (not 64 hex digits) read as an export that does not end there: exit 1,
    # "the chain ends at …, not at the expected head", as if the file had been tampered with
    ["audit", "verify", "--file", "x.jsonl", "--expect-head", "zz"],
    ["audit", "verify", "--file", "x.jsonl", "--expect-head", "ab" * 31],
    ["audit", "verify", "--file", "x.jsonl", "--expect-head", "ab" * 32 + " "],
    ["bench", "rating", "--rules", "0"], ["bench", "rating", "--seconds", "0"], ["bench", "rating", "--seconds", "-1"],
    ["bench", "ledger", "--seconds", "nan"], ["bench", "lifecycle", "--servers", "0"],
    ["bench", "faults", "--stop-seconds", "x"],
])
def test_a_bad_argument_of_any_command_is_a_usage_error_exit_2_never_1(argv, monkeypatch, capsys):
    """README, Configuration: "a bad argument is a usage error, exit 2". These exited 1, which
    `audit verify` uses for a ledger that fails verification."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")  # never reached
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_the_offline_verifier_takes_a_head_of_64_hex_digits_only(capsys):
    from ledger.offline import main as offline

    with pytest.raises(SystemExit) as raised:
        offline(["x.jsonl", "--expect-head", "g" * 64])
    assert raised.value.code == 2 and "not a chain hash" in capsys.readouterr().err
    assert parser().parse_args(["audit", "verify", "--file", "x", "--expect-head", "AB" * 32]).expect_head == "ab" * 32


def test_good_counts_and_upstreams_still_parse():
    args = parser().parse_args(["gateway", "--workers", "2", "--max-output-tokens", "512",
                                "--upstream-openai", "https://api.openai.com/v1/", "--upstream-anthropic",
                                "http://127.0.0.1:9000"])
    assert (args.workers, args.max_output_tokens) == (2, 512)
    assert (args.upstream_openai, args.upstream_anthropic) == ("https://api.openai.com/v1", "http://127.0.0.1:9000")


def test_a_reader_that_goes_away_is_one_line_not_a_traceback(tmp_path):
    """`tokentill keys list | head` and the like: output cut short by a closed pipe printed a
    BrokenPipeError traceback (audit export alone said so in one line)."""
    export = tmp_path / "empty.jsonl"
    export.write_text('{"type": "export", "format": "tokentill-journal", "version": 1, "whole": true, '
                      '"from": null, "to": null}\n{"type": "unsealed", "from_txid": "1"}\n'
                      '{"type": "end", "entries": 0, "seals": 0, "unsealed": 0}\n')
    done = subprocess.Popen([sys.executable, "-m", "api.cli", "audit", "verify", "--file", str(export)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done.stdout.close()  # the reader leaves before a line is written
    err = done.stderr.read()
    assert done.wait() == 2, err
    assert err.strip() == "error: cannot write to stdout: Broken pipe"


def test_a_data_dir_that_cannot_be_made_stops_the_start_naming_the_variable(tmp_path, monkeypatch, capsys):
    (tmp_path / "a-file").write_text("")
    monkeypatch.delenv("TOKENTILL_DATABASE_URL", raising=False)
    monkeypatch.setenv("TOKENTILL_DATA_DIR", str(tmp_path / "a-file" / "tokentill"))
    with pytest.raises(SystemExit) as stopped:
        main(["migrate"])
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATA_DIR: cannot use ")
    assert "Not a directory" in message


def test_a_key_limited_to_a_customer_id_no_customer_can_have_is_a_usage_error(monkeypatch, capsys):
    """`keys create --customer 'bad id!'` made a key limited to nothing; refused before any
    connection (the database here cannot be reached, and is not tried)."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    assert main(["keys", "create", "--scope", "inference", "--customer", "acme", "--customer", "bad id!"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid API key request; customers[1]: 'bad id!' is not a customer id"), err


def test_workers_are_bounded_as_tokentill_workers_is_and_the_refusal_says_the_range(capsys):
    """`serve --workers 100000` forked until the machine died: the bound is the setting's."""
    from api.settings import MAX_WORKERS

    assert MAX_WORKERS == 1024 and parser().parse_args(["serve", "--workers", "96"]).workers == 96
    with pytest.raises(SystemExit) as raised:
        parser().parse_args(["serve", "--workers", "100000"])
    assert raised.value.code == 2 and "argument --workers: not a number of processes from 1 to 1024: '100000'" in \
        capsys.readouterr().err


def test_a_count_or_port_in_other_digits_is_a_usage_error(capsys):
    """`str.isdigit` is true of any Unicode digit and int() reads them: `--port ٨٠٨٠` (Arabic-Indic
    8080) served on 8080 and `bench --workers ٤` ran 4 workers. ASCII digits only now."""
    for args, named in ((["serve", "--port", "\u0668\u0660\u0668\u0660"], "argument --port: not a port"),
                        (["serve", "--port", "8\uff10"], "argument --port: not a port"),
                        (["bench", "ledger", "--workers", "\u0664"], "argument --workers: not a whole number"),
                        # serve's own --workers (TOKENTILL_WORKERS's reading) forked 4 servers for ٤
                        (["serve", "--workers", "\u0664"], "argument --workers: not a number of processes"),
                        (["bench", "ledger", "--seconds", "\u0665"], "argument --seconds: not a positive number")):
        with pytest.raises(SystemExit) as raised:
            parser().parse_args(args)
        assert raised.value.code == 2 and named in capsys.readouterr().err, args


def test_keys_list_writes_a_key_s_name_on_its_own_line_with_its_control_characters_escaped(monkeypatch, capsys):
    """A key's name is whoever made it's text (`POST /v1/api-keys` takes any): `keys list` printed
    it raw, so a name of "ops\\nkey_0000000000000000  admin  -  active" showed an admin key that is
    not there, and ESC [8m hid the rows after it. Two keys, two lines: the names' line break and
    ESC are written \\n and \\x1b, the rest of each name (é included) as it is."""
    from datetime import UTC, datetime

    import api.cli
    from api.keys import ApiKey

    made = datetime(2026, 12, 6, tzinfo=UTC)
    listed = [ApiKey("key_1111111111111111", "inference", ("acme",), "ops\nkey_0000000000000000  admin  active",
                     made),
              ApiKey("key_2222222222222222", "auditor", (), "\x1b[8mclé", made, revoked_at=made)]
    monkeypatch.setattr(api.cli, "_with_db", lambda settings, work: listed)
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")  # never reached
    assert main(["keys", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("key_1111111111111111  inference ")
    assert lines[0].endswith("active  ops\\nkey_0000000000000000  admin  active")
    assert lines[1].startswith("key_2222222222222222  auditor ")
    assert lines[1].endswith("revoked 2026-12-06T00:00:00Z  \\x1b[8mclé")


@pytest.mark.parametrize("name, said", [
    ("a" * 201, "name: at most 200 characters, not 201"),
    # argv bytes not in UTF-8 (a latin-1 terminal's é, 0xff) reach Python as a lone surrogate
    ("caf\udce9", "name: not text PostgreSQL can hold (a byte not in UTF-8, or U+0000) at position 4"),
])
def test_a_key_name_the_api_would_refuse_is_a_usage_error(name, said, monkeypatch, capsys):
    """POST /v1/api-keys takes a name of at most 200 characters; `keys create --name` stored 5,000
    (listed by GET /v1/api-keys as no create could have made it), and a name with a byte not in
    UTF-8 ended in psycopg's UnicodeEncodeError traceback (exit 1) after connecting. Now each is
    refused as the customers are, before any connection (the database here cannot be reached)."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    assert main(["keys", "create", "--scope", "admin", "--name", name]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: invalid API key request; {said}"), err
    assert main(["keys", "create", "--scope", "admin", "--name", "a" * 200]) == DATABASE_UNREACHABLE  # taken


UNSTORABLE = "id: not text PostgreSQL can hold (a byte not in UTF-8, or U+0000) at position 5"


@pytest.mark.parametrize("key_id, said", [
    ("key_\udcff", f"invalid API key id 'key_\\udcff'; {UNSTORABLE}"),
    ("key_\x00", f"invalid API key id 'key_\\x00'; {UNSTORABLE}"),
])
def test_revoking_a_key_id_no_key_can_have_is_refused_by_name_without_connecting(key_id, said, monkeypatch, capsys):
    """`keys revoke $'\\xff'` (a byte not in UTF-8: a lone surrogate in argv) ended in psycopg's
    UnicodeEncodeError traceback; an id PostgreSQL text cannot hold (that, or U+0000, which
    DELETE /v1/api-keys/{key_id} answers 422) is refused as the API refuses it, as a bad id rather
    than an unknown one, named with its escapes, exit 2, the database never reached."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    assert main(["keys", "revoke", key_id]) == 2
    assert capsys.readouterr().err == f"error: {said}\n", key_id
    assert main(["keys", "revoke", "key_0123456789abcdef"]) == DATABASE_UNREACHABLE  # a possible id: looked up


@pytest.mark.parametrize("key_id, shown", [
    ("key_\x1b[8mX", "key_\\x1b[8mX"),  # ESC [8m: what follows it hidden on a terminal
    ("key_1\nkey_2", "key_1\\nkey_2"),  # a second line of its own
    ("key_\u202eX", "key_\\u202eX"),  # a bidi override
])
def test_revoking_an_unknown_key_id_with_a_control_character_names_it_escaped(key_id, shown, database_url,
                                                                               monkeypatch, capsys):
    """`keys revoke $'key_\\x1b[31mX'` printed `error: no API key key_` and the id's ESC as it was
    (the rest of the terminal's text red), a line break as a line of its own. The API answers such
    an id (no key has one) 404; the command still says no such key, exit 2, the id's control and
    format characters written as escapes, as `keys list` writes a name."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", database_url)
    assert main(["keys", "revoke", key_id]) == 2
    assert capsys.readouterr().err == f"error: no API key {shown}\n"


@pytest.mark.parametrize("given, named", [
    (["--key", "tt_cl\u00e9"], "--key"), (["--key", "tt_key\n"], "--key"), ({"TOKENTILL_API_KEY": "tt_d\u00e9v"},
                                                                          "TOKENTILL_API_KEY"),
])
def test_spool_flush_with_a_key_no_header_can_carry_is_a_usage_error(given, named, tmp_path, monkeypatch, capsys):
    """With one record spooled, `spool flush --key tt_clé` ended in httpx's UnicodeEncodeError
    traceback (exit 1), and `--key $'tt_key\\n'` kept every record, each 'Illegal header value'.
    Such a key (the settings' rule: printable ASCII, no space) is refused before anything is sent,
    naming where it came from, exit 2; the record stays spooled."""
    from api.spool import SUFFIX, Spool, SpoolRecord

    spool = Spool(tmp_path / f"sdk{SUFFIX}")
    spool.append(SpoolRecord("POST", "/v1/reservations/res_x/release", {}, "idem-1", "res_x", "http://127.0.0.1:1"))
    argv = ["spool", "flush", "--dir", str(tmp_path)]
    if isinstance(given, dict):
        monkeypatch.setenv("TOKENTILL_API_KEY", given["TOKENTILL_API_KEY"])
    else:
        argv += given
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {named} has a space, a line break"), err
    assert "cl\u00e9" not in err and "d\u00e9v" not in err and len(spool.records()) == 1


def test_a_pool_the_open_file_limit_leaves_no_room_beside_stops_serve_before_the_database(monkeypatch):
    """TOKENTILL_POOL_SIZE as large as the open-file limit (2 x pool: pool and overflow) left
    `serve` one HTTP connection per process, with a warning only: a crawling server. Now the start
    stops naming the variable, before the database (unreachable here: exit 3 had it been tried)."""
    import resource

    nofile, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile == resource.RLIM_INFINITY:
        pytest.skip("no open-file limit")
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    monkeypatch.setenv("TOKENTILL_POOL_SIZE", str(nofile))
    for command in (["serve", "--port", "0"], ["serve", "--port", "0", "--workers", "2"]):
        with pytest.raises(SystemExit) as stopped:
            main(command)
        message = stopped.value.code
        assert isinstance(message, str), message
        assert message.startswith(f"TOKENTILL_POOL_SIZE {nofile:,} leaves 0 HTTP "), message


def test_a_key_for_more_customers_than_the_api_takes_is_a_usage_error(monkeypatch, capsys):
    """POST /v1/api-keys takes at most 1,000 customers (422); `keys create` with 1,001 `--customer`
    went on to the database (unreachable here: exit 3) and made the key. Now refused as the API
    refuses it, before any connection; 1,000 still go on (to the database: 3)."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    given = [arg for i in range(1001) for arg in ("--customer", f"c{i}")]
    assert main(["keys", "create", "--scope", "inference", *given]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid API key request; customers: at most 1000 customers, not 1001"), err
    assert main(["keys", "create", "--scope", "inference", *given[:2000]]) == DATABASE_UNREACHABLE


@pytest.mark.parametrize("query, said", [
    ("connect_timeout=abc", "TOKENTILL_DATABASE_URL: bad value for connect_timeout: 'abc'"),  # psycopg's own check
    ("sslmode=bogus", 'TOKENTILL_DATABASE_URL: invalid sslmode value: "bogus"'),
    ("keepalives=x", 'TOKENTILL_DATABASE_URL: invalid integer value "x" for connection option "keepalives"'),
])
def test_a_bad_value_of_a_libpq_parameter_in_the_database_url_stops_the_command_naming_the_variable(
        query, said, monkeypatch, capsys):
    """README: a bad value stops the command before it starts, with one line naming the variable.
    `?connect_timeout=abc` was psycopg's ProgrammingError traceback (bad value for connect_timeout),
    exit 1, and a value libpq refuses when it connects (`?sslmode=bogus`) was `error: cannot reach the
    database: connection is bad: invalid sslmode value: "bogus"`, exit 3, the code of a database
    down, naming no variable. Both now stop as a bad setting, exit 1, nothing reached (port 1)."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", f"postgresql://postgres@127.0.0.1:1/nowhere?{query}")
    with pytest.raises(SystemExit) as stopped:
        main(["keys", "list"])
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith(said) and "\n" not in message, message
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("url", ["postgresql://postgres@127.0.0.1:1/nowhere", None])
def test_a_bad_pgconnect_timeout_in_the_environment_stops_the_command_naming_it(url, monkeypatch, tmp_path):
    """README: a value libpq or psycopg refuses stops the command in one line naming the variable.
    psycopg reads connect_timeout from PGCONNECT_TIMEOUT where the URL has none (libpq's own
    environment variable), so PGCONNECT_TIMEOUT=abc, with a URL or with the embedded cluster, still
    ended in psycopg's ProgrammingError traceback (bad value for connect_timeout: 'abc'), exit 1."""
    if url is None:
        monkeypatch.delenv("TOKENTILL_DATABASE_URL", raising=False)
        monkeypatch.setenv("TOKENTILL_DATA_DIR", str(tmp_path / "data"))
    else:
        monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "abc")
    with pytest.raises(SystemExit) as stopped:
        main(["keys", "list"])
    assert stopped.value.code == "PGCONNECT_TIMEOUT: bad value for connect_timeout: 'abc' (a number of seconds)"


def test_a_url_s_connect_timeout_wins_over_a_bad_pgconnect_timeout(monkeypatch):
    """Guard: the URL's ?connect_timeout=5 is the one psycopg and libpq use, PGCONNECT_TIMEOUT=abc
    unread: not refused, the command goes on to connect (port 1: nothing there, exit 3)."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=5")
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "abc")
    assert main(["keys", "list"]) == DATABASE_UNREACHABLE


@pytest.mark.parametrize("variable, value, said", [
    ("PGSSLMODE", "bogus", 'PGSSLMODE: invalid sslmode value: "bogus"'),
    ("PGTARGETSESSIONATTRS", "x", 'PGTARGETSESSIONATTRS: invalid target_session_attrs value: "x"'),
])
def test_a_bad_libpq_value_from_the_environment_names_its_variable_not_the_url(variable, value, said, monkeypatch):
    """A value libpq refuses as it connects stops the command naming the variable that set it
    (d937a81c). Set by libpq's own environment variable, the URL not giving it, it was blamed on
    the URL: PGSSLMODE=bogus said `TOKENTILL_DATABASE_URL: invalid sslmode value: "bogus"`."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as stopped:
        main(["keys", "list"])
    assert stopped.value.code == said


def test_a_bad_libpq_value_in_the_url_is_the_url_s_even_beside_its_environment_variable(monkeypatch):
    """Guard: the URL's ?sslmode=bogus wins over PGSSLMODE=disable (libpq reads the URL's), so the
    URL is named."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/nowhere?sslmode=bogus")
    monkeypatch.setenv("PGSSLMODE", "disable")
    with pytest.raises(SystemExit) as stopped:
        main(["keys", "list"])
    assert stopped.value.code == 'TOKENTILL_DATABASE_URL: invalid sslmode value: "bogus"'


def _with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.mark.parametrize("query, said", [
    # the server refuses the session's setting as it starts it: FATAL: invalid value for parameter
    ("options=-cstatement_timeout%3Dabc",
     'TOKENTILL_DATABASE_URL: invalid value for parameter "statement_timeout": "abc"'),
    ("options=-cno_such_setting%3D1", 'TOKENTILL_DATABASE_URL: unrecognized configuration parameter "no_such_setting"'),
    # libpq refuses the pair before it connects (its default sslmode is prefer)
    ("sslnegotiation=direct",
     'TOKENTILL_DATABASE_URL: weak sslmode "prefer" may not be used with sslnegotiation=direct '
     '(use "require", "verify-ca", or "verify-full")'),
])
def test_a_setting_the_server_or_libpq_refuses_as_it_connects_is_a_bad_value_not_a_database_down(
        query, said, database_url, monkeypatch, capsys):
    """README: a value libpq refuses stops the command in one line naming the variable, exit 1.
    `?options=-cstatement_timeout%3Dabc` was `error: cannot reach the database: connection failed: ...
    FATAL: invalid value for parameter "statement_timeout": "abc"`, exit 3 (a database down), and
    `?sslnegotiation=direct` `error: cannot reach the database: connection is bad: weak sslmode
    "prefer" may not be used with sslnegotiation=direct (...)`, exit 3."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", _with_query(database_url, query))
    with pytest.raises(SystemExit) as stopped:
        main(["keys", "list"])
    assert stopped.value.code == said
    assert "Traceback" not in capsys.readouterr().err


def test_a_bad_setting_in_pgoptions_names_pgoptions(database_url, monkeypatch):
    """libpq reads `options` from PGOPTIONS where the URL gives none: that variable is named."""
    monkeypatch.setenv("TOKENTILL_DATABASE_URL", database_url)
    monkeypatch.setenv("PGOPTIONS", "-cstatement_timeout=abc")
    with pytest.raises(SystemExit) as stopped:
        main(["keys", "list"])
    assert stopped.value.code == 'PGOPTIONS: invalid value for parameter "statement_timeout": "abc"'
