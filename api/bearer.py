"""What a key sent as, or compared with, one header value may hold: one rule for the settings
(TOKENTILL_ADMIN_KEY, the upstream keys), `tokentill spool flush` and the SDK's clients. A header
is read as latin-1 and httpx sends only ASCII, so a character outside ASCII (an é sent as UTF-8
matched no key; httpx refused to send it, UnicodeEncodeError), a line break (a key read from a
file keeps its newline) or another control character (h11's LocalProtocolError) is a key no call
can carry: printable ASCII alone, and no space in an API key (one word)."""
from __future__ import annotations


def _unsendable_at(text: str, *, spaces: bool) -> int | None:
    return next((i for i, c in enumerate(text) if not (c.isascii() and c.isprintable() and (spaces or c != " "))),
                None)


def key_problem(name: str, key: str) -> str | None:
    """Why API key `key` (named `name` in the message) cannot be sent, or None when it can. The
    message says where, never the key itself."""
    if (at := _unsendable_at(key, spaces=False)) is None:
        return None
    return (f"{name} has a space, a line break, another control character or a character outside ASCII "
            f"(at position {at + 1} of {len(key)}): a key is one word of printable ASCII")


def idempotency_key_problem(key: str) -> str | None:
    """Why `key`, an Idempotency-Key (to the server, free text of 1 to 255 characters, spaces
    included, read as UTF-8: api.routes.wire.checked_key), cannot be sent as the header (printable
    ASCII, of which the server takes all), or None when it can."""
    if (at := _unsendable_at(key, spaces=True)) is None:
        return None
    return (f"the Idempotency-Key {key!r} has a line break, another control character or a character outside "
            f"ASCII at position {at + 1} of {len(key)}: a header carries printable ASCII")
