"""`tokentill audit export`: the demo ledger in Beancount passes bean-check and bean-query's balances
equal the trial balance; the CSV sums to it too; the jsonl export verifies offline, and each
kind of tampering with it is caught and named."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import beanquery
import pytest
from beancount import loader
from beancount.core import data

from api.bench.synthetic import build_ledger
from api.demo import scenario
from ledger.db import connect
from tests.live_server import serving

ADMIN = "export-admin"


def cli(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TOKENTILL_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api.cli", "audit", *args], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(server_url):
    """The demo's chatbot scenario played over HTTP on a database of its own; yields its URL and
    the trial balance the API reports."""
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_demo")
    url = next(gen)
    try:
        with serving(url, ADMIN) as tt:
            scenario(tt)
            trial = tt.get("/v1/audit/trial-balance")
            middle = _middle_time(url)
            trial["at_middle"] = tt.get(f"/v1/audit/trial-balance?at={middle}")
            trial["middle"] = middle
            yield url, trial
    finally:
        gen.close()


def _middle_time(url: str) -> str:
    rows = list(csv.DictReader(cli(url, "export", "--format", "csv").stdout.splitlines()))
    times = sorted({r["time"] for r in rows})
    return times[len(times) // 2]


def _bean_balances(path: Path) -> dict[str, Decimal]:
    """bean-query's balance of every account, by the code its open directive carries."""
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    code_of = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    rows = beanquery.connect(f"beancount:{path}").execute("SELECT account, sum(number) GROUP BY account").fetchall()
    return {code_of[account]: total for account, total in rows}


def _trial(trial: dict) -> dict[str, Decimal]:
    return {line["account"]: Decimal(line["balance"]) for line in trial["accounts"]}


