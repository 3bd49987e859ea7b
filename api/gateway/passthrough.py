"""The providers' free, read-only endpoints, passed through unmetered, so that a client pointed at
the gateway keeps working when it lists models or counts a prompt's tokens.

An explicit allowlist (FREE): OpenAI's `GET /models` and `GET /models/{model}`; Anthropic's
`GET /v1/models`, `GET /v1/models/{model_id}` and `POST /v1/messages/count_tokens`. The caller
authenticates with its tokentill key as for a metered call (api.gateway.proxy: an inference or
admin key); the call goes upstream with the upstream's own key, its query string kept, and its
answer (status, body, the upstream's headers but those api.gateway.forwarding drops) comes back
unchanged, with `x-tokentill-charged: 0` (a 401 or 403, a refusal of the operator's key, is a 502:
api.gateway.forwarding.key_refused).
Nothing is reserved, settled or written to the ledger, and no customer is resolved. Every other
path of the providers (files, batches, fine-tuning, images, audio, ...) is billable and stays 404.
"""
from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import httpx

from api.gateway.forwarding import (
    CALLS,
    KEY_REFUSALS,
    key_refused,
    next_part,
    open_upstream,
    unanswered,
    upstream_headers,
)
from api.gateway.shapes import Refusal

if TYPE_CHECKING:
    from api.gateway.proxy import Exchange

log = logging.getLogger("tokentill.gateway")

_ID = r"/(?!\.\.?$)[^/]+"  # one path segment, never `.` or `..` (httpx would resolve them)
# provider -> (path under its mount, kind); each kind is answered for one method only
FREE = {"openai": ((re.compile("/models"), "models.list"), (re.compile("/models" + _ID), "models.retrieve")),
        "anthropic": ((re.compile("/v1/models"), "models.list"), (re.compile("/v1/models" + _ID), "models.retrieve"),
                      (re.compile("/v1/messages/count_tokens"), "messages.count_tokens"))}
FREE_KINDS = {"models.list": "GET", "models.retrieve": "GET", "messages.count_tokens": "POST"}
_PATH_SAFE = "/:@!$&'()*+,;=-._~"  # RFC 3986 pchar: the rest is percent-encoded again for the upstream


def free_kind(provider: str, path: str) -> str:
    """The kind of a free endpoint at `path` (under the provider's mount), else "unknown"."""
    return next((kind for pattern, kind in FREE[provider] if pattern.fullmatch(path)), "unknown")


async def pass_through(x: Exchange) -> None:
    """Check the caller's key, send the call upstream with the upstream's key and answer what the
    upstream answered; an upstream silent or unreachable is answered as for a metered call."""
    started, method = time.perf_counter(), FREE_KINDS[x.kind]
    try:
        if x.scope["method"] != method:
            raise Refusal(405, "method_not_allowed", f"use {method}", allow=method)
        await x.caller()  # on the head alone: a body is read for a valid key only
        body = await x._body() if method == "POST" else None
    except Refusal as refusal:
        CALLS.labels(x.provider, x.kind, "refused").inc()
        await x._refuse(refusal)
        return
    x.timings["admit"] = time.perf_counter() - started
    base, auth = x.gw.upstream(x.provider, "")  # the base URL, parsed once (not once per model id)
    url = httpx.URL(f"{base}{quote(x.path, safe=_PATH_SAFE)}")
    if x.scope.get("query_string"):
        url = url.copy_with(query=x.scope["query_string"])
    started = time.perf_counter()
    try:
        response = await open_upstream(x, method, url, auth, body)
        try:
            chunks, parts = response.aiter_bytes(), []
            while (part := await next_part(chunks, x.gw.settings.read_timeout_s)) is not None:
                parts.append(part)
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        CALLS.labels(x.provider, x.kind, "upstream_error").inc()
        await x._refuse(unanswered(x, exc))
        return
    except Exception:  # a fault of the gateway's own: logged, answered 500
        log.exception("gateway pass-through %s %s failed", x.provider, x.path)
        await x._refuse(Refusal(500, "internal_error", "an internal error occurred; it has been logged"))
        return
    x.timings["upstream"] = time.perf_counter() - started
    CALLS.labels(x.provider, x.kind, "passed" if response.is_success else "upstream_error").inc()
    if response.status_code in KEY_REFUSALS:
        await x._refuse(key_refused(x, response.status_code, b"".join(parts)))
        return
    await x.respond(response.status_code, [*upstream_headers(response), (b"x-tokentill-charged", b"0")],
                    b"".join(parts))
