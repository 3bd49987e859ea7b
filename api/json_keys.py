"""A JSON body's repeated keys (pure): a decoder keeps the last of two, a proxy, a log or an
upstream may read the first, so a body that repeats a key is refused (the API's typed routes and
the gateway alike). And the field of an unpaired surrogate escape, which the decoder refuses in
words that say nothing of it."""
from __future__ import annotations

import json
import re
from typing import Any

import msgspec


def repeated_key(body: bytes, decoded: Any) -> str | None:
    """The field (as validation errors name fields) of the first key given twice in one object of
    JSON `body`, or None. A decoder keeps the last of the two, a proxy or a log may read the
    first: refused, the request means one thing. Found by counting: outside strings, a colon
    only ends a key, so a body with a repeated key has more colons than its decoded value
    written out again (a string loses none, unless a colon was escaped as \\u003a); only then
    is the body parsed again, keeping every pair, to name the key."""
    if b"\\u003" not in body and body.count(b":") == msgspec.json.encode(decoded).count(b":"):
        return None
    try:
        pairs = json.loads(body, object_pairs_hook=_Pairs)
    except ValueError:
        return None  # the decoder took it: whatever json refuses here is not a repeated key
    return _first_repeat(pairs, "")


class _Pairs(list):
    """An object's (key, value) pairs in order, every one kept."""


def _first_repeat(value: Any, path: str) -> str | None:
    if isinstance(value, _Pairs):
        seen: set[str] = set()
        for key, item in value:
            field = f"{path}.{key}" if path else key
            if key in seen:
                return field
            seen.add(key)
            found = _first_repeat(item, field)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_repeat(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


UNPAIRED = "invalid JSON string: unpaired surrogate (a \\ud800 to \\udfff escape not in a high-low pair)"
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # an escape that may leave a surrogate unpaired


def unpaired_surrogate(body: bytes) -> str | None:
    """The field (as validation errors name fields; `body` for an object key at the top) of the
    first string or key in JSON `body` whose escapes leave a surrogate unpaired (`"\\ud800"`), or
    None. Asked only once the decoder refused the body: msgspec says "Input data was truncated"
    of a whole body, or names a byte; json reads such an escape, so the body is read again by it."""
    if _SURROGATE.search(body) is None:
        return None
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # malformed otherwise too: the decoder's words stand
    return _unpaired(value, "")


def _lone(text: str) -> bool:
    try:
        text.encode("utf-8")  # json joins a pair into its character: what is left is unpaired
    except UnicodeEncodeError:
        return True
    return False


def _unpaired(value: Any, path: str) -> str | None:
    if isinstance(value, str):
        return (path or "body") if _lone(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _lone(key):
                return path or "body"
            found = _unpaired(item, f"{path}.{key}" if path else key)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unpaired(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None
