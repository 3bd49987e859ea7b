"""Request headers and fields that make the provider bill a call at a dearer price than the one its
price book rates: a beta header the gateway does not know (refused, 400), and a price the book does
not set itself (a one-hour cache write, long context, fast mode, priority: refused, 422
unpriced_model), before any hold or upstream call. Driven by the official `openai` and `anthropic`
packages against the local fake upstream, as tests/api/test_gateway.py."""
from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest

from api.bench import fake_upstream as fk
from tests.api.test_gateway import (
    BOOK,
    HI,
    IN,
    MESSAGES_CHARGE,
    OUT,
    RESPONSES_CHARGE,
    WRITE,
    M,
    admin,
    charged,
    claude,
    customer,
    fake,  # noqa: F401 - the module's fixture
    oai,
    serving,
    tool_book,
    wallet,
    words,
)

LONG = "context-1m-2025-08-07"
TTL = "extended-cache-ttl-2025-04-11"


@pytest.fixture(scope="module")
def live(database_url, fake) -> Iterator[tuple[str, str]]:  # noqa: F811
    yield from serving(database_url, fake)


def _refused(raised: pytest.ExceptionInfo, status: int, code: str, anthropic_shape: bool = True) -> str:
    body = raised.value.body
    error = body["error"] if anthropic_shape else body
    assert raised.value.status_code == status and error["code"] == code, body
    return error["message"]


