"""The metering gateway, driven by the official `openai` and `anthropic` packages against a live
server whose upstream is a local fake (api.bench.fake_upstream). Every charge is worked by hand
from the price book below and the usage the fake reports."""
from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import socket
import time
import uuid
import wave
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fpdf import FPDF
from PIL import Image

from api.bench import fake_upstream as fk
from api.bench.common import free_port
from api.gateway.config import GatewaySettings
from tests.api.apps import live_server

ADMIN = "gateway-admin"
M = Decimal(1_000_000)
IN, CACHED, WRITE, OUT, CALL = Decimal("10"), Decimal("1"), Decimal("12.5"), Decimal("20"), Decimal("0.001")
BOOK = {"currency": "USD", "effective_from": "2026-01-01T00:00:00Z", "rules": [
    {"id": "in", "token_type": "input", "price": "10.00"},
    {"id": "cached", "token_type": "cached_input", "price": "1.00"},
    {"id": "write", "token_type": "cache_write", "price": "12.50"},
    {"id": "out", "token_type": "output", "price": "20.00"},
    {"id": "call", "token_type": "request", "price": "0.001"}]}
HI = [{"role": "user", "content": "hi"}]

# By hand, from the fake's usage: input excludes cached tokens; reasoning is priced as output.
CHAT_CHARGE = (800 * IN + 200 * CACHED + 40 * OUT) / M + CALL  # 0.0100
RESPONSES_CHARGE = (700 * IN + 100 * CACHED + (40 + 16) * OUT) / M + CALL  # 0.00922
EMBEDDINGS_CHARGE = 12 * IN / M + CALL  # 0.00112
MESSAGES_CHARGE = (900 * IN + 100 * CACHED + 50 * WRITE + 40 * OUT) / M + CALL  # 0.011525


@pytest.fixture(scope="module")
def fake() -> Iterator[fk.FakeServer]:
    server = fk.FakeServer(free_port())
    server.start()
    deadline = time.monotonic() + 10
    while not server.server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield server
    server.fake.release()
    server.stop()


@pytest.fixture(scope="module")
def live(database_url, fake) -> Iterator[tuple[str, str]]:
    yield from serving(database_url, fake)


def serving(database_url: str, fake: fk.FakeServer, **gateway: Any) -> Iterator[tuple[str, str]]:
    """The server with its gateway pointed at the fake (and `gateway` settings), and a price book."""
    with live_server(database_url, admin=ADMIN, gateway=GatewaySettings(**{
            "openai_url": f"{fake.url}/v1", "openai_key": "sk-upstream-openai", "anthropic_url": fake.url,
            "anthropic_key": "sk-upstream-anthropic", "default_max_output_tokens": 1000, **gateway})) as url:
        book = f"gw-{uuid.uuid4().hex[:8]}"
        with admin(url) as http:
            assert http.post("/v1/price-books", json={**BOOK, "id": book}).status_code == 201
        yield url, book


def admin(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)


def customer(live, amount: str | None = "10.00") -> tuple[str, str]:
    """A customer funded with `amount` (None: nothing) and an inference key limited to it."""
    url, book = live
    cid = f"gw-{uuid.uuid4().hex[:10]}"
    with admin(url) as http:
        assert http.post("/v1/customers", json={"id": cid, "name": "GW", "currency": "USD",
                                                "price_book": book}).status_code == 201
        if amount is not None:
            assert http.post(f"/v1/customers/{cid}/topups", json={"amount": amount}).status_code == 201
        key = http.post("/v1/api-keys", json={"scope": "inference", "customers": [cid]}).json()["key"]
    return cid, key


def wallet(url: str, cid: str, timeout: float = 10) -> tuple[Decimal, Decimal]:
    """(available, reserved), once nothing is reserved (a stream's settle may trail its last byte)."""
    deadline = time.monotonic() + timeout
    with admin(url) as http:
        while True:
            w = http.get(f"/v1/customers/{cid}/wallet").json()
            if Decimal(w["reserved"]) == 0 or time.monotonic() > deadline:
                return Decimal(w["available"]), Decimal(w["reserved"])
            time.sleep(0.05)


def charged(url: str, request_id: str, timeout: float = 10) -> Decimal:
    """The request's final charge, from its audit trace (waits for a settle that follows a cut)."""
    deadline = time.monotonic() + timeout
    with admin(url) as http:
        while True:
            trace = http.get(f"/v1/audit/charges/{request_id}").json()
            status = trace.get("reservation", {}).get("status")
            if status in ("settled", "released") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    assert status in ("settled", "released"), trace
    return sum((Decimal(c["charged"]) for c in trace["charges"]), Decimal(0))


def charge_usage(url: str, request_id: str) -> dict[str, Any]:
    """The usage record of the request's one charge, as its audit trace shows it (once settled)."""
    charged(url, request_id)
    with admin(url) as http:
        charges = http.get(f"/v1/audit/charges/{request_id}").json()["charges"]
    assert len(charges) == 1, charges
    return charges[0]["usage"]


def oai(url: str, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0, **kw)


def claude(url: str, key: str, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=key, max_retries=0, **kw)


def words(count: int) -> str:
    return "".join(fk._words(count))


def test_chat_completion_carries_its_charge_the_providers_usage(live, fake):
    url, _ = live
    cid, key = customer(live)
    raw = oai(url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    completion = raw.parse()
    assert completion.choices[0].message.content == words(40)
    # the hold (9 in, see below, at the book's cache write price, dearer than input: OpenAI may write
    # the prompt to its cache, was: at input; the 1,000 cap out) and, settled before the answer, the charge
    assert Decimal(raw.headers["x-tokentill-reserved"]) == (9 * WRITE + 1000 * OUT) / M + CALL
    assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE == Decimal("0.0100")
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    assert charged(url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    sent = fake.fake.calls[-1].headers
    assert sent["authorization"] == "Bearer sk-upstream-openai" and key not in str(sent)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'tokentill_gateway_calls_total{kind="chat.completions",outcome="settled",provider="openai"}' in metrics


def test_the_callers_key_cookies_and_choice_of_upstream_account_do_not_go_upstream(live, fake):
    """The upstream is called as the operator's account: its key, and the organization and project
    that key defaults to. An OpenAI client sends OpenAI-Organization and OpenAI-Project when it is
    given them (or finds OPENAI_ORG_ID, OPENAI_PROJECT_ID in its environment): a caller's would
    spend the operator's key in another of its organizations (or fail against the customer's own)."""
    url, _ = live
    _, key = customer(live)
    client = oai(url, key, organization="org-customer", project="proj_customer", default_headers={
        "Cookie": "tokentill_console=secret", "x-tokentill-dimensions": '{"feature": "chat"}'})
    assert client.chat.completions.create(model="gpt-test", messages=HI).choices[0].message.content == words(40)
    assert client.models.retrieve("gpt-test").id == "gpt-test"  # a free call, passed through
    for sent in fake.fake.calls[-2:]:
        assert sent.headers["authorization"] == "Bearer sk-upstream-openai" and key not in str(sent.headers)
        assert not {"openai-organization", "openai-project", "cookie"} & set(sent.headers)
        assert not any(name.startswith("x-tokentill-") for name in sent.headers)


def test_upstream_connections_are_pooled(live, fake):
    url, _ = live
    _, key = customer(live)
    client = oai(url, key)
    first = len(fake.fake.calls)
    for stream in (False, True, False, True):
        list(client.chat.completions.create(model="gpt-test", messages=HI, stream=True)) if stream else \
            client.chat.completions.create(model="gpt-test", messages=HI)
    assert len({call.peer for call in fake.fake.calls[first:]}) == 1


def test_a_streamed_chat_is_charged_its_usage_and_the_usage_chunk_it_did_not_ask_for_is_not_sent(live, fake):
    url, _ = live
    cid, key = customer(live)
    with oai(url, key).chat.completions.with_streaming_response.create(
            model="gpt-test", messages=HI, stream=True) as response:
        chunks = list(response.parse())
        request_id = response.headers["x-tokentill-request-id"]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == words(40)
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert fake.fake.calls[-1].body["stream_options"] == {"include_usage": True}
    assert charged(url, request_id) == CHAT_CHARGE
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_a_stream_ends_with_its_charge_as_an_sse_comment_and_its_hold_in_the_headers(live):
    url, _ = live
    _, key = customer(live)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        with http.stream("POST", "/openai/v1/chat/completions", json={
                "model": "gpt-test", "messages": HI, "stream": True, "max_tokens": 100}) as response:
            body = b"".join(response.iter_raw()).decode()
            headers = response.headers
    # the hold, by hand: 9 prompt tokens (see the 64-call test) at the cache write price, 100 output tokens
    assert Decimal(headers["x-tokentill-reserved"]) == (9 * WRITE + 100 * OUT) / M + CALL
    assert body.endswith("data: [DONE]\n\n: tokentill charged=0.01 currency=USD "
                         f"request_id={headers['x-tokentill-request-id']}\n\n")


def test_a_streamed_chat_that_asks_for_usage_gets_it(live):
    url, _ = live
    _, key = customer(live)
    chunks = list(oai(url, key).chat.completions.create(model="gpt-test", messages=HI, stream=True,
                                                        stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 40


def test_a_chat_stream_without_usage_is_charged_the_prompt_count_and_the_metered_output(live):
    url, _ = live
    _, key = customer(live)
    with oai(url, key).chat.completions.with_streaming_response.create(
            model="gpt-test-nousage", messages=HI, stream=True) as response:
        list(response.parse())
        request_id = response.headers["x-tokentill-request-id"]
    # "user" and "hi" are a token each (cl100k_base), 3 per message and 3 for the reply: 8 in
    assert charged(url, request_id) == (8 * IN + 40 * OUT) / M + CALL


def _streamed_with(url: str, key: str, model: str, part: dict) -> httpx.Headers:
    """A streamed chat of `model` whose user message is the text "hi" and `part`, read to its end:
    the answer's headers."""
    with oai(url, key).chat.completions.with_streaming_response.create(
            model=model, stream=True,
            messages=[{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]) as response:
        list(response.parse())
        return response.headers


def _five_minutes_of_wav() -> dict:
    """An input_audio part: 5 minutes at 8 kHz, 8 bits, mono (3,000 audio tokens at OpenAI's 1 per 100 ms)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(1)
        clip.setframerate(8000)
        clip.writeframes(bytes(8000 * 300))
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(out.getvalue()).decode(), "format": "wav"}}


def _audio_book(url: str, name: str, audio_price: Decimal) -> str:
    """The test book (format 2) with audio input at `audio_price` per 1M tokens, as `name`-<random>."""
    book = f"{name}-{uuid.uuid4().hex[:8]}"
    with admin(url) as http:
        rules = [*BOOK["rules"], {"id": "audio-in", "token_type": "input_audio", "price": str(audio_price)}]
        assert http.post("/v1/price-books", json={**BOOK, "id": book, "format": 2, "rules": rules}).status_code == 201
    return book


def test_a_stream_without_usage_is_charged_its_image_at_the_models_own_image_rule(live):
    url, _ = live
    _, key = customer(live)
    out = io.BytesIO()
    Image.new("RGB", (1024, 1024)).save(out, "PNG")
    image = {"type": "image_url", "image_url": {
        "url": "data:image/png;base64," + base64.b64encode(out.getvalue()).decode(), "detail": "high"}}
    request_id = _streamed_with(url, key, "gpt-4o-mini-nousage", image)["x-tokentill-request-id"]
    # "user", "text" (the part's type) and "hi", 3 + 3, and gpt-4o-mini's 4 tiles: 2,833 + 4 x 5,667
    assert charged(url, request_id) == ((3 + 6 + 2833 + 4 * 5667) * IN + 40 * OUT) / M + CALL


def test_a_stream_without_usage_is_charged_its_audio_by_the_clips_duration(live):
    url, _ = live
    # a book that prices audio input (the gateway requires it of a call with audio: pricing.premium),
    # at the text price here
    _, key = customer((url, tool_book(url, {"id": "audio-in", "token_type": "input_audio", "price": "10.00"})))
    answered = _streamed_with(url, key, "gpt-4o-audio-preview-nousage", _five_minutes_of_wav())
    request_id = answered["x-tokentill-request-id"]
    # "user", "text" and "hi", 3 + 3, and 300 s of audio at OpenAI's 1 token per 100 ms (was 2,500)
    assert charged(url, request_id) == ((3 + 6 + 3000) * IN + 40 * OUT) / M + CALL


def test_audio_is_held_and_charged_at_the_audio_input_price_of_a_book_that_prices_it(live):
    url, _ = live
    audio_price = Decimal("160")  # 16 x the text input price, as gpt-4o-audio-preview's $40 to $2.50
    cid, key = customer((url, _audio_book(url, "gw-audio", audio_price)))
    headers = _streamed_with(url, key, "gpt-4o-audio-preview-nousage", _five_minutes_of_wav())  # 3,000 audio tokens
    request_id, reserved = headers["x-tokentill-request-id"], headers["x-tokentill-reserved"]
    cost = ((3 + 6) * IN + 3000 * audio_price + 40 * OUT) / M + CALL
    assert charged(url, request_id) == cost == Decimal("0.48189")
    # held: the text (3 tokens, 4 with cl100k_base's margin) and overhead at the cache write price
    # (OpenAI may write the prompt to its cache), the audio at its price, the default cap of 1,000
    # output tokens (was 0.0511: the audio at the text price)
    assert Decimal(reserved) in {((t + 6) * WRITE + 3000 * audio_price + 1000 * OUT) / M + CALL for t in (3, 4)}
    assert Decimal(reserved) >= cost and wallet(url, cid) == (Decimal("10") - cost, 0)


def test_an_earlier_answers_audio_referred_to_by_id_is_held_as_a_whole_answer_of_audio(live):
    url, _ = live
    audio_price = Decimal("160")
    _, key = customer((url, _audio_book(url, "gw-audio-ref", audio_price)))
    said = {"role": "assistant", "audio": {"id": "audio_abc123"}}
    raw = oai(url, key).chat.completions.with_raw_response.create(
        model="gpt-4o-audio-preview", max_tokens=100, messages=[*HI, said])
    # the audio the provider bills as input: at most 16,384 tokens (an answer's most), at the audio price
    # (was: the id's few tokens at the text price, 0.003...)
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= 16_384 * audio_price / M + 100 * OUT / M + CALL


def test_anthropic_tools_are_held_with_the_tool_use_system_prompt_anthropic_adds(live):
    url, _ = live
    _, key = customer(live)
    tool = {"name": "get_weather", "description": "weather", "input_schema": {"type": "object"}}
    client = claude(url, key)
    bare = client.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI)
    tools = client.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI, tools=[tool])
    held = Decimal(tools.headers["x-tokentill-reserved"]) - Decimal(bare.headers["x-tokentill-reserved"])
    # a model Anthropic's table does not list: its most, 804 tokens, besides the definition's own words
    assert held >= 804 * IN / M


SEARCH = Decimal("0.01")  # Anthropic's web search: $10 per 1,000 searches
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search"}


def tool_book(url: str, *rules: dict, **fields: Any) -> str:
    """A format 2 book: BOOK's rules and `rules`."""
    book = f"gw-tools-{uuid.uuid4().hex[:8]}"
    with admin(url) as http:
        assert http.post("/v1/price-books", json={**BOOK, "id": book, "format": 2,
                                                  "rules": [*BOOK["rules"], *rules], **fields}).status_code == 201
    return book


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_web_searches_are_held_for_max_uses_and_charged_as_reported(live, fake, stream):
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))
    client, tools = claude(url, key), [{**WEB_SEARCH, "max_uses": 3}]
    if stream:
        with client.messages.stream(model="claude-test", max_tokens=1000, messages=HI, tools=tools) as s:
            "".join(s.text_stream)
            headers = s.response.headers
    else:
        headers = client.messages.with_raw_response.create(model="claude-test", max_tokens=1000, messages=HI,
                                                           tools=tools).headers
    # held: 3 searches at their fee and their results (10,000 input tokens each, the default allowance),
    # besides the prompt and the output (was: no search, nor its results)
    assert Decimal(headers["x-tokentill-reserved"]) >= 3 * SEARCH + 3 * 10_000 * IN / M + 1000 * OUT / M + CALL
    # charged: the provider's usage, its 2 searches included
    assert charged(url, headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + 2 * SEARCH
    assert wallet(url, cid) == (Decimal("10") - MESSAGES_CHARGE - 2 * SEARCH, 0)
    assert fake.fake.calls[-1].body["tools"] == tools


def test_a_web_search_without_max_uses_is_sent_with_the_gateways_and_held_for_it(live, fake):
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))
    raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI,
                                                             tools=[WEB_SEARCH])
    assert fake.fake.calls[-1].body["tools"] == [{**WEB_SEARCH, "max_uses": 5}]
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= 5 * SEARCH + 5 * 10_000 * IN / M


def test_a_web_search_the_book_does_not_price_is_refused_before_the_upstream_call(live, fake):
    """Usage no rule prices is an error, never a free charge: refused before the provider runs
    (and bills) the searches, not answered and then left unsettled."""
    url, _ = live
    cid, key = customer((url, tool_book(url)))
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI, tools=[WEB_SEARCH])
    assert raised.value.status_code == 422 and raised.value.body["error"]["code"] == "unpriced_model"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


