"""The SDK's spool file: durable appends, torn lines, atomic removal, one flusher at a time."""
from __future__ import annotations

import os
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import platformdirs
import pytest

from api.spool import Spool, SpoolRecord, spool_dir, spool_name


def record(n: int, reservation: str = "res_1") -> SpoolRecord:
    return SpoolRecord("POST", f"/v1/reservations/{reservation}/settle",
                       {"usage": {"input_tokens": n, "output_tokens": 1}, "final": True},
                       f"{reservation}:settle:{n}", reservation, "http://127.0.0.1:8000", "key_0123",
                       spooled_at="2026-01-02T03:04:05+00:00")


def test_a_record_round_trips_with_everything_needed_to_send_it_again(tmp_path):
    spool = Spool(tmp_path / "spool" / "a.jsonl")
    spool.append(record(7))
    spool.append(SpoolRecord("POST", "/v1/reservations/res_2/release", {}, "res_2:release:0", "res_2", "http://x"))
    back, fresh = spool.records()
    assert back == record(7)
    assert (back.method, back.path, back.idempotency_key, back.reservation_id) == (
        "POST", "/v1/reservations/res_1/settle", "res_1:settle:7", "res_1")
    assert back.body == {"usage": {"input_tokens": 7, "output_tokens": 1}, "final": True}
    assert abs(datetime.fromisoformat(fresh.spooled_at) - datetime.now(UTC)) < timedelta(seconds=5)
    assert fresh.key_id is None
    assert stat.S_IMODE(spool.path.stat().st_mode) == 0o600, "request bodies are the owner's alone"


def test_a_torn_last_line_is_ignored_and_the_next_append_starts_a_line_of_its_own(tmp_path):
    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1))
    with open(spool.path, "ab") as f:  # a crash in the middle of writing record 2
        f.write(record(2).line()[:40])
    assert spool.records() == [record(1)]
    spool.append(record(3))
    assert spool.records() == [record(1), record(3)]


def test_removing_records_replaces_the_file_and_removing_the_last_deletes_it(tmp_path):
    spool = Spool(tmp_path / "a.jsonl")
    for n in (1, 2, 3):
        spool.append(record(n))
    inode = spool.path.stat().st_ino
    assert spool.remove({"res_1:settle:2"}) == 2
    assert spool.records() == [record(1), record(3)]
    assert spool.path.stat().st_ino != inode, "rewritten to a new file and renamed over the old one"
    assert not list(tmp_path.glob("*.tmp"))
    assert spool.remove({"res_1:settle:1", "res_1:settle:3"}) == 0
    assert not spool.path.exists()


def test_a_flush_stops_at_an_unreachable_server_and_keeps_what_it_did_not_deliver(tmp_path):
    spool = Spool(tmp_path / "a.jsonl")
    for n in (1, 2, 3, 4):
        spool.append(record(n))
    answers = iter([("delivered", "200"), ("kept", "401 unauthorized"), ("unreachable", "ConnectError")])
    report = spool.flush(lambda r: next(answers))
    assert (report.delivered, report.rejected, report.kept) == (1, 0, 3)
    assert spool.records() == [record(2), record(3), record(4)]


def test_a_refused_record_leaves_the_spool_for_the_rejected_file(tmp_path):
    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1))
    spool.append(record(2))
    report = spool.flush(lambda r: ("rejected", "422 validation_error") if r == record(1) else ("delivered", "200"))
    assert (report.delivered, report.rejected, report.kept) == (1, 1, 0)
    assert not spool.path.exists()
    [line] = spool.rejected_path.read_text().splitlines()
    assert '"rejected": "422 validation_error"' in line and '"res_1:settle:1"' in line


def test_two_concurrent_flushes_send_each_record_once_and_lose_none(tmp_path):
    path = tmp_path / "a.jsonl"
    for n in range(20):
        Spool(path).append(record(n))
    sent: list[str] = []
    lock = threading.Lock()

    def send(r: SpoolRecord) -> tuple[str, str]:
        time.sleep(0.005)
        with lock:
            sent.append(r.idempotency_key)
        return "delivered", "200"

    def append_more() -> None:  # a live client spooling while the flushes run
        for n in range(20, 30):
            Spool(path).append(record(n))
            time.sleep(0.004)

    threads = [threading.Thread(target=Spool(path).flush, args=(send,)) for _ in range(2)]
    threads.append(threading.Thread(target=append_more))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    left = [r.idempotency_key for r in Spool(path).records()]
    assert len(sent) == len(set(sent)), "no record was sent twice"
    assert set(sent) | set(left) == {record(n).idempotency_key for n in range(30)}, "none was lost"
    assert not set(sent) & set(left), "none delivered and kept"
    assert {record(n).idempotency_key for n in range(20)} <= set(sent)
    Spool(path).flush(send)
    assert Spool(path).records() == [] and len(sent) == 30


def test_a_flush_that_must_not_wait_skips_a_spool_another_flusher_holds(tmp_path):
    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1))
    started, release = threading.Event(), threading.Event()

    def slow(r: SpoolRecord) -> tuple[str, str]:
        started.set()
        release.wait(5)
        return "delivered", "200"

    first = threading.Thread(target=spool.flush, args=(slow,))
    first.start()
    started.wait(5)
    report = Spool(spool.path).flush(lambda r: ("delivered", "200"), wait=False)
    release.set()
    first.join()
    assert report.busy and report.delivered == 0
    assert not spool.path.exists()


def test_the_spool_dir_is_the_argument_then_the_environment_then_the_user_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TOKENTILL_SPOOL_DIR", raising=False)
    assert spool_dir() == Path(platformdirs.user_data_dir("tokentill")) / "spool"
    monkeypatch.setenv("TOKENTILL_SPOOL_DIR", str(tmp_path / "env"))
    assert spool_dir() == tmp_path / "env"
    assert spool_dir(tmp_path / "arg") == tmp_path / "arg"


def test_a_spool_name_is_one_per_server_and_key_and_never_holds_the_key():
    secret = "ttk_" + "s3cret" * 6
    name = spool_name("http://a:8000", secret)
    assert name == spool_name("http://a:8000/", secret)
    assert name != spool_name("http://b:8000", secret) != spool_name("http://a:8000", secret + "x")
    assert spool_name("http://a:8000", secret, "key_1") != spool_name("http://a:8000", secret, "key_2")
    assert "s3cret" not in name and name.endswith(".jsonl")
    assert os.sep not in name