def test_an_anthropic_beta_the_gateway_does_not_know_is_refused_before_any_hold(live, fake):  # noqa: F811
    """A beta may switch on a feature billed at prices the gateway does not meter (was: forwarded
    as is): one not on the operator's list is a 400 in Anthropic's shape naming it, nothing held
    or sent; a known one goes upstream as sent."""
    url, _ = live
    cid, key = customer(live)
    client = claude(url, key)
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.beta.messages.create(model="claude-test", max_tokens=100, messages=HI,
                                    betas=["interleaved-thinking-2025-05-14", "made-up-beta-2030-01-01"])
    message = _refused(raised, 400, "validation_error")
    assert "made-up-beta-2030-01-01" in message and "TOKENTILL_GATEWAY_ANTHROPIC_BETAS" in message
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    raw = client.beta.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI,
                                                        betas=["interleaved-thinking-2025-05-14"])
    assert fake.fake.calls[-1].headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert charged(url, raw.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE


def test_an_openai_beta_is_refused_on_the_metered_endpoints(live, fake):  # noqa: F811
    """OpenAI-Beta switches on nothing the metered endpoints document (the SDK sends it for the
    assistants and agents APIs, never passed through): one is a 400, unless the operator lists it."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    with pytest.raises(openai.BadRequestError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI,
                                              extra_headers={"OpenAI-Beta": "assistants=v2"})
    assert "TOKENTILL_GATEWAY_OPENAI_BETAS" in _refused(raised, 400, "validation_error", anthropic_shape=False)
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


@pytest.mark.parametrize("format_2", [False, True])
def test_a_one_hour_cache_write_the_book_does_not_price_is_refused(live, fake, format_2):  # noqa: F811
    """Anthropic bills a one-hour cache write at twice the input price, a 5-minute one at 1.25
    times: a book with no cache_write_1h rule rated it at its cache_write price (a format 1 book
    has no such type), cheaper than the provider's (was: answered, each 1h write 7.5 short per
    million at the test's book). Refused (422 unpriced_model) before the hold."""
    url, book = live
    if format_2:
        book = tool_book(url)
    cid, key = customer((url, book))
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude(url, key).beta.messages.create(
            model="claude-test", max_tokens=100, messages=HI, betas=[TTL],
            system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    assert "cache_write_1h" in _refused(raised, 422, "unpriced_model")
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)


def test_a_one_hour_cache_write_is_charged_at_the_books_one_hour_price(live, fake):  # noqa: F811
    """The usage's cache_creation split (ephemeral_1h_input_tokens) is charged at cache_write_1h."""
    url, _ = live
    hour = Decimal("20")
    cid, key = customer((url, tool_book(url, {"id": "write-1h", "token_type": "cache_write_1h", "price": "20.00"})))
    raw = claude(url, key).messages.with_raw_response.create(
        model="claude-test", max_tokens=100, messages=HI,
        system=[{"type": "text", "text": words(1000), "cache_control": {"type": "ephemeral", "ttl": "1h"}}])
    assert raw.parse().usage.cache_creation.ephemeral_1h_input_tokens == fk.ANTHROPIC_USAGE[
        "cache_creation_input_tokens"]
    expected = MESSAGES_CHARGE + 50 * (hour - WRITE) / M
    assert charged(url, raw.headers["x-tokentill-request-id"]) == expected
    assert wallet(url, cid) == (Decimal("10") - expected, 0)


def test_a_long_context_call_the_book_does_not_price_by_prompt_size_is_refused(live, fake):  # noqa: F811
    """With the context-1m beta Anthropic bills a prompt past 200,000 tokens at its long-context
    prices (twice the input, 1.5 times the output): a book without prompt tiers for the model rated
    it at its base prices (was: forwarded, charged at them). Refused before the hold; a book whose
    rules (input, cache reads, output) have prompt_tiers takes it."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude(url, key).beta.messages.create(model="claude-test", max_tokens=100, messages=HI, betas=[LONG])
    message = _refused(raised, 422, "unpriced_model")
    assert "prompt_tiers" in message and LONG in message
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    tiered = [{"id": "in", "token_type": "input", "price": "10.00", "prompt_tiers": [{"above": 200000, "price": "20"}]},
              {"id": "cached", "token_type": "cached_input", "price": "1.00",
               "prompt_tiers": [{"above": 200000, "price": "2"}]},
              {"id": "out", "token_type": "output", "price": "20.00",
               "prompt_tiers": [{"above": 200000, "price": "30"}]}]
    book = _book(url, tiered)
    _, key = customer((url, book))
    raw = claude(url, key).beta.messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI,
                                                                  betas=[LONG])
    assert fake.fake.calls[-1].headers["anthropic-beta"] == LONG
    assert charged(url, raw.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE


@pytest.mark.parametrize("kind", ["long prompt", "earlier turns"])
def test_an_openai_prompt_past_the_models_long_context_size_the_book_does_not_price_is_refused(live, fake, kind):  # noqa: F811
    """OpenAI bills a prompt past 272,000 tokens of gpt-5.4 (and the models genai-prices prices so)
    at its long-context prices (twice the input, 1.5 times the output) for the whole call: a book
    without prompt tiers for the model rated it at its base prices (was: forwarded, charged at
    them). A call whose held prompt passes that size (its count, or the context window held for
    the earlier turns of a continued conversation) is refused before the hold unless the book's
    rules have prompt_tiers; a shorter call goes as before."""
    url, _ = live
    cid, key = customer(live, "50.00")
    args = {"model": "gpt-5.4", "max_output_tokens": 100, "input": "hi"}
    args.update({"input": words(280_000)} if kind == "long prompt" else {"previous_response_id": "resp_1"})
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).responses.create(**args)
    message = _refused(raised, 422, "unpriced_model", anthropic_shape=False)
    assert "prompt_tiers" in message and "272000" in message, message
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("50"), 0)
    short = oai(url, key).responses.with_raw_response.create(model="gpt-5.4", max_output_tokens=100, input="hi")
    assert charged(url, short.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE
    tiered = [{"id": "in", "token_type": "input", "price": "10.00", "prompt_tiers": [{"above": 272000, "price": "20"}]},
              {"id": "cached", "token_type": "cached_input", "price": "1.00",
               "prompt_tiers": [{"above": 272000, "price": "2"}]},
              {"id": "write", "token_type": "cache_write", "price": "12.50",
               "prompt_tiers": [{"above": 272000, "price": "25"}]},
              {"id": "out", "token_type": "output", "price": "20.00",
               "prompt_tiers": [{"above": 272000, "price": "30"}]}]
    cid, key = customer((url, _book(url, tiered)), "50.00")
    raw = oai(url, key).responses.with_raw_response.create(**args)
    assert charged(url, raw.headers["x-tokentill-request-id"]) == RESPONSES_CHARGE  # the fake's usage: 800 tokens
    assert wallet(url, cid) == (Decimal("50") - RESPONSES_CHARGE, 0)


def _book(url: str, rules: list[dict]) -> str:
    """A format 2 book: the test book's rules, those of `rules` by id in place of its own."""
    given = {r["id"] for r in rules}
    book = f"gw-b-{uuid.uuid4().hex[:8]}"
    with admin(url) as http:
        assert http.post("/v1/price-books", json={**BOOK, "id": book, "format": 2, "rules": [
            *(r for r in BOOK["rules"] if r["id"] not in given), *rules]}).status_code == 201
    return book


def test_fast_mode_the_book_does_not_price_is_refused(live, fake):  # noqa: F811
    """Anthropic bills fast mode (speed: fast) at six times its standard prices: a book with no
    rule matching it rated the call at its standard prices (was: answered, charged them). Refused;
    `speed: standard` goes as before."""
    url, _ = live
    cid, key = customer((url, tool_book(url)))
    before = len(fake.fake.calls)
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI,
                                         extra_body={"speed": "fast"})
    assert "speed" in _refused(raised, 422, "unpriced_model")
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=100, messages=HI,
                                                             extra_body={"speed": "standard"})
    assert charged(url, raw.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE


def test_priority_the_book_does_not_price_is_refused(live, fake):  # noqa: F811
    """OpenAI bills its priority tier above its standard prices: a book with no rule matching
    service_tier priority rated a call that asks for it at the standard prices (was: answered).
    Refused; `default` and `flex` (cheaper) go as before."""
    url, _ = live
    cid, key = customer(live)
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI, service_tier="priority")
    assert "service_tier" in _refused(raised, 422, "unpriced_model", anthropic_shape=False)
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    for tier in ("default", "flex"):
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI, service_tier=tier)
        assert fake.fake.calls[-1].body["service_tier"] == tier


