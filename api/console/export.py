"""The export download: `tokentill audit export` (ledger.export) streamed to the browser.

The writers are synchronous (psycopg, server-side cursors, one REPEATABLE READ READ ONLY
snapshot); one runs in a thread and hands 64 KiB chunks over a bounded queue, so memory stays
flat whatever the ledger's size, and a browser that goes away stops it at its next chunk. The
response begins once the writer has begun to write: what it refuses before (two accounts whose
Beancount names would be one) is said on the form, where a download, begun, ended empty.

A server process writes one export at a time (`WRITING`): each holds a database session of its
own, outside the request pool, for as long as it is written, and `tokentill serve` counts one
beside the pool (api.runtime.BESIDE_THE_POOL); a second is refused beside the form (429) until
the first has ended.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import Stream, Template
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from api.console.auditor import AUDITOR, day_start
from api.console.web import PREFIX, allow, render, viewer
from api.errors import ApiError
from api.routes.wire import time_in
from ledger import export as exporting
from pricing.money import CURRENCY_MINOR_UNITS
from wallets.errors import WalletValidationError

CHUNK = 65_536
# Litestar adds "; charset=utf-8" to a text/ media type itself (given here too, it was said twice).
MEDIA = {"beancount": "text/plain", "csv": "text/csv",
         "jsonl": "application/jsonl; charset=utf-8"}
EXTENSION = {"beancount": "beancount", "csv": "csv", "jsonl": "jsonl"}


# Exports being written by this process: one at a time, released when the writer's session closes.
WRITING = threading.BoundedSemaphore(1)
BUSY = ("another journal export is being written by this server (one at a time: each holds a database "
        "session while it is written); download again when it has ended")


class Busy(Exception):
    pass


class _Cancelled(Exception):
    pass


_BEGUN = object()  # the writer's first write: every refusal it makes before writing is past


class _Chunks:
    """A text sink for an export writer that hands full chunks to the event loop, after a _BEGUN
    on its first write."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue, stop: threading.Event) -> None:
        self.loop, self.queue, self.stop = loop, queue, stop
        self.parts: list[str] = []
        self.size = 0
        self.begun = False

    def write(self, text: str) -> int:
        if not self.begun:
            self.begun = True
            self.put(_BEGUN)
        self.parts.append(text)
        self.size += len(text)
        if self.size >= CHUNK:
            self.flush()
        return len(text)

    def flush(self) -> None:
        if self.parts:
            self.put("".join(self.parts).encode())
            self.parts, self.size = [], 0

    def put(self, item: object) -> None:
        while True:  # wait for room, but give up as soon as the browser has gone
            if self.stop.is_set():
                raise _Cancelled
            future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
            try:
                future.result(timeout=1)
                return
            except TimeoutError:
                future.cancel()


class _Download:
    """The chunks of an export that has begun, for the response. `close` stops the writer at its
    next chunk: the response closes it however its sending ends (`_Sent`), at the end, on an
    error, or on the browser's going away, in the midst of a send or not."""

    def __init__(self, queue: asyncio.Queue, stop: threading.Event) -> None:
        self.queue, self.stop = queue, stop

    def __aiter__(self) -> _Download:
        return self

    async def __anext__(self) -> bytes:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item  # the response ends the download unfinished
        return item

    def close(self) -> None:
        self.stop.set()


class _Sent:
    """An ASGI response that sends `response` (the download's Stream) and then closes `download`,
    whatever ended the sending. A browser that goes away cancels the send in progress, and the
    response then asks for no chunk again: the writer, left waiting on a full queue with its
    transaction open, was stopped only when the download was collected (`__del__`)."""

    def __init__(self, response: ASGIResponse, download: _Download) -> None:
        self.response, self.download = response, download

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.download.close()


class _DownloadStream(Stream):
    """The download's Stream, sent by `_Sent`."""

    def __init__(self, download: _Download, **kwargs: Any) -> None:
        super().__init__(download, **kwargs)
        self.download = download

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        return _Sent(super().to_asgi_response(*args, **kwargs), self.download)  # type: ignore[return-value]


