"""Reading provider calls for the hold: prompt counts worked by hand, output caps, the body sent on."""
from __future__ import annotations

import base64
import io
import wave

import msgspec
import pytest
from fpdf import FPDF
from PIL import Image

from api.gateway.calls import CHAT, EMBEDDINGS, MESSAGES, NON_TEXT_PART_TOKENS, RESPONSES, CallError, parse_call
from api.gateway.tools import UnmeteredToolError
from pricing.tokens import TokenCounter

COUNTER = TokenCounter()
HI = [{"role": "user", "content": "hi"}]


def call(kind: str, body: dict, default: int = 1000):
    return parse_call(kind, msgspec.json.encode(body), default_max_output=default, counter=COUNTER)


def test_a_chat_prompt_counts_each_string_plus_3_per_message_and_3_for_the_reply():
    # gpt-4 is cl100k_base, exact: "user" 1 + "hi" 1 + 3 + 3
    c = call(CHAT, {"model": "gpt-4", "messages": HI, "max_tokens": 50})
    assert (c.prompt_tokens, c.prompt_raw_tokens, c.max_output_tokens) == (8, 8, 50)


def test_an_unknown_models_prompt_is_held_with_the_margin_and_settled_without_it():
    c = call(CHAT, {"model": "my-model", "messages": HI, "max_tokens": 50})
    assert (c.prompt_tokens, c.prompt_raw_tokens) == (9, 8)  # 2 text tokens + 10 %, rounded up: 3


def test_a_call_without_an_output_cap_is_held_and_sent_with_the_default_one():
    c = call(CHAT, {"model": "gpt-4", "messages": HI}, default=777)
    assert c.max_output_tokens == 777 and msgspec.json.decode(c.body)["max_completion_tokens"] == 777
    r = call(RESPONSES, {"model": "gpt-4", "input": "hi"}, default=555)
    assert r.max_output_tokens == 555 and msgspec.json.decode(r.body)["max_output_tokens"] == 555


def test_a_call_with_its_own_cap_is_forwarded_byte_for_byte():
    raw = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "temperature": 0.7}'
    c = parse_call(CHAT, raw, default_max_output=1000, counter=COUNTER)
    assert c.body == raw and c.max_output_tokens == 7


def test_n_choices_hold_n_times_the_cap():
    assert call(CHAT, {"model": "gpt-4", "messages": HI, "max_completion_tokens": 100, "n": 3}).max_output_tokens == 300


def test_a_chat_stream_asks_for_usage_and_remembers_whether_the_caller_did():
    c = call(CHAT, {"model": "gpt-4", "messages": HI, "stream": True, "max_tokens": 5})
    assert msgspec.json.decode(c.body)["stream_options"] == {"include_usage": True} and not c.usage_chunk_wanted
    asked = call(CHAT, {"model": "gpt-4", "messages": HI, "stream": True, "max_tokens": 5,
                        "stream_options": {"include_usage": True}})
    assert asked.usage_chunk_wanted and asked.stream


def test_a_non_text_part_counts_a_fixed_allowance_not_its_base64():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 100_000}}
    c = call(CHAT, {"model": "gpt-4", "max_tokens": 1,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, image]}]})
    # "user", "text" (the part's type) and "hi": 3 tokens, + 3 + 3, + one image
    assert c.prompt_raw_tokens == 3 + 6 + NON_TEXT_PART_TOKENS