def test_a_book_that_rates_unpriced_usage_at_nothing_holds_and_charges_no_search(live, fake):
    url, _ = live
    cid, key = customer((url, tool_book(url, unpriced="zero")))
    raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI,
                                                             tools=[WEB_SEARCH])
    assert charged(url, raw.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE
    assert wallet(url, cid) == (Decimal("10") - MESSAGES_CHARGE, 0)


OPENAI_SEARCH = {"type": "web_search"}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("tool", ["web_search", "web_search_preview"])
def test_openai_web_searches_are_held_for_max_tool_calls_and_charged_per_call(live, fake, stream, tool):
    """OpenAI bills each web_search_call output item, which its usage does not count (a preview
    tool's search at the book's rule for it: tests/api/test_gateway_betas.py)."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)},
                                        {"id": "search-preview", "token_type": "web_search", "price": str(SEARCH),
                                         "match": {"web_search_tool": "web_search_preview"}})))
    args = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000, "tools": [{"type": tool}],
            "max_tool_calls": 3}
    if stream:
        with oai(url, key).responses.with_streaming_response.create(**args, stream=True) as response:
            headers = response.headers
            assert sum(1 for _ in response.iter_lines()) > 0
    else:
        headers = oai(url, key).responses.with_raw_response.create(**args).headers
    # held: 3 searches at their fee and their results (10,000 input tokens each, the default allowance)
    # besides the prompt and the output (was: no search, nor its results)
    assert Decimal(headers["x-tokentill-reserved"]) >= 3 * SEARCH + 3 * 10_000 * IN / M + 1000 * OUT / M + CALL
    # charged: the usage and the 2 web_search_call items of the answer (was: the usage alone)
    assert charged(url, headers["x-tokentill-request-id"]) == RESPONSES_CHARGE + 2 * SEARCH
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE - 2 * SEARCH, 0)
    assert fake.fake.calls[-1].body["max_tool_calls"] == 3


def test_an_openai_web_search_without_max_tool_calls_is_sent_with_the_gateways_and_held_for_it(live, fake):
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))
    raw = oai(url, key).responses.with_raw_response.create(model="gpt-test", input="hi", max_output_tokens=100,
                                                           tools=[OPENAI_SEARCH])
    assert fake.fake.calls[-1].body["max_tool_calls"] == 5
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= 5 * SEARCH + 5 * 10_000 * IN / M


def test_an_openai_web_search_the_book_does_not_price_is_refused_before_the_upstream_call(live, fake):
    url, _ = live
    cid, key = customer((url, tool_book(url)))
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).responses.create(model="gpt-test", input="hi", tools=[OPENAI_SEARCH])
    assert raised.value.status_code == 422 and raised.value.body["code"] == "unpriced_model"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize("stream", [False, True])
def test_a_chat_call_to_a_search_model_is_held_and_charged_its_search(live, fake, stream):
    """A chat call with web_search_options (OpenAI's search models) searches once, billed per call,
    which its usage does not count."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))
    raw = oai(url, key).chat.completions.with_raw_response.create(
        model="gpt-test", messages=HI, max_tokens=1000, web_search_options={}, stream=stream)
    if stream:
        assert sum(1 for _ in raw.parse()) > 0
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= SEARCH + 10_000 * IN / M + 1000 * OUT / M + CALL
    # was: the usage alone, the search given away
    assert charged(url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE + SEARCH
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE - SEARCH, 0)


FILE_SEARCH = Decimal("0.0025")  # OpenAI's file search: $2.50 per 1,000 calls


@pytest.mark.parametrize("stream", [False, True])
def test_openai_file_searches_are_held_for_max_tool_calls_and_charged_per_call(live, fake, stream):
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)},
                                        {"id": "files", "token_type": "file_search", "price": str(FILE_SEARCH)})))
    args = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000, "max_tool_calls": 3,
            "tools": [OPENAI_SEARCH, {"type": "file_search", "vector_store_ids": ["vs_1"]}]}
    if stream:
        with oai(url, key).responses.with_streaming_response.create(**args, stream=True) as response:
            headers = response.headers
            assert sum(1 for _ in response.iter_lines()) > 0
    else:
        headers = oai(url, key).responses.with_raw_response.create(**args).headers
    # held: 3 calls of each tool (was: no file search), and the results of 3 calls
    assert Decimal(headers["x-tokentill-reserved"]) >= 3 * (SEARCH + FILE_SEARCH) + 3 * 10_000 * IN / M
    # charged: the usage, the 2 web_search_call and the 2 file_search_call items (was: no file search)
    assert charged(url, headers["x-tokentill-request-id"]) == RESPONSES_CHARGE + 2 * SEARCH + 2 * FILE_SEARCH
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE - 2 * SEARCH - 2 * FILE_SEARCH, 0)


def test_an_openai_file_search_the_book_does_not_price_is_refused_before_the_upstream_call(live, fake):
    url, _ = live
    cid, key = customer((url, tool_book(url)))
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).responses.create(model="gpt-test", input="hi",
                                       tools=[{"type": "file_search", "vector_store_ids": ["vs_1"]}])
    assert raised.value.status_code == 422 and raised.value.body["code"] == "unpriced_model"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


EXECUTION = Decimal("0.03")  # a container's session: OpenAI's 1 GB code interpreter container
CODE_EXECUTION = {"type": "code_execution_20250825", "name": "code_execution"}


