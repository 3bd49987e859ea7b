"""The gateway's upstream connections, driven by the official clients: HTTP/2 over TLS where the
upstream offers it (a self-signed CA trusted through the gateway's `upstream_ca`), HTTP/1.1
otherwise, pooled; a silent upstream is a provider-shaped 504 and releases the hold; and an upstream
call is retried only when its connection failed to open, never once the request was sent.

Three gateways share the module: `h2`, whose OpenAI upstream is the fake over TLS offering h2 and
http/1.1 (5 streams at most per connection) and whose Anthropic upstream offers http/1.1 only;
`flaky`, whose OpenAI upstream sits behind a front that drops the first two connections and whose
Anthropic upstream drops every connection; and `plain`, which trusts no extra CA, whose OpenAI
upstream hangs up after reading each request and whose Anthropic upstream is the h2 fake. Two
more, each for one test, call a fake allowing 2 streams per HTTP/2 connection (`narrow`): `spread`
(as many connections as it needs) and `single` (one connection, a pool timeout of 1 s); and `roomy`,
h2's upstreams with the default read timeout, for 12 streams at once."""
from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import anthropic
import httpcore._async.http2 as httpcore_h2
import httpx
import openai
import pytest

from api.bench import fake_upstream as fk
from api.bench.common import free_port
from api.gateway import connections
from api.gateway.config import GatewaySettings
from tests.api.test_gateway import (
    CALL,
    CHAT_CHARGE,
    HI,
    IN,
    MESSAGES_CHARGE,
    OUT,
    RESPONSES_CHARGE,
    M,
    charged,
    claude,
    customer,
    oai,
    read_until_dropped,
    serving,
    wallet,
    words,
)
from tests.upstream_tls import DroppingFront, HangingUp, TLSFake, make_certs

READ_TIMEOUT = 2.0
MAX_STREAMS = 5


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path, Path]:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls(certs) -> Iterator[TLSFake]:
    server = TLSFake(free_port(), certs[1], certs[2], max_streams=MAX_STREAMS)
    server.begin()
    yield server
    server.fake.release()
    server.stop()


@pytest.fixture(scope="module")
def tls_h1(certs) -> Iterator[TLSFake]:
    server = TLSFake(free_port(), certs[1], certs[2], alpn=("http/1.1",))
    server.begin()
    yield server
    server.stop()


class _Upstreams:
    def __init__(self, openai_url: str, anthropic_url: str) -> None:
        self.url, self.anthropic_url = openai_url, anthropic_url


def _serve(database_url: str, openai_url: str, anthropic_url: str, **gateway) -> Iterator[tuple[str, str]]:
    fake = _Upstreams(openai_url, anthropic_url)
    # serving() points OpenAI at `{url}/v1` and Anthropic at `url`: give each its own
    yield from serving(database_url, fake, **{"anthropic_url": anthropic_url, **gateway})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def h2(database_url, tls, tls_h1, certs) -> Iterator[tuple[str, str]]:
    yield from _serve(database_url, tls.url, tls_h1.url, upstream_ca=str(certs[0]), read_timeout_s=READ_TIMEOUT)


@pytest.fixture(scope="module")
def fronts(tls) -> Iterator[tuple[DroppingFront, DroppingFront]]:
    some, every = (DroppingFront(free_port(), ("127.0.0.1", tls.port), drops) for drops in (2, 10**9))
    some.begin()
    every.begin()
    yield some, every
    some.stop()
    every.stop()


@pytest.fixture(scope="module")
def flaky(database_url, fronts, certs) -> Iterator[tuple[str, str]]:
    some, every = fronts
    yield from _serve(database_url, f"https://127.0.0.1:{some.port}", f"https://127.0.0.1:{every.port}",
                      upstream_ca=str(certs[0]), connect_timeout_s=5.0)


@pytest.fixture(scope="module")
def hanging() -> Iterator[HangingUp]:
    server = HangingUp(free_port())
    server.begin()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plain(database_url, hanging, tls) -> Iterator[tuple[str, str]]:
    yield from _serve(database_url, f"http://127.0.0.1:{hanging.port}", tls.url)


def _last(fake: fk.FakeUpstream, model: str) -> fk.Logged:
    return next(call for call in reversed(fake.calls) if call.body.get("model") == model)