def test_embeddings_count_texts_and_token_ids_and_produce_no_output():
    c = call(EMBEDDINGS, {"model": "text-embedding-3-small", "input": [[1, 2, 3], [4]], "stream": True})
    assert (c.prompt_raw_tokens, c.max_output_tokens, c.stream) == (4, 0, False)
    assert call(EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hi there"}).prompt_raw_tokens == 2


def test_anthropic_counts_the_system_prompt_and_is_never_given_a_cap():
    c = call(MESSAGES, {"model": "claude-x", "system": "be brief", "messages": HI}, default=321)
    assert c.max_output_tokens == 321 and "max_tokens" not in msgspec.json.decode(c.body)
    assert c.prompt_raw_tokens == len(COUNTER.encoding_for("claude-x")[0].encode_ordinary("be brief")) + 2 + 6


@pytest.mark.parametrize(("body", "field"), [
    (b"not json", "body"), (b"[1]", "body"), (b'{"messages": []}', "model"),
    (b'{"model": "m", "messages": [], "max_tokens": -1}', "max_tokens"),
    (b'{"model": "m", "messages": [], "max_tokens": true}', "max_tokens"),
])
def test_malformed_calls_name_the_field(body, field):
    with pytest.raises(CallError) as raised:
        parse_call(CHAT, body, default_max_output=10, counter=COUNTER)
    assert raised.value.field == field


@pytest.mark.parametrize(("cap", "field", "message"), [
    # one cap past 10**12 (the most a count may be): it is a whole number, 0 or more, all the same
    ({"max_tokens": 10**12 + 1}, "max_tokens", "must be a whole number from 0 to 1000000000000"),
    # 1,001 choices of 10**12 tokens each: 1.001 * 10**15 output tokens, past the 10**15 a hold counts
    ({"max_tokens": 10**12, "n": 1001}, "n", "holds 1001 choices of max_tokens 1000000000000"),
    ({"max_completion_tokens": 10**12, "max_tokens": 5, "n": 1001}, "n",
     "holds 1001 choices of max_completion_tokens 1000000000000"),
])
def test_an_output_cap_too_large_to_hold_names_the_fields_the_call_gave(cap, field, message):
    """Was: 10**12 + 1 refused as "must be a whole number, 0 or more", which it is; and a chat call
    whose cap times n passed 10**15 went to the hold, refused 422 naming `max_output_tokens`, a
    field of the reserve API the caller never sent."""
    with pytest.raises(CallError) as raised:
        call(CHAT, {"model": "gpt-4", "messages": HI, **cap})
    assert raised.value.field == field and message in raised.value.message
    # 1,000 choices of 10**12: 10**15 exactly, held (a 402 for a wallet that cannot pay it; a 400 naming
    # max_tokens where its price passes a journal entry: test_gateway_edges, ..._no_journal_entry_can_carry_...)
    assert call(CHAT, {"model": "gpt-4", "messages": HI, "max_tokens": 10**12, "n": 1000}).max_output_tokens == 10**15


@pytest.mark.parametrize("n", [0, -1, 1.5, 2.0, "2", True])
def test_n_that_is_not_a_whole_number_of_1_or_more_is_refused_naming_n(n):
    """OpenAI's chat completions take n from 1 (n 0: 400 "0 is less than the minimum of 1 - 'n'").
    Was: n 0 was held as 1 choice (`or 1`) and forwarded, for the provider to refuse after the
    hold; now n 0 is refused as a negative or fractional n was, naming n, nothing held. n null
    is OpenAI's default, 1 choice."""
    with pytest.raises(CallError) as raised:
        call(CHAT, {"model": "gpt-4", "messages": HI, "max_tokens": 10, "n": n})
    assert raised.value.field == "n" and raised.value.message == "must be a whole number from 1 to 1000000000000"
    assert call(CHAT, {"model": "gpt-4", "messages": HI, "max_tokens": 10, "n": None}).max_output_tokens == 10


def test_n_choices_of_the_gateways_own_cap_past_a_hold_name_that_cap_not_a_field_the_call_gave():
    """A call that sets no cap is held for the gateway's (TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS, at
    most 10**15): with n 2 that is 2 * 10**15 output tokens. Was: "holds 2 choices of
    max_completion_tokens 1000000000000000", a cap the caller never sent. Now the message names
    the gateway's default, the setting, and the field that would bound it."""
    with pytest.raises(CallError) as raised:
        call(CHAT, {"model": "gpt-4", "messages": HI, "n": 2}, default=10**15)
    message = raised.value.message
    assert raised.value.field == "n"
    assert ("holds 2 choices of the gateway's default output cap 1000000000000000 "
            "(TOKENTILL_GATEWAY_MAX_OUTPUT_TOKENS; the call sets no max_completion_tokens)") in message
    assert "2000000000000000 output tokens, past the 1000000000000000 a hold counts" in message


@pytest.mark.parametrize(("kind", "body", "field"), [
    # 10**12 web searches, each held 10,000 tokens of results (SERVER_TOOL_RESULT_TOKENS): 10**16
    (MESSAGES, {"max_tokens": 10, "messages": HI,
                "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 10**12}]}, "tools"),
    (RESPONSES, {"max_output_tokens": 10, "input": "hi", "max_tool_calls": 10**12, "tools": [{"type": "web_search"}]},
     "max_tool_calls"),
])
def test_tool_results_too_many_to_hold_name_the_field_the_call_gave(kind, body, field):
    """Was: held, and refused by the reserve 422 naming `prompt_tokens`, a field the caller never sent."""
    with pytest.raises(CallError) as raised:
        call(kind, {"model": "gpt-4", **body})
    assert raised.value.field == field and "10000000000000000 input tokens of tool results" in raised.value.message


def test_each_server_tool_is_counted_in_the_hold_at_the_gateways_start_bound():
    """The start takes TOKENTILL_GATEWAY_SERVER_TOOL_MAX_USES x ..._RESULT_TOKENS up to 10**15 less
    the context held for a conversation (400,000): 99,999,999,960 uses of 10,000 tokens,
    999,999,999,600,000. One web search at those defaults is held; two tools (two web searches,
    or a search and a fetch, each sent with them) hold twice that, 1,999,999,999,200,000 tokens of
    results, and are refused naming `tools` before any hold, never held short. The fees count each
    tool too: searches of max_uses 3 and 4 hold 7 fees and 7 x 10,000 tokens of results."""
    uses, tokens = (10**15 - 400_000) // 10_000, 10_000
    search, fetch = {"type": "web_search_20250305", "name": "web_search"}, {"type": "web_fetch_20250910",
                                                                            "name": "web_fetch"}

    def messages(*tools: dict):
        return parse_call(MESSAGES, msgspec.json.encode({"model": "claude-sonnet-4", "max_tokens": 10,
                                                         "messages": HI, "tools": list(tools)}),
                          default_max_output=10, counter=COUNTER, server_tool_max_uses=uses,
                          server_tool_result_tokens=tokens)

    one = messages(search)
    assert one.tool_uses == (("web_search", 99_999_999_960),) and one.prompt_tokens >= 999_999_999_600_000
    for second in ({**search, "name": "web_search_2"}, fetch):
        with pytest.raises(CallError) as raised:
            messages(search, second)
        assert raised.value.field == "tools"
        assert "holds 1999999999200000 input tokens of tool results" in raised.value.message
    both = messages({**search, "max_uses": 3}, {**search, "name": "web_search_2", "max_uses": 4})
    assert both.tool_uses == (("web_search", 7),)
    assert both.prompt_tokens - messages().prompt_tokens >= 7 * tokens


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\ud800\\u0041", b"\\udc00"])
def test_an_unpaired_surrogate_in_a_call_is_named_not_a_truncated_input(escape):
    """msgspec's "Input data was truncated" (a whole body) was the gateway's answer, "not JSON: ..."."""
    body = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi' + escape + b'"}]}'
    with pytest.raises(CallError) as raised:
        parse_call(CHAT, body, default_max_output=10, counter=COUNTER)
    assert (raised.value.field, raised.value.message) == (
        "messages[0].content",
        "invalid JSON string: unpaired surrogate (a \\ud800 to \\udfff escape not in a high-low pair)")


def test_embedding_input_of_another_shape_is_refused():
    with pytest.raises(CallError, match="input"):
        call(EMBEDDINGS, {"model": "e", "input": [{"x": 1}]})


def _png(size: tuple[int, int]) -> str:
    out = io.BytesIO()
    Image.new("RGB", size).save(out, "PNG")
    return base64.b64encode(out.getvalue()).decode()


def _image_tokens(kind: str, model: str, part: dict) -> tuple[int, int]:
    """What one image part adds to a call's prompt: (for the hold, raw)."""
    def body(parts: list) -> dict:
        content = [{"type": "text" if kind != RESPONSES else "input_text", "text": "hi"}, *parts]
        key = "input" if kind == RESPONSES else "messages"
        return {"model": model, "max_tokens": 1, key: [{"role": "user", "content": content}]}
    with_image, without = call(kind, body([part])), call(kind, body([]))
    return (with_image.prompt_tokens - without.prompt_tokens, with_image.prompt_raw_tokens - without.prompt_raw_tokens)


def test_an_inline_image_counts_what_the_models_provider_charges_for_its_size():
    url = "data:image/png;base64," + _png((1024, 1024))
    chat = {"type": "image_url", "image_url": {"url": url, "detail": "high"}}
    assert _image_tokens(CHAT, "gpt-4o-mini", chat) == (2833 + 5667 * 4,) * 2  # 4 tiles at 4o-mini's price
    assert _image_tokens(CHAT, "gpt-4o", chat) == (85 + 170 * 4,) * 2
    low = {"type": "image_url", "image_url": {"url": url, "detail": "low"}}
    assert _image_tokens(CHAT, "gpt-4o", low) == (85, 85)
    responses = {"type": "input_image", "image_url": url, "detail": "auto"}
    assert _image_tokens(RESPONSES, "gpt-4.1-mini", responses) == (1659, 1659)  # 1,024 patches x 1.62
    anthropic = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png((200, 200))}}
    # 8 x 8 patches of 28 pixels (200 x 200 / 750 = 54, the older formula: the larger)
    assert _image_tokens(MESSAGES, "claude-sonnet-4-5", anthropic) == (64, 64)


def test_an_image_by_url_or_file_counts_the_most_its_model_can_charge():
    remote = {"type": "input_image", "image_url": "https://example.com/cat.png"}
    assert _image_tokens(RESPONSES, "gpt-4.1", remote) == (85 + 170 * 8,) * 2  # 768 x 2048: 8 tiles
    by_file = {"type": "input_image", "file_id": "file-1", "detail": "low"}
    assert _image_tokens(RESPONSES, "gpt-4.1", by_file) == (85, 85)
    anthropic = {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}}
    assert _image_tokens(MESSAGES, "claude-opus-4-1", anthropic) == (1600, 1600)
    assert _image_tokens(MESSAGES, "claude-opus-4-7", anthropic) == (4784, 4784)  # its larger images
    broken = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert _image_tokens(CHAT, "gpt-4o-mini", broken) == (2833 + 5667 * 8,) * 2


