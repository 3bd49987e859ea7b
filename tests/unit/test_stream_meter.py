"""The SDK's stream meter takes a provider's stream as it comes (README: `for delta in stream:
meter.add(delta)`): an OpenAI chat chunk, a responses event, an Anthropic event, as its SDK's
object or as a dict, counting every text the model generated (message text, refusals,
reasoning, tool calls' names and arguments), as the gateway meters the same streams."""
from __future__ import annotations

import pytest
from anthropic.types import (
    InputJSONDelta,
    RawContentBlockDeltaEvent,
    RawMessageStartEvent,
    TextDelta,
    ThinkingDelta,
)
from openai.types.chat import ChatCompletionChunk

from api.client_reservations import StreamMeter
from pricing.tokens import TokenCounter

MODEL = "gpt-4o"
COUNTER = TokenCounter()


def tokens(text: str) -> int:
    return COUNTER.count_text(text, MODEL).raw_tokens


def chunk(delta: dict | None, usage: dict | None = None) -> ChatCompletionChunk:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": None}]
    return ChatCompletionChunk.model_validate({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                                               "model": MODEL, "choices": choices, "usage": usage})


def openai_chat_stream() -> list[ChatCompletionChunk]:
    return [
        chunk({"role": "assistant", "content": None}),
        chunk({"reasoning_content": "Let me think about the weather."}),
        chunk({"content": "Checking the weather"}),
        chunk({"content": " in Paris."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": "Pa'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ris", "unit": "celsius"}'}}]}),
        chunk({"refusal": "I cannot share the forecast for military use."}),
        chunk({}),  # finish_reason's chunk
        chunk(None, usage={"prompt_tokens": 10, "completion_tokens": 40, "total_tokens": 50}),  # include_usage
    ]


OPENAI_TEXT = ("Let me think about the weather." "Checking the weather" " in Paris." "get_weather"
               '{"city": "Pa' 'ris", "unit": "celsius"}' "I cannot share the forecast for military use.")