def execution_book(url: str, *rules: dict) -> str:
    return tool_book(url, {"id": "exec", "token_type": "code_execution", "price": str(EXECUTION)}, *rules)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_code_execution_is_held_and_charged_its_container(live, fake, stream):
    """Anthropic bills code execution by its container's time, which its usage does not report
    (server_tool_use counts web searches and fetches only): the answer names the container it ran
    in. Held and charged one container at the book's code_execution rule."""
    url, _ = live
    cid, key = customer((url, execution_book(url)))
    client = claude(url, key)
    if stream:
        with client.messages.stream(model="claude-test", max_tokens=1000, messages=HI, tools=[CODE_EXECUTION]) as s:
            "".join(s.text_stream)
            assert s.get_final_message().container.id == "container_fake"
            headers = s.response.headers
    else:
        raw = client.messages.with_raw_response.create(model="claude-test", max_tokens=1000, messages=HI,
                                                       tools=[CODE_EXECUTION])
        assert raw.parse().container.id == "container_fake"
        headers = raw.headers
    assert Decimal(headers["x-tokentill-reserved"]) >= EXECUTION + 1000 * OUT / M + CALL
    # was: the usage alone, the container given away
    assert charged(url, headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + EXECUTION
    assert wallet(url, cid) == (Decimal("10") - MESSAGES_CHARGE - EXECUTION, 0)
    assert fake.fake.calls[-1].body["tools"] == [CODE_EXECUTION]


def test_anthropic_code_execution_with_a_dynamic_web_search_is_not_charged(live, fake):
    """Anthropic does not bill code execution in a call with web_search_20260209 (or
    web_fetch_20260209, or later): neither held nor charged, the searches are."""
    url, _ = live
    cid, key = customer((url, execution_book(url, {"id": "search", "token_type": "web_search",
                                                   "price": str(SEARCH)})))
    tools = [CODE_EXECUTION, {"type": "web_search_20260209", "name": "web_search", "max_uses": 2}]
    raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=1000, messages=HI,
                                                             tools=tools)
    assert Decimal(raw.headers["x-tokentill-reserved"]) < EXECUTION + 2 * SEARCH + 2 * 10_000 * IN / M \
        + 2000 * IN / M + 1000 * OUT / M + CALL
    assert charged(url, raw.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + 2 * SEARCH
    assert wallet(url, cid) == (Decimal("10") - MESSAGES_CHARGE - 2 * SEARCH, 0)


def test_an_anthropic_stream_left_after_code_ran_is_read_to_its_end_and_charged_its_container(live, fake):
    """Left before message_delta named the container: the code execution blocks the stream showed
    are billed by Anthropic all the same, with the rest of the answer (read on, its usage 400 output
    tokens). Was: cut and charged the input and the 200 tokens sent, the container given away."""
    url, _ = live
    _, key = customer((url, execution_book(url)))
    request_id = _claude_stream_left(url, key, "claude-test-stall", tools=[CODE_EXECUTION])
    assert charged(url, request_id) == (900 * IN + 100 * CACHED + 50 * WRITE + 400 * OUT) / M + CALL + EXECUTION
    assert _wait_done(fake).emitted == 2 * fk.PAUSE_AFTER


@pytest.mark.parametrize("stream", [False, True])
def test_openai_code_interpreter_is_held_and_charged_its_container_by_its_memory(live, fake, stream):
    """OpenAI bills a code interpreter container per session, a 4 GB one at 4 times a 1 GB one's
    price; its usage does not count it (code_interpreter_call output items name the container)."""
    url, _ = live
    cid, key = customer((url, execution_book(url)))
    args = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000, "max_tool_calls": 3,
            "tools": [{"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}]}
    if stream:
        with oai(url, key).responses.with_streaming_response.create(**args, stream=True) as response:
            headers = response.headers
            assert sum(1 for _ in response.iter_lines()) > 0
    else:
        raw = oai(url, key).responses.with_raw_response.create(**args)
        assert [item.container_id for item in raw.parse().output[:2]] == [fk.CONTAINER] * 2
        headers = raw.headers
    # held: the container at 4 GB and the results of 3 runs
    assert Decimal(headers["x-tokentill-reserved"]) >= 4 * EXECUTION + 3 * 10_000 * IN / M + 1000 * OUT / M + CALL
    # charged: the usage and the one container its 2 runs used (was: the usage alone)
    assert charged(url, headers["x-tokentill-request-id"]) == RESPONSES_CHARGE + 4 * EXECUTION
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE - 4 * EXECUTION, 0)


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_container_reused_by_id_is_neither_held_nor_charged_again(live, fake, stream):
    """OpenAI bills a container when it is made: a call that reuses one by id (made, and billed, by
    an earlier call) is held the results of its runs but no container, and charged its usage alone
    (was: held and charged a 1 GB container again on every call that reused it)."""
    url, _ = live
    cid, key = customer((url, execution_book(url)))
    args = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000, "max_tool_calls": 3,
            "tools": [{"type": "code_interpreter", "container": "cntr_made_earlier"}]}
    if stream:
        with oai(url, key).responses.with_streaming_response.create(**args, stream=True) as response:
            headers = response.headers
            assert sum(1 for _ in response.iter_lines()) > 0
    else:
        raw = oai(url, key).responses.with_raw_response.create(**args)
        assert [item.container_id for item in raw.parse().output[:2]] == ["cntr_made_earlier"] * 2
        headers = raw.headers
    # held: the results of 3 runs, the prompt at most at the dearest input-side price, the output cap
    reserved = Decimal(headers["x-tokentill-reserved"])
    assert 3 * 10_000 * IN / M + 1000 * OUT / M + CALL <= reserved < 3 * 10_100 * WRITE / M + 1000 * OUT / M + CALL
    assert charged(url, headers["x-tokentill-request-id"]) == RESPONSES_CHARGE
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_code_execution_the_book_does_not_price_is_refused_before_the_upstream_call(live, fake, provider):
    url, _ = live
    cid, key = customer((url, tool_book(url)))
    before = len(fake.fake.calls)
    if provider == "openai":
        with pytest.raises(openai.APIStatusError) as raised:
            oai(url, key).responses.create(model="gpt-test", input="hi",
                                           tools=[{"type": "code_interpreter", "container": {"type": "auto"}}])
        code = raised.value.body["code"]
    else:
        with pytest.raises(anthropic.APIStatusError) as raised:
            claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI, tools=[CODE_EXECUTION])
        code = raised.value.body["error"]["code"]
    assert raised.value.status_code == 422 and code == "unpriced_model"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


MCP = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp", "require_approval": "never"}


def test_an_openai_mcp_tool_is_held_for_its_listing_and_the_results_of_max_tool_calls(live, fake):
    """OpenAI bills a hosted MCP server's tool listing (mcp_list_tools) and its calls' outputs as
    input tokens the body does not show: held at the results allowance for the listing and for
    each of max_tool_calls calls; charged the usage, which counts them."""
    url, _ = live
    cid, key = customer(live)
    args = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000, "max_tool_calls": 3, "tools": [MCP]}
    raw = oai(url, key).responses.with_raw_response.create(**args)
    assert [item.type for item in raw.parse().output[:2]] == ["mcp_list_tools", "mcp_call"]
    # was: the prompt and the output alone (0.02114)
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= (1 + 3) * 10_000 * IN / M + 1000 * OUT / M + CALL
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)
    assert fake.fake.calls[-1].body["max_tool_calls"] == 3
    oai(url, key).responses.create(**{**args, "max_tool_calls": None})
    assert fake.fake.calls[-1].body["max_tool_calls"] == 5  # sent with the gateway's: the hold is a bound


@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_image_generation_tool_is_refused_before_the_upstream_call(live, fake, stream):
    """OpenAI bills the images its image_generation tool makes at the image model's prices, which
    the response's usage does not count: the gateway cannot meter them, so it refuses the call
    rather than give them away (was: answered, charged the usage alone)."""
    url, _ = live
    cid, key = customer((url, tool_book(url, unpriced="zero")))
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).responses.create(model="gpt-test", input="draw a cat", stream=stream,
                                       tools=[{"type": "image_generation", "quality": "high"}])
    assert raised.value.status_code == 422 and raised.value.body["code"] == "unpriced_model"
    assert "image_generation" in raised.value.body["message"]
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


def test_a_predicted_output_is_held_for_the_prediction_openai_may_bill_as_output(live, fake):
    """OpenAI bills a prediction's rejected tokens as completion tokens, beyond max_tokens: a call
    with a prediction of 300 tokens may be billed 300 output tokens more than its cap."""
    url, _ = live
    _, key = customer(live)
    client = oai(url, key).chat.completions
    bare = client.with_raw_response.create(model="gpt-4", messages=HI, max_tokens=100)
    predicted = client.with_raw_response.create(model="gpt-4", messages=HI, max_tokens=100,
                                                prediction={"type": "content", "content": words(300)})
    held = Decimal(predicted.headers["x-tokentill-reserved"]) - Decimal(bare.headers["x-tokentill-reserved"])
    assert held == 300 * OUT / M  # was: 0
    parts = client.with_raw_response.create(model="gpt-4", messages=HI, max_tokens=100, prediction={
        "type": "content", "content": [{"type": "text", "text": words(200)}, {"type": "text", "text": words(100)}]})
    assert Decimal(parts.headers["x-tokentill-reserved"]) == Decimal(predicted.headers["x-tokentill-reserved"])


PRIORITY, FAST = Decimal("40"), Decimal("120")  # per million output tokens: OpenAI priority, Anthropic fast