def test_priority_asked_for_but_default_served_is_charged_at_the_default_price(live, fake):  # noqa: F811
    """The tier the answer reports prices the charge, not the one the call asked for."""
    url, _ = live
    priority = Decimal("40")
    cid, key = customer((url, tool_book(url, {"id": "out-priority", "token_type": "output", "price": str(priority),
                                              "match": {"service_tier": "priority"}})))
    fake.fake.served_tier = "default"
    try:
        raw = oai(url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI, max_tokens=1000,
                                                                      service_tier="priority")
    finally:
        fake.fake.served_tier = None
    assert raw.parse().service_tier == "default"
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= 1000 * priority / M
    charge = (800 * IN + 200 * Decimal(1) + 40 * OUT) / M + Decimal("0.001")
    assert charged(url, raw.headers["x-tokentill-request-id"]) == charge
    assert wallet(url, cid) == (Decimal("10") - charge, 0)


def _tier_book(url: str, free: tuple[str, ...], priced: tuple[str, ...] = ()) -> str:
    """A format 2 book for every model: BOOK's rules (the standard prices, matching no tier), and a
    copy of each matching each service tier of `free` at $0 and of `priced` at BOOK's price."""
    book = f"gw-tiers-{uuid.uuid4().hex[:8]}"
    copies = [{**rule, "id": f"{rule['id']}-{tier}", "match": {"service_tier": tier},
               **({"price": "0"} if tier in free else {})} for tier in (*free, *priced) for rule in BOOK["rules"]]
    with admin(url) as http:
        assert http.post("/v1/price-books", json={**BOOK, "id": book, "format": 2,
                                                  "rules": [*BOOK["rules"], *copies]}).status_code == 201
    return book


def _insufficient(call: Callable[[], Any]) -> None:
    with pytest.raises(openai.APIStatusError) as raised:
        call()
    assert raised.value.status_code == 402 and raised.value.body["code"] == "insufficient_funds", raised.value.body