def test_the_demo_ledger_in_beancount_passes_bean_check_and_its_balances_equal_the_trial_balance(demo, tmp_path):
    url, trial = demo
    out = tmp_path / "demo.beancount"
    done = cli(url, "export", "--format", "beancount", "--out", str(out))
    assert done.returncode == 0, done.stderr
    check = subprocess.run(["bean-check", str(out)], capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and check.stdout == "" and check.stderr == "", check.stdout + check.stderr

    entries, errors, _ = loader.load_file(str(out))
    assert errors == []
    code_of = {e.account: e.meta["code"] for e in entries if isinstance(e, data.Open)}
    kinds = {e.meta["entry_id"]: e.narration for e in entries if isinstance(e, data.Transaction)}
    assert {"topup", "reserve", "settle", "release"} <= set(kinds.values())
    beancount, expected = _bean_balances(out), _trial(trial)
    assert set(beancount) <= set(expected)  # an account without postings has no row in bean-query
    assert {code: beancount.get(code, Decimal(0)) for code in expected} == expected
    assert set(code_of.values()) == set(expected)  # every account is opened
    assert sum(beancount.values()) == 0 and any(beancount.values())


def test_a_window_in_beancount_opens_with_the_balances_before_it(demo, tmp_path):
    """With --from the file starts from the balances before it, so its balances are those at its end."""
    url, trial = demo
    for name, window, expected in (("from", ["--from", trial["middle"]], _trial(trial)),
                                   ("to", ["--to", trial["middle"]], _trial(trial["at_middle"])),
                                   ("both", ["--from", "2000-01-01", "--to", trial["middle"]],
                                    _trial(trial["at_middle"]))):
        out = tmp_path / f"{name}.beancount"
        assert cli(url, "export", "--format", "beancount", "--out", str(out), *window).returncode == 0
        check = subprocess.run(["bean-check", str(out)], capture_output=True, text=True, timeout=300)
        assert check.returncode == 0 and not check.stdout + check.stderr, check.stdout + check.stderr
        found = _bean_balances(out)
        assert {code: found.get(code, Decimal(0)) for code in expected} == expected, name
    assert _trial(trial["at_middle"]) != _trial(trial)  # the window matters


def test_a_window_s_opening_balances_carry_their_time_spelled_as_every_entry_s(demo, tmp_path):
    """An auditor in Tokyo exports from the middle of the demo, given at +09:00. Every transaction's
    `time` is the full UTC time, `YYYY-MM-DDTHH:MM:SS.ffffffZ`; the opening balances' was written
    `2026-12-07T20:07:13+00:00`-style (isoformat: +00:00, and no fraction at a whole second), so a
    script reading the file's `time` one way failed on it. By hand: a middle of
    2026-12-07T20:07:13.176782Z is sent as 2026-12-08T05:07:13.176782+09:00 (20:07 + 9 h) and the
    opening balances read time "2026-12-07T20:07:13.176782Z"."""
    url, trial = demo
    middle = datetime.fromisoformat(trial["middle"].replace("Z", "+00:00"))
    tokyo = middle.astimezone(timezone(timedelta(hours=9))).isoformat()
    out = tmp_path / "tokyo.beancount"
    done = cli(url, "export", "--format", "beancount", "--out", str(out), "--from", tokyo)
    assert done.returncode == 0, done.stderr
    entries, errors, _ = loader.load_file(str(out))
    assert errors == []
    times = {e.narration: e.meta["time"] for e in entries if isinstance(e, data.Transaction)}
    assert times["opening balances"] == trial["middle"]
    spelled = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
    assert all(spelled.fullmatch(e.meta["time"]) for e in entries if isinstance(e, data.Transaction))


def test_an_empty_window_before_every_entry_opens_its_accounts_before_its_end(demo, tmp_path):
    """`--to 2026-01-01T00:00:00Z`, before the demo's entries (written today, December 2026): no
    entry in the window, and its accounts were opened on the export's day (today), after the window
    ended. Now on its last day: 2026-01-01T00:00:00Z less a microsecond is 2025-12-31; bean-check
    still passes (opens and commodities, no transaction)."""
    url, _ = demo
    out = tmp_path / "before.beancount"
    done = cli(url, "export", "--format", "beancount", "--out", str(out), "--to", "2026-01-01T00:00:00Z")
    assert done.returncode == 0, done.stderr
    entries, errors, _ = loader.load_file(str(out))
    assert errors == []
    assert not any(isinstance(e, data.Transaction) for e in entries)
    opens = [e for e in entries if isinstance(e, data.Open)]
    assert opens and {e.date.isoformat() for e in opens} == {"2025-12-31"}


def test_the_csv_export_is_one_posting_a_row_and_sums_to_the_trial_balance(demo, tmp_path):
    url, trial = demo
    out = tmp_path / "demo.csv"
    assert cli(url, "export", "--format", "csv", "--out", str(out)).returncode == 0
    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["entry_id", "time", "kind", "customer_id", "request_id", "account", "asset", "amount"]
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        sums[row["account"]] += Decimal(row["amount"])
    expected = {line["account"]: Decimal(line["balance"]) for line in trial["accounts"]}
    assert {code: sums.get(code, Decimal(0)) for code in expected} == expected
    assert set(sums) <= set(expected)
    settles = [r for r in rows if r["kind"] == "settle"]
    assert {r["request_id"] for r in settles} >= {"chat-1", "chat-2", "chat-3"}
    assert all(r["time"].endswith("Z") and r["asset"] == "USD" for r in rows)


def test_a_window_exports_only_the_entries_that_occurred_in_it(demo, tmp_path):
    url, _ = demo
    everything = cli(url, "export", "--format", "csv")
    rows = list(csv.DictReader(everything.stdout.splitlines()))
    times = sorted({r["time"] for r in rows})
    middle = times[len(times) // 2]
    later = cli(url, "export", "--format", "csv", "--from", middle)
    earlier = cli(url, "export", "--format", "csv", "--to", middle)
    later_rows = list(csv.DictReader(later.stdout.splitlines()))
    earlier_rows = list(csv.DictReader(earlier.stdout.splitlines()))
    assert later_rows and earlier_rows
    assert all(r["time"] >= middle for r in later_rows) and all(r["time"] < middle for r in earlier_rows)
    assert len(later_rows) + len(earlier_rows) == len(rows)
    assert cli(url, "export", "--format", "csv", "--from", "2026-02-01", "--to", "2026-01-01").returncode == 2
    # Was a traceback (OverflowError: the beancount writer moved the start to UTC, before year 1):
    early = cli(url, "export", "--format", "beancount", "--from", "0001-01-01T00:00:00+01:00")
    assert early.returncode == 2 and "not a time" in early.stderr and "Traceback" not in early.stderr
    # Was a traceback (FileNotFoundError from the temporary file beside it):
    nowhere = cli(url, "export", "--format", "csv", "--out", "/nonexistent-folder/journal.csv")
    assert nowhere.returncode == 2 and nowhere.stderr.startswith(
        "error: cannot write /nonexistent-folder/journal.csv: No such file or directory"), nowhere.stderr


# ---- offline verification of the jsonl export ---------------------------------------------------

@pytest.fixture(scope="module")
def chain_url(server_url):
    """A 900-entry ledger (entry n occurred n seconds into 2026) sealed in several seals, with 30
    entries after the last seal."""
    import asyncio

    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_chain")
    url = next(gen)

    async def build():
        db = connect(url, pool_size=1)
        await build_ledger(db, 870, customers=7, seal_every=300, chunk=150)
        await build_ledger(db, 30, customers=7, seal=False, first=870)
        await db.dispose()

    asyncio.run(build())
    yield url
    gen.close()


@pytest.fixture(scope="module")
def sealed_export(chain_url, tmp_path_factory) -> list[str]:
    """That ledger as jsonl."""
    path = tmp_path_factory.mktemp("chain") / "journal.jsonl"
    done = cli(chain_url, "export", "--format", "jsonl", "--out", str(path))
    assert done.returncode == 0, done.stderr
    return path.read_text().splitlines()


def test_a_window_in_jsonl_carries_whole_seals_and_verifies(chain_url, tmp_path):
    """Entries 400-499 lie inside one seal: the export holds that seal whole, and nothing else."""
    path = tmp_path / "window.jsonl"
    done = cli(chain_url, "export", "--format", "jsonl", "--out", str(path),
               "--from", "2026-01-01T00:06:40Z", "--to", "2026-01-01T00:08:20Z")
    assert done.returncode == 0, done.stderr
    lines = path.read_text().splitlines()
    seals = [json.loads(line) for line in lines if '"type":"seal"' in line]
    keys = {json.loads(line)["key"] for line in lines if '"type":"entry"' in line}
    assert len(seals) == 1 and {f"syn:{n}" for n in range(400, 500)} <= keys
    assert len(keys) == len(seals[0]["entry_ids"]) < 900
    verified = _verify(tmp_path, lines)
    assert verified.returncode == 0, verified.stdout


def test_a_window_s_bounds_in_either_header_are_spelled_as_every_entry_s_time(chain_url, tmp_path):
    """The window given at +09:00: 09:06:40+09:00 is 09:06:40 - 9 h = 00:06:40 UTC, 09:08:20+09:00 is
    00:08:20 UTC (entries 400-499, one seal). The jsonl header's `from`/`to` were Python's isoformat
    ("2026-01-01T00:06:40+00:00") beside its own `exported_at` ("...Z"), and the Beancount header
    comment read "[2026-01-01 00:06:40+00:00, ...)"; both now read the entries' spelling, UTC, six
    digits, a Z. A header of before (the old spelling) still verifies offline."""
    window = ("--from", "2026-01-01T09:06:40+09:00", "--to", "2026-01-01T09:08:20+09:00")
    start, end = "2026-01-01T00:06:40.000000Z", "2026-01-01T00:08:20.000000Z"
    path = tmp_path / "window.jsonl"
    assert cli(chain_url, "export", "--format", "jsonl", "--out", str(path), *window).returncode == 0
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert (header["from"], header["to"]) == (start, end), header
    assert _verify(tmp_path, lines).returncode == 0
    old = json.dumps({**header, "from": "2026-01-01T00:06:40+00:00", "to": "2026-01-01T00:08:20+00:00"})
    verified = _verify(tmp_path, [old, *lines[1:]])
    assert verified.returncode == 0, verified.stdout
    bean = tmp_path / "window.beancount"
    assert cli(chain_url, "export", "--format", "beancount", "--out", str(bean), *window).returncode == 0
    assert f"; entries that occurred in [{start}, {end}); " in bean.read_text()


# Seals of the chain ledger: entries 0-299, 300-599, 600-869 (entry n at n seconds into 2026); 870-899 unsealed.
@pytest.mark.parametrize(("bounds", "entries", "genesis", "cautioned"), [
    ((), 900, True, False),  # whole
    (("--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:00:01Z"), 300, True, False),  # the first entry
    (("--to", "2026-01-01T00:05:00Z"), 300, True, False),  # up to entry 300, exactly at `to`: not in it
    (("--from", "2026-01-01T00:05:00Z", "--to", "2026-01-01T00:05:01Z"), 300, False, True),  # entry 300 at `from`
    (("--from", "2026-01-01T00:14:30Z", "--to", "2026-01-01T00:14:31Z"), 1, False, True),  # unsealed 870 at `from`
    (("--from", "2026-01-01T00:14:29Z"), 300, False, True),  # to the head: seal 3 (entry 869) and the 30 unsealed
    # empty: cautioned that no seal in it vouches that the window had no entry (it named "the seals before its
    # first", of which it has none, until test_offline_header's test of an empty window)
    (("--from", "2026-01-01T00:05:00Z", "--to", "2026-01-01T00:05:00Z"), 0, False, True),
    (("--from", "2027-01-01T00:00:00Z"), 0, False, True),  # empty: after the last entry
])
def test_each_window_the_export_writes_verifies_offline_without_a_new_problem(chain_url, tmp_path, bounds, entries,
                                                                               genesis, cautioned):
    """(review of eee683f) The verifier now reads the header's format, version and window: every
    file the export writes still verifies, its entries counted by hand from the seals above: a
    window takes each seal holding one of its entries whole, and the unsealed entries of it alone,
    [from, to) half-open. A window from the first entry is from the chain's first seal (no caution
    unless gaps); one from a later seal is cautioned for the seals before it."""
    path = tmp_path / "window.jsonl"
    done = cli(chain_url, "export", "--format", "jsonl", "--out", str(path), *bounds)
    assert done.returncode == 0, done.stderr
    lines = path.read_text().splitlines()
    assert len(_entries(lines)) == entries
    verified = _verify(tmp_path, lines, "--json")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0 and report["problems"] == [], verified.stdout
    assert (report["entries"], report["whole"], report["from_genesis"]) == (entries, not bounds, genesis)
    text = _verify(tmp_path, lines)
    assert text.returncode == 0 and ("note: a window export" in text.stdout) is cautioned, text.stdout


def _verify(tmp_path: Path, lines: list[str], *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "edited.jsonl"
    path.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "api.cli", "audit", "verify", "--file", str(path), *extra],
                          env=env, capture_output=True, text=True, timeout=120)


def _entries(lines: list[str]) -> list[tuple[int, dict]]:
    return [(i, json.loads(line)) for i, line in enumerate(lines) if '"type":"entry"' in line]


def test_an_untouched_export_verifies_offline(sealed_export, tmp_path):
    seals = [json.loads(line) for line in sealed_export if '"type":"seal"' in line]
    assert len(seals) >= 3
    done = _verify(tmp_path, sealed_export)
    assert done.returncode == 0, done.stdout
    assert "900 entries" in done.stdout and f"{len(seals)} seals intact" in done.stdout
    assert "30 entries are not sealed yet" in done.stdout
    assert _verify(tmp_path, sealed_export, "--expect-head", seals[-1]["chain_hash"]).returncode == 0
    assert _verify(tmp_path, sealed_export, "--expect-head", "00" * 32).returncode == 1


def test_a_head_kept_at_an_earlier_seal_matches_a_later_whole_export(sealed_export, tmp_path):
    """An auditor keeps the head of the day (the last seal's chain hash then); the ledger seals on,
    and the next export's chain passes through that head, as `audit verify --expect-head` finds on
    the database (a seal has it). With --file the last seal's had to equal it: "the chain ends at
    <the new head>, not at the expected head <the kept one>", exit 1, on an intact export."""
    seals = [json.loads(line) for line in sealed_export if '"type":"seal"' in line]
    kept = seals[-3]  # the head when that seal was the last: two seals have followed it
    done = _verify(tmp_path, sealed_export, "--expect-head", kept["chain_hash"])
    assert done.returncode == 0, done.stdout
    assert (f"seal {kept['id']} has chain hash {kept['chain_hash']}: the chain passes through it "
            "(2 seal(s) after it in the file)") in done.stdout
    # a head no seal of the file has (rewritten since, or another ledger's) still fails, named
    other = _verify(tmp_path, sealed_export, "--expect-head", "00" * 32)
    assert other.returncode == 1
    assert (f"FAIL no seal in the file has chain hash {'00' * 32}: the chain was rewritten since that head was "
            f"taken, the file stops before it, or the head is another ledger's (the chain ends at "
            f"{seals[-1]['chain_hash']})") in other.stdout


def test_a_changed_amount_is_named(sealed_export, tmp_path):
    lines = list(sealed_export)
    i, entry = _entries(lines)[400]
    entry["postings"][0][3] += 1
    entry["postings"][1][3] -= 1  # still balanced: only the seal can tell
    lines[i] = json.dumps(entry)
    done = _verify(tmp_path, lines)
    assert done.returncode == 1
    assert f"entry {entry['id']} was altered" in done.stdout.splitlines()[0]


def test_a_changed_recorded_at_is_named(sealed_export, tmp_path):
    """An entry's recorded_at is in the export and in its seal's hash (version 2): edited in the
    file, offline verify names the entry. Was: not exported, not hashed, so nothing to catch."""
    lines = list(sealed_export)
    i, entry = _entries(lines)[500]
    seal = next(json.loads(line) for line in lines if '"type":"seal"' in line
                and json.loads(line)["id"] == entry["seal"])
    assert seal["hash_version"] == 4  # 2 and later cover recorded_at
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", entry["recorded_at"]), entry["recorded_at"]
    entry["recorded_at"] = entry["recorded_at"].replace(entry["recorded_at"][:4], "2025", 1)
    lines[i] = json.dumps(entry)
    done = _verify(tmp_path, lines)
    assert done.returncode == 1, done.stdout
    assert f"entry {entry['id']} was altered" in done.stdout.splitlines()[0]


def test_a_changed_sealed_at_is_named(sealed_export, tmp_path):
    """A seal's sealed_at ("these entries existed by then") moved a day on in the file, or a day
    back: no hash covered it and the file verified intact. Hash version 4 chains it: the seal is
    named (and moved back, its first entry, recorded after it)."""
    for days in (1, -1):
        lines = list(sealed_export)
        i, seal = next((i, json.loads(line)) for i, line in enumerate(lines) if '"type":"seal"' in line)
        assert seal["hash_version"] == 4
        at = datetime.fromisoformat(seal["sealed_at"]) + timedelta(days=days)
        seal["sealed_at"] = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        lines[i] = json.dumps(seal)
        done = _verify(tmp_path, lines)
        assert done.returncode == 1, done.stdout
        assert (f"seal {seal['id']}: its chain hash does not match the hashes of its entries and its sealed_at"
                in done.stdout)
        assert (f"before entry {seal['entry_ids'][0]} was recorded" in done.stdout) == (days < 0)


def test_a_ledger_relabelled_to_another_currency_is_named(sealed_export, tmp_path):
    """Every "USD" of the file, in its account records and its postings' assets, made "EUR": each
    entry still balances per currency and each posting's asset is its account record's, and the
    hash covered the account code, not the currency, so the file verified "intact" in euros.
    Hash version 3 (every seal since migration 0076) covers each posting's asset: the first
    sealed entry is named, and all 870 sealed ones are (the 30 unsealed are vouched for by none)."""
    lines = list(sealed_export)
    edited = []
    for line in lines:
        record = json.loads(line)
        if record["type"] == "account" and record["asset"] == "USD":
            record["asset"] = "EUR"
        elif record["type"] == "entry":
            record["postings"] = [[*p[:4], "EUR" if p[4] == "USD" else p[4]] for p in record["postings"]]
        edited.append(json.dumps(record, separators=(",", ":"), ensure_ascii=False))
    assert edited != lines
    first = _entries(edited)[0][1]
    done = _verify(tmp_path, edited, "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 1, done.stdout
    assert report["problems"][0] == (f"entry {first['id']} was altered: its content does not match the hash "
                                     f"seal {first['seal']} stored for it")
    assert report["problem_count"] == 870  # one a sealed entry; the chain hashes are of the stored hashes


def test_a_deleted_entry_is_named(sealed_export, tmp_path):
    lines = list(sealed_export)
    i, entry = _entries(lines)[123]
    del lines[i]
    done = _verify(tmp_path, lines)
    assert done.returncode == 1
    assert f"entry {entry['id']} sealed by seal {entry['seal']} is missing" in done.stdout.splitlines()[0]


def test_two_swapped_entries_are_named(sealed_export, tmp_path):
    lines = list(sealed_export)
    (i, a), (j, b) = _entries(lines)[200:202]
    assert a["seal"] == b["seal"]
    lines[i], lines[j] = lines[j], lines[i]
    done = _verify(tmp_path, lines)
    assert done.returncode == 1
    assert (f"entries out of order in seal {a['seal']}: entry {b['id']} stands where the seal has entry {a['id']}"
            in done.stdout.splitlines()[0])


def test_a_changed_seal_hash_is_named(sealed_export, tmp_path):
    lines = list(sealed_export)
    i, entry = _entries(lines)[50]
    entry["sealed_hash"] = "ab" * 32
    lines[i] = json.dumps(entry)
    done = _verify(tmp_path, lines)
    assert done.returncode == 1
    assert f"entry {entry['id']} was altered" in done.stdout.splitlines()[0]

    lines = list(sealed_export)
    k = next(k for k, line in enumerate(lines) if '"type":"seal"' in line)
    seal = json.loads(lines[k])
    seal["chain_hash"] = "cd" * 32
    lines[k] = json.dumps(seal)
    done = _verify(tmp_path, lines)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0] == (
        f"FAIL seal {seal['id']}: its chain hash does not match the hashes of its entries and its sealed_at")
    assert f"does not follow seal {seal['id']}" in done.stdout


def test_a_seal_removed_under_a_window_header_is_not_reported_intact_without_a_caveat(sealed_export, tmp_path):
    """The header's `whole` is covered by no hash: a middle seal and its entries deleted, with the
    header turned into a window's, passes (the chain head is unchanged). Was: "verified offline:
    ... seals intact" and nothing else; now the output says what a window export cannot show."""
    lines = list(sealed_export)
    seals = [k for k, line in enumerate(lines) if '"type":"seal"' in line]
    first, second = seals[1], seals[2]
    removed = len(lines[first:second]) - 1
    del lines[first:second]
    header = json.loads(lines[0])
    lines[0] = json.dumps({**header, "whole": False, "from": "2026-01-01T00:00:00+00:00"})
    end = json.loads(lines[-1])
    lines[-1] = json.dumps({**end, "entries": end["entries"] - removed, "seals": end["seals"] - 1})
    assert _verify(tmp_path, [sealed_export[0], *lines[1:]]).returncode == 1  # as a whole export: caught
    done = _verify(tmp_path, lines, "--expect-head", json.loads(lines[seals[-1] - removed - 1])["chain_hash"])
    assert done.returncode == 0, done.stdout  # nothing in the file can tell, not even the head
    assert "a window export (its header says so)" in done.stdout and "1 gap(s) between its seals" in done.stdout
    assert json.loads(_verify(tmp_path, lines, "--json").stdout)["gaps"] == 1


def _records(lines: list[str]) -> list[dict]:
    return [json.loads(line) for line in lines]


def _lines(records: list[dict]) -> list[str]:
    return [json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in records]


def test_a_seal_range_moved_over_its_entries_is_named(sealed_export, tmp_path):
    """A seal's from_txid/to_txid are in no hash; its entries' txids are. Seal 1's to_txid and seal
    2's from_txid moved down together to the txid of seal 1's last entry: the chain still links
    (2's from = 1's to) and every hash holds, so the file verified. Seal 1 holds entries 1-300,
    written 150 a transaction (chunk=150, seal_every=300): two txids, and the second (T), entries'
    151-300, now lies past [from, T): those 150 are named. The database reads a seal's entries by
    its range, so `audit verify` there names them too (as missing from the seal)."""
    records = _records(sealed_export)
    seals = [r for r in records if r["type"] == "seal"]
    last = next(r for r in records if r["type"] == "entry" and r["id"] == seals[0]["entry_ids"][-1])
    moved = last["txid"]
    assert int(seals[0]["from_txid"]) < int(moved) < int(seals[0]["to_txid"])
    seals[0]["to_txid"] = seals[1]["from_txid"] = moved
    done = _verify(tmp_path, _lines(records), "--json")
    report = json.loads(done.stdout)
    assert done.returncode == 1, done.stdout
    outside = [r["id"] for r in records if r["type"] == "entry" and r["txid"] == moved]
    assert (outside[0], outside[-1], len(outside), last["id"]) == (151, 300, 150, 300)
    assert report["problem_count"] == 150, report["problems"]
    assert report["problems"][0] == (f"entry 151 has txid {moved}, outside seal {seals[0]['id']}'s range "
                                     f"[{seals[0]['from_txid']}, {moved})")


def test_unsealed_entries_taken_into_the_last_seal_s_range_are_named(sealed_export, tmp_path):
    """The last seal's to_txid and the unsealed record's from_txid raised past every unsealed
    entry's txid: the 30 unsealed entries then lay inside a sealed range, which no hash covers,
    and the file verified. Each of the 30 is named (the database says 'appeared inside sealed range')."""
    records = _records(sealed_export)
    seal = [r for r in records if r["type"] == "seal"][-1]
    unsealed = next(r for r in records if r["type"] == "unsealed")
    loose = [r for r in records if r["type"] == "entry" and r["seal"] is None]
    assert len(loose) == 30
    high = str(max(int(r["txid"]) for r in loose) + 1)
    seal["to_txid"] = unsealed["from_txid"] = high
    report = json.loads(_verify(tmp_path, _lines(records), "--json").stdout)
    assert report["problem_count"] == 30, report["problems"]
    assert report["problems"][0] == (f"entry {loose[0]['id']} lies among the unsealed entries, but its txid "
                                     f"{loose[0]['txid']} is below {high}, where they start")


def test_the_end_record_s_seal_and_unsealed_counts_are_checked(sealed_export, tmp_path):
    """The end record says 900 entries, S seals, 30 unsealed; only `entries` was compared. Seals
    +1 and unsealed 0 (entries kept at 900): each is named."""
    records = _records(sealed_export)
    end = records[-1]
    seals = sum(r["type"] == "seal" for r in records)
    assert (end["entries"], end["seals"], end["unsealed"]) == (900, seals, 30)
    end["seals"], end["unsealed"] = seals + 1, 0
    report = json.loads(_verify(tmp_path, _lines(records), "--json").stdout)
    assert report["problems"] == [f"the end record counts {seals + 1} seals, the file holds {seals}",
                                  "the end record counts 0 unsealed entries, the file holds 30"]


def _account_edited(sealed_export, code_part: str, **fields) -> tuple[dict, dict]:
    records = _records(sealed_export)
    account = next(r for r in records if r["type"] == "account" and code_part in r["code"])
    before = dict(account)
    account.update(fields)
    return before, records


def test_an_account_s_type_scale_or_customer_edited_is_named(sealed_export, tmp_path):
    """An account record's account_type, scale and customer_id are in no hash; the file verified
    with any of them changed. Each is now checked against what the code and asset fix: the type is
    the code's first part (liability:customer:cust-0:lot:main is a liability), every account of an
    asset has that asset's scale (USD: 9), a customer account's code names its customer, and an
    entry posts only to its own customer's accounts (as `audit verify` checks in the database)."""
    lot = "liability:customer:cust-0:lot:main"
    before, records = _account_edited(sealed_export, lot, account_type="asset")
    assert before == {"type": "account", "code": lot, "account_type": "liability", "asset": "USD", "scale": 9,
                      "customer_id": "cust-0"}
    report = json.loads(_verify(tmp_path, _lines(records), "--json").stdout)
    assert report["problems"] == [f"account {lot} is of type asset, but its code says liability"]

    _, records = _account_edited(sealed_export, lot, scale=2)
    report = json.loads(_verify(tmp_path, _lines(records), "--json").stdout)
    assert report["problems"] == [f"account {lot} has scale 2, another account in USD has 9"]

    _, records = _account_edited(sealed_export, lot, customer_id="cust-1")
    report = json.loads(_verify(tmp_path, _lines(records), "--json").stdout)
    assert report["problems"][0] == f"account {lot} is of customer cust-1, but its code names another"
    first = next(r for r in records if r["type"] == "entry" and any(p[1] == lot for p in r["postings"]))
    assert (f"entry {first['id']} (customer cust-0) posts to account {lot} of customer cust-1"
            in report["problems"]), report["problems"]

    cash = "asset:platform:cash:USD"
    _, records = _account_edited(sealed_export, cash, customer_id="cust-1")
    report = json.loads(_verify(tmp_path, _lines(records), "--json").stdout)
    first = next(r for r in records if r["type"] == "entry" and r["customer_id"] != "cust-1"
                 and any(p[1] == cash for p in r["postings"]))
    assert report["problems"][0] == (f"entry {first['id']} (customer {first['customer_id']}) posts to account "
                                     f"{cash} of customer cust-1")


def test_a_cut_short_export_fails(sealed_export, tmp_path):
    done = _verify(tmp_path, sealed_export[:-40])
    assert done.returncode == 1
    assert "cut short" in done.stdout


def test_an_entry_sealed_after_entries_with_higher_ids_is_written_under_its_own_seal(scratch_url, tmp_path):
    """Ids are drawn before commit: entries 3-5 (lower ids) commit after entries 6-8 have been
    sealed, so the second seal holds higher ids than the third. The export writes each entry
    under the seal that covers its transaction, in id order within it, and it verifies offline."""
    import asyncio

    import psycopg

    from api.bench.synthetic import _CHUNK_SQL, CURRENCY, START
    from ledger.seal import seal_once
    from wallets import chart

    async def on_db(step):
        db = connect(scratch_url, pool_size=1)
        try:
            return await step(db)
        finally:
            await db.dispose()

    asyncio.run(on_db(lambda db: build_ledger(db, 3, customers=1)))  # entries 0-2, seal 1
    codes = {"cash": chart.cash_account(CURRENCY), "revenue": chart.revenue_account(CURRENCY),
             "lot": chart.lot_account("{cid}", "main"), "reserved": chart.reserved_account("{cid}")}
    late, early = psycopg.connect(scratch_url), psycopg.connect(scratch_url)
    try:
        for conn in (early, late):  # no posting triggers: the two would wait on each other's balance rows
            conn.execute("SET LOCAL session_replication_role = replica")
        early.execute("SELECT pg_current_xact_id()")  # the lower txid, for entries 6-8
        late.execute("SELECT pg_current_xact_id()")
        late.execute(_CHUNK_SQL, {"customers": 1, "lo": 3, "hi": 6, "start": START, **codes})  # lower ids
        early.execute(_CHUNK_SQL, {"customers": 1, "lo": 6, "hi": 9, "start": START, **codes})
        early.commit()
        assert asyncio.run(on_db(lambda db: db.run(seal_once))) is not None  # stops below `late`'s txid
        late.commit()
        assert asyncio.run(on_db(lambda db: db.run(seal_once))) is not None
    finally:
        late.close()
        early.close()

    path = tmp_path / "crossed.jsonl"
    done = cli(scratch_url, "export", "--format", "jsonl", "--out", str(path))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in path.read_text().splitlines()]
    under: dict[int, list[str]] = defaultdict(list)
    current = None
    for r in records:
        if r["type"] == "seal":
            current = r["id"]
        elif r["type"] == "entry":
            assert r["seal"] == current
            under[current].append(r["key"])
    seals = [r for r in records if r["type"] == "seal"]
    assert [under[s["id"]] for s in seals] == [["syn:0", "syn:1", "syn:2"], ["syn:6", "syn:7", "syn:8"],
                                               ["syn:3", "syn:4", "syn:5"]]
    ids = [[e["id"] for e in records if e["type"] == "entry" and e["seal"] == s["id"]] for s in seals]
    assert ids[1] == sorted(ids[1]) and max(ids[2]) < min(ids[1])
    assert [s["entry_ids"] for s in seals] == ids
    verified = _verify(tmp_path, [line for line in path.read_text().splitlines()])
    assert verified.returncode == 0, verified.stdout


