"""The webhook dispatcher: each server process runs one beside the API, on connections of its own.

When an outbox event is committed (migration 0022 announces it on `tokentill_outbox`, which
the dispatcher LISTENs on with a connection of its own), and otherwise every `poll_s` (a slow
fallback: retries falling due, leases running out, a listener that is down), it fans new outbox
events out to the deliveries of subscribed endpoints, claims
what is due (leased, so a process that dies hands its work on when the lease runs out; several
processes share the work with SKIP LOCKED), and sends each delivery as its own task, signed per
Standard Webhooks, within `timeout_s`. A slow or dead endpoint ties up at most its own
`max_in_flight` sends over all processes; other endpoints and the wallet write path never wait
for it. Nothing here holds a lane lock or a SERIALIZABLE transaction.

Deliveries connect only where the `AddressPolicy` allows (public addresses, and the networks the
operator named): the host is resolved when a connection opens, every address it resolves to is
checked, and the connection goes to a checked address, so a name that resolves elsewhere later
(DNS rebinding) or a redirect (never followed) cannot reach an internal service.
"""
from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpcore
import httpx
import msgspec
import psycopg
from prometheus_client import Counter, Histogram
from standardwebhooks import Webhook

from api.listening import listen
from ledger.db import Database
from wallets.errors import WalletValidationError
from wallets.webhooks import deliveries
from wallets.webhooks.deliveries import Claimed, Outcome
from wallets.webhooks.endpoints import CHANNEL  # announced at commit: outbox inserts (0022), re-drives
from wallets.webhooks.rules import AddressPolicy, RetryPolicy

log = logging.getLogger("tokentill.webhooks")
USER_AGENT = "tokentill-webhooks/0.1"
FAN_OUT_PAGE = 500
ATTEMPTS = Counter("tokentill_webhook_attempts", "Webhook delivery attempts", ["result"])
# Each round (fan-out, claim): a dispatcher that cannot work says so here, not only in its log
ROUNDS = Counter("tokentill_webhook_rounds", "Webhook dispatcher rounds", ["result"])
LATENCY = Histogram("tokentill_webhook_latency_seconds", "Webhook delivery attempt latency",
                    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


@dataclass(frozen=True, slots=True)
class DispatchSettings:
    timeout_s: float = 10.0  # one attempt, connect to last byte of the answer's head
    poll_s: float = 5.0  # the fallback poll; committed events wake the dispatcher at once
    concurrency: int = 32  # sends in flight in this process, over all endpoints

    @property
    def share(self) -> int:
        """The most sends one endpoint may hold in this process: half of them, so that an endpoint
        that hangs (its max_in_flight may be 64) leaves the other half to the others. The endpoints
        timing out (their last attempt in this process got no answer in time) hold at most as
        many together, so that several hanging ones leave that half to the others too; one this
        process has not tried yet holds one until it has (see deliveries.claim)."""
        return max(1, self.concurrency // 2)
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    addresses: AddressPolicy = field(default_factory=AddressPolicy)

    @property
    def lease_s(self) -> float:
        """How long a claim lasts: a send ends within the timeout, and its record a moment later;
        past this, the process is taken for dead and another sends the event again."""
        return 2 * self.timeout_s + 5.0


def body_of(claimed: Claimed) -> bytes:
    """What a receiver gets: {"type", "timestamp", "data"}, the Standard Webhooks payload shape;
    `data` is the event as the outbox holds it (its `id` is the webhook-id)."""
    return msgspec.json.encode({"type": claimed.topic, "timestamp": claimed.event_at, "data": claimed.payload})


def signed_headers(claimed: Claimed, body: bytes, at: datetime) -> dict[str, str]:
    """webhook-id, webhook-timestamp and webhook-signature, one `v1,` signature per live secret."""
    text = body.decode()
    signature = " ".join(Webhook(secret).sign(claimed.event_id, at, text) for secret in claimed.secrets)
    return {"webhook-id": claimed.event_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature, "content-type": "application/json", "user-agent": USER_AGENT}


def sendable(url: str, field: str = "url") -> str:
    """`url`, if the dispatcher's client can send to it: httpx parses a host with IDNA 2008,
    stricter than the codec check_url uses (`a§b.example.com` passes that one, not this), decodes
    an `xn--` name when it sends (idna's errors are no InvalidURL), and the resolver encodes a
    name with Python's IDNA codec (an empty label, `a..b`, or one over 63 characters fails)."""
    try:
        parsed = httpx.URL(url)
        parsed.host  # noqa: B018 -- decodes an xn-- label, as a request does
        host = parsed.raw_host.decode("ascii")
        if not _is_address(host):
            host.encode("idna")  # as getaddrinfo does
    except (httpx.InvalidURL, UnicodeError) as exc:  # idna's errors are UnicodeErrors
        raise WalletValidationError(field, f"not a URL the webhook client can send to: {exc}") from None
    return url


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, resolving each host itself and connecting only to addresses
    the policy allows; a refused one fails the attempt as a connection error naming why."""

    def __init__(self, policy: AddressPolicy) -> None:
        self.policy, self.inner = policy, httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 -- httpcore's signature
                          local_address: str | None = None, socket_options=None) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from None
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode (a label over 63)
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for address in addresses:
            reason = self.policy.refusal(address)
            if reason is not None:
                raise httpcore.ConnectError(f"refused to connect to {host}: {reason}")
        error: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport on a connection pool whose connections open through `GuardedBackend`
    (TLS still verifies the URL's host name)."""

    def __init__(self, policy: AddressPolicy, limits: httpx.Limits) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False), max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections, keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedBackend(policy))