def test_an_openai_call_that_asks_for_priority_is_held_at_the_priority_price(live, fake):
    """OpenAI bills a call served at its priority tier at its priority prices: the request's
    service_tier is held at them (was: at the standard prices, 0.02 short per 1,000 output tokens);
    the answer's service_tier prices the charge."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "out-priority", "token_type": "output", "price": str(PRIORITY),
                                            "match": {"service_tier": "priority"}})))
    client = oai(url, key).chat.completions
    standard = client.with_raw_response.create(model="gpt-test", messages=HI, max_tokens=1000,
                                               service_tier="default")  # none would be held as priority
    priority = client.with_raw_response.create(model="gpt-test", messages=HI, max_tokens=1000,
                                               service_tier="priority")
    assert priority.parse().service_tier == "priority"
    held = Decimal(priority.headers["x-tokentill-reserved"]) - Decimal(standard.headers["x-tokentill-reserved"])
    assert held == 1000 * (PRIORITY - OUT) / M
    assert charged(url, priority.headers["x-tokentill-request-id"]) == CHAT_CHARGE + 40 * (PRIORITY - OUT) / M
    assert fake.fake.calls[-1].body["service_tier"] == "priority"


@pytest.mark.parametrize("tier", [None, "auto"])
def test_an_openai_call_that_leaves_its_tier_to_the_project_is_held_at_the_dearest_tier(live, fake, tier):
    """A call with service_tier "auto", or none (OpenAI's default is auto), is served at the tier its
    project is set to, priority here, and billed at its prices: held at the dearest tier the book
    prices (was: at the standard prices, 0.02 short per 1,000 output tokens, under the charge for a
    long answer); charged at the tier the answer reports."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "out-priority", "token_type": "output", "price": str(PRIORITY),
                                            "match": {"service_tier": "priority"}},
                                      {"id": "out-flex", "token_type": "output", "price": "5",
                                       "match": {"service_tier": "flex"}})))
    client = oai(url, key).chat.completions
    fixed = client.with_raw_response.create(model="gpt-test", messages=HI, max_tokens=1000, service_tier="default")
    fake.fake.auto_tier = "priority"
    try:
        raw = client.with_raw_response.create(model="gpt-test", messages=HI, max_tokens=1000,
                                              **({"service_tier": tier} if tier else {}))
    finally:
        fake.fake.auto_tier = fk.AUTO_TIER
    assert raw.parse().service_tier == "priority"
    held = Decimal(raw.headers["x-tokentill-reserved"]) - Decimal(fixed.headers["x-tokentill-reserved"])
    assert held == 1000 * (PRIORITY - OUT) / M
    assert charged(url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE + 40 * (PRIORITY - OUT) / M
    assert charged(url, fixed.headers["x-tokentill-request-id"]) == CHAT_CHARGE


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_answer_to_a_call_that_left_its_tier_to_the_provider_tells_the_tier_that_served(
        live, fake, kind, stream):
    """OpenAI answers a call that leaves its tier to the provider (none asked: "auto") with the
    tier that served it, "default" for a project at the standard tier; the fake left it out of
    every such answer. Told, the call is charged at that tier and the record says the provider
    told it: CHAT_CHARGE (8,000 + 200 + 40 * 20) / 1M + 0.001 = 0.0100, RESPONSES_CHARGE
    (7,000 + 100 + 56 * 20) / 1M + 0.001 = 0.00922, though the hold priced priority (40 per
    million output tokens). Left out (auto_tier None), it is charged at the held tier, recorded as
    assumed: chat (8,000 + 200 + 40 * 40) / 1M + 0.001 = 0.0108, responses (7,000 + 100 +
    56 * 40) / 1M + 0.001 = 0.01034 (reasoning is priced as output)."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "out-priority", "token_type": "output", "price": str(PRIORITY),
                                            "match": {"service_tier": "priority"}})))
    client = oai(url, key)

    def call() -> tuple[str, str | None]:
        """(the request id, the tier the answer told)"""
        args: dict[str, Any] = {"model": "gpt-test", "max_tokens" if kind == "chat" else "max_output_tokens": 100}
        create = client.chat.completions.with_raw_response.create if kind == "chat" \
            else client.responses.with_raw_response.create
        args.update({"messages": HI} if kind == "chat" else {"input": "hi"})
        if not stream:
            raw = create(**args)
            return raw.headers["x-tokentill-request-id"], raw.parse().service_tier
        raw = create(**args, stream=True, **({"stream_options": {"include_usage": True}} if kind == "chat" else {}))
        tiers = {getattr(e, "service_tier", None) or getattr(getattr(e, "response", None), "service_tier", None)
                 for e in raw.parse()} - {None}
        assert len(tiers) <= 1, tiers
        return raw.headers["x-tokentill-request-id"], next(iter(tiers), None)

    told, tier = call()
    assert tier == "default"
    usage = charge_usage(url, told)
    assert usage["dimensions"] == {"service_tier": "default"} and "assumed" not in usage
    assert charged(url, told) == (CHAT_CHARGE if kind == "chat" else RESPONSES_CHARGE)
    assert (CHAT_CHARGE, RESPONSES_CHARGE) == (Decimal("0.0100"), Decimal("0.00922"))
    fake.fake.auto_tier = None
    try:
        omitted, tier = call()
    finally:
        fake.fake.auto_tier = fk.AUTO_TIER
    assert tier is None
    usage = charge_usage(url, omitted)
    assert usage["assumed"] == usage["dimensions"] == {"service_tier": "priority"}
    held = (800 * IN + 200 * CACHED + 40 * PRIORITY if kind == "chat" else 700 * IN + 100 * CACHED + 56 * PRIORITY)
    assert held / M + CALL == (Decimal("0.0108") if kind == "chat" else Decimal("0.01034"))
    assert charged(url, omitted) == held / M + CALL


@pytest.mark.parametrize("kind", ["chat", "responses"])
@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_answer_that_says_auto_is_charged_at_the_tier_the_hold_priced(live, fake, kind, stream):
    """An answer whose service_tier is "auto" (the call's own choice echoed, not a tier that
    served) was read as telling the tier: the usage went with service_tier "auto", which the
    priority rule does not match, so the call was charged standard prices, CHAT_CHARGE 0.0100 /
    RESPONSES_CHARGE 0.00922, though its hold priced priority, and nothing was recorded as assumed.
    Now "auto" tells nothing: charged at the held tier, recorded as assumed, chat
    (8,000 + 200 + 40 * 40) / 1M + 0.001 = 0.0108, responses (7,000 + 100 + 56 * 40) / 1M + 0.001
    = 0.01034 (the figures of the answer that does not tell its tier)."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "out-priority", "token_type": "output", "price": str(PRIORITY),
                                            "match": {"service_tier": "priority"}})))
    client = oai(url, key)
    args: dict[str, Any] = {"model": "gpt-test", "max_tokens" if kind == "chat" else "max_output_tokens": 100}
    args.update({"messages": HI} if kind == "chat" else {"input": "hi"})
    create = client.chat.completions.with_raw_response.create if kind == "chat" \
        else client.responses.with_raw_response.create
    fake.fake.served_tier = "auto"
    try:
        if stream:
            raw = create(**args, stream=True, **({"stream_options": {"include_usage": True}} if kind == "chat" else {}))
            tiers = {getattr(e, "service_tier", None) or getattr(getattr(e, "response", None), "service_tier", None)
                     for e in raw.parse()} - {None}
        else:
            raw = create(**args)
            tiers = {raw.parse().service_tier}
    finally:
        fake.fake.served_tier = None
    assert tiers == {"auto"}
    request_id = raw.headers["x-tokentill-request-id"]
    usage = charge_usage(url, request_id)
    assert usage["assumed"] == usage["dimensions"] == {"service_tier": "priority"}
    assert "service_tier" not in usage["reported"]
    held = 800 * IN + 200 * CACHED + 40 * PRIORITY if kind == "chat" else 700 * IN + 100 * CACHED + 56 * PRIORITY
    assert held / M + CALL == (Decimal("0.0108") if kind == "chat" else Decimal("0.01034"))
    assert charged(url, request_id) == held / M + CALL


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_fast_mode_call_is_held_and_charged_at_the_books_fast_price(live, fake, stream):
    """Anthropic bills fast mode (speed: fast) at its own, higher prices: a book prices it with
    rules that match speed fast (was: held and charged at the standard prices, 0.0024 short here)."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "out-fast", "token_type": "output", "price": str(FAST),
                                            "match": {"speed": "fast"}})))
    client = claude(url, key)
    args = {"model": "claude-test", "max_tokens": 1000, "messages": HI, "extra_body": {"speed": "fast"}}
    if stream:
        with client.messages.stream(**args) as s:
            "".join(s.text_stream)
            headers = s.response.headers
    else:
        headers = client.messages.with_raw_response.create(**args).headers
    assert Decimal(headers["x-tokentill-reserved"]) >= 1000 * FAST / M
    assert charged(url, headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + 40 * (FAST - OUT) / M
    assert fake.fake.calls[-1].body["speed"] == "fast"


@pytest.mark.parametrize("ttl, write", [(None, WRITE), ("1h", Decimal("20"))])
def test_an_anthropic_prompt_marked_for_caching_is_held_at_the_cache_write_price(live, fake, ttl, write):
    """Anthropic bills a prompt it writes to its cache (cache_control) at the cache write price,
    1.25 times input for 5 minutes, twice for an hour: held at it (was: at the input price, short
    by 2.5 (5 minutes) or 10 (one hour) per million prompt tokens at the test's book)."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "write-1h", "token_type": "cache_write_1h", "price": "20.00"})))
    client = claude(url, key).messages.with_raw_response
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    bare = client.create(model="claude-test", max_tokens=100, messages=HI,
                         system=[{"type": "text", "text": words(1000)}])
    cached = client.create(model="claude-test", max_tokens=100, messages=HI,
                           system=[{"type": "text", "text": words(1000), "cache_control": control}])
    held = Decimal(cached.headers["x-tokentill-reserved"]) - Decimal(bare.headers["x-tokentill-reserved"])
    assert held >= 1000 * (write - IN) / M
    # the usage: its 50 cache writes, one-hour ones when asked (the fake splits them by duration, as
    # Anthropic does), at the one-hour price
    assert charged(url, cached.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + 50 * (write - WRITE) / M


@pytest.mark.parametrize("field", ["advisor", "fallbacks"])
def test_an_anthropic_call_another_model_may_serve_is_refused_before_the_upstream_call(live, fake, field):
    """Anthropic's advisor tool runs a sub-inference on another model, and a call with fallbacks
    may be served by another model, each billed at that model's prices (usage.iterations): the
    gateway holds and charges the call's model alone, so it refuses them rather than charge them
    at the wrong model's prices (was: answered, the other model's tokens given away)."""
    url, _ = live
    cid, key = customer(live)
    args: dict[str, Any] = {"model": "claude-test", "max_tokens": 100, "messages": HI}
    if field == "advisor":
        args["tools"] = [{"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}]
    else:
        args["extra_body"] = {"fallbacks": [{"model": "claude-sonnet-4-6"}]}
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude(url, key).messages.create(**args)
    assert raised.value.status_code == 422 and raised.value.body["error"]["code"] == "unpriced_model"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


COMPACT = {"edits": [{"type": "compact_20260112"}]}


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_compaction_is_charged_the_tokens_its_usage_reports_apart(live, fake, stream):
    """Anthropic bills a compaction (context_management's compact edit) as a sampling of its own,
    whose tokens its usage reports in a compaction iteration, not in the top-level counts."""
    url, _ = live
    cid, key = customer(live)
    client = claude(url, key)
    args = {"model": "claude-test", "max_tokens": 1000, "messages": HI, "extra_body": {"context_management": COMPACT}}
    if stream:
        with client.messages.stream(**args) as s:
            "".join(s.text_stream)
            headers = s.response.headers
    else:
        headers = client.messages.with_raw_response.create(**args).headers
    compaction = (fk.COMPACTION["input_tokens"] * IN + fk.COMPACTION["output_tokens"] * OUT) / M
    # was: the top-level counts alone, the compaction's 3,000 in and 200 out given away
    assert charged(url, headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + compaction
    assert wallet(url, cid) == (Decimal("10") - MESSAGES_CHARGE - compaction, 0)


def test_an_anthropic_mcp_server_is_held_for_its_tool_listing(live, fake):
    """Anthropic's MCP connector (mcp_servers) adds each server's tool definitions to the prompt,
    billed as input the body does not show: held at the results allowance per server (was: not
    at all)."""
    url, _ = live
    _, key = customer(live)
    client = claude(url, key).messages.with_raw_response
    bare = client.create(model="claude-test", max_tokens=100, messages=HI)
    servers = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "docs"},
               {"type": "url", "url": "https://mcp.example.org/sse", "name": "wiki"}]
    listed = client.create(model="claude-test", max_tokens=100, messages=HI, extra_body={"mcp_servers": servers})
    held = Decimal(listed.headers["x-tokentill-reserved"]) - Decimal(bare.headers["x-tokentill-reserved"])
    assert held >= 2 * 10_000 * IN / M
    assert fake.fake.calls[-1].body["mcp_servers"] == servers


def test_a_format_1_book_charges_no_openai_web_search(live, fake):
    """A format 1 book bills no per-call tools: the answer's usage alone, its searches rated at nothing."""
    url, _ = live
    cid, key = customer(live)
    raw = oai(url, key).responses.with_raw_response.create(model="gpt-test", input="hi", max_output_tokens=100,
                                                           tools=[OPENAI_SEARCH])
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)


def test_an_openai_stream_left_after_web_searches_is_charged_the_searches_it_showed(live, fake):
    """Left before response.completed: the web_search_call items the stream showed are billed by
    OpenAI all the same (the stream read on to its end for its usage). The same call at two books, a
    search at 0.01 and at 0.03, differs by its 2 searches at 0.02."""
    url, _ = live
    paid = []
    for price in (SEARCH, 3 * SEARCH):
        _, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(price)})))
        received = 0
        with oai(url, key).responses.with_streaming_response.create(
                model="gpt-test-stall", input="hi", max_output_tokens=1000, tools=[OPENAI_SEARCH],
                stream=True) as response:
            request_id = response.headers["x-tokentill-request-id"]
            for event in response.parse():
                received += event.type == "response.output_text.delta"
                if received == fk.PAUSE_AFTER:
                    break
        paid.append(charged(url, request_id))
        assert _wait_done(fake).emitted == 2 * fk.PAUSE_AFTER
    # the usage (700 input, 100 cached, 416 output) and the call, and the searches
    assert paid[0] == (700 * IN + 100 * CACHED + 416 * OUT) / M + CALL + 2 * SEARCH
    assert paid[1] - paid[0] == 2 * 2 * SEARCH  # was: 0, the searches given away


