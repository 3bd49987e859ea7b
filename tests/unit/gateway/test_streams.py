"""Server-sent events: cutting them out of a byte stream, and what each provider's says it cost."""
from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.client_reservations import StreamMeter
from api.gateway.calls import CHAT, EMBEDDINGS, MESSAGES, RESPONSES
from api.gateway.streams import (
    EventSplitter,
    StreamTally,
    answer_settlement,
    cut_answer_settlement,
    event_fields,
    with_compactions,
)
from pricing.tokens import TokenCounter

COUNTER = TokenCounter()


def sse(data, event=None) -> bytes:
    return (f"event: {event}\n".encode() if event else b"") + b"data: " + msgspec.json.encode(data) + b"\n\n"


@given(st.lists(st.text(alphabet="ab \n:", max_size=20).map(lambda t: t.replace("\n\n", "\n")), max_size=8),
       st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_splitting_finds_the_same_events_wherever_the_bytes_are_cut(texts, cuts):
    events = [b"data: " + t.replace("\n", "\ndata: ").encode() + b"\n\n" for t in texts]
    stream = b"".join(events)
    splitter, found, last = EventSplitter(), [], 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        found += splitter.feed(stream[last:cut])
        last = cut
    assert found == events and splitter.rest() == b""


ENDS = [b"\r\n", b"\n", b"\r"]


@given(st.lists(st.lists(st.tuples(st.sampled_from(["data: a", "data: b b", "event: x", ": c"]), st.sampled_from(ENDS)),
                         min_size=1, max_size=4), max_size=6),
       st.lists(st.sampled_from(ENDS), min_size=6, max_size=6),
       st.lists(st.integers(min_value=0, max_value=200), max_size=10))
def test_lines_end_in_crlf_lf_or_cr_mixed_and_an_empty_line_ends_the_event(lines, blanks, cuts):
    """The SSE spec: a line ends in CRLF, LF or CR, and an empty line ends an event, whichever
    ends each line. b"data: x\n\r\ndata: y\r\n\n" is two events: "data: x" LF, then an empty line
    (CRLF); "data: y" CRLF, then an empty line (LF). Was one event (none of the terminators
    CRLFCRLF, LFLF, CRCR was in "x\n\r\nd"; "y\r\n\n" holds LFLF), whose data "x\ny" is no JSON.
    A CR that ends one chunk and an LF that starts the next are one line end, wherever the bytes
    are cut."""
    # a line ended by a CR and an empty line ended by an LF are a CRLF and no empty line: CR CRLF
    events = [b"".join(text.encode() + end for text, end in event)
              + (b"\r\n" if event[-1][1] == b"\r" and blanks[i] == b"\n" else blanks[i])
              for i, event in enumerate(lines)]
    stream = b"".join(events)
    splitter, found, last = EventSplitter(), [], 0
    for cut in [*sorted({min(c, len(stream)) for c in cuts}), len(stream)]:
        found += splitter.feed(stream[last:cut])
        last = cut
    # an event whose empty line's CR ends a chunk goes at once: the LF of that CRLF opens the next
    rest = splitter.rest()
    assert b"".join(found) + rest == stream and rest in (b"", b"\n")
    assert [event_fields(e) for e in found] == [event_fields(e) for e in events]


def test_an_lf_line_and_a_crlf_empty_line_end_an_event_and_a_cr_then_an_lf_in_the_next_chunk_one_line():
    """Two of the cases above, written out: "data: x" LF then an empty line (CRLF) ends the
    event, as does "data: y" CRLF then an empty line (LF). An event whose empty line is a CR that
    ends a chunk is out at once; an LF that starts the next chunk is the rest of that CRLF, no
    empty line of its own (so no empty event)."""
    assert EventSplitter().feed(b"data: x\n\r\ndata: y\r\n\n") == [b"data: x\n\r\n", b"data: y\r\n\n"]
    assert event_fields(b"data: x\n\r\n") == (None, "x")
    splitter = EventSplitter()
    assert splitter.feed(b"data: x\r") == [] and splitter.feed(b"\r") == [b"data: x\r\r"]
    assert splitter.feed(b"\ndata: y\r") == [] and splitter.feed(b"\n\r\n") == [b"\ndata: y\r\n\r\n"]
    assert splitter.rest() == b""


def test_crlf_events_and_a_cut_mid_event():
    splitter = EventSplitter()
    assert splitter.feed(b"event: a\r\ndata: 1\r\n\r\ndata: 2") == [b"event: a\r\ndata: 1\r\n\r\n"]
    assert splitter.rest() == b"data: 2"
    assert event_fields(b"event: a\r\ndata: 1\r\ndata: 2\r\n\r\n") == ("a", "1\n2")


def chunk(content=None, usage=None, choices=True):
    body = {"choices": [{"index": 0, "delta": {"content": content}}] if choices else []}
    return sse({**body, "usage": usage} if usage else body)


def test_a_chat_stream_meters_its_text_and_drops_the_usage_chunk_the_caller_did_not_ask_for():
    usage = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    tally = StreamTally(CHAT, usage_chunk_wanted=False)
    assert tally.observe(chunk(" the")) and tally.observe(chunk(" fox"))
    assert not tally.observe(chunk(usage=usage, choices=False))
    assert tally.observe(b"data: [DONE]\n\n")
    assert tally.texts == [" the", " fox"] and tally.settlement(COUNTER, "m", 9) == ("openai_usage", usage)


def test_a_cut_chat_stream_settles_the_prompt_count_and_the_metered_output():
    tally = StreamTally(CHAT)
    for word in (" the", " quick", " fox"):
        tally.observe(chunk(word))
    assert tally.settlement(COUNTER, "m", 9) == ("usage", {"input_tokens": 9, "output_tokens": 3})


def test_nothing_generated_is_released():
    tally = StreamTally(CHAT)
    tally.observe(sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
    assert tally.settlement(COUNTER, "m", 9) is None


def test_tool_call_arguments_are_metered_as_output():
    tally = StreamTally(CHAT)
    tally.observe(sse({"choices": [{"delta": {"tool_calls": [{"function": {"arguments": "{\"a\": 1}"}}]}}]}))
    assert tally.texts == ['{"a": 1}']


def test_anthropic_usage_is_message_starts_with_message_deltas_output():
    tally = StreamTally(MESSAGES)
    tally.observe(sse({"type": "message_start", "message": {"usage": {"input_tokens": 900, "output_tokens": 1,
                                                                      "cache_read_input_tokens": 100}}},
                      "message_start"))
    tally.observe(sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": " the"}},
                      "content_block_delta"))
    assert tally.settlement(COUNTER, "m", 9) == ("anthropic_usage", {"input_tokens": 900, "output_tokens": 1,
                                                                    "cache_read_input_tokens": 100})
    tally.observe(sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": " fox"}},
                      "content_block_delta"))
    cut = tally.settlement(COUNTER, "m", 9)
    assert cut == ("anthropic_usage", {"input_tokens": 900, "output_tokens": 2, "cache_read_input_tokens": 100})
    tally.observe(sse({"type": "message_delta", "usage": {"output_tokens": 40}}, "message_delta"))
    assert tally.settlement(COUNTER, "m", 9)[1] == {"input_tokens": 900, "output_tokens": 40,
                                                    "cache_read_input_tokens": 100}


