"""A new client's spool replay, off the request path: a task of the client (a thread of its own
for the blocking one) re-sends what an earlier run left in the spool while the client's calls go
ahead at once.

Spooled settles go in bulk, up to `MAX_ITEMS` a call, through `POST /v1/settlements`, each item
under the Idempotency-Key its single settle carried (the server answers a key it has seen with its
first answer, so a settle delivered before the answer was lost is not charged again); a server
without that endpoint (404 or 405) gets them one by one, as do releases. Each file is sent under
its flush lock, as `tokentill spool flush` sends it, so two processes sharing a spool directory
never send the same record at once; a file another flusher holds is left to it. An answer strikes
a record off after each call (a refusal goes to the `.rejected` file); a 401, 403, 404, 408 or
other 5xx leaves it for the next flush; a connection error, 429, 502-504 or a 200 that is not the
endpoint's answer ends the round: the
lock is let go and the rest is sent again after a backoff, until sent or the client closes.
Closing stops the replay (a call in flight may land; its records stay spooled and are answered
by key next time). Only the records spooled before the replay was made (with the client) are
sent: settles spooled later are this run's own, delivered (and struck off) by whoever spooled
them, even when the replay's thread first reads the file after one of them was written.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from api.background import MAX_BYTES, MAX_ITEMS, bulk_answers, is_settle, item_of, item_retry_after
from api.delivery import RetryPolicy, retry_after, status_outcome
from api.spool import FlushReport, Spool, SpoolRecord, release_lock

log = logging.getLogger("tokentill.client")
SendBulk = Callable[[list[dict[str, Any]]], Awaitable[httpx.Response]]
SendOne = Callable[[SpoolRecord], Awaitable[tuple[str, str]]]
T = TypeVar("T")


class _Again(Exception):
    """The server could not be reached (or asked to wait): the rest of the file waits a round."""

    def __init__(self, wait: float | None) -> None:
        self.wait = wait


class SpoolReplay:
    """Re-sends spool files in rounds until every record has an answer (or the task is cancelled)."""

    _sleep = staticmethod(asyncio.sleep)  # the backoff between rounds (tests record it)

    def __init__(self, spools: list[Spool], send_bulk: SendBulk, send_one: SendOne, policy: RetryPolicy) -> None:
        self._spools, self._send_bulk, self._send_one, self._policy = spools, send_bulk, send_one, policy
        self._bulk = True  # until the server says it has no POST /v1/settlements
        self._todo: dict[Spool, set[str] | None] = {spool: None for spool in spools}  # None: not read yet
        self._began = datetime.now(UTC)  # records spooled since are this run's own
        self.report = FlushReport()

    async def run(self) -> FlushReport:
        attempt = 0
        while self._todo:
            waits: list[float | None] = []
            for spool in list(self._todo):
                try:
                    await self._round(spool)
                except _Again as again:
                    waits.append(again.wait)
                else:
                    del self._todo[spool]
            if self._todo:
                asked = [w for w in waits if w is not None]
                await self._sleep(self._policy.wait(attempt, max(asked) if asked else None))
                attempt += 1
        if self.report.delivered or self.report.rejected or self.report.kept:
            log.warning("spool replay: %s", self.report)
        return self.report

    async def _round(self, spool: Spool) -> None:
        if not spool.path.exists():  # nothing spooled, or all of it struck off: nothing to send, and no
            return                     # lock to take (its directory made for nothing, or on a read-only disk not)
        fd = await spool.atake_flush_lock()  # cancelled meanwhile: a lock it took is let go at once
        if fd is None:  # another flusher (another process on this directory) sends this file
            self.report.busy = True
            return
        try:
            records = await _unbroken(spool.records)
            keys = self._todo[spool]
            if keys is None:
                keys = self._todo[spool] = {r.idempotency_key for r in records if self._earlier(r)}
            records = [r for r in records if r.idempotency_key in keys]
            settles = [r for r in records if is_settle(r.path)] if self._bulk else []
            for batch in _batches(settles):
                await self._send_batch(spool, keys, batch)
            for record in records:
                if record.idempotency_key in keys:  # not answered in bulk: a release, or no bulk endpoint
                    outcome, note = await self._send_one(record)
                    await self._file(spool, keys, [(record, outcome, note)])
        finally:
            release_lock(fd)

    def _earlier(self, record: SpoolRecord) -> bool:
        """Spooled before the replay was made (a record without a readable time: an earlier run's)."""
        try:
            at = datetime.fromisoformat(record.spooled_at)
        except (TypeError, ValueError):
            return True
        return at.tzinfo is None or at < self._began

    async def _send_batch(self, spool: Spool, keys: set[str], batch: list[SpoolRecord]) -> None:
        if not self._bulk:
            return
        try:
            response = await self._send_bulk([item_of(record) for record in batch])
        except httpx.TransportError as exc:
            log.info("spool replay: %s; sending again later", exc)
            raise _Again(None) from exc
        if response.status_code in (404, 405):  # no bulk endpoint on this server: one by one
            self._bulk = False
            return
        if response.status_code != 200:
            outcome = status_outcome(response.status_code)
            if outcome == "unreachable":
                raise _Again(retry_after(response))
            if outcome == "kept":  # about the key or the server, not the settles: left for a flush
                await self._file(spool, keys, [(r, "kept", f"{response.status_code}") for r in batch])
            return  # a refusal of the whole call (a malformed item, say): each goes singly
        results = bulk_answers(response, len(batch))
        if results is None:  # not the endpoint's answer (a proxy's page, a body cut short): a round later
            log.warning("spool replay: a 200 that is not /v1/settlements' answer: %s", response.text[:300])
            raise _Again(None)
        answers = [(r, status_outcome(status), f"{status} {body}") for r, (status, body) in zip(batch, results,
                                                                                                strict=True)]
        # an item has no header, but its body may ask a wait (`retry_after_seconds`): the longest asked
        asked = [wait for status, body in results
                 if status_outcome(status) == "unreachable" and (wait := item_retry_after(body)) is not None]
        await self._file(spool, keys, answers, max(asked) if asked else None)

    async def _file(self, spool: Spool, keys: set[str], answers: list[tuple[SpoolRecord, str, str]],
                    wait: float | None = None) -> None:
        """Tally answers and strike the answered records off; raise _Again (to wait `wait`, when
        the answers asked one) if one was not."""
        done: set[str] = set()
        rejected: list[tuple[SpoolRecord, str]] = []
        again = False
        for record, outcome, note in answers:
            if outcome == "unreachable":
                again = True
                continue
            keys.discard(record.idempotency_key)
            if outcome == "delivered":
                self.report.delivered += 1
                done.add(record.idempotency_key)
            elif outcome == "rejected":
                self.report.rejected += 1
                done.add(record.idempotency_key)
                rejected.append((record, note))
            else:
                self.report.kept += 1
                self.report.problems.append(f"{record.method} {record.path}: {note}")
        if done:
            await _unbroken(spool.remove, done, rejected)
        if again:
            raise _Again(wait)


def _batches(records: list[SpoolRecord]) -> list[list[SpoolRecord]]:
    """Up to MAX_ITEMS settles and about MAX_BYTES a call (one at least)."""
    batches: list[list[SpoolRecord]] = []
    batch: list[SpoolRecord] = []
    size = 0
    for record in records:
        size += len(record.line())
        if batch and (len(batch) == MAX_ITEMS or size > MAX_BYTES):
            batches.append(batch)
            batch, size = [], len(record.line())
        batch.append(record)
    return [*batches, batch] if batch else batches


async def _unbroken(fn: Callable[..., T], *args: Any) -> T:
    """File work in a thread that a cancellation does not cut short: a strike-off under way ends
    before the flush lock is let go, so no other flusher reads records already answered."""
    work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait([work])
        raise


async def replay_logged(replay: SpoolReplay) -> FlushReport | None:
    """Run a replay; its failure (a spool it cannot read, say) is logged, never raised."""
    try:
        return await replay.run()
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        log.exception("spool replay failed; what is left stays in the spool")
        return None


class ReplayThread:
    """A SpoolReplay on an event loop of its own in a daemon thread, for the blocking client."""

    def __init__(self, replay: SpoolReplay) -> None:
        self._replay, self._lock, self._stopped = replay, threading.Lock(), False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[Any] | None = None
        self.report: FlushReport | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="tokentill-spool-replay",
                                        daemon=True)
        self._thread.start()

    async def _main(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._loop, self._task = asyncio.get_running_loop(), asyncio.current_task()
        try:
            self.report = await replay_logged(self._replay)
        except asyncio.CancelledError:
            pass

    def wait(self, timeout: float | None = None) -> FlushReport | None:
        """Wait for the replay to end, at most `timeout`; its report, None while it goes on."""
        self._thread.join(timeout)
        return None if self._thread.is_alive() else self.report

    def stop(self, timeout: float | None = None) -> None:
        """Stop it and wait for the thread, at most `timeout`: a call in flight (in a worker thread,
        which nothing interrupts) may outlast it; its answer is not filed, its records stay spooled."""
        with self._lock:
            self._stopped = True
            if self._loop is not None and self._task is not None:
                try:
                    self._loop.call_soon_threadsafe(self._task.cancel)
                except RuntimeError:  # its loop has closed: the replay is over
                    pass
        self._thread.join(timeout)