# --- HTTP/2 over TLS, with the CA given by upstream_ca -------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_call_goes_upstream_over_http2_and_is_charged_its_usage(h2, tls, stream):
    url, _ = h2
    cid, key = customer(h2)
    before = len(tls.fake.calls)
    if stream:
        with oai(url, key).chat.completions.with_streaming_response.create(
                model="gpt-test", messages=HI, stream=True) as response:
            text = "".join(c.choices[0].delta.content or "" for c in response.parse() if c.choices)
            request_id = response.headers["x-tokentill-request-id"]
    else:
        raw = oai(url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        text, request_id = raw.parse().choices[0].message.content, raw.headers["x-tokentill-request-id"]
        assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE
    assert text == words(40)
    [call] = tls.fake.calls[before:]
    _wait_done(call)  # the fake marks a stream done after its last bytes went out: the client may read them first
    assert call.http_version == "2"
    assert call.headers["authorization"] == "Bearer sk-upstream-openai"
    assert charged(url, request_id) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_a_streamed_responses_call_goes_over_http2_and_is_charged_its_usage(h2, tls):
    url, _ = h2
    _, key = customer(h2)
    with oai(url, key).responses.with_streaming_response.create(model="gpt-test", input="hi", stream=True) as r:
        events = list(r.parse())
        request_id = r.headers["x-tokentill-request-id"]
    assert events[-1].type == "response.completed"
    assert _last(tls.fake, "gpt-test").http_version == "2"
    assert charged(url, request_id) == RESPONSES_CHARGE


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_offering_only_http11_over_tls_is_called_over_http11(h2, tls_h1, stream):
    url, _ = h2
    _, key = customer(h2)
    before = len(tls_h1.fake.calls)
    if stream:
        with claude(url, key).messages.stream(model="claude-test", max_tokens=1000, messages=HI) as s:
            text = "".join(s.text_stream)
            request_id = s.response.headers["x-tokentill-request-id"]
    else:
        raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=1000, messages=HI)
        text, request_id = raw.parse().content[0].text, raw.headers["x-tokentill-request-id"]
    assert text == words(40)
    [call] = tls_h1.fake.calls[before:]
    assert call.http_version == "1.1" and call.headers["x-api-key"] == "sk-upstream-anthropic"
    assert charged(url, request_id) == MESSAGES_CHARGE


def test_sequential_calls_reuse_one_upstream_connection_http2_and_http11(h2, tls, tls_h1):
    url, _ = h2
    _, key = customer(h2, amount="100.00")
    gpt, sonnet = oai(url, key), claude(url, key)
    first, first_h1 = len(tls.fake.calls), len(tls_h1.fake.calls)
    for stream in (False, True) * 4:
        if stream:
            list(gpt.chat.completions.create(model="gpt-test", messages=HI, stream=True))
            with sonnet.messages.stream(model="claude-test", max_tokens=100, messages=HI) as s:
                s.until_done()
        else:
            gpt.chat.completions.create(model="gpt-test", messages=HI)
            sonnet.messages.create(model="claude-test", max_tokens=100, messages=HI)
    over_h2, over_h1 = tls.fake.calls[first:], tls_h1.fake.calls[first_h1:]
    assert len(over_h2) == len(over_h1) == 8
    assert {c.http_version for c in over_h2} == {"2"} and {c.http_version for c in over_h1} == {"1.1"}
    assert len({c.peer for c in over_h2}) == 1 and len({c.peer for c in over_h1}) == 1


@pytest.fixture
def roomy(database_url, tls, tls_h1, certs) -> Iterator[tuple[str, str]]:
    """`h2`'s upstreams with the default read timeout: 12 streams at once of a fake serving them in
    one thread may leave one silent for longer than h2's 2 s on a loaded machine (a 504 in CI)."""
    yield from _serve(database_url, tls.url, tls_h1.url, upstream_ca=str(certs[0]))


