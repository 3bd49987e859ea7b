"""The SDK's reservation blocks: what leaving one sends (settle or release), their extension, and
the stream meter.

Both clients share them; the client does the sending (`_call`, `_deliver`, `_settle_or_release`).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx

from api.bearer import idempotency_key_problem
from api.client_errors import ReservationClosed, SettlementSpooled, TokentillError
from api.delivery import NOT_SENT, proxy_gave_up, seconds_until
from api.stream_texts import choice_texts_of_event
from pricing.errors import InvalidUsageError
from pricing.normalize import TIER_FIELDS, USAGE_FORMS
from pricing.tokens import TokenCounter

log = logging.getLogger("tokentill.client")
# An async block's exit encodes a text this long or longer in a thread, not on the event loop
# (a thread's hand-off costs about what encoding 16,000 characters does).
COUNT_ON_THE_LOOP_CHARS = 16_000
# What the server takes (api/routes/wire.py, api/routes/reservations.py): an Idempotency-Key, and a capture_id
MAX_KEY_CHARS, MAX_CAPTURE_ID_CHARS = 255, 200



class Unanswered:
    """Whether a reserve may have made a hold its caller was never told of: one of its attempts
    reached the server and its answer was lost (a read timeout, a dropped connection, a proxy's
    502, 504 or bare 503), and no later attempt under the same Idempotency-Key was answered."""

    def __init__(self) -> None:
        self.reached = False

    def watch(self, send: Callable[[], httpx.Response]) -> Callable[[], httpx.Response]:
        def attempt() -> httpx.Response:
            try:
                return self._saw(send())
            except NOT_SENT:
                raise
            except httpx.TransportError:
                self.reached = True
                raise
        return attempt

    def awatch(self, send: Callable[[], Awaitable[httpx.Response]]) -> Callable[[], Awaitable[httpx.Response]]:
        async def attempt() -> httpx.Response:
            try:
                return self._saw(await send())
            except NOT_SENT:
                raise
            except httpx.TransportError:
                self.reached = True
                raise
        return attempt

    def _saw(self, response: httpx.Response) -> httpx.Response:
        self.reached = self.reached or proxy_gave_up(response)
        return response

    def left_a_hold(self, error: BaseException) -> bool:
        """True when the call ended with `error`, not with an answer, after an attempt that may
        have made the hold: a refusal is the key's answer, so no hold. A 408, and a 429 other than
        a budget's (a rate limiter's in front of the server), answer nothing about the key."""
        return self.reached and not answered_by_the_server(error)


def answered_by_the_server(error: BaseException) -> bool:
    """A reserve's error that is the server's answer to its Idempotency-Key: a 4xx refusal, but
    for a 408 and a 429 that is not `budget_exceeded`."""
    if not isinstance(error, TokentillError) or error.status >= 500 or error.status == 408:
        return False
    return error.status != 429 or error.code == "budget_exceeded"


class StreamMeter:
    """Counts a stream's output tokens with the model's tiktoken encoding, as text arrives."""

    def __init__(self, counter: TokenCounter, model: str) -> None:
        self._counter, self._model = counter, model
        self._text: list[str] = []
        self._choices: dict[int, list[str]] = {}  # each chat choice's texts (a call with `n`), metered apart

    def add(self, delta: object) -> None:
        """One piece of the stream: its text, or the provider's event as it came (an OpenAI chat
        chunk or responses event, an Anthropic event; its SDK's object or a dict; or what the
        SDKs' `stream()` helpers yield: their derived events repeat a chunk's text), whose every
        generated text counts (message text, refusals, reasoning, tool calls' names and
        arguments: api/stream_texts.py, as the gateway meters). None is nothing (an OpenAI
        stream's role and finish chunks carry `delta.content` None); anything else is refused
        here, not at the block's exit, which must settle."""
        if delta is None:
            return
        if isinstance(delta, str):
            self._add([(0, delta)])
            return
        inner = delta.get("chunk") if isinstance(delta, Mapping) else getattr(delta, "chunk", None)
        if inner is not None and _type_of(delta) == "chunk":  # the openai SDK's stream helper: the chunk
            delta = inner  # (its snapshot, the whole answer so far, left alone; its derived events repeat it)
        dump = getattr(delta, "model_dump", None)  # a provider SDK's (pydantic) event
        event = dump(mode="json", exclude_none=True) if callable(dump) else delta
        if not isinstance(event, Mapping):
            raise TypeError(f"a stream meter adds str deltas or a provider's stream events, not {type(delta).__name__}")
        self._add(choice_texts_of_event(event))

    def _add(self, texts: list[tuple[int, str]]) -> None:
        for index, text in texts:
            self._text.append(text)
            self._choices.setdefault(index, []).append(text)

    @property
    def text(self) -> str:
        return "".join(self._text)

    @property
    def output_tokens(self) -> int:
        """Tokens of the text so far, each choice's encoded as a whole (deltas may split a token)."""
        return sum(self._counter.count_text("".join(texts), self._model).raw_tokens
                   for texts in self._choices.values() if any(texts))


def _type_of(event: object) -> object:
    return event.get("type") if isinstance(event, Mapping) else getattr(event, "type", None)


class _Reservation:
    """What both reservation context managers share: the recorded usage and the settle body."""

    def __init__(self, client: Any, body: dict[str, Any], counter: TokenCounter, *,
                 callers_request_id: bool = False) -> None:
        self._client, self._body, self._counter = client, body, counter
        self._callers_request_id = callers_request_id  # the caller's own, not one the SDK made
        self.data: dict[str, Any] = {}
        self.settlement: dict[str, Any] | None = None
        self._usage: dict[str, Any] | None = None
        self._meter: StreamMeter | None = None
        self._captures = 0
        self._entered_at = 0.0
        self.spooled: SettlementSpooled | None = None  # set when the exit's settle went to the spool
        self.queued = False  # the exit's settle was queued for a background settle (settlement stays None)
        self._held_until: float | None = None  # by the local clock, once extended

    @property
    def id(self) -> str:
        return self.data["id"]

    @property
    def request_id(self) -> str:
        """The reserve's request id: the caller's, or the one the SDK made."""
        return self._body["request_id"]

    def stream_meter(self) -> StreamMeter:
        if self._meter is None:
            self._meter = StreamMeter(self._counter, self._body["model"])
        return self._meter

    def record(self, *, openai_usage: Any = None, anthropic_usage: Any = None, gemini_usage: Any = None,
               **canonical: Any) -> None:
        """Record the provider's usage (verbatim: a dict, or its SDK's object, `response.usage`) or
        canonical token counts; it wins over the meter. Nothing at all is a ValueError (the service
        refuses usage that gives no count): a call that used nothing records zeros."""
        self._usage = usage_body("record", openai_usage=openai_usage, anthropic_usage=anthropic_usage,
                                 gemini_usage=gemini_usage, canonical=canonical)

    def _prompt_tokens(self) -> int:
        estimate = self._body.get("estimate", {})
        if "input_tokens" in estimate:
            return int(estimate["input_tokens"])
        if "messages" in estimate:
            return self._counter.count_messages(estimate["messages"], self._body["model"]).raw_tokens
        return self._counter.count_text(estimate.get("prompt", ""), self._body["model"]).raw_tokens

    def _text_to_count(self, failed: bool) -> int:
        """About how many characters of text the exit's `_exit_call` encodes with tiktoken."""
        metered = len(self._meter.text) if self._meter is not None else 0
        if self._usage is not None or (failed and metered == 0):
            return 0
        estimate = self._body.get("estimate", {})
        if "input_tokens" in estimate:
            return metered
        if "messages" in estimate:
            return metered + sum(len(str(value)) for message in estimate["messages"] if isinstance(message, Mapping)
                                 for value in message.values())
        prompt = estimate.get("prompt", "")
        return metered + (len(prompt) if isinstance(prompt, str) else 0)

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

    def _capture_call(self, usage: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
        """A capture of `usage` (usage_body's, checked as `record()`'s is): (path, body, key)."""
        self._captures += 1
        key = self._key("capture")  # also the capture_id, so no API key can charge it twice
        return f"/v1/reservations/{self.id}/settle", {**usage, "final": False, "capture_id": key}, key

    def _hold_left_s(self) -> float | None:
        """Seconds until the hold expires, by the local clock since the reserve (no clock skew)."""
        if self._held_until is not None:
            return self._held_until - time.monotonic()
        ttl = self._body.get("ttl_seconds")
        if ttl is None:
            return seconds_until(self.data.get("expires_at"))
        return ttl - (time.monotonic() - self._entered_at)

    def _extended(self, answer: dict[str, Any], ttl_seconds: int, asked_at: float) -> dict[str, Any]:
        self.data["expires_at"] = answer["expires_at"]
        self._held_until = asked_at + ttl_seconds
        return answer

    def _spooled_on_exit(self, spooled: SettlementSpooled, exc: BaseException | None) -> None:
        self.spooled = spooled
        self._client._spooled(spooled, exc)

    @staticmethod
    def _failed_on_exit(error: Exception, exc: BaseException | None) -> None:
        """The exit's settle or release was refused (or failed unspooled): raise that, unless the
        block's own error is in flight; then it goes on, with a note (the caller catches its own)."""
        if exc is None:
            raise error
        log.warning("leaving a block that raised %s: %s", type(exc).__name__, error)
        exc.add_note(f"tokentill: {error}")

    def _key(self, action: str) -> str:
        return f"{self.data['id']}:{action}:{self._captures}"


class Reservation(_Reservation):
    def __enter__(self) -> Reservation:
        self.data = self._client._reserve_entry(self._body, self._callers_request_id)
        self._entered_at = time.monotonic()
        return self

    def capture(self, *, openai_usage: Any = None, anthropic_usage: Any = None, gemini_usage: Any = None,
                **canonical: Any) -> dict[str, Any] | None:
        """Charge part of the usage now and keep the hold open (agent loops, long streams); the
        usage in any form `record()` takes, checked as it checks it."""
        path, body, key = self._capture_call(usage_body(
            "capture", openai_usage=openai_usage, anthropic_usage=anthropic_usage, gemini_usage=gemini_usage,
            canonical=canonical))
        return self._client._settle_or_release(path, body, key, self.id, self._hold_left_s())

    def extend(self, ttl_seconds: int) -> dict[str, Any]:
        """Keep the hold `ttl_seconds` from now (a call running longer than its TTL)."""
        asked_at = time.monotonic()
        return self._extended(self._client.extend(self.id, ttl_seconds), ttl_seconds, asked_at)

    def __exit__(self, exc_type, exc, tb) -> None:
        path, body, key = self._exit_call(failed=exc_type is not None)
        if self._client._queue(path, body, key, self.id):
            self.queued = True
            return
        try:
            self.settlement = self._client._deliver(path, body, key, self.id, self._hold_left_s())
        except SettlementSpooled as spooled:
            self._spooled_on_exit(spooled, exc)
        except Exception as error:  # raised again, unless the block's own error is in flight
            self._failed_on_exit(error, exc)


class AsyncReservation(_Reservation):
    async def __aenter__(self) -> AsyncReservation:
        self.data = await self._client._reserve_entry(self._body, self._callers_request_id)
        self._entered_at = time.monotonic()
        return self

    async def capture(self, *, openai_usage: Any = None, anthropic_usage: Any = None, gemini_usage: Any = None,
                      **canonical: Any) -> dict[str, Any] | None:
        path, body, key = self._capture_call(usage_body(
            "capture", openai_usage=openai_usage, anthropic_usage=anthropic_usage, gemini_usage=gemini_usage,
            canonical=canonical))
        return await self._client._settle_or_release(path, body, key, self.id, self._hold_left_s())

    async def extend(self, ttl_seconds: int) -> dict[str, Any]:
        asked_at = time.monotonic()
        return self._extended(await self._client.extend(self.id, ttl_seconds), ttl_seconds, asked_at)

    async def __aexit__(self, exc_type, exc, tb) -> None:
        failed = exc_type is not None
        if self._text_to_count(failed) < COUNT_ON_THE_LOOP_CHARS:
            await self._leave(self._exit_call(failed), exc)
            return
        # tiktoken on a big text (20 ms a megabyte, more) would stop every task of the loop:
        # counted in a thread, by a task of the client, so that a caller cancelled meanwhile still
        # has its exit sent (as `_deliver_exit` does) and `aclose` waits for it
        counting = self._client._on_its_own(asyncio.to_thread(self._exit_call, failed))
        try:
            call = await asyncio.shield(counting)
        except asyncio.CancelledError:
            self._client._on_its_own(self._leave_once_counted(counting, exc)).add_done_callback(report_orphaned_exit)
            raise
        await self._leave(call, exc)

    async def _leave_once_counted(self, counting: asyncio.Task[tuple[str, dict[str, Any], str]],
                                  exc: BaseException | None) -> None:
        await self._leave(await counting, exc)

    async def _leave(self, call: tuple[str, dict[str, Any], str], exc: BaseException | None) -> None:
        path, body, key = call
        if await self._client._queue(path, body, key, self.id):
            self.queued = True
            return
        try:
            self.settlement = await self._client._deliver_exit(path, body, key, self.id, self._hold_left_s())
        except SettlementSpooled as spooled:
            self._spooled_on_exit(spooled, exc)
        except Exception as error:  # raised again, unless the block's own error is in flight
            self._failed_on_exit(error, exc)


def report_orphaned_exit(task: asyncio.Task[Any]) -> None:
    """How a block's exit ended after its caller was cancelled: logged, since nobody awaits it."""
    if task.cancelled():
        log.warning("a call interrupted at close (a settle or release is left in the spool)")
    elif (error := task.exception()) is not None:
        log.warning("a settle or release after its caller was cancelled: %s", error)


def checked_usage(usage: dict[str, Any], call: str = "record") -> dict[str, Any]:
    """`usage` ({form: object}), once the server's own rules take it: else a ValueError naming the
    field, where it is recorded (a settle the server refuses leaves the call unbilled). Read as the
    server reads it, by the same function (USAGE_FORMS), from its JSON (a tuple is sent as a list)."""
    [(form, value)] = usage.items()
    json_numbers(call, form, value)
    try:
        USAGE_FORMS[form](json.loads(json.dumps(value)))
    except InvalidUsageError as exc:
        raise ValueError(f"{call}({form}=...): the server would refuse it: {exc}") from None
    return usage


def json_numbers(call: str, form: str, value: Any) -> None:
    """A ValueError at the call where a float in `value` is NaN or an infinity, whatever its field
    (one the server ignores too): json.dumps writes it, the SDK's sender (allow_nan=False) cannot,
    and the server refuses the whole body as malformed JSON."""
    if (where := _not_json_number(value, "")) is not None:
        raise ValueError(f"{call}({form}=...): the server would refuse it: {where} is not a number JSON "
                         "carries: the body would be malformed JSON, whatever the field")


def _not_json_number(value: Any, path: str) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"{path or 'the usage'}: {value!r}"
    items = value.items() if isinstance(value, Mapping) else (
        enumerate(value) if isinstance(value, (list, tuple)) else ())
    for name, item in items:
        if (where := _not_json_number(item, f"{path}.{name}" if path else str(name))) is not None:
            return where
    return None


def queued_settle(body: dict[str, Any]) -> dict[str, Any]:
    """A settle's body (settle_call's) about to be queued, once the server takes its usage
    (checked_usage), else a ValueError at the call: queued, its refusal came back from the bulk
    call and went to `.rejected`, the call never billed and its caller told it was queued."""
    [form] = [name for name in body if name in USAGE_FORMS]
    checked_usage({form: body[form]}, "settle")
    return body


def usage_body(call: str, *, openai_usage: Any = None, anthropic_usage: Any = None, gemini_usage: Any = None,
               canonical: Mapping[str, Any]) -> dict[str, Any]:
    """The usage of `record()` and of a capture (sync and async), as a settle's body carries it,
    `{form: value}`, once the server's own rules take it (checked_usage): one of a provider's usage
    (its SDK's object or a mapping) or canonical counts (`canonical`, the call's keywords); else a
    ValueError (a TypeError for a value of the wrong type) naming the argument, at the call. A
    capture built its own body, so `capture(openai_usage=...)` went as a canonical count named
    `openai_usage`, 422 where `record(openai_usage=...)` settled."""
    given = [(f"{form}=", form, value) for form, value in (
        ("openai_usage", openai_usage), ("anthropic_usage", anthropic_usage), ("gemini_usage", gemini_usage))
        if value is not None]
    if canonical:
        given.append((", ".join(f"{name}=" for name in canonical), "usage", canonical))
    if not given:
        raise ValueError(f"no usage to {call}: give the counts, 0 where the call used nothing "
                         f"({call}(input_tokens=0, output_tokens=0))")
    if len(given) > 1:
        raise ValueError(f"{call}(...): give one usage, not {' and '.join(label for label, _, _ in given)}: a "
                         "provider's usage as openai_usage=, anthropic_usage= or gemini_usage=, or canonical counts")
    [(_, form, value)] = given
    if form != "usage":
        return checked_usage({form: plain_usage(value, call, form)}, call)
    for name, count in value.items():  # refused here, not at the block's exit far from the call
        if name == "usage":  # settle's keyword, which `record` and `capture` have not
            raise TypeError(f"{call}(usage=...): {call}() takes canonical counts as keywords, "
                            f"{call}(input_tokens=1000, output_tokens=400) ({call}(**counts) for a mapping), or a "
                            "provider's usage as openai_usage=, anthropic_usage= or gemini_usage=; usage= is "
                            f"tt.settle's (given {_described(count)})")
        if name in TIER_FIELDS and (count is None or isinstance(count, str)):
            continue
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)):
            raise TypeError(f"{call}({name}=...): a count is a whole number, not {count!r}; a provider's "
                            "usage goes as openai_usage=, anthropic_usage= or gemini_usage=")
    return checked_usage({"usage": dict(value)}, call)


