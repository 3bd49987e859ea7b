"""The tokentill client SDK, sync and async, on httpx.

    with client.reserve("acme", "model-a", messages=msgs, max_output_tokens=500) as r:
        meter = r.stream_meter()
        for delta in stream:
            meter.add(delta)              # counts output tokens with tiktoken as they arrive
        r.record(openai_usage=usage)      # optional: the provider's usage wins when present

On a normal exit the reservation is settled with the usage recorded on it (or, failing that, the
prompt's tokens plus the tokens the meter counted). On an exception it is settled with what was
generated if any output arrived (the tokens were produced, so they are billed), otherwise
released; the exception is re-raised either way. Network failures are retried with the same
idempotency keys, so a retry never charges twice.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from pricing.tokens import TokenCounter

RETRYABLE_STATUS = frozenset({502, 503, 504})


class TokentillError(Exception):
    """A problem+json answer from the server."""

    def __init__(self, status: int, code: str, detail: str, body: Mapping[str, Any]) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code, self.detail, self.body = status, code, detail, body


class InsufficientFunds(TokentillError): ...
class BudgetExceeded(TokentillError): ...
class UnpricedModel(TokentillError): ...
class ValidationFailed(TokentillError): ...
class IdempotencyConflict(TokentillError): ...
class NotFound(TokentillError): ...
class Unauthorized(TokentillError): ...
class Forbidden(TokentillError): ...
class ReservationClosed(TokentillError): ...


ERRORS: dict[str, type[TokentillError]] = {
    "insufficient_funds": InsufficientFunds, "budget_exceeded": BudgetExceeded,
    "unpriced_model": UnpricedModel, "validation_error": ValidationFailed,
    "idempotency_conflict": IdempotencyConflict, "not_found": NotFound, "unauthorized": Unauthorized,
    "forbidden": Forbidden, "reservation_closed": ReservationClosed,
}


def _raise_for(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = {"code": "http_error", "detail": response.text}
    if response.is_success:
        return body
    code = body.get("code", "http_error") if isinstance(body, dict) else "http_error"
    detail = body.get("detail", "") if isinstance(body, dict) else str(body)
    raise ERRORS.get(code, TokentillError)(response.status_code, code, detail, body)


class StreamMeter:
    """Counts a stream's output tokens with the model's tiktoken encoding, as text arrives."""

    def __init__(self, counter: TokenCounter, model: str) -> None:
        self._counter, self._model = counter, model
        self._text: list[str] = []

    def add(self, delta: str) -> None:
        self._text.append(delta)

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def output_tokens(self) -> int:
        """Tokens of the text so far, encoded as a whole (deltas may split a token)."""
        return self._counter.count_text(self.text, self._model).raw_tokens if self._text else 0


class _Reservation:
    """What both reservation context managers share: the recorded usage and the settle body."""

    def __init__(self, client: Any, body: dict[str, Any], counter: TokenCounter) -> None:
        self._client, self._body, self._counter = client, body, counter
        self.data: dict[str, Any] = {}
        self.settlement: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None
        self._meter: StreamMeter | None = None
        self._captures = 0

    @property
    def id(self) -> str:
        return self.data["id"]

    def stream_meter(self) -> StreamMeter:
        if self._meter is None:
            self._meter = StreamMeter(self._counter, self._body["model"])
        return self._meter

    def record(self, *, openai_usage: Mapping[str, Any] | None = None,
               anthropic_usage: Mapping[str, Any] | None = None, **canonical: int) -> None:
        """Record the provider's usage (verbatim) or canonical token counts; it wins over the meter."""
        if openai_usage is not None:
            self._usage = {"openai_usage": dict(openai_usage)}
        elif anthropic_usage is not None:
            self._usage = {"anthropic_usage": dict(anthropic_usage)}
        else:
            self._usage = {"usage": dict(canonical)}

    def _prompt_tokens(self) -> int:
        estimate = self._body.get("estimate", {})
        if "input_tokens" in estimate:
            return int(estimate["input_tokens"])
        if "messages" in estimate:
            return self._counter.count_messages(estimate["messages"], self._body["model"]).raw_tokens
        return self._counter.count_text(estimate.get("prompt", ""), self._body["model"]).raw_tokens

    def _exit_call(self, failed: bool) -> tuple[str, dict[str, Any], str]:
        """What leaving the block does: (path, body, idempotency key).

        Recorded usage wins; else the prompt plus the metered output. A failure before any
        output releases the hold; a failure after some output bills what was generated.
        """
        metered = self._meter.output_tokens if self._meter is not None else 0
        if failed and self._usage is None and metered == 0:
            return f"/v1/reservations/{self.id}/release", {}, self._key("release")
        body = self._usage or {"usage": {"input_tokens": self._prompt_tokens(), "output_tokens": metered}}
        return f"/v1/reservations/{self.id}/settle", {**body, "final": True}, self._key("settle")

    def _capture_call(self, usage: dict[str, int]) -> tuple[str, dict[str, Any], str]:
        self._captures += 1
        return f"/v1/reservations/{self.id}/settle", {"usage": usage, "final": False}, self._key("capture")

    def _key(self, action: str) -> str:
        return f"{self.data['id']}:{action}:{self._captures}"