def test_a_call_naming_the_tier_its_book_makes_free_holds_0_on_an_empty_wallet(live, fake):  # noqa: F811
    """A call that names service_tier flex is served, and billed, at flex (OpenAI answers 429
    rather than serve it at another tier). The free check of a hold of 0 on an empty wallet tried
    every tier the book's rules match, so a call free at flex was refused because the default
    tier is priced (was: 402 insufficient_funds, nothing sent). By hand: at flex every type is $0,
    so the hold is 0 and the charge 800 x $0 + 200 x $0 + 40 x $0 + $0 = $0.00; the wallet stays
    (0, 0). Still refused where the usage may report a priced tier: a call naming default, and
    one leaving its tier to the provider (none named)."""
    url, _ = live
    cid, key = customer((url, _tier_book(url, ("flex",), ("default",))), amount=None)  # never topped up
    client, before = oai(url, key), len(fake.fake.calls)
    raw = client.chat.completions.with_raw_response.create(model="gpt-test", messages=HI, service_tier="flex")
    assert raw.parse().service_tier == "flex" and fake.fake.calls[-1].body["service_tier"] == "flex"
    assert Decimal(raw.headers["x-tokentill-reserved"]) == 0
    assert charged(url, raw.headers["x-tokentill-request-id"]) == 0
    assert wallet(url, cid) == (0, 0)
    for tier in ("default", openai.NOT_GIVEN):
        _insufficient(functools.partial(client.chat.completions.create, model="gpt-test", messages=HI,
                                        service_tier=tier))
    assert len(fake.fake.calls) == before + 1


def test_a_call_naming_priority_free_at_it_is_refused_on_an_empty_wallet_as_it_may_be_served_at_default(
        live, fake):  # noqa: F811
    """OpenAI may serve a call that asks for priority at the default tier (past its ramp rate), its
    answer then reporting default, which prices the charge. Priority at $0, the standard prices
    matching no tier: the free check tried the tiers the book's rules name (priority) and not the
    standard prices a default answer resolves to, so the call held 0 on an empty wallet and, served
    at default, was charged (800 x $10 + 200 x $1 + 40 x $20) / 1M + $0.001 = $0.0100, all of it
    owed past an overdraft of 0 (was: 200, held 0.00, charged 0.01). Now 402, nothing sent."""
    url, _ = live
    _, key = customer((url, _tier_book(url, ("priority",))), amount=None)  # never topped up
    before = len(fake.fake.calls)
    fake.fake.served_tier = "default"
    try:
        _insufficient(lambda: oai(url, key).chat.completions.create(model="gpt-test", messages=HI,
                                                                   service_tier="priority"))
    finally:
        fake.fake.served_tier = None
    assert len(fake.fake.calls) == before


def test_a_request_id_refused_at_one_tier_is_a_conflict_when_sent_again_naming_another(live, fake):  # noqa: F811
    """A refused hold keeps its 402 under the request id, replayed to a retry of the same call. The
    gateway's request hash left out the tier the call names, which now decides whether it is free
    (1c8e9ec): on a book free at flex and priced at default, request id R naming default was 402,
    and R sent again naming flex, another call, replayed that 402 (was: 402, the default call's
    refused hold).
    Now R naming flex is 409 idempotency_conflict, as any request id sent again with another body;
    and so is R naming default again (was: its kept 402 replayed): each gateway call's reserve
    carries a nonce of its own (test_gateway_retries, ..._sent_twice_at_once_...), so a request id
    is one call's, whatever its answer was. Nothing sent."""
    url, _ = live
    _, key = customer((url, _tier_book(url, ("flex",), ("default",))), amount=None)  # never topped up
    client = oai(url, key, default_headers={"x-tokentill-request-id": f"tier-{uuid.uuid4().hex[:8]}"})
    before = len(fake.fake.calls)
    _insufficient(lambda: client.chat.completions.create(model="gpt-test", messages=HI, service_tier="default"))
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-test", messages=HI, service_tier="flex")
    assert (raised.value.status_code, raised.value.body["code"]) == (409, "idempotency_conflict"), raised.value.body
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-test", messages=HI, service_tier="default")
    assert (raised.value.status_code, raised.value.body["code"]) == (409, "idempotency_conflict"), raised.value.body
    rid = client.default_headers["x-tokentill-request-id"]
    assert raised.value.body["message"] == f"request id {rid} was used already"
    assert len(fake.fake.calls) == before


