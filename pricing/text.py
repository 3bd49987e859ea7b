"""The one rule for free text a caller gives (a name, a description, a reference, an id it makes
up, a model, a dimension's name and string value): no character of Unicode category Cc (the C0
and C1 controls, U+0000 to U+001F and U+007F to U+009F), Zl (U+2028) or Zp (U+2029), which cut a
line in a log, a CSV or a page where none was written. Cf is allowed: bidi marks and the zero
width joiner are letters' business in names (the renderings close what a bidi control opens)."""

from __future__ import annotations

import re

REFUSED_CATEGORIES = frozenset({"Cc", "Zl", "Zp"})
# the same set as one character class (Cc is exactly its two ranges), for the check here and for
# the OpenAPI document's pattern
_REFUSED = r"\x00-\x1f\x7f-\x9f\u2028\u2029"
PATTERN = rf"^[^{_REFUSED}]*$"
_FIRST_REFUSED = re.compile(rf"[{_REFUSED}]")
RULE = "control character, line separator or paragraph separator (Unicode Cc, Zl, Zp)"


def refused_at(text: str) -> int | None:
    """The index of the first character of `text` the rule refuses, or None."""
    found = _FIRST_REFUSED.search(text)
    return None if found is None else found.start()


def text_problem(text: str) -> str | None:
    """What is wrong with `text` by the rule, naming the character and its position (from 1), or
    None: "must not contain U+0007 at position 3: ..."."""
    at = refused_at(text)
    if at is None:
        return None
    return f"must not contain U+{ord(text[at]):04X} at position {at + 1}: free text takes no {RULE}"
