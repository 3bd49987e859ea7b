"""The audit trace of one charge: request -> reservation -> usage -> prices -> entries."""
from __future__ import annotations

from typing import Annotated, Any

from litestar import get
from litestar.datastructures import State
from litestar.params import FromPath, QueryParameter

from api.auth import require
from api.errors import documented
from wallets import reports


@get("/v1/audit/charges/{request_id:str}", guards=[require("auditor")], tags=["audit"], **documented(404, 422))
async def get_charge_trace(state: State, request_id: FromPath[str],
                           customer_id: Annotated[str | None, QueryParameter(name="customer_id")] = None
                           ) -> dict[str, Any]:
    """The request's reservation (or usage event), its usage, the price book version, the rules
    and unit prices applied, the amounts, and the journal entries that moved the money. A
    request id that several customers used needs `customer_id` (422 without it)."""
    return await state.services.db.read(lambda conn: reports.charge_trace(conn, request_id, customer_id))
