"""An operator's upgrade: a database created and used at an older revision, `tokentill migrate`
to head, and every entry and balance is still there, `audit verify` passes; then down to the old
revision again (the migrations support it) with nothing lost, and up once more.

The data (tests/integration/upgrades/<revision>.sql.gz) was made by the tokentill of that time:
the commit before the next migration landed (0008: 6e24217^, 0016: 609cb0a^, 0023: 53e2659^,
0029: 217ebfa^, 0038: abc93d7^, 0047: 1c6948d^) served on an empty database (TOKENTILL_LANES=4),
filled through its HTTP API by upgrades/fill.py (six prepaid customers each topped up $20.00 and
granted $1.50 of promotion, six reservations each: three settled, one released, two left open;
three usage events; from 0017 on two postpaid customers with a closed period, one invoice paid;
0038's another workload, fill.py's fill_late; 0047's fill_late and fill_revoked), checked with
that version's `tokentill audit verify`, then dumped: `pg_dump --data-only --inserts -T alembic_version`.
The test builds that revision's schema with today's migrations (identical files), loads the data
with triggers off (session_replication_role: a superuser, as the embedded cluster's is), and moves
the cluster's transaction ids past those the data recorded (README, Backups)."""
from __future__ import annotations

import asyncio
import gzip
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, NullPool, create_engine, text

from api.bench.common import scratch_database
from api.cli import main
from api.runtime import sync_url
from migrations import runner
from tests.api.apps import api_client
from tests.webhook_receiver import receiver
from wallets.webhooks.rules import AddressPolicy, parse_networks

DATA = Path(__file__).parent / "upgrades"
USD = 10**9  # atomic units of a dollar (scale 9)
LOOPBACK = AddressPolicy(parse_networks("127.0.0.0/8"))  # the receiver listens there


def _load(url: str, revision: str) -> None:
    dump = gzip.decompress((DATA / f"{revision}.sql.gz").read_bytes()).decode()
    # Not the dump's empty search_path: the lane functions that column defaults call name others unqualified.
    sql = dump.replace("SELECT pg_catalog.set_config('search_path', '', false);", "")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("SET session_replication_role = replica")
            # What the migrations wrote (the lane count, platform rows) comes back with the data.
            tables = conn.execute(text("SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables "
                                       "WHERE schemaname = 'public' AND tablename <> 'alembic_version'")).scalar_one()
            conn.exec_driver_sql(f"TRUNCATE {tables}")
            conn.exec_driver_sql(sql)
        # The data came from another cluster, whose transaction ids ran ahead: move this one's past
        # them, as README's Backups says (pg_resetwal cannot move a shared cluster's)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            try:
                runner.check_transaction_ids(conn)
            except runner.TransactionIdsBehind as behind:
                conn.exec_driver_sql(f"DO $$ BEGIN WHILE pg_current_xact_id() <= '{behind.recorded}'::xid8 LOOP "
                                     "COMMIT; END LOOP; END $$")
    finally:
        engine.dispose()


def _books(conn: Connection) -> dict[str, int]:
    """What the ledger holds, in terms every revision has: entries, postings, each account's
    balance from its postings, reservations by status."""
    rows = conn.execute(text("""
        SELECT 'entries', count(*) FROM journal_entries
        UNION ALL SELECT 'postings', count(*) FROM postings
        UNION ALL SELECT 'account ' || a.code, sum(p.amount) FROM postings p JOIN accounts a ON a.id = p.account_id
                   GROUP BY a.code
        UNION ALL SELECT 'reservations ' || status::text, count(*) FROM reservations GROUP BY status""")).all()
    return {name: int(value) for name, value in rows}


def _migrate(conn: Connection, revision: str, *, down: bool = False) -> None:
    config = runner.alembic_config()
    config.attributes["connection"] = conn
    config.attributes["lanes"] = 4  # what the data was made with (0009 creates them for 0008's)
    (command.downgrade if down else command.upgrade)(config, revision)
    conn.commit()


