"""The background settle queue without a server: what each answer does to a queued settle."""
from __future__ import annotations

import asyncio
import contextlib
import errno
import threading
import time

import httpx

from api.background import MAX_ITEMS, BackgroundSettler, item_of
from api.client import AsyncClient
from api.client_reservations import final_settle_key
from api.delivery import RetryPolicy
from api.spool import Spool, SpoolRecord


def record(n: int) -> SpoolRecord:
    return SpoolRecord("POST", f"/v1/reservations/res_{n}/settle", {"usage": {"input_tokens": n}, "final": True},
                       f"res_{n}:settle:0", f"res_{n}", "http://tokentill")


class Server:
    """Answers each bulk call with the statuses scripted per reservation (200 once not scripted)."""

    def __init__(self, **script: list[int]) -> None:
        self.script, self.calls = script, []

    async def send(self, items: list[dict]) -> httpx.Response:
        self.calls.append(items)
        results = []
        for item in items:
            statuses = self.script.get(item["reservation_id"], [])
            status = statuses.pop(0) if statuses else 200
            results.append({"reservation_id": item["reservation_id"], "idempotency_key": item["idempotency_key"],
                            "status": status, "replayed": False, "body": {"code": "x"} if status >= 400 else {}})
        return httpx.Response(200, json={"results": results})


async def test_an_item_is_the_single_settle_under_the_same_key():
    assert item_of(record(7)) == {"reservation_id": "res_7", "usage": {"input_tokens": 7}, "final": True,
                                  "idempotency_key": "res_7:settle:0"}


async def test_answers_strike_off_retry_keep_or_set_aside(tmp_path):
    spool = Spool(tmp_path / "s.jsonl")
    server = Server(res_1=[503, 503], res_2=[500], res_3=[409], res_4=[404])
    settler = BackgroundSettler(spool, server.send, RetryPolicy(backoff_s=0.001))
    for n in range(5):
        await settler.put(record(n))
    assert await settler.drain(5) == 0
    sent = [item["reservation_id"] for call in server.calls for item in call]
    assert sent.count("res_1") == 3, "a 503 item is sent again with its key until answered"
    assert sent.count("res_2") == sent.count("res_3") == sent.count("res_4") == 1
    left = {r.reservation_id for r in spool.records()}
    assert left == {"res_2", "res_4"}, "a 500 or a 404 stays spooled for a flush"
    assert "res_3" in spool.rejected_path.read_text(), "a refusal is set aside"


async def test_a_failed_call_is_sent_again_whole_and_a_queue_goes_in_calls_of_at_most_max_items(tmp_path):
    spool = Spool(tmp_path / "s.jsonl")
    server = Server()
    failures = [httpx.ConnectError("refused"), httpx.Response(503, headers={"Retry-After": "0"})]

    async def flaky(items: list[dict]) -> httpx.Response:
        if failures:
            failure = failures.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return failure
        return await server.send(items)

    settler = BackgroundSettler(spool, flaky, RetryPolicy(backoff_s=0.001))
    await asyncio.gather(*(settler.put(record(n)) for n in range(MAX_ITEMS + 20)))  # one write, one fsync
    assert await settler.drain(10) == 0
    assert [len(call) for call in server.calls] == [MAX_ITEMS, 20]
    assert not spool.path.exists()


async def test_a_queue_goes_on_after_more_than_a_thousand_failed_calls(tmp_path):
    """A ledger down for hours: the sender's 1,025th backoff overflowed a float and its task died,
    leaving the queue unsent until another settle was queued; now it goes on until answered."""
    spool = Spool(tmp_path / "s.jsonl")
    server, failures = Server(), [1100]

    async def down_for_a_while(items: list[dict]) -> httpx.Response:
        if failures[0]:
            failures[0] -= 1
            raise httpx.ConnectError("refused")
        return await server.send(items)

    settler = BackgroundSettler(spool, down_for_a_while, RetryPolicy(backoff_s=1e-6, max_backoff_s=1e-6))
    await settler.put(record(1))
    assert await settler.drain(30) == 0
    assert failures == [0] and len(server.calls) == 1 and not spool.path.exists()


