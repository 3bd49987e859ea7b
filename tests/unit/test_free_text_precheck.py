"""The free-text rule's walk (formats.mismatched_patterns) is skipped where the body's JSON holds
nothing the rule could refuse (review of d577d233): a reserve's request_id, model and dimensions
were walked on every call, 26 µs a reserve."""

import unicodedata

import pytest

import api.routes.formats as formats
from api.routes.reservations import CreateReservationRequest, SettleRequest
from api.routes.wire import shaped
from wallets.errors import TextRuleError

RESERVE = {
    "customer_id": "cus_1",
    "request_id": "req-7f3a9c2e",
    "model": "gpt-4o",
    "estimate": {"prompt_tokens": 1200, "max_output_tokens": 800},
    "dimensions": {"feature": "chat", "team": "a"},
}
# U+0000 is refused before, by its own words (PostgreSQL text cannot hold it)
REFUSED = [chr(c) for c in range(1, 0x110000) if unicodedata.category(chr(c)) in ("Cc", "Zl", "Zp")]


def test_a_body_without_a_backslash_or_a_refused_character_is_not_walked_for_free_text(monkeypatch):
    seen: list[str] = []
    monkeypatch.setattr(formats, "text_problem", lambda text: seen.append(text))
    shaped(RESERVE, CreateReservationRequest)
    shaped({"usage": {"input": 1200, "output": 640}, "capture_id": "cap-1"}, SettleRequest)
    assert seen == []


def test_every_refused_character_is_still_refused_in_every_free_text_place():
    """guard: the 66 characters of Cc (65, U+0000 aside), Zl, Zp, in a request id, a model, a dimension"""
    assert len(REFUSED) == 64 + 2  # U+0001-U+001F, U+007F-U+009F (31 + 33), U+2028, U+2029
    for c in REFUSED:
        for body, field in [
            ({**RESERVE, "request_id": f"r{c}"}, "request_id"),
            ({**RESERVE, "model": f"{c}m"}, "model"),
            ({**RESERVE, "dimensions": {f"a{c}": "x"}}, "dimensions"),
            ({**RESERVE, "dimensions": {"feature": f"chat{c}"}}, "dimensions.feature"),
        ]:
            with pytest.raises(TextRuleError) as caught:
                shaped(body, CreateReservationRequest)
            assert caught.value.context["fields"][0]["field"] == field and f"U+{ord(c):04X}" in str(caught.value), (
                c,
                field,
            )


def test_a_body_with_an_escaped_quote_is_walked_and_passes():
    """guard: a backslash in the JSON (a quote in a model name) walks the free text; nothing refused"""
    assert shaped({**RESERVE, "model": 'my "tuned" model'}, CreateReservationRequest).model == 'my "tuned" model'