def test_a_responses_stream_takes_the_completed_responses_usage():
    tally = StreamTally(RESPONSES)
    tally.observe(sse({"type": "response.output_text.delta", "delta": " the"}, "response.output_text.delta"))
    usage = {"input_tokens": 3, "output_tokens": 1, "total_tokens": 4}
    tally.observe(sse({"type": "response.completed", "response": {"usage": usage}}, "response.completed"))
    assert tally.settlement(COUNTER, "m", 9) == ("openai_usage", usage)


def test_openais_service_tier_beside_the_usage_goes_into_the_usage_it_settles():
    chat = StreamTally(CHAT)
    chat.observe(sse({"choices": [{"delta": {"content": " the"}}], "service_tier": "flex"}))
    chat.observe(sse({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}, "service_tier": "flex"}))
    assert chat.settlement(COUNTER, "m", 9) == (
        "openai_usage", {"prompt_tokens": 3, "completion_tokens": 1, "service_tier": "flex"})
    responses = StreamTally(RESPONSES)
    done = {"usage": {"input_tokens": 3, "output_tokens": 1}, "service_tier": "priority"}
    responses.observe(sse({"type": "response.completed", "response": done}, "response.completed"))
    assert responses.settlement(COUNTER, "m", 9) == (
        "openai_usage", {"input_tokens": 3, "output_tokens": 1, "service_tier": "priority"})
    whole = msgspec.json.encode({"choices": [], "service_tier": "flex",
                                 "usage": {"prompt_tokens": 3, "completion_tokens": 1}})
    assert answer_settlement(CHAT, whole, COUNTER, "m", 9) == (
        "openai_usage", {"prompt_tokens": 3, "completion_tokens": 1, "service_tier": "flex"})
    default = msgspec.json.encode({"choices": [], "service_tier": "default",
                                   "usage": {"prompt_tokens": 3, "completion_tokens": 1, "service_tier": "flex"}})
    assert answer_settlement(CHAT, default, COUNTER, "m", 9)[1]["service_tier"] == "flex", "the usage's own word stays"