def test_images_for_models_without_a_rule_and_audio_without_data_keep_the_flat_allowance():
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _png((4000, 4000))}}
    assert _image_tokens(CHAT, "llama-3-70b", image) == (NON_TEXT_PART_TOKENS,) * 2
    no_data = {"type": "input_audio", "input_audio": {"format": "wav"}}  # refused upstream: nothing charged
    assert _image_tokens(CHAT, "gpt-4o-audio-preview", no_data) == (NON_TEXT_PART_TOKENS,) * 2


def _wav(seconds: int, rate: int = 16_000) -> str:
    out = io.BytesIO()
    with wave.open(out, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(rate)
        clip.writeframes(bytes(2 * rate * seconds))
    return base64.b64encode(out.getvalue()).decode()


def test_an_audio_clip_counts_ten_tokens_a_second_of_it():
    clip = {"type": "input_audio", "input_audio": {"data": _wav(300), "format": "wav"}}  # 5 minutes
    assert _image_tokens(CHAT, "gpt-4o-audio-preview", clip) == (3000, 3000)  # was 2,500
    mp3 = {"type": "input_audio", "input_audio": {"data": base64.b64encode(bytes(48_000)).decode(), "format": "mp3"}}
    assert _image_tokens(CHAT, "gpt-4o-audio-preview", mp3) == (480, 480)  # 48 s at most, at 8 kbit/s


def _pdf(pages: int) -> str:
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for n in range(pages):
        pdf.add_page()
        pdf.cell(text=f"page {n + 1}")
    return base64.b64encode(bytes(pdf.output())).decode()


def test_a_pdf_counts_each_pages_text_and_image_in_each_providers_shape():
    pdf = _pdf(40)
    chat = {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64," + pdf}}
    assert _image_tokens(CHAT, "gpt-4o", chat) == (40 * (3000 + 1445),) * 2  # was 2,500
    responses = {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64," + pdf}
    assert _image_tokens(RESPONSES, "gpt-4.1", responses) == (40 * (3000 + 85 + 170 * 8),) * 2
    document = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}}
    assert _image_tokens(MESSAGES, "claude-sonnet-4-5", document) == (40 * (3000 + 1600),) * 2
    bare = {"type": "file", "file": {"file_data": pdf}}  # base64 without its data: prefix
    assert _image_tokens(CHAT, "gpt-4o", bare) == (40 * (3000 + 1445),) * 2
    unknown_model = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                                    "data": _pdf(2)}}
    assert _image_tokens(MESSAGES, "llama-3-70b", unknown_model) == (2 * (3000 + NON_TEXT_PART_TOKENS),) * 2