PREVIEW_SEARCH = {"type": "web_search_preview"}


def test_an_openai_preview_web_search_the_book_does_not_price_apart_is_refused(live, fake):  # noqa: F811
    """OpenAI bills a search by its web_search_preview tool at $25 per 1,000 with a non-reasoning
    model (gpt-4o, gpt-4.1), by its web_search tool at $10: the same model, the same output
    items. A book with one web_search price charged a preview search at it (was: answered, 0.015
    short a search). A call with a preview tool is a call of dimension web_search_tool
    web_search_preview: refused unless a web_search rule matches it, then held and charged at it."""
    url, _ = live
    search, preview = Decimal("0.01"), Decimal("0.025")
    generic = {"id": "search", "token_type": "web_search", "price": str(search)}
    cid, key = customer((url, tool_book(url, generic)))
    args = {"model": "gpt-test", "input": "hi", "max_output_tokens": 1000, "max_tool_calls": 3,
            "tools": [PREVIEW_SEARCH]}
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).responses.create(**args)
    message = _refused(raised, 422, "unpriced_model", anthropic_shape=False)
    assert "web_search_tool" in message and "web_search_preview" in message
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    cid, key = customer((url, tool_book(url, generic, {"id": "search-preview", "token_type": "web_search",
                                                       "price": str(preview),
                                                       "match": {"web_search_tool": "web_search_preview"}})))
    raw = oai(url, key).responses.with_raw_response.create(**args)
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= 3 * preview + 1000 * OUT / M
    responses = (700 * IN + 100 * Decimal(1) + (40 + 16) * OUT) / M + Decimal("0.001")
    assert charged(url, raw.headers["x-tokentill-request-id"]) == responses + 2 * preview
    assert wallet(url, cid) == (Decimal("10") - responses - 2 * preview, 0)
    standard = oai(url, key).responses.with_raw_response.create(**{**args, "tools": [{"type": "web_search"}]})
    assert charged(url, standard.headers["x-tokentill-request-id"]) == responses + 2 * search


def test_usage_past_the_books_context_window_is_charged_not_given_away(live, fake):  # noqa: F811
    """A compaction is a sampling of its own, its tokens added to the call's (Anthropic reports them
    in usage.iterations): together past the book's context window, though each sampling fits. The
    settle was refused as implausible and set aside, the hold released at its expiry: the answered
    call charged nothing. The provider's usage of an answered call is charged, marked forced by the
    gateway with the bound it passed (the audit trace shows it)."""
    url, _ = live
    cid, key = customer((url, tool_book(url, context_window=4000)))
    raw = claude(url, key).messages.with_raw_response.create(
        model="claude-test", max_tokens=1000, messages=HI,
        extra_body={"context_management": {"edits": [{"type": "compact_20260112"}]}})
    compaction = (fk.COMPACTION["input_tokens"] * IN + fk.COMPACTION["output_tokens"] * OUT) / M
    expected = MESSAGES_CHARGE + compaction  # 900 + 100 + 50 + 40 + 3,000 + 200 = 4,290 tokens
    assert Decimal(raw.headers["x-tokentill-charged"]) == expected
    assert charged(url, raw.headers["x-tokentill-request-id"]) == expected
    assert wallet(url, cid) == (Decimal("10") - expected, 0)
    with admin(url) as http:
        trace = http.get(f"/v1/audit/charges/{raw.headers['x-tokentill-request-id']}").json()
    assert "forced" in str(trace) and "context_window" in str(trace)


def _clip() -> dict:
    import base64
    import io
    import wave

    out = io.BytesIO()
    with wave.open(out, "wb") as clip:  # a second at 8 kHz, 8 bits, mono: 10 audio tokens
        clip.setnchannels(1)
        clip.setsampwidth(1)
        clip.setframerate(8000)
        clip.writeframes(bytes(8000))
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(out.getvalue()).decode(), "format": "wav"}}