def test_an_error_inside_a_stream_is_noticed():
    tally = StreamTally(MESSAGES)
    tally.observe(sse({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}, "error"))
    assert tally.error


def test_whole_answers():
    embedding = msgspec.json.encode({"data": [], "usage": {"prompt_tokens": 12, "total_tokens": 12}})
    assert answer_settlement(EMBEDDINGS, embedding, COUNTER, "m", 3) == (
        "openai_usage", {"prompt_tokens": 12, "total_tokens": 12, "completion_tokens": 0})
    bare = msgspec.json.encode({"choices": [{"message": {"role": "assistant", "content": " the fox"}}]})
    assert answer_settlement(CHAT, bare, COUNTER, "m", 3) == ("usage", {"input_tokens": 3, "output_tokens": 2})
    claude = msgspec.json.encode({"content": [{"type": "text", "text": " the"}]})
    assert answer_settlement(MESSAGES, claude, COUNTER, "m", 3) == ("usage", {"input_tokens": 3, "output_tokens": 1})
    assert answer_settlement(CHAT, b"not json", COUNTER, "m", 3) is None


def test_events_of_an_unexpected_shape_are_forwarded_and_read_as_empty():
    for kind, odd in ((CHAT, {"choices": 7}), (CHAT, {"choices": [{"delta": {"tool_calls": 3}}]}),
                      (RESPONSES, {"type": ["response.output_text.delta"], "delta": "x"}),
                      (MESSAGES, {"type": {"a": 1}})):
        tally = StreamTally(kind)
        assert tally.observe(sse(odd)) is True and tally.texts == [] and tally.usage is None
    for kind, odd in ((CHAT, {"choices": 7}), (RESPONSES, {"output": 7}), (RESPONSES, {"output": [{"content": 7}]}),
                      (MESSAGES, {"content": 7})):
        assert answer_settlement(kind, msgspec.json.encode(odd), COUNTER, "gpt-4o", 5) == ("usage", {"input_tokens": 5})


def test_only_cr_and_lf_end_an_events_lines():
    data = msgspec.json.encode({"text": "a\u2028b\u2029c\x85d\x0be\x1cf"})
    assert event_fields(b"event: e\r\ndata: " + data + b"\r\n\r\n") == ("e", data.decode())
    assert event_fields(b"data: 1\rdata: 2\ndata: 3\n\n") == (None, "1\n2\n3")


@pytest.mark.parametrize(("ttl_1h", "split"), [(False, (30, 50)), (True, (0, 80))])
def test_cache_writes_message_delta_adds_are_split_at_the_ttl_the_call_caches_for(ttl_1h, split):
    """message_start: 50 writes, all one-hour; message_delta: 80 in all, no split (its usage has none).
    The 30 added are 5-minute writes for a call that caches for 5 minutes, one-hour for one that asks
    1h (was: 80 against a split of 0 + 50, unreadable usage, settled without it)."""
    tally = StreamTally(MESSAGES, cache_ttl_1h=ttl_1h)
    tally.observe(sse({"type": "message_start", "message": {"usage": {
        "input_tokens": 900, "output_tokens": 1, "cache_creation_input_tokens": 50,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 50}}}}, "message_start"))
    tally.observe(sse({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 40,
                                                                         "cache_creation_input_tokens": 80}},
                      "message_delta"))
    form, usage = tally.settlement(COUNTER, "claude-x", 9)
    assert form == "anthropic_usage" and usage["cache_creation_input_tokens"] == 80
    writes = usage["cache_creation"]
    assert (writes["ephemeral_5m_input_tokens"], writes["ephemeral_1h_input_tokens"]) == split