def test_a_file_by_url_or_id_or_unreadable_counts_the_most_pages_a_request_takes():
    most = 100 * (3000 + 1600)
    for source in ({"type": "url", "url": "https://example.com/a.pdf"}, {"type": "file", "file_id": "file_1"},
                   {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0xLjQK"}):  # "%PDF-1.4"
        assert _image_tokens(MESSAGES, "claude-opus-4-1", {"type": "document", "source": source}) == (most, most)
    for part in ({"type": "file", "file": {"file_id": "file-1"}},
                 {"type": "input_file", "file_url": "https://example.com/a.pdf"},
                 {"type": "input_file", "file_data": "data:application/vnd.ms-excel;base64,0M8R4KGxGuE="}):
        kind = CHAT if part["type"] == "file" else RESPONSES
        assert _image_tokens(kind, "gpt-4o", part) == (100 * (3000 + 1445),) * 2


def test_a_text_document_counts_its_text():
    text = "alpha beta gamma " * 50  # cl100k_base: 3 tokens a repeat, the last space apart
    exact = len(TokenCounter().encoding_for("gpt-4")[0].encode_ordinary(text))
    document = {"type": "document", "title": "notes", "source": {"type": "text", "media_type": "text/plain",
                                                                 "data": text}}
    # the text and its title ("notes", 1 token), counted with cl100k_base plus 10 % for a Claude model
    assert exact == 150 + 1
    # (held: the call's other 3 text tokens share the margin's rounding: 155 + 16 - (3 + 1))
    assert _image_tokens(MESSAGES, "claude-sonnet-4-5", document) == (167, 152)  # was 2,500
    inline = {"type": "input_file", "filename": "notes.txt",
              "file_data": "data:text/plain;base64," + base64.b64encode(text.encode()).decode()}
    assert _image_tokens(RESPONSES, "gpt-4", inline) == (exact, exact)


TOOL = {"name": "get_weather", "description": "The weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
TOOL_STRINGS = ["get_weather", "The weather in a city", "object", "string"]


def _tool_call(model: str, **extra):
    return call(MESSAGES, {"model": model, "max_tokens": 10, "messages": HI, "tools": [TOOL], **extra})


@pytest.mark.parametrize(("model", "choice", "system_prompt"), [
    # Anthropic's table "Tool use system prompt token count" (platform.claude.com/docs/en/agents-and-tools/
    # tool-use/overview, section Pricing): auto or none | any or tool
    ("claude-sonnet-4-5-20250929", None, 496), ("claude-sonnet-4-5-20250929", {"type": "none"}, 496),
    ("claude-sonnet-4-5-20250929", {"type": "any"}, 588),
    ("claude-sonnet-4-5-20250929", {"type": "tool", "name": "get_weather"}, 588),
    ("claude-opus-4-7", {"type": "auto"}, 675), ("claude-opus-4-7", {"type": "any"}, 804),
    ("claude-3-haiku-20240307", None, 264), ("claude-3-haiku-20240307", {"type": "any"}, 340),
    ("claude-3-opus-20240229", None, 530), ("claude-3-opus-20240229", {"type": "tool", "name": "x"}, 281),
    ("claude-some-future-model", None, 804),  # a model the table does not list: the table's most
])
def test_anthropic_tools_add_the_tool_use_system_prompt_anthropic_documents(model, choice, system_prompt):
    without = call(MESSAGES, {"model": model, "max_tokens": 10, "messages": HI})
    with_tools = _tool_call(model, **({"tool_choice": choice} if choice else {}))
    encoding, _ = COUNTER.encoding_for(model)
    definitions = sum(len(encoding.encode_ordinary(s)) for s in TOOL_STRINGS)
    assert with_tools.prompt_raw_tokens - without.prompt_raw_tokens == definitions + system_prompt


def test_anthropic_without_tools_adds_no_tool_use_system_prompt():
    without = call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": HI})
    empty = call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": HI, "tools": [],
                            "tool_choice": {"type": "none"}})
    assert empty.prompt_raw_tokens == without.prompt_raw_tokens


def test_an_earlier_answers_audio_referred_to_by_id_is_held_at_the_most_audio_an_answer_has():
    plain = {"role": "assistant", "content": "hello"}
    said = {"role": "assistant", "content": None, "audio": {"id": "audio_abc123"}}
    base = call(CHAT, {"model": "gpt-4o-audio-preview", "max_tokens": 10, "messages": [*HI, plain]})
    again = call(CHAT, {"model": "gpt-4o-audio-preview", "max_tokens": 10, "messages": [*HI, said]})
    # held: gpt-4o-audio-preview's most output tokens (16,384), as audio input
    assert again.prompt_tokens >= 16_384
    assert again.hold_audio_tokens == 16_384
    # settled without the provider's usage (a cut stream): the body's own count, not the bound
    assert again.prompt_raw_tokens <= base.prompt_raw_tokens
    assert again.prompt_audio_tokens == 0


@pytest.mark.parametrize(("kind", "extra", "prior"), [
    (RESPONSES, {"previous_response_id": "resp_abc"}, True),
    (RESPONSES, {"conversation": "conv_abc"}, True),
    (RESPONSES, {"conversation": {"id": "conv_abc"}}, True),
    (RESPONSES, {}, False),
    (CHAT, {"previous_response_id": "resp_abc"}, False),  # no such field: the body is the whole prompt
    # an earlier item referred to by id, billed as input (was: the body's id only)
    (RESPONSES, {"input": ["hi", {"type": "item_reference", "id": "msg_abc"}]}, True),
    (RESPONSES, {"input": [{"type": "message", "role": "user", "content": "hi"}, {"id": "msg_abc"}]}, True),
    # a stored prompt template, billed as input (was: its id and variables only)
    (RESPONSES, {"prompt": {"id": "pmpt_abc", "variables": {"city": "Paris"}}}, True),
    (RESPONSES, {"input": [{"type": "message", "role": "user", "content": "hi", "id": "msg_abc"}]}, False),
])
def test_a_responses_call_that_continues_a_conversation_is_marked_for_its_earlier_turns(kind, extra, prior):
    prompt = {"input": "hi"} if kind == RESPONSES else {"messages": HI}
    c = call(kind, {"model": "gpt-4o", "max_output_tokens": 10, **prompt, **extra})
    if kind == RESPONSES and "input" in extra:
        assert c.prompt_raw_tokens > 0
    assert c.prior_context is prior


@pytest.mark.parametrize(("tool", "added"), [
    # Anthropic's client tools, defined by Anthropic (its tool pages, section Pricing): the input
    # tokens each adds; computer use also adds 466-499 tokens of system prompt (the most is held)
    ({"type": "bash_20250124", "name": "bash"}, 245),
    ({"type": "bash_20241022", "name": "bash"}, 245),
    ({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}, 700),
    ({"type": "text_editor_20250124", "name": "str_replace_editor"}, 700),
    ({"type": "computer_20250124", "name": "computer", "display_width_px": 1024, "display_height_px": 768}, 735 + 499),
])
def test_anthropic_built_in_tools_add_the_input_tokens_anthropic_documents(tool, added):
    model = "claude-sonnet-4-5-20250929"
    without = call(MESSAGES, {"model": model, "max_tokens": 10, "messages": HI})
    with_tool = call(MESSAGES, {"model": model, "max_tokens": 10, "messages": HI, "tools": [tool]})
    # 496: the tool-use system prompt of this model (tool_choice auto)
    assert with_tool.prompt_raw_tokens - without.prompt_raw_tokens == 496 + added
    assert with_tool.prompt_tokens - without.prompt_tokens == 496 + added


def _server_tools(*tools, **settings):
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": HI, "tools": list(tools)}
    return parse_call(MESSAGES, msgspec.json.encode(body), default_max_output=1000, counter=COUNTER, **settings)


def test_web_search_is_held_for_its_max_uses_searches_and_their_results():
    bare = _server_tools()
    c = _server_tools({"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
                      server_tool_result_tokens=2000)
    assert c.tool_uses == (("web_search", 3),)
    # the results of each search are input: held (2,000 a search), not counted as the body's own
    assert c.prompt_tokens - c.prompt_raw_tokens - (bare.prompt_tokens - bare.prompt_raw_tokens) == 3 * 2000
    assert msgspec.json.decode(c.body)["tools"][0]["max_uses"] == 3


def test_web_search_without_max_uses_is_sent_and_held_with_the_default():
    c = _server_tools({"type": "web_search_20250305", "name": "web_search"}, server_tool_max_uses=4)
    assert c.tool_uses == (("web_search", 4),)
    assert msgspec.json.decode(c.body)["tools"] == [{"type": "web_search_20250305", "name": "web_search",
                                                     "max_uses": 4}]


def test_web_fetch_is_held_for_its_content_cap_and_sent_with_one():
    given = _server_tools({"type": "web_fetch_20250910", "name": "web_fetch", "max_uses": 2,
                           "max_content_tokens": 5000}, server_tool_result_tokens=100)
    bare = _server_tools()
    assert given.tool_uses == ()  # no per-fetch fee: its content is input
    assert given.prompt_tokens - given.prompt_raw_tokens - (bare.prompt_tokens - bare.prompt_raw_tokens) == 2 * 5000
    capped = _server_tools({"type": "web_fetch_20250910", "name": "web_fetch"}, server_tool_max_uses=3,
                           server_tool_result_tokens=700)
    assert msgspec.json.decode(capped.body)["tools"][0] | {} == {"type": "web_fetch_20250910", "name": "web_fetch",
                                                                 "max_uses": 3, "max_content_tokens": 700}
    assert capped.prompt_tokens - capped.prompt_raw_tokens - (bare.prompt_tokens - bare.prompt_raw_tokens) == 3 * 700


@pytest.mark.parametrize("tool", [{"type": "web_search_20250305", "name": "web_search", "max_uses": 0},
                                  {"type": "web_search_20250305", "name": "web_search", "max_uses": "5"},
                                  {"type": "web_fetch_20250910", "name": "web_fetch", "max_content_tokens": -1}])
def test_a_server_tools_bad_bound_is_refused(tool):
    with pytest.raises(CallError):
        _server_tools(tool)


def _responses_tools(*tools, result_tokens=2000, **fields):
    body = {"model": "gpt-4.1", "input": "hi", "max_output_tokens": 10, "tools": list(tools), **fields}
    return parse_call(RESPONSES, msgspec.json.encode(body), default_max_output=1000, counter=COUNTER,
                      server_tool_max_uses=4, server_tool_result_tokens=result_tokens)


@pytest.mark.parametrize("tool", ["web_search", "web_search_preview", "web_search_2025_08_26",
                                  "web_search_preview_2025_03_11"])
def test_an_openai_web_search_is_held_for_max_tool_calls_searches_and_their_results(tool):
    function = {"type": "function", "name": "f", "parameters": {}}
    bare = _responses_tools(function, max_tool_calls=3)
    c = _responses_tools(function, {"type": tool}, max_tool_calls=3)
    assert bare.tool_uses == () and c.tool_uses == (("web_search", 3),)
    less = _responses_tools(function, {"type": tool}, max_tool_calls=3, result_tokens=500)
    # the results of each search are input: held (2,000 a search, then 500), not counted as the body's own
    assert c.prompt_tokens - less.prompt_tokens == 3 * (2000 - 500)
    assert c.prompt_tokens - bare.prompt_tokens >= 3 * 2000 and c.prompt_raw_tokens < bare.prompt_raw_tokens + 20
    assert msgspec.json.decode(c.body)["max_tool_calls"] == 3


def test_an_openai_web_search_without_max_tool_calls_is_sent_and_held_with_the_default():
    c = _responses_tools({"type": "web_search"})
    assert c.tool_uses == (("web_search", 4),)
    assert msgspec.json.decode(c.body)["max_tool_calls"] == 4
    function = _responses_tools({"type": "function", "name": "f", "parameters": {}})
    assert function.tool_uses == () and "max_tool_calls" not in msgspec.json.decode(function.body)


def test_openai_web_and_file_search_are_each_held_for_max_tool_calls_with_one_results_allowance():
    both = _responses_tools({"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search"},
                            max_tool_calls=2)
    less = _responses_tools({"type": "file_search", "vector_store_ids": ["vs_1"]}, {"type": "web_search"},
                            max_tool_calls=2, result_tokens=500)
    assert both.tool_uses == (("file_search", 2), ("web_search", 2))
    assert both.prompt_tokens - less.prompt_tokens == 2 * (2000 - 500)  # at most 2 calls in all return results


def test_max_tool_calls_0_holds_no_search_and_a_plain_stored_prompt_has_a_call_with_no_tools():
    """OpenAI runs no built-in tool under `max_tool_calls: 0` (it was refused as not 1 or more)."""
    assert _responses_tools({"type": "web_search"}, max_tool_calls=0).tool_uses == ()
    plain = _responses_tools(prompt={"id": "pmpt_1"})
    assert plain.tool_uses == (("code_execution", 1), ("file_search", 4), ("web_search", 4))
    assert plain.container_units == 1
    untooled = plain.untooled
    assert untooled is not None and untooled.tool_uses == () and untooled.container_units == 0
    assert msgspec.json.decode(untooled.body)["max_tool_calls"] == 0
    assert plain.prompt_tokens - untooled.prompt_tokens == 4 * 2000  # no search results held
    # the caller's own cap, or a built-in tool in the body: no such call (refused when unpriced)
    assert _responses_tools(prompt={"id": "pmpt_1"}, max_tool_calls=2).untooled is None
    assert _responses_tools({"type": "web_search"}, prompt={"id": "pmpt_1"}).untooled is None
    assert _responses_tools(prompt={"id": "pmpt_1"}, max_tool_calls=0).tool_uses == ()


@pytest.mark.parametrize("bound", [-1, "3", True, 2.5])
def test_an_openai_web_searchs_bad_max_tool_calls_is_refused(bound):
    with pytest.raises(CallError) as raised:
        _responses_tools({"type": "web_search"}, max_tool_calls=bound)
    assert raised.value.field == "max_tool_calls"


def test_a_chat_call_to_a_search_model_is_held_for_its_search_and_its_results():
    body = {"model": "gpt-4o-search-preview", "messages": HI, "max_tokens": 10}
    plain = call(CHAT, {**body, "model": "gpt-4o"})
    searched = parse_call(CHAT, msgspec.json.encode({**body, "web_search_options": {}}), default_max_output=1000,
                          counter=COUNTER, server_tool_result_tokens=2000)
    assert plain.tool_uses == () and searched.tool_uses == (("web_search", 1),)
    assert searched.prompt_tokens - plain.prompt_tokens >= 2000


CODE = {"type": "code_execution_20250825", "name": "code_execution"}


@pytest.mark.parametrize("tools, units", [
    ([CODE], 1), ([{**CODE, "type": "code_execution_20250522"}], 1),
    ([CODE, {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}], 1),
    # Anthropic does not bill code execution beside its dynamic web search or fetch (20260209 on)
    ([CODE, {"type": "web_search_20260209", "name": "web_search", "max_uses": 1}], 0),
    ([CODE, {"type": "web_fetch_20260318", "name": "web_fetch", "max_uses": 1}], 0),
    ([{"type": "web_search_20260209", "name": "web_search", "max_uses": 1}], 0)])
def test_anthropic_code_execution_is_held_for_one_container(tools, units):
    c = _server_tools(*tools)
    assert dict(c.tool_uses).get("code_execution", 0) == units and c.container_units == units
    assert msgspec.json.decode(c.body)["tools"][0] == tools[0]  # sent as given: it has no max_uses


@pytest.mark.parametrize("tool, units", [
    ({"type": "code_interpreter", "container": {"type": "auto"}}, 1),
    ({"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "16g"}}, 16),
    ({"type": "shell", "environment": {"type": "container_auto", "memory_limit": "64g"}}, 64),
    ({"type": "shell", "environment": {"type": "local"}}, 0), ({"type": "shell"}, 0)])
def test_an_openai_container_is_held_at_its_memorys_units_and_its_runs_results(tool, units):
    c = _responses_tools(tool, max_tool_calls=3)
    bare = _responses_tools(max_tool_calls=3)
    assert dict(c.tool_uses).get("code_execution", 0) == units and c.container_units == units
    if units:  # each run's output is input: held for max_tool_calls runs
        assert c.prompt_tokens - bare.prompt_tokens >= 3 * 2000


def test_openai_containers_are_held_each_and_charged_at_the_largest():
    c = _responses_tools({"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}},
                         {"type": "shell", "environment": {"type": "container_auto"}}, {"type": "web_search"})
    assert c.tool_uses == (("code_execution", 5), ("web_search", 4)) and c.container_units == 4
    assert msgspec.json.decode(c.body)["max_tool_calls"] == 4


def test_an_openai_containers_unknown_memory_limit_is_refused():
    with pytest.raises(CallError) as raised:
        _responses_tools({"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "2g"}})
    assert raised.value.field == "tools.container.memory_limit"


def test_an_openai_mcp_server_is_held_for_its_listing_and_max_tool_calls_results():
    mcp = {"type": "mcp", "server_label": "docs", "server_url": "https://mcp.example.com/mcp"}
    bare = _responses_tools(max_tool_calls=3)
    one, two = _responses_tools(mcp, max_tool_calls=3), _responses_tools(mcp, {**mcp, "server_label": "b"},
                                                                          max_tool_calls=3)
    assert one.tool_uses == () and one.prompt_tokens - bare.prompt_tokens >= (1 + 3) * 2000
    assert two.prompt_tokens - one.prompt_tokens >= 2000  # a listing each
    assert msgspec.json.decode(_responses_tools(mcp).body)["max_tool_calls"] == 4


def test_an_openai_image_generation_tool_is_refused_as_unmetered():
    with pytest.raises(UnmeteredToolError) as raised:
        _responses_tools({"type": "web_search"}, {"type": "image_generation"})
    assert raised.value.field == "tools: image_generation"


def test_a_chat_calls_prediction_is_held_as_output_beyond_its_cap():
    body = {"model": "gpt-4", "messages": HI, "max_tokens": 50, "n": 1}
    assert call(CHAT, body).max_output_tokens == 50
    # "hello world" is 2 cl100k_base tokens, each part counted; a part's "type" is not text
    given = {"type": "content", "content": [{"type": "text", "text": "hello world"}, {"type": "text", "text": "hi"}]}
    assert call(CHAT, {**body, "prediction": given}).max_output_tokens == 50 + 3
    assert call(CHAT, {**body, "prediction": {"type": "content", "content": "hello world"}}).max_output_tokens == 52
    unknown = call(CHAT, {**body, "model": "my-model", "prediction": {"type": "content", "content": "hello world"}})
    assert unknown.max_output_tokens == 50 + 3  # 2 tokens + 10 %, rounded up


def test_the_fields_that_choose_the_providers_prices_are_the_calls_dimensions():
    chat = {"model": "gpt-4", "messages": HI, "max_tokens": 5}
    assert call(CHAT, {**chat, "service_tier": "priority"}).dimensions == (("service_tier", "priority"),)
    assert call(CHAT, {**chat, "service_tier": "auto"}).dimensions == ()  # the project's: the answer tells
    # auto, or none (OpenAI's default is auto; Anthropic's too, priority capacity first): the tier is
    # the provider's choice, held at the dearest the book prices; a tier the call fixes is not
    for auto in ({"service_tier": "auto"}, {}):
        assert call(CHAT, {**chat, **auto}).chosen_by_provider == ("service_tier",)
        assert call(RESPONSES, {"model": "gpt-4", "input": "hi", **auto}).chosen_by_provider == ("service_tier",)
        # and an Anthropic call that names no inference_geo runs where its workspace defaults
        assert call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, **auto}
                    ).chosen_by_provider == ("service_tier", "inference_geo")
    assert call(CHAT, {**chat, "service_tier": "priority"}).chosen_by_provider == ()
    assert call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI,
                           "service_tier": "standard_only"}).chosen_by_provider == ("inference_geo",)
    assert call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, "inference_geo": "global",
                           "service_tier": "standard_only"}).chosen_by_provider == ()
    assert call(EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hi"}).chosen_by_provider == ()
    assert call(RESPONSES, {"model": "gpt-4", "input": "hi", "service_tier": "flex"}).dimensions == (
        ("service_tier", "flex"),)
    messages = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, "speed": "fast", "inference_geo": "us"}
    assert call(MESSAGES, messages).dimensions == (("speed", "fast"), ("inference_geo", "us"))
    with pytest.raises(CallError) as raised:
        call(MESSAGES, {**messages, "speed": 2})
    assert raised.value.field == "speed"


@pytest.mark.parametrize("body, written", [
    ({}, None),
    ({"cache_control": {"type": "ephemeral"}}, "cache_write"),  # automatic caching
    ({"system": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "5m"}}]}, "cache_write"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x", "cache_control": {
        "type": "ephemeral", "ttl": "1h"}}]}], "tools": [{"name": "f", "input_schema": {},
                                                          "cache_control": {"type": "ephemeral"}}]}, "cache_write_1h")])
