"""pricing.text: the one rule for free text, by Unicode category (Cc, Zl, Zp refused; Cf taken)."""

from __future__ import annotations

import pytest

from pricing.text import PATTERN, REFUSED_CATEGORIES, refused_at, text_problem


@pytest.mark.parametrize(
    ("text", "at", "code"),
    [
        ("ab\x07c", 2, "U+0007"),
        ("\x00", 0, "U+0000"),
        ("tab\there", 3, "U+0009"),
        ("x\x7f", 1, "U+007F"),
        ("nel\x85", 3, "U+0085"),
        ("a\x9fb", 1, "U+009F"),
        ("line\u2028two", 4, "U+2028"),
        ("p\u2029", 1, "U+2029"),
    ],
)
def test_a_control_character_or_a_separator_is_refused_by_code_point_and_position(text, at, code):
    assert refused_at(text) == at
    assert text_problem(text).startswith(f"must not contain {code} at position {at + 1}:")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Acme Inc.",
        "caf\u00e9",
        "\u200d\u200f\u202e\u2066\ufeff",
        "a\u00a0b",
        "\U0001f469\u200d\U0001f4bb",
        "\u05e9\u05dc\u05d5\u05dd",
        "\ue000",
    ],
)
def test_printable_text_and_format_characters_are_taken(text):
    assert refused_at(text) is None and text_problem(text) is None


def test_the_documented_pattern_refuses_exactly_what_the_rule_refuses():
    """Every code point of the Basic Multilingual Plane (surrogates aside) and a few beyond: the
    OpenAPI document's pattern, the rule and the Unicode categories it names agree."""
    import re
    import unicodedata

    pattern = re.compile(PATTERN)
    for point in [*range(0xD800), *range(0xE000, 0x10000), 0x1F469, 0xE0001, 0x10FFFD]:
        c = chr(point)
        assert (pattern.fullmatch(c) is None) == (refused_at(c) is not None), hex(point)
        assert (unicodedata.category(c) in REFUSED_CATEGORIES) == (refused_at(c) is not None), hex(point)
