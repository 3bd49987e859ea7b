"""A usage argument of the wrong type is a TypeError naming the call, the argument and what it
takes, at the call (`api.client_reservations.usage_body`, `plain_usage`): `record(openai_usage=42)`
was Python's own `'int' object is not iterable`, `record(openai_usage="...")` a ValueError about a
"dictionary update sequence", a settle's alike; `record(usage={...})`, settle's keyword, was told
"a count is a whole number, not {...}" (and `capture(usage={...})` sent, 422). Two usages given at
once are refused, where the second was dropped unsaid."""

from __future__ import annotations

import pytest

from api.client import Client
from tests.unit.test_sdk_exit_counting import _server  # records each settle's body


@pytest.mark.parametrize(
    ("given", "words"),
    [
        (
            {"openai_usage": 42},
            "record(openai_usage=...): takes the provider's usage as its SDK gives it "
            "(response.usage) or a mapping, not int 42",
        ),
        (
            {"anthropic_usage": "input_tokens=5"},
            "record(anthropic_usage=...): takes the provider's usage as its SDK "
            "gives it (response.usage) or a mapping, not str 'input_tokens=5'",
        ),
        (
            {"gemini_usage": [5, 6]},
            "record(gemini_usage=...): takes the provider's usage as its SDK gives it "
            "(response.usage) or a mapping, not list [5, 6]",
        ),
        (
            {"usage": {"input_tokens": 1000}},
            "record(usage=...): record() takes canonical counts as keywords, "
            "record(input_tokens=1000, output_tokens=400) (record(**counts) for a "
            "mapping), or a provider's usage as openai_usage=, anthropic_usage= or "
            "gemini_usage=; usage= is tt.settle's (given dict {'input_tokens': 1000})",
        ),
        ({"usage": 1400}, "record(usage=...): record() takes canonical counts as keywords"),
        (
            {"openai_usage": {"prompt_tokens": object()}},
            "record(openai_usage=...): it cannot be sent as JSON: Object of type object is not JSON serializable",
        ),
    ],
)
def test_a_usage_of_the_wrong_type_is_a_type_error_naming_the_argument_and_what_it_takes(tmp_path, given, words):
    sent: list[dict] = []
    with Client("http://tt", "secret", transport=_server(sent), spool_dir=tmp_path, flush_spool=False) as tt:
        with tt.reserve("acme", "model-a", input_tokens=1000, max_output_tokens=500) as r:
            with pytest.raises(TypeError) as refused:
                r.record(**given)
            assert str(refused.value).startswith(words)
            with pytest.raises(TypeError) as refused:
                r.capture(**given)
            assert str(refused.value).startswith(words.replace("record(", "capture("))
            r.record(input_tokens=1000, output_tokens=400)
        with pytest.raises(TypeError, match=r"^settle\(openai_usage=...\): takes the provider's usage .* not int 42"):
            tt.settle("res_1", openai_usage=42)
    assert sent == [{"usage": {"input_tokens": 1000, "output_tokens": 400}, "final": True}]  # the exit's alone


def test_two_usages_at_once_are_refused_not_one_of_them_dropped(tmp_path):
    """record(openai_usage=U, input_tokens=3) kept U and dropped input_tokens unsaid."""
    sent: list[dict] = []
    usage = {"prompt_tokens": 1000, "completion_tokens": 400}
    with Client("http://tt", "secret", transport=_server(sent), spool_dir=tmp_path, flush_spool=False) as tt:
        with tt.reserve("acme", "model-a", input_tokens=1000, max_output_tokens=500) as r:
            with pytest.raises(
                ValueError,
                match=r"^record\(\.\.\.\): give one usage, not openai_usage= and "
                r"input_tokens=, output_tokens=: ",
            ):
                r.record(openai_usage=usage, input_tokens=3, output_tokens=0)
            with pytest.raises(
                ValueError,
                match=r"^capture\(\.\.\.\): give one usage, not openai_usage= and "
                r"anthropic_usage=: ",
            ):
                r.capture(openai_usage=usage, anthropic_usage={"input_tokens": 3})
            r.record(openai_usage=usage)
    assert sent == [{"openai_usage": usage, "final": True}]
