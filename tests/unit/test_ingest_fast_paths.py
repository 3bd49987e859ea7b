"""The ingest path's shortcuts give what the general code gives, byte for byte: request hashes
(stored, and compared with every replay's), the normalized canonical usage, rollup line items,
an entry with other metadata. Each shortcut is checked against the code it replaces."""
from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from api.routes.inputs import hashed_as_before, usage_tokens
from api.routes.usage import UsageEvent, _body
from api.routes.wire import _fitted, _Unfit, time_in, unstorable
from ledger.model import JournalEntry, Posting, request_hash
from pricing.books import TOKEN_TYPES
from pricing.errors import InvalidUsageError
from pricing.normalize import CANONICAL_FIELDS, _read_canonical, normalize_canonical, plain_canonical_counts
from pricing.usage import MAX_QUANTITY, Usage
from wallets.core.billing import line_item
from wallets.errors import WalletValidationError


def hash_as_json(value) -> bytes:
    """The request hash as it has always been computed (json.dumps)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).digest()


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)  # every code point but lone surrogates
LEAVES = (st.none() | st.booleans() | st.integers(min_value=-2**80, max_value=2**80)
          | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                    | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20)


@settings(max_examples=400)
@given(JSON)
def test_the_request_hash_is_the_json_dumps_hash(value):
    assert request_hash(value) == hash_as_json(value)


@pytest.mark.parametrize("value", [
    {"n": 1e16}, {"n": 1e-7}, [1.5, 2], {"é": "\u2028\x7f\x1f", "\U00010000": 1, "\uffff": 2},
    {"big": 2**200, "neg": -2**200}, {"nested": {"b": [True, None, 0], "a": ""}},
])
def test_the_request_hash_of_edge_values(value):
    assert request_hash(value) == hash_as_json(value)


def test_a_value_json_refuses_is_still_refused():
    with pytest.raises(TypeError):
        request_hash({"at": datetime(2026, 1, 1, tzinfo=UTC)})
    with pytest.raises(TypeError):
        request_hash({1: "int key", "a": 2})


USAGE = st.dictionaries(TEXT, LEAVES, max_size=4) | st.none()
EVENTS = st.builds(
    UsageEvent, event_id=TEXT.filter(bool), customer_id=st.from_regex(r"\A[a-z0-9_-]{1,12}\Z"),
    model=TEXT.filter(bool), timestamp=TEXT, usage=USAGE, openai_usage=USAGE, anthropic_usage=USAGE,
    dimensions=st.dictionaries(TEXT, st.text(max_size=5) | st.integers() | st.booleans(), max_size=3),
    gemini_usage=USAGE)


@settings(max_examples=300)
@given(EVENTS)
def test_an_events_hash_is_the_hash_of_its_builtins_as_before(event):
    assert request_hash(_body(event)) == hash_as_json(hashed_as_before(msgspec.to_builtins(event)))


COUNT = (st.none() | st.booleans() | st.integers(min_value=-5, max_value=10**6)
         | st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, 2.5, 3.0, "7"]))
FIELD = st.sampled_from([*CANONICAL_FIELDS, "cache_write_1h_tokens", "input_audio_tokens", "service_tier", "x"])


@settings(max_examples=500)
@given(st.dictionaries(FIELD, COUNT, max_size=6) | st.dictionaries(st.sampled_from(CANONICAL_FIELDS), COUNT))
def test_canonical_usage_normalizes_as_the_general_reader_does(usage):
    try:
        expected = _read_canonical(usage)
    except InvalidUsageError as exc:
        with pytest.raises(InvalidUsageError) as got:
            normalize_canonical(usage)
        assert got.value.fields == exc.fields
        return
    assert normalize_canonical(usage) == expected


@settings(max_examples=500)
@given(st.dictionaries(FIELD, COUNT, max_size=6) | st.dictionaries(st.sampled_from(CANONICAL_FIELDS), COUNT))
def test_plain_canonical_usage_gives_what_the_normalized_usage_gives(usage):
    plain = plain_canonical_counts(usage)
    try:
        normalized = _read_canonical(usage)
    except InvalidUsageError:
        assert plain is None  # an error to report: the general path reports it
        return
    if plain is not None:
        assert plain == (normalized.token_counts(), normalized.as_usage_fields())
        assert list(plain[0]) == list(normalized.token_counts())  # the same order too
        assert usage_tokens(usage, None, None) == (normalized.token_counts(), {
            "source": "usage", "reported": usage, "canonical": normalized.as_usage_fields()})
    else:
        assert any(k not in CANONICAL_FIELDS or (v is not None and type(v) is not int) for k, v in usage.items())


LINE_VALUES = st.none() | st.booleans() | st.integers(min_value=-3, max_value=3) | st.sampled_from(["1", "x", "é"])


@settings(max_examples=300)
@given(st.lists(st.fixed_dictionaries({k: LINE_VALUES for k in (
    "model", "token_type", "rule_id", "unit_price", "tier", "override_id", "price_version")}, optional={}),
    min_size=1, max_size=6))
def test_line_items_are_their_json_whatever_came_before(lines):
    for line in lines:  # the same values again, or ones equal to them (1 and True), hit the cache
        values = ["2026-12", "usage", *(line.get(k) for k in (
            "model", "token_type", "rule_id", "unit_price", "tier", "override_id", "price_version"))]
        assert line_item("2026-12", {"kind": "usage", **line}) == "line:" + json.dumps(values, separators=(",", ":"))


def test_an_entry_with_other_metadata_is_the_replaced_entry():
    entry = JournalEntry("k", "usage", (Posting("a", 5, "USD"), Posting("b", -5, "USD")), "c",
                         datetime(2026, 1, 1, tzinfo=UTC), {"event_id": "e"})
    metadata = {**entry.metadata, "period": "2026-01"}
    assert entry.with_metadata(metadata) == replace(entry, metadata=metadata)
    assert entry.with_metadata(metadata).request_hash() == replace(entry, metadata=metadata).request_hash()


def test_a_time_checked_before_is_the_same_time_and_a_bad_one_stays_refused():
    first = time_in("2026-12-03T06:46:59.934643Z", "timestamp")
    assert first == datetime(2026, 12, 3, 6, 46, 59, 934643, tzinfo=UTC)
    assert time_in("2026-12-03T06:46:59.934643Z", "timestamp") is first
    assert time_in("2026-12-03T07:46:59.934643+01:00", "timestamp") == first  # another text: parsed on its own
    for bad in ("2026-12-03T06:46:59", "2026-12-03 06:46:59Z", "2026-12-03T06:46:59Z\n"):
        for _ in range(2):
            with pytest.raises(WalletValidationError):
                time_in(bad, "timestamp")


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(TOKEN_TYPES), st.integers(min_value=0, max_value=10**6), max_size=6))
def test_a_usage_with_its_request_is_the_usage_with_one_request_counted(tokens):
    at = datetime(2026, 12, 3, tzinfo=UTC)
    usage = Usage("m", tokens, at, {"tier": "x"})
    expected = Usage("m", {**tokens, "request": 1}, at, {"tier": "x"})
    assert usage.with_request() == expected
    assert usage.tokens == Usage("m", tokens, at, {"tier": "x"}).tokens  # the usage itself is unchanged


ANY_TEXT = st.text(max_size=8) | st.sampled_from(["a\x00b", "\ud800", "x\udfffy", "é"])  # NUL, lone halves
BODY_LEAVES = (st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) | ANY_TEXT
               | st.floats() | st.sampled_from([3.0, -0.0, 1e16, 2.5]))
BODIES = st.recursive(BODY_LEAVES, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=20)


@settings(max_examples=500)
@given(BODIES)
def test_a_body_is_fitted_as_it_is_and_refused_where_unstorable_says(body):
    if unstorable(body) is not None:
        with pytest.raises(_Unfit):
            _fitted(body)
        return
    assert _fitted(body) is body  # 3.0 stays 3.0: an integer field refuses it


def test_a_body_is_not_copied_and_a_whole_float_stays_a_float():
    batch = [{"event_id": f"e{n}", "customer_id": "c", "timestamp": "2026-12-04T00:00:00Z",
              "usage": {"input_tokens": n, "output_tokens": None}, "dimensions": {"ok": True}} for n in range(3)]
    assert _fitted(batch) is batch
    batch[1]["usage"]["input_tokens"] = 5.0  # was made the int 5 here (its path copied): 5.0 tokens charged as 5
    assert _fitted(batch) is batch and type(batch[1]["usage"]["input_tokens"]) is float