def test_anthropic_built_in_tools_are_held_with_the_tokens_anthropic_adds_for_them(live):
    url, _ = live
    _, key = customer(live)
    client = claude(url, key)
    bare = client.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI)
    tools = [{"type": "bash_20250124", "name": "bash"}, {"type": "text_editor_20250728", "name": "edit"}]
    raw = client.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI, tools=tools)
    held = Decimal(raw.headers["x-tokentill-reserved"]) - Decimal(bare.headers["x-tokentill-reserved"])
    # the tool-use system prompt (804: an unlisted model), bash's 245 and the text editor's 700 tokens
    assert held == (804 + 245 + 700) * IN / M


def test_a_pdf_is_held_for_each_of_its_pages_so_a_wallet_that_cannot_pay_them_is_refused(live, fake):
    url, _ = live
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for n in range(40):
        pdf.add_page()
        pdf.cell(text=f"page {n + 1}")
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                               "data": base64.b64encode(bytes(pdf.output())).decode()}}
    messages = [{"role": "user", "content": [document]}]
    # "user" (cl100k_base plus 10 %: 2), 3 + 3, and 40 pages at 3,000 text + 1,600 image tokens each
    hold = ((2 + 6 + 40 * 4600) * IN + 100 * OUT) / M + CALL
    assert hold == Decimal("1.84308")
    _, key = customer(live)
    raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=messages)
    assert Decimal(raw.headers["x-tokentill-reserved"]) == hold and Decimal(raw.headers["x-tokentill-charged"]) \
        == MESSAGES_CHARGE
    cid, poor = customer(live, amount="0.50")  # paid the 2,500 tokens it was held for, not 40 pages
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude(url, poor).messages.create(model="claude-test", max_tokens=100, messages=messages)
    assert raised.value.status_code == 402 and raised.value.body["error"]["code"] == "insufficient_funds"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("0.50"), 0)


@pytest.mark.parametrize("stream", [False, True])
def test_responses_are_charged_their_usage(live, stream):
    url, _ = live
    cid, key = customer(live)
    client = oai(url, key)
    if stream:
        with client.responses.with_streaming_response.create(model="gpt-test", input="hi", stream=True) as r:
            events = list(r.parse())
            request_id = r.headers["x-tokentill-request-id"]
        assert events[-1].type == "response.completed" and events[-1].response.output_text == words(40)
    else:
        raw = client.responses.with_raw_response.create(model="gpt-test", input="hi")
        assert raw.parse().output_text == words(40)
        request_id = raw.headers["x-tokentill-request-id"]
    assert charged(url, request_id) == RESPONSES_CHARGE == Decimal("0.00922")
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)


@pytest.mark.parametrize(("model", "context", "earlier"), [
    ("gpt-test", 400_000, {"previous_response_id": "resp_1"}), ("gpt-4o", 128_000, {"previous_response_id": "resp_1"}),
    # an earlier item by id, a stored prompt: billed as input, not in the body (were held at "hi": 7 or 8)
    ("gpt-test", 400_000, {"input": ["hi", {"type": "item_reference", "id": "msg_1"}]}),
    ("gpt-test", 400_000, {"prompt": {"id": "pmpt_1", "variables": {"city": "Paris"}}}),
    # an earlier answer's reasoning by its id (a stored response's, its summary alone in the body):
    # OpenAI gives the model, and bills as input, the reasoning it stored (was: held at the summary)
    ("gpt-test", 400_000, {"input": [{"role": "user", "content": "hi"},
                                     {"type": "reasoning", "id": "rs_1", "summary": []}]})])
def test_a_response_that_continues_a_conversation_is_held_for_the_models_context_window(live, model, context,
                                                                                        earlier):
    # gpt-4o: genai-prices' 128,000 tokens; gpt-test, a model it does not know:
    # TOKENTILL_GATEWAY_CONTEXT_HOLD_TOKENS' default, 400,000
    url, _ = live
    cid, key = customer(live)
    raw = oai(url, key).responses.with_raw_response.create(model=model, max_output_tokens=1000,
                                                           **{"input": "hi", **earlier})
    # the earlier turns OpenAI bills as input (was: "hi" and the overhead, 7 or 8 tokens)
    assert Decimal(raw.headers["x-tokentill-reserved"]) == (context * WRITE + 1000 * OUT) / M + CALL
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE  # the provider's usage
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)


def test_a_token_budget_counts_a_continued_conversation_at_its_hold_and_settles_its_usage(live, fake):
    """A token budget counted a call that continues a conversation at the body's tokens ("hi":
    7, and the 1,000 of output) while its money was held for the model's context window: a
    budget of 100,000 tokens let such calls through, each billed the earlier turns as input."""
    url, _ = live
    cid, key = customer(live)
    with admin(url) as http:
        budget = http.post("/v1/budgets", json={"customer_id": cid, "window": "day", "metric": "tokens",
                                                "limit": 100_000})
        assert budget.status_code == 201, budget.text
    before = len(fake.fake.calls)
    with pytest.raises(openai.RateLimitError) as raised:
        oai(url, key).responses.create(model="gpt-test", input="hi", previous_response_id="resp_1",
                                       max_output_tokens=1000)
    assert raised.value.body["code"] == "budget_exceeded"
    assert raised.value.body["tokentill"]["requested"] == 400_000 + 1000  # the hold's prompt and output
    assert len(fake.fake.calls) == before  # refused before the upstream
    with admin(url) as http:
        assert http.patch(f"/v1/budgets/{budget.json()['id']}", json={"limit": 500_000}).status_code == 200
    raw = oai(url, key).responses.with_raw_response.create(model="gpt-test", input="hi", conversation="conv_1",
                                                           max_output_tokens=1000)
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE
    with admin(url) as http:
        counted = http.get(f"/v1/budgets/{budget.json()['id']}").json()
    # the settle counts the provider's usage: 700 input + 100 cached + 40 output + 16 reasoning
    assert (counted["used"], counted["held"]) == (856, 0), counted


@pytest.mark.parametrize("earlier", [{"previous_response_id": "resp_1"}, {"conversation": "conv_1"},
                                     {"prompt": {"id": "pmpt_1"}}])
def test_a_continued_conversation_is_held_to_the_customers_maximum_charge_before_the_upstream(live, fake, earlier):
    """README (Plausibility): a call that continues a conversation is held at its model's whole
    context window, and one whose hold passes the customer's max_charge_per_request is refused
    before it goes upstream. gpt-test's window, 400,000 tokens at the cache write price, the
    1,000 of output and the call: 5.00 + 0.02 + 0.001 = 5.021 past a maximum of 1.00, 422
    implausible_usage, nothing held; the same call without the earlier turns fits and is charged."""
    url, book = live
    cid = f"gw-max-{uuid.uuid4().hex[:10]}"
    with admin(url) as http:
        assert http.post("/v1/customers", json={"id": cid, "currency": "USD", "price_book": book,
                                                "max_charge_per_request": "1.00"}).status_code == 201
        assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"}).status_code == 201
        key = http.post("/v1/api-keys", json={"scope": "inference", "customers": [cid]}).json()["key"]
    before = len(fake.fake.calls)
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        oai(url, key).responses.create(model="gpt-test", input="hi", max_output_tokens=1000, **earlier)
    refusal = raised.value.body
    assert (refusal["code"], refusal["tokentill"]["limit"], refusal["tokentill"]["maximum"]) == (
        "implausible_usage", "max_charge_per_request", "1.00")
    assert Decimal(refusal["tokentill"]["value"]) == (400_000 * WRITE + 1000 * OUT) / M + CALL == Decimal("5.021")
    assert len(fake.fake.calls) == before  # refused before the upstream
    assert wallet(url, cid) == (Decimal("10"), 0)
    raw = oai(url, key).responses.with_raw_response.create(model="gpt-test", input="hi", max_output_tokens=1000)
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE
    assert wallet(url, cid) == (Decimal("10") - RESPONSES_CHARGE, 0)


def test_a_continued_conversations_stream_cut_upstream_is_charged_the_body_not_the_hold(live):
    url, _ = live
    _, key = customer(live)
    with pytest.raises(openai.APIError, match="upstream stream failed"):
        with oai(url, key).responses.with_streaming_response.create(
                model="gpt-test-drop", input="hi", conversation="conv_1", stream=True) as response:
            request_id, reserved = response.headers["x-tokentill-request-id"], response.headers["x-tokentill-reserved"]
            list(response.parse())
    assert Decimal(reserved) == (400_000 * WRITE + 1000 * OUT) / M + CALL  # the cache write price: see above
    # no usage came: "hi", a token, 3 for its message and 3 for the reply, and the 10 tokens
    # generated, as any cut call (not the 400,000 tokens held for the earlier turns)
    assert charged(url, request_id) == (7 * IN + fk.DROP_AFTER * OUT) / M + CALL


def test_embeddings_are_charged_their_input_tokens(live):
    url, _ = live
    cid, key = customer(live)
    raw = oai(url, key).embeddings.with_raw_response.create(model="embed-test", input=["a", "b"])
    assert len(raw.parse().data) == 2
    assert charged(url, raw.headers["x-tokentill-request-id"]) == EMBEDDINGS_CHARGE == Decimal("0.00112")
    assert wallet(url, cid) == (Decimal("10") - EMBEDDINGS_CHARGE, 0)


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_messages_are_charged_their_usage_with_the_key_as_x_api_key(live, fake, stream):
    url, _ = live
    cid, key = customer(live)
    client = claude(url, key)
    if stream:
        with client.messages.stream(model="claude-test", max_tokens=1000, messages=HI) as s:
            text = "".join(s.text_stream)
            request_id = s.response.headers["x-tokentill-request-id"]
    else:
        raw = client.messages.with_raw_response.create(model="claude-test", max_tokens=1000, messages=HI)
        text = raw.parse().content[0].text
        request_id = raw.headers["x-tokentill-request-id"]
    assert text == words(40)
    assert charged(url, request_id) == MESSAGES_CHARGE == Decimal("0.011525")
    assert wallet(url, cid) == (Decimal("10") - MESSAGES_CHARGE, 0)
    sent = fake.fake.calls[-1].headers
    assert sent["x-api-key"] == "sk-upstream-anthropic" and "authorization" not in sent


def _claude_stream_left(url: str, key: str, model: str, **kw: Any) -> str:
    """A Messages stream the caller leaves after fk.PAUSE_AFTER text events (the `with` closes
    it); its request id."""
    with claude(url, key).messages.stream(model=model, max_tokens=1000, messages=HI, **kw) as s:
        request_id = s.response.headers["x-tokentill-request-id"]
        for received, _ in enumerate(s.text_stream, 1):
            if received == fk.PAUSE_AFTER:
                break
    return request_id


def _wait_cancelled(fake: fk.FakeServer) -> fk.Logged:
    call = fake.fake.calls[-1]
    deadline = time.monotonic() + 10
    while not call.cancelled and time.monotonic() < deadline:
        time.sleep(0.02)
    assert call.cancelled, "the upstream never saw the cancellation"
    return call


def _wait_done(fake: fk.FakeServer) -> fk.Logged:
    """The last call, once the upstream sent all of it (the gateway read it on to its end)."""
    call = fake.fake.calls[-1]
    deadline = time.monotonic() + 10
    while not call.done and time.monotonic() < deadline:
        time.sleep(0.02)
    assert call.done and not call.cancelled, "the upstream's answer was not read to its end"
    return call


