import copy

import pytest
from pricing_testkit import AT, load_fixture

from pricing.errors import InvalidUsageError
from pricing.normalize import (
    NormalizedUsage,
    normalize_anthropic,
    normalize_canonical,
    normalize_gemini,
    normalize_openai,
    normalize_openai_chat,
    normalize_openai_responses,
)
from pricing.rating import Usage, rate
from pricing.reference import load_reference_book


def canonical(n: NormalizedUsage) -> tuple[int, int, int, int, int]:
    return (n.input_tokens, n.cached_input_tokens, n.cache_write_tokens, n.output_tokens, n.reasoning_tokens)


@pytest.mark.parametrize(
    ("fixture", "expected", "source"),
    [
        ("openai_chat_gpt41_basic.json", (19, 0, 0, 10, 0), "openai_chat"),
        # 2006 prompt tokens of which 1920 cached: 86 fresh + 1920 cached
        ("openai_chat_gpt4o_cached.json", (86, 1920, 0, 300, 0), "openai_chat"),
        # 2210 completion tokens include 1536 reasoning: 674 visible output
        ("openai_chat_o3mini_reasoning.json", (179, 1664, 0, 674, 1536), "openai_chat"),
        ("openai_chat_legacy_no_details.json", (53, 0, 0, 17, 0), "openai_chat"),
        ("openai_responses_gpt41_basic.json", (36, 0, 0, 87, 0), "openai_responses"),
        ("openai_responses_o4mini_reasoning_cached.json", (490, 3072, 0, 179, 1024), "openai_responses"),
    ],
)
def test_openai_usage_is_split_into_disjoint_canonical_counts(fixture, expected, source):
    usage = load_fixture(fixture)["usage"]
    normalized = normalize_openai(usage)
    assert canonical(normalized) == expected
    assert normalized.source == source
    # nothing counted twice: the canonical fields add back up to the provider's total
    assert sum(expected) == usage["total_tokens"]


def test_openai_auto_detection_matches_the_explicit_normalizers():
    chat = load_fixture("openai_chat_o3mini_reasoning.json")["usage"]
    responses = load_fixture("openai_responses_o4mini_reasoning_cached.json")["usage"]
    assert normalize_openai(chat) == normalize_openai_chat(chat)
    assert normalize_openai(responses) == normalize_openai_responses(responses)


@pytest.mark.parametrize(
    ("fixture", "expected", "details"),
    [
        ("anthropic_message_cache_write.json", (21, 0, 188086, 393, 0), ()),
        (
            "anthropic_message_cache_read_web_search.json",
            (6039, 188086, 0, 931, 0),
            (),
        ),
        ("anthropic_message_legacy_nulls.json", (10, 0, 0, 25, 0), ()),
    ],
)
def test_anthropic_usage_keeps_input_cache_reads_and_cache_writes_apart(fixture, expected, details):
    normalized = normalize_anthropic(load_fixture(fixture)["usage"])
    assert canonical(normalized) == expected
    assert normalized.details == details
    assert normalized.source == "anthropic"


def test_anthropic_cache_creation_breakdown_alone_gives_the_cache_writes():
    usage = {
        "input_tokens": 5,
        "output_tokens": 7,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 4},
    }
    normalized = normalize_anthropic(usage)
    assert canonical(normalized) == (5, 0, 3, 7, 0)
    assert normalized.extra == (("cache_write_1h", 4),)


@pytest.mark.parametrize(("five", "hour", "expected_5m"), [(50, 0, 80), (0, 50, 30), (20, 30, 50)])
def test_anthropic_cache_writes_grown_past_their_split_are_taken_at_5_minutes(five, hour, expected_5m):
    """The anthropic package's accumulated stream usage: message_delta's cumulative
    cache_creation_input_tokens (80) over message_start's split (five + hour = 50), which no event
    updates. Was refused (ephemeral_5m + ephemeral_1h must equal cache_creation_input_tokens); the
    30 added are 5-minute writes (the call's TTL is not known here): 50 + 30, 0 + 30, 20 + 30 at
    cache_write, the one-hour ones as given."""
    usage = {"input_tokens": 1500, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 80,
             "cache_creation": {"ephemeral_5m_input_tokens": five, "ephemeral_1h_input_tokens": hour},
             "output_tokens": 40}
    normalized = normalize_anthropic(usage)
    assert canonical(normalized) == (1500, 100, expected_5m, 40, 0)
    assert normalized.extra == ((("cache_write_1h", hour),) if hour else ())


