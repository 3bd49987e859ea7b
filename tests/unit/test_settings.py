"""Settings from the environment: README's defaults, and a bad value stops the start with one
message naming its variable (SystemExit), never a traceback or a silently different meaning."""
from __future__ import annotations

from pathlib import Path

import pytest

from api.settings import Settings


def test_an_empty_environment_gives_the_defaults_the_readme_documents():
    s = Settings.from_env({})
    assert (s.pool_size, s.pool_timeout_s, s.writer_idle_s, s.scheduler, s.seal_interval_s, s.log_level,
            s.max_connections, s.workers, s.webhooks, s.lanes, s.max_budgets_per_customer) == \
        (10, 5, 5, True, 10, "INFO", 4096, 1, True, None, 100)


@pytest.mark.parametrize("name, bad", [
    ("TOKENTILL_POOL_SIZE", "0"), ("TOKENTILL_POOL_SIZE", "-1"), ("TOKENTILL_POOL_SIZE", "ten"),
    ("TOKENTILL_SEAL_INTERVAL_SECONDS", "0"), ("TOKENTILL_SEAL_INTERVAL_SECONDS", "-5"),
    ("TOKENTILL_MAX_CONNECTIONS", "0"), ("TOKENTILL_MAX_CONNECTIONS", "-3"),
    ("TOKENTILL_SCHEDULER", "disabled"), ("TOKENTILL_SCHEDULER", "maybe"), ("TOKENTILL_WEBHOOKS", "disable"),
    ("TOKENTILL_LOG_LEVEL", "verbose"), ("TOKENTILL_LOG_LEVEL", "warn"),
    ("TOKENTILL_LANES", "x"), ("TOKENTILL_LANES", "0"), ("TOKENTILL_LANES", "257"),
    ("TOKENTILL_SHUTDOWN_GRACE_SECONDS", "0"), ("TOKENTILL_SHUTDOWN_GRACE_SECONDS", "soon"),
    # not finite: `serve` ended in OverflowError (the pool's connect timeout, the writers' idle timeout)
    ("TOKENTILL_POOL_TIMEOUT_SECONDS", "inf"), ("TOKENTILL_WRITER_IDLE_SECONDS", "1e999"),
    ("TOKENTILL_KEEPALIVE_SECONDS", "Infinity"), ("TOKENTILL_WEBHOOK_TIMEOUT_SECONDS", "nan"),
    ("TOKENTILL_MAX_BUDGETS_PER_CUSTOMER", "0"), ("TOKENTILL_MAX_BUDGETS_PER_CUSTOMER", "10001"),
    # finite but past any meaning: `serve` ended in APScheduler's OverflowError traceback (a seal
    # interval of 1e17 s), and a retry window of 1e12 s made every failed webhook attempt unrecordable
    # (datetime out of range), so the delivery went out again at each lease, forever
    ("TOKENTILL_SEAL_INTERVAL_SECONDS", "99999999999999999"), ("TOKENTILL_SEAL_INTERVAL_SECONDS", "31536001"),
    ("TOKENTILL_WEBHOOK_RETRY_WINDOW_SECONDS", "1e12"), ("TOKENTILL_WEBHOOK_TIMEOUT_SECONDS", "1e300"),
    ("TOKENTILL_POOL_TIMEOUT_SECONDS", "31536001"),
    # `serve` forked this many server processes, until the machine died
    ("TOKENTILL_WORKERS", "0"), ("TOKENTILL_WORKERS", "two"), ("TOKENTILL_WORKERS", "1025"),
    ("TOKENTILL_WORKERS", "100000"),
])
def test_a_bad_value_stops_the_start_naming_its_variable(name, bad):
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({name: bad})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith(name) and repr(bad) in message


@pytest.mark.parametrize("raw, on", [("on", True), ("ON", True), ("1", True), ("true", True), ("yes", True),
                                     ("off", False), ("Off", False), ("0", False), ("false", False), ("no", False)])
def test_the_switches_take_the_documented_words(raw, on):
    s = Settings.from_env({"TOKENTILL_SCHEDULER": raw, "TOKENTILL_WEBHOOKS": raw})
    assert (s.scheduler, s.webhooks) == (on, on)