def _delivering_replay(spool: Spool):
    """A replay of `spool` made now, whose server delivers every call (in bulk, or one by one),
    and the idempotency keys it sent, in order."""
    import httpx

    from api.client_replay import SpoolReplay
    from api.delivery import RetryPolicy

    sent: list[str] = []

    async def bulk(items):
        sent.extend(item["idempotency_key"] for item in items)
        return httpx.Response(200, json={"results": [{"status": 200, "body": {}} for _ in items]})

    async def one(record):
        sent.append(record.idempotency_key)
        return "delivered", "200"

    return SpoolReplay([spool], bulk, one, RetryPolicy(0.01, 0.01, 0.01)), sent


async def test_a_replay_sends_only_what_was_spooled_before_it_began(tmp_path):
    """A new client's replay starts on a thread of its own, and may first read the spool after the
    client's own first settle failed once and was spooled: that settle is this run's own, being
    delivered by its caller, and must not be sent again beside it (it took the answer meant for
    the caller's next attempt: test_a_settle_waits_what_retry_after_asks_up_to_its_cap, flaky)."""
    from dataclasses import replace

    def settle(n: int, at: datetime | None = None) -> SpoolRecord:
        record = SpoolRecord("POST", f"/v1/reservations/r{n}/settle", {"usage": {"input_tokens": 1}, "final": True},
                             f"r{n}:settle:0", f"r{n}", "http://tt", reason="server down")
        return record if at is None else replace(record, spooled_at=at.isoformat())

    spool = Spool(tmp_path / "s.jsonl")
    spool.append(settle(1, datetime.now(UTC) - timedelta(hours=1)))  # an earlier run's
    replay, sent = _delivering_replay(spool)
    spool.append(settle(2))  # this run's, spooled at its first failure before the replay read the file
    report = await replay.run()
    assert sent == ["r1:settle:0"] and report.delivered == 1
    assert [r.idempotency_key for r in spool.records()] == ["r2:settle:0"], "left to its caller"


async def test_a_replay_answered_by_something_else_than_the_bulk_endpoint_tries_again(tmp_path):
    """A 200 that is no `{"results": [...]}` (a proxy's page, a body cut short): the replay ended
    on the ValueError, its records left until another client started; now the round is tried
    again after a backoff, as after a connection error."""
    import httpx

    from api.client_replay import SpoolReplay
    from api.delivery import RetryPolicy

    spool = Spool(tmp_path / "s.jsonl")
    spool.append(SpoolRecord("POST", "/v1/reservations/r1/settle", {"usage": {"input_tokens": 1}, "final": True},
                             "r1:settle:0", "r1", "http://tt", spooled_at="2026-01-01T00:00:00+00:00"))
    answers = [httpx.Response(200, text="<html>portal</html>"), httpx.Response(200, json={"results": []})]

    async def bulk(items):
        if answers:
            return answers.pop(0)
        return httpx.Response(200, json={"results": [{"status": 200, "body": {}} for _ in items]})

    async def one(record):
        raise AssertionError("sent in bulk")

    report = await SpoolReplay([spool], bulk, one, RetryPolicy(0.001, 0.001, 0.001)).run()
    assert not answers and report.delivered == 1 and not spool.path.exists()


def test_a_blocking_clients_close_does_not_wait_past_its_drain_timeout_for_a_hung_replay(tmp_path):
    """The replay's bulk call is on a server that accepted it and hangs: `close()` joined the
    replay's thread until that call ended (its read timeout: 10 s by default, longer where set),
    past the `drain_timeout_s` a shutdown is sized to. Now it waits the deadline at most; the
    record stays spooled for the next client."""
    import httpx

    from api.client import Client

    spool = Spool(tmp_path / spool_name("http://tt", "key"))
    spool.append(SpoolRecord("POST", "/v1/reservations/r1/settle", {"usage": {"input_tokens": 1}, "final": True},
                             "r1:settle:0", "r1", "http://tt", spooled_at="2026-01-01T00:00:00+00:00"))
    calling, hang = threading.Event(), threading.Event()

    def server(request: httpx.Request) -> httpx.Response:
        calling.set()
        hang.wait(5)  # the call's read timeout, say
        return httpx.Response(503)

    tt = Client("http://tt", "key", transport=httpx.MockTransport(server), spool_dir=tmp_path, drain_timeout_s=0.5)
    try:
        assert calling.wait(10)
        started = time.monotonic()
        tt.close()
        assert time.monotonic() - started < 2.0
    finally:
        hang.set()
    assert [r.idempotency_key for r in spool.records()] == ["r1:settle:0"]


def test_a_removal_on_a_full_disk_keeps_every_record_and_leaves_no_temp_file(tmp_path, monkeypatch):
    """The disk fills while the spool is rewritten: the removal fails, and must leave the spool as
    it was and no half-written temp file beside it (each failed removal left one, filling the
    disk further)."""
    import errno

    import api.spool

    spool = Spool(tmp_path / "a.jsonl")
    spool.append_many([record(1), record(2)])
    real = api.spool._write_all

    def full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(api.spool, "_write_all", full)
    try:
        spool.remove({"res_1:settle:1"})
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError("the removal cannot have succeeded")
    monkeypatch.setattr(api.spool, "_write_all", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.lock"]
    assert spool.records() == [record(1), record(2)]


def test_an_append_on_a_full_disk_leaves_the_spool_as_it_was(tmp_path, monkeypatch):
    """A record half written when the disk filled is cut off again: the spool holds only whole
    records, and the next append (space freed) adds its own."""
    import errno

    import api.spool

    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1))
    before = spool.path.read_bytes()
    real = api.spool._write_all

    def full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(api.spool, "_write_all", full)
    try:
        spool.append(record(2))
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError("the append cannot have succeeded")
    monkeypatch.setattr(api.spool, "_write_all", real)
    assert spool.path.read_bytes() == before
    spool.append(record(3))
    assert spool.records() == [record(1), record(3)]