def test_unknown_provider_fields_are_tolerated():
    usage = load_fixture("anthropic_message_cache_write.json")["usage"]
    usage["inference_geo"] = "us"
    usage["server_tool_use"] = {"web_search_requests": 0, "web_fetch_requests": 2}
    assert normalize_anthropic(usage).details == (("web_fetch_requests", 2),)


def test_normalized_usage_rates_with_the_reference_book():
    normalized = normalize_openai(load_fixture("openai_chat_gpt4o_cached.json")["usage"])
    assert normalized.token_counts() == {"input": 86, "cached_input": 1920, "output": 300}
    book = load_reference_book()
    rating = rate(Usage("gpt-4o", normalized.token_counts(), AT), book.version_at(AT))
    # 86 x $2.50 + 1920 x $1.25 + 300 x $10.00, per 1M tokens
    assert str(rating.total) == "0.005615"


def field_names(exc: InvalidUsageError) -> set[str]:
    return {f["field"] for f in exc.fields}


CHAT = load_fixture("openai_chat_o3mini_reasoning.json")["usage"]
RESPONSES = load_fixture("openai_responses_o4mini_reasoning_cached.json")["usage"]
ANTHROPIC = load_fixture("anthropic_message_cache_read_web_search.json")["usage"]


def changed(base, path, value):
    obj = copy.deepcopy(base)
    target = obj
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return obj


@pytest.mark.parametrize(
    ("base", "path", "value", "field"),
    [
        (CHAT, ("prompt_tokens",), -1, "prompt_tokens"),
        (CHAT, ("prompt_tokens",), 1843.0, "prompt_tokens"),
        (CHAT, ("prompt_tokens",), True, "prompt_tokens"),
        (CHAT, ("prompt_tokens",), "1843", "prompt_tokens"),
        (CHAT, ("completion_tokens",), KeyError, "completion_tokens"),
        (CHAT, ("prompt_tokens_details", "cached_tokens"), 1844, "prompt_tokens_details.cached_tokens"),
        (
            CHAT,
            ("completion_tokens_details", "reasoning_tokens"),
            2211,
            "completion_tokens_details.reasoning_tokens",
        ),
        (CHAT, ("total_tokens",), 4054, "total_tokens"),
        (CHAT, ("prompt_tokens_details",), [], "prompt_tokens_details"),
        (CHAT, ("prompt_tokens_details", "audio_tokens"), 5000, "prompt_tokens_details.audio_tokens"),
        (RESPONSES, ("input_tokens_details", "cached_tokens"), 3563, "input_tokens_details.cached_tokens"),
        (
            RESPONSES,
            ("output_tokens_details", "reasoning_tokens"),
            1204,
            "output_tokens_details.reasoning_tokens",
        ),
        (RESPONSES, ("total_tokens",), 1, "total_tokens"),
        (RESPONSES, ("output_tokens",), 12.5, "output_tokens"),
    ],
)
def test_inconsistent_openai_usage_is_refused_naming_the_field(base, path, value, field):
    with pytest.raises(InvalidUsageError) as info:
        normalize_openai(changed(base, path, value))
    assert info.value.code == "validation_error"
    assert field in field_names(info.value)


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("input_tokens",), -5, "input_tokens"),
        (("output_tokens",), KeyError, "output_tokens"),
        (("cache_read_input_tokens",), 1.5, "cache_read_input_tokens"),
        # a split past its 1,024 writes (fewer, 1,000, are the added 5-minute writes of a stream's usage)
        (("cache_creation", "ephemeral_1h_input_tokens"), 1025, "cache_creation"),
        (("cache_creation", "ephemeral_5m_input_tokens"), False, "cache_creation.ephemeral_5m_input_tokens"),
        (("server_tool_use", "web_search_requests"), -1, "server_tool_use.web_search_requests"),
    ],
)
def test_inconsistent_anthropic_usage_is_refused_naming_the_field(path, value, field):
    with pytest.raises(InvalidUsageError) as info:
        normalize_anthropic(changed(ANTHROPIC, path, value))
    assert field in field_names(info.value)


@pytest.mark.parametrize(
    "usage",
    [
        {},
        {"prompt_tokens": 1, "input_tokens": 1},
        ANTHROPIC,
        [],
        "prompt_tokens=3",
    ],
)
def test_openai_auto_detection_refuses_what_it_cannot_tell_apart(usage):
    with pytest.raises(InvalidUsageError):
        normalize_openai(usage)


