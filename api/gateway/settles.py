"""The gateway's settles, off the response path: each is written to a local spool and fsynced
(api.spool, the SDK's), then sent through the wallet engine in bulk by one task
(api.background.BackgroundSettler, as the SDK's background settles are sent over HTTP).

A settle the ledger cannot take now (the database down) stays queued and is sent again after a
backoff; one it refuses for good (the reservation closed) goes to the spool's `.rejected` file.
Usage past the plausibility bounds is the provider's for a call answered already: charged, marked
forced by the gateway (FORCED_BY). What is left in the spool when the gateway stops, or dies, is sent when
it next starts on the same database. Each settle carries an idempotency key derived from its
customer and request id, so a settle sent twice (again after a crash, or by two workers sharing
the spool) is charged once.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
from collections.abc import Collection
from pathlib import Path
from typing import Any

import httpx
import msgspec

from api.background import BackgroundSettler, item_of, item_retry_after
from api.delivery import DURABLE_RETRY, RetryPolicy
from api.errors import RETRY_AFTER_S, STATUS_BY_CODE
from api.gateway.config import SETTLE_MARGIN_SECONDS
from api.routes.inputs import usage_tokens
from api.spool import SUFFIX, Spool, SpoolRecord, spool_dir
from ledger.db import RetriesExhaustedError, is_unavailable
from ledger.errors import LedgerError
from ledger.model import request_hash
from pricing.errors import PricingError
from pricing.usage_reader import MAX_SERVICE_TIER
from wallets.commands import Settle
from wallets.core.idempotency import IdemKey, Replayed

log = logging.getLogger("tokentill.gateway")
SCOPE = "gateway"  # the idempotency scope of the gateway's settles
RETRY = RetryPolicy(backoff_s=0.2, max_backoff_s=10.0)
DRAIN_S = 5.0  # how long a stopping gateway waits for its queued settles
SETTLE_WAIT_S = float(SETTLE_MARGIN_SECONDS)  # the longest an answer waits for its settle's charge (mode "wait")
# A gateway settle is the provider's usage of a call answered already: one past the plausibility
# bounds (the book's context window, the maximum charge: a compaction's sampling added to the call's,
# a prompt the hold counted short) is charged, marked forced by the gateway with the bound it passed,
# never refused and set aside (the answered call would be charged nothing).
FORCED_BY = "gateway"
# The prices a call leaves to the provider that a settle may assume when the answer does not tell
# them (api.gateway.forwarding: the values its hold was priced at).
ASSUMED = ("service_tier", "inference_geo")


class RoundsSpool(Spool):
    """A spool that strikes off what was delivered in rounds of `every` records rather than after
    each batch: a strike-off rewrites the file and fsyncs it and its directory, under the lock every
    append waits on, and per batch it cost more CPU than the rest of a call. A record delivered but
    not yet struck off is sent again after a crash, and charged once under its key."""

    def __init__(self, path: str | os.PathLike[str], every: int = 500) -> None:
        super().__init__(path)
        self.every = every
        self._delivered: set[str] = set()
        self._lock = threading.Lock()  # strike-offs run in worker threads

    def remove(self, keys: Collection[str], rejected: Collection[tuple[SpoolRecord, str]] = ()) -> int:
        with self._lock:
            self._delivered |= set(keys)
            if not rejected and len(self._delivered) < self.every:
                return -1  # not counted: nothing rewritten
            keys, self._delivered = self._delivered, set()
        return super().remove(keys, rejected)

    def compact(self) -> int:
        """Strike off everything delivered so far (when stopping); how many calls (keys) are left."""
        with self._lock:
            keys, self._delivered = self._delivered, set()
        return super().remove(keys)


def spool_for(database_url: str, directory: str | os.PathLike[str] | None = None) -> RoundsSpool:
    """The gateway spool of one database: under the spool directory's `gateway/` (apart from the
    SDK's files, which `tokentill spool flush` re-sends over HTTP), named by the database."""
    name = "gateway-" + hashlib.sha256(database_url.encode()).hexdigest()[:24] + SUFFIX
    return RoundsSpool(Path(spool_dir(directory)) / "gateway" / name)


def settle_key(customer_id: str, request_id: str) -> str:
    """A call's settle idempotency key: derived from its customer and request id (scoped per customer)."""
    return "gw-settle-" + hashlib.sha256(f"{customer_id}\n{request_id}".encode()).hexdigest()