STOP_S = 5.0  # the longest a stopping dispatcher waits for its tasks
LISTENER_NAME = "tokentill webhook listener"  # its application_name in pg_stat_activity


class Dispatcher:
    def __init__(self, db: Database, settings: DispatchSettings, *, listen_url: str | None = None,
                 retry_s: float = 1.0) -> None:
        """`listen_url`: a libpq URL to LISTEN for committed outbox events on; without it the
        dispatcher polls every `poll_s` only."""
        self.db, self.settings, self.listen_url, self.retry_s = db, settings, listen_url, retry_s
        self._sends: set[asyncio.Task[None]] = set()
        self._by_endpoint: dict[str, int] = {}  # this process's open sends, per endpoint
        # Endpoints tried in this process: True when the last attempt got an answer in time (any
        # status, or a failure to connect), False when it timed out. Kept to those still enabled.
        self._answered: dict[str, bool] = {}
        self._pruned_at = time.monotonic()
        self._loop: asyncio.Task[None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # made again by each start(): an Event is bound to the loop that waits on it
        self.listening = False
        self._client: httpx.AsyncClient | None = None

    def start(self) -> None:
        """Start on the running event loop, which may be another than an earlier start's (an app's
        second lifespan: a test client runs each on an event loop of its own)."""
        self._wake = asyncio.Event()
        limits = httpx.Limits(max_connections=self.settings.concurrency, max_keepalive_connections=8)
        self._client = httpx.AsyncClient(timeout=self.settings.timeout_s, follow_redirects=False, trust_env=False,
                                         transport=GuardedTransport(self.settings.addresses, limits))
        for result in ("ok", "error"):  # both series from the start, at 0: an alert on a rate sees them
            ROUNDS.labels(result)
        self._loop = asyncio.create_task(self._run(), name="webhook-dispatcher")
        if self.listen_url is not None:
            self._listener = asyncio.create_task(self._listen(), name="webhook-listener")

    async def stop(self) -> None:
        """Stop sending; what was in flight is sent again by whichever process claims it next."""
        tasks = [t for t in (self._loop, self._listener, *self._sends) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:  # (a done task is left alone: its loop may be gone, as under a test client's portal)
            _, stuck = await asyncio.wait(tasks, timeout=STOP_S)
            if stuck:  # never wait forever on a task that did not take its cancellation
                log.warning("webhook dispatcher stopping without %s", ", ".join(t.get_name() for t in stuck))
        if self._client is not None:
            await self._client.aclose()
        await self.db.dispose()

    async def _run(self) -> None:
        failing = 0  # rounds failed in a row: the first is said, the next ones counted, the recovery said
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database down or restarting: try again next round
                ROUNDS.labels("error").inc()
                (log.debug if failing else log.warning)(
                    "webhook dispatch round failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
                failing += 1
            else:
                ROUNDS.labels("ok").inc()
                if failing:
                    log.warning("webhook dispatch rounds succeed again after %d failed", failing)
                    failing = 0
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation that
            # arrives as the event is set, and the dispatcher then never stopped (app shutdown hung)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_s):
                    await self._wake.wait()
            self._wake.clear()  # a notification during the round that follows wakes the next one

    async def _listen(self) -> None:
        """Wake the dispatcher at each committed outbox event. While the listener is down the
        fallback poll goes on; once it is back, one round catches up on what it missed."""
        assert self.listen_url is not None  # start() starts it only with one
        await listen(self.listen_url, CHANNEL, LISTENER_NAME, self.retry_s, log, up=self._up, serve=self._woken,
                     gone=self._gone, back="webhook listener listens again",
                     down=lambda why: f"webhook listener down, polling every {self.settings.poll_s:g} s ({why})")

    def _up(self) -> None:
        self.listening = True

    async def _woken(self, conn: psycopg.AsyncConnection) -> None:
        self._wake.set()
        async for _ in conn.notifies():
            self._wake.set()

    def _gone(self) -> None:
        self.listening = False

    async def tick(self) -> int:
        """One round: fan out, claim, start sends. Returns how many sends it started."""
        while (await self.db.committed(lambda c: deliveries.fan_out(c, FAN_OUT_PAGE)))[0] == FAN_OUT_PAGE:
            pass
        if self._answered and time.monotonic() - self._pruned_at >= self.settings.poll_s:
            await self._forget_gone()
        free = self.settings.concurrency - len(self._sends)
        if free <= 0:
            return 0
        mine, tried = dict(self._by_endpoint), list(self._answered)
        stalling = [e for e, answered in self._answered.items() if not answered]
        claimed = await self.db.committed(lambda c: deliveries.claim(
            c, free, self.settings.lease_s, share=self.settings.share, mine=mine, stalling=stalling,
            stalling_share=self.settings.share, tried=tried))
        for item in claimed:
            self._by_endpoint[item.endpoint_id] = self._by_endpoint.get(item.endpoint_id, 0) + 1
            task = asyncio.create_task(self._deliver(item))
            self._sends.add(task)
            task.add_done_callback(lambda t, e=item.endpoint_id: self._done(t, e))
        return len(claimed)

    async def _forget_gone(self) -> None:
        """Drop the endpoints deleted or disabled since they were tried (one enabled again starts
        afresh, as one never tried)."""
        self._pruned_at = time.monotonic()
        asked = list(self._answered)
        kept = await self.db.committed(lambda c: deliveries.enabled(c, asked))
        for endpoint_id in set(asked) - kept:
            self._answered.pop(endpoint_id, None)

    def _done(self, task: asyncio.Task[None], endpoint_id: str) -> None:
        self._sends.discard(task)
        left = self._by_endpoint.pop(endpoint_id) - 1
        if left > 0:
            self._by_endpoint[endpoint_id] = left

    async def _deliver(self, claimed: Claimed) -> None:
        outcome = await self.send(claimed)
        first = claimed.endpoint_id not in self._answered
        self._answered[claimed.endpoint_id] = not outcome.timed_out
        if first and not outcome.timed_out:
            self._wake.set()  # its first answer: the rest of its share may be claimed now
        ATTEMPTS.labels("succeeded" if outcome.succeeded else "failed").inc()
        LATENCY.observe(outcome.latency_ms / 1000)
        try:
            await self.db.committed(lambda c: deliveries.record(c, claimed, outcome, self.settings.policy))
        except Exception:  # unrecorded: the lease runs out and the event is sent again (at least once)
            log.exception("could not record webhook delivery %s", claimed.id)

    async def send(self, claimed: Claimed) -> Outcome:
        assert self._client is not None
        body = body_of(claimed)
        at = datetime.now(UTC)
        started = time.perf_counter()
        code, error, timed_out = None, None, False
        try:
            # the whole attempt, not each read as httpx's timeout: a receiver trickling its answer
            # would otherwise outlast the claim's lease, and another process send the event again
            async with asyncio.timeout(self.settings.timeout_s), self._client.stream(
                    "POST", claimed.url, content=body, headers=signed_headers(claimed, body, at)) as response:
                code = response.status_code  # the answer's body is not read: only its status counts
                location = response.headers.get("location")
            if not 100 <= code <= 599:
                code, error = None, f"invalid HTTP status {code}"
            elif 300 <= code < 400:  # a failure like any answer but 2xx: the log says why (not followed)
                where = f" to {location}" if location else ", no Location"
                error = f"redirect not followed ({code}{where})"[:500]
        except (httpx.TimeoutException, TimeoutError):
            code, error, timed_out = None, f"no answer within {self.settings.timeout_s:g} s", True
        except Exception as exc:  # an unrecorded attempt would be claimed again at every lease, forever:
            # httpx.HTTPError mostly, but httpx.InvalidURL and IDNA errors (a URL it cannot use) are not
            error = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        latency = round((time.perf_counter() - started) * 1000)
        return Outcome(at, latency, code, error, timed_out)
