"""API keys: create (the secret is shown once), list without secrets, revoke at once."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from sqlalchemy.ext.asyncio import AsyncConnection

from api import keys
from api.auth import bearer, require
from api.errors import documented
from api.routes import sealing
from api.routes.formats import IDENTIFIER, free_text
from api.routes.schemas import json_body
from api.routes.wire import Answer, idempotency, respond, shaped
from ledger.db import lock_key
from wallets.core.idempotency import CREATED
from wallets.service import run_once

# Each entry is a customer's id: the route checks it (api.keys), naming each entry it refuses
# (`customers[1]`); the document states the same rule, as a schema only, so the route's own message stays.
CustomerId = Annotated[str, msgspec.Meta(extra_json_schema={"minLength": 1, "maxLength": 100, "pattern": IDENTIFIER})]


class CreateApiKeyRequest(msgspec.Struct, forbid_unknown_fields=True):  # a misspelt `customers`: 422, not unlimited
    scope: Annotated[str, msgspec.Meta(pattern=keys.SCOPE.pattern)]
    customers: Annotated[list[CustomerId], msgspec.Meta(max_length=keys.CUSTOMERS_MOST)] = []
    name: Annotated[str, msgspec.Meta(max_length=keys.NAME_MOST), free_text()] = ""


CreateApiKeyBody = Annotated[dict[str, Any], json_body(CreateApiKeyRequest)]


class ApiKeyResponse(msgspec.Struct):
    id: str
    scope: str
    customers: list[str]
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class CreatedApiKeyResponse(ApiKeyResponse, kw_only=True):
    key: str  # the secret: shown in this response (and a replay of its Idempotency-Key) only


def _response(key: keys.ApiKey) -> ApiKeyResponse:
    return ApiKeyResponse(key.id, key.scope, list(key.customers), key.name, key.created_at, key.revoked_at)


@post("/v1/api-keys", guards=[require()], tags=["api keys"], status_code=201,
      **documented(409, body=True, idempotent=True))
async def create_api_key(state: State, request: Request, data: CreateApiKeyBody) -> Response[CreatedApiKeyResponse]:
    """Create a key; its secret `key` is returned here and never again (but to a replay of the
    same Idempotency-Key by the same caller)."""
    body = shaped(data, CreateApiKeyRequest)
    idem = idempotency(request, data)
    # kept, for its replays, with the secret sealed to the calling key (api/routes/sealing.py)
    pad = None if idem is None else sealing.pad(bearer(request), idem.key, b"tokentill api-key secret")

    async def work(conn: AsyncConnection) -> CreatedApiKeyResponse:
        key, secret = await keys.create(conn, body.scope, body.customers, body.name)
        return CreatedApiKeyResponse(**msgspec.structs.asdict(_response(key)),
                                     key=secret if pad is None else sealing.sealed(secret, pad))

    locks = [] if idem is None else [lock_key(f"idempotency:{idem.scope}:{idem.key}")]
    outcome = await run_once(state.services.db, idem, work, locks, lambda _: CREATED)

    def shown(made: CreatedApiKeyResponse) -> CreatedApiKeyResponse:
        if pad is None or idem is None:
            return made
        return msgspec.structs.replace(made, key=sealing.unsealed(made.key, pad, idem.key, keys.PREFIX, "a key"))

    return respond(request, outcome, Answer(shown, CreatedApiKeyResponse, lambda _: CREATED))


@get("/v1/api-keys", guards=[require()], tags=["api keys"], **documented())
async def list_api_keys(state: State) -> list[ApiKeyResponse]:
    return [_response(k) for k in await state.services.db.read(keys.list_keys)]


@delete("/v1/api-keys/{key_id:str}", guards=[require()], status_code=200, tags=["api keys"], **documented(404))
async def revoke_api_key(state: State, key_id: FromPath[str]) -> ApiKeyResponse:
    """Revoke a key: this process refuses it from the next request on, every other one as soon
    as the change notification reaches it (milliseconds)."""
    revoked = await state.services.db.run(lambda conn: keys.revoke(conn, key_id))
    state.services.keys.forget()
    return _response(revoked)
