"""A JSON body's repeated keys (pure): a decoder keeps the last of two, a proxy, a log or an
upstream may read the first, so a body that repeats a key is refused (the API's typed routes and
the gateway alike)."""
from __future__ import annotations

import json
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