def test_a_big_host_s_worker_count_is_still_taken():
    """A 96-core host's TOKENTILL_WORKERS=96 started before the bound (55f37f4 refused it above 64)."""
    assert Settings.from_env({"TOKENTILL_WORKERS": "96"}).workers == 96
    assert Settings.from_env({"TOKENTILL_WORKERS": "1024"}).workers == 1024


def test_a_duration_of_a_year_is_still_taken():
    year = "31536000"
    s = Settings.from_env({"TOKENTILL_SEAL_INTERVAL_SECONDS": year, "TOKENTILL_WEBHOOK_RETRY_WINDOW_SECONDS": year})
    assert (s.seal_interval_s, s.webhook_retry_window_s) == (31_536_000, 31_536_000.0)


def test_good_values_are_read():
    s = Settings.from_env({"TOKENTILL_POOL_SIZE": "3", "TOKENTILL_SEAL_INTERVAL_SECONDS": "2",
                           "TOKENTILL_MAX_CONNECTIONS": "50", "TOKENTILL_LOG_LEVEL": "debug", "TOKENTILL_LANES": "4",
                           "TOKENTILL_MAX_BUDGETS_PER_CUSTOMER": "7"})
    assert (s.pool_size, s.seal_interval_s, s.max_connections, s.log_level, s.lanes, s.max_budgets_per_customer) == \
        (3, 2, 50, "DEBUG", 4, 7)


@pytest.mark.parametrize("bad", ["not a url", "mysql://tokentill:s3cret@db/ledger", "postgresql://tokentill:s3cret@db:99999/x",
                                 "postgresql://tokentill:s3cret@db:port/x", "db.example.com:5432"])
def test_a_database_url_that_is_not_a_postgresql_url_stops_the_start_without_echoing_a_password(bad):
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATABASE_URL": bad})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATABASE_URL must be") and "s3cret" not in message


def test_the_database_url_forms_the_readme_gives_are_taken():
    for url in ("postgresql://user@host:5432/db", "postgresql://user@/db?host=/dir", "postgres://u:p@h/db"):
        assert Settings.from_env({"TOKENTILL_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("query, named", [("sslmod=require", '"sslmod"'), ("connect_timeout", '"connect_timeout"'),
                                          ("foo=bar&sslmode=require", '"foo"')])
def test_a_database_url_with_a_parameter_libpq_does_not_take_stops_the_start_naming_it(query, named):
    """It passed, and every command that opened the database ended in psycopg's ProgrammingError
    traceback (`invalid connection option "sslmod"`), exit 1."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATABASE_URL": f"postgresql://tokentill:s3cret@db:5432/ledger?{query}"})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATABASE_URL: ") and named in message
    assert "s3cret" not in message


def test_the_libpq_parameters_of_a_database_url_are_taken():
    url = "postgresql://u@db/ledger?sslmode=verify-full&connect_timeout=5&application_name=till&target_session_attrs=any"
    assert Settings.from_env({"TOKENTILL_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize("content", ["", "not a certificate\n",
                                     "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_an_upstream_ca_file_without_a_certificate_stops_the_start_naming_its_variable(content, tmp_path):
    """It passed (the file was readable), and `serve` died starting the gateway: an ExceptionGroup
    traceback around ssl.SSLError (no certificate or crl found), exit 3 (as if the database could
    not be reached)."""
    ca = tmp_path / "ca.pem"
    ca.write_text(content)
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_GATEWAY_UPSTREAM_CA": str(ca)})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_GATEWAY_UPSTREAM_CA") and str(ca) in message


@pytest.mark.parametrize("name", ["TOKENTILL_ADMIN_KEY", "TOKENTILL_UPSTREAM_OPENAI_KEY",
                                  "TOKENTILL_UPSTREAM_ANTHROPIC_KEY"])
@pytest.mark.parametrize("raw", ["s3cret-key\n", " s3cret-key", "s3cret key", "s3cret-key\r"])
def test_a_key_with_a_space_or_a_line_break_stops_the_start_naming_it_without_echoing_it(name, raw):
    """A key read from a file keeps its newline: the admin key then matched no bearer token (every
    admin call 401, nothing said why), and an upstream key made every gateway call fail (an
    illegal header value: 502, as if the upstream could not be reached)."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({name: raw})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith(f"{name} ") and "s3cret" not in message


