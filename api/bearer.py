"""What a key sent as, or compared with, one header value may hold: one rule for the settings
(TOKENTILL_ADMIN_KEY, the upstream keys), `tokentill spool flush` and the SDK's clients. A header
is read as latin-1 and httpx sends only ASCII, so a character outside ASCII (an é sent as UTF-8
matched no key; httpx refused to send it, UnicodeEncodeError), a space, a line break (a key read
from a file keeps its newline) or another control character (h11's LocalProtocolError) is a key
no call can carry: printable ASCII alone, no space."""
from __future__ import annotations


def key_problem(name: str, key: str) -> str | None:
    """Why `key` (named `name` in the message) cannot be sent, or None when it can. The message
    says where, never the key itself."""
    at = next((i for i, c in enumerate(key) if not (c.isascii() and c.isprintable() and not c.isspace())), None)
    if at is None:
        return None
    return (f"{name} has a space, a line break, another control character or a character outside ASCII "
            f"(at position {at + 1} of {len(key)}): a key is one word of printable ASCII")
