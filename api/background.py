"""Background settles for the async SDK: a reservation block's exit queues its settle and goes on.

A queued settle is first written to the client's spool and fsynced (records arriving together
share one write and one fsync), so it survives the process. A task then sends what is queued in
bulk, up to `MAX_ITEMS` a call, through `POST /v1/settlements`, each item under the Idempotency-Key
its single settle would carry, and strikes off the spool what the server answered. A call that
fails (connection error, timeout, 408, 429, 5xx, a 200 that is not the endpoint's answer) is sent
again with the same keys after a backoff,
as is an item answered 429 or 502-504 (after the same backoff, and the `retry_after_seconds` its
body asks, if any: not at once with the next call), until answered. An item answered 500, 401, 403 or 404
stays in the spool for a later flush (as `tokentill spool flush` would keep it); a refusal (409,
422) goes to the `.rejected` file beside it and is logged at ERROR. `drain` waits for the queue to empty, up to a
deadline; what is left is in the spool, for the next client on it or `tokentill spool flush`.
Delivery is at least once; the keys make the charge exactly once.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx

from api.client_errors import IdempotencyConflict
from api.delivery import DURABLE_RETRY, KEEP_SPOOLED, RetryPolicy, retry_after
from api.spool import Spool, SpoolRecord

log = logging.getLogger("tokentill.client")
MAX_ITEMS = 500  # settles per call: well under the endpoint's 1,000
MAX_BYTES = 512 * 1024  # and well under its 1 MiB body, however large the usage objects
PATH = "/v1/settlements"
Send = Callable[[list[dict[str, Any]]], Awaitable[httpx.Response]]
T = TypeVar("T")


def item_of(record: SpoolRecord) -> dict[str, Any]:
    """A spooled single settle as an item of a bulk one, under the same key."""
    return {"reservation_id": record.reservation_id, **record.body, "idempotency_key": record.idempotency_key}


def is_settle(path: str) -> bool:
    return path.startswith("/v1/reservations/") and path.endswith("/settle")


class BackgroundSettler:
    """The queue of one client: durable first, then sent in bulk by one task."""

    _sleep = staticmethod(asyncio.sleep)  # the backoff between calls (tests record it)

    def __init__(self, spool: Spool, send: Send, policy: RetryPolicy) -> None:
        self.spool, self._send, self._policy = spool, send, policy
        self._unwritten: list[tuple[SpoolRecord, asyncio.Future[None], bool]] = []
        self._writing = 0  # records in the spool write under way
        self._taken: list[SpoolRecord] = []  # those records
        self._writer: asyncio.Task[None] | None = None
        self._queued: dict[str, SpoolRecord] = {}  # idempotency key -> record, in order
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._pause = 0.0  # seconds to wait before the next call: what an adopted settle's 503 asked

    @property
    def pending(self) -> int:
        return len(self._queued) + len(self._unwritten) + self._writing

    async def put(self, record: SpoolRecord, send: bool = True) -> None:
        """Queue a settle; it is on disk when this returns (or the write's OSError is raised).
        `send=False`: only write it (the caller sends it, and `adopt`s it if that fails). A key
        queued with another call (path or body) is refused, IdempotencyConflict, as the server
        would refuse it: queued, it took the first one's place unsent, or was struck off the spool
        with it, and neither was ever told."""
        self._refuse_a_second_body(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._unwritten.append((record, done, send))
        self._idle.clear()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())
        await done

    def _refuse_a_second_body(self, record: SpoolRecord) -> None:
        key = record.idempotency_key
        waiting = [self._queued[key]] if key in self._queued else []
        waiting += [r for r in (*self._taken, *(r for r, _, _ in self._unwritten)) if r.idempotency_key == key]
        if any((r.path, r.body) != (record.path, record.body) for r in waiting):
            detail = (f"Idempotency-Key {key} is queued for another call, not yet answered: this settle of "
                      f"reservation {record.reservation_id} under it would be refused; nothing queued")
            raise IdempotencyConflict(409, "idempotency_conflict", detail,
                                      {"code": "idempotency_conflict", "detail": detail, "key": key})

    def adopt(self, records: list[SpoolRecord], wait: float = 0.0) -> None:
        """Queue settles already on disk (left in the spool by an earlier run) to be sent; `wait`:
        not before that many seconds (plus the backoff's jitter), as the 503 that answered the
        caller's own attempt asked (it was sent again at once, to the database just found down)."""
        self._pause = max(self._pause, wait)
        for record in records:
            self._queued.setdefault(record.idempotency_key, record)
        if self._queued:
            self._idle.clear()
            self._wake.set()
            if self._sender is None or self._sender.done():
                self._sender = asyncio.create_task(self._run())

    async def _write(self) -> None:
        """Group commit: every record queued while a write was in flight goes in the next one."""
        while self._unwritten:
            taken, self._unwritten = self._unwritten, []
            self._writing, self._taken = len(taken), [record for record, _, _ in taken]
            try:
                await asyncio.to_thread(self.spool.append_many, [record for record, _, _ in taken])
            except OSError as exc:
                self._unwritten_failed(taken, exc)
            else:
                for record, done, send in taken:
                    if send:
                        self._queued[record.idempotency_key] = record
                    if not done.done():  # a caller cancelled meanwhile: its settle is on disk and queued all the same
                        done.set_result(None)
                self._wake.set()
                if self._sender is None or self._sender.done():
                    self._sender = asyncio.create_task(self._run())
            finally:
                self._writing, self._taken = 0, []
        self._settle_idle()

    def _unwritten_failed(self, taken: list[tuple[SpoolRecord, asyncio.Future[None], bool]], exc: OSError) -> None:
        """A spool write failed (a full disk): each caller sends its settle itself; one whose
        caller was cancelled meanwhile would be sent by nobody, so the queue sends it from memory."""
        for record, done, send in taken:
            if not done.done():
                done.set_exception(exc)
            elif send:
                log.warning("settle of reservation %s not written to the spool (%s) and its caller gone: sent "
                            "from memory, lost if this process dies first", record.reservation_id, exc)
                self._queued[record.idempotency_key] = record
        if self._queued:
            self._wake.set()
            if self._sender is None or self._sender.done():
                self._sender = asyncio.create_task(self._run())

    async def _run(self) -> None:
        attempt = 0
        while True:
            if not self._queued:
                self._settle_idle()
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._pause > 0:
                pause, self._pause = self._pause, 0.0
                await self._sleep(self._policy.wait(0, pause))
                continue
            batch = self._next_batch()
            wait = await self._send_batch(batch)
            if wait is None:
                attempt = 0
                continue
            await self._sleep(self._policy.wait(attempt, wait if wait > 0 else None))
            attempt += 1

    def _next_batch(self) -> list[SpoolRecord]:
        """The oldest queued settles, up to MAX_ITEMS and about MAX_BYTES (one at least)."""
        batch: list[SpoolRecord] = []
        size = 0
        for record in self._queued.values():
            size += len(record.line())
            if batch and (len(batch) == MAX_ITEMS or size > MAX_BYTES):
                break
            batch.append(record)
        return batch

    async def _send_batch(self, batch: list[SpoolRecord]) -> float | None:
        """Send once: None when answered (the answer filed), else the Retry-After (0: none)."""
        try:
            response = await self._send([item_of(record) for record in batch])
        except httpx.TransportError as exc:
            log.info("background settles: %s; sending again", exc)
            return 0.0
        if response.status_code in DURABLE_RETRY or response.status_code >= 500:
            return retry_after(response) or 0.0
        if response.status_code != 200:  # the key was refused, say: leave them all for a flush
            log.error("background settles: %s %s; left in %s", response.status_code, response.text[:300],
                      self.spool.path)
            await self._file(batch, [], [])
            return None
        answers = bulk_answers(response, len(batch))
        if answers is None:  # not the endpoint's answer (a proxy's page, a body cut short): send again
            log.warning("background settles: a 200 that is not /v1/settlements' answer: %s; sending again",
                        response.text[:300])
            return 0.0
        retry = [r for r, (status, _) in zip(batch, answers, strict=True) if status in DURABLE_RETRY]
        done = [r for r, (status, _) in zip(batch, answers, strict=True) if status < 300]
        rejected = [(r, f"{status} {body}") for r, (status, body) in zip(batch, answers, strict=True)
                    if status not in DURABLE_RETRY | KEEP_SPOOLED and 400 <= status < 500]
        kept = len(batch) - len(retry) - len(done) - len(rejected)
        if kept:
            log.warning("background settles: %d kept in %s for a later flush", kept, self.spool.path)
        for record, why in rejected:  # a charge that will never land: someone must look
            log.error("background settle of reservation %s refused for good (%s); set aside in %s",
                      record.reservation_id, why[:300], self.spool.rejected_path)
        await self._file([r for r in batch if r not in retry], done, rejected)
        if not retry:
            return None
        # the rest waits as a whole call answered so would: an item has no header, but its body
        # may ask (a rolling window's `retry_after_seconds`); the longest asked
        return max((asked for status, body in answers if status in DURABLE_RETRY
                    and (asked := item_retry_after(body)) is not None), default=0.0)

    async def _file(self, answered: list[SpoolRecord], done: list[SpoolRecord],
                    rejected: list[tuple[SpoolRecord, str]]) -> None:
        """Take `answered` off the queue; strike `done` and `rejected` off the spool."""
        for record in answered:
            self._queued.pop(record.idempotency_key, None)
        keys = {r.idempotency_key for r in done} | {r.idempotency_key for r, _ in rejected}
        if not keys:
            return
        try:
            await asyncio.to_thread(self.spool.remove, keys, rejected)
        except OSError as exc:  # a full disk: they stay spooled, and a flush is answered by their keys
            log.warning("background settles: %d answered but not struck off %s (%s)", len(keys), self.spool.path, exc)

    def _settle_idle(self) -> None:
        if not self.pending:
            self._idle.set()

    async def drain(self, deadline_s: float) -> int:
        """Wait until everything queued is answered, at most `deadline_s`; then stop. Returns how
        many settles were left (in the spool)."""
        try:
            async with asyncio.timeout(deadline_s):
                await self._idle.wait()
        except TimeoutError:
            pass
        if self._writer is not None:
            await asyncio.shield(self._writer)  # a write under way ends (an fsync), its callers answered
        left = self.pending
        if self._sender is not None and not self._sender.done():
            self._sender.cancel()  # a call in flight may still be answered: its records stay spooled
            try:
                await self._sender
            except asyncio.CancelledError:
                pass
        if left:
            log.warning("background settles: %d not answered before close; left in %s", left, self.spool.path)
        return left


def item_retry_after(body: Any) -> float | None:
    """The seconds a bulk item's problem body asks to wait (`retry_after_seconds`), or None."""
    asked = body.get("retry_after_seconds") if isinstance(body, dict) else None
    if isinstance(asked, bool) or not isinstance(asked, int | float):
        return None
    return max(0.0, float(asked))


def bulk_answers(response: httpx.Response, count: int) -> list[tuple[int, Any]] | None:
    """(status, body) of each item of a bulk settle's answer; None unless it is one, for `count` items."""
    try:
        results = response.json()["results"]
        answers = [(int(result["status"]), result.get("body")) for result in results]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return answers if len(answers) == count else None


class ThreadedSettler:
    """A BackgroundSettler for the blocking client: an event loop of its own in a daemon thread.
    `send` is the client's (its httpx client in a worker thread: the caller's transport, proxy and
    connection pool). `put` blocks until the settle is on disk."""

    def __init__(self, spool: Spool, send: Send, policy: RetryPolicy) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tokentill-settles", daemon=True)
        self._thread.start()

        async def start() -> BackgroundSettler:
            return BackgroundSettler(spool, send, policy)

        self.settler = self._wait(start())

    def _wait(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def put(self, record: SpoolRecord) -> None:
        self._wait(self.settler.put(record))

    def close(self, deadline_s: float) -> int:
        """Drain (see BackgroundSettler.drain), then stop the thread; how many were left."""
        left = self._wait(self.settler.drain(deadline_s))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        return left
