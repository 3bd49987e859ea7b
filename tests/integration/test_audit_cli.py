"""`tokentill audit verify` exits 0 on a whole ledger and names the entry a superuser altered."""
from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import pytest

from ledger.accounts import ensure_asset, open_account
from ledger.db import connect
from ledger.model import AccountSpec, AccountType, JournalEntry, Posting
from ledger.posting import post_entries
from ledger.seal import seal_once


async def _ledger_with_entries(url: str) -> list[int]:
    db = connect(url, pool_size=2)

    async def work(conn):
        await ensure_asset(conn, "USD", 9)
        await open_account(conn, AccountSpec("asset:cash", AccountType.ASSET, "USD", stripes=4))
        await open_account(conn, AccountSpec("liability:lot", AccountType.LIABILITY, "USD", lower_bound=0))
        entries = [JournalEntry(f"e{i}", "topup", (Posting("asset:cash", 100 + i, "USD"),
                                                   Posting("liability:lot", -(100 + i), "USD")))
                   for i in range(5)]
        return [r.entry_id for r in await post_entries(conn, entries)]

    ids = await db.run(work)
    assert await db.run(seal_once) is not None
    await db.dispose()
    return ids


def _verify(url: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", "audit", "verify", *extra], env=env,
                          capture_output=True, text=True, timeout=120)


def _as_superuser_without_triggers(url: str, table: str, sql: str, *params) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        conn.execute(sql, params)
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


