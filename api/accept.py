"""What an Accept header refuses: a media type whose most specific matching range has q=0
(RFC 9110 12.5.1). Litestar's `Accept.best_match` takes a range of q=0 as acceptable, so
`*/*;q=0` (nothing acceptable) was answered as `*/*` is; these helpers leave a refused type out
before it picks. A type no range names is not refused: a route answers JSON to `text/plain` as
before."""
from __future__ import annotations

import re
from collections.abc import Iterable

from litestar.datastructures.headers import MediaTypeHeader

JSON = "application/json"
_ZERO = re.compile(r"0(\.0{0,3})?")


def refuses(accept: str, media_type: str) -> bool:
    """Whether the Accept header `accept` refuses `media_type`: the most specific of its ranges
    that match it (`application/json` over `application/*` over `*/*`) all say q=0."""
    offered = MediaTypeHeader(media_type)
    matching = [r for r in (MediaTypeHeader(part.strip()) for part in accept.split(",") if part.strip())
                if offered.match(r)]
    if not matching:
        return False
    specific = max(r.priority[1] for r in matching)
    return all(_ZERO.fullmatch((r.params.get("q") or "").strip()) for r in matching if r.priority[1] == specific)


def taken(accept: str | None, media_types: Iterable[str]) -> list[str]:
    """The media types of `media_types` (in order) that the Accept header does not refuse; all
    of them without one."""
    return [t for t in media_types if accept is None or not refuses(accept, t)]


__all__ = ["JSON", "refuses", "taken"]