def test_an_anthropic_call_that_marks_its_prompt_for_caching_names_the_write(body, written):
    anthropic = call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, **body})
    assert anthropic.cache_write == written


def test_an_openai_prompt_may_always_be_written_to_the_cache():
    """OpenAI caches prompts itself (no cache_control), and its usage may report cache writes
    (`cache_write_tokens`), billed at the book's cache_write price: every chat and responses
    prompt is held at the dearer of it and input (was: at input); embeddings are not cached."""
    assert call(CHAT, {"model": "gpt-4", "messages": HI}).cache_write == "cache_write"
    assert call(RESPONSES, {"model": "gpt-4", "input": "hi"}).cache_write == "cache_write"
    assert call(EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hi"}).cache_write is None


@pytest.mark.parametrize("body, field", [
    ({"tools": [{"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-7"}]},
     "tools: advisor_20260301"),
    ({"fallbacks": [{"model": "claude-sonnet-4-6"}]}, "fallbacks")])
def test_an_anthropic_call_another_model_may_serve_is_refused_as_unmetered(body, field):
    with pytest.raises(UnmeteredToolError) as raised:
        call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, **body})
    assert raised.value.field == field


def test_anthropic_mcp_servers_are_held_for_their_tool_listings():
    bare = _server_tools(server_tool_result_tokens=700)
    body = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": HI, "tools": [],
            "mcp_servers": [{"type": "url", "url": "https://a.example/sse", "name": "a"},
                            {"type": "url", "url": "https://b.example/sse", "name": "b"}]}
    listed = parse_call(MESSAGES, msgspec.json.encode(body), default_max_output=1000, counter=COUNTER,
                        server_tool_result_tokens=700)
    assert listed.prompt_tokens - bare.prompt_tokens == 2 * 700 and listed.prompt_raw_tokens == bare.prompt_raw_tokens