def test_canonical_usage_is_validated_and_unknown_fields_refused():
    assert canonical(
        normalize_canonical(
            {"input_tokens": 1000, "cached_input_tokens": 200, "output_tokens": 350, "reasoning_tokens": 0}
        )
    ) == (1000, 200, 0, 350, 0)
    with pytest.raises(InvalidUsageError) as info:
        normalize_canonical({"input_tokens": 1, "prompt_tokens": 2, "output_tokens": -1})
    assert field_names(info.value) == {"prompt_tokens", "output_tokens"}


def test_where_an_anthropic_call_ran_is_a_dimension_of_its_usage():
    """Anthropic reports inference_geo in its usage (a workspace's default applies to a call that
    names none): it prices the charge as the reported tier does, and round-trips as canonical usage."""
    normalized = normalize_anthropic({"input_tokens": 10, "output_tokens": 2, "inference_geo": "us",
                                      "service_tier": "standard"})
    assert normalized.dimensions() == {"service_tier": "standard", "inference_geo": "us"}
    fields = normalized.as_usage_fields()
    assert fields["inference_geo"] == "us"
    assert normalize_canonical(fields).dimensions() == {"service_tier": "standard", "inference_geo": "us"}
    assert normalize_anthropic({"input_tokens": 10, "output_tokens": 2}).dimensions() == {}


# Responses totals with Chat details (an OpenAI-compatible upstream's chat answer), and the reverse:
# 1,000 prompt tokens of which 200 cached and 50 cache writes, 100 completion of which 60 reasoning:
# 1,000 - 200 - 50 = 750 input, 200 cached, 50 written, 100 - 60 = 40 output, 60 reasoning. The
# details were dropped: (1,000, 0, 0, 100, 0), cached billed as input and reasoning as output.
MIXED_DETAILS = {"cached_tokens": 200, "cache_write_tokens": 50}


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": 1000, "output_tokens": 100, "prompt_tokens_details": MIXED_DETAILS,
         "completion_tokens_details": {"reasoning_tokens": 60}},
        {"prompt_tokens": 1000, "completion_tokens": 100, "input_tokens_details": MIXED_DETAILS,
         "output_tokens_details": {"reasoning_tokens": 60}},
        # both names given alike: read once
        {"input_tokens": 1000, "output_tokens": 100, "input_tokens_details": MIXED_DETAILS,
         "prompt_tokens_details": MIXED_DETAILS, "output_tokens_details": {"reasoning_tokens": 60}},
        # both names, the same counts, one spelling out its zeros and nulls (review of 26108d9: was
        # refused, "differs", and the gateway charged its metered output instead): read once
        {"input_tokens": 1000, "output_tokens": 100, "input_tokens_details": MIXED_DETAILS,
         "prompt_tokens_details": {**MIXED_DETAILS, "audio_tokens": 0, "image_tokens": None,
                                   "cached_tokens_details": {"audio_tokens": 0}},
         "output_tokens_details": {"reasoning_tokens": 60},
         "completion_tokens_details": {"reasoning_tokens": 60, "audio_tokens": 0, "accepted_prediction_tokens": None}},
    ],
    ids=["responses-totals-chat-details", "chat-totals-responses-details", "both-alike", "both-alike-zeros-spelt"],
)
def test_openai_details_under_the_other_apis_names_are_read(usage):
    assert canonical(normalize_openai(usage)) == (750, 200, 50, 40, 60)


def test_openai_details_given_under_both_names_that_differ_are_refused_naming_the_field():
    usage = {"input_tokens": 1000, "output_tokens": 100, "input_tokens_details": {"cached_tokens": 200},
             "prompt_tokens_details": {"cached_tokens": 300}}
    with pytest.raises(InvalidUsageError) as info:
        normalize_openai(usage)
    assert field_names(info.value) == {"input_tokens_details"}
    # a count one gives and the other leaves out (not 0) differs too: 200 cached or none
    with pytest.raises(InvalidUsageError) as info:
        normalize_openai({**usage, "prompt_tokens_details": {"audio_tokens": 0}})
    assert field_names(info.value) == {"input_tokens_details"}