def test_a_spool_flush_goes_on_past_a_file_it_cannot_update_and_says_so(tmp_path, monkeypatch, capsys):
    """`tokentill spool flush` over a directory where one file cannot be rewritten (a full disk, a
    read-only file): it stopped at that file with a traceback, and the other files were never sent.
    Now each file is flushed on its own, the failure named on its line, and the exit status is 1."""
    import errno

    import api.cli
    import api.client

    broken, fine = Spool(tmp_path / "a.jsonl"), Spool(tmp_path / "b.jsonl")
    broken.append(record(1, "res_a"))
    fine.append(record(2, "res_b"))
    sent: list[str] = []

    def resend(self, record: SpoolRecord) -> tuple[str, str]:
        sent.append(record.reservation_id)
        return "delivered", "200"

    real_remove = Spool.remove

    def remove(self, keys, rejected=()):
        if self.path == broken.path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_remove(self, keys, rejected)

    monkeypatch.setattr(api.client.Client, "resend", resend)
    monkeypatch.setattr(Spool, "remove", remove)
    status = api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "k"])
    out = capsys.readouterr().out
    assert status == 1 and sent == ["res_a", "res_b"]
    assert f"{broken.path}: not flushed: " in out and "No space left on device" in out
    assert f"{fine.path}: delivered 1, refused 0, left 0" in out
    assert not fine.path.exists() and broken.records() == [record(1, "res_a")]


def test_a_spool_file_that_is_a_symlink_is_refused_and_what_it_points_at_is_left_alone(tmp_path):
    """In a spool directory others may write (TOKENTILL_SPOOL_DIR on a shared path), a spool
    file, its lock or its `.rejected` planted as a link would have each record appended to (or a
    file made at) whatever it names, as the user the SDK or the gateway runs as."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    spool = Spool(tmp_path / "spool" / "x.jsonl")
    spool.path.parent.mkdir()
    spool.path.symlink_to(victim)
    try:
        spool.append(record(1))
    except OSError:
        pass
    else:
        raise AssertionError("appended through a symlink")
    assert victim.read_bytes() == b"precious\n"

    spool.path.unlink()
    spool.append(record(1))
    spool.rejected_path.symlink_to(victim)
    try:
        spool.remove({record(1).idempotency_key}, [(record(1), "refused")])
    except OSError:
        pass
    else:
        raise AssertionError("wrote a rejected record through a symlink")
    assert victim.read_bytes() == b"precious\n"

    made = tmp_path / "made-by-the-lock"
    other = Spool(tmp_path / "spool" / "y.jsonl")
    other.lock_path.symlink_to(made)
    try:
        other.append(record(2))
    except OSError:
        pass
    assert not made.exists()


def test_a_spool_flush_sends_its_key_only_to_the_server_it_was_given_for(tmp_path, monkeypatch, capsys):
    """`tokentill spool flush --key K` over a directory with the records of two servers sent K to
    both: a key made for server A went to server B, which could keep it. The key is for one
    server: the only one the spool names, else the one `--server` (or `--url`) names; the records
    of another server stay in the spool, and a spool of several servers without one named is not
    flushed at all."""
    import api.cli
    import api.client

    a, b = Spool(tmp_path / "a.jsonl"), Spool(tmp_path / "b.jsonl")
    a.append(record(1, "res_a"))
    other = record(2, "res_b")
    b.append(SpoolRecord(other.method, other.path, other.body, other.idempotency_key, other.reservation_id,
                         "https://other.example.com/", other.key_id, spooled_at=other.spooled_at))
    sent: list[tuple[str, str, str | None]] = []

    def resend(self, record: SpoolRecord) -> tuple[str, str]:
        sent.append((self._base_url, self._headers["Authorization"], record.reservation_id))
        return "delivered", "200"

    monkeypatch.setattr(api.client.Client, "resend", resend)
    status = api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "key-for-a"])
    err = capsys.readouterr().err
    assert status == 2 and sent == []  # was: 0, the key sent to both servers
    assert "http://127.0.0.1:8000" in err and "https://other.example.com" in err and "--server" in err
    assert a.records() and b.records()

    status = api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "key-for-a",
                           "--server", "http://127.0.0.1:8000/"])
    out = capsys.readouterr().out
    assert sent == [("http://127.0.0.1:8000", "Bearer key-for-a", "res_a")]
    assert status == 1 and f"{b.path}: delivered 0, refused 0, left 1" in out and "other.example.com" in out
    assert not a.path.exists() and [r.reservation_id for r in b.records()] == ["res_b"]

    sent.clear()  # the spool names one server now: the key is for it
    assert api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "key-for-b"]) == 0
    assert sent == [("https://other.example.com", "Bearer key-for-b", "res_b")] and not b.path.exists()


def test_a_spool_directory_written_with_a_tilde_is_under_the_home_directory(monkeypatch, tmp_path):
    """TOKENTILL_SPOOL_DIR=~/spool where no shell expands it (a systemd unit's Environment=, a
    Kubernetes env entry): the gateway spooled into a directory named `~` under its working
    directory, where `tokentill spool flush` run from a shell (which expands it) never looked.
    TOKENTILL_DATA_DIR's `~` was always the home directory (ledger.embedded expands it)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TOKENTILL_SPOOL_DIR", "~/spool")
    assert spool_dir() == tmp_path / "spool"
    assert spool_dir("~/other") == tmp_path / "other"


def test_a_spool_flush_given_both_url_and_server_is_a_usage_error_and_sends_nothing(tmp_path, monkeypatch, capsys):
    """README: `tokentill spool flush [--dir D] [--url URL | --server URL] [--key KEY]`, one or the
    other. Given both, `--server` was dropped without a word: every record, another server's
    included, went to `--url` (where a record of another server is refused as unknown and set
    aside in `.rejected`), exit 0. Now it is a usage error, exit 2, and both spools stay whole."""
    import pytest

    import api.cli
    import api.client

    a, b = Spool(tmp_path / "a.jsonl"), Spool(tmp_path / "b.jsonl")
    a.append(record(1, "res_a"))
    other = record(2, "res_b")
    b.append(SpoolRecord(other.method, other.path, other.body, other.idempotency_key, other.reservation_id,
                         "https://other.example.com/", other.key_id, spooled_at=other.spooled_at))
    sent: list[str | None] = []

    def resend(self, record: SpoolRecord) -> tuple[str, str]:
        sent.append(record.reservation_id)
        return "delivered", "200"

    monkeypatch.setattr(api.client.Client, "resend", resend)
    with pytest.raises(SystemExit) as stopped:
        api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "key-for-a",
                      "--url", "http://127.0.0.1:9000", "--server", "http://127.0.0.1:8000"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "--server" in err and "--url" in err
    assert sent == []  # was: ['res_a', 'res_b'], both sent to --url
    assert [r.reservation_id for r in a.records()] == ["res_a"]
    assert [r.reservation_id for r in b.records()] == ["res_b"]



