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