def test_an_upstream_that_fails_before_any_output_token_is_released_though_message_start_came():
    start = sse({"type": "message_start", "message": {"usage": {"input_tokens": 900, "output_tokens": 1}}},
                "message_start")
    broken = StreamTally(MESSAGES)
    broken.observe(start)
    assert broken.settlement(COUNTER, "m", 9, failed=True) is None
    assert broken.settlement(COUNTER, "m", 9) == ("anthropic_usage", {"input_tokens": 900, "output_tokens": 0})
    broken.observe(sse({"type": "error", "error": {"type": "overloaded_error", "message": "x"}}, "error"))
    assert broken.settlement(COUNTER, "m", 9) is None
    late = StreamTally(MESSAGES)  # failed after a token: what was generated is charged
    late.observe(start)
    late.observe(sse({"type": "content_block_delta", "delta": {"type": "text_delta", "text": " the"}}))
    assert late.settlement(COUNTER, "m", 9, failed=True) == ("anthropic_usage",
                                                             {"input_tokens": 900, "output_tokens": 1})


def test_an_upstream_that_fails_after_a_web_search_is_charged_the_search():
    """Anthropic bills a search it ran though the answer then failed before any text: the
    settlement counts the server_tool_use blocks the stream showed (a client tool_use is not one,
    but its name, "web_search", is output the model wrote, as a chat tool call's is: "web" and
    "_search", 2 tokens in cl100k_base; was released, its name not counted)."""
    tally = StreamTally(MESSAGES)
    tally.observe(sse({"type": "message_start", "message": {"usage": {"input_tokens": 900, "output_tokens": 1}}},
                      "message_start"))
    tally.observe(sse({"type": "content_block_start", "index": 0, "content_block": {
        "type": "tool_use", "id": "toolu_1", "name": "web_search", "input": {}}}, "content_block_start"))
    assert tally.settlement(COUNTER, "m", 9, failed=True) == ("anthropic_usage", {
        "input_tokens": 900, "output_tokens": 2})
    for index in (1, 2):
        tally.observe(sse({"type": "content_block_start", "index": index, "content_block": {
            "type": "server_tool_use", "id": f"srvtoolu_{index}", "name": "web_search", "input": {}}},
            "content_block_start"))
    assert tally.settlement(COUNTER, "m", 9, failed=True) == ("anthropic_usage", {
        "input_tokens": 900, "output_tokens": 2, "server_tool_use": {"web_search_requests": 2}})
    tally.observe(sse({"type": "message_delta", "usage": {"output_tokens": 40,
                                                          "server_tool_use": {"web_search_requests": 3}}}))
    assert tally.settlement(COUNTER, "m", 9)[1]["server_tool_use"] == {"web_search_requests": 3}  # the provider's


def _search(n: int, kind: str = "response.output_item.added") -> bytes:
    return sse({"type": kind, "output_index": n, "item": {"id": f"ws_{n}", "type": "web_search_call",
                                                           "status": "completed"}}, kind)


def test_openai_web_searches_are_charged_besides_the_usage_that_omits_them():
    tally = StreamTally(RESPONSES)
    for n in (0, 1):
        tally.observe(_search(n))
        tally.observe(_search(n, "response.output_item.done"))  # the same search, done: counted once
    tally.observe(sse({"type": "response.output_item.added", "item": {"id": "fc_1", "type": "function_call"}}))
    usage = {"input_tokens": 800, "input_tokens_details": {"cached_tokens": 100},
             "output_tokens": 56, "output_tokens_details": {"reasoning_tokens": 16}, "total_tokens": 856}
    tally.observe(sse({"type": "response.completed", "response": {"usage": usage, "service_tier": "flex",
                                                                  "output": []}}))
    settlement = tally.settlement(COUNTER, "gpt-4.1", 9)
    assert settlement[0] == "openai_usage"
    assert tally.with_tool_calls(*settlement) == ("usage", {
        "input_tokens": 700, "cached_input_tokens": 100, "cache_write_tokens": 0, "output_tokens": 40,
        "reasoning_tokens": 16, "service_tier": "flex", "web_search_calls": 2})