async def begin(url: str, fmt: str, window: exporting.Window) -> AsyncIterator[bytes]:
    """The export `fmt` of `window`, begun: a refusal the writer makes before its first byte
    (the Beancount names' clash, exporting.NameClash) or any other error before it is raised
    here, before a response has begun; later ones end the download unfinished. Busy while this
    process writes another (WRITING)."""
    if not WRITING.acquire(blocking=False):
        raise Busy(BUSY)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue(maxsize=8)
    stop = threading.Event()
    sink = _Chunks(loop, queue, stop)

    def run() -> None:
        try:
            with exporting.connect(url) as conn:
                exporting.WRITERS[fmt](conn, sink, window, None, CURRENCY_MINOR_UNITS)
            sink.flush()
            sink.put(None)
        except _Cancelled:
            pass
        except Exception as exc:  # handed to the response (or, before the first write, to begin)
            with contextlib.suppress(_Cancelled):
                sink.put(exc)
        finally:
            WRITING.release()  # the session is closed

    download = _Download(queue, stop)
    try:
        threading.Thread(target=run, name="console-export", daemon=True).start()
    except BaseException:
        WRITING.release()
        raise
    try:
        first = await queue.get()
    except BaseException:
        stop.set()
        raise
    if isinstance(first, Exception):
        raise first
    if first is None:  # nothing written (the writers write a header, at least): an empty file
        queue.put_nowait(None)
    return download


@get(f"{PREFIX}/audit/export", guards=[allow(*AUDITOR)], name="console-export")
async def export_form(request: Request) -> Template:
    return render(request, "audit/export.html", form={"format": "jsonl", "from": "", "to": ""}, section="export")


def _window(fmt: str, start: str | None, end: str | None) -> exporting.Window:
    if fmt not in exporting.FORMATS:
        raise WalletValidationError("format", "beancount, csv or jsonl")
    window = exporting.Window(time_in(day_start(start, "from"), "from"), time_in(day_start(end, "to"), "to"))
    if window.start and window.end and window.start > window.end:  # the same day: an export of no entry, as
        raise WalletValidationError("to", "must not be before from")  # GET /v1/journal and the command take it
    return window


@get(f"{PREFIX}/audit/export/download", guards=[allow(*AUDITOR)], name="console-export-download")
async def export_download(state: State, request: Request,
                          fmt: Annotated[str, QueryParameter(name="format", max_length=16)] = "jsonl",
                          start: Annotated[str | None, QueryParameter(name="from", max_length=10)] = None,
                          end: Annotated[str | None, QueryParameter(name="to", max_length=10)] = None
                          ) -> Stream | Template:
    """The journal as `tokentill audit export --format F [--from --to]` writes it. It spans every
    customer (platform accounts included), so a key limited to customers may not take it."""
    if viewer(request).visible() is not None:
        raise ApiError("forbidden", "the export holds every customer's entries; a key limited to customers "
                       "may not download it", 403)
    try:
        window = _window(fmt, start, end)
    except WalletValidationError as exc:  # said beside the form as it was sent
        return render(request, "audit/export.html", status=422, refused=exc.context["fields"],
                      form={"format": fmt, "from": start or "", "to": end or ""}, section="export")
    try:
        download = await begin(state.services.database_url, fmt, window)
    except exporting.NameClash as exc:  # refused before any byte: said beside the form
        return render(request, "audit/export.html", status=409, failed=f"{exc}. CSV and JSON lines need no "
                      "Beancount names and still export them.",
                      form={"format": fmt, "from": start or "", "to": end or ""}, section="export")
    except Busy as exc:
        return render(request, "audit/export.html", status=429, failed=str(exc),
                      form={"format": fmt, "from": start or "", "to": end or ""}, section="export")
    name = "tokentill-journal" + (f"-{start}" if start else "") + (f"-to-{end}" if end else "")
    return _DownloadStream(download, media_type=MEDIA[fmt],
                  headers={"Content-Disposition": f'attachment; filename="{name}.{EXTENSION[fmt]}"',
                           "Cache-Control": "no-store"})
