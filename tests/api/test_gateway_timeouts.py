"""An upstream that stays silent past the gateway's read timeout: 504 in the provider's shape,
and the hold released (a free call passed through: the same 504)."""
from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest

from tests.api.test_gateway import HI, customer, fake, oai, serving, wallet  # noqa: F401 (fake: a fixture)


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


def test_a_free_call_to_an_upstream_silent_past_the_read_timeout_is_a_504(live):
    url, _ = live
    _, key = customer(live)
    with pytest.raises(openai.APIStatusError) as raised:
        oai(url, key, timeout=30).models.retrieve("gpt-test-slow")
    assert raised.value.status_code == 504 and raised.value.body["code"] == "upstream_timeout"
    assert raised.value.response.headers["x-tokentill-charged"] == "0"