def test_an_openai_stream_that_fails_after_a_web_search_is_charged_the_search():
    tally = StreamTally(RESPONSES)
    assert tally.settlement(COUNTER, "gpt-4.1", 9, failed=True) is None
    tally.observe(_search(0))
    assert tally.settlement(COUNTER, "gpt-4.1", 9, failed=True) == ("usage", {
        "input_tokens": 9, "output_tokens": 0, "web_search_calls": 1})


def test_a_whole_openai_answer_is_charged_its_web_search_items():
    answer = msgspec.json.encode({"output": [{"id": "ws_1", "type": "web_search_call"},
                                             {"id": "ws_2", "type": "web_search_call"},
                                             {"id": "msg", "type": "message", "content": []}],
                                  "usage": {"input_tokens": 10, "output_tokens": 5}})
    tally = StreamTally(RESPONSES)
    tally.observe_answer(answer)
    assert tally.with_tool_calls(*answer_settlement(RESPONSES, answer, COUNTER, "gpt-4.1", 9)) == ("usage", {
        "input_tokens": 10, "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 5,
        "reasoning_tokens": 0, "web_search_calls": 2})
    no_search = StreamTally(CHAT)
    no_search.observe_answer(answer)
    assert no_search.with_tool_calls("openai_usage", {"prompt_tokens": 1}) == ("openai_usage", {"prompt_tokens": 1})


def test_a_chat_call_to_a_search_model_is_charged_its_search_unless_released():
    tally = StreamTally(CHAT, chat_searches=1)
    assert tally.settlement(COUNTER, "gpt-4o-search-preview", 9, failed=True) is None  # released: no search charged
    usage = {"prompt_tokens": 10, "completion_tokens": 5}
    assert tally.with_tool_calls("openai_usage", usage) == ("usage", {
        "input_tokens": 10, "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 5,
        "reasoning_tokens": 0, "web_search_calls": 1})
    tally.observe(chunk(" the"))
    assert tally.with_tool_calls(*tally.settlement(COUNTER, "gpt-4o-search-preview", 9)) == ("usage", {
        "input_tokens": 9, "output_tokens": 1, "web_search_calls": 1})
    assert StreamTally(CHAT).with_tool_calls("openai_usage", usage) == ("openai_usage", usage)


def test_openai_file_searches_are_charged_beside_web_searches():
    tally = StreamTally(RESPONSES)
    tally.observe(_search(0))
    tally.observe(sse({"type": "response.output_item.done", "item": {"id": "fs_1", "type": "file_search_call"}}))
    tally.observe(sse({"type": "response.output_item.added", "item": {"id": "ci_1", "type": "code_interpreter_call"}}))
    assert tally.settlement(COUNTER, "gpt-4.1", 9, failed=True) == ("usage", {
        "input_tokens": 9, "output_tokens": 0, "web_search_calls": 1, "file_search_calls": 1})


def _ran(ident, container="cntr_1"):
    return sse({"type": "response.output_item.done", "item": {"id": ident, "type": "code_interpreter_call",
                                                              "container_id": container, "code": "1"}})


def test_openai_containers_are_charged_once_each_at_the_calls_units():
    tally = StreamTally(RESPONSES, container_units=4)
    assert tally.settlement(COUNTER, "gpt-4.1", 9, failed=True) is None
    tally.observe(_ran("ci_1"))
    tally.observe(_ran("ci_2"))  # the same container
    assert tally.settlement(COUNTER, "gpt-4.1", 9, failed=True) == ("usage", {
        "input_tokens": 9, "output_tokens": 0, "code_execution_calls": 4})
    tally.observe(_ran("ci_3", "cntr_2"))
    tally.observe(sse({"type": "response.output_item.added", "item": {
        "id": "sh_1", "type": "shell_call", "environment": {"type": "container_reference", "container_id": "cntr_3"}}}))
    tally.observe(sse({"type": "response.output_item.added", "item": {
        "id": "sh_2", "type": "shell_call", "environment": {"type": "local"}}}))  # the caller's machine
    assert tally.tool_calls() == {"code_execution_calls": 3 * 4}