def test_an_async_flush_cancelled_while_it_waits_for_the_flush_lock_never_keeps_it(tmp_path):
    """`await tt.flush_spool()` under `asyncio.timeout` while another flusher (a replay, another
    process's `tokentill spool flush`) holds the file: the flock waits in a worker thread that no
    cancellation stops, and took the lock once the other let go, after its caller had gone. Nobody
    let it go: it was held as long as the process lived, so every later replay of that file was
    `busy` (sent nothing) and `tokentill spool flush` waited for ever."""
    import asyncio

    from api.spool import release_lock

    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1))
    sent: list[str] = []

    async def send(r: SpoolRecord) -> tuple[str, str]:
        sent.append(r.idempotency_key)
        return "delivered", "200"

    async def flush_given_up() -> None:
        other = Spool(spool.path).take_flush_lock()  # another flusher at work on the file
        assert other is not None
        try:
            async with asyncio.timeout(0.2):
                await spool.aflush(send)
            raise AssertionError("the lock was held throughout: the flush must have waited past its timeout")
        except TimeoutError:
            pass
        release_lock(other)  # the other flusher is done: the abandoned wait takes the lock now

    asyncio.run(flush_given_up())  # returns once its worker threads have ended, the lock's wait too
    # 1 record spooled, 0 sent by the flush given up; the lock free again, so the next flush sends 1
    late = Spool(spool.path).take_flush_lock()
    assert late is not None, "the flush given up kept the lock"
    release_lock(late)
    assert sent == []
    report = spool.flush(lambda r: (sent.append(r.idempotency_key), ("delivered", "200"))[1], wait=False)
    assert (report.busy, report.delivered, sent) == (False, 1, ["res_1:settle:1"])


def test_a_replay_with_no_spool_to_send_on_a_disk_it_cannot_write_reports_nothing_sent(tmp_path, caplog):
    """A spool directory that cannot be made (a read-only root file system, a path through a file;
    a file here, as root may write anywhere) and nothing ever spooled there: the replay took the
    flush lock before reading, made the directory and the lock file for it, failed, logged an
    ERROR with its traceback ("spool replay failed; what is left stays in the spool") at every
    client's start, and `wait_replay` answered None, which says the replay goes on. With no spool
    file there is nothing to send: 0 delivered, 0 kept, no error."""
    import asyncio
    import logging

    import httpx

    from api.client import AsyncClient, Client

    blocked = tmp_path / "a-file"
    blocked.write_text("")
    unwritable = blocked / "spool"  # mkdir: NotADirectoryError, an OSError as EROFS is

    def server(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing to send, yet {request.method} {request.url.path} was sent")

    caplog.set_level(logging.WARNING, logger="tokentill.client")
    with Client("http://tt", "key", transport=httpx.MockTransport(server), spool_dir=unwritable) as tt:
        report = tt.wait_replay(10)
    assert report is not None and (report.delivered, report.rejected, report.kept) == (0, 0, 0)

    async def run() -> None:
        async with AsyncClient("http://tt", "key", transport=httpx.MockTransport(server),
                               spool_dir=unwritable) as att:
            report = await att.wait_replay()
        assert report is not None and (report.delivered, report.rejected, report.kept) == (0, 0, 0)

    asyncio.run(run())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_refusal_set_aside_on_a_full_disk_leaves_no_torn_line_in_the_rejected_file(tmp_path, monkeypatch):
    """The disk fills while a refused record is written to `<name>.rejected`: the half line
    written stayed there, and the next refusal set aside (space freed) was appended to it, one
    line that no JSON reader takes. It is cut back, as a spool append is: 1 record refused twice
    (the first filing failed, the spool kept it) is 1 whole line."""
    import errno
    import json

    import api.spool

    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1))
    real = api.spool._write_all

    def full(fd: int, data: bytes) -> None:
        real(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    refused = lambda r: ("rejected", "409 reservation_closed")  # noqa: E731
    monkeypatch.setattr(api.spool, "_write_all", full)
    try:
        spool.flush(refused)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    else:
        raise AssertionError("the filing cannot have succeeded")
    monkeypatch.setattr(api.spool, "_write_all", real)
    assert spool.records() == [record(1)], "kept, to be filed again"
    assert spool.flush(refused).rejected == 1 and not spool.path.exists()
    lines = spool.rejected_path.read_bytes().splitlines()
    assert [json.loads(line)["idempotency_key"] for line in lines] == ["res_1:settle:1"]


def _flush_on_a_disk_full_after_the_filing(spool: Spool, monkeypatch, send) -> list[int]:
    """`spool.flush(send)` on a disk that fills after the refusals are filed: the 1st write (the
    filing in `.rejected`) goes in, the 2nd (the spool's rewrite) fails, ENOSPC, so the records
    stay spooled (as if the process died between the two). The sizes of the writes tried."""
    import errno

    import api.spool

    real = api.spool._write_all
    writes: list[int] = []

    def full_after_the_filing(fd: int, data: bytes) -> None:
        writes.append(len(data))
        if len(writes) > 1:  # the 1st write is the filing, the 2nd the spool's rewrite
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)

    monkeypatch.setattr(api.spool, "_write_all", full_after_the_filing)
    try:
        with pytest.raises(OSError) as cut:  # the rewrite cannot have succeeded
            spool.flush(send)
    finally:
        monkeypatch.setattr(api.spool, "_write_all", real)
    assert cut.value.errno == errno.ENOSPC
    return writes


def test_a_refusal_filed_before_a_rewrite_the_disk_cut_short_is_filed_once(tmp_path, monkeypatch):
    """The refusal fits in `<name>.rejected` but the spool's rewrite after it does not (a full
    disk; or the process dies between the two): the record stays spooled, is refused again on the
    next flush and was filed again, 2 lines for 1 refusal. It is filed once: 1 line."""
    import json


    spool = Spool(tmp_path / "a.jsonl")
    spool.append_many([record(1), record(2)])
    answer = lambda r: ("rejected", "409 reservation_closed") if r == record(1) else ("kept", "401")  # noqa: E731
    writes = _flush_on_a_disk_full_after_the_filing(spool, monkeypatch, answer)
    assert len(writes) == 2 and spool.records() == [record(1), record(2)], "kept, filed already"
    report = spool.flush(answer)
    assert (report.rejected, report.kept) == (1, 1) and spool.records() == [record(2)]
    lines = spool.rejected_path.read_bytes().splitlines()
    assert [json.loads(line)["idempotency_key"] for line in lines] == ["res_1:settle:1"]  # was: twice