def test_a_chat_stream_cut_by_the_client_is_charged_what_was_sent_and_cancels_the_upstream(live, fake):
    url, _ = live
    cid, key = customer(live)
    received = 0
    with oai(url, key).chat.completions.with_streaming_response.create(
            model="gpt-test-pause", messages=HI, stream=True) as response:
        request_id = response.headers["x-tokentill-request-id"]
        for chunk in response.parse():
            received += bool(chunk.choices and chunk.choices[0].delta.content)
            if received == fk.PAUSE_AFTER:
                break
    call = _wait_cancelled(fake)
    assert call.emitted == fk.PAUSE_AFTER == 200 and not call.done
    # no usage came: the prompt as counted (8 tokens) and the 200 tokens the upstream emitted
    assert charged(url, request_id) == (8 * IN + 200 * OUT) / M + CALL
    assert wallet(url, cid)[1] == 0


def test_an_anthropic_stream_cut_by_the_client_is_charged_the_reported_input_and_the_sent_output(live, fake):
    url, _ = live
    _, key = customer(live)
    request_id = _claude_stream_left(url, key, "claude-test-pause")
    call = _wait_cancelled(fake)
    assert call.emitted == 200
    assert charged(url, request_id) == (900 * IN + 100 * CACHED + 50 * WRITE + 200 * OUT) / M + CALL


@pytest.mark.parametrize("told", [None, "us", "global"])
def test_an_anthropic_stream_cut_by_the_client_is_charged_where_it_ran_else_where_its_hold_assumed(
        live, fake, told):
    """A call that names no inference_geo runs where its workspace defaults (a book prices US-only
    inference dearer, 22 where 20 per million output tokens: `out-us`), and its hold is priced at
    the dearest geography the book has, us. Cut by the client after 200 tokens, its usage never
    comes; message_start's usage (900 input, 100 cached, 50 written) tells where it runs when
    Anthropic says so (`told`), and is what the cut is charged with. By hand:
    - told us, or told nothing (us assumed, the held geography): (900 * 10 + 100 * 1 + 50 * 12.5
      + 200 * 22) / 1M + 0.001 = (9,000 + 100 + 625 + 4,400) / 1M + 0.001 = 0.015125;
    - told global: 200 * 20 = 4,000 for the output, 13,725 / 1M + 0.001 = 0.014725 (never the
      held us price for a geography the provider said).
    A told geography is the provider's (in `reported`); one not told is recorded as assumed (519ae05),
    never as reported."""
    url, _ = live
    us = Decimal("22")
    _, key = customer((url, tool_book(url, {"id": "out-us", "token_type": "output", "price": str(us),
                                            "match": {"inference_geo": "us"}})))
    fake.fake.default_geo = told
    try:
        request_id = _claude_stream_left(url, key, "claude-test-pause")
        assert _wait_cancelled(fake).emitted == 200
    finally:
        fake.fake.default_geo = None
    cost = (900 * IN + 100 * CACHED + 50 * WRITE + 200 * (OUT if told == "global" else us)) / M + CALL
    assert cost == (Decimal("0.014725") if told == "global" else Decimal("0.015125"))
    assert charged(url, request_id) == cost
    usage = charge_usage(url, request_id)
    if told is None:
        assert usage["assumed"] == {"inference_geo": "us"} and "inference_geo" not in usage["reported"], usage
        assert usage["dimensions"]["inference_geo"] == "us", usage
    else:
        assert usage["reported"]["inference_geo"] == told and "inference_geo" not in usage.get("assumed", {}), usage


def test_an_anthropic_stream_left_after_web_searches_is_charged_its_usage_searches_included(live, fake):
    """Left before the final usage came: the searches Anthropic ran (its server_tool_use blocks), and
    their results, are billed by Anthropic all the same, so the stream is read on to its end and
    charged its usage: 900 input, 100 cached, 50 written, 400 output tokens and 2 searches.
    Was: cut, charged the input and the 200 tokens sent (and, before that, no search)."""
    url, _ = live
    _, key = customer((url, tool_book(url, {"id": "search", "token_type": "web_search", "price": str(SEARCH)})))
    request_id = _claude_stream_left(url, key, "claude-test-stall", tools=[WEB_SEARCH])
    assert charged(url, request_id) == (900 * IN + 100 * CACHED + 50 * WRITE + 400 * OUT) / M + CALL + 2 * SEARCH
    assert _wait_done(fake).emitted == 2 * fk.PAUSE_AFTER


THINKING = {"type": "enabled", "budget_tokens": 1024}


def _read_until(events, last) -> None:
    """Read a stream's events up to the one `last` is true of, then leave (the `with` closes it)."""
    for event in events:
        if last(event):
            return


@pytest.mark.parametrize("api", ["chat", "responses", "prediction"])
def test_a_reasoning_stream_the_caller_leaves_before_its_usage_is_charged_the_usage(live, fake, api):
    """A reasoning model's thinking is billed as output but never sent (OpenAI), or sent as a
    summary (Claude 4); only the final usage counts it; so are the rejected tokens of a chat
    call's predicted output. A caller who read the whole answer and left before that usage was
    charged the visible output alone (was: chat 8 input and 40 output tokens, its reasoning given
    away). The gateway reads on to the usage (the fake sends it 0.5 s after the answer)
    and charges it."""
    url, _ = live
    cid, key = customer(live)
    if api in ("chat", "prediction"):
        given = {"model": "o3-lateusage"} if api == "chat" else {
            "model": "gpt-test-lateusage", "prediction": {"type": "content", "content": words(100)}}
        with oai(url, key).chat.completions.with_streaming_response.create(
                messages=HI, stream=True, max_completion_tokens=1000, **given) as response:
            request_id = response.headers["x-tokentill-request-id"]
            _read_until(response.parse(), lambda chunk: bool(chunk.choices and chunk.choices[0].finish_reason))
        expected = CHAT_CHARGE
    elif api == "responses":
        deltas = iter(range(1, fk.OUTPUT_TOKENS + 1))
        with oai(url, key).responses.with_streaming_response.create(
                model="o3-lateusage", input="hi", stream=True, max_output_tokens=1000) as response:
            request_id = response.headers["x-tokentill-request-id"]
            _read_until(response.parse(), lambda event: event.type == "response.output_text.delta"
                        and next(deltas) == fk.OUTPUT_TOKENS)
        expected = RESPONSES_CHARGE
    assert charged(url, request_id) == expected
    assert wallet(url, cid) == (Decimal("10") - expected, 0)


@pytest.mark.parametrize("api", ["chat", "responses", "messages"])
def test_a_reasoning_stream_left_mid_answer_is_read_to_its_end_and_charged_its_usage(live, fake, api):
    """Left mid-answer, a reasoning call's hidden thinking is billed by the provider as output and
    counted only in the usage at its end. The gateway read on 2 s for it, then cut the call and
    charged the output cap (chat: 8 prompt tokens and 1,000 output, 0.02108), the most it may have
    thought. Now it reads the stream on to its end (here 3 s of silence after the 200 tokens sent,
    then 200 more and the usage) and charges that usage, exact: never more than the cap."""
    url, _ = live
    cid, key = customer(live)
    if api == "chat":
        with oai(url, key).chat.completions.with_streaming_response.create(
                model="o3-stall", messages=HI, stream=True, max_completion_tokens=1000) as response:
            request_id = response.headers["x-tokentill-request-id"]
            sent = iter(range(1, fk.PAUSE_AFTER + 1))
            _read_until(response.parse(), lambda c: bool(c.choices and c.choices[0].delta.content)
                        and next(sent) == fk.PAUSE_AFTER)
        expected = (800 * IN + 200 * CACHED + 400 * OUT) / M + CALL  # the usage: 1,000 prompt (200 cached)
    elif api == "responses":
        with oai(url, key).responses.with_streaming_response.create(
                model="o3-stall", input="hi", stream=True, max_output_tokens=1000) as response:
            request_id = response.headers["x-tokentill-request-id"]
            sent = iter(range(1, fk.PAUSE_AFTER + 1))
            _read_until(response.parse(), lambda e: e.type == "response.output_text.delta"
                        and next(sent) == fk.PAUSE_AFTER)
        expected = (700 * IN + 100 * CACHED + 416 * OUT) / M + CALL  # 16 of the 416 reasoning
    else:
        with claude(url, key).messages.with_streaming_response.create(
                model="claude-test-stall", max_tokens=2000, messages=HI, thinking=THINKING, stream=True) as response:
            request_id = response.headers["x-tokentill-request-id"]
            sent = iter(range(1, fk.PAUSE_AFTER + 1))
            _read_until(response.parse(), lambda e: e.type == "content_block_delta" and next(sent) == fk.PAUSE_AFTER)
        expected = (900 * IN + 100 * CACHED + 50 * WRITE + 400 * OUT) / M + CALL
    assert charged(url, request_id) == expected
    assert wallet(url, cid) == (Decimal("10") - expected, 0)
    assert _wait_done(fake).emitted == 2 * fk.PAUSE_AFTER


@pytest.mark.parametrize("stream", [False, True])
def test_an_upstream_500_before_any_token_releases_the_hold_and_passes_the_error_through(live, fake, stream):
    url, _ = live
    cid, key = customer(live)
    with pytest.raises(openai.InternalServerError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test-fail", messages=HI, stream=stream)
    response = raised.value.response
    assert response.json() == {"error": {"message": "The server had an error", "type": "server_error",
                                         "param": None, "code": None}}
    assert response.headers["x-tokentill-charged"] == "0" and response.headers["x-request-id"] == "fake"
    assert charged(url, response.headers["x-tokentill-request-id"]) == 0
    assert wallet(url, cid) == (Decimal("10"), 0)


def read_until_dropped(url: str, key: str) -> tuple[str, str]:
    """Stream a call whose upstream drops it mid-way (the fake's `-drop` model), through the
    official client, which raises the gateway's stream error: (the text received, the request id)."""
    received = []
    with pytest.raises(openai.APIError, match="upstream stream failed"):
        with oai(url, key).chat.completions.with_streaming_response.create(
                model="gpt-test-drop", messages=HI, stream=True) as response:
            request_id = response.headers["x-tokentill-request-id"]
            for chunk in response.parse():
                received.append(chunk.choices[0].delta.content if chunk.choices else None)
    return "".join(filter(None, received)), request_id


def test_an_upstream_that_breaks_mid_stream_is_billed_what_it_generated_and_the_client_gets_an_error(live):
    url, _ = live
    _, key = customer(live)
    text, request_id = read_until_dropped(url, key)
    assert text == words(fk.DROP_AFTER)
    assert charged(url, request_id) == (8 * IN + fk.DROP_AFTER * OUT) / M + CALL


def test_an_anthropic_upstream_500_is_passed_through_and_released(live):
    url, _ = live
    cid, key = customer(live)
    with pytest.raises(anthropic.InternalServerError) as raised:
        claude(url, key).messages.create(model="claude-test-fail", max_tokens=100, messages=HI)
    assert raised.value.body == {"type": "error", "error": {"type": "api_error", "message": "Internal server error"}}
    assert wallet(url, cid) == (Decimal("10"), 0)


def test_an_insufficient_wallet_gets_a_provider_shaped_402_before_any_upstream_call(live, fake):
    url, _ = live
    _, key = customer(live, amount=None)  # never topped up
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI)
    assert raised.value.status_code == 402
    assert raised.value.body["code"] == "insufficient_funds" and raised.value.body["type"] == "insufficient_funds"
    with pytest.raises(anthropic.APIStatusError) as raised_too:
        claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI)
    assert raised_too.value.status_code == 402
    assert raised_too.value.body["error"]["type"] == "billing_error"
    assert len(fake.fake.calls) == before