def test_an_openai_container_the_call_reused_by_id_is_not_charged_again():
    """Billed when it was made, by an earlier call: runs in it charge nothing more (was: its units
    again on every call), a container the call made is charged as before."""
    tally = StreamTally(RESPONSES, container_units=4, reused_containers=frozenset({"cntr_1"}))
    tally.observe(_ran("ci_1"))
    tally.observe(sse({"type": "response.output_item.added", "item": {
        "id": "sh_1", "type": "shell_call", "environment": {"type": "container_reference", "container_id": "cntr_1"}}}))
    assert tally.tool_calls() == {}
    assert tally.settlement(COUNTER, "gpt-4.1", 9, failed=True) is None  # nothing generated, nothing billed
    tally.observe(_ran("ci_2", "cntr_2"))
    assert tally.tool_calls() == {"code_execution_calls": 4}


def test_an_anthropic_answers_container_is_charged_with_its_usage_as_canonical_counts():
    usage = {"input_tokens": 10, "output_tokens": 5, "server_tool_use": {"web_search_requests": 1},
             "service_tier": "priority"}
    answer = msgspec.json.encode({"content": [], "usage": usage,
                                  "container": {"id": "container_1", "expires_at": "2026-12-31T00:00:00Z"}})
    tally = StreamTally(MESSAGES, container_units=1)
    tally.observe_answer(answer)
    assert tally.with_tool_calls(*answer_settlement(MESSAGES, answer, COUNTER, "claude-sonnet-4-5", 9)) == ("usage", {
        "input_tokens": 10, "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 5,
        "reasoning_tokens": 0, "web_search_calls": 1, "code_execution_calls": 1, "service_tier": "priority"})
    free = StreamTally(MESSAGES)  # code execution Anthropic does not bill (beside a dynamic web search)
    free.observe_answer(answer)
    assert free.with_tool_calls("anthropic_usage", usage) == ("anthropic_usage", usage)


def test_an_anthropic_stream_that_fails_after_running_code_is_charged_its_container():
    tally = StreamTally(MESSAGES, container_units=1)
    tally.observe(sse({"type": "message_start", "message": {"usage": {"input_tokens": 20, "output_tokens": 1}}}))
    tally.observe(sse({"type": "content_block_start", "index": 0, "content_block": {
        "type": "server_tool_use", "id": "srvtoolu_1", "name": "bash_code_execution", "input": {}}}))
    assert tally.with_tool_calls(*tally.settlement(COUNTER, "claude-sonnet-4-5", 9, failed=True)) == ("usage", {
        "input_tokens": 20, "cached_input_tokens": 0, "cache_write_tokens": 0, "output_tokens": 0,
        "reasoning_tokens": 0, "code_execution_calls": 1})


def test_anthropics_compactions_are_added_to_its_top_level_usage():
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 4,
             "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 0},
             "iterations": [{"type": "compaction", "input_tokens": 3000, "output_tokens": 200,
                             "cache_read_input_tokens": 7, "cache_creation_input_tokens": 6,
                             "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 6}},
                            {"type": "message", "input_tokens": 10, "output_tokens": 5},
                            {"type": "compaction", "input_tokens": 1, "output_tokens": True}]}
    assert {k: v for k, v in with_compactions(usage).items() if k != "iterations"} == {
        "input_tokens": 3011, "output_tokens": 205, "cache_read_input_tokens": 7, "cache_creation_input_tokens": 10,
        "cache_creation": {"ephemeral_5m_input_tokens": 4, "ephemeral_1h_input_tokens": 6}}
    assert with_compactions({"input_tokens": 1, "output_tokens": 1}) == {"input_tokens": 1, "output_tokens": 1}


def test_a_response_cut_before_its_usage_tells_the_tier_that_came_before_it():
    """A response's service_tier comes before its usage: cut between them, the answer is metered and
    the tier that came whole is the tally's, which prices it (api.gateway.forwarding); one cut
    mid-string is not read."""
    whole = msgspec.json.encode({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
                                 "output": [], "service_tier": "flex", "usage": {"input_tokens": 5}})
    tally = StreamTally(RESPONSES)
    part = whole[:whole.index(b'"usage"') + 10]
    assert cut_answer_settlement(RESPONSES, part, COUNTER, "gpt-4o", 9, tally) == ("usage", {"input_tokens": 9})
    assert tally.service_tier == "flex"
    cut = StreamTally(RESPONSES)
    cut_answer_settlement(RESPONSES, whole[:whole.index(b'"flex"') + 3], COUNTER, "gpt-4o", 9, cut)
    assert cut.service_tier is None


