"""A capture takes the usage `record()` takes, in the same forms and by the same rules
(`api.client_reservations.usage_body`): `r.capture(openai_usage=...)` was sent as canonical counts
named `openai_usage`, `{"usage": {"openai_usage": {...}}}`, which the server refused, 422
`validation_error` (`usage.openai_usage: unknown usage field`), where `r.record(openai_usage=...)`
settled.

Book: the demo's (model-a $10.00 per 1M input, $20.00 per 1M output, $0.01 a call); $10.00 of credit."""

from __future__ import annotations

from decimal import Decimal

from anthropic.types import Usage as AnthropicUsage

from api.client import AsyncClient, Client
from tests.api.test_sdk_durability import ADMIN, available, new_customer, reservation

# held: 1,000 x $10/M ($0.01) + 500 x $20/M ($0.01) + $0.01 a call = $0.03
CALL = {"input_tokens": 1000, "max_output_tokens": 500}
# the capture: 1,000 prompt tokens ($0.01) and 100 completion tokens (100 x $20/M = $0.002)
CAPTURED = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
# the exit: 300 more output tokens, 300 x $20/M = $0.006
# in all: $0.01 + $0.002 + $0.006 + the call's $0.01 = $0.028; available 10.00 - 0.028 = 9.972


def test_a_capture_of_openai_usage_is_charged_as_record_s_would_be(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    with Client(url, ADMIN, flush_spool=False) as tt:
        with tt.reserve(customer, "model-a", **CALL) as r:
            captured = r.capture(openai_usage=CAPTURED)
            assert captured["status"] == "capturing"
            r.record(output_tokens=300)
    view = reservation(url, r.id)
    assert (view["status"], Decimal(view["charged"]), len(view["charges"])) == ("settled", Decimal("0.028"), 2)
    assert available(url, customer) == Decimal("9.972")


async def test_an_async_capture_of_an_anthropic_usage_object_is_charged_as_record_s_would_be(live, spool_dir):
    url, book = live
    customer = new_customer(url, book)
    usage = AnthropicUsage(
        input_tokens=1000, output_tokens=100, cache_creation_input_tokens=0, cache_read_input_tokens=0
    )
    async with AsyncClient(url, ADMIN, flush_spool=False) as tt:
        async with tt.reserve(customer, "model-a", **CALL) as r:
            captured = await r.capture(anthropic_usage=usage)
            assert captured["status"] == "capturing"
            r.record(output_tokens=300)
    view = reservation(url, r.id)
    assert (view["status"], Decimal(view["charged"]), len(view["charges"])) == ("settled", Decimal("0.028"), 2)
    assert available(url, customer) == Decimal("9.972")
