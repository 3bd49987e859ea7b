"""An upstream that stays silent past the gateway's read timeout: 504 in the provider's shape,
and the hold released (a free call passed through: the same 504); but silent after the whole
answer's JSON came, the answer goes on, 200, once the timeout has passed."""
from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from tests.api.test_gateway import CHAT_CHARGE, HI, charged, customer, fake, oai, serving, wallet  # noqa: F401
from tests.api.test_gateway_edges import WHOLE, body, model, start, upstream  # noqa: F401 (upstream: a fixture)
from tests.api.test_gateway_retries import counted


@pytest.fixture(scope="module")
def live(database_url, fake) -> Iterator[tuple[str, str]]:  # noqa: F811
    yield from serving(database_url, fake, read_timeout_s=1.0)


def test_an_upstream_silent_past_the_read_timeout_is_a_504_and_the_hold_is_released(live):
    url, _ = live
    cid, key = customer(live)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key, timeout=30).chat.completions.create(model="gpt-test-slow", messages=HI)
    assert raised.value.status_code == 504 and raised.value.body["code"] == "upstream_timeout"
    assert raised.value.response.headers["x-tokentill-charged"] == "0"
    assert wallet(url, cid) == (Decimal("10"), 0)



def test_a_504_under_the_callers_request_id_is_not_retried_into_a_409(live):
    """The upstream silent past the 1 s read timeout: 504 upstream_timeout, the hold released,
    charged 0. Under the caller's own x-tokentill-request-id the openai client (its default 2
    retries) sent it again by itself, and that retry met 409 idempotency_conflict (the id names the
    released reservation): a ConflictError, two requests. Now it says x-should-retry: false: one
    request, the 504 itself."""
    url, _ = live
    cid, key = customer(live)
    rid = f"gw-504-{uuid.uuid4().hex[:8]}"
    sent, http = counted()
    with pytest.raises(openai.APIStatusError) as raised:
        openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, timeout=30, http_client=http).chat.completions.create(
            model="gpt-test-slow", messages=HI, extra_headers={"x-tokentill-request-id": rid})
    assert raised.value.status_code == 504 and raised.value.body["code"] == "upstream_timeout"
    assert len(sent) == 1 and raised.value.response.headers["x-should-retry"] == "false"
    assert charged(url, rid) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)

def test_a_free_call_to_an_upstream_silent_past_the_read_timeout_is_a_504(live):
    url, _ = live
    _, key = customer(live)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key, timeout=30).models.retrieve("gpt-test-slow")
    assert raised.value.status_code == 504 and raised.value.body["code"] == "upstream_timeout"
    assert raised.value.response.headers["x-tokentill-charged"] == "0"


@pytest.fixture(scope="module")
def scripted(database_url, upstream) -> Iterator[tuple[str, str]]:  # noqa: F811
    yield from serving(database_url, upstream, read_timeout_s=1.0)  # type: ignore[arg-type]


def test_an_upstream_silent_after_the_whole_answer_s_json_is_passed_on_after_the_timeout(scripted, upstream):  # noqa: F811
    """The whole chat completion came (its content-length one byte longer: the trailing newline
    never sent), then the upstream went silent past the 1 s read timeout: the caller gets the
    answer, 200, once the timeout passed (not a 504 for an answer it had all of and paid for, nor
    a retry billed again), charged its own usage: 800 input, 200 cached and 40 output tokens and
    the call, (800 * 10 + 200 * 1 + 40 * 20) / 1M + 0.001 = 0.0100 (CHAT_CHARGE)."""
    url, _ = scripted
    cid, key = customer(scripted)
    done = threading.Event()

    async def silent(send: Any, receive: Any) -> None:
        await start(send, b"application/json", len(WHOLE) + 1)
        await body(send, WHOLE)
        await asyncio.to_thread(done.wait, 30)  # silent until the test is over
        raise ConnectionAbortedError("the upstream gives up")

    name = model(upstream, silent)
    try:
        raw = oai(url, key, timeout=30).chat.completions.with_raw_response.create(model=name, messages=HI)
    finally:
        done.set()
    assert raw.status_code == 200
    assert raw.parse().choices[0].message.content == " one two three"
    assert CHAT_CHARGE == Decimal("0.0100")
    assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE
    assert charged(url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    assert sum(call["model"] == name for call in upstream.fake.calls) == 1