def test_a_budget_refusal_is_the_providers_429_with_retry_after_before_any_upstream_call(live, fake):
    url, _ = live
    cid, key = customer(live)
    with admin(url) as http:
        budget = http.post("/v1/budgets", json={"customer_id": cid, "window": "minute", "metric": "requests",
                                                "limit": 1})
        assert budget.status_code == 201, budget.text
    oai(url, key).chat.completions.create(model="gpt-test", messages=HI)
    before = len(fake.fake.calls)
    with pytest.raises(openai.RateLimitError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI)
    assert raised.value.body["code"] == "budget_exceeded"
    assert raised.value.body["tokentill"]["budget_id"] == budget.json()["id"]
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60
    with pytest.raises(anthropic.RateLimitError):
        claude(url, key).messages.create(model="claude-test", max_tokens=10, messages=HI)
    assert len(fake.fake.calls) == before
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_keys_are_checked_and_a_key_of_several_customers_names_one(live):
    url, _ = live
    cid, _ = customer(live)
    with pytest.raises(openai.AuthenticationError):
        oai(url, "not-a-key").chat.completions.create(model="gpt-test", messages=HI)
    with admin(url) as http:
        reader = http.post("/v1/api-keys", json={"scope": f"customer:{cid}"}).json()["key"]
        several = http.post("/v1/api-keys", json={"scope": "inference"}).json()["key"]
    with pytest.raises(openai.PermissionDeniedError):
        oai(url, reader).chat.completions.create(model="gpt-test", messages=HI)
    with pytest.raises(openai.UnprocessableEntityError, match="x-tokentill-customer"):
        oai(url, several).chat.completions.create(model="gpt-test", messages=HI)
    rid = f"my-{uuid.uuid4().hex[:8]}"
    raw = oai(url, several, default_headers={"x-tokentill-customer": cid, "x-tokentill-request-id": rid}
              ).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    assert raw.headers["x-tokentill-request-id"] == rid and charged(url, rid) == CHAT_CHARGE
    with pytest.raises(openai.ConflictError):  # the same request id again is never billed twice
        oai(url, several, default_headers={"x-tokentill-customer": cid, "x-tokentill-request-id": rid}
            ).chat.completions.create(model="gpt-test", messages=HI)


@pytest.mark.parametrize("twice", ["authorization", "x-api-key", "authorization and x-api-key", "x-tokentill-customer",
                                   "x-tokentill-request-id", "x-tokentill-dimensions"])
def test_a_header_that_names_the_payer_sent_twice_is_refused_before_anything_is_held(live, fake, twice):
    """Two lines of the key (or of the customer, the request id, the dimensions) are two payers
    (two charges): a proxy before the gateway may check one, the gateway would bill the other.
    Refused whatever they say, as the API refuses two Authorization lines, before any hold or
    upstream call."""
    url, _ = live
    cid, key = customer(live)
    other, other_key = customer(live)
    with admin(url) as http:
        several = http.post("/v1/api-keys", json={"scope": "inference"}).json()["key"]
    lines = {"authorization": [("authorization", f"Bearer {key}"), ("authorization", f"Bearer {other_key}")],
             "x-api-key": [("x-api-key", key), ("x-api-key", other_key)],
             "authorization and x-api-key": [("authorization", f"Bearer {key}"), ("x-api-key", other_key)],
             "x-tokentill-customer": [("authorization", f"Bearer {several}"), ("x-tokentill-customer", cid),
                                      ("x-tokentill-customer", other)],
             "x-tokentill-request-id": [("authorization", f"Bearer {key}"), ("x-tokentill-request-id", "one"),
                                        ("x-tokentill-request-id", "two")],
             "x-tokentill-dimensions": [("authorization", f"Bearer {key}"), ("x-tokentill-dimensions", '{"a": "1"}'),
                                        ("x-tokentill-dimensions", '{"a": "2"}')]}[twice]
    before = len(fake.fake.calls)
    path = "/anthropic/v1/messages" if twice == "x-api-key" else "/openai/v1/chat/completions"
    raw = httpx.post(f"{url}{path}", headers=[*lines, ("content-type", "application/json")], timeout=30,
                     content=json.dumps({"model": "gpt-test", "max_tokens": 10, "messages": HI}))
    assert raw.status_code == (422 if twice.startswith("x-tokentill-") else 401), raw.text
    assert twice.split()[-1] in raw.text.lower() and raw.headers["x-tokentill-charged"] == "0"
    assert len(fake.fake.calls) == before
    assert wallet(url, cid) == wallet(url, other) == (Decimal("10"), 0)


@pytest.mark.parametrize("path", [b"/openai/v1/chat/completions", b"/anthropic/v1/messages/count_tokens"])
@pytest.mark.parametrize("auth", [b"", b"Authorization: Bearer not-a-key\r\n"])
def test_a_call_without_a_valid_key_is_refused_before_its_body_is_read(live, auth, path):
    """Anyone may open a connection: a keyless call announcing 30 MB had the gateway take (and hold)
    its whole body before the key was looked at, so that no answer came until the body was all
    in. Now the 401 comes on the head alone."""
    url, _ = live
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST " + path + b" HTTP/1.1\r\nHost: test\r\n" + auth +
                     b"Content-Type: application/json\r\nContent-Length: 30000000\r\n\r\n" + b" " * 65536)
        answer = b""
        while b"\r\n\r\n" not in answer:  # a timeout (5 s) fails the test: no answer came
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


