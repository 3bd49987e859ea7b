"""A background settle's usage is checked at the call (client_reservations.queued_settle) because
queued, a refusal comes back from the bulk call and is set aside, the call never billed. That check
and the server's reading must agree on every usage shape: the SDK refuses exactly what the server
refuses, for usage inside the rules and outside them (negative, too big, floats, strings, nested
objects where counts go, unknown fields, lists and tuples where Gemini takes its details)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.client_reservations import queued_settle, settle_call
from api.routes.inputs import usage_tokens
from pricing.errors import InvalidUsageError
from pricing.usage import MAX_QUANTITY

COUNTS = st.one_of(
    st.integers(0, 2_000),
    st.integers(0, 2_000),
    st.integers(-3, 3),
    st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, 2**70]),
)
ODD = st.one_of(st.none(), st.booleans(), st.sampled_from([1.0, 2.5, -0.0]), st.sampled_from(["5", "", "us"]))
VALUES = st.one_of(COUNTS, COUNTS, ODD)

OPENAI_DETAILS = [
    "cached_tokens",
    "cache_write_tokens",
    "audio_tokens",
    "image_tokens",
    "video_tokens",
    "reasoning_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
]
MODALITY = st.fixed_dictionaries(
    {"modality": st.sampled_from(["TEXT", "AUDIO", "IMAGE", "VIDEO", "DOCUMENT"])}, optional={"tokenCount": VALUES}
)
MODALITY_LISTS = st.one_of(st.lists(MODALITY, max_size=3), st.lists(MODALITY, max_size=3).map(tuple), VALUES)


def shape(top: list[str], nested: dict[str, Any], strings: list[str] = ()) -> st.SearchStrategy[dict[str, Any]]:
    """Usage dicts of some of `top`'s counts, `nested`'s objects, `strings`' tiers and an unknown field."""
    fields: dict[str, st.SearchStrategy[Any]] = {name: VALUES for name in top}
    fields.update(nested)
    fields.update(
        {name: st.one_of(st.sampled_from(["default", "priority", "us", "", "x" * 41]), VALUES) for name in strings}
    )
    fields["unknown_field"] = VALUES
    return st.lists(st.sampled_from(sorted(fields)), unique=True, max_size=6).flatmap(
        lambda names: st.fixed_dictionaries({name: fields[name] for name in names})
    )


def details(names: list[str]) -> st.SearchStrategy[Any]:
    return st.one_of(st.dictionaries(st.sampled_from(names), VALUES, max_size=4), VALUES)


def openai(prompt: str, completion: str, other: str) -> st.SearchStrategy[dict[str, Any]]:
    """Chat's or Responses' usage, its details under its own names and the other API's."""
    nested = {f"{name}_details": details(OPENAI_DETAILS) for name in (prompt, completion, other)}
    return shape([prompt, completion, "total_tokens"], nested, ["service_tier"])


CHAT = openai("prompt_tokens", "completion_tokens", "input_tokens")
RESPONSES = openai("input_tokens", "output_tokens", "prompt_tokens")
ANTHROPIC = shape(
    ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"],
    {
        "cache_creation": details(["ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"]),
        "server_tool_use": details(["web_search_requests", "web_fetch_requests"]),
        "output_tokens_details": details(["thinking_tokens"]),
    },
    ["service_tier", "inference_geo"],
)
GEMINI = shape(
    [
        "promptTokenCount",
        "cachedContentTokenCount",
        "candidatesTokenCount",
        "thoughtsTokenCount",
        "toolUsePromptTokenCount",
        "totalTokenCount",
    ],
    {
        name: MODALITY_LISTS
        for name in (
            "promptTokensDetails",
            "cacheTokensDetails",
            "candidatesTokensDetails",
            "toolUsePromptTokensDetails",
        )
    },
)
CANONICAL = shape(
    [
        "input_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "output_tokens",
        "reasoning_tokens",
        "cache_write_1h_tokens",
        "input_audio_tokens",
        "output_image_tokens",
        "tool_tokens",
        "web_search_requests",
        "prompt_tokens",
    ],
    {},
    ["service_tier", "inference_geo"],
)
USAGES = st.one_of(
    st.tuples(st.just("openai_usage"), st.one_of(CHAT, RESPONSES)),
    st.tuples(st.just("anthropic_usage"), ANTHROPIC),
    st.tuples(st.just("gemini_usage"), GEMINI),
    st.tuples(st.just("usage"), CANONICAL),
)


def server_refuses(form: str, value: dict[str, Any]) -> bool:
    """What the server does with it: the SDK's JSON (json.dumps, spool and request alike), decoded as
    the server decodes a body (msgspec), read by the settle's own function (usage_tokens)."""
    sent = msgspec.json.decode(json.dumps(value))
    try:
        usage_tokens(**{"usage": None, "openai_usage": None, "anthropic_usage": None, "gemini_usage": None, form: sent})
    except InvalidUsageError:
        return True
    return False


def sdk_refuses(form: str, value: dict[str, Any], final: bool) -> bool:
    _, body, _, _ = settle_call("r-1", final, None, {form: value})
    try:
        queued_settle(body)
    except ValueError as exc:
        assert "the server would refuse it" in str(exc)
        return True
    return False


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=USAGES, final=st.booleans())
def test_the_sdk_refuses_a_queued_settles_usage_exactly_when_the_server_does(drawn, final):
    form, value = drawn
    assert sdk_refuses(form, value, final) == server_refuses(form, value), (form, value)


@pytest.mark.parametrize(
    ("form", "value", "refused"),
    [
        # worked by hand: 10 + 5 = 15 and the cached 4 within 10
        (
            "openai_usage",
            {
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "total_tokens": 15,
                "prompt_tokens_details": {"cached_tokens": 4},
            },
            False,
        ),
        ("openai_usage", {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 16}, True),
        (
            "gemini_usage",
            {"promptTokenCount": 10, "promptTokensDetails": ({"modality": "AUDIO", "tokenCount": 4},)},
            False,
        ),  # a tuple is sent as a JSON list, which the server takes
        ("anthropic_usage", {"input_tokens": 1, "output_tokens": 2, "inference_geo": "us"}, False),
        ("usage", {"input_tokens": 1, "inference_geo": ""}, True),
    ],
)
def test_examples_inside_and_outside_the_rules(form, value, refused):
    assert (sdk_refuses(form, value, True), server_refuses(form, value)) == (refused, refused)