@pytest.mark.parametrize("revision", ["0008", "0016", "0023", "0029"])
def test_a_database_used_at_an_older_revision_upgrades_to_head_whole_and_back(revision, server_url, monkeypatch,
                                                                              capsys):
    with scratch_database(server_url, f"tokentill_upgrade_{uuid.uuid4().hex[:10]}") as url:
        engine = create_engine(sync_url(url))
        try:
            with engine.connect() as conn:
                _migrate(conn, revision)
                _load(sync_url(url), revision)
                before = _books(conn)
                conn.commit()

            # What the data says, worked out from how it was made (not from the code).
            paid = revision >= "0017"
            assert before["account asset:platform:cash:USD"] == 120 * USD + (24 * USD // 100 if paid else 0)
            assert before["account expense:platform:promotions:USD"] == 6 * 150 * USD // 100
            for n in range(6):  # two open holds of $0.03 each: 1,000 x $10/M + 500 x $20/M + $0.01
                assert before[f"account liability:customer:cust{n}:reserved"] == -2 * 3 * USD // 100
            assert (before["reservations held"], before["reservations settled"], before["reservations released"]) \
                == (12, 18, 6)
            assert sum(v for k, v in before.items() if k.startswith("account ")) == 0

            monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
            assert main(["migrate"]) == 0
            assert capsys.readouterr().out.strip() == f"migrated to {runner.head_revision()}"
            assert main(["audit", "verify"]) == 0, capsys.readouterr().out
            with engine.connect() as conn:
                assert runner.current_revision(conn) == runner.head_revision()
                assert _books(conn) == before
                conn.commit()

                _migrate(conn, revision, down=True)
                assert runner.current_revision(conn) == revision
                assert _books(conn) == before
                conn.commit()
            capsys.readouterr()
            assert main(["migrate"]) == 0 and main(["audit", "verify"]) == 0, capsys.readouterr().out
            with engine.connect() as conn:
                assert _books(conn) == before
        finally:
            engine.dispose()


def test_usage_billed_after_its_period_closed_keeps_its_period_through_the_upgrade(server_url, monkeypatch, capsys):
    """0038's data (upgrades/fill.py, fill_late): two of post0's periods (2026-12, 2027-01) were
    closed early, at a clock 70 days ahead (invoices finalized 2027-02-13), and then usage of
    2026-12 was recorded, at 2026-12-05: each call billed in the first period still open, 2027-02
    (post1, in New York from the 15th: 2027-01), post0's paid whole by its free allowance, so no
    entry says where. The upgrade must bill each charge where its lines were rolled up."""
    with scratch_database(server_url, f"tokentill_upgrade_{uuid.uuid4().hex[:10]}") as url:
        engine = create_engine(sync_url(url))
        try:
            with engine.connect() as conn:
                _migrate(conn, "0038")
                _load(sync_url(url), "0038")
                before = _books(conn)
                # what the code of the time rolled up in post0's 2027-02: the late call's 100 input
                # tokens of 2026-12, and no other usage
                assert conn.execute(text("""
                    SELECT sum(quantity) FROM period_rollups WHERE customer_id = 'post0' AND period = '2027-02'
                       AND item LIKE 'line:["2026-12","usage","model-a","input"%'""")).scalar_one() == 100
                conn.commit()

            monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
            assert main(["migrate"]) == 0
            capsys.readouterr()
            assert main(["audit", "verify"]) == 0, capsys.readouterr().out
            with engine.connect() as conn:
                periods = dict(conn.execute(text("SELECT event_id, period FROM charges "
                                                 "WHERE event_id LIKE 'late-%' OR event_id LIKE 'free-%'")).all())
                assert periods == {"late-post0-free": "2027-02", "late-post1": "2027-01", "late-post2": "2027-02",
                                   "free-post0-0": "2026-12", "free-post0-1": "2026-12"}
                assert _books(conn) == before
                _migrate(conn, "0038", down=True)
                assert _books(conn) == before
            capsys.readouterr()
            assert main(["migrate"]) == 0 and main(["audit", "verify"]) == 0, capsys.readouterr().out
        finally:
            engine.dispose()


def _rows(conn: Connection, table: str) -> list[dict]:
    return conn.execute(text(f"SELECT to_jsonb(t) FROM {table} t ORDER BY 1::text")).scalars().all()


def _lots(conn: Connection) -> dict[str, tuple[int, bool]]:
    """rvk's lots by reason (a top-up by reference): what they hold, and whether revoked in whole."""
    rows = conn.execute(text("""
        SELECT coalesce(nullif(l.reason, ''), l.reference), -coalesce(sum(p.amount), 0)::bigint,
               coalesce((to_jsonb(l) ->> 'revoked_at') IS NOT NULL, false)
          FROM lots l LEFT JOIN postings p ON p.lane = l.lane AND p.account_id = l.account_id
         WHERE l.customer_id = 'rvk' GROUP BY l.lane, l.id""")).all()
    return {name: (held, revoked) for name, held, revoked in rows}


def test_a_database_used_at_0047_upgrades_with_its_revocations_holds_invoices_and_outbox(server_url, monkeypatch,
                                                                                        capsys):
    """0047's data (upgrades/fill.py, fill_late then fill_revoked), made by 1c6948d^ with the webhook
    dispatcher off. After `tokentill migrate` the grants its revocations left empty are closed
    (0048's backfill: "whole", and "held" with a hold still open on it; not "back", which took a
    released hold's 1.50 back, nor "part", nor a top-up), the invoices and credit notes are the
    same rows, every open hold settles or releases, and every event the outbox held is delivered
    once. Down to 0047 and up again changes nothing."""
    cents = USD // 100
    with scratch_database(server_url, f"tokentill_upgrade_{uuid.uuid4().hex[:10]}") as url:
        engine = create_engine(sync_url(url))
        try:
            with engine.connect() as conn:
                _migrate(conn, "0047")
                _load(sync_url(url), "0047")
                before, invoices, notes = _books(conn), _rows(conn, "invoices"), _rows(conn, "credit_notes")
                events = conn.execute(text("SELECT payload ->> 'id' FROM outbox WHERE delivered_at IS NULL")).scalars()
                events = sorted(events)
                assert _lots(conn) == {"whole": (0, False), "held": (0, False), "back": (140 * cents, False),
                                       "part": (150 * cents, False), "ch_rvk_1": (2000 * cents, False),
                                       "ch_rvk_2": (0, False)}
                conn.commit()
            assert len(events) == 24 and None not in events and len(set(events)) == 24

            monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
            assert main(["migrate"]) == 0
            assert main(["audit", "verify"]) == 0, capsys.readouterr().out
            with engine.connect() as conn:
                assert _books(conn) == before
                assert (_rows(conn, "invoices"), _rows(conn, "credit_notes")) == (invoices, notes)
                assert {name for name, (_, revoked) in _lots(conn).items() if revoked} == {"whole", "held"}
                held = dict(conn.execute(text("SELECT request_id, id FROM reservations WHERE status <> 'settled' "
                                              "AND status <> 'released'")).all())
                conn.commit()
            assert set(held) == {"rvk-held", "rvk-cap", "req-cust0-2", "req-cust1-2"}

            asyncio.run(_close_holds_and_deliver(url, engine, held, events))

            with engine.connect() as conn:
                lots, after = _lots(conn), _books(conn)
                # rvk-cap: model-a input at $8/M (fill_late's later version), output $20/M, $0.01 a call
                # once: 0.008 + 0.002 + 0.01 captured at 0047, 0.008 + 0.002 now; 0.07 of its 0.10 back
                assert lots["held"] == (0, True) and lots["back"] == (147 * cents, False)
                conn.commit()
                _migrate(conn, "0047", down=True)
                assert _books(conn) == after
                conn.commit()
            capsys.readouterr()
            assert main(["migrate"]) == 0 and main(["audit", "verify"]) == 0, capsys.readouterr().out
            with engine.connect() as conn:
                assert _books(conn) == after and _lots(conn) == lots
        finally:
            engine.dispose()


async def _close_holds_and_deliver(url: str, engine: Engine, held: dict[str, str], events: list[str]) -> None:
    """After the upgrade: the open holds release or settle, every event the outbox held arrives once."""
    with receiver() as hook:
        async with api_client(url, admin="up-admin", send_admin=True, webhook_poll_s=0.05,
                              webhook_addresses=LOOPBACK) as c:
            with engine.begin() as conn:  # the receiver stands in for the endpoint's host
                conn.execute(text("UPDATE webhook_endpoints SET url = :url "
                                  "WHERE url = 'https://hooks.example.com/a'"), {"url": hook.url})
            available = (await c.get("/v1/customers/rvk/wallet")).json()["available"]
            released = await c.post(f"/v1/reservations/{held['rvk-held']}/release", json={})
            assert released.status_code == 200 and released.json()["released"] == "2.00", released.text
            # what the hold drew from the closed grant "held" is revoked again, not spendable
            assert (await c.get("/v1/customers/rvk/wallet")).json()["available"] == available
            for request_id in ("rvk-cap", "req-cust0-2", "req-cust1-2"):
                settled = await c.post(f"/v1/reservations/{held[request_id]}/settle",
                                       json={"usage": {"input_tokens": 1000, "output_tokens": 100}})
                assert (settled.status_code, settled.json()["status"]) == (200, "settled"), settled.text
            await hook.wait_for(lambda r: r.webhook_id in events, count=len(events))
            await asyncio.sleep(0.5)  # time for any second copy to arrive
            got = sorted(r.webhook_id for r in hook.of(lambda r: r.webhook_id in events))
            assert got == events
            verify = (await c.post("/v1/audit/verify")).json()
            assert verify["ok"], [x for x in verify["checks"] if not x["ok"]]


def test_a_downgrade_that_refuses_leaves_the_database_where_it_was_in_one_line(server_url, monkeypatch, capsys):
    """0038's data holds re-rates that changed who pays charges, which 0037's downgrade refuses to
    lose. `tokentill migrate --to 0032` from head undid 0049-0038 one by one, each committed, then
    stopped at 0037 with a 100-line traceback: the database left at neither revision, what
    0038-0049 added gone (plain `alembic downgrade` the same). Now a move down is one transaction:
    refused, the database is still at head, and the command says why in one line."""
    with scratch_database(server_url, f"tokentill_upgrade_{uuid.uuid4().hex[:10]}") as url:
        engine = create_engine(sync_url(url))
        try:
            with engine.connect() as conn:
                _migrate(conn, "0038")
                _load(sync_url(url), "0038")
            monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
            assert main(["migrate"]) == 0
            with engine.connect() as conn:
                before = _books(conn), _rows(conn, "lots"), _rows(conn, "customer_changes")
                conn.commit()
            capsys.readouterr()
            with pytest.raises(SystemExit) as refused:
                main(["migrate", "--to", "0032"])
            assert refused.value.code == (
                "error: cannot migrate the database down to 0032: re-rates changed who pays charges, not their "
                f"amounts: a downgrade below 0037 would lose them; it is still at {runner.head_revision()}")
            # plain `alembic downgrade`, from the checkout's root, the same
            done = subprocess.run([sys.executable, "-m", "alembic", "downgrade", "0032"], capture_output=True,
                                  text=True, cwd=Path(runner.__file__).resolve().parent.parent, timeout=120,
                                  env={**os.environ, "TOKENTILL_DATABASE_URL": url})
            assert (done.returncode, done.stderr.strip().splitlines()[-1:]) == (1, [
                "error: cannot migrate the database down: re-rates changed who pays charges, not their amounts: "
                "a downgrade below 0037 would lose them; nothing was moved"]), done.stderr[-3000:]
            with engine.connect() as conn:
                assert runner.current_revision(conn) == runner.head_revision()
                assert (_books(conn), _rows(conn, "lots"), _rows(conn, "customer_changes")) == before
            assert main(["audit", "verify"]) == 0, capsys.readouterr().out
        finally:
            engine.dispose()


def test_a_ledger_used_at_head_goes_down_to_0047_and_back_up_with_the_same_books(server_url, monkeypatch, capsys):
    """Today's workload (prepaid, postpaid, a grant, a budget, settled and open calls, a usage
    event, a grant reversed) at head; `tokentill migrate --to 0047` then `tokentill migrate`: the
    same wallets, trial balance and journal, `audit verify` ok, and a reserve and settle work."""
    from api.client import Client
    from tests.api.apps import live_server
    from tests.integration.test_backup_restore import ADMIN, _seed, _views

    with scratch_database(server_url, f"tokentill_roundtrip_{uuid.uuid4().hex[:10]}") as url:
        monkeypatch.setenv("TOKENTILL_DATABASE_URL", url)
        assert main(["migrate"]) == 0
        with live_server(url, admin=ADMIN) as base, Client(base, ADMIN) as tt:
            _seed(tt)
            grant = next(g for g in tt.get("/v1/customers/acme/wallet")["grants"] if g["kind"] == "grant")
            tt.post(f"/v1/customers/acme/grants/{grant['id']}/reverse", {"amount": "1.00"})
            before = _views(tt)
        capsys.readouterr()
        assert main(["migrate", "--to", "0047"]) == 0
        assert capsys.readouterr().out.strip() == "migrated to 0047"
        assert main(["migrate"]) == 0
        assert capsys.readouterr().out.strip() == f"migrated to {runner.head_revision()}"
        with live_server(url, admin=ADMIN) as base, Client(base, ADMIN) as tt:
            assert _views(tt) == before
            held = tt.post("/v1/reservations", {"customer_id": "acme", "request_id": "after-round-trip",
                                                "model": "model-a",
                                                "estimate": {"input_tokens": 1000, "max_output_tokens": 500}})
            tt.settle(held["id"], usage={"input_tokens": 1000, "output_tokens": 400})
        assert main(["audit", "verify"]) == 0, capsys.readouterr().out
