"""Reading the auditor's journal through the SDK: every page followed by its cursor, so a listing
is exactly what had committed when its first page was read (see README, The journal).

    for entry in client.journal(customer="acme", start=datetime(2026, 11, 1, tzinfo=UTC)):
        ...
    for page in client.statement_pages("income:platform:usage:USD", start=..., end=...):
        page["opening_balance"], page["postings"], page["closing_balance"]

A time is an aware datetime or an RFC 3339 string with its offset; a naive datetime is refused at
the call (ValueError naming it), before any request: the SDK does not guess its time zone.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlencode

from api.delivery import aware

Moment = datetime | str | None


def _window(start: Moment, end: Moment) -> tuple[Moment, Moment]:
    return aware("start", start), aware("end", end)


def _query(start: Moment, end: Moment, cursor: str | None, **params: Any) -> str:
    named = {"from": start, "to": end, **params, "cursor": cursor}
    return urlencode({k: v.isoformat() if isinstance(v, datetime) else v for k, v in named.items() if v is not None})


def _statement_path(account: str) -> str:
    return f"/v1/accounts/{quote(account, safe=':')}/statement"


class JournalReads:
    """The journal reads of a blocking client (one with `get(path)`)."""

    get: Callable[[str], dict[str, Any]]

    def _pages(self, path: str, start: Moment, end: Moment, **params: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.get(f"{path}?{_query(start, end, cursor, **params)}")
            yield page
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def journal(self, *, start: Moment = None, end: Moment = None, customer: str | None = None,
                account: str | None = None, kind: str | None = None, request_id: str | None = None,
                limit: int = 1000) -> Iterator[dict[str, Any]]:
        """Every entry the key may see that the filters keep, in time order; occurred_at in [start, end)."""
        pages = self._pages("/v1/journal", *_window(start, end), customer=customer, account=account, kind=kind,
                            request_id=request_id, limit=limit)
        return (entry for page in pages for entry in page["entries"])

    def statement_pages(self, account: str, *, start: Moment = None, end: Moment = None,
                        limit: int = 1000) -> Iterator[dict[str, Any]]:
        """The account's statement over [start, end), a page at a time (each with its balances)."""
        return self._pages(_statement_path(account), *_window(start, end), limit=limit)


class AsyncJournalReads:
    """The journal reads of an asynchronous client (one with `async get(path)`)."""

    get: Callable[[str], Awaitable[dict[str, Any]]]

    async def _pages(self, path: str, start: Moment, end: Moment, **params: Any) -> AsyncIterator[dict[str, Any]]:
        cursor = None
        while True:
            page = await self.get(f"{path}?{_query(start, end, cursor, **params)}")
            yield page
            cursor = page["next_cursor"]
            if cursor is None:
                return

    def journal(self, *, start: Moment = None, end: Moment = None, customer: str | None = None,
                account: str | None = None, kind: str | None = None, request_id: str | None = None,
                limit: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """Every entry the key may see that the filters keep, in time order; occurred_at in [start, end)."""
        return self._entries(self._pages("/v1/journal", *_window(start, end), customer=customer, account=account,
                                         kind=kind, request_id=request_id, limit=limit))

    @staticmethod
    async def _entries(pages: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        async for page in pages:
            for entry in page["entries"]:
                yield entry

    def statement_pages(self, account: str, *, start: Moment = None, end: Moment = None,
                        limit: int = 1000) -> AsyncIterator[dict[str, Any]]:
        """The account's statement over [start, end), a page at a time (each with its balances)."""
        return self._pages(_statement_path(account), *_window(start, end), limit=limit)