def anthropic_stream() -> list:
    start = RawMessageStartEvent.model_validate({"type": "message_start", "message": {
        "id": "m1", "type": "message", "role": "assistant", "model": "claude", "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}})
    return [
        start,
        RawContentBlockDeltaEvent(type="content_block_delta", index=0,
                                  delta=ThinkingDelta(type="thinking_delta", thinking="The user wants Paris.")),
        RawContentBlockDeltaEvent(type="content_block_delta", index=1,
                                  delta=TextDelta(type="text_delta", text="Checking the weather in Paris.")),
        RawContentBlockDeltaEvent(type="content_block_delta", index=2,
                                  delta=InputJSONDelta(type="input_json_delta", partial_json='{"city": "Paris"}')),
    ]


ANTHROPIC_TEXT = "The user wants Paris." "Checking the weather in Paris." '{"city": "Paris"}'


@pytest.mark.parametrize("as_dict", [False, True], ids=["sdk objects", "dicts"])
def test_an_openai_chat_stream_is_metered_chunk_by_chunk(as_dict):
    meter = StreamMeter(COUNTER, MODEL)
    for event in openai_chat_stream():
        meter.add(event.model_dump(exclude_none=True) if as_dict else event)
    assert meter.text == OPENAI_TEXT
    assert meter.output_tokens == tokens(OPENAI_TEXT) > 30


@pytest.mark.parametrize("as_dict", [False, True], ids=["sdk objects", "dicts"])
def test_a_chat_stream_of_several_choices_is_metered_choice_by_choice(as_dict):
    """A call with `n: 2` streams its choices' chunks interleaved. Each choice wrote "Hello world!",
    3 tokens in gpt-4o's o200k_base ("Hello", " world", "!"): 6, as the gateway meters it. Was: the
    texts joined as they came, "HelloHello world world!!", whose "!!" is one token: 5."""
    meter = StreamMeter(COUNTER, MODEL)
    for text in ("Hello", " world", "!"):
        for index in (0, 1):
            event = ChatCompletionChunk.model_validate({
                "id": "c1", "object": "chat.completion.chunk", "created": 1, "model": MODEL,
                "choices": [{"index": index, "delta": {"content": text}, "finish_reason": None}]})
            meter.add(event.model_dump(exclude_none=True) if as_dict else event)
    assert [tokens(text) for text in ("Hello", " world", "!", "Hello world!")] == [1, 1, 1, 3]
    assert meter.output_tokens == 6


@pytest.mark.parametrize("as_dict", [False, True], ids=["sdk objects", "dicts"])
def test_an_anthropic_event_stream_is_metered_event_by_event(as_dict):
    meter = StreamMeter(COUNTER, MODEL)
    for event in anthropic_stream():
        meter.add(event.model_dump() if as_dict else event)
    assert meter.text == ANTHROPIC_TEXT and meter.output_tokens == tokens(ANTHROPIC_TEXT)


def test_an_openai_responses_stream_is_metered_event_by_event():
    meter = StreamMeter(COUNTER, MODEL)
    for event in [{"type": "response.created", "response": {"id": "r1"}},
                  {"type": "response.reasoning_summary_text.delta", "delta": "Thinking."},
                  {"type": "response.output_text.delta", "delta": "Hello"},
                  {"type": "response.function_call_arguments.delta", "delta": '{"a": 1}'},
                  {"type": "response.completed", "response": {"id": "r1", "output": []}}]:
        meter.add(event)
    assert meter.text == 'Thinking.Hello{"a": 1}'


def test_text_deltas_and_nothing_still_go_as_before_and_other_things_are_refused():
    meter = StreamMeter(COUNTER, MODEL)
    for delta in [None, "Hello", " world"]:
        meter.add(delta)
    assert meter.text == "Hello world"
    for wrong in (b"bytes", 42, ["Hello"]):
        with pytest.raises(TypeError):
            meter.add(wrong)
    assert meter.text == "Hello world"


def test_the_openai_sdks_stream_helper_events_are_metered_once():
    """`client.chat.completions.stream()` yields a `chunk` event per chunk (the chunk inside) and,
    beside it, derived events (`content.delta`, `tool_calls.function.arguments.delta`, ...) that
    repeat its text: the chunk's text counts once, the derived events nothing. The chunk events
    counted nothing, so a stream fed from the helper was metered as 0 output tokens."""
    from openai.lib.streaming.chat import ChatCompletionStreamState

    state, events = ChatCompletionStreamState(), []
    for event in openai_chat_stream():
        events += state.handle_chunk(event)
    assert {"chunk", "content.delta", "tool_calls.function.arguments.delta"} <= {e.type for e in events}
    meter = StreamMeter(COUNTER, MODEL)
    for event in events:
        meter.add(event)
    assert meter.text == OPENAI_TEXT


def test_the_anthropic_sdks_stream_helper_events_are_metered_once():
    """`client.messages.stream()` yields each raw delta event and, beside it, a `text` or
    `input_json` event repeating its text, and a `content_block_stop` with the whole block:
    counted once."""
    from anthropic.lib.streaming import ContentBlockStopEvent, InputJsonEvent, TextEvent

    helper = []
    for event in anthropic_stream():
        helper.append(event)
        delta = getattr(event, "delta", None)
        if isinstance(delta, TextDelta):
            helper += [TextEvent(type="text", text=delta.text, snapshot=delta.text),
                       ContentBlockStopEvent.model_construct(type="content_block_stop", index=event.index,
                                                             content_block={"type": "text", "text": delta.text})]
        elif isinstance(delta, InputJSONDelta):
            helper.append(InputJsonEvent(type="input_json", partial_json=delta.partial_json, snapshot={}))
    meter = StreamMeter(COUNTER, MODEL)
    for event in helper:
        meter.add(event)
    assert meter.text == ANTHROPIC_TEXT
