"""A whole JSON answer cut short: what arrived, closed into JSON (api.gateway.partial)."""
from __future__ import annotations

import pytest

from api.gateway.partial import closed_prefix, partial_json, whole_members


@pytest.mark.parametrize(("cut", "closed"), [
    (b'{"a": "hel', {"a": "hel"}),  # a string value keeps what it held so far
    (b'{"a": [1, 2', {"a": [1]}),  # a number at the end may go on (2 of 25): dropped
    (b'{"a": [1, 2,', {"a": [1, 2]}),
    (b'{"a": {"b": "x\\', {"a": {"b": "x"}}),  # an escape cut from what it escapes
    (b'{"a": "x\\u00', {"a": "x"}),
    (b'{"a": "x", "ke', {"a": "x"}),  # a key cut mid-way
    (b'{"a": "x", "k":', {"a": "x"}),  # a key without its value
    (b'{"a": 1, "k": tr', {"a": 1}),
    (b'{"t": "one \\"two\\" thr', {"t": 'one "two" thr'}),
    ('{"t": "caf\u00e9'.encode()[:-1], {"t": "caf"}),  # a character cut mid-way
    (b'{"c": [{"t": "x"}], "u": {"n": 3}', {"c": [{"t": "x"}], "u": {"n": 3}}),
])
def test_what_arrived_is_kept_up_to_its_last_complete_value_or_inside_a_string(cut, closed):
    assert partial_json(cut) == closed


@pytest.mark.parametrize("cut", [b"", b"[1, 2", b'{"a": xyz', b'{"a": 1]', b"<html>"])
def test_what_is_not_the_start_of_a_json_object_is_nothing(cut):
    assert partial_json(cut) is None


@pytest.mark.parametrize("cut", [b'{"t": "hello wor \\ud83d', b'{"t": "hello wor \\ud83d\\ude0',
                                 b'{"t": "hello wor \\ud83d\\'])
def test_a_surrogate_pair_cut_between_its_escapes_drops_its_first_half_not_the_answer(cut):
    """An emoji sent as JSON escapes is a pair, \\ud83d\\ude00; cut between the two, the first
    half was kept, a lone surrogate no decoder takes, so the whole of what arrived was nothing and
    its text was not metered (a cut answer charged its prompt alone). By hand: the text before it."""
    assert partial_json(cut) == {"t": "hello wor "}
    assert partial_json(b'{"t": "a \\ud83d\\ude00 b') == {"t": "a \U0001f600 b"}  # a whole pair is kept


USAGE = b'{"choices": [{"usage": {"n": 1}}], "usage": {"prompt_tokens": 1000, "details": {"cached": 200}'


@pytest.mark.parametrize(("cut", "usage"), [
    (USAGE + b"}", {"prompt_tokens": 1000, "details": {"cached": 200}}),  # all but the answer's own brace
    (USAGE + b'}, "service_tier": "def', {"prompt_tokens": 1000, "details": {"cached": 200}}),
    (USAGE, None),  # its nested object closed, not the usage itself
    (USAGE[:USAGE.index(b"1000") + 2], None),  # cut mid-digits: 10 of 1000
    (USAGE[:USAGE.index(b', "usage"')], None),  # only a nested "usage" (a choice's) came
    (b'{"text": "\\"usage\\": {\\"n\\": 1}", "usage": nu', None),  # "usage" inside a string; a literal cut
    (b'{"usage": null, "x": 1', None),
    (b'[{"usage": {"n": 1}}', None),  # not an object
])
def test_a_top_level_member_is_read_only_when_all_of_its_value_came(cut, usage):
    """The provider's usage in an answer cut short is read only when its object closed: a count
    cut mid-digits (10 of 1000), a nested object closed inside a usage still open, or a usage
    nested elsewhere would be taken for one smaller than the provider bills."""
    assert whole_members(cut, "usage").get("usage") == usage


def test_a_string_member_is_read_only_when_its_closing_quote_came():
    """A service tier cut mid-string ("prior" of "priority") would price the call at a tier
    that is not the one that served it."""
    assert whole_members(b'{"usage": {}, "service_tier": "prior', "usage", "service_tier") == {"usage": {}}
    assert whole_members(b'{"usage": {}, "service_tier": "priority"', "usage", "service_tier") == {
        "usage": {}, "service_tier": "priority"}
    assert whole_members(b'{"service_tier": "flex", "n": 12', "n", "service_tier") == {"service_tier": "flex"}
    assert whole_members(b'{"n": 12,', "n") == {"n": 12}


def test_every_cut_of_a_list_of_values_keeps_its_whole_values_and_reads_usage_only_once_closed():
    # the regexes that skip a string's plain characters and a member's nested values (linear on a
    # 20 MB embeddings list) read each cut as the character-by-character scan did
    whole = (b'{"object":"list","data":[{"embedding":[0.5,-1e-3,2],"i":"a\\"]}"}],'
             b'"usage":{"prompt_tokens":12,"total_tokens":12}}')
    usage_closed = whole.index(b"}}") + 1  # the usage's own closing brace
    for n in range(1, len(whole)):
        cut = whole[:n]
        body = partial_json(cut)
        assert body is not None, cut
        came = whole_members(cut, "usage")
        assert came == ({"usage": {"prompt_tokens": 12, "total_tokens": 12}} if n >= usage_closed else {}), cut
    assert partial_json(whole[:len(b'{"object":"list","data":[{"embedding":[0.5,-1e-3,2')]) \
        == {"object": "list", "data": [{"embedding": [0.5, -1e-3]}]}  # 2 may have been 20


@pytest.mark.parametrize("digit", ["\u0663", "\u09e9", "\uff13"])  # Arabic-Indic, Bengali, fullwidth three
def test_a_digit_other_than_0_to_9_is_not_a_json_number(digit):
    """JSON's numbers are written in 0-9 only (RFC 8259 section 6); a str regex's \\d matches any
    Unicode digit, so "٣" (U+0663) was read as a number: the prefix closed around it was not JSON,
    and a member after it was read as if the answer were. By hand: nothing is JSON from the "٣" on,
    so the prefix is none, as for any other character that begins no value ({"a": xyz above), and
    neither "n" nor the usage after it is read."""
    cut = f'{{"t": "hello", "n": {digit}, "usage": {{"prompt_tokens": 7}}'.encode()
    assert closed_prefix(cut.decode()) is None
    assert partial_json(cut) is None
    assert whole_members(cut + b"}", "n", "usage") == {}
    assert whole_members(b'{"n": 3, "usage": {"prompt_tokens": 7}}', "n", "usage") == {  # 0-9 as before
        "n": 3, "usage": {"prompt_tokens": 7}}