@pytest.mark.parametrize(("normalize", "usage", "named"), [
    (normalize_openai, {"prompt_tokens": -1, "completion_tokens": 5}, {"prompt_tokens": "must not be negative"}),
    (normalize_openai, {"input_tokens": -1, "output_tokens": -3},
     {"input_tokens": "must not be negative", "output_tokens": "must not be negative"}),
    (normalize_openai, {"prompt_tokens": "100", "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}},
     {"prompt_tokens": "must be an integer, not str"}),
    (normalize_gemini, {"promptTokenCount": -1}, {"promptTokenCount": "must not be negative"}),
    (normalize_anthropic, {"input_tokens": 1, "output_tokens": -2}, {"output_tokens": "must not be negative"}),
], ids=["chat-negative", "responses-negatives", "chat-string", "gemini-negative", "anthropic-negative"])
def test_a_refused_total_names_only_itself_not_the_details_never_sent(normalize, usage, named):
    """A total refused (negative, not an integer) read its details not given as 0 and said each
    'exceeds' it: {"prompt_tokens": -1} was refused naming prompt_tokens and four fields never sent
    (prompt_tokens_details.cached_tokens, audio, image and video tokens 'exceeds prompt_tokens'),
    a Responses usage of two negative totals twelve fields. A refused total names itself alone."""
    with pytest.raises(InvalidUsageError) as refused:
        normalize(usage)
    assert {f["field"]: f["message"] for f in refused.value.fields} == named


@pytest.mark.parametrize(("normalize", "usage", "named"), [
    (normalize_openai, {"prompt_tokens": -1, "completion_tokens": 5, "total_tokens": 5},
     {"prompt_tokens": "must not be negative"}),
    (normalize_openai, {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": -1},
     {"total_tokens": "must not be negative"}),
    (normalize_anthropic, {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": -5,
                           "cache_creation": {"ephemeral_5m_input_tokens": 0}},
     {"cache_creation_input_tokens": "must not be negative"}),
], ids=["total-of-a-negative-prompt", "negative-total", "negative-cache-writes"])
def test_a_refused_count_is_not_also_told_its_sum_is_wrong(normalize, usage, named):
    """As a refused total's parts: a sum checked against a refused count named it twice, or named
    a field that was right (total_tokens 5 'must equal prompt_tokens + completion_tokens' beside a
    prompt_tokens of -1; cache_creation 'must not exceed' a negative cache_creation_input_tokens)."""
    with pytest.raises(InvalidUsageError) as refused:
        normalize(usage)
    assert [(f["field"], f["message"]) for f in refused.value.fields] == list(named.items())


@pytest.mark.parametrize(("normalize", "usage", "named"), [
    (normalize_openai, {"prompt_tokens": 10, "completion_tokens": 1,
                        "prompt_tokens_details": {"cached_tokens": 10**15 + 1}},
     [("prompt_tokens_details.cached_tokens", "must be at most 1000000000000000")]),
    (normalize_anthropic, {"input_tokens": 1, "output_tokens": 1,
                           "output_tokens_details": {"thinking_tokens": 10**15 + 1}},
     [("output_tokens_details.thinking_tokens", "must be at most 1000000000000000")]),
    (normalize_anthropic, {"input_tokens": 1, "output_tokens": 1, "cache_creation_input_tokens": 5,
                           "cache_creation": {"ephemeral_5m_input_tokens": 10**15 + 1}},
     [("cache_creation.ephemeral_5m_input_tokens", "must be at most 1000000000000000")]),
    (normalize_gemini, {"promptTokenCount": 0, "toolUsePromptTokenCount": -5},
     [("toolUsePromptTokenCount", "must not be negative")]),
], ids=["openai-cached-too-big", "anthropic-thinking-too-big", "anthropic-5m-too-big", "gemini-negative-tool-use"])
def test_a_refused_part_or_a_refused_count_of_its_total_is_named_once(normalize, usage, named):
    """After cc03700 and 9b7e8bf (review): a part refused itself (past 10^15, the most a count
    takes) was named twice, its refusal and 'exceeds' its total; Gemini's total is promptTokenCount
    + toolUsePromptTokenCount, so a negative toolUsePromptTokenCount named the cachedContentTokenCount
    (0, not sent) 'exceeds promptTokenCount'."""
    with pytest.raises(InvalidUsageError) as refused:
        normalize(usage)
    assert [(f["field"], f["message"]) for f in refused.value.fields] == named


_DETAILS_TOO_BIG = [
    # 3 cached audio tokens, no audio_tokens given (0): the cached audio is inside the audio
    (normalize_openai, {"prompt_tokens": 10, "completion_tokens": 5,
                        "prompt_tokens_details": {"cached_tokens": 4, "cached_tokens_details": {"audio_tokens": 3}}},
     [("prompt_tokens_details.cached_tokens_details.audio_tokens", "exceeds prompt_tokens_details.audio_tokens")]),
    (normalize_openai, {"input_tokens": 10, "output_tokens": 5,
                        "input_tokens_details": {"cached_tokens": 4, "cached_tokens_details": {"image_tokens": 3}}},
     [("input_tokens_details.cached_tokens_details.image_tokens", "exceeds input_tokens_details.image_tokens")]),
    # 3 + 1 = 4 cached audio and image tokens, of 2 cached
    (normalize_openai, {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {
        "cached_tokens": 2, "audio_tokens": 3, "image_tokens": 1,
        "cached_tokens_details": {"audio_tokens": 3, "image_tokens": 1}}},
     [("prompt_tokens_details.cached_tokens_details",
       "audio_tokens + image_tokens + video_tokens (4) exceed prompt_tokens_details.cached_tokens (2)")]),
    # 6 cached + 1 written + 6 audio (none cached) = 13 of a prompt of 10
    (normalize_openai, {"prompt_tokens": 10, "completion_tokens": 5, "prompt_tokens_details": {
        "cached_tokens": 6, "cache_write_tokens": 1, "audio_tokens": 6}},
     [("prompt_tokens_details", "cached_tokens + cache_write_tokens + the audio, image and video tokens not "
                                "cached (13) exceed prompt_tokens (10)")]),
    # 6 reasoning + 6 audio = 12 of an output of 10
    (normalize_openai, {"input_tokens": 10, "output_tokens": 10,
                        "output_tokens_details": {"reasoning_tokens": 6, "audio_tokens": 6}},
     [("output_tokens_details",
       "reasoning_tokens + audio_tokens + image_tokens + video_tokens (12) exceed output_tokens (10)")]),
    # 5 cached audio tokens, none in the prompt's details
    (normalize_gemini, {"promptTokenCount": 10, "cachedContentTokenCount": 5,
                        "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}]},
     [("cacheTokensDetails", "AUDIO: 5 exceeds the 0 of promptTokensDetails + toolUsePromptTokensDetails")]),
    # 5 cached audio tokens of 2 cached
    (normalize_gemini, {"promptTokenCount": 10, "cachedContentTokenCount": 2,
                        "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}],
                        "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 5}]},
     [("cacheTokensDetails", "AUDIO + IMAGE + VIDEO (5) exceed cachedContentTokenCount (2)")]),
    # 20 audio tokens of a prompt of 10
    (normalize_gemini, {"promptTokenCount": 10, "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 20}]},
     [("promptTokensDetails", "cachedContentTokenCount + the AUDIO, IMAGE and VIDEO tokens not cached (20) exceed "
                              "promptTokenCount + toolUsePromptTokenCount (10)")]),
    # 20 video tokens of 10 candidates
    (normalize_gemini, {"promptTokenCount": 1, "candidatesTokenCount": 10,
                        "candidatesTokensDetails": [{"modality": "VIDEO", "tokenCount": 20}]},
     [("candidatesTokensDetails", "AUDIO + IMAGE + VIDEO (20) exceed candidatesTokenCount (10)")]),
]


@pytest.mark.parametrize(("normalize", "usage", "named"), _DETAILS_TOO_BIG, ids=[
    "chat-cached-audio", "responses-cached-image", "chat-cached-modalities", "chat-prompt-parts",
    "responses-output-parts", "gemini-cached-audio", "gemini-cached-modalities", "gemini-prompt-parts",
    "gemini-candidates-parts"])
def test_details_past_their_total_are_named_as_the_provider_sent_them(normalize, usage, named):
    """Counts inside another that exceed it were refused naming the rating types they make,
    which no provider sends: OpenAI's prompt_tokens_details.cached_tokens_details.audio_tokens 3
    beside no audio_tokens was "input_audio: the subsets reported exceed their total", its
    cached modalities past cached_tokens "cached_input", the prompt's parts past prompt_tokens
    "input", the output's "output"; Gemini's alike. Each is named as the provider sent it, and a
    sum says what it adds and both figures."""
    with pytest.raises(InvalidUsageError) as refused:
        normalize(usage)
    assert [(f["field"], f["message"]) for f in refused.value.fields] == named