@pytest.fixture(scope="module")
def large(server_url):
    """Two top-ups near the API's 1e9 USD limit (whole cents, as cash must be) and one call of a
    billionth of a dollar, which the first lot pays: it holds 123456789.119999999 (18 significant
    digits). Returns the trial balance."""
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_large")
    url = next(gen)
    try:
        with serving(url, ADMIN) as tt:
            tt.post("/v1/price-books", {"id": "plain", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "in", "model": "m", "token_type": "input",
                                                   "price": "0.001"}]})  # per 1M tokens: $0.000000001 a token
            tt.post("/v1/customers", {"id": "whale", "currency": "USD", "price_book": "plain"})
            for amount in ("123456789.12", "987654321.98"):
                tt.post("/v1/customers/whale/topups", {"amount": amount})
            tt.post("/v1/usage-events", [{"event_id": "one-token", "customer_id": "whale", "model": "m",
                                          "timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                                          "usage": {"input_tokens": 1}}])
            yield url, tt.get("/v1/audit/trial-balance")
    finally:
        gen.close()


def test_large_amounts_are_exported_exactly(large, tmp_path):
    """Was: amounts were divided by 10^scale with PostgreSQL's default precision (16 significant
    digits), so 123456789.123456789 USD came out as 123456789.123456790 in CSV and Beancount."""
    url, trial = large
    expected = _trial(trial)
    assert expected["asset:platform:cash:USD"] == Decimal("1111111111.10")
    assert Decimal("-123456789.119999999") in expected.values()  # the first lot paid the one-token call
    out = tmp_path / "large.csv"
    assert cli(url, "export", "--format", "csv", "--out", str(out)).returncode == 0
    with out.open(newline="") as f:
        amounts = sorted(Decimal(r["amount"]) for r in csv.DictReader(f) if r["account"] == "asset:platform:cash:USD")
    assert amounts == [Decimal("123456789.12"), Decimal("987654321.98")]
    for window in ([], ["--from", "2000-01-01"], ["--from", "9000-01-01"]):  # the last: all in the opening
        bean = tmp_path / "large.beancount"
        assert cli(url, "export", "--format", "beancount", "--out", str(bean), *window).returncode == 0
        found = _bean_balances(bean)
        assert {code: found.get(code, Decimal(0)) for code in expected} == expected, window


def test_a_request_id_a_spreadsheet_would_run_is_exported_to_csv_as_text(server_url, tmp_path):
    """A request id is the caller's text: '=HYPERLINK(...)' opened in a spreadsheet from the CSV
    export ran as a formula (OWASP's CSV injection). It is written after a ', while amounts keep
    their sign and jsonl keeps the id exactly."""
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_formulas")
    url = next(gen)
    ids = ['=HYPERLINK("http://example.invalid","x")', "-2+3", "+1", "@SUM(A1)", "plain-1"]
    try:
        with serving(url, ADMIN) as tt:
            tt.post("/v1/price-books", {"id": "plain", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "call", "token_type": "request", "price": "0.01"},
                                                  {"id": "in", "model": "m", "token_type": "input", "price": "1.00"}]})
            tt.post("/v1/customers", {"id": "sheet", "currency": "USD", "price_book": "plain"})
            tt.post("/v1/customers/sheet/topups", {"amount": "10.00"})
            for rid in ids:
                tt.post("/v1/reservations", {"customer_id": "sheet", "request_id": rid, "model": "m", "amount": "0.10"})
        out = tmp_path / "sheet.csv"
        assert cli(url, "export", "--format", "csv", "--out", str(out)).returncode == 0
        with out.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert {r["request_id"] for r in rows if r["request_id"]} == {
            '\'=HYPERLINK("http://example.invalid","x")', "'-2+3", "'+1", "'@SUM(A1)", "plain-1"}
        assert any(r["amount"].startswith("-") for r in rows)  # a figure is not text: its sign stays
        jsonl = cli(url, "export", "--format", "jsonl").stdout
        assert all(json.dumps(rid) in jsonl for rid in ids)
    finally:
        gen.close()


def test_an_export_to_stdout_is_the_same_utf8_bytes_as_to_a_file_whatever_the_locale(server_url, tmp_path):
    """`tokentill audit export > FILE` under a locale whose encoding is not UTF-8 (PYTHONIOENCODING
    stands in for it) stopped with a UnicodeEncodeError traceback at the first request id it could
    not encode, leaving a file cut short; stdout now gets the UTF-8 bytes `--out` writes."""
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_stdout")
    url = next(gen)
    # (a request id with CR and LF, "cr\\rlf\\r\\n", was here too: the API refuses it since d577d233, and
    # a line break's bytes in an export are kept in test_export_csv_row_count, written as before the rule)
    ids = ["caf\u00e9-\U0001f600", "plain"]
    try:
        with serving(url, ADMIN) as tt:
            tt.post("/v1/price-books", {"id": "plain", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "call", "token_type": "request", "price": "0.01"},
                                                  {"id": "in", "model": "m", "token_type": "input", "price": "1.00"}]})
            tt.post("/v1/customers", {"id": "bytes", "currency": "USD", "price_book": "plain"})
            tt.post("/v1/customers/bytes/topups", {"amount": "10.00"})
            for rid in ids:
                tt.post("/v1/reservations", {"customer_id": "bytes", "request_id": rid, "model": "m", "amount": "0.10"})
        env = {**os.environ, "TOKENTILL_DATABASE_URL": url, "PYTHONIOENCODING": "ascii"}
        for fmt in ("csv", "beancount"):
            out = tmp_path / f"export.{fmt}"
            assert cli(url, "export", "--format", fmt, "--out", str(out)).returncode == 0
            piped = subprocess.run([sys.executable, "-m", "api.cli", "audit", "export", "--format", fmt], env=env,
                                   capture_output=True, timeout=300)
            assert piped.returncode == 0, piped.stderr.decode(errors="replace")
            assert piped.stdout == out.read_bytes(), fmt
            assert "caf\u00e9-\U0001f600".encode() in piped.stdout
        gone = subprocess.Popen([sys.executable, "-m", "api.cli", "audit", "export", "--format", "jsonl"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        gone.stdout.close()  # a reader gone before the first line: one line, not a traceback
        err = gone.stderr.read()
        assert gone.wait() == 2 and err.strip() == "error: cannot write to stdout: Broken pipe", err
    finally:
        gen.close()


def _names(path: Path) -> dict[str, str]:
    """Account code -> its name in a Beancount export, from the open directives."""
    entries, errors, _ = loader.load_file(str(path))
    assert errors == []
    return {e.meta["code"]: e.account for e in entries if isinstance(e, data.Open)}


def test_a_customer_s_account_names_do_not_change_when_another_customer_is_created(server_url, tmp_path):
    """Customer `a_b`'s receivable was `Assets:Customer:A-b:Receivable` until a customer `a-b` was
    created; the next export named it `...:Receivable-6f94698c`, so an auditor carrying balances
    from one export to the next lost the match. A name now follows from its own code alone: the
    same in every export, whole or windowed, and `a-b` (exact) keeps the plain name."""
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_names")
    url = next(gen)
    try:
        with serving(url, ADMIN) as tt:
            tt.post("/v1/price-books", {"id": "plain", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "call", "token_type": "request", "price": "0.01"}]})
            tt.post("/v1/customers", {"id": "a_b", "currency": "USD", "price_book": "plain"})
            tt.post("/v1/customers/a_b/topups", {"amount": "10.00"})
            before = tmp_path / "before.beancount"
            assert cli(url, "export", "--format", "beancount", "--out", str(before)).returncode == 0
            tt.post("/v1/customers", {"id": "a-b", "currency": "USD", "price_book": "plain"})
            tt.post("/v1/customers/a-b/topups", {"amount": "5.00"})
        exports = {"before": before}
        for name, window in (("after", []), ("window", ["--from", "2000-01-01", "--to", "2999-01-01"]),
                             ("later", ["--from", datetime.now(UTC).isoformat()])):
            exports[name] = tmp_path / f"{name}.beancount"
            assert cli(url, "export", "--format", "beancount", "--out", str(exports[name]), *window).returncode == 0
        for path in exports.values():
            check = subprocess.run(["bean-check", str(path)], capture_output=True, text=True, timeout=300)
            assert check.returncode == 0 and not check.stdout + check.stderr, check.stdout + check.stderr
        names = {name: _names(path) for name, path in exports.items()}
        ours = {code: n for code, n in names["before"].items() if ":a_b:" in code}
        # `_` is lost in `A-b`, so each of a_b's names carries 8 hex digits of its own code's sha256
        assert ours["asset:customer:a_b:receivable"] == "Assets:Customer:A-b:Receivable--e585fde8"
        assert all(n == f"{n.split('--')[0]}--{hashlib.sha256(code.encode()).hexdigest()[:8]}"
                   for code, n in ours.items()) and len(ours) == 3  # reserved, receivable, the top-up's lot
        for name in ("after", "window", "later"):
            assert {code: names[name][code] for code in ours} == ours, name
            assert names[name] == names["after"], name  # every account named alike in every export
        theirs = {code: n for code, n in names["after"].items() if ":a-b:" in code}
        assert theirs and not set(theirs.values()) & set(ours.values())
    finally:
        gen.close()