def _response_event(kind: str, **response: object) -> bytes:
    return f"event: {kind}\ndata: ".encode() + msgspec.json.encode({"type": kind, "response": response}) + b"\n\n"


def test_a_responses_stream_tells_its_tier_in_its_first_events_and_keeps_it_to_its_usage():
    """response.created and response.in_progress carry the response's service_tier, which the
    tally read only from the event with the usage: a stream cut before that was priced at the held
    tier though it had told flex. "auto" (the call's own choice, echoed) is not a tier that served;
    a completed response without a tier keeps the one told before."""
    tally = StreamTally(RESPONSES)
    tally.observe(_response_event("response.created", status="in_progress", service_tier="auto"))
    assert tally.service_tier is None
    tally.observe(_response_event("response.in_progress", status="in_progress", service_tier="flex"))
    tally.observe(_response_event("response.in_progress", status="in_progress", service_tier="auto"))
    assert tally.service_tier == "flex"
    tally.observe(_response_event("response.completed", status="completed", usage={"input_tokens": 5}))
    assert tally.settlement(COUNTER, "gpt-4o", 9) == ("openai_usage", {"input_tokens": 5, "service_tier": "flex"})
    created = StreamTally(RESPONSES)
    created.observe(_response_event("response.created", status="in_progress", service_tier="priority"))
    assert created.service_tier == "priority"


def test_an_answer_that_says_auto_tells_no_tier_that_served():
    """An answer's "auto" is the call's own choice echoed, never a tier that served it. A chat chunk, a
    response.completed event or a whole answer that says it was read as the tier that served: the
    usage went to the ledger with service_tier "auto", which no rule of a book matches, so a call
    whose hold priced priority was charged standard prices (and as told, nothing assumed). Now it
    tells nothing: the tier told before stays (flex), else none, and the gateway assumes the held one."""
    chat = StreamTally(CHAT)
    chat.observe(sse({"object": "chat.completion.chunk", "choices": [], "service_tier": "auto"}))
    assert chat.service_tier is None
    chat.observe(sse({"object": "chat.completion.chunk", "choices": [], "service_tier": "flex"}))
    chat.observe(sse({"object": "chat.completion.chunk", "choices": [], "service_tier": "auto",
                      "usage": {"prompt_tokens": 5, "completion_tokens": 1}}))
    assert chat.settlement(COUNTER, "gpt-4o", 9) == (
        "openai_usage", {"prompt_tokens": 5, "completion_tokens": 1, "service_tier": "flex"})
    response = StreamTally(RESPONSES)
    response.observe(_response_event("response.in_progress", status="in_progress", service_tier="flex"))
    response.observe(_response_event("response.completed", status="completed", service_tier="auto",
                                     usage={"input_tokens": 5}))
    assert response.settlement(COUNTER, "gpt-4o", 9) == ("openai_usage", {"input_tokens": 5, "service_tier": "flex"})
    whole = msgspec.json.encode({"id": "chatcmpl-1", "object": "chat.completion", "model": "m", "choices": [],
                                 "service_tier": "auto", "usage": {"prompt_tokens": 5, "completion_tokens": 1}})
    assert answer_settlement(CHAT, whole, COUNTER, "gpt-4o", 9) == (
        "openai_usage", {"prompt_tokens": 5, "completion_tokens": 1})
    cut = StreamTally(RESPONSES)
    told = msgspec.json.encode({"id": "resp_1", "object": "response", "status": "completed", "model": "m",
                                "output": [], "service_tier": "auto", "usage": {"input_tokens": 5}})
    cut_answer_settlement(RESPONSES, told[:told.index(b'"usage"') + 10], COUNTER, "gpt-4o", 9, cut)
    assert cut.service_tier is None


