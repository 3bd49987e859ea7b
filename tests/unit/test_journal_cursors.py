"""Journal cursors and snapshot watermarks, without a database: what is accepted, what is refused."""
from __future__ import annotations

import base64
import json

import pytest

from api.errors import ApiError
from api.routes import cursors
from ledger.journal import parse_snapshot

FILTERS = ["2026-11-01T00:00:00Z", None, "acme", None, None, None]


def _raw(token: str):
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _token(value) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def _refused(token: str, listing: str = "journal", filters=FILTERS) -> str:
    with pytest.raises(ApiError) as caught:
        cursors.decode(token, listing, filters)
    assert (caught.value.code, caught.value.status) == ("invalid_cursor", 400)
    return caught.value.detail


def test_a_cursor_gives_back_its_snapshot_and_position():
    token = cursors.encode("journal", FILTERS, "100:105:101,103", ["2026-11-02T10:00:00+00:00", 42])
    assert cursors.decode(token, "journal", FILTERS) == ("100:105:101,103", ["2026-11-02T10:00:00+00:00", 42])
    assert "=" not in token and "/" not in token and "+" not in token  # safe in a query string as it is


def test_a_cursor_of_other_filters_or_another_listing_is_refused():
    token = cursors.encode("journal", FILTERS, "100:105:", ["2026-11-02T10:00:00+00:00", 42])
    assert "other filters" in _refused(token, filters=[*FILTERS[:2], "other", *FILTERS[3:]])
    assert "other filters" in _refused(token, listing="statement")


@pytest.mark.parametrize("token", ["", "not base64!", _token({"a": 1}), _token([1, "x", "1:2:", []])[:-3],
                                   _token([2, "d", "1:2:", []]), _token([1, "d", 5, []]), _token([1, "d", "1:2:", {}]),
                                   "x" * (cursors.MAX_CURSOR + 1)])
def test_anything_that_is_not_one_of_our_cursors_is_refused(token):
    _refused(token)


def test_a_cursor_whose_snapshot_was_edited_is_refused():
    raw = _raw(cursors.encode("journal", FILTERS, "100:105:", [0]))
    raw[2] = "105:100:"  # xmin above xmax
    assert "snapshot" in _refused(_token(raw))


@pytest.mark.parametrize("text, parsed", [
    ("100:100:", (100, 100, ())), ("100:105:101,103", (100, 105, (101, 103))), ("1:2:1", (1, 2, (1,)))])
def test_snapshots_in_postgresqls_text_form_parse(text, parsed):
    assert parse_snapshot(text) == parsed


@pytest.mark.parametrize("text", ["", "100:105", "100:105:99", "100:105:105", "105:100:", "0:1:", "1:2:a",
                                  "1:2:1,", " 1:2:", "1:99999999999999999999:", "1:2:1\n"])
def test_malformed_or_impossible_snapshots_do_not_parse(text):
    assert parse_snapshot(text) is None


@pytest.mark.parametrize("text", ["\ud800", "x\udfff", "a\x00b"])
def test_a_cursor_holding_a_lone_surrogate_or_a_nul_is_refused(text):
    """A position or snapshot edited to hold a string no text column takes (a lone surrogate, a
    NUL) is not one of our cursors: json.loads read it, and the listing sent it to the database
    (a 500 for the surrogate). Every listing decodes through here."""
    for position in ([text, "id"], [{"k": text}], [[text]]):
        with pytest.raises(ApiError) as caught:
            cursors.decode_position(cursors.encode_position("budgets", [None], position), "budgets", [None])
        assert (caught.value.code, caught.value.status) == ("invalid_cursor", 400), position
    _refused(cursors.encode("journal", FILTERS, text, [1]))


def test_a_cursor_nested_deeper_than_json_reads_is_refused():
    """2,000 arrays deep (5,334 characters, under the 60,000 a cursor may have): json.loads ran
    out of stack (RecursionError, uncaught: a 500). It is not one of our cursors."""
    token = base64.urlsafe_b64encode(b"[" * 2000 + b"]" * 2000).decode().rstrip("=")
    assert len(token) == 5334  # 4,000 bytes, 4 characters per 3: 5,333.3, unpadded
    with pytest.raises(ApiError) as caught:
        cursors.decode_position(token, "budgets", [None])
    assert (caught.value.code, caught.value.status) == ("invalid_cursor", 400)