def settle_record(customer_id: str, request_id: str, reservation_id: str, form: str,
                  usage: dict[str, Any], assumed: dict[str, str] | None = None,
                  refused: dict[str, Any] | None = None) -> SpoolRecord:
    """The spool record of a call's final settle with `usage` (as `form`: usage, openai_usage, ...),
    the prices `assumed` (the tier its hold was priced at, that the answer did not tell) and the
    provider's usage `refused` in its place (refused_usage)."""
    return SpoolRecord("POST", f"/v1/reservations/{reservation_id}/settle",
                       {"customer_id": customer_id, "request_id": request_id, form: usage, "final": True,
                        **({"assumed": assumed} if assumed else {}),
                        **({"refused_usage": refused} if refused else {})},
                       settle_key(customer_id, request_id), reservation_id, SCOPE)


# the most of a refused usage object its charge's record keeps as reported (an upstream's usage is
# a few hundred bytes; one past this is kept as its size, the reason beside it)
REFUSED_USAGE_BYTES = 4096


def refused_usage(form: str, usage: Any, reason: str) -> dict[str, Any]:
    """The provider's usage the ledger could not read (two counts of one detail under its two names,
    say), as the charge that metered the call's output in its place records it: its form, the
    usage as reported (or its size, past REFUSED_USAGE_BYTES) and the reason it was refused."""
    size = len(msgspec.json.encode(usage))
    kept = {"reported": usage} if size <= REFUSED_USAGE_BYTES else {"reported_bytes": size}
    return {"form": form, **kept, "reason": reason[:1000]}


def unread_answer(size: int, content_type: str) -> dict[str, Any]:
    """Why a whole answer of 200 that is no JSON object (an HTML page, say) was charged the prompt
    as counted, as its charge's record keeps it in refused_usage: no usage could be read in it."""
    return {"form": "answer", "reported_bytes": size,
            "reason": f"the answer is not a JSON object (Content-Type {content_type[:200]}): "
                      "charged the prompt as counted"}


def with_refused(stored: dict[str, Any], refused: Any) -> dict[str, Any]:
    """The usage record of a settle with the provider's usage it was metered in place of, if any
    (refused_usage): the customer pays the metered output with the reading it set aside on record."""
    if not isinstance(refused, dict) or not isinstance(refused.get("form"), str):
        return stored
    return {**stored, "refused_usage": refused}


def with_assumed(stored: dict[str, Any], assumed: Any) -> dict[str, Any]:
    """The usage record of a settle (api.routes.inputs.usage_tokens) with the prices the gateway
    assumed (ASSUMED: the service tier, the inference geography its hold was priced at, which the
    answer did not tell) among its `dimensions`, which price it (wallets.core.rating; a re-rate
    reads them), and named apart in `assumed`: the provider's own word stays in `reported` and
    `canonical`, so an auditor tells the one from the other. A value the usage tells wins."""
    if not isinstance(assumed, dict) or not assumed:
        return stored
    kept = {name: value for name, value in assumed.items()
            if name in ASSUMED and isinstance(value, str) and 0 < len(value) <= MAX_SERVICE_TIER}
    reported = stored.get("dimensions") or {}
    kept = {name: value for name, value in kept.items() if name not in reported}
    if not kept:
        return stored
    return {**stored, "dimensions": {**kept, **reported}, "assumed": kept}