class Reservation(_Reservation):
    def __enter__(self) -> Reservation:
        self.data = self._client._call("POST", "/v1/reservations", self._body)
        return self

    def capture(self, **usage: int) -> dict[str, Any]:
        """Charge part of the usage now and keep the hold open (agent loops, long streams)."""
        path, body, key = self._capture_call(usage)
        return self._client._call("POST", path, body, key=key)

    def __exit__(self, exc_type, exc, tb) -> None:
        path, body, key = self._exit_call(failed=exc_type is not None)
        self.settlement = self._client._call("POST", path, body, key=key)


class AsyncReservation(_Reservation):
    async def __aenter__(self) -> AsyncReservation:
        self.data = await self._client._call("POST", "/v1/reservations", self._body)
        return self

    async def capture(self, **usage: int) -> dict[str, Any]:
        path, body, key = self._capture_call(usage)
        return await self._client._call("POST", path, body, key=key)

    async def __aexit__(self, exc_type, exc, tb) -> None:
        path, body, key = self._exit_call(failed=exc_type is not None)
        self.settlement = await self._client._call("POST", path, body, key=key)


def _reserve_body(customer: str, model: str, *, request_id: str | None, messages: Any, prompt: str | None,
                  input_tokens: int | None, max_output_tokens: int, ttl_seconds: int,
                  dimensions: Mapping[str, str] | None) -> dict[str, Any]:
    given = [x is not None for x in (messages, prompt, input_tokens)]
    if sum(given) != 1:
        raise ValueError("give exactly one of messages=, prompt= or input_tokens=")
    estimate: dict[str, Any] = {"max_output_tokens": max_output_tokens}
    if messages is not None:
        estimate["messages"] = list(messages)
    elif prompt is not None:
        estimate["prompt"] = prompt
    else:
        estimate["input_tokens"] = input_tokens
    return {"customer_id": customer, "request_id": request_id or f"req_{uuid.uuid4().hex}", "model": model,
            "ttl_seconds": ttl_seconds, "estimate": estimate, "dimensions": dict(dimensions or {})}


class _Base:
    def __init__(self, base_url: str, api_key: str, *, retries: int = 4, backoff_s: float = 0.05) -> None:
        self._base_url, self._retries, self._backoff_s = base_url.rstrip("/"), retries, backoff_s
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self.counter = TokenCounter()

    def _request(self, method: str, path: str, body: Any, key: str | None) -> dict[str, Any]:
        headers = dict(self._headers)
        if key is None and method in ("POST", "DELETE"):
            key = f"sdk_{uuid.uuid4().hex}"  # one key for all the retries of this call
        if key is not None:
            headers["Idempotency-Key"] = key
        return {"method": method, "url": self._base_url + path, "headers": headers,
                **({"json": body} if body is not None and method != "GET" else {})}

    def reserve_body(self, customer: str, model: str, *, request_id: str | None = None, messages: Any = None,
                     prompt: str | None = None, input_tokens: int | None = None, max_output_tokens: int = 0,
                     ttl_seconds: int = 300, dimensions: Mapping[str, str] | None = None) -> dict[str, Any]:
        return _reserve_body(customer, model, request_id=request_id, messages=messages, prompt=prompt,
                             input_tokens=input_tokens, max_output_tokens=max_output_tokens,
                             ttl_seconds=ttl_seconds, dimensions=dimensions)


class Client(_Base):
    """Synchronous client."""

    def __init__(self, base_url: str, api_key: str, *, transport: httpx.BaseTransport | None = None,
                 timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.Client(transport=transport, timeout=timeout)

    def _call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> dict[str, Any]:
        request = self._request(method, path, body, key)
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(**request)
                if response.status_code not in RETRYABLE_STATUS or attempt == self._retries:
                    return _raise_for(response)
            except httpx.TransportError:
                if attempt == self._retries:
                    raise
            time.sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def reserve(self, customer: str, model: str, **kwargs: Any) -> Reservation:
        return Reservation(self, self.reserve_body(customer, model, **kwargs), self.counter)

    def get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path)

    def post(self, path: str, body: Any, *, key: str | None = None) -> dict[str, Any]:
        return self._call("POST", path, body, key=key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client."""

    def __init__(self, base_url: str, api_key: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 10.0, **kwargs: Any) -> None:
        super().__init__(base_url, api_key, **kwargs)
        self._http = httpx.AsyncClient(transport=transport, timeout=timeout)

    async def _call(self, method: str, path: str, body: Any = None, *, key: str | None = None) -> dict[str, Any]:
        request = self._request(method, path, body, key)
        for attempt in range(self._retries + 1):
            try:
                response = await self._http.request(**request)
                if response.status_code not in RETRYABLE_STATUS or attempt == self._retries:
                    return _raise_for(response)
            except httpx.TransportError:
                if attempt == self._retries:
                    raise
            await asyncio.sleep(self._backoff_s * 2**attempt)
        raise AssertionError("unreachable")

    def reserve(self, customer: str, model: str, **kwargs: Any) -> AsyncReservation:
        return AsyncReservation(self, self.reserve_body(customer, model, **kwargs), self.counter)

    async def get(self, path: str) -> dict[str, Any]:
        return await self._call("GET", path)

    async def post(self, path: str, body: Any, *, key: str | None = None) -> dict[str, Any]:
        return await self._call("POST", path, body, key=key)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
