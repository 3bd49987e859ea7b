"""Price books: post a version (creating the book on first use), read a book's versions."""
from __future__ import annotations

import json
from typing import Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import State

from api.auth import require
from api.errors import documented
from api.routes.wire import idempotency, renderer, respond, time_out
from ledger.db import lock_key
from wallets import books
from wallets.errors import WalletValidationError
from wallets.service import run_once


class PriceVersionResponse(msgspec.Struct):
    id: str
    currency: str
    version: str
    effective_from: str
    rules: list[Any]
    created_at: str


class PriceBookResponse(msgspec.Struct):
    id: str
    currency: str
    versions: list[PriceVersionResponse]


def _version(v: books.StoredVersion) -> PriceVersionResponse:
    return PriceVersionResponse(v.book_id, v.currency, v.version, time_out(v.effective_from) or "", v.rules,
                                time_out(v.created_at) or "")


@post("/v1/price-books", guards=[require()], tags=["price books"], status_code=201,
      **documented(409, body=True))
async def post_price_book(state: State, request: Request) -> Response[PriceVersionResponse]:
    """Create a book, or add a version to it. Versions never change: posting the same version
    again answers 200 with it; another version at the same `effective_from` is refused."""
    try:
        body = json.loads(await request.body())  # floats stay floats, so that parsing refuses them
    except ValueError:
        raise WalletValidationError("body", "must be a JSON object") from None
    if not isinstance(body, dict):
        raise WalletValidationError("body", "must be a JSON object")
    render = renderer(request, lambda added: (201 if added.created else 200, _version(added.version)))
    outcome = await run_once(state.services.db, idempotency(request, body, render),
                             lambda conn: books.add_version(conn, body),
                             locks=[lock_key("price-book:" + str(body.get("id")))])
    return respond(outcome, render)


@get("/v1/price-books/{book_id:str}", guards=[require("auditor", "inference")], tags=["price books"],
     **documented(404))
async def get_price_book(state: State, book_id: str) -> PriceBookResponse:
    """A book and all its versions, oldest first."""
    versions = await state.services.db.read(lambda conn: books.get_versions(conn, book_id))
    return PriceBookResponse(versions[0].book_id, versions[0].currency, [_version(v) for v in versions])