@pytest.mark.parametrize("name", ["TOKENTILL_ADMIN_KEY", "TOKENTILL_UPSTREAM_OPENAI_KEY",
                                  "TOKENTILL_UPSTREAM_ANTHROPIC_KEY"])
@pytest.mark.parametrize("raw", ["s3cret-clé", "s3cret-€", "s3cret\u00a0key"])
def test_a_key_with_a_character_outside_ascii_stops_the_start_naming_it_without_echoing_it(name, raw):
    """A header value is read as latin-1: `TOKENTILL_ADMIN_KEY=s3cret-clé` sent by curl in a UTF-8
    locale arrives as the bytes `c3 a9` for the é, read as "Ã©", so the key matched no bearer token
    (every admin call 401, nothing said why) unless the client sent the é as the one latin-1 byte
    e9; httpx (the SDK) refuses to send it at all (UnicodeEncodeError), and an upstream key so written
    made every gateway call fail. A key is printable ASCII; the é is position 10 of 10 (8 of 8 for
    the €, 7 of 10 for the no-break space), said without the key."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({name: raw})
    message = stopped.value.code
    at = next(i for i, c in enumerate(raw) if not c.isascii()) + 1
    assert isinstance(message, str) and message.startswith(f"{name} ") and "s3cret" not in message
    assert f"at position {at} of {len(raw)}" in message and "ASCII" in message


def test_keys_without_spaces_are_taken_as_given():
    s = Settings.from_env({"TOKENTILL_ADMIN_KEY": "tt_admin-Key.1", "TOKENTILL_UPSTREAM_OPENAI_KEY": "sk-proj-ABC_def",
                           "TOKENTILL_UPSTREAM_ANTHROPIC_KEY": "sk-ant-api03-x"})
    assert (s.admin_key, s.gateway.openai_key, s.gateway.anthropic_key) == ("tt_admin-Key.1", "sk-proj-ABC_def",
                                                                            "sk-ant-api03-x")


def test_a_database_url_with_an_unencoded_at_sign_in_its_password_stops_the_start_without_echoing_it():
    """SQLAlchemy reads the host from the first @: 'postgresql://till:pa@ss@db/ledger' tried to
    reach host 'ss@db' and said so (part of the password in the error: cannot reach the
    database: failed to resolve host 'ss@db'), exit 3."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATABASE_URL": "postgresql://till:pa@s3cret@db/ledger"})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATABASE_URL") and "%40" in message
    assert "s3cret" not in message
    encoded = "postgresql://till:pa%40s3cret@db/ledger"
    assert Settings.from_env({"TOKENTILL_DATABASE_URL": encoded}).database_url == encoded


@pytest.mark.parametrize("given, idle_ms", [("0.1", 100), ("5", 5_000), ("2.5", 2_500), ("60", 60_000)])
def test_the_writers_idle_timeout_is_the_one_given(tmp_path, given, idle_ms):
    """The wallet writers' sessions are ended after TOKENTILL_WRITER_IDLE_SECONDS idle in their
    transaction: the app's database sets that, in milliseconds (the SQL each batch begins with)."""
    from api.app import create_app
    from ledger.db import _lock_then_begin

    s = Settings.from_env({"TOKENTILL_WRITER_IDLE_SECONDS": given, "TOKENTILL_WEBHOOKS": "off",
                           "TOKENTILL_SCHEDULER": "off", "TOKENTILL_SPOOL_DIR": str(tmp_path)})
    db = create_app(s, "postgresql://tokentill@/ledger?host=/nowhere").state.services.db
    assert f"SET LOCAL idle_in_transaction_session_timeout = {idle_ms};" in _lock_then_begin([1], db.writer_idle_ms)


