"""Re-rating after a price fix (admin), and the credit notes it issues: `POST /v1/rerate` previews
or applies a corrected price version over a time range; `GET /v1/credit-notes/{id}` and
`GET /v1/customers/{id}/credit-notes` read the notes (a customer:<id> key its own only)."""
from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
import msgspec
from litestar import MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Template

from api import renderings
from api.auth import ensure_owner, require
from api.errors import ApiError, documented
from api.routes import cursors
from api.routes.formats import DateTime, Identifier
from api.routes.invoices import BILL_TO
from api.routes.schemas import json_body
from api.routes.wire import bound_in, idempotency_key, shaped
from wallets import rerating

READERS = ("auditor", "customer")


class RerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    price_book: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    version: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]  # the corrected version
    from_: Annotated[DateTime, msgspec.Meta(description="start of the usage-time range (inclusive)")] = (
        msgspec.field(name="from"))
    to: DateTime  # end of the range (exclusive)
    mode: Literal["preview", "apply"]
    customer_id: Identifier | None = None  # only this customer's charges


class RerateLine(msgspec.Struct):
    model: str
    token_type: str
    old_amount: str
    new_amount: str
    delta: str


class RerateCustomer(msgspec.Struct):
    customer_id: str
    charges: Annotated[int, msgspec.Meta(description="the customer's charges the re-rate corrects")]
    old_amount: Annotated[str, msgspec.Meta(description=(
        "what those charges (and the volume true-ups corrected with them) stood at before, every line counted"))]
    new_amount: Annotated[str, msgspec.Meta(description=(
        "what they stand at after, every line counted: new_amount - old_amount is delta"))]
    delta: str
    lines: Annotated[list[RerateLine], msgspec.Meta(description=(
        "the (model, token type) rows whose amount changed; a row left as it was is counted in the "
        "customer's amounts, not listed"))]
    entry_ids: Annotated[list[int], msgspec.Meta(description="apply: the adjustment entries")] | None = None


class RerateNote(msgspec.Struct):
    id: str
    number: str
    kind: Literal["credit", "debit"]
    customer_id: str
    invoice_id: str
    total: str


class RerateError(msgspec.Struct):
    customer_id: str
    period: str
    code: str
    detail: str


class RerateResult(msgspec.Struct):
    """The difference per customer, model and token type (money: decimal strings); `apply`
    also its entries and credit notes; a customer's period it could not re-rate is in `errors`."""

    mode: Literal["preview", "apply"]
    rerate_id: str
    price_book: str
    version: str
    from_: str = msgspec.field(name="from")
    to: str
    customer_id: str | None
    customers: list[RerateCustomer]
    delta: str
    credit_notes: list[RerateNote]
    errors: list[RerateError]


class CreditNoteView(msgspec.Struct):
    """A credit (or debit) note's frozen document, its content hash and its entry."""

    id: str
    number: str
    kind: Literal["credit", "debit"]
    customer_id: str
    customer_name: Annotated[str | None, msgspec.Meta(description=BILL_TO)]
    currency: str
    invoice_id: str
    period: str
    rerate_id: str
    lines: list[dict[str, Any]]
    total: str
    issued_at: str
    content_hash: str
    entry_id: int | None


class CreditNoteList(msgspec.Struct):
    """Notes oldest first (issued, then number); `next_cursor` is null on the last page."""

    customer_id: str
    credit_notes: list[CreditNoteView]
    next_cursor: str | None


RerateBody = Annotated[dict[str, Any], json_body(RerateRequest)]


@post("/v1/rerate", guards=[require()], tags=["invoices"], status_code=200,
      **documented(404, 409, body=True, ok=RerateResult, keyed=True))
async def rerate(state: State, request: Request, data: RerateBody) -> dict[str, Any]:
    """Re-rate the charges priced with `price_book` whose usage time is in [`from`, `to`) with the
    corrected `version` (which must be the book's version in force throughout the range).
    `preview`: the exact difference per customer, model and token type; nothing changes.
    `apply`: one balanced adjustment entry per customer and billing period (money back where it
    came from, or more charged), linked to each charge it corrects, and a credit (or debit) note for
    every affected finalized invoice. The same re-rate applied again moves nothing and answers the
    first result; an Idempotency-Key used for another re-rate is `idempotency_conflict`."""
    body = shaped(data, RerateRequest)
    start, end = bound_in(body.from_, "from"), bound_in(body.to, "to")  # finer than a microsecond: the next one
    assert start is not None and end is not None
    spec = rerating.RerateSpec(body.price_book, body.version, start, end, body.customer_id)
    services = state.services
    if body.mode == "preview":
        return await rerating.preview(services.db, services.wallets.engine.books, spec)
    return await rerating.apply(services.db, services.wallets.engine, spec, idempotency_key(request))


@get("/v1/credit-notes/{credit_note_id:str}", guards=[require(*READERS)], tags=["invoices"],
     opt={"media_types": (renderings.JSON, renderings.HTML, renderings.PDF)},
     **documented(404, 406, operation=renderings.rendered_as(renderings.HTML, renderings.PDF)))
async def get_credit_note(state: State, request: Request, credit_note_id: FromPath[str]) -> Response[Any]:
    """A credit (or debit) note: its frozen document (lines by model and token type: old amount,
    new amount, difference; the invoice it corrects), its content hash and its entry; by the
    Accept header as JSON (default), a printable page (`text/html`) or a PDF (`application/pdf`)."""
    media = renderings.negotiate(request)
    if media == renderings.CSV:
        raise ApiError("not_acceptable", "a credit note is available as JSON, HTML or PDF", 406)
    db = state.services.db
    ensure_owner(request, await db.read(lambda conn: rerating.credit_note_owner(conn, credit_note_id)),
                 f"credit note {credit_note_id}")
    document = await db.read(lambda conn: rerating.credit_note(conn, credit_note_id))
    if media == renderings.HTML:
        return Template("documents/invoice.html", context=renderings.credit_note_context(document),
                        headers=renderings.HTML_HEADERS, media_type=MediaType.HTML)
    if media == renderings.PDF:
        printed = await anyio.to_thread.run_sync(renderings.context_pdf, renderings.credit_note_context(document))
        return Response(printed, media_type=media,
                        headers={"Content-Disposition": f'inline; filename="{document["number"]}.pdf"',
                                 **renderings.NOT_KEPT})
    return Response(document, media_type=media)


@get("/v1/customers/{customer_id:str}/credit-notes", guards=[require(*READERS)], tags=["invoices"],
     **documented(400, 404, 422, ok=CreditNoteList))
async def list_credit_notes(state: State, customer_id: FromPath[str], cursor: cursors.Cursor = None,
                            limit: cursors.Limit = cursors.PAGE) -> dict[str, Any]:
    """The customer's credit and debit notes, oldest first, a page at a time (`limit`, default
    100); page on with `next_cursor` (a keyset position: a note issued meanwhile shows on a later
    page; none shows twice)."""
    after = None
    if cursor is not None:
        position = cursors.decode_position(cursor, "credit-notes", [customer_id])
        if len(position) != 3 or type(position[1]) is not int:
            raise cursors.invalid("not a cursor of this listing")
        at, note_id = cursors.time_and_id([position[0], position[2]])
        after = (at, position[1], note_id)
    page, more = await state.services.db.read(
        lambda conn: rerating.credit_notes(conn, customer_id, after, limit))
    return {**page, "next_cursor": None if more is None else cursors.encode_position(
        "credit-notes", [customer_id], [more[0].isoformat(), more[1], more[2]])}


ROUTES = [rerate, get_credit_note, list_credit_notes]
