"""A JSON body's repeated keys (pure): a decoder keeps the last of two, a proxy, a log or an
upstream may read the first, so a body that repeats a key is refused (the API's typed routes and
the gateway alike). And the field of an unpaired surrogate escape, which the decoder refuses in
words that say nothing of it. Both found by one walk of the decoded value (`nodes`), which
api.routes.wire takes too."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
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
        pairs = json.loads(body, object_pairs_hook=_pairs)
    except ValueError:
        return None  # the decoder took it: whatever json refuses here is not a repeated key
    return next((field(path, key) for path, key, is_key in nodes(pairs) if is_key and isinstance(key, _Again)), None)


class _Pairs(list):
    """An object's (key, value) pairs in order, every one kept."""


class _Again(str):
    """A key given before in its object."""


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    seen: set[str] = set()
    kept = _Pairs()
    for key, item in pairs:
        kept.append((_Again(key) if key in seen else key, item))
        seen.add(key)
    return kept


def field(path: str, key: Any) -> str:
    """The field of `key` in the object at `path`, as validation errors name fields."""
    return f"{path}.{key}" if path else str(key)


def nodes(value: Any, path: str = "") -> Iterator[tuple[str, Any, bool]]:
    """(path, node, is_key) of decoded JSON `value` and all it holds, depth first in document order:
    each value at its field (`rules[0].id`; `path` for `value` itself), and each key of an object (a
    dict, or _Pairs with every pair kept) at its object's path, just before the walk of its value.
    Walked from a list of its own, not by recursion: whatever depth the decoder took."""
    todo: list[tuple[str, Any, bool]] = [(path, value, False)]
    while todo:
        at, node, is_key = todo.pop()
        yield at, node, is_key
        if isinstance(node, _Pairs | dict):
            pairs = node.items() if isinstance(node, dict) else node
            todo += reversed([step for key, item in pairs for step in ((at, key, True), (field(at, key), item, False))])
        elif isinstance(node, list):
            todo += reversed([(f"{at}[{index}]", item, False) for index, item in enumerate(node)])


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
    return next(((path or "body") for path, node, _ in nodes(value) if isinstance(node, str) and _lone(node)), None)


def _lone(text: str) -> bool:
    try:
        text.encode("utf-8")  # json joins a pair into its character: what is left is unpaired
    except UnicodeEncodeError:
        return True
    return False