@pytest.mark.parametrize("bad", ["0.0004", "0.001", "61", "3600"])
def test_a_writers_idle_timeout_the_server_cannot_keep_stops_the_start(bad):
    """Under a millisecond it was set as 0, which PostgreSQL reads as no timeout at all (a stopped
    process kept its lane's lock for good); past the 60 s every session has, it was 60 s."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_WRITER_IDLE_SECONDS": bad})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_WRITER_IDLE_SECONDS") and repr(bad) in message


def test_the_settings_printed_show_no_secret():
    """A Settings (or the gateway's) in a log line, a traceback's locals or a debugger shows
    neither the admin key, the upstream keys, the database's password nor the session secret."""
    s = Settings.from_env({
        "TOKENTILL_ADMIN_KEY": "admin-key-SECRET", "TOKENTILL_UPSTREAM_OPENAI_KEY": "sk-openai-SECRET",
        "TOKENTILL_UPSTREAM_ANTHROPIC_KEY": "sk-ant-SECRET", "TOKENTILL_SESSION_SECRET": "session-SECRET" * 3,
        "TOKENTILL_DATABASE_URL": "postgresql://tokentill:pw-SECRET@db.example.com:5432/billing"})
    assert (s.admin_key, s.gateway.openai_key, s.gateway.anthropic_key) == \
        ("admin-key-SECRET", "sk-openai-SECRET", "sk-ant-SECRET")
    assert "pw-SECRET" in (s.database_url or "")
    for shown in (repr(s), str(s), repr(s.gateway)):
        assert "SECRET" not in shown, shown
    assert "pool_size=10" in repr(s) and "openai_url=" in repr(s.gateway)  # the rest is still shown


@pytest.mark.parametrize("url", [
    "postgresql://till:50%off-s3cret@db/ledger",  # a % not followed by two hex digits
    "postgresql://till:s3cret%00x@db/ledger",  # a NUL, which libpq refuses
    "postgresql://till:my s3cret@db/ledger",  # a space, libpq wants %20
    "postgresql://till:s3cret@db/led%zzger",
], ids=["percent", "nul", "space", "database-name"])
def test_a_database_url_libpq_cannot_read_stops_the_start_in_one_line_without_echoing_its_password(url):
    """libpq refused such a URL only when the command connected: a traceback whose last line
    quoted the password (`invalid percent-encoded token: "50%off-s3cret"`), exit 1."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATABASE_URL": url})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATABASE_URL") and "\n" not in message
    assert "s3cret" not in message and "%25" in message, message


@pytest.mark.parametrize("env, said", [
    # one rule (a whole number, at least 1, at most a bound where there is one), one wording, whether
    # api.settings or the gateway's settings read it: they said it two ways ("must be a whole number
    # from 1 to 256" / "at least 1" and "must be a positive whole number, at most 604,800" / "")
    ({"TOKENTILL_POOL_SIZE": "0"}, "TOKENTILL_POOL_SIZE must be a whole number, 1 or more, not '0'"),
    ({"TOKENTILL_MAX_CONNECTIONS": "ten"}, "TOKENTILL_MAX_CONNECTIONS must be a whole number, 1 or more, not 'ten'"),
    ({"TOKENTILL_LANES": "257"}, "TOKENTILL_LANES must be a whole number from 1 to 256, not '257'"),
    # 1,000,000 written as the gateway wrote its bounds, with thousands separators
    ({"TOKENTILL_WEBHOOK_REDRIVE_LIMIT": "1000001"},
     "TOKENTILL_WEBHOOK_REDRIVE_LIMIT must be a whole number from 1 to 1,000,000, not '1000001'"),
    ({"TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS": "-5"},
     "TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS must be a whole number from 1 to 1,000,000,000,000,000, not '-5'"),
    # a reserve's longest ttl: 7 x 86,400 = 604,800 s
    ({"TOKENTILL_GATEWAY_HOLD_SECONDS": "604801"},
     "TOKENTILL_GATEWAY_HOLD_SECONDS must be a whole number from 1 to 604,800, not '604801'"),
])
def test_a_count_out_of_its_bounds_is_said_in_one_wording_by_every_setting(env, said):
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env(env)
    assert stopped.value.code == said


@pytest.mark.parametrize("name, raw", [
    ("TOKENTILL_WORKERS", "\u0664"), ("TOKENTILL_POOL_SIZE", "1_0"), ("TOKENTILL_POOL_SIZE", "\uff15"),
    ("TOKENTILL_SEAL_INTERVAL_SECONDS", " 5 "), ("TOKENTILL_LANES", "+4"),
    ("TOKENTILL_POOL_TIMEOUT_SECONDS", "\u0665"), ("TOKENTILL_KEEPALIVE_SECONDS", "2_5"),
    ("TOKENTILL_WEBHOOK_TIMEOUT_SECONDS", "10 "),
])
def test_a_count_or_duration_in_other_digits_or_with_separators_stops_the_start(name, raw):
    """int() and float() read any Unicode digit, `_` between digits, a sign and spaces around:
    TOKENTILL_WORKERS=٤ (Arabic-Indic 4) forked 4 servers, TOKENTILL_POOL_SIZE=1_0 was a pool of 10
    and TOKENTILL_POOL_TIMEOUT_SECONDS=٥ waited 5 s, where `--port ٨٠٨٠` is refused (test_cli_errors).
    Counts are ASCII digits; durations ASCII digits with a fraction (2.5)."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({name: raw})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith(name) and repr(raw) in message


def test_counts_and_durations_in_ascii_digits_are_still_taken():
    s = Settings.from_env({"TOKENTILL_WORKERS": "4", "TOKENTILL_POOL_SIZE": "10", "TOKENTILL_LANES": "4",
                           "TOKENTILL_POOL_TIMEOUT_SECONDS": "2.5", "TOKENTILL_KEEPALIVE_SECONDS": ".5",
                           "TOKENTILL_WEBHOOK_TIMEOUT_SECONDS": "1e1"})
    assert (s.workers, s.pool_size, s.lanes, s.pool_timeout_s, s.keepalive_s, s.webhook_timeout_s) == \
        (4, 10, 4, 2.5, 0.5, 10.0)


def test_a_session_secret_of_bytes_not_in_utf8_is_taken_as_its_bytes():
    """The environment is bytes; Python reads one not in UTF-8 as a lone surrogate (0xff as
    U+DCFF), and `TOKENTILL_SESSION_SECRET` of 32 such bytes stopped every command, `keys list`
    included, with a UnicodeEncodeError traceback. A secret is bytes to hash: the key is now
    sha256 of the 32 bytes 0xff as set, the same on every host given them, and a UTF-8 secret's
    key is unchanged (sha256 of its UTF-8 bytes)."""
    import hashlib

    assert Settings.from_env({"TOKENTILL_SESSION_SECRET": "\udcff" * 32}).session_secret == \
        hashlib.sha256(b"\xff" * 32).digest()
    assert Settings.from_env({"TOKENTILL_SESSION_SECRET": "é" * 32}).session_secret == \
        hashlib.sha256(b"\xc3\xa9" * 32).digest()


@pytest.mark.parametrize("url, at", [("postgresql://u@h/db\udcff", 20), ("postgresql://u:pa\udcffss@h/db", 18)])
def test_a_database_url_with_a_byte_not_in_utf8_stops_the_start_in_one_line_without_echoing_it(url, at):
    """A byte not in UTF-8 in the URL (a latin-1 0xff, read by Python as U+DCFF) stopped every
    command with psycopg's UnicodeEncodeError traceback. Now one line naming the variable and the
    position (20 of `postgresql://u@h/db` + 1; 18 in the password, 'pass' never echoed), and how to
    write it (%FF)."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATABASE_URL": url})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATABASE_URL ")
    assert f"at position {at} " in message and "é as %C3%A9" in message
    assert "u:pa" not in message and "ss@h" not in message and "u@h/db" not in message


@pytest.mark.parametrize("url, at", [("postgresql://u:p%FF@h/db", "17 of 24"), ("postgresql://u@h/d%E9b", "19 of 22"),
                                     ("postgresql://u:%C3%A9%FF@h/db", "22 of 29"),
                                     ("postgresql://u@h/db?application_name=a%C3", "39 of 41")])
def test_a_database_url_percent_encoding_a_byte_not_in_utf8_stops_the_start_in_one_line(url, at):
    """The message for a raw byte not in UTF-8 said to write it as %FF, and the README too: that URL
    stopped every command with psycopg's UnicodeDecodeError traceback (conninfo_to_dict decodes
    what it unescapes as UTF-8), as did a latin-1 é written %E9. Positions by hand: "postgresql://"
    is 13 characters, so "u:p" ends at 16 and %FF is at 17 of 13 + 3 + 3 + 5 = 24; "u@h/d" ends at
    18, %E9 at 19 of 13 + 5 + 3 + 1 = 22; "u:" ends at 15, %C3%A9 (é) is whole at 16 to 21, %FF
    at 22 of 13 + 2 + 9 + 5 = 29; "u@h/db?application_name=a" (6 + 1 + 16 + 2 = 25) ends at 38, %C3 alone
    (no byte after it) at 39 of 38 + 3 = 41. One line each, naming the position, the URL not repeated."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATABASE_URL": url})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATABASE_URL has a byte not in UTF-8 ")
    assert f"at position {at}," in message and "u:p" not in message and "h/d" not in message


