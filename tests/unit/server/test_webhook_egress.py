"""The dispatcher's network backend connects only where the address policy allows, resolving
the host itself, so a name that resolves to an internal address is refused at connect time."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import httpcore
import httpx
import pytest

from api.webhooks import Dispatcher, DispatchSettings, GuardedBackend, GuardedTransport
from wallets.webhooks.deliveries import Claimed, Outcome
from wallets.webhooks.rules import AddressPolicy, new_secret, parse_networks


async def _listener():
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001"])
async def test_a_loopback_host_in_any_spelling_is_refused_at_connect(host):
    server, port = await _listener()
    async with server:
        with pytest.raises(httpcore.ConnectError, match="loopback address"):
            await GuardedBackend(AddressPolicy()).connect_tcp(host, port, timeout=2)


async def test_an_allowed_network_connects_and_a_request_goes_through():
    server, port = await _listener()
    async with server:
        transport = GuardedTransport(AddressPolicy(parse_networks("127.0.0.0/8")), httpx.Limits(max_connections=2))
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.post(f"http://localhost:{port}/hook", content=b"{}")).status_code == 204


async def test_through_httpx_a_refusal_is_a_connect_error_naming_why():
    server, port = await _listener()
    async with server:
        transport = GuardedTransport(AddressPolicy(), httpx.Limits(max_connections=2))
        async with httpx.AsyncClient(transport=transport) as client:
            with pytest.raises(httpx.ConnectError, match=r"127\.0\.0\.1 is a loopback address"):
                await client.post(f"http://127.0.0.1:{port}/hook", content=b"{}")


async def test_an_unresolvable_host_fails_as_a_connect_error():
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await GuardedBackend(AddressPolicy()).connect_tcp("no-such-host.invalid", 80, timeout=2)


@pytest.mark.parametrize("host", ["a" * 64 + ".example.com", "a..example.com"])
async def test_a_host_idna_cannot_encode_fails_as_a_connect_error(host):
    # was a UnicodeError out of the delivery task: the attempt was never recorded, and its lease
    # ran out and sent it again, for ever (found by schemathesis through a created endpoint)
    with pytest.raises(httpcore.ConnectError, match="cannot resolve"):
        await GuardedBackend(AddressPolicy()).connect_tcp(host, 80, timeout=2)


async def test_a_url_httpx_cannot_parse_is_a_failed_attempt_not_a_lost_one():
    # IDNA 2008 refuses `§`, which Python's codec takes: httpx.InvalidURL is no HTTPError, and it
    # left the delivery task unrecorded (found by schemathesis through a created endpoint)
    at = datetime(2026, 12, 2, tzinfo=UTC)
    claimed = Claimed(7, "we_0123456789abcdef", "evt_1", "balance.low", {"id": "evt_1"}, at, 1, at, at,
                      "https://a\u00a7b.example.com/x", (new_secret(),))
    dispatcher = Dispatcher(None, DispatchSettings())  # type: ignore[arg-type]  # send needs no database
    dispatcher._client = httpx.AsyncClient(transport=GuardedTransport(AddressPolicy(), httpx.Limits()))
    async with dispatcher._client:
        outcome = await dispatcher.send(claimed)
    assert not outcome.succeeded and outcome.status_code is None and "InvalidURL" in outcome.error


@pytest.mark.parametrize("url", ["http://a..b/hook", "http://[v1.x]/hook", "http://xn--a.com/", "http://\u2488.com/"])
async def test_a_send_to_a_url_httpx_cannot_use_is_a_failed_attempt_not_a_crash(url):
    # http://xn--a.com/ raised idna's InvalidCodepoint out of Dispatcher.send (neither an
    # httpx.HTTPError nor InvalidURL): no attempt was ever recorded for it
    now = datetime.now(UTC)
    claimed = Claimed(1, "we_x", "evt_x", "balance.low", {"id": "evt_x"}, now, 1, now, now, url, (new_secret(),))
    dispatcher = Dispatcher(None, DispatchSettings(timeout_s=2))  # type: ignore[arg-type]  # send needs no database
    dispatcher._client = httpx.AsyncClient(transport=GuardedTransport(AddressPolicy(), httpx.Limits()))
    async with dispatcher._client:
        outcome = await dispatcher.send(claimed)
    assert not outcome.succeeded and outcome.status_code is None and outcome.error


async def test_a_receiver_trickling_its_answer_fails_the_attempt_at_the_timeout():
    # httpx's timeout bounds each read, not the answer: a receiver sending its status line a byte
    # every 0.2 s was a success after 5 s with a 1 s timeout, past the claim's lease (2 x timeout
    # + 5 s), so another process could send the event again meanwhile
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        for byte in b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    now = datetime.now(UTC)
    claimed = Claimed(1, "we_x", "evt_x", "balance.low", {"id": "evt_x"}, now, 1, now, now,
                      f"http://127.0.0.1:{port}/hook", (new_secret(),))
    dispatcher = Dispatcher(None, DispatchSettings(timeout_s=1))  # type: ignore[arg-type]  # send needs no database
    dispatcher._client = httpx.AsyncClient(timeout=1, transport=GuardedTransport(
        AddressPolicy(parse_networks("127.0.0.0/8")), httpx.Limits()))
    async with server, dispatcher._client:
        outcome = await dispatcher.send(claimed)
    assert not outcome.succeeded and outcome.status_code is None, outcome
    assert outcome.error == "no answer within 1 s" and outcome.latency_ms < 2000 and outcome.timed_out


async def test_an_endpoint_counts_as_timing_out_from_an_attempt_without_answer_until_one_answered(monkeypatch):
    """Several endpoints that hang took every send of a process between them (each held to half):
    the claim is now told which endpoints' last attempt here got no answer in time, to hold them
    to half of the sends together; one answered attempt (a 503 too) takes an endpoint off it."""
    now = datetime.now(UTC)
    asked: list[list[str]] = []

    async def claim(conn, free, lease_s, *, share, mine, stalling, stalling_share, tried):
        asked.append(sorted(stalling))
        assert stalling_share == share == 2
        return []

    async def nothing(*args, **kwargs):
        return 0, 0

    class Db:
        async def committed(self, work):
            return await work(None)

    monkeypatch.setattr("api.webhooks.deliveries.fan_out", nothing)
    monkeypatch.setattr("api.webhooks.deliveries.claim", claim)
    monkeypatch.setattr("api.webhooks.deliveries.record", nothing)
    dispatcher = Dispatcher(Db(), DispatchSettings(timeout_s=1, concurrency=4))  # type: ignore[arg-type]
    outcomes = {"we_hang": Outcome(now, 1000, None, "no answer within 1 s", timed_out=True),
                "we_slow": Outcome(now, 1000, None, "no answer within 1 s", timed_out=True),
                "we_refused": Outcome(now, 3, None, "ConnectError: refused")}

    async def send(claimed):
        return outcomes[claimed.endpoint_id]

    dispatcher.send = send  # type: ignore[method-assign]
    for endpoint in outcomes:
        await dispatcher._deliver(Claimed(1, endpoint, "evt_x", "balance.low", {}, now, 1, now, now, "https://x/",
                                          ("whsec_x",)))
    await dispatcher.tick()
    outcomes["we_slow"] = Outcome(now, 40, 503)
    await dispatcher._deliver(Claimed(2, "we_slow", "evt_y", "balance.low", {}, now, 1, now, now, "https://x/",
                                      ("whsec_x",)))
    await dispatcher.tick()
    assert asked == [["we_hang", "we_slow"], ["we_hang"]]


class _Db:
    async def committed(self, work):
        return await work(None)


def _claimed(endpoint: str, n: int = 1) -> Claimed:
    now = datetime.now(UTC)
    return Claimed(n, endpoint, f"evt_{n}", "balance.low", {}, now, 1, now, now, "https://x/", ("whsec_x",))


def _dispatcher(monkeypatch, outcomes: dict[str, Outcome], asked: list[dict], enabled: set[str],
                poll_s: float = 5.0) -> Dispatcher:
    async def claim(conn, free, lease_s, *, share, mine, stalling, stalling_share, tried):
        asked.append({"stalling": sorted(stalling), "tried": sorted(tried)})
        return []

    async def nothing(*args, **kwargs):
        return 0, 0

    async def still_enabled(conn, ids):
        return {e for e in ids if e in enabled}

    monkeypatch.setattr("api.webhooks.deliveries.fan_out", nothing)
    monkeypatch.setattr("api.webhooks.deliveries.claim", claim)
    monkeypatch.setattr("api.webhooks.deliveries.record", nothing)
    monkeypatch.setattr("api.webhooks.deliveries.enabled", still_enabled)
    dispatcher = Dispatcher(_Db(), DispatchSettings(timeout_s=1, poll_s=poll_s, concurrency=4))  # type: ignore[arg-type]

    async def send(claimed):
        return outcomes[claimed.endpoint_id]

    dispatcher.send = send  # type: ignore[method-assign]
    return dispatcher


async def test_endpoints_deleted_or_disabled_are_forgotten(monkeypatch):
    """The endpoints timing out were kept for the life of the process, deleted and disabled ones
    too (a slow leak; an endpoint enabled again stayed held to the share of those timing out).
    Every poll_s the dispatcher keeps only those still enabled."""
    now = datetime.now(UTC)
    hang, ok = Outcome(now, 1000, None, "no answer within 1 s", timed_out=True), Outcome(now, 40, 200)
    asked: list[dict] = []
    outcomes = {"we_hang": hang, "we_deleted": hang, "we_disabled": hang, "we_ok": ok, "we_ok_deleted": ok}
    dispatcher = _dispatcher(monkeypatch, outcomes, asked, enabled={"we_hang", "we_ok"}, poll_s=0.01)
    for n, endpoint in enumerate(outcomes):
        await dispatcher._deliver(_claimed(endpoint, n))
    await asyncio.sleep(0.02)
    await dispatcher.tick()
    assert asked == [{"stalling": ["we_hang"], "tried": ["we_hang", "we_ok"]}]


async def test_an_endpoint_not_yet_tried_is_told_apart_and_its_first_answer_wakes_the_dispatcher(monkeypatch):
    """An endpoint this process has not tried gets one send in a claim (see deliveries.claim):
    the claim is told which ones it has tried; the first answer of one wakes the dispatcher, so its
    backlog goes out at once, not at the next poll."""
    now = datetime.now(UTC)
    asked: list[dict] = []
    outcomes = {"we_new": Outcome(now, 40, 204), "we_hang": Outcome(now, 1000, None, "no answer", timed_out=True)}
    dispatcher = _dispatcher(monkeypatch, outcomes, asked, enabled=set(outcomes))
    await dispatcher.tick()
    await dispatcher._deliver(_claimed("we_hang"))
    assert not dispatcher._wake.is_set(), "no answer: nothing more to send to it now"
    await dispatcher._deliver(_claimed("we_new"))
    assert dispatcher._wake.is_set()
    dispatcher._wake.clear()
    await dispatcher._deliver(_claimed("we_new", 2))
    assert not dispatcher._wake.is_set(), "only its first answer"
    await dispatcher.tick()
    assert asked == [{"stalling": [], "tried": []}, {"stalling": ["we_hang"], "tried": ["we_hang", "we_new"]}]


@pytest.mark.parametrize(("answer", "why"), [
    (b"HTTP/1.1 302 Found\r\nlocation: https://elsewhere.example.com/hook\r\ncontent-length: 0\r\n\r\n",
     "redirect not followed (302 to https://elsewhere.example.com/hook)"),
    (b"HTTP/1.1 307 Temporary Redirect\r\ncontent-length: 0\r\n\r\n", "redirect not followed (307, no Location)"),
])
async def test_a_redirect_is_a_failed_attempt_that_says_why(answer, why):
    # was a failure with error null: the log showed 302 and no reason (redirects are not followed)
    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    at = datetime(2026, 12, 2, tzinfo=UTC)
    claimed = Claimed(7, "we_0123456789abcdef", "evt_1", "balance.low", {"id": "evt_1"}, at, 1, at, at,
                      f"http://127.0.0.1:{port}/hook", (new_secret(),))
    dispatcher = Dispatcher(None, DispatchSettings())  # type: ignore[arg-type]  # send needs no database
    policy = AddressPolicy(parse_networks("127.0.0.0/8"))
    dispatcher._client = httpx.AsyncClient(transport=GuardedTransport(policy, httpx.Limits()))
    async with server, dispatcher._client:
        outcome = await dispatcher.send(claimed)
    assert not outcome.succeeded and outcome.status_code == int(why[23:26]) and outcome.error == why
