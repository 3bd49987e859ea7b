"""The audit trace of one charge: request -> reservation -> usage -> prices -> entries."""
from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import unquote_to_bytes

import msgspec
from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath

from api.auth import ensure_customer, principal_of, require
from api.errors import ApiError, documented
from api.routes.formats import CustomerQuery
from api.routes.reservations import ReservationState
from wallets import reports

PREFIX = b"/v1/audit/charges/"


def exact_request_id(request: Request, decoded: str) -> str:
    """The request id as the caller wrote it: the rest of the raw path after the prefix,
    percent-decoded once. Request ids are any text, so one may hold "/" (sent as %2F) or be "." or
    "..": the decoded path the router matches loses that (`trail/` read as `trail`, `%2F` in the id
    as a separator), so the route takes the rest of the path and the id is read from the raw one."""
    raw = request.scope.get("raw_path")
    if not raw or PREFIX not in raw:
        return decoded.removeprefix("/")
    try:
        # a "?" in the raw path starts the query (one in the id is %3F); some servers keep it there
        return unquote_to_bytes(raw.split(PREFIX, 1)[1].split(b"?", 1)[0]).decode()
    except UnicodeDecodeError:
        raise ApiError("validation_error", "request_id: not UTF-8 text once percent-decoded", 422) from None


class TracedUsageEvent(msgspec.Struct):
    event_id: str
    model: str
    occurred_at: str
    usage: dict[str, Any]
    dimensions: dict[str, Any]
    recorded_at: str


class ChargeTrace(msgspec.Struct):
    """One request's trace: its reservation (`kind` reservation) or usage event (`kind`
    usage_event), its charges and the journal entries (as GET /v1/journal gives them, in their
    order). A customer's reservation and usage event of the same id are traced together: `kind`
    is reservation and `usage_event` is given too; `charges` holds the reservation's, then the
    event's, each naming what it charged (`reservation_id` or `event_id`, the other null), and
    `entries` both's."""

    request_id: str
    customer_id: str
    kind: Literal["reservation", "usage_event"]
    charges: Annotated[list[dict[str, Any]], msgspec.Meta(description=(
        "The charges the id names: the reservation's, then the usage event's; each names what it "
        "charged, `reservation_id` or `event_id` (the other null)"))]
    entries: Annotated[list[dict[str, Any]], msgspec.Meta(description=(
        "The journal entries of those charges, in journal order"))]
    reservation: ReservationState | None = None
    usage_event: Annotated[TracedUsageEvent | None, msgspec.Meta(description=(
        "The customer's usage event of this id: with `kind` usage_event, or beside the reservation "
        "when the customer used the id for both"))] = None


@get("/v1/audit/charges/{request_id:path}", guards=[require("auditor")], tags=["audit"],
     **documented(404, 422, ok=ChargeTrace))
async def get_charge_trace(state: State, request: Request, request_id: FromPath[str],
                           customer_id: CustomerQuery = None
                           ) -> dict[str, Any]:
    """The request's reservation (or usage event, or both when the customer used the id for
    each), its usage, the price book version, the rules and unit prices applied, the amounts,
    and the journal entries that moved the money.

    Request and event ids are per customer. A key limited to customers looks among theirs only
    (an id they did not use is 404, whoever else used it), and naming another customer is 403.
    An id that several of the customers the key sees used needs `customer_id` (422 without it);
    a key limited to one customer may leave it out. Send the id percent-encoded as one segment
    ("/" as %2F, "." as %2E): it is read from the path exactly as sent."""
    request_id = exact_request_id(request, request_id)
    if customer_id is not None:
        ensure_customer(request, customer_id)
        customers: tuple[str, ...] | None = (customer_id,)
    else:
        customers = principal_of(request).visible()
    now = state.services.wallets.clock()
    return await state.services.db.read(lambda conn: reports.charge_trace(conn, request_id, customers, now))
