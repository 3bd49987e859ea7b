"""A whole JSON answer cut short: what arrived, closed into JSON (api.gateway.partial)."""
from __future__ import annotations

import pytest

from api.gateway.partial import partial_json


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