def plain_usage(usage: Any, call: str = "settle", form: str = "usage") -> dict[str, Any]:
    """A usage object as JSON data: a mapping, or a provider SDK's own object (a pydantic model,
    such as openai's CompletionUsage or anthropic's Usage, nested details and all). Raises
    TypeError here, where it is given, naming `call` and `form`, for anything that cannot be sent
    (it was Python's own words: `'int' object is not iterable` for `openai_usage=42`)."""
    dump = getattr(usage, "model_dump", None)
    if callable(dump):
        data = dump(mode="json", by_alias=True, exclude_none=True)
    elif isinstance(usage, Mapping):
        data = dict(usage)
    else:
        takes = ("a mapping of canonical counts" if form == "usage"
                 else "the provider's usage as its SDK gives it (response.usage) or a mapping")
        raise TypeError(f"{call}({form}=...): takes {takes}, not {_described(usage)}")
    try:
        json.dumps(data)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{call}({form}=...): it cannot be sent as JSON: {exc}") from None
    return data


def _described(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


# A reserve answered 200 (not 201) is an earlier call's, under the same request id: a server
# before 9cc70e9 answered a request id with its first answer ("held"), whatever became of that
# hold since (one since answers the reservation as it is now), so its status is asked with a GET.
REPLAYED_RESERVE = 200
# a final settle of a settled or released one is refused; an expired one's is charged late, but
# under no hold: the call was never checked against the wallet, whose credit may be spent since
GONE = ("settled", "released", "expired")


def gone_hold(reservation: Mapping[str, Any]) -> ReservationClosed | None:
    """The refusal of a block whose reservation (`GET /v1/reservations/{id}`) was settled,
    released or expired under its request id: entered, its provider call would be made and its
    exit's settle refused (`reservation_closed`), the call never billed, or for an expired one
    charged late with nothing held for it (onto the receivable past the credit)."""
    status = reservation.get("status")
    if status not in GONE:
        return None
    detail = (f"reservation {reservation.get('id')} of request_id {reservation.get('request_id')} is already "
              f"{status}: a new call needs a new request_id")
    return ReservationClosed(409, "reservation_closed", detail, {
        "code": "reservation_closed", "detail": detail, "reservation_id": reservation.get("id"),
        "reservation_status": status})


def reserve_request(customer: str, model: str, *, request_id: str | None, messages: Any, prompt: str | None,
                    input_tokens: int | None, max_output_tokens: int, ttl_seconds: int,
                    dimensions: Mapping[str, str] | None, cache_ttl: str | None = None) -> dict[str, Any]:
    """A reserve's body; `cache_ttl` ("5m", "1h"): the call writes its prompt to the provider's
    cache for that long (its hold and its settle's cache writes at that price; sent only when given)."""
    given = [x is not None for x in (messages, prompt, input_tokens)]
    if sum(given) != 1:
        raise ValueError("give exactly one of messages=, prompt= or input_tokens=")
    if cache_ttl not in (None, "5m", "1h"):
        raise ValueError(f'cache_ttl=...: "5m" or "1h" (the provider\'s cache_control ttl), not {cache_ttl!r}')
    estimate: dict[str, Any] = {"max_output_tokens": max_output_tokens}
    if messages is not None:
        estimate["messages"] = list(messages)
    elif prompt is not None:
        estimate["prompt"] = prompt
    else:
        estimate["input_tokens"] = input_tokens
    return {"customer_id": customer, "request_id": request_id or f"req_{uuid.uuid4().hex}", "model": model,
            "ttl_seconds": ttl_seconds, "estimate": estimate, "dimensions": dict(dimensions or {}),
            **({"cache_ttl": cache_ttl} if cache_ttl is not None else {})}


def given_key(key: str | None) -> str | None:
    """A call's `key=` as the server keeps it, stripped of spaces (a header cannot carry them around
    it), or a ValueError at the call when the server would refuse it or no header can carry it."""
    if key is None:
        return None
    key = key.strip(" ")
    if not 1 <= len(key) <= MAX_KEY_CHARS:
        raise ValueError(f"key=...: the server takes an Idempotency-Key of 1 to {MAX_KEY_CHARS} characters, "
                         f"not {len(key)}")
    if problem := idempotency_key_problem(key):  # queued, it went in bulk; sent itself, no header carried it
        raise ValueError(f"key=...: {problem}")
    return key


def final_settle_key(reservation_id: str, body: Mapping[str, Any]) -> str:
    """An explicit final settle's own key: `{id}:settle:` and a digest of its body (its JSON, keys
    sorted). The same settle sent again (a retry, a re-run after a crash) is under the same key,
    answered its first answer; another settle of the reservation (other usage) is another request,
    which the server refuses as it refuses any second final settle, 409 `reservation_closed`. Under
    `{id}:settle:0`, a block's exit's key, it was `idempotency_conflict`, and a settle inside a
    block made the exit's own settle conflict."""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    return f"{reservation_id}:settle:{digest[:32]}"


def settle_call(reservation_id: str, final: bool, key: str | None,
                usage: Mapping[str, Any]) -> tuple[str, dict[str, Any], str, str]:
    """An explicit settle: (path, body, idempotency key, reservation id). A capture's key, made
    once per call, is also its capture_id."""
    unknown = set(usage) - {"usage", "openai_usage", "anthropic_usage", "gemini_usage"}
    if len(usage) != 1 or unknown:
        raise ValueError("give exactly one of usage=, openai_usage=, anthropic_usage= or gemini_usage=")
    key = given_key(key)  # refused here: a queued settle the server refuses is set aside, never billed
    if key is not None:
        if not final and len(key) > MAX_CAPTURE_ID_CHARS:
            raise ValueError(f"key=...: a capture's key is its capture_id, which the server takes up to "
                             f"{MAX_CAPTURE_ID_CHARS} characters, not {len(key)}")
    body: dict[str, Any] = {**{name: plain_usage(value, "settle", name) for name, value in usage.items()},
                            "final": final}
    key = key or (final_settle_key(reservation_id, body) if final else f"{reservation_id}:capture:{uuid.uuid4().hex}")
    body.update({} if final else {"capture_id": key})
    for name in usage:  # a foreground settle too: its sender cannot encode it, the server could not read it
        json_numbers("settle", name, body[name])
    return f"/v1/reservations/{reservation_id}/settle", body, key, reservation_id


def release_call(reservation_id: str, key: str | None) -> tuple[str, dict[str, Any], str, str]:
    key = given_key(key) or f"{reservation_id}:release:0"
    return f"/v1/reservations/{reservation_id}/release", {}, key, reservation_id


def extend_call(reservation_id: str, ttl_seconds: int, key: str | None) -> tuple[str, dict[str, Any], str]:
    """An extension: (path, body, idempotency key); its key is made once per call, so its own
    retries replay it and a later extension is another one."""
    return (f"/v1/reservations/{reservation_id}/extend", {"ttl_seconds": ttl_seconds},
            given_key(key) or f"{reservation_id}:extend:{uuid.uuid4().hex}")
