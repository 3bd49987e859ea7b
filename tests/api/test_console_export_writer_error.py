"""A journal export whose writer fails after the download began ends unfinished, never as a whole
file: the response has begun (200, its headers and the chunks before the error are sent), so all
that is left is to end the connection without the body's end (ASGI: no `more_body: False`), which
a browser shows as a failed download; the writer's thread and its transaction end with it."""
from __future__ import annotations

import asyncio
import threading

import pytest
from litestar.exceptions import LitestarException

from api.console import export
from ledger import export as exporting
from tests.api.apps import api_client
from tests.api.test_console_export_disconnect import _open_exports, _settle, _writers, download_scope


async def test_a_writer_error_after_the_first_chunk_ends_the_download_unfinished(scratch_url, monkeypatch):
    monkeypatch.setattr(export, "CHUNK", 4)  # each write below its own chunk

    def failing(conn, sink, *rest) -> None:
        sink.write("aaaa")
        sink.write("bbbb")
        raise RuntimeError("the writer failed")

    monkeypatch.setitem(exporting.WRITERS, "jsonl", failing)
    async with api_client(scratch_url, admin="export-error-admin", signed_in=True) as console:
        before = set(threading.enumerate())
        sent: list[dict] = []

        async def receive() -> dict:  # a browser that stays
            await asyncio.Event().wait()
            return {}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = download_scope(console)
        # raised to the server, which ends the connection there (uvicorn logs it, with the cause)
        with pytest.raises(LitestarException) as raised:
            await asyncio.wait_for(console.app(scope, receive, send), 60)
        chain, error = [], raised.value  # the server's log shows the writer's error as a cause
        while error is not None:  # (the stream's task group's, in an exception group)
            chain.extend(error.exceptions if isinstance(error, BaseExceptionGroup) else [error])
            error = error.__cause__ or error.__context__
        assert any(isinstance(e, RuntimeError) and str(e) == "the writer failed" for e in chain), chain
        assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200, sent[0]
        bodies = [m for m in sent[1:] if m["type"] == "http.response.body"]
        assert b"".join(m["body"] for m in bodies) == b"aaaabbbb"
        assert all(m["more_body"] for m in bodies), "the download looked whole: its end was sent"
        await asyncio.to_thread(_settle, before, scratch_url)
        assert not _writers(before) and _open_exports(scratch_url) == []
