"""The gateway's own refusals in each provider's error shape, so that the caller's SDK raises its
usual exception for the status (402, 429, ...). Our stable `code` rides along in the body."""
from __future__ import annotations

from typing import Any

import msgspec

OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 402: "insufficient_funds",
                403: "permission_error", 404: "invalid_request_error", 409: "invalid_request_error",
                413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
                429: "rate_limit_exceeded"}
ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                   403: "permission_error", 404: "not_found_error", 409: "invalid_request_error",
                   413: "request_too_large", 415: "invalid_request_error", 422: "invalid_request_error",
                   429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


def error_body(provider: str, status: int, code: str, message: str, details: dict[str, Any] | None = None,
               param: str | None = None) -> bytes:
    """`{"error": {...}}` as OpenAI answers, or `{"type": "error", "error": {...}}` as Anthropic does;
    `details` (a refusal's context: the budget's figures, say) ride along under `tokentill`; `param`
    is OpenAI's: the call's top-level field at fault (Anthropic's shape has none)."""
    extra = {"tokentill": details} if details else {}
    if provider == "anthropic":
        return msgspec.json.encode({"type": "error", "error": {
            "type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message, "code": code, **extra}})
    return msgspec.json.encode({"error": {"message": message, "type": OPENAI_TYPES.get(status, "api_error"),
                                          "param": param, "code": code, **extra}})


def stream_error_event(provider: str, code: str, message: str) -> bytes:
    """An error event for a stream already under way (its status was sent): each SDK raises on it."""
    if provider == "anthropic":
        return b"event: error\ndata: " + error_body(provider, 500, code, message) + b"\n\n"
    return b"data: " + error_body(provider, 500, code, message) + b"\n\n"


class Refusal(Exception):
    """The gateway's own refusal, answered in the provider's error shape."""

    def __init__(self, status: int, code: str, message: str, retry_after: str | None = None,
                 details: dict[str, Any] | None = None, allow: str | None = None, final: bool = False,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.retry_after = status, code, message, retry_after
        self.details = details
        self.allow = allow  # a 405's Allow header (RFC 9110 15.5.6: the methods the path takes)
        self.final = final  # the same call meets it again however long it waits: not to be retried
        self.param = param  # the call's top-level field at fault: OpenAI's `param`