async def test_concurrent_streams_share_http2_connections_opening_one_only_when_the_others_are_full(roomy, tls):
    url, _ = roomy
    _, key = customer(roomy, amount="100.00")
    client = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0)
    await client.chat.completions.create(model="gpt-test", messages=HI)  # the connection is open
    first = len(tls.fake.calls)

    async def one() -> str:
        stream = await client.chat.completions.create(model="gpt-test", messages=HI, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    texts = await asyncio.wait_for(asyncio.gather(*(one() for _ in range(12))), 30)  # the server allows 5 a connection
    await client.close()
    assert texts == [words(40)] * 12
    calls = tls.fake.calls[first:]
    # a connection is opened only when every other one has its 5 streams in use: 3 at most for 12
    assert len(calls) == 12 and {c.http_version for c in calls} == {"2"} and len({c.peer for c in calls}) <= 3


# --- Calls beyond an HTTP/2 connection's streams ---------------------------------------------------------

NARROW = 2  # streams at most per HTTP/2 connection, as the `narrow` fake's SETTINGS say


@pytest.fixture
def narrow(certs) -> Iterator[TLSFake]:
    server = TLSFake(free_port(), certs[1], certs[2], max_streams=NARROW)
    server.begin()
    yield server
    server.fake.release()
    server.stop()


@pytest.fixture
def spread(database_url, narrow, certs) -> Iterator[tuple[str, str]]:
    yield from _serve(database_url, narrow.url, narrow.url, upstream_ca=str(certs[0]))


@pytest.fixture
def single(database_url, narrow, certs) -> Iterator[tuple[str, str]]:
    yield from _serve(database_url, narrow.url, narrow.url, upstream_ca=str(certs[0]), max_upstream_connections=1,
                      connect_timeout_s=1.0)  # also the pool timeout


async def _held(client: openai.AsyncOpenAI) -> openai.AsyncStream:
    """A streamed call the fake holds open after its first token (until release()): once created,
    its stream is open upstream."""
    return await client.chat.completions.create(model="gpt-test-hold", messages=HI, stream=True)


async def _text(stream: openai.AsyncStream) -> str:
    return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])


async def test_calls_beyond_an_http2_connections_streams_go_on_another_connection(spread, narrow):
    url, _ = spread
    cid, key = customer(spread)
    client = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0, timeout=30)
    # 5 streams open at once where a connection carries 2: none waits for another to end
    streams = await asyncio.wait_for(asyncio.gather(*(_held(client) for _ in range(5))), 15)
    calls = list(narrow.fake.calls)
    assert len(calls) == 5 and not any(c.done for c in calls) and {c.http_version for c in calls} == {"2"}
    peers = [c.peer for c in calls]
    assert len(set(peers)) == 3 and max(peers.count(p) for p in peers) == NARROW
    narrow.fake.release()
    texts = await asyncio.wait_for(asyncio.gather(*(_text(s) for s in streams)), 15)
    await client.close()
    assert texts == [words(40)] * 5
    assert await asyncio.to_thread(wallet, url, cid) == (Decimal("10") - 5 * CHAT_CHARGE, 0)


async def test_a_call_finding_no_http2_stream_nor_connection_fails_within_the_pool_timeout_released(single, narrow):
    url, _ = single
    cid, key = customer(single)
    client = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0, timeout=30)
    held = await asyncio.wait_for(asyncio.gather(*(_held(client) for _ in range(NARROW))), 15)

    async def beyond(stream: bool) -> tuple[openai.APIStatusError, float]:
        started = time.monotonic()
        try:
            await client.chat.completions.create(model="gpt-test", messages=HI, stream=stream)
        except openai.APIStatusError as exc:
            return exc, time.monotonic() - started
        raise AssertionError("a call beyond the connection's streams was answered")

    # the one connection allowed has its 2 streams in use: each call beyond waits the pool timeout (1 s)
    refused = await asyncio.wait_for(asyncio.gather(beyond(False), beyond(True)), 15)
    for error, waited in refused:
        assert error.status_code == 504 and waited < 1.0 + 3
        assert error.body == {"message": "the upstream did not answer (PoolTimeout)", "type": "api_error",
                              "param": None, "code": "upstream_timeout"}
        assert await asyncio.to_thread(charged, url, error.response.headers["x-tokentill-request-id"]) == 0
    assert len(narrow.fake.calls) == NARROW  # never sent
    narrow.fake.release()
    assert await asyncio.wait_for(asyncio.gather(*(_text(s) for s in held)), 15) == [words(40)] * NARROW
    await client.chat.completions.create(model="gpt-test", messages=HI)  # the connection serves on
    await client.close()
    assert len({c.peer for c in narrow.fake.calls}) == 1
    assert await asyncio.to_thread(wallet, url, cid) == (Decimal("10") - (NARROW + 1) * CHAT_CHARGE, 0)


def test_an_upstream_whose_certificate_is_not_trusted_is_a_502_and_released(plain, tls):
    url, _ = plain  # this gateway was not given the CA that signed the fake's certificate
    cid, key = customer(plain)
    before = len(tls.fake.calls)
    with pytest.raises(anthropic.InternalServerError) as raised:
        claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI)
    assert raised.value.status_code == 502
    assert raised.value.body["error"]["code"] == "upstream_unavailable"
    assert charged(url, raised.value.response.headers["x-tokentill-request-id"]) == 0
    assert wallet(url, cid) == (Decimal("10"), 0) and len(tls.fake.calls) == before


