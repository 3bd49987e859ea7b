"""The text a provider's streamed event generated (pure): what the gateway's stream tally and
the SDK's stream meter count as output, so both meter a stream alike. Every generated text
delta, in the order received: message text, refusals, reasoning text, tool calls' names and
arguments (OpenAI chat chunks, a custom tool's call's name and input too; responses events'
deltas and function_call items' names; Anthropic's text, input JSON and thinking deltas and
tool_use blocks' names), each with the chat choice it belongs to (a call with `n` above 1
streams its choices interleaved: each is metered apart). An event of another shape (a role
chunk, a usage chunk, message_start) is none.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RESPONSES_DELTAS = frozenset({"response.output_text.delta", "response.refusal.delta",
                               "response.function_call_arguments.delta", "response.reasoning_text.delta",
                               "response.reasoning_summary_text.delta", "response.custom_tool_call_input.delta",
                               "response.code_interpreter_call_code.delta", "response.mcp_call_arguments.delta",
                               "response.shell_call_command.delta", "response.audio.transcript.delta"})
ANTHROPIC_DELTAS = ("text", "partial_json", "thinking")
# the event that starts a call of the caller's tool, with its name (which a chat chunk's tool call
# carries in its delta): a responses function_call item added, an Anthropic tool_use block started
_TOOL_CALL_STARTS = {"response.output_item.added": ("item", "function_call"),
                     "content_block_start": ("content_block", "tool_use")}


def list_of(value: Any) -> list[Any]:
    """A list an answer gives, or none: a field of another shape (an upstream's malformed chunk)
    is read as empty, never iterated."""
    return value if isinstance(value, list) else []


def choice_texts_of_chat_delta(chunk: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(the choice's index, its text) of each text a chat chunk generated: a call with `n` above 1
    streams its choices' chunks interleaved, each choice a text of its own."""
    texts: list[tuple[int, str]] = []
    for place, choice in enumerate(list_of(chunk.get("choices"))):
        delta = choice.get("delta") if isinstance(choice, Mapping) else None
        if not isinstance(delta, Mapping):
            continue
        index = choice.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else place
        texts += [(index, delta[k]) for k in ("content", "refusal", "reasoning_content")
                  if isinstance(delta.get(k), str)]
        audio = delta.get("audio")
        if isinstance(audio, Mapping) and isinstance(audio.get("transcript"), str):
            texts.append((index, audio["transcript"]))
        calls = [(delta.get("function_call"), "arguments")]  # the deprecated `functions`' call
        for call in list_of(delta.get("tool_calls")):  # a function's, or a custom tool's (type "custom")
            if isinstance(call, Mapping):
                calls += [(call.get("function"), "arguments"), (call.get("custom"), "input")]
        for call, written in calls:
            if isinstance(call, Mapping):
                texts += [(index, call[k]) for k in ("name", written) if isinstance(call.get(k), str)]
    return texts


def choice_texts_of_event(event: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(the choice's index, the text) of each text one decoded stream event generated, whichever
    provider's stream it is from: a chat chunk's by its choices; another event's, choice 0."""
    if "choices" in event:  # an OpenAI chat completion chunk
        return choice_texts_of_chat_delta(event)
    kind, delta = event.get("type"), event.get("delta")
    if kind in RESPONSES_DELTAS and isinstance(delta, str):  # an OpenAI responses event
        return [(0, delta)]
    if kind == "content_block_delta" and isinstance(delta, Mapping):  # an Anthropic event
        return [(0, delta[k]) for k in ANTHROPIC_DELTAS if isinstance(delta.get(k), str)]
    return [(0, name) for name in tool_call_names(kind, event)]


def tool_call_names(kind: Any, event: Mapping[str, Any]) -> list[str]:
    """The name of the caller's tool a responses or Anthropic event (of type `kind`) starts a call
    of: written by the model as the call's arguments are, output as a chat tool call's name is."""
    field, called = _TOOL_CALL_STARTS.get(kind, (None, None)) if isinstance(kind, str) else (None, None)
    part = event.get(field) if field else None
    if isinstance(part, Mapping) and part.get("type") == called and isinstance(part.get("name"), str):
        return [part["name"]]
    return []