ARGS = '{"q":"x"}'
CALLED = {  # a call of the caller's tool "lookup" with {"q":"x"}: (its stream's events, its whole answer)
    CHAT: ([{"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                                "function": {"name": "lookup", "arguments": ""}}]}}]},
            {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ARGS}}]}}]}],
           {"choices": [{"index": 0, "message": {"role": "assistant", "tool_calls": [
               {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": ARGS}}]}}]}),
    RESPONSES: ([{"type": "response.output_item.added", "output_index": 0, "item": {
                    "type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup", "arguments": ""}},
                 {"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 0,
                  "delta": ARGS}],
                {"output": [{"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "lookup",
                             "arguments": ARGS}]}),
    MESSAGES: ([{"type": "message_start", "message": {"usage": {"input_tokens": 9, "output_tokens": 1}}},
                {"type": "content_block_start", "index": 0,
                 "content_block": {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {}}},
                {"type": "content_block_delta", "index": 0,
                 "delta": {"type": "input_json_delta", "partial_json": ARGS}}],
               {"content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}}]})}


@pytest.mark.parametrize("kind", [CHAT, RESPONSES, MESSAGES])
def test_a_tool_calls_name_is_metered_as_output_by_every_api_alike(kind):
    """The model writes a tool call's name as it writes its arguments: output. A call of "lookup"
    with {"q":"x"}, its stream cut before any usage (or a whole answer without one), is metered
    "lookup" then '{"q":"x"}' in cl100k_base (an unknown model's): the pre-tokenizer cuts
    "lookup{"q":"x"}" into "lookup" (letters), '{"' (punctuation), "q", '":"', "x", '"}', one token
    each: 6 output tokens, by the gateway's tally and the SDK's StreamMeter alike. Chat counted
    the name (its delta's function.name); a responses function_call item's name (in
    response.output_item.added) and an Anthropic tool_use block's (in content_block_start) were
    not: 5, the arguments alone."""
    events, whole = CALLED[kind]
    tally, meter = StreamTally(kind), StreamMeter(COUNTER, "m-unknown")
    for event in events:
        tally.observe(sse(event, event.get("type")))
        meter.add(event)
    assert tally.settlement(COUNTER, "m-unknown", 8, failed=True)[1]["output_tokens"] == 6
    assert meter.output_tokens == 6
    answered = StreamTally(kind)
    answered.observe_answer(whole)
    assert answered.settlement(COUNTER, "m-unknown", 8)[1]["output_tokens"] == 6


CUSTOM_CALL = (  # a chat call of the caller's custom tool "lookup" (type "custom"), its input '{"q":"x"}'
    [{"choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [
        {"index": 0, "id": "call_1", "type": "custom", "custom": {"name": "lookup", "input": ""}}]}}]},
     {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "custom": {"input": ARGS}}]}}]}],
    {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": None,
                  "tool_calls": [{"id": "call_1", "type": "custom", "custom": {"name": "lookup", "input": ARGS}}]}}]})


def test_a_chat_custom_tool_call_is_metered_as_output_as_a_function_call_is():
    """OpenAI's custom tools: a chat answer's `message.tool_calls[]` of `type: "custom"` carries
    `custom: {name, input}` (the openai package's ChatCompletionMessageCustomToolCall), streamed
    as deltas of the same shape. A call of "lookup" with the input '{"q":"x"}', cut before any
    usage (or a whole answer without one), was metered 0 output tokens (only `function`'s name
    and arguments were read) by the gateway's tally and the SDK's StreamMeter, where a function
    call of the same name and arguments is 6 in cl100k_base: "lookup", '{"', "q", '":"', "x",
    '"}'. Now 6 for the custom call too, the stream's chunks given to the meter as dicts or as
    the openai package's ChatCompletionChunk objects (built as its client builds them)."""
    from openai._models import construct_type
    from openai.types.chat import ChatCompletionChunk

    events, whole = CUSTOM_CALL
    tally, meter, objects = StreamTally(CHAT), StreamMeter(COUNTER, "m-unknown"), StreamMeter(COUNTER, "m-unknown")
    for event in events:
        tally.observe(sse(event))
        meter.add(event)
        objects.add(construct_type(type_=ChatCompletionChunk, value={
            "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m", **event}))
    assert tally.settlement(COUNTER, "m-unknown", 8, failed=True)[1]["output_tokens"] == 6
    assert (meter.output_tokens, objects.output_tokens) == (6, 6)
    answered = StreamTally(CHAT)
    answered.observe_answer(whole)
    assert answered.settlement(COUNTER, "m-unknown", 8)[1]["output_tokens"] == 6