@pytest.mark.parametrize("direction", ["input", "output"])
def test_audio_the_book_does_not_price_is_refused(live, fake, direction):  # noqa: F811
    """OpenAI bills audio at its audio prices, 16 times its text input and 8 times its text output
    for gpt-4o-audio-preview: a book with no audio rule charged audio in (or out) at the text price
    (was: answered). Refused (422 unpriced_model) before the hold; a book with an audio rule takes it."""
    url, _ = live
    cid, key = customer(live)
    args: dict = {"model": "gpt-4o-audio-preview", "max_tokens": 100}
    if direction == "input":
        args["messages"] = [{"role": "user", "content": [{"type": "text", "text": "hi"}, _clip()]}]
    else:
        args |= {"messages": HI, "modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}
    before = len(fake.fake.calls)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key).chat.completions.create(**args)
    assert f"{direction}_audio" in _refused(raised, 422, "unpriced_model", anthropic_shape=False)
    assert len(fake.fake.calls) == before and wallet(url, cid) == (Decimal("10"), 0)
    _, key = customer((url, tool_book(url, {"id": "audio", "token_type": f"{direction}_audio", "price": "160"})))
    oai(url, key).chat.completions.create(**args)
    assert len(fake.fake.calls) == before + 1


@pytest.fixture(scope="module")
def pinned(database_url, fake) -> Iterator[tuple[str, str]]:  # noqa: F811
    yield from serving(database_url, fake, service_tier="standard")


@pytest.mark.parametrize("tier", [None, "auto"])
def test_an_operator_may_pin_a_call_that_leaves_its_tier_to_the_provider_to_the_standard_tier(pinned, fake, tier):  # noqa: F811
    """A call that leaves its tier to the provider is served at the tier the operator's project
    defaults to, priority say, and charged at the standard prices of a book that prices no
    priority (the answer's tier matches no rule). With TOKENTILL_GATEWAY_SERVICE_TIER=standard it
    is sent with the standard tier (OpenAI "default", Anthropic "standard_only"); one that names
    its tier goes as named."""
    url, _ = pinned
    _, key = customer(pinned)
    fake.fake.auto_tier = "priority"  # the project's default: what a call without a tier is served at
    try:
        raw = oai(url, key).chat.completions.with_raw_response.create(
            model="gpt-test", messages=HI, **({"service_tier": tier} if tier else {}))
        assert fake.fake.calls[-1].body["service_tier"] == "default" and raw.parse().service_tier == "default"
        oai(url, key).chat.completions.create(model="gpt-test", messages=HI, service_tier="flex")
        assert fake.fake.calls[-1].body["service_tier"] == "flex"
    finally:
        fake.fake.auto_tier = fk.AUTO_TIER
    claude(url, key).messages.create(model="claude-test", max_tokens=100, messages=HI,
                                     **({"service_tier": tier} if tier else {}))
    assert fake.fake.calls[-1].body["service_tier"] == "standard_only"
    assert charged(url, raw.headers["x-tokentill-request-id"]) == (800 * IN + 200 * Decimal(1) + 40 * OUT) / M \
        + Decimal("0.001")


def test_an_anthropic_call_run_where_its_workspace_defaults_is_charged_there(live, fake):  # noqa: F811
    """A workspace may default its calls to US-only inference (default_inference_geo "us", billed
    above the global prices), which a call that names no inference_geo gets: its usage reports
    inference_geo "us". That was not read: charged at the global prices. It now prices the charge as
    the reported service tier does, and the hold is at the dearest geography the book prices."""
    url, _ = live
    us = Decimal("22")  # 1.1 times the output price
    _, key = customer((url, tool_book(url, {"id": "out-us", "token_type": "output", "price": str(us),
                                            "match": {"inference_geo": "us"}})))
    fake.fake.default_geo = "us"
    try:
        raw = claude(url, key).messages.with_raw_response.create(model="claude-test", max_tokens=1000, messages=HI)
    finally:
        fake.fake.default_geo = None
    assert raw.parse().usage.inference_geo == "us"
    assert Decimal(raw.headers["x-tokentill-reserved"]) >= 1000 * us / M
    assert charged(url, raw.headers["x-tokentill-request-id"]) == MESSAGES_CHARGE + 40 * (us - OUT) / M