def test_two_codes_whose_beancount_names_would_clash_stop_only_the_beancount_export(server_url, tmp_path):
    """Two lossy codes that sanitize alike and whose sha256 both begin 9045347d (found by trying
    codes of `_` and `.`) would share a Beancount name: that export stops with both codes named
    and no file, while csv and jsonl, which need no Beancount names, still export them."""
    from tests.conftest import _migrated

    gen = _migrated(server_url, "tokentill_export_clash")
    url = next(gen)
    one, two = "asset:.___.___...._.____", "asset:.._._.._.___...._."
    try:
        with serving(url, ADMIN) as tt:
            tt.post("/v1/price-books", {"id": "plain", "currency": "USD", "effective_from": "2026-01-01T00:00:00Z",
                                        "rules": [{"id": "call", "token_type": "request", "price": "0.01"}]})
            tt.post("/v1/customers", {"id": "clash", "currency": "USD", "price_book": "plain"})
        import psycopg

        with psycopg.connect(url) as conn:
            for code in (one, two):
                conn.execute("INSERT INTO accounts (code, type, asset) VALUES (%s, 'asset', 'USD')", (code,))
        for fmt in ("csv", "jsonl"):
            done = cli(url, "export", "--format", fmt, "--out", str(tmp_path / f"clash.{fmt}"))
            assert done.returncode == 0, done.stderr
        assert all(json.dumps(code) in (tmp_path / "clash.jsonl").read_text() for code in (one, two))
        out = tmp_path / "clash.beancount"
        done = cli(url, "export", "--format", "beancount", "--out", str(out))
        # named in code order: `.` (0x2e) before `_` (0x5f) in the second character
        assert (done.returncode, done.stderr) == (1, f"error: accounts {two!r} and {one!r} would share the "
                                                     f"Beancount name 'Assets:X------------------{'--'}9045347d'\n")
        assert not out.exists()
    finally:
        gen.close()