class GatewaySettles:
    """The queue of one gateway process: durable first, then settled through the engine in bulk."""

    def __init__(self, spool: Spool, wallets: Any) -> None:
        self.spool, self.wallets = spool, wallets
        self.settler: BackgroundSettler | None = None
        self._late: set[asyncio.Future[int | None]] = set()  # posts an answer stopped waiting for
        self.spool_down = False  # its last write failed: calls settle at once, without it

    def spool_refused(self, exc: OSError) -> None:
        """A write failed (a full disk, a file system gone read-only): said once, in one line, until
        it is written again; it was a traceback per call, by the thousand onto the full disk."""
        if not self.spool_down:
            self.spool_down = True
            log.error("gateway spool %s cannot be written (%s); each call is settled at once, without it, "
                      "until it can", self.spool.path, exc)

    def spool_written(self) -> None:
        if self.spool_down:
            self.spool_down = False
            log.warning("gateway spool %s is written again", self.spool.path)

    async def start(self) -> None:
        self.settler = BackgroundSettler(self.spool, self._send, RETRY)
        left = await asyncio.to_thread(self.spool.records)
        if left:  # an earlier run answered these calls and stopped before the ledger took their settles
            log.warning("gateway spool %s: %d settles left by an earlier run; sending them", self.spool.path, len(left))
            self.settler.adopt(left)

    async def stop(self) -> int:
        """Wait up to DRAIN_S for what is queued; returns how many settles are left in the spool."""
        left = await self.settler.drain(DRAIN_S) if self.settler is not None else 0
        if isinstance(self.spool, RoundsSpool):
            await asyncio.to_thread(self.spool.compact)
        return left

    async def put(self, record: SpoolRecord) -> None:
        """Queue a settle: it is on disk when this returns (an OSError is raised otherwise)."""
        assert self.settler is not None, "the gateway was not started"
        await self.settler.put(record)

    async def settle_waiting(self, record: SpoolRecord) -> int | None:
        """Spool a settle (fsynced), then settle it through the engine at once and return its
        charge, for an answer that carries it. Not taken now (the database down): the queue sends
        it again in the background and this returns None; refused for good: set aside, None. Not
        answered within SETTLE_WAIT_S (the ledger slow, or hung): None, and the post goes on."""
        assert self.settler is not None, "the gateway was not started"
        await self.settler.put(record, send=False)  # written with the others of the moment: one fsync
        posting = asyncio.ensure_future(self._post(record))
        try:
            return await asyncio.wait_for(asyncio.shield(posting), SETTLE_WAIT_S)
        except TimeoutError:
            self._late.add(posting)
            posting.add_done_callback(self._late.discard)
            return None

    async def _post(self, record: SpoolRecord) -> int | None:
        answer = await self._settle(item_of(record))
        status, key = answer["status"], record.idempotency_key
        if status == 200:
            await asyncio.to_thread(self.spool.remove, [key])
            return answer["body"]["charged"]
        if status in DURABLE_RETRY or status >= 500:  # sent again by the queue, after the wait it asked
            self.settler.adopt([record], item_retry_after(answer["body"]) or 0.0)
        else:
            await asyncio.to_thread(self.spool.remove, [key], [(record, f"{status} {answer['body']}")])
        return None

    async def settle_now(self, record: SpoolRecord) -> int | None:
        """Settle through the engine at once, without the spool: the charge, None if not taken."""
        answer = await self._settle(item_of(record))
        if answer["status"] != 200:
            raise RuntimeError(f"settle {record.idempotency_key} not taken: {answer}")
        return answer["body"]["charged"]

    async def _send(self, items: list[dict[str, Any]]) -> httpx.Response:
        """One bulk send, answered as `POST /v1/settlements` answers (the BackgroundSettler files it)."""
        answers = await asyncio.gather(*(self._settle(item) for item in items))
        return httpx.Response(200, json={"results": answers})

    async def _settle(self, item: dict[str, Any]) -> dict[str, Any]:
        key = item["idempotency_key"]
        forms = [name for name in ("usage", "openai_usage", "anthropic_usage") if isinstance(item.get(name), dict)]
        if len(forms) != 1 or not isinstance(item.get("customer_id"), str) or not item.get("reservation_id"):
            log.error("gateway spool: settle %s is malformed; set aside", key)
            return {"status": 422, "body": {"code": "validation_error", "detail": "a malformed spool record"}}
        form, assumed = forms[0], item.get("assumed")
        digest = request_hash({form: item[form], **({"assumed": assumed} if assumed is not None else {})})
        try:
            tokens, stored = usage_tokens(**{"usage": None, "openai_usage": None, "anthropic_usage": None,
                                             form: item[form]})
            stored = with_refused(with_assumed(stored, assumed), item.get("refused_usage"))
            result = await self.wallets.submit(Settle(
                customer_id=item["customer_id"], reservation_id=item["reservation_id"], request_hash=digest,
                tokens=tokens, usage=stored, final=True, idem=IdemKey(SCOPE, key, digest),
                forced_by=FORCED_BY))
        except (LedgerError, PricingError) as exc:
            log.error("gateway settle %s (request %s) refused: %s", key, item.get("request_id"), exc)
            return {"status": STATUS_BY_CODE.get(exc.code, 422), "body": {"code": exc.code, "detail": str(exc)}}
        except Exception as exc:
            if not (is_unavailable(exc) or isinstance(exc, RetriesExhaustedError)):
                log.exception("gateway settle %s (request %r, reservation %r) failed; left in the spool", key,
                              item.get("request_id"), item.get("reservation_id"))
                return {"status": 500, "body": {"code": "internal_error"}}
            # may be sent again, after the wait POST /v1/settlements' item asks (a whole call's
            # Retry-After): the queue waits it, where it sent again after its backoff's jitter alone
            return {"status": 503, "body": {"code": "service_unavailable", "retry_after_seconds": RETRY_AFTER_S}}
        return {"status": 200, "body": {"charged": _charged(result)}}


def _charged(result: Any) -> int | None:
    if isinstance(result, Replayed):  # sent before, under the same key: what it charged then
        body = result.body.get("body", result.body) if isinstance(result.body, dict) else None
        charged = body.get("charged") if isinstance(body, dict) else None
        return charged if isinstance(charged, int) else None
    return result.charged