def test_every_refusal_before_the_upstream_says_nothing_was_charged(live, fake):
    """The gateway's own refusals carry x-tokentill-charged: 0, as a passed-through upstream error
    and a free call do: 402, 429, 401, 403, 422, 409, 400, 404, 405 (and 413, below)."""
    url, _ = live
    cid, key = customer(live)
    _, poor = customer(live, amount=None)  # never topped up
    with admin(url) as http:
        reader = http.post("/v1/api-keys", json={"scope": f"customer:{cid}"}).json()["key"]
        several = http.post("/v1/api-keys", json={"scope": "inference"}).json()["key"]
        assert http.post("/v1/budgets", json={"customer_id": cid, "window": "minute", "metric": "requests",
                                              "limit": 1}).status_code == 201
    rid = f"once-{uuid.uuid4().hex[:8]}"
    once = oai(url, key, default_headers={"x-tokentill-request-id": rid})
    once.chat.completions.create(model="gpt-test", messages=HI)
    before = len(fake.fake.calls)
    refused: list[tuple[int, httpx.Response]] = []
    for status, make in [
            (402, lambda: oai(url, poor).chat.completions.create(model="gpt-test", messages=HI)),
            (402, lambda: claude(url, poor).messages.create(model="claude-test", max_tokens=10, messages=HI)),
            (429, lambda: oai(url, key).chat.completions.create(model="gpt-test", messages=HI)),
            (401, lambda: oai(url, "not-a-key").chat.completions.create(model="gpt-test", messages=HI)),
            (403, lambda: oai(url, reader).chat.completions.create(model="gpt-test", messages=HI)),
            (422, lambda: oai(url, several).chat.completions.create(model="gpt-test", messages=HI)),
            (409, lambda: once.chat.completions.create(model="gpt-test", messages=HI)),
            (400, lambda: oai(url, key).chat.completions.create(model="gpt-test", messages=HI, max_tokens=-1)),
            (404, lambda: oai(url, key).batches.list()),
            (405, lambda: oai(url, key).models.delete("ft:gpt-4o-mini:acme::a1b2"))]:
        with pytest.raises((openai.APIStatusError, anthropic.APIStatusError)) as raised:
            make()
        refused.append((status, raised.value.response))
    assert [(s, r.status_code, r.headers.get("x-tokentill-charged")) for s, r in refused] == \
        [(s, s, "0") for s, _ in refused]
    too_big = httpx.post(f"{url}/openai/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         content=b"x" * (32 * 1024 * 1024 + 1), timeout=60)
    assert too_big.status_code == 413 and too_big.headers["x-tokentill-charged"] == "0"
    assert len(fake.fake.calls) == before
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_a_request_id_header_is_read_as_utf_8_and_echoed_as_it_came(live, fake):
    """A request id with a non-ASCII character, sent as HTTP sends it, in UTF-8 ("réq", the bytes
    72 C3 A9 71): the gateway read the header's bytes as Latin-1, so it kept "rÃ©q" (four letters,
    where "réq" has three) as the reservation's request id, which a look-up of the id sent does not
    find (GET /v1/audit/charges/r%C3%A9q: 404), and echoed it encoded again, 72 C3 83 C2 A9 71, not
    what was sent. Now it is read as UTF-8: kept as sent, found, echoed byte for byte. Bytes that
    are not UTF-8 (72 E9 71, Latin-1's "réq") are refused, 422 and nothing held or sent."""
    url, _ = live
    cid, key = customer(live)
    sent = f"r\u00e9q-{uuid.uuid4().hex[:8]}".encode()
    answer = httpx.post(f"{url}/openai/v1/chat/completions", timeout=30, json={"model": "gpt-test", "messages": HI},
                        headers=[(b"authorization", f"Bearer {key}".encode()), (b"x-tokentill-request-id", sent)])
    assert answer.status_code == 200
    assert dict(answer.headers.raw)[b"x-tokentill-request-id"] == sent
    assert charged(url, sent.decode()) == CHAT_CHARGE
    before = len(fake.fake.calls)
    refused = httpx.post(f"{url}/openai/v1/chat/completions", timeout=30, json={"model": "gpt-test", "messages": HI},
                         headers=[(b"authorization", f"Bearer {key}".encode()),
                                  (b"x-tokentill-request-id", b"r\xe9q-" + uuid.uuid4().hex[:8].encode())])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"
    assert len(fake.fake.calls) == before
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_the_callers_dimensions_and_key_are_recorded_with_the_charge(live):
    url, _ = live
    _, key = customer(live)
    raw = oai(url, key, default_headers={"x-tokentill-dimensions": '{"feature": "chat", "tier": 2}'}
              ).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    with admin(url) as http:
        trace = http.get(f"/v1/audit/charges/{raw.headers['x-tokentill-request-id']}").json()
        key_id = next(k["id"] for k in http.get("/v1/api-keys").json() if k["customers"] == [trace["customer_id"]])
    assert trace["charges"][0]["dimensions"] == {"feature": "chat", "tier": 2, "api_key": key_id,
                                                 "gateway": "openai.chat.completions"}
    with pytest.raises(openai.UnprocessableEntityError, match="x-tokentill-dimensions"):
        oai(url, key, default_headers={"x-tokentill-dimensions": "[1]"}).chat.completions.create(
            model="gpt-test", messages=HI)


@pytest.mark.parametrize(("given", "field"), [('{"team": "\\ud800"}', "x-tokentill-dimensions.team"),
                                             ('{"\\udc00x": "a"}', "x-tokentill-dimensions")])
def test_an_unpaired_surrogate_in_the_dimensions_header_is_named(live, fake, given, field):
    """A lone surrogate escape in the header's JSON (`{"team": "\\ud800"}`) was answered with the
    generic "x-tokentill-dimensions must be a JSON object of at most 30 ... values" (the decoder
    refuses it in words that say nothing of it). Now 422 validation_error naming the header's
    field, as a body's is named (api.json_keys.UNPAIRED): `x-tokentill-dimensions.team: invalid
    JSON string: unpaired surrogate ...`, the header alone for a key; nothing held, nothing sent."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        oai(url, key, default_headers={"x-tokentill-dimensions": given}).chat.completions.create(
            model="gpt-test", messages=HI)
    assert raised.value.body["code"] == "validation_error"
    assert raised.value.body["message"] == f"{field}: invalid JSON string: unpaired surrogate " \
        "(a \\ud800 to \\udfff escape not in a high-low pair)"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "gpt-test", "messages": HI, "max_tokens": -1}, "max_tokens"),
    ({"model": "gpt-test", "messages": HI, "max_tokens": 10**12, "n": 1001}, "n"),
    # OpenAI's n is 1 or more (n 0 was held as 1 choice and forwarded); -1 and 1.5 were refused already
    ({"model": "gpt-test", "messages": HI, "n": 0}, "n"), ({"model": "gpt-test", "messages": HI, "n": -1}, "n"),
    ({"model": "gpt-test", "messages": HI, "n": 1.5}, "n"),
    # a field inside one: its top-level field, as OpenAI names `messages` for a message's fault
    ({"model": "gpt-test", "messages": [{"role": "user", "content": "\ud800"}]}, "messages"),
    ("not json", None)])
def test_a_call_the_gateway_refuses_names_its_field_as_openais_param(live, fake, body, param):
    """The gateway's 400 validation_error named the field in its message alone: `param` was null
    (max_tokens -1: "max_tokens: must be a whole number ...", param None), where OpenAI's own
    answer, and so its SDK's BadRequestError.param, names it ("max_tokens"). Now `param` is the
    call's top-level field the refusal names; null for a body that is no JSON object."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()  # "\ud800" as an escape
    with httpx.Client(base_url=f"{url}/openai/v1", headers={"authorization": f"Bearer {key}"}) as http:
        refused = http.post("/chat/completions", content=content, headers={"content-type": "application/json"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "validation_error"
    assert refused.json()["error"]["param"] == param
    if param == "max_tokens":  # as the official SDK reads it
        with pytest.raises(openai.BadRequestError) as raised:
            oai(url, key).chat.completions.create(**body)
        assert raised.value.param == "max_tokens"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize(("path", "call", "coding", "compressed"), [
    ("/openai/v1/chat/completions", {"model": "gpt-test", "messages": HI}, "gzip", True),
    ("/openai/v1/chat/completions", {"model": "gpt-test", "messages": HI}, "gzip", False),
    ("/openai/v1/chat/completions", {"model": "gpt-test", "messages": HI}, "br", False),
    ("/anthropic/v1/messages", {"model": "claude-test", "max_tokens": 10, "messages": HI}, "GZip", True)])
def test_a_body_with_a_content_encoding_is_refused_415_before_any_hold(live, fake, path, call, coding, compressed):
    """Content-Encoding was ignored: a gzip-compressed call was refused 400 "not JSON", and a plain
    body labelled gzip went on as if plain. Decided (as the REST API refuses it, api.routes.wire):
    the gateway takes bodies uncompressed only: any coding but identity is 415
    unsupported_media_type naming it, whether the body is compressed or not (a decoder would have
    to bound what it inflates by the body limit besides); nothing read, held or sent."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    content = json.dumps(call).encode()
    content = gzip.compress(content) if compressed else content
    auth = {"authorization": f"Bearer {key}"} if path.startswith("/openai") else {"x-api-key": key}
    refused = httpx.post(f"{url}{path}", content=content, timeout=30, headers={
        **auth, "content-type": "application/json", "content-encoding": coding})
    assert refused.status_code == 415, refused.text
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == ("unsupported_media_type", "invalid_request_error")
    assert error["message"] == f"Content-Encoding {coding.strip()} is not supported: send the body uncompressed"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    identity = httpx.post(f"{url}{path}", json=call, timeout=30, headers={**auth, "content-encoding": "identity"})
    assert identity.status_code == 200, identity.text


def test_a_dimensions_header_is_read_as_utf_8(live, fake):
    """x-tokentill-dimensions sent as HTTP sends it, in UTF-8: {"feature": "café"}, its "é" the
    bytes C3 A9. The gateway read the header's bytes as Latin-1 (as it read the request id before
    e078804), so it recorded the dimension as "cafÃ©" (5 letters for 4), which a report grouped
    by feature shows apart from the "café" the console or POST /v1/reservations records. Now it is
    read as UTF-8 and recorded as sent; bytes that are not UTF-8 (E9, Latin-1's "é") are refused,
    422 validation_error naming the header, nothing held or sent."""
    url, _ = live
    cid, key = customer(live)
    answer = httpx.post(f"{url}/openai/v1/chat/completions", timeout=30, json={"model": "gpt-test", "messages": HI},
                        headers=[(b"authorization", f"Bearer {key}".encode()),
                                 (b"x-tokentill-dimensions", '{"feature": "café"}'.encode())])
    assert answer.status_code == 200
    with admin(url) as http:
        trace = http.get(f"/v1/audit/charges/{answer.headers['x-tokentill-request-id']}").json()
    assert trace["charges"][0]["dimensions"]["feature"] == "caf\u00e9"
    before = len(fake.fake.calls)
    refused = httpx.post(f"{url}/openai/v1/chat/completions", timeout=30, json={"model": "gpt-test", "messages": HI},
                         headers=[(b"authorization", f"Bearer {key}".encode()),
                                  (b"x-tokentill-dimensions", b'{"feature": "caf\xe9"}')])
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "validation_error"
    assert "x-tokentill-dimensions" in refused.json()["error"]["message"]
    assert len(fake.fake.calls) == before
    assert wallet(url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


@pytest.mark.parametrize("path", ["/openai/v1/chat/completions", "/anthropic/v1/messages"])
def test_a_body_nested_1000_deep_is_refused_in_the_providers_shape_not_a_500(live, fake, path):
    """A call whose "metadata" holds 999 lists one in another (1 + 1 + 999 = 1,001 levels) ended in
    a 500 (the decoder's RecursionError), where the HTTP API refuses a body past 32 levels with a
    422. Now 400 validation_error in the provider's error shape, as the gateway's other bad bodies
    are: "JSON nested deeper than 128 arrays and objects"; nothing held, nothing sent."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    body = b'{"model": "gpt-test", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], ' \
        b'"metadata": {"a": ' + b"[" * 999 + b"]" * 999 + b"}}"
    raw = httpx.post(f"{url}{path}", timeout=30, content=body,
                     headers={"authorization": f"Bearer {key}", "x-api-key": key, "content-type": "application/json"})
    assert raw.status_code == 400, raw.text
    error = raw.json()["error"]
    assert "JSON nested deeper than 128 arrays and objects" in error["message"]
    assert error["type"] == "invalid_request_error"
    assert raw.headers["x-tokentill-charged"] == "0"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


def test_a_dimensions_header_nested_1000_deep_is_refused_not_a_500(live, fake):
    """`x-tokentill-dimensions: [[[...]]]`, 1,000 lists one in another (2,000 bytes, a header the
    server takes), was decoded as it came: msgspec gives up near 995 levels in RecursionError, which
    only DecodeError was caught for, so the call ended in a 500. A dimensions object holds no array
    or object (1 level): now anything nested is refused, 422 validation_error with the header's
    usual message, nothing held, nothing sent."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    for given in ("[" * 1000 + "]" * 1000, '{"a": ' + "[" * 999 + "]" * 999 + "}"):
        with pytest.raises(openai.UnprocessableEntityError) as raised:
            oai(url, key, default_headers={"x-tokentill-dimensions": given}).chat.completions.create(
                model="gpt-test", messages=HI)
        assert raised.value.body["code"] == "validation_error"
        assert raised.value.body["message"].startswith("x-tokentill-dimensions must be a JSON object of at most 30 ")
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


def test_a_customers_key_may_not_name_a_dimension_its_price_book_prices_by(live, fake):
    """A book priced from genai-prices has rules matching `processing: batch` at half price. A
    customer's key sent `x-tokentill-dimensions: {"processing": "batch"}` with a call the gateway
    forwards as it is (a realtime call), and was charged the batch price: 0.0056 for a 0.0100 call
    here. A dimension the book prices by comes from the call, never the caller: refused, nothing
    held or sent; a dimension no rule matches (feature) is recorded as before."""
    url, _ = live
    cid, key = customer((url, tool_book(url, {"id": "in-batch", "token_type": "input", "price": "5.00",
                                              "match": {"processing": "batch"}},
                                        {"id": "out-batch", "token_type": "output", "price": "10.00",
                                         "match": {"processing": "batch"}})))
    before = len(fake.fake.calls)
    with pytest.raises(openai.UnprocessableEntityError, match=r"x-tokentill-dimensions.*processing") as refused:
        oai(url, key, default_headers={"x-tokentill-dimensions": '{"feature": "chat", "processing": "batch"}'}
            ).chat.completions.create(model="gpt-test", messages=HI, max_tokens=50)
    assert refused.value.response.headers["x-tokentill-charged"] == "0"
    assert refused.value.body["code"] == "validation_error"
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    raw = oai(url, key, default_headers={"x-tokentill-dimensions": '{"feature": "chat"}'}
              ).chat.completions.with_raw_response.create(model="gpt-test", messages=HI, max_tokens=50)
    assert charged(url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE  # the realtime prices


def test_a_customers_key_naming_another_key_in_its_dimensions_is_refused_as_on_every_path(live, fake):
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    # before: the call went through, its api_key quietly replaced (POST /v1/reservations let it stand)
    with pytest.raises(openai.PermissionDeniedError, match=r"x-tokentill-dimensions\.api_key"):
        oai(url, key, default_headers={"x-tokentill-dimensions": '{"api_key": "key_0000000000000000"}'}
            ).chat.completions.create(model="gpt-test", messages=HI)
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


async def test_64_parallel_streams_on_a_wallet_of_10_holds_10_proceed_54_are_refused(live, fake):
    url, _ = live
    # The hold, by hand: prompt "user" + "hi" counted in cl100k_base with the 10 % margin of an
    # unknown model (2 -> 3) plus 3 per message and 3 for the reply, 9 tokens, at the cache write
    # price (OpenAI may write the prompt to its cache); 1,000 output tokens.
    hold = (9 * WRITE + 1000 * OUT) / M + CALL  # 0.0211125
    funds = (10 * hold + hold / 2).quantize(Decimal("0.01"))  # cash is whole cents: 0.22, 10.4 holds
    assert 10 * hold <= funds < 11 * hold
    cid, key = customer(live, amount=str(funds))
    client = openai.AsyncOpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=100)))

    async def one() -> str:
        try:
            stream = await client.chat.completions.create(model="gpt-test-hold", messages=HI, stream=True,
                                                          max_tokens=1000)
        except openai.APIStatusError as exc:
            assert exc.status_code == 402 and exc.body["code"] == "insufficient_funds"
            return "refused"
        async for _ in stream:
            pass
        return "proceeded"

    calls = [asyncio.create_task(one()) for _ in range(64)]
    for finished, call in enumerate(asyncio.as_completed(calls, timeout=60), 1):
        assert await call == "refused"  # none can finish before the fake lets the held ones go
        if finished == 54:
            break
    fake.fake.release()  # the 10 held streams finish only now: every hold was taken at once
    outcomes = await asyncio.gather(*calls)
    await client.close()
    assert outcomes.count("proceeded") == 10 and outcomes.count("refused") == 54
    available, reserved = await asyncio.to_thread(wallet, url, cid)
    assert reserved == 0 and available == funds - 10 * CHAT_CHARGE


def test_a_gateway_call_is_held_and_charged_at_the_customers_contract_price(live, fake):
    url, _ = live
    cid, key = customer(live)
    contract = Decimal("5")  # the customer's own input price for gpt-test, against the book's $10/M
    with admin(url) as http:
        put = http.put(f"/v1/customers/{cid}/price-overrides", json={"contract_prices": [
            {"id": "gw-contract", "model": "gpt-test", "token_type": "input", "price": "5.00"},
            # OpenAI may write the prompt to its cache: without a contract price for that, the hold
            # would be the book's cache write price, 12.50
            {"id": "gw-contract-write", "model": "gpt-test", "token_type": "cache_write", "price": "5.00"}]})
        assert put.status_code == 201, put.text
    raw = oai(url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
    assert Decimal(raw.headers["x-tokentill-reserved"]) == (9 * contract + 1000 * OUT) / M + CALL
    # the fake's usage: 800 input at the contract price; 200 cached and 40 output at the book's
    expected = (800 * contract + 200 * CACHED + 40 * OUT) / M + CALL
    assert Decimal(raw.headers["x-tokentill-charged"]) == expected == Decimal("0.006")
    assert wallet(url, cid) == (Decimal("10") - expected, 0)
