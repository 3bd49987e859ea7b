"""The audit trace of one charge: request -> reservation -> usage -> prices -> entries."""
from __future__ import annotations

from typing import Annotated, Any

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api.auth import ensure_customer, principal_of, require
from api.errors import documented
from wallets import reports


@get("/v1/audit/charges/{request_id:str}", guards=[require("auditor")], tags=["audit"], **documented(404, 422))
async def get_charge_trace(state: State, request: Request, request_id: FromPath[str],
                           customer_id: Annotated[str | None, QueryParameter(name="customer_id")] = None
                           ) -> dict[str, Any]:
    """The request's reservation (or usage event), its usage, the price book version, the rules
    and unit prices applied, the amounts, and the journal entries that moved the money.

    Request and event ids are per customer. A key limited to customers looks among theirs only
    (an id they did not use is 404, whoever else used it), and naming another customer is 403.
    An id that several of the customers the key sees used needs `customer_id` (422 without it);
    a key limited to one customer may leave it out."""
    if customer_id is not None:
        ensure_customer(request, customer_id)
        customers: tuple[str, ...] | None = (customer_id,)
    else:
        customers = principal_of(request).visible()
    return await state.services.db.read(lambda conn: reports.charge_trace(conn, request_id, customers))
