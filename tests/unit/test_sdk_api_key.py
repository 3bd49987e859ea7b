"""An API key no header can carry is refused when the SDK's client is built, under the settings'
rule (api.bearer: printable ASCII, no space), not at every call after."""
from __future__ import annotations

import httpx
import pytest

from api.client import AsyncClient, Client


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize("api_key, at", [("clé", "3 of 3"), ("k\n", "2 of 2"), ("tt_a b", "5 of 6"),
                                          ("tt_\u00a0", "4 of 4")])
def test_a_key_no_header_can_carry_is_a_value_error_when_the_client_is_built(cls, api_key, at, tmp_path):
    """`Client("http://127.0.0.1:8000", "clé")` was built, and every call then raised httpx's
    UnicodeEncodeError (the é, position 3 of "clé", is outside ASCII); with `background_settle` a
    settle so failed was spooled, to fail again at every start. `"k\\n"` (its line break at 2 of
    2) was h11's LocalProtocolError at every call; "tt_a b" has a space at 5 of 6, "tt_" and a
    no-break space one outside ASCII at 4 of 4. Each is now a ValueError naming `api_key` and the
    position, the key not repeated, and nothing is written to the spool directory."""
    transport = httpx.MockTransport(answer)
    with pytest.raises(ValueError) as refused:
        cls("http://127.0.0.1:8000", api_key, transport=transport, spool_dir=tmp_path, background_settle=True)
    message = str(refused.value)
    assert message.startswith("api_key has ") and f"at position {at})" in message and "printable ASCII" in message
    assert api_key not in message and list(tmp_path.iterdir()) == []


def test_a_key_of_printable_ascii_builds_a_client(tmp_path):
    """Every printable ASCII character but the space (0x21 to 0x7e) is taken, as the settings take it."""
    key = "".join(map(chr, range(0x21, 0x7F)))
    client = Client("http://127.0.0.1:8000", key, transport=httpx.MockTransport(answer), spool=False)
    try:
        assert client.get("/v1/ping") == {}
    finally:
        client.close()