@pytest.mark.parametrize("kind, raw, field", [
    # tokentill would read the last max_tokens (10), an upstream may read the first (100000)
    (CHAT, b'{"model": "gpt-4", "messages": [], "max_tokens": 100000, "max_tokens": 10}', "max_tokens"),
    (MESSAGES, b'{"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", '
               b'"content": "a", "content": "b"}]}', "messages[0].content"),
    (RESPONSES, b'{"model": "gpt-4", "input": "hi", "tools": [{"type": "web_search", "type": "function"}]}',
     "tools[0].type")])
def test_a_body_with_a_key_given_twice_is_refused_naming_it(kind, raw, field):
    with pytest.raises(CallError) as raised:
        parse_call(kind, raw, default_max_output=1000, counter=COUNTER)
    assert raised.value.field == field and "more than once" in raised.value.message


def test_a_colon_inside_a_string_or_escaped_is_not_a_repeated_key():
    raw = b'{"model": "gpt-4", "messages": [{"role": "user", "content": "a:b \\u003a c"}], "max_tokens": 7}'
    assert parse_call(CHAT, raw, default_max_output=1000, counter=COUNTER).body == raw


@pytest.mark.parametrize("tool", [{"type": "code_interpreter", "container": "cntr_abc"},
                                  {"type": "shell", "environment": {"type": "container_reference",
                                                                    "container_id": "cntr_abc"}}])