# --- Cancellation over HTTP/2 ---------------------------------------------------------------------------


def _cut_after_pause(url: str, key: str) -> str:
    received = 0
    with oai(url, key).chat.completions.with_streaming_response.create(
            model="gpt-test-pause", messages=HI, stream=True) as response:
        request_id = response.headers["x-tokentill-request-id"]
        for chunk in response.parse():
            received += bool(chunk.choices and chunk.choices[0].delta.content)
            if received == fk.PAUSE_AFTER:
                break
    return request_id


def _wait_done(call: fk.Logged, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not call.done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert call.done, "the upstream never finished its answer"


def _wait_cancelled(call: fk.Logged, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not call.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert call.cancelled, "the upstream never saw the cancellation"


def test_a_stream_cut_by_the_client_resets_its_http2_stream_and_the_connection_serves_on(h2, tls):
    url, _ = h2
    cid, key = customer(h2, amount="100.00")
    request_id = _cut_after_pause(url, key)
    call = _last(tls.fake, "gpt-test-pause")
    _wait_cancelled(call)  # the upstream stops generating: it saw the stream reset
    assert call.http_version == "2" and call.emitted == fk.PAUSE_AFTER and not call.done
    assert charged(url, request_id) == (8 * IN + 200 * OUT) / M + CALL
    first = len(tls.fake.calls)
    for _ in range(MAX_STREAMS + 1):  # more cut streams than the connection may have open at once
        _cut_after_pause(url, key)
        _wait_cancelled(tls.fake.calls[-1])
    raw = oai(url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE
    assert len({c.peer for c in tls.fake.calls[first:]}) == 1  # the same connection, still serving
    assert wallet(url, cid)[1] == 0


def leave_once_upstream(url: str, key: str, calls: list) -> None:
    """Send a slow non-streamed chat call on a raw connection and hang up once the upstream has
    it (it never answers); `calls`: the fake upstream's log of calls."""
    body = json.dumps({"model": "gpt-test-slow", "messages": HI}).encode()
    before = len(calls)
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as caller:
        caller.sendall(f"POST /openai/v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {key}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
        deadline = time.monotonic() + 30
        while len(calls) == before and time.monotonic() < deadline:
            time.sleep(0.02)


def test_a_whole_answer_its_caller_left_is_read_on_until_the_read_timeout_then_its_http2_stream_reset(h2, tls):
    """The caller's leaving no longer cancels a whole answer (the upstream generates, and bills,
    it all the same: read on, charged its usage); an upstream silent past the read timeout is
    given up then (its HTTP/2 stream reset), and the hold released."""
    url, _ = h2
    cid, key = customer(h2)
    left = time.monotonic()
    leave_once_upstream(url, key, tls.fake.calls)
    call = _last(tls.fake, "gpt-test-slow")
    _wait_cancelled(call, timeout=READ_TIMEOUT + 10)
    assert time.monotonic() - left >= READ_TIMEOUT  # not at once: read on
    assert call.http_version == "2" and call.emitted == 0
    assert wallet(url, cid) == (Decimal("10"), 0)


# --- Timeouts -------------------------------------------------------------------------------------------


def test_an_upstream_that_never_answers_is_a_504_upstream_timeout_and_the_hold_is_released(h2, tls):
    url, _ = h2
    cid, key = customer(h2)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key, timeout=30).chat.completions.create(model="gpt-test-slow", messages=HI)
    assert READ_TIMEOUT <= time.monotonic() - started < READ_TIMEOUT + 5
    error = raised.value
    assert error.status_code == 504 and isinstance(error, openai.InternalServerError)
    assert error.body == {"message": "the upstream did not answer (ReadTimeout)", "type": "api_error",
                          "param": None, "code": "upstream_timeout"}
    assert charged(url, error.response.headers["x-tokentill-request-id"]) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)
    _wait_cancelled(_last(tls.fake, "gpt-test-slow"))  # and the upstream call was abandoned
    oai(url, key).chat.completions.create(model="gpt-test", messages=HI)  # the pool serves on


async def test_a_silent_call_times_out_on_its_own_beside_a_busy_stream_on_the_same_http2_connection(h2, tls):
    url, _ = h2
    cid, key = customer(h2)
    client = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0, timeout=30)
    await client.chat.completions.create(model="gpt-test", messages=HI)  # the connection is open
    first = len(tls.fake.calls)

    async def busy() -> tuple[str, float]:  # a token every 0.1 s for 4 s: the connection is never silent
        stream = await client.chat.completions.create(model="gpt-test-trickle", messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return text, time.monotonic()

    async def silent() -> tuple[int, float, float]:
        started = time.monotonic()
        try:
            await client.chat.completions.create(model="gpt-test-slow", messages=HI)
        except openai.APIStatusError as exc:
            return exc.status_code, time.monotonic() - started, time.monotonic()
        raise AssertionError("the silent call was answered")

    (text, busy_ended), (status, waited, silent_ended) = await asyncio.gather(busy(), silent())
    await client.close()
    # timed out after its own READ_TIMEOUT, while the busy stream still ran: not when it ended (an
    # order, not a ceiling, so that a loaded box slowing both does not fail it)
    assert status == 504 and waited >= READ_TIMEOUT and silent_ended < busy_ended
    assert text == words(40)  # and the busy stream was not failed with it
    assert len({c.peer for c in tls.fake.calls[first:]}) == 1
    assert (await asyncio.to_thread(wallet, url, cid))[1] == 0


def test_a_stream_that_goes_silent_is_billed_what_it_sent_and_ends_with_a_timeout_error(h2, tls):
    url, _ = h2
    _, key = customer(h2)
    received = []
    with pytest.raises(openai.APIError, match=r"upstream stream failed \(ReadTimeout\)"):
        with oai(url, key).chat.completions.with_streaming_response.create(
                model="gpt-test-pause", messages=HI, stream=True) as response:
            request_id = response.headers["x-tokentill-request-id"]
            for chunk in response.parse():
                received.append(chunk.choices[0].delta.content if chunk.choices else None)
    assert "".join(filter(None, received)) == words(fk.PAUSE_AFTER)
    assert charged(url, request_id) == (8 * IN + fk.PAUSE_AFTER * OUT) / M + CALL
    _wait_cancelled(_last(tls.fake, "gpt-test-pause"))


# --- Retries: only a connection that failed to open ------------------------------------------------------


def test_a_connection_that_fails_to_open_is_retried_and_the_call_is_sent_once(flaky, fronts, tls):
    url, _ = flaky
    some, _ = fronts
    _, key = customer(flaky)
    before = len(tls.fake.calls)
    raw = oai(url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE
    assert some.accepted == 3  # two dropped before a byte passed, then the one that carried the call
    assert len(tls.fake.calls) == before + 1 and tls.fake.calls[-1].http_version == "2"


def test_a_connection_that_never_opens_is_tried_three_times_then_a_502_and_released(flaky, fronts):
    url, _ = flaky
    _, every = fronts
    cid, key = customer(flaky)
    with pytest.raises(anthropic.InternalServerError) as raised:
        claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI)
    assert raised.value.status_code == 502 and raised.value.body["error"]["code"] == "upstream_unavailable"
    assert every.accepted == 3  # the first try and connect_retries (2) more
    assert wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_that_hangs_up_after_the_request_is_not_sent_again(plain, hanging, stream):
    url, _ = plain
    cid, key = customer(plain)
    before = hanging.requests
    with pytest.raises(openai.InternalServerError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI, stream=stream)
    assert raised.value.status_code == 502 and raised.value.body["code"] == "upstream_unavailable"
    time.sleep(0.5)  # a retry would have come by now
    assert hanging.requests == before + 1
    assert charged(url, raised.value.response.headers["x-tokentill-request-id"]) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize(("model", "error", "status"), [("gpt-test-fail", openai.InternalServerError, 500),
                                                        ("gpt-test-overloaded", openai.InternalServerError, 503)])
def test_an_upstream_error_status_is_passed_through_once_and_never_resent(h2, tls, model, error, status):
    url, _ = h2
    cid, key = customer(h2)
    before = len(tls.fake.calls)
    with pytest.raises(error) as raised:
        oai(url, key).chat.completions.create(model=model, messages=HI)
    assert raised.value.status_code == status and raised.value.response.headers["x-tokentill-charged"] == "0"
    assert [c.body["model"] for c in tls.fake.calls[before:]] == [model]
    assert wallet(url, cid) == (Decimal("10"), 0)


# a whole answer the fake cuts after DROP_AFTER words of its text: the prompt as counted ("user" and
# "hi", 3 a message, 3 for the reply: 8) and the 10 words that came, as a stream cut there is charged
CUT_WHOLE = (8 * IN + fk.DROP_AFTER * OUT) / M + CALL


def test_a_whole_answer_cut_mid_body_is_not_resent_answers_502_and_is_charged_what_came(h2, tls_h1):
    url, _ = h2
    cid, key = customer(h2)
    before = len(tls_h1.fake.calls)
    with pytest.raises(anthropic.InternalServerError) as raised:  # over HTTP/1.1: the connection is closed
        claude(url, key).messages.create(model="claude-test-drop", max_tokens=100, messages=HI)
    assert raised.value.status_code == 502 and raised.value.body["error"]["code"] == "upstream_unavailable"
    assert [c.body["model"] for c in tls_h1.fake.calls[before:]] == ["claude-test-drop"]
    assert CUT_WHOLE == Decimal("0.00128")
    headers = raised.value.response.headers
    assert Decimal(headers["x-tokentill-charged"]) == CUT_WHOLE and headers["x-should-retry"] == "false"
    assert charged(url, headers["x-tokentill-request-id"]) == CUT_WHOLE
    assert wallet(url, cid) == (Decimal("10") - CUT_WHOLE, 0)
    claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI)  # the pool serves on


def test_a_whole_answer_left_unfinished_over_http2_is_a_504_not_resent_and_charged_what_came(h2, tls):
    url, _ = h2
    cid, key = customer(h2)
    before = len(tls.fake.calls)
    # hypercorn ends neither the stream nor the connection when the app fails mid-answer: silence
    with pytest.raises(openai.InternalServerError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test-drop", messages=HI)
    assert raised.value.status_code == 504 and raised.value.body["code"] == "upstream_timeout"
    assert [c.body["model"] for c in tls.fake.calls[before:]] == ["gpt-test-drop"]
    headers = raised.value.response.headers
    assert Decimal(headers["x-tokentill-charged"]) == CUT_WHOLE and headers["x-should-retry"] == "false"
    assert charged(url, headers["x-tokentill-request-id"]) == CUT_WHOLE
    assert wallet(url, cid) == (Decimal("10") - CUT_WHOLE, 0)
    oai(url, key).chat.completions.create(model="gpt-test", messages=HI)  # the pool serves on


def test_a_stream_broken_mid_way_over_http2_is_billed_what_it_sent_and_not_resent(h2, tls):
    url, _ = h2
    _, key = customer(h2)
    before = len(tls.fake.calls)
    text, request_id = read_until_dropped(url, key)
    assert text == words(fk.DROP_AFTER)
    assert charged(url, request_id) == (8 * IN + fk.DROP_AFTER * OUT) / M + CALL
    assert [c.http_version for c in tls.fake.calls[before:]] == ["2"]


def test_the_http2_patch_refuses_an_httpcore_without_what_it_wraps():
    class Changed:  # an AsyncHTTP2Connection whose settings hook was renamed
        async def handle_async_request(self, request): ...
        def is_available(self): ...
        def is_idle(self): ...
        async def _response_closed(self, stream_id): ...

    with pytest.raises(RuntimeError, match=r"lacks \['_receive_remote_settings_change'\]"):
        connections._require(Changed)
    connections._require(httpcore_h2.AsyncHTTP2Connection)  # the installed httpcore has them all


@pytest.mark.parametrize("connections_allowed", [1, 3])
async def test_calls_queued_for_full_http2_connections_all_succeed_on_the_connections_allowed(narrow, certs,
                                                                                            connections_allowed):
    """The transport alone, 60 calls at once to the `narrow` fake: with every connection allowed in
    use, calls wait for a stream; none is failed by the pool closing a connection it took for idle."""
    settings = GatewaySettings(upstream_ca=str(certs[0]), max_upstream_connections=connections_allowed)
    transport, timeouts = connections.upstream_transport(settings), connections.upstream_timeouts(settings)

    async def one(stream: bool) -> int:
        response = await transport.handle_async_request(httpx.Request(
            "POST", f"{narrow.url}/v1/chat/completions", json={"model": "gpt-test", "messages": HI, "stream": stream},
            extensions={"timeout": timeouts}))
        await response.aread()
        await response.aclose()
        return response.status_code

    statuses = await asyncio.wait_for(asyncio.gather(*(one(i % 2 == 0) for i in range(60))), 30)
    await transport.aclose()
    assert statuses == [200] * 60 and len(narrow.fake.calls) == 60
    assert len({c.peer for c in narrow.fake.calls}) == connections_allowed