def test_an_idempotency_key_no_header_can_carry_is_a_value_error_before_anything_is_spooled(tmp_path):
    """The same holds for a call's own Idempotency-Key: `settle("res_x", key="clé")` raised httpx's
    UnicodeEncodeError after its record was written to the spool (1 record), where every flush and
    replay fails on it again, and `key="k\\n"` is h11's LocalProtocolError on a real connection.
    Now a ValueError naming the position (the é 3 of 3, the line break 2 of 2), the spool left
    empty (0 records); a key with a space inside ("order 42"), which the server takes, still goes."""
    sent: list[str] = []

    def answer_and_note(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Idempotency-Key"])
        return httpx.Response(200, json={})

    client = Client("http://127.0.0.1:8000", "tt_ok", transport=httpx.MockTransport(answer_and_note),
                    spool_dir=tmp_path)
    try:
        for key, at in (("clé", "3 of 3"), ("k\n", "2 of 2")):
            with pytest.raises(ValueError) as refused:
                client.settle("res_x", key=key, usage={"input_tokens": 1, "output_tokens": 1})
            assert f"at position {at}: a header carries printable ASCII" in str(refused.value)
            with pytest.raises(ValueError):
                client.post("/v1/customers", {"id": "acme"}, key=key)
        assert client.spool is not None and client.spool.records() == [] and sent == []
        assert client.settle("res_x", key="order 42", usage={"input_tokens": 1, "output_tokens": 1}) == {}
        assert sent == ["order 42"]
    finally:
        client.close()


async def test_an_async_release_with_such_a_key_is_refused_before_anything_is_spooled(tmp_path):
    """The async client shares the rule: `release("res_x", key="clé")` spooled its record (1)
    before the UnicodeEncodeError; now a ValueError (é at 3 of 3), 0 records."""
    client = AsyncClient("http://127.0.0.1:8000", "tt_ok", transport=httpx.MockTransport(answer), spool_dir=tmp_path)
    try:
        with pytest.raises(ValueError) as refused:
            await client.release("res_x", key="clé")
        assert "at position 3 of 3: a header carries printable ASCII" in str(refused.value)
        assert client.spool is not None and client.spool.records() == []
    finally:
        await client.aclose()


def test_a_spooled_call_whose_key_no_header_can_carry_is_filed_as_refused_by_a_flush(tmp_path):
    """A record an earlier SDK spooled with Idempotency-Key "clé" (as settle(..., key="clé") did):
    `tokentill spool flush` ended in a traceback at it (httpx's UnicodeEncodeError, then this
    rule's ValueError), the other record not sent and the file left as it was. No send can carry
    that key, so the flush files it as refused, with the reason: of the 2 records, 1 delivered
    (the release under "res_y:release:0") and 1 refused, 0 left."""
    from api.spool import SUFFIX, Spool, SpoolRecord

    spool = Spool(tmp_path / f"sdk{SUFFIX}")
    spool.append(SpoolRecord("POST", "/v1/reservations/res_x/release", {}, "clé", "res_x", "http://127.0.0.1:8000"))
    spool.append(SpoolRecord("POST", "/v1/reservations/res_y/release", {}, "res_y:release:0", "res_y",
                             "http://127.0.0.1:8000"))
    sent: list[str] = []

    def answer_and_note(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Idempotency-Key"])
        return httpx.Response(200, json={})

    client = Client("http://127.0.0.1:8000", "tt_ok", transport=httpx.MockTransport(answer_and_note), spool=False,
                    flush_spool=False)
    try:
        report = spool.flush(client.resend)
    finally:
        client.close()
    assert (report.delivered, report.rejected, report.kept) == (1, 1, 0) and sent == ["res_y:release:0"]
    assert spool.records() == []


async def test_an_async_client_s_resend_of_such_a_record_says_refused():
    """The async client's resend alike: ("rejected", the reason naming the é at 3 of 3), nothing sent."""
    from api.spool import SpoolRecord

    client = AsyncClient("http://127.0.0.1:8000", "tt_ok", transport=httpx.MockTransport(answer), spool=False,
                         flush_spool=False)
    try:
        outcome, note = await client.resend(SpoolRecord("POST", "/v1/reservations/res_x/release", {}, "clé", "res_x",
                                                        "http://127.0.0.1:8000"))
    finally:
        await client.aclose()
    assert outcome == "rejected" and "at position 3 of 3" in note


@pytest.mark.parametrize("asynchronous", [False, True])
async def test_every_call_s_key_is_sent_stripped_of_spaces_and_refused_at_the_call_when_no_header_carries_it(
        asynchronous, tmp_path):
    """3fc6941 stripped a settle's `key=` alone: release(" k ") went as the header " k " (no header
    carries spaces around it: h11's 'Illegal header value' on a real connection, taken for a network
    fault). Now release, extend and post send "k", as settle does, sync and async; 10 spaces + 250
    characters is sent as its 250 (within 255); 3 spaces (0 characters once stripped) and 256
    characters (> 255) are a ValueError at the call, as settle's, nothing sent or spooled."""
    sent: list[str] = []

    def answer_and_note(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers["Idempotency-Key"])
        return httpx.Response(200, json={})

    cls = AsyncClient if asynchronous else Client
    client = cls("http://127.0.0.1:8000", "tt_ok", transport=httpx.MockTransport(answer_and_note),
                 spool_dir=tmp_path)

    async def run(result):
        return await result if asynchronous else result

    try:
        await run(client.release("res_x", key=" k "))
        await run(client.extend("res_x", 60, key=" k "))
        await run(client.post("/v1/customers", {"id": "acme"}, key=" k "))
        await run(client.release("res_y", key=" " * 10 + "r" * 250))
        assert sent == ["k", "k", "k", "r" * 250]
        for key in (" " * 3, "r" * 256, "clé"):
            with pytest.raises(ValueError, match=r"key=\.\.\."):
                await run(client.release("res_z", key=key))
            with pytest.raises(ValueError, match=r"key=\.\.\."):
                await run(client.extend("res_z", 60, key=key))
            with pytest.raises(ValueError, match=r"key=\.\.\."):
                await run(client.post("/v1/customers", {"id": "acme"}, key=key))
        assert len(sent) == 4 and client.spool is not None and client.spool.records() == []
    finally:
        await run(client.aclose() if asynchronous else client.close())


@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000?", "http://127.0.0.1:8000/#", "http://127.0.0.1:8000?x=1",
                                      "127.0.0.1:8000", "ftp://127.0.0.1:8000", "http://127.0.0.1 :8000"])
def test_a_base_url_the_calls_paths_cannot_follow_is_a_value_error_when_the_client_is_built(cls, base_url, tmp_path):
    """Each call's path is added to the base URL: "http://127.0.0.1:8000?" + "/v1/customers/acme"
    went to GET / with the query "/v1/customers/acme" (404 `NotFound` at every call, a settle spooled
    for a flush that would 404 too), "…/#" to GET / (the path a fragment, never sent); a URL without
    http(s) and a host, or with a space, no call could reach. Now a ValueError naming `base_url`."""
    seen: list[httpx.URL] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, json={})

    with pytest.raises(ValueError, match="base_url must be an http"):
        cls(base_url, "tt_key", transport=httpx.MockTransport(record), spool_dir=tmp_path)
    assert seen == [] and list(tmp_path.iterdir()) == []


def test_a_base_url_with_a_path_builds_a_client_that_calls_under_it(tmp_path):
    seen: list[str] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(200, json={})

    client = Client("http://127.0.0.1:8000/billing/", "tt_key", transport=httpx.MockTransport(record), spool=False)
    try:
        assert client.get("/v1/ping") == {} and seen == ["/billing/v1/ping"]
    finally:
        client.close()