def test_an_openai_container_made_earlier_is_not_held_again_but_its_runs_results_are(tool):
    """OpenAI bills a container when it is made: one given by id was billed then (was: held and
    charged 1 unit again on every call that reused it)."""
    c = _responses_tools(tool, max_tool_calls=3)
    bare = _responses_tools(max_tool_calls=3)
    assert dict(c.tool_uses).get("code_execution", 0) == 0 and c.container_units == 0
    assert c.reused_containers == ("cntr_abc",)
    assert c.prompt_tokens - bare.prompt_tokens >= 3 * 2000
    mixed = _responses_tools(tool, {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}})
    assert dict(mixed.tool_uses)["code_execution"] == 4 and mixed.container_units == 4
    assert mixed.reused_containers == ("cntr_abc",)


def test_a_chat_call_that_gives_both_output_caps_is_held_for_the_larger():
    """`max_tokens` (deprecated) and `max_completion_tokens` both given: which one the upstream
    obeys is its choice, so the hold counts the larger (was: the smaller, 10 here, while the
    upstream may generate 1,000)."""
    for caps in ({"max_tokens": 10, "max_completion_tokens": 1000}, {"max_tokens": 1000, "max_completion_tokens": 10}):
        assert call(CHAT, {"model": "gpt-4", "messages": HI, **caps}).max_output_tokens == 1000


def test_a_tools_schema_is_held_for_its_keys_too_not_only_its_values():
    """OpenAI renders a function's parameters with their names (`location: string`), and Anthropic
    its input_schema as JSON: both bill the keys of a tool's definition, which the count of its
    string values alone left out (was: a schema of many properties held short). The hold counts
    each key of a tool's schema; a settle without usage keeps the count of the values (no key bills twice)."""
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather at a place",
        "parameters": {"type": "object", "properties": {
            "location": {"type": "string"}, "temperature_unit": {"type": "string", "enum": ["c", "f"]}},
            "required": ["location"]}}}
    keys = ["type", "properties", "location", "type", "temperature_unit", "type", "enum", "required"]  # its schema's
    encoding, exact = COUNTER.encoding_for("gpt-4")  # cl100k_base, offline: gpt-4's own, no margin
    assert exact
    c = call(CHAT, {"model": "gpt-4", "messages": HI, "max_tokens": 5, "tools": [tool]})
    bare = call(CHAT, {"model": "gpt-4", "messages": HI, "max_tokens": 5})
    assert c.prompt_tokens - c.prompt_raw_tokens >= sum(len(encoding.encode(k)) for k in keys)
    assert c.prompt_raw_tokens > bare.prompt_raw_tokens  # its values, as before

    def anthropic(prop):
        return call(MESSAGES, {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI, "tools": [
            {"name": "get_weather", "input_schema": {"type": "object", "properties": {prop: {"type": "string"}}}}]})

    short, long = anthropic("where"), anthropic("the_place_whose_weather_is_asked_for_in_full_detail")
    assert long.prompt_tokens > short.prompt_tokens and long.prompt_raw_tokens == short.prompt_raw_tokens


