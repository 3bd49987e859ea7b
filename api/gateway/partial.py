"""What arrived of a whole JSON answer cut short (pure: no I/O): its prefix closed into a JSON
document, so that the text it carries so far can be metered as a cut stream's is
(api.gateway.streams.StreamTally.cut_answer).

The prefix is kept up to its last complete value, a string value cut mid-way included (the text
it held so far: a generated answer is mostly one long string); a number, a literal or a key cut
mid-way is dropped (`12` may have been `123`), then every open object and array is closed.
Apart from that, `whole_members` reads only top-level members whose values all came (the
provider's `usage`: its closing brace came), which api.gateway.streams settles a cut answer by."""
from __future__ import annotations

import re
from typing import Any

import msgspec

# JSON's digits are 0-9: a str regex's \d is any Unicode digit, and read "٣" (U+0663) as a number
_SCALAR = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null")
_SCALAR_CUT = re.compile(r"[-+.0-9eE]+|t(?:r(?:ue?)?)?|f(?:a(?:l(?:se?)?)?)?|n(?:u(?:ll?)?)?")
_HEX = frozenset("0123456789abcdefABCDEF")
_QUOTE_OR_ESCAPE = re.compile(r'["\\]')
_STRUCTURE = re.compile(r'[][{}"]')


def _string_end(text: str, start: int) -> tuple[int, int]:
    """(the index just past the closing quote of the string opened at `start`, or -1 when it is
    cut; the index its last whole character or escape ends at)."""
    i, n = start + 1, len(text)
    while i < n:
        stop = _QUOTE_OR_ESCAPE.search(text, i)  # a string's plain characters skipped at once
        if stop is None:
            return -1, n
        i = stop.start()
        if text[i] == '"':
            return i + 1, i
        if i + 1 >= n:  # a backslash cut from what it escapes
            return -1, i
        if text[i + 1] == "u":
            if i + 6 > n or not all(h in _HEX for h in text[i + 2:i + 6]):
                return -1, i
            if 0xD800 <= int(text[i + 2:i + 6], 16) <= 0xDBFF and i + 12 > n:
                return -1, i  # a pair's first half cut from its second: a lone surrogate no decoder takes
            i += 6
        else:
            i += 2
    return -1, n


def closed_prefix(text: str) -> str | None:
    """The longest prefix of `text` (a JSON document cut short) that ends after a complete value
    or inside a string value, closed: its string, objects and arrays; None when it is not JSON."""
    closers: list[str] = []
    safe = -1  # where the prefix so far ends (closed by what is open at the end: between two safe
    # points only keys, colons, commas and a cut scalar come, which open and close nothing)
    key = False  # the next string is an object's key
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
        elif c in "{[":
            closers.append("}" if c == "{" else "]")
            key = c == "{"
            i += 1
            safe = i
        elif c in "}]":
            if not closers or closers[-1] != c:
                return None
            closers.pop()
            i += 1
            safe = i
        elif c == ":":
            key = False
            i += 1
        elif c == ",":
            key = bool(closers) and closers[-1] == "}"
            i += 1
        elif c == '"':
            end, whole = _string_end(text, i)
            if end < 0:  # cut inside: a value keeps what it held so far, a key is dropped
                return _closed(text, safe, closers) if key else text[:whole] + '"' + "".join(reversed(closers))
            i = end
            if not key:
                safe = i
        else:
            scalar = _SCALAR.match(text, i)
            if _SCALAR_CUT.fullmatch(text, i):  # at the end, it may go on (a number's digits, a literal's letters)
                break
            if scalar is None:
                return None
            i = scalar.end()
            safe = i
    return _closed(text, safe, closers)


def _closed(text: str, end: int, closers: list[str]) -> str | None:
    """`text` up to `end` with what is open closed (one copy: a copy at each value made a cut
    answer of many values, an embeddings list, cost time quadratic in its length); None before any."""
    return text[:end] + "".join(reversed(closers)) if end >= 0 else None


def partial_json(raw: bytes) -> dict[str, Any] | None:
    """The object a JSON answer cut short began, as far as it came (see closed_prefix), or None."""
    closed = closed_prefix(raw.decode("utf-8", "ignore"))  # a character cut mid-way is dropped
    if closed is None:
        return None
    try:
        body = msgspec.json.decode(closed)
    except msgspec.DecodeError:
        return None
    return body if isinstance(body, dict) else None


def whole_members(raw: bytes, *names: str) -> dict[str, Any]:
    """The values of the members `names` of the object a JSON answer cut short began (its top level
    only) whose values all came before the cut (an object's or array's closing bracket, a string's
    closing quote, the comma or brace after a number or literal), by name; one cut is left out."""
    text = raw.decode("utf-8", "ignore")  # a character cut mid-way is dropped
    found: dict[str, Any] = {}
    closers: list[str] = []
    key = False  # the next string is an object's key
    member: str | None = None  # the top-level member whose value is being read
    start = -1  # where that value began
    i, n = 0, len(text)
    while i < n and len(found) < len(names):
        if len(closers) > 1:  # inside a member's value only its brackets and strings matter: skipped to the next
            stop = _STRUCTURE.search(text, i)
            if stop is None:
                break
            i = stop.start()
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if not closers and c != "{":
            break  # not an object, or past its end
        if c in "{[":
            if len(closers) == 1:
                start = i
            closers.append("}" if c == "{" else "]")
            key = c == "{"
            i += 1
        elif c in "}]":
            if closers[-1] != c:
                break
            closers.pop()
            i += 1
            if len(closers) == 1 and member in names:
                found[member] = _decoded(text[start:i])
        elif c == ":":
            key = False
            i += 1
        elif c == ",":
            key = closers[-1] == "}"
            i += 1
        elif c == '"':
            end, _ = _string_end(text, i)
            if end < 0:
                break
            if key and len(closers) == 1:
                member = _decoded(text[i:end])
            elif len(closers) == 1 and member in names:
                found[member] = _decoded(text[i:end])
            i = end
        else:
            scalar = _SCALAR.match(text, i)
            if scalar is None or scalar.end() == n:  # at the end, it may go on (a number's digits)
                break
            if len(closers) == 1 and member in names:
                found[member] = _decoded(text[i:scalar.end()])
            i = scalar.end()
    return found


def _decoded(text: str) -> Any:
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