async def test_a_settle_whose_caller_was_cancelled_while_a_full_disk_refused_it_is_still_sent(tmp_path):
    """The exit of a block cancelled (its handler's client went away) while its settle was being
    written, and the write failed (a full disk): nobody was left to be told, so nobody sent it and
    the call went unbilled without a word. Now the queue sends it from memory, and says so."""
    spool, server = Spool(tmp_path / "s.jsonl"), Server()
    writing, fail = threading.Event(), threading.Event()

    def full_disk(records: object) -> None:
        writing.set()
        fail.wait(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    spool.append_many = full_disk  # type: ignore[method-assign]
    settler = BackgroundSettler(spool, server.send, RetryPolicy(backoff_s=0.001))
    exit_ = asyncio.create_task(settler.put(record(1)))
    await asyncio.to_thread(writing.wait, 10)
    exit_.cancel()
    await asyncio.sleep(0)
    fail.set()
    with contextlib.suppress(asyncio.CancelledError):
        await exit_
    assert await settler.drain(5) == 0
    assert [item["reservation_id"] for call in server.calls for item in call] == ["res_1"]


async def test_an_answer_that_is_not_the_bulk_endpoints_is_sent_again_not_the_end_of_the_queue(tmp_path):
    """A 200 that is no `{"results": [...]}` (a proxy's page, a body cut short): the sender task
    died of the ValueError, and the queue sat unsent until another settle was queued, its close
    waiting out the whole drain. Now the call is sent again after a backoff."""
    spool, server, answers = Spool(tmp_path / "s.jsonl"), Server(), [
        httpx.Response(200, text="<html>portal</html>"), httpx.Response(200, json={"ok": True})]

    async def garbled_first(items: list[dict]) -> httpx.Response:
        return answers.pop(0) if answers else await server.send(items)

    settler = BackgroundSettler(spool, garbled_first, RetryPolicy(backoff_s=0.001))
    await settler.put(record(1))
    assert await settler.drain(5) == 0
    assert not answers and len(server.calls) == 1 and not spool.path.exists()


async def test_a_strike_off_the_full_disk_refuses_leaves_those_settles_spooled_and_the_queue_goes_on(tmp_path):
    """The first call's settles are answered, but striking them off the spool fails (a full disk
    cannot take the rewritten file): the sender task died of the OSError, and the settles queued
    behind them were not sent. Now those stay in the spool (a flush is answered by their keys)
    and the rest of the queue goes out."""
    spool, server = Spool(tmp_path / "s.jsonl"), Server()
    remove, failures = spool.remove, [OSError(errno.ENOSPC, "No space left on device")]

    def full_once(*args: object) -> int:
        if failures:
            raise failures.pop()
        return remove(*args)

    spool.remove = full_once  # type: ignore[method-assign]
    settler = BackgroundSettler(spool, server.send, RetryPolicy(backoff_s=0.001))
    await asyncio.gather(*(settler.put(record(n)) for n in range(MAX_ITEMS + 20)))
    assert await settler.drain(5) == 0
    assert [len(call) for call in server.calls] == [MAX_ITEMS, 20]
    assert len(spool.records()) == MAX_ITEMS, "answered, but not struck off: a flush replays them"


async def test_what_a_drain_cannot_send_by_its_deadline_stays_in_the_spool(tmp_path):
    spool = Spool(tmp_path / "s.jsonl")

    async def down(items: list[dict]) -> httpx.Response:
        raise httpx.ConnectError("refused")

    settler = BackgroundSettler(spool, down, RetryPolicy(backoff_s=0.01))
    await settler.put(record(1))
    assert [r.idempotency_key for r in spool.records()] == ["res_1:settle:0"], "on disk once put returns"
    assert await settler.drain(0.1) == 1
    assert [r.idempotency_key for r in spool.records()] == ["res_1:settle:0"]


async def test_a_close_drains_the_exits_and_the_queue_within_one_drain_timeout(tmp_path):
    """A server that never answers: a block's release whose caller was cancelled, and a queued
    background settle. `aclose` waited `drain_timeout_s` for the one, then as long again for the
    other (a 30 s grace period met by a 60 s close: SIGKILL mid-drain); now one deadline bounds
    the whole close, and both are left in the spool."""
    releasing = asyncio.Event()

    async def server(request: httpx.Request) -> httpx.Response:
        releasing.set() if request.url.path.endswith("/release") else None
        if request.url.path == "/v1/reservations":
            return httpx.Response(201, json={"id": "res_1", "request_id": "req_1", "status": "held",
                                             "amount": "0.03", "expires_at": "2099-01-01T00:00:00Z"})
        await asyncio.sleep(3600)  # a settle or release: never answered
        raise AssertionError("unreachable")

    tt = AsyncClient("http://tokentill.test", "key", transport=httpx.MockTransport(server), spool_dir=tmp_path,
                     background_settle=True, flush_spool=False, drain_timeout_s=1.0)

    async def failing_call() -> None:
        async with tt.reserve("acme", "model-a", input_tokens=10):
            raise RuntimeError("provider down")  # nothing generated: the exit releases the hold

    caller = asyncio.create_task(failing_call())
    await releasing.wait()
    caller.cancel()  # the handler goes; the client's own task goes on sending the release
    assert await tt.settle("res_2", background=True, usage={"input_tokens": 10, "output_tokens": 5}) is None
    started = time.monotonic()
    await tt.aclose()
    assert time.monotonic() - started < 1.5
    settled = final_settle_key("res_2", {"usage": {"input_tokens": 10, "output_tokens": 5}, "final": True})
    assert {r.idempotency_key for r in tt.spool.records()} == {"res_1:release:0", settled}