@pytest.mark.parametrize(("tool", "dimensions"), [
    ("web_search", ()), ("web_search_2025_08_26", ()),
    ("web_search_preview", (("web_search_tool", "web_search_preview"),)),
    ("web_search_preview_2025_03_11", (("web_search_tool", "web_search_preview"),))])
def test_a_preview_web_search_is_a_dimension_of_the_call(tool, dimensions):
    """OpenAI bills a web_search_preview search apart from a web_search one: the book prices it by
    the dimension (pricing.premium requires a rule matching it)."""
    assert _responses_tools({"type": tool}).dimensions == dimensions


@pytest.mark.parametrize(("kind", "body", "hidden"), [
    (CHAT, {"model": "o3-mini"}, True), (CHAT, {"model": "gpt-5.1-2025-11-13"}, True),
    (CHAT, {"model": "ft:o4-mini-2025-04-16:acme::x1"}, True),
    (CHAT, {"model": "gpt-5-chat-latest"}, False), (CHAT, {"model": "gpt-4o"}, False),
    (CHAT, {"model": "gpt-5.1", "reasoning_effort": "none"}, False),
    (CHAT, {"model": "my-reasoner", "reasoning_effort": "low"}, True),
    (RESPONSES, {"model": "my-reasoner", "reasoning": {"effort": "high"}}, True),
    (RESPONSES, {"model": "gpt-5.2", "reasoning": {"effort": "none"}}, False),
    (MESSAGES, {"model": "claude-opus-4-5", "thinking": {"type": "enabled", "budget_tokens": 1024}}, True),
    (MESSAGES, {"model": "claude-opus-4-6", "thinking": {"type": "adaptive"}}, True),
    (MESSAGES, {"model": "claude-opus-4-5", "thinking": {"type": "disabled"}}, False),
    (EMBEDDINGS, {"model": "o3-embed", "input": "hi"}, False)])
def test_a_call_whose_thinking_is_billed_but_not_streamed_is_marked_hidden_output(kind, body, hidden):
    """A cut stream of such a call is charged its output cap (api.gateway.streams): only its
    usage counts what it thought."""
    prompt = {CHAT: {"messages": HI}, RESPONSES: {"input": "hi"}, MESSAGES: {"messages": HI, "max_tokens": 10},
              EMBEDDINGS: {}}[kind]
    assert call(kind, {**prompt, **body}).hidden_output is hidden


def test_a_computer_use_screenshot_counts_as_the_image_it_is_not_as_its_base64_text():
    """A responses input's computer_call_output carries its screenshot as `{"type":
    "computer_screenshot", "image_url": "data:..."}`, billed as an image: its base64 was counted as
    text (a screen of noise here: 1,006,137 tokens, held, and charged to a stream cut before the
    usage), where OpenAI bills its 4 tiles."""
    out = io.BytesIO()
    Image.effect_noise((1024, 1024), 64).save(out, "PNG")
    url = "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()
    output = {"type": "computer_call_output", "call_id": "call_1",
              "output": {"type": "computer_screenshot", "image_url": url}}
    body = {"model": "computer-use-preview", "max_output_tokens": 1, "input": [output]}
    bare = {**body, "input": [{**output, "output": {}}]}
    with_image, without = call(RESPONSES, body), call(RESPONSES, bare)
    assert with_image.prompt_raw_tokens - without.prompt_raw_tokens == 65 + 129 * 4  # its 4 tiles


@pytest.mark.parametrize("field", ["output_format", "output_config"])
def test_an_anthropic_output_schema_is_held_as_a_response_format_is(field):
    """Anthropic's structured outputs (`output_format`, the structured-outputs beta's; `output_config`'s
    `format`) give the model a JSON schema, as OpenAI's response_format does, which is counted:
    its words and keys were held as nothing (was: the same hold with or without a schema)."""
    schema = {"type": "object", "properties": {"the_customers_full_postal_address": {
        "type": "string", "description": "Where the parcel goes, " + "street by street, " * 50}}}
    given = {"type": "json_schema", "schema": schema}
    body = {"model": "claude-sonnet-4-5", "max_tokens": 5, "messages": HI}
    with_schema = call(MESSAGES, {**body, field: given if field == "output_format" else {"format": given}})
    bare = call(MESSAGES, body)
    assert with_schema.prompt_raw_tokens - bare.prompt_raw_tokens > 200  # the description's 250 words
    assert with_schema.prompt_tokens - with_schema.prompt_raw_tokens > bare.prompt_tokens - bare.prompt_raw_tokens


def test_a_chat_call_with_a_predicted_output_is_marked_hidden_output():
    """OpenAI bills the prediction's rejected tokens as output, and never sends them."""
    body = {"model": "gpt-4o", "messages": HI, "prediction": {"type": "content", "content": "x = 1"}}
    assert call(CHAT, body).hidden_output and not call(CHAT, {**body, "prediction": None}).hidden_output


@pytest.mark.parametrize("model", ["gpt-4o-search-preview", "gpt-4o-mini-search-preview-2025-03-11",
                                   "gpt-5-search-api"])
def test_a_chat_call_to_a_search_model_is_held_for_its_search_without_web_search_options(model):
    """OpenAI's search models search before every answer, with or without `web_search_options`:
    held and charged one search either way (was: none without the options)."""
    assert call(CHAT, {"model": model, "messages": HI}).tool_uses == (("web_search", 1),)
    assert call(CHAT, {"model": "gpt-4o", "messages": HI}).tool_uses == ()


@pytest.mark.parametrize("kind", [CHAT, RESPONSES, MESSAGES, EMBEDDINGS])
def test_a_call_nested_deeper_than_128_is_refused_naming_the_body_not_a_recursion_error(kind):
    """A body about 1,000 arrays deep (msgspec gives up near 995 levels, in RecursionError) ended
    the call in a 500. Counted before it is decoded: the body object is 1 level and its "x" holds n
    lists one in another, n + 1 levels; n = 127 is 128 levels, taken, n = 128 is 129, refused
    naming the body, as n = 999 (1,000 levels) is."""
    def nested(n: int) -> bytes:
        return b'{"model": "m", "input": "hi", "messages": [], "x": ' + b"[" * n + b"]" * n + b"}"
    parse_call(kind, nested(127), default_max_output=10, counter=COUNTER)
    for n in (128, 999):
        with pytest.raises(CallError) as raised:
            parse_call(kind, nested(n), default_max_output=10, counter=COUNTER)
        assert (raised.value.field, raised.value.message) == ("body", "JSON nested deeper than 128 arrays and objects")