async def test_verify_exits_zero_on_a_healthy_ledger(scratch_url):
    await _ledger_with_entries(scratch_url)
    result = _verify(scratch_url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout


async def test_verify_names_the_entry_whose_posting_was_altered(scratch_url):
    ids = await _ledger_with_entries(scratch_url)
    victim = ids[2]
    _as_superuser_without_triggers(
        scratch_url, "postings",
        "UPDATE postings SET amount = amount + 1 WHERE entry_id = %s AND amount > 0", victim)
    result = _verify(scratch_url)
    assert result.returncode == 1
    assert f"entry {victim} does not balance" in result.stdout
    assert f"entry {victim} was altered after seal" in result.stdout
    assert "account asset:cash stripe" in result.stdout  # the cached balance no longer matches
    for other in set(ids) - {victim}:
        assert f"entry {other} " not in result.stdout


async def test_verify_catches_a_balanced_forgery_through_the_seal(scratch_url):
    """Moving a posting to another account keeps the entry balanced; the seal still names it."""
    ids = await _ledger_with_entries(scratch_url)
    _as_superuser_without_triggers(
        scratch_url, "journal_entries", "UPDATE journal_entries SET kind = 'refund' WHERE id = %s", ids[0])
    result = _verify(scratch_url)
    assert result.returncode == 1
    assert f"entry {ids[0]} was altered after seal" in result.stdout


async def test_verify_names_the_entry_whose_recorded_at_was_altered(scratch_url):
    """When an entry was written is sealed too (hash version 2): moved by a superuser with the
    triggers off, verify names it. Was: recorded_at was not hashed, and verify passed."""
    ids = await _ledger_with_entries(scratch_url)
    victim = ids[3]
    _as_superuser_without_triggers(
        scratch_url, "journal_entries",
        "UPDATE journal_entries SET recorded_at = recorded_at - interval '3 days' WHERE id = %s", victim)
    result = _verify(scratch_url)
    assert result.returncode == 1, result.stdout
    assert f"entry {victim} was altered after seal" in result.stdout
    for other in set(ids) - {victim}:
        assert f"entry {other} " not in result.stdout


async def test_verify_names_the_entries_of_accounts_relabelled_to_another_currency(scratch_url):
    """Every USD account turned EUR by a superuser (the asset table's scale is the same, 9): each
    entry still balances per currency, and its hash covered the account code, not the currency, so
    verify passed while the ledger's 5 entries (510 USD of cash, 100 + 101 + 102 + 103 + 104)
    now read 510 EUR. Hash version 3 covers each posting's asset: all 5 are named."""
    ids = await _ledger_with_entries(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        conn.execute("INSERT INTO assets (code, scale) VALUES ('EUR', 9) ON CONFLICT DO NOTHING")
    _as_superuser_without_triggers(scratch_url, "accounts", "UPDATE accounts SET asset = 'EUR' WHERE asset = 'USD'")
    result = _verify(scratch_url)
    assert result.returncode == 1, result.stdout
    for victim in ids:
        assert f"entry {victim} was altered after seal" in result.stdout


async def test_verify_names_an_account_whose_type_or_customer_its_code_contradicts(scratch_url):
    """An account's type and customer are in no seal hash; the offline verifier checks them against
    the code (its first part is the type, `<type>:customer:<id>:...` names the customer), and so
    does verify here: liability:lot made an asset, and liability:customer:c1:lot:x made customer
    c2's, by a superuser with the triggers off. Was: verify passed (no entry posts to the second)."""
    await _ledger_with_entries(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        conn.execute("""INSERT INTO accounts (code, type, asset, customer_id)
                        VALUES ('liability:customer:c1:lot:x', 'liability', 'USD', 'c1')""")
    assert _verify(scratch_url).returncode == 0
    _as_superuser_without_triggers(scratch_url, "accounts", """UPDATE accounts SET type = 'asset'
                                                                WHERE code = 'liability:lot'""")
    _as_superuser_without_triggers(scratch_url, "accounts", """UPDATE accounts SET customer_id = 'c2'
                                                                WHERE code = 'liability:customer:c1:lot:x'""")
    result = _verify(scratch_url)
    assert result.returncode == 1, result.stdout
    assert "account liability:lot is of type asset, but its code says liability" in result.stdout
    assert "account liability:customer:c1:lot:x is of customer c2, but its code names another" in result.stdout


@pytest.mark.parametrize("moved", ["-", "+"])
async def test_verify_names_a_seal_whose_sealed_at_was_rewritten(moved, scratch_url):
    """An auditor reads a seal's sealed_at as "these entries existed by then". A superuser with the
    triggers off moved it 3 days back (before its 5 entries were written) or 3 days on: no hash
    covered it and verify passed. Hash version 4 chains it, so the seal is named; moved back, the
    seal is also dated before the first of its entries was recorded."""
    ids = await _ledger_with_entries(scratch_url)
    _as_superuser_without_triggers(scratch_url, "seals",
                                   f"UPDATE seals SET sealed_at = sealed_at {moved} interval '3 days'")
    result = _verify(scratch_url)
    assert result.returncode == 1, result.stdout
    assert "seal 1 chain hash does not match its entry hashes and sealed_at" in result.stdout
    assert (f"before entry {ids[0]} was recorded" in result.stdout) == (moved == "-")


async def test_verify_checks_the_chain_passes_through_a_head_kept_apart(scratch_url):
    """A superuser who deletes the last seal (triggers off), alters what it sealed and lets the job
    seal it again leaves a chain that verifies: entry e2's cash posting 102 -> 1,102 units (its lot
    posting -102 -> -1,102, the cached balances moved alike), so the cash account holds 100 + 101 +
    1,102 + 103 + 104 + 105 (e5, sealed by seal 2) = 1,615 units where it held 615, and verify
    passed. What shows it is a head kept apart: `--expect-head`, which only an export's check took
    (`give --file too`, exit 2), now checks that a seal of the database has that chain hash. The
    head of seal 1 taken before matches after honest seals (the chain passes through it), and no
    longer after the rewrite."""
    ids = await _ledger_with_entries(scratch_url)
    with psycopg.connect(scratch_url) as conn:
        head = conn.execute("SELECT encode(chain_hash, 'hex') FROM seals WHERE id = 1").fetchone()[0]
    assert f"ok   seals: every sealed entry is as it was sealed; the chain ends at {head} (seal 1)" in _verify(
        scratch_url).stdout  # where an auditor takes the head to keep

    async def more(conn):
        return await post_entries(conn, [JournalEntry("e5", "topup", (Posting("asset:cash", 105, "USD"),
                                                                       Posting("liability:lot", -105, "USD")))])

    db = connect(scratch_url, pool_size=2)
    await db.run(more)
    assert await db.run(seal_once) is not None  # seal 2: the chain grows past the head kept
    honest = _verify(scratch_url, "--expect-head", head.upper())
    assert honest.returncode == 0, honest.stdout + honest.stderr
    assert "ok   head: seal 1 has chain hash " + head in honest.stdout

    with psycopg.connect(scratch_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("DELETE FROM seals")
        conn.execute("""UPDATE account_balances b SET debits = b.debits + 1000 FROM postings p
                         WHERE p.entry_id = %s AND p.amount > 0 AND b.account_id = p.account_id
                           AND b.stripe = p.stripe""", (ids[2],))
        conn.execute("""UPDATE account_balances b SET credits = b.credits + 1000 FROM postings p
                         WHERE p.entry_id = %s AND p.amount < 0 AND b.account_id = p.account_id
                           AND b.stripe = p.stripe""", (ids[2],))
        conn.execute("UPDATE postings SET amount = amount + sign(amount) * 1000 WHERE entry_id = %s", (ids[2],))
        cash = conn.execute("""SELECT sum(b.debits - b.credits) FROM account_balances b
                                 JOIN accounts a ON a.id = b.account_id WHERE a.code = 'asset:cash'""").fetchone()[0]
    assert cash == 1_615
    assert await db.run(seal_once) is not None  # the job seals the altered entries again
    await db.dispose()
    assert _verify(scratch_url).returncode == 0  # the rewritten chain is consistent in itself
    result = _verify(scratch_url, "--expect-head", head)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"FAIL head: 1 found; first: no seal has chain hash {head}: the chain was rewritten since that head "
            "was taken (or the head is another ledger's)") in result.stdout


def test_an_expected_head_on_a_ledger_with_no_seal_says_there_is_none(scratch_url):
    """A database with no seal (a new ledger, or one whose every seal a superuser deleted) was told
    'the chain was rewritten since that head was taken', as if seals had been rewritten past it.
    It has no chain: the head check says the database has no seal, and still fails (exit 1), since
    a head kept apart says there was one."""
    head = "ab" * 32
    result = _verify(scratch_url, "--expect-head", head)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"FAIL head: 1 found; first: no seal has chain hash {head}: the database has no seal "
            "(every seal deleted, or the head is another ledger's)") in result.stdout


async def test_verify_timings_say_how_long_each_check_took(scratch_url):
    """`--timings`: each check's line ends with the seconds it took, and a last line sums them;
    in --json each check has `seconds` and the report `seconds` (their sum). No figure is asserted
    beyond being a number of seconds (no wall-clock assert): only that every check has one."""
    import json
    import re

    await _ledger_with_entries(scratch_url)
    plain = _verify(scratch_url, "--json")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    names = [c["name"] for c in json.loads(plain.stdout)["checks"]]
    assert "seconds" not in json.loads(plain.stdout) and len(names) > 10  # unchanged without --timings

    timed = _verify(scratch_url, "--json", "--timings")
    assert timed.returncode == 0, timed.stdout + timed.stderr
    report = json.loads(timed.stdout)
    assert [c["name"] for c in report["checks"]] == names
    seconds = [c["seconds"] for c in report["checks"]]
    assert all(isinstance(s, float) and s >= 0 for s in seconds)
    assert report["seconds"] == pytest.approx(sum(seconds), abs=0.01)  # each rounded to the millisecond

    text = _verify(scratch_url, "--timings", "--expect-head", "0" * 64)  # a head check is timed too
    lines = text.stdout.splitlines()
    for name in [*names, "head"]:
        [line] = [line for line in lines if re.match(rf"(ok  |FAIL) {name}: ", line)]
        assert re.search(r" \[[0-9]+\.[0-9]{3} s\]$", line), line
    assert re.fullmatch(r"checks took [0-9]+\.[0-9]{3} s in all", lines[-2]), lines[-2:]


def test_verify_timings_with_a_file_is_a_usage_error(tmp_path):
    """The offline verifier reads the file in one pass, not check by check: --timings is refused
    with --file (exit 2), not ignored."""
    export = tmp_path / "e.jsonl"
    export.write_text("")
    done = subprocess.run([sys.executable, "-m", "api.cli", "audit", "verify", "--file", str(export), "--timings"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "--timings" in done.stderr and "--file" in done.stderr