def test_a_spool_flush_counts_what_is_left_by_key_not_by_line(tmp_path, monkeypatch, capsys):
    """A call spooled twice under its key is sent once, and is one call left: 5 lines, keys 1, 1,
    2, 2, 3; key 1 delivered, 2 and 3 kept, so 2 keys are left (the 3 lines of keys 2, 2, 3 were
    counted: `left 3`)."""
    import api.cli
    import api.client

    spool = Spool(tmp_path / "a.jsonl")
    spool.append_many([record(1), record(1), record(2), record(2), record(3)])
    sent: list[str] = []

    def resend(self, record: SpoolRecord) -> tuple[str, str]:
        sent.append(record.idempotency_key)
        return ("delivered", "200") if record.idempotency_key == "res_1:settle:1" else ("kept", "401")

    monkeypatch.setattr(api.client.Client, "resend", resend)
    status = api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "k"])
    out = capsys.readouterr().out
    assert sent == ["res_1:settle:1", "res_1:settle:2", "res_1:settle:3"]
    assert status == 1 and f"{spool.path}: delivered 1, refused 0, left 2" in out
    assert spool.records() == [record(2), record(3)]


def _bytes_read() -> int:
    """What this process has read so far (any file, by read or pread: /proc's rchar)."""
    with open("/proc/self/io") as f:
        return int(dict(line.split(": ") for line in f.read().splitlines())["rchar"])