def test_a_database_url_percent_encoding_utf8_user_and_password_is_taken():
    """é and ä percent-encoded as UTF-8 (%C3%A9, %C3%A4), or given as they are, are taken."""
    for url in ("postgresql://us%C3%A9r:p%C3%A4ss@h/db", "postgresql://usér:päss@h/db?application_name=%E2%82%AC"):
        assert Settings.from_env({"TOKENTILL_DATABASE_URL": url}).database_url == url


def test_a_data_dir_with_a_byte_not_in_utf8_stops_the_start_in_one_line():
    """TOKENTILL_DATA_DIR=/tmp/d<0xff> (U+DCFF to Python): `tokentill migrate` ran initdb there, then
    stopped with pgserver's UnicodeEncodeError traceback, the cluster made and not started. Now
    one line before anything is made: the variable, and the byte's position (7 of 7)."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({"TOKENTILL_DATA_DIR": "/tmp/d\udcff"})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith("TOKENTILL_DATA_DIR: cannot use ")
    assert "a byte not in UTF-8 at position 7 of 7" in message


def test_a_data_dir_with_a_byte_not_in_utf8_is_not_refused_when_a_database_url_is_set():
    """TOKENTILL_DATA_DIR is the embedded cluster's alone (api.runtime reads it only when no URL is
    set): TOKENTILL_DATA_DIR=/tmp/d<0xff> beside TOKENTILL_DATABASE_URL=postgresql://u@h/db ran
    every command before the check on it was added, and then stopped each ('cannot use /tmp/d\\xff').
    It is kept as given, unused; without the URL it is still refused (the test above)."""
    s = Settings.from_env({"TOKENTILL_DATABASE_URL": "postgresql://u@h/db", "TOKENTILL_DATA_DIR": "/tmp/d\udcff"})
    assert (s.database_url, s.data_dir) == ("postgresql://u@h/db", Path("/tmp/d\udcff"))


FRACTIONAL_DURATIONS = ("TOKENTILL_POOL_TIMEOUT_SECONDS", "TOKENTILL_WRITER_IDLE_SECONDS",
                        "TOKENTILL_HEADER_TIMEOUT_SECONDS", "TOKENTILL_BODY_TIMEOUT_SECONDS",
                        "TOKENTILL_BODY_DEADLINE_SECONDS", "TOKENTILL_KEEPALIVE_SECONDS",
                        "TOKENTILL_SHUTDOWN_GRACE_SECONDS", "TOKENTILL_WEBHOOK_TIMEOUT_SECONDS",
                        "TOKENTILL_WEBHOOK_POLL_SECONDS", "TOKENTILL_WEBHOOK_BACKOFF_SECONDS",
                        "TOKENTILL_WEBHOOK_BACKOFF_CAP_SECONDS", "TOKENTILL_WEBHOOK_RETRY_WINDOW_SECONDS")


@pytest.mark.parametrize("name", FRACTIONAL_DURATIONS)
@pytest.mark.parametrize("tiny", ["0.000001", "1e-9", "0.099"])
def test_a_duration_under_a_tenth_of_a_second_stops_the_start(name, tiny):
    """A microsecond was taken: every request head timed out before it arrived, every pooled wait,
    webhook attempt and writer batch failed at once, the webhook poll spun. 0.1 s is the floor
    (the connection guard sweeps every 50 ms at best: less could not be kept anyway)."""
    with pytest.raises(SystemExit) as stopped:
        Settings.from_env({name: tiny})
    message = stopped.value.code
    assert isinstance(message, str) and message.startswith(name) and repr(tiny) in message and "0.1" in message


@pytest.mark.parametrize("name", FRACTIONAL_DURATIONS)
def test_a_tenth_of_a_second_is_still_taken(name):
    assert Settings.from_env({name: "0.1"}) is not None