def test_a_refusal_reads_only_the_end_of_a_large_rejected_file_and_is_still_filed_once(tmp_path, monkeypatch):
    """Filing a refusal read the whole `<name>.rejected` (every line parsed) to find the keys it
    held, and that file only grows: 50 MB of old refusals cost each flush with a refusal 50 MiB
    read and 0.6 s of CPU. A key filed for the record at hand was filed after the record was
    spooled, so only the lines filed since (past the length the file had then) are read: here
    under 1 MiB of 8 MiB. The refusal is still filed once when the spool's rewrite after its
    filing fails (test_a_refusal_filed_before_a_rewrite_the_disk_cut_short_is_filed_once)."""
    import json
    from dataclasses import asdict, replace

    import pytest


    if not os.path.exists("/proc/self/io"):
        pytest.skip("no /proc/self/io to count the bytes read")
    spool = Spool(tmp_path / "a.jsonl")
    old = {"rejected": "409 reservation_closed", "rejected_at": "2026-01-02T03:05:00+00:00"}
    with open(spool.rejected_path, "wb") as f:  # a year of refusals (their records spooled long ago)
        for n in range(8 * 2**20 // len(json.dumps({**asdict(record(0)), **old})) + 1):
            f.write(json.dumps({**asdict(record(n, "old")), **old}).encode() + b"\n")
    size = spool.rejected_path.stat().st_size
    assert size > 8 * 2**20
    now = datetime.now(UTC).isoformat()
    fresh = [replace(record(n), spooled_at=now) for n in (1, 2)]
    spool.append_many(fresh)
    answer = lambda r: ("rejected", "409 reservation_closed") if r == fresh[0] else ("kept", "401")  # noqa: E731
    before = _bytes_read()
    _flush_on_a_disk_full_after_the_filing(spool, monkeypatch, answer)
    # the spool (2 records, under 1 KiB) and the end of `.rejected`: was all 8 MiB of it
    assert _bytes_read() - before < 2**20
    assert spool.records() == fresh, "kept, filed already"
    before = _bytes_read()
    report = spool.flush(answer)
    assert _bytes_read() - before < 2**20
    assert (report.rejected, report.kept) == (1, 1) and spool.records() == [fresh[1]]
    with open(spool.rejected_path, "rb") as f:
        f.seek(size)
        tail = f.read().splitlines()
    assert [json.loads(line)["idempotency_key"] for line in tail] == ["res_1:settle:1"]  # once


def test_the_rejected_file_is_read_back_line_by_line_across_blocks_a_torn_line_included(tmp_path):
    from api.spool import _lines_backward

    path = tmp_path / "a.jsonl.rejected"
    path.write_bytes(b'{"a": 1}\n\n{"bb": 22}\nccc\n{"torn')
    fd = os.open(path, os.O_RDONLY)
    try:
        for block in (1, 3, 5, 64 * 1024):  # lines cut by every block boundary, and none
            assert list(_lines_backward(fd, block)) == [b'{"torn', b"ccc", b'{"bb": 22}', b'{"a": 1}'], block
    finally:
        os.close(fd)


async def test_a_replay_counts_a_call_spooled_twice_and_kept_once_on_every_path(tmp_path):
    """A replay's `kept` counts calls (keys), as a flush's does (e809c67): a key spooled twice
    and left (a 500 or a 401) is one call kept, whether its item was kept in a bulk 200, the whole
    bulk call was, it went singly (no bulk endpoint), or it was kept a round after a 503. Spool:
    keys k1, k2, k1; kept: 2 (k1, k2), never 3. (Checked for a double count of k1: none found.)"""
    import httpx

    from api.client_replay import SpoolReplay
    from api.delivery import RetryPolicy

    old = "2026-01-01T00:00:00+00:00"  # an earlier run's: the replay's to send

    def settle(n: int) -> SpoolRecord:
        return SpoolRecord("POST", f"/v1/reservations/r{n}/settle", {"final": True}, f"k{n}", f"r{n}", "http://x",
                           spooled_at=old)

    def items(status: int, n: int) -> httpx.Response:
        return httpx.Response(200, json={"results": [{"status": status, "body": {}}] * n})

    for path in ("item 500", "call 401", "single 500", "item 503 then 500"):
        spool = Spool(tmp_path / f"{path.replace(' ', '-')}.jsonl")
        spool.append_many([settle(1), settle(2), settle(1)])
        sent: list[list[str]] = []

        async def bulk(batch: list, path: str = path, sent: list = sent) -> httpx.Response:
            sent.append([item["idempotency_key"] for item in batch])
            if path == "call 401":
                return httpx.Response(401)
            if path == "single 500":
                return httpx.Response(404)
            return items(503 if path.endswith("then 500") and len(sent) == 1 else 500, len(batch))

        async def one(record: SpoolRecord, sent: list = sent) -> tuple[str, str]:
            sent.append([record.idempotency_key])
            return "kept", "500"

        report = await SpoolReplay([spool], bulk, one, RetryPolicy(0.001, 0.001, 0.001)).run()
        assert (report.delivered, report.rejected, report.kept) == (0, 0, 2), (path, report)
        assert sum(keys.count("k1") for keys in sent) == (2 if path in ("single 500", "item 503 then 500") else 1)
        assert {r.idempotency_key for r in spool.records()} == {"k1", "k2"}, path  # left for a flush


def test_a_record_spooled_without_a_time_is_filed_once_when_refused_again_days_later(tmp_path, monkeypatch):
    """A spooled line without `spooled_at` (written by hand, or by another tool) was read as spooled
    at the moment it was read: the read-back of `<name>.rejected` for its filing stopped a day
    before that moment, not at the start of the file. Day 0: records 1 (no time) and 2 refused,
    filed (2 lines at T), the spool's rewrite cut short by a full disk. Day 2: record 1 refused
    again, record 2's server not answering (503): the read-back stopped at record 2's line (T is
    before T + 2 days - 1 day) and record 1 was filed a 2nd time (record 3, answered 401 both
    days, is what the rewrite had to write). A record spooled by hand, with no time of its own (nor
    the `.rejected` length an append notes), has the whole file read, as the commit that read it
    backward meant: 1 line for record 1."""
    import json
    from dataclasses import asdict

    import api.spool

    spool = Spool(tmp_path / "a.jsonl")
    untimed = {k: v for k, v in asdict(record(1)).items() if k != "spooled_at"}
    spool.path.write_bytes(json.dumps(untimed).encode() + b"\n" + record(2).line() + record(3).line())
    _flush_on_a_disk_full_after_the_filing(
        spool, monkeypatch, lambda r: ("kept", "401") if r == record(3) else ("rejected", "409 reservation_closed"))

    class TwoDaysOn(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return datetime.now(tz) + timedelta(days=2)

    monkeypatch.setattr(api.spool, "datetime", TwoDaysOn)
    answer = lambda r: ("rejected", "409 reservation_closed") if r.idempotency_key == "res_1:settle:1" else (  # noqa: E731
        "kept", "503")
    report = spool.flush(answer)
    assert (report.rejected, report.kept) == (1, 2)
    assert [r.idempotency_key for r in spool.records()] == ["res_1:settle:2", "res_1:settle:3"]
    filed = [json.loads(line)["idempotency_key"] for line in spool.rejected_path.read_bytes().splitlines()]
    assert filed == ["res_1:settle:1", "res_1:settle:2"]  # was: record 1 a 2nd time, 3 lines


async def test_a_replay_sends_a_record_spooled_without_a_time_as_an_earlier_runs(tmp_path):
    """A replay sends what was spooled before it began, a record without a readable time counted
    among them (SpoolReplay._earlier); a line with no `spooled_at` at all was read as spooled at
    the moment it was read, after the replay began, and so was never sent by any replay: sent
    [] where ["r1:settle:0"]."""
    import json

    spool = Spool(tmp_path / "s.jsonl")
    spool.path.write_bytes(json.dumps({"method": "POST", "path": "/v1/reservations/r1/settle",
                                       "body": {"usage": {"input_tokens": 1}, "final": True},
                                       "idempotency_key": "r1:settle:0", "reservation_id": "r1",
                                       "base_url": "http://tt"}).encode() + b"\n")
    replay, sent = _delivering_replay(spool)
    report = await replay.run()
    assert sent == ["r1:settle:0"] and report.delivered == 1
    assert spool.records() == []


class _Clock(datetime):
    """api.spool's clock, set by hand (`at`): a record spooled, or a refusal filed, at what it says."""

    at = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)

    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return cls.at


@pytest.mark.parametrize(("spooled", "clocks"), [
    # spooled by a clock 3 days fast (Dec 9), filed and filed again once it was set right (Dec 6)
    ("2026-12-09T09:00:00+00:00", ("2026-12-06T09:00:00+00:00",) * 3),
    # spooled Dec 6, the clock set back 2 days (to Dec 4) before its filings
    ("2026-12-06T09:00:00+00:00", ("2026-12-04T09:00:00+00:00",) * 3),
    # spooled and filed Dec 6, the clock set back 2 days after that filing
    ("2026-12-06T09:00:00+00:00", ("2026-12-06T09:00:00+00:00",) + ("2026-12-04T09:00:00+00:00",) * 2),
], ids=["spooled-3-days-ahead", "set-back-before-the-filing", "set-back-after-the-filing"])
def test_a_refusal_is_filed_once_whatever_the_clocks_said_when_it_was_spooled_and_filed(
        tmp_path, monkeypatch, spooled, clocks):
    """The read-back of `<name>.rejected` for a refused record's key stopped at the first line
    filed more than a day (CLOCK_SKEW) before the record's `spooled_at`: with that time more than
    a day ahead of the filings' clock, it stopped before the record's own filing. Records 1
    (spooled at `spooled`) and 3 are spooled; record 2 is spooled beside them (Dec 6). Flush 1
    (clock 1): record 1 refused and filed, the rewrite after it cut short by a full disk, so it
    stays spooled; record 3 kept (401). Flush 2 (clock 2): record 1 kept (503), record 2 refused
    and filed (its line after record 1's). Flush 3 (clock 3): record 1 refused again. Its read-back
    stopped at record 2's line, filed Dec 4 or Dec 6, which is before `spooled` - 1 day (Dec 8, or
    Dec 5): record 1 was filed a 2nd time (3 lines: 1, 2, 1). It is filed once: 2 lines (1, 2)."""
    import json
    from dataclasses import replace

    import api.spool

    monkeypatch.setattr(api.spool, "datetime", _Clock)
    spool = Spool(tmp_path / "a.jsonl")
    _Clock.at = datetime.fromisoformat(spooled)
    spool.append(replace(record(1), spooled_at=spooled))
    _Clock.at = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    spool.append_many([replace(record(n), spooled_at=_Clock.at.isoformat()) for n in (2, 3)])
    def answers(**by_n: str):
        """`send`: record n answered `by_n["rN"]` (refused: "409"), "401" (kept) when not named."""
        def send(r: SpoolRecord) -> tuple[str, str]:
            status = by_n.get("r" + r.idempotency_key.rsplit(":", 1)[1], "401")
            return ("rejected", f"{status} reservation_closed") if status == "409" else ("kept", status)
        return send

    _Clock.at = datetime.fromisoformat(clocks[0])
    _flush_on_a_disk_full_after_the_filing(spool, monkeypatch, answers(r1="409", r2="503"))
    assert len(spool.records()) == 3, "kept, record 1 filed already"
    _Clock.at = datetime.fromisoformat(clocks[1])
    assert spool.flush(answers(r1="503", r2="409")).rejected == 1
    _Clock.at = datetime.fromisoformat(clocks[2])
    report = spool.flush(answers(r1="409"))
    assert (report.rejected, report.kept) == (1, 1)
    assert [r.idempotency_key for r in spool.records()] == ["res_1:settle:3"]
    filed = [json.loads(line)["idempotency_key"] for line in spool.rejected_path.read_bytes().splitlines()]
    assert filed == ["res_1:settle:1", "res_1:settle:2"]  # was: record 1 a 2nd time, 3 lines


def test_a_call_spooled_again_after_its_refusal_was_filed_is_filed_again(tmp_path):
    """Once a spooling: record 1 spooled, refused and filed (1 line), struck off; spooled again
    under its key (sent again by hand) and refused again: filed again, 2 lines. The read-back
    starts where `.rejected` ended at the 2nd spooling, after the 1st filing. (It went by the
    clock: a day back from the 2nd spooling's time, it found the 1st filing and filed nothing,
    unless the two were more than a day apart.)"""
    import json

    spool = Spool(tmp_path / "a.jsonl")
    refused = lambda r: ("rejected", "409 reservation_closed")  # noqa: E731
    for _ in range(2):
        spool.append(record(1))
        assert spool.flush(refused).rejected == 1 and not spool.path.exists()
    filed = [json.loads(line)["idempotency_key"] for line in spool.rejected_path.read_bytes().splitlines()]
    assert filed == ["res_1:settle:1", "res_1:settle:1"]


@pytest.mark.parametrize("cut", ["deleted", "rotated", "truncated"])
def test_a_refusal_is_filed_once_when_the_rejected_file_was_cut_after_it_was_spooled(tmp_path, monkeypatch, cut):
    """`rejected_from` is where `.rejected` ended when the record was spooled; a file deleted by
    hand (its refusals dealt with), moved aside (logrotate) or cut to nothing (copytruncate) after
    that starts again at byte 0, and once it grew past that length again the read-back started
    there, past the record's own filing. Every line here is one length, l (records 1-3, 8, 9: keys
    of one length, one reason, one time). `.rejected` holds 8 and 9 (2l) when 1, 2 and 3 are
    spooled (and 4, answered 401 each time: what the rewrite has to write): rejected_from 2l. The
    file is then cut. Flush 1: 1, 2 and 3 refused, filed at 0, l, 2l (3l long), the rewrite after
    it cut short by a full disk, so they stay spooled. Flush 2: all three refused again; read from
    2l, only record 3's line was seen: 1 and 2 filed again, 5 lines (1, 2, 3, 1, 2). They are filed
    once: 3 lines (1, 2, 3), the file not ending at 2l in the bytes it ended in (record 9's line,
    where it is now record 2's) read whole."""
    import json

    import api.spool

    monkeypatch.setattr(api.spool, "datetime", _Clock)
    _Clock.at = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    spool = Spool(tmp_path / "a.jsonl")
    refused = lambda r: ("kept", "401") if r == record(4) else ("rejected", "409 reservation_closed")  # noqa: E731
    spool.append_many([record(8), record(9)])
    assert spool.flush(refused).rejected == 2
    old = spool.rejected_path.read_bytes().splitlines(keepends=True)
    assert len(old) == 2 and len(old[0]) == len(old[1])
    spool.append_many([record(n) for n in (1, 2, 3, 4)])
    assert {r.rejected_from for r in spool.records()} == {len(old[0]) * 2}
    if cut == "deleted":
        spool.rejected_path.unlink()
    elif cut == "rotated":
        spool.rejected_path.rename(spool.rejected_path.with_name(spool.rejected_path.name + ".1"))
    else:
        os.truncate(spool.rejected_path, 0)
    _flush_on_a_disk_full_after_the_filing(spool, monkeypatch, refused)
    assert len(spool.records()) == 4, "kept, filed already"
    lines = spool.rejected_path.read_bytes().splitlines(keepends=True)
    assert [len(line) for line in lines] == [len(old[0])] * 3  # 3l: past 2l again
    report = spool.flush(refused)
    assert (report.rejected, report.kept) == (3, 1) and spool.records() == [record(4)]
    filed = [json.loads(line)["idempotency_key"] for line in spool.rejected_path.read_bytes().splitlines()]
    assert filed == [f"res_1:settle:{n}" for n in (1, 2, 3)]  # was 1, 2, 3, 1, 2


def test_a_call_spooled_again_while_its_filed_record_was_kept_is_filed_once_a_spooling(tmp_path, monkeypatch):
    """Record 1 spooled, refused and filed (1 line), the rewrite after it refused (EACCES: the
    directory made read-only for a while; ENOSPC does the same), so it stays spooled; the call is
    spooled again under its key (sent again by hand), after that filing. Flush 2 refuses it: the
    2nd spooling's refusal is filed, as when the rewrite went through (struck off, spooled again,
    refused again: 2 lines), 2 lines. It was not filed at all: the read-back started at the 1st
    spooling's `rejected_from` (0), found the 1st filing and took it for the 2nd spooling's too, 1
    line. Flush 2's rewrite refused as well, flush 3 files nothing more: 2 lines, each refusal once."""
    import errno
    import json

    spool = Spool(tmp_path / "a.jsonl")
    refused = lambda r: ("rejected", "409 reservation_closed")  # noqa: E731
    filed = lambda: [json.loads(line)["idempotency_key"]  # noqa: E731
                     for line in spool.rejected_path.read_bytes().splitlines()]

    def flush_with_the_rewrite_refused() -> None:
        def refuse(self: Spool, records: list[SpoolRecord]) -> None:
            raise OSError(errno.EACCES, "Permission denied")

        with monkeypatch.context() as patch:
            patch.setattr(Spool, "_rewrite", refuse)
            with pytest.raises(OSError):
                spool.flush(refused)

    spool.append(record(1))
    flush_with_the_rewrite_refused()
    assert filed() == ["res_1:settle:1"] and spool.records() == [record(1)], "kept, filed already"
    spool.append(record(1))  # spooled again, after the 1st filing
    flush_with_the_rewrite_refused()
    assert filed() == ["res_1:settle:1"] * 2, "the 2nd spooling's refusal"  # was 1 line
    assert len(spool._read()[0]) == 2, "both spoolings kept, the rewrite refused"
    report = spool.flush(refused)
    assert (report.rejected, report.kept) == (1, 0) and not spool.path.exists()
    assert filed() == ["res_1:settle:1"] * 2, "each spooling filed once"


def test_a_call_spooled_again_is_filed_with_its_last_spooling_s_time_and_reason(tmp_path, monkeypatch):
    """Record 1 spooled on the 2nd (reason "timeout"), refused and filed, the rewrite refused
    (EACCES), so it stays spooled; spooled again on the 5th (reason "503"), refused: its 2nd
    filing carried the 1st spooling's spooled_at and reason (records() gives a key's first), the
    2nd line a copy of the 1st but for rejected_at, as if one spooling had been filed twice. It
    carries the 5th and "503", as a filing does when the rewrite went through (struck off, so the
    2nd spooling is the only one left to file)."""
    import errno
    import json
    from dataclasses import replace

    first = replace(record(1), spooled_at="2026-01-02T03:04:05+00:00", reason="timeout")
    second = replace(record(1), spooled_at="2026-01-05T06:07:08+00:00", reason="503 service_unavailable")
    refused = lambda r: ("rejected", "409 reservation_closed")  # noqa: E731

    def filed(spool: Spool) -> list[tuple[str, str]]:
        return [(json.loads(line)["spooled_at"], json.loads(line)["reason"])
                for line in spool.rejected_path.read_bytes().splitlines()]

    def refuse(self: Spool, records: list[SpoolRecord]) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    due = [("2026-01-02T03:04:05+00:00", "timeout"), ("2026-01-05T06:07:08+00:00", "503 service_unavailable")]
    went_through = Spool(tmp_path / "a.jsonl")
    for spooled in (first, second):
        went_through.append(spooled)
        assert went_through.flush(refused).rejected == 1
    assert filed(went_through) == due
    kept = Spool(tmp_path / "b.jsonl")
    kept.append(first)
    with monkeypatch.context() as patch:
        patch.setattr(Spool, "_rewrite", refuse)
        with pytest.raises(OSError):
            kept.flush(refused)
    kept.append(second)
    assert kept.flush(refused).rejected == 1 and not kept.path.exists()
    assert filed(kept) == due  # was the 1st spooling's twice


def test_a_spool_flush_to_a_url_no_path_can_follow_is_a_usage_error_and_sends_nothing(tmp_path, monkeypatch, capsys):
    """`--url http://127.0.0.1:9000?`: each record's path added after the "?" is a query (every
    record sent to /, 404, kept); the SDK's client now refuses such a base URL, which ended the flush
    in its ValueError traceback. Now a usage error naming `--url`, exit 2, nothing sent; a record
    spooled under such a server by an earlier SDK is kept, saying why, and the others go."""
    import api.cli
    import api.client

    spool = Spool(tmp_path / "a.jsonl")
    spool.append(record(1, "res_a"))
    sent: list[str | None] = []

    def resend(self, record: SpoolRecord) -> tuple[str, str]:
        sent.append(record.reservation_id)
        return "delivered", "200"

    monkeypatch.setattr(api.client.Client, "resend", resend)
    code = api.cli.main(["spool", "flush", "--dir", str(tmp_path), "--key", "k", "--url", "http://127.0.0.1:9000?"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: --url must be an http(s) URL") and sent == []
    assert [r.reservation_id for r in spool.records()] == ["res_a"]
    old = Spool(tmp_path / "old" / "b.jsonl")
    bad = record(2, "res_b")
    old.append(SpoolRecord(bad.method, bad.path, bad.body, bad.idempotency_key, bad.reservation_id,
                           "http://127.0.0.1:8000#", bad.key_id, spooled_at=bad.spooled_at))
    [(_, report)] = api.client.flush_spool_dir(tmp_path / "old", "k")
    assert (report.kept, sent) == (1, []) and "base_url must be an http(s) URL" in report.problems[0]
    assert [r.reservation_id for r in old.records()] == ["res_b"]


def test_a_spool_flush_of_a_file_or_a_missing_directory_is_an_error_naming_where_it_was_given(
        tmp_path, monkeypatch, capsys):
    """`tokentill spool flush --dir /etc/passwd` (a file), `--dir` or TOKENTILL_SPOOL_DIR naming a
    directory that does not exist: each printed nothing and exited 0, as an empty spool does, so a
    mistyped path read as a flush that delivered everything. Now a usage error naming the flag or
    the variable and the path, exit 2 (as a bad --url or TOKENTILL_API_KEY), nothing sent."""
    import api.cli

    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0::/root:/bin/sh\n")
    missing = tmp_path / "no-such-dir"
    for given, env, named in ((["--dir", str(a_file)], None, "--dir"),
                              (["--dir", str(missing)], None, "--dir"),
                              ([], str(a_file), "TOKENTILL_SPOOL_DIR"),
                              ([], str(missing), "TOKENTILL_SPOOL_DIR")):
        if env is None:
            monkeypatch.delenv("TOKENTILL_SPOOL_DIR", raising=False)
        else:
            monkeypatch.setenv("TOKENTILL_SPOOL_DIR", env)
        code = api.cli.main(["spool", "flush", "--key", "k", *given])
        out, err = capsys.readouterr()
        path = a_file if a_file.name in (env or given[-1]) else missing
        assert (code, out) == (2, ""), (given, env, code, out)
        assert err.startswith(f"error: {named}: {path}: ") and err.count("\n") == 1, (given, env, err)
    assert not missing.exists()


def test_a_spool_flush_of_an_empty_or_never_made_spool_says_there_is_nothing_to_flush(tmp_path, monkeypatch, capsys):
    """An empty spool directory, and the default one before anything was ever spooled, printed
    nothing at all, exit 0. Now `nothing to flush in DIR`, exit 0."""
    import api.cli

    monkeypatch.setenv("TOKENTILL_SPOOL_DIR", str(tmp_path))
    assert api.cli.main(["spool", "flush", "--key", "k"]) == 0
    assert capsys.readouterr().out == f"nothing to flush in {tmp_path}\n"
    monkeypatch.delenv("TOKENTILL_SPOOL_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    default = Path(platformdirs.user_data_dir("tokentill")) / "spool"
    assert not default.exists()
    assert api.cli.main(["spool", "flush", "--key", "k"]) == 0
    assert capsys.readouterr().out == f"nothing to flush in {default}\n"
    assert not default.exists()
