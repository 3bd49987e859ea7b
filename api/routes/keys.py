"""API keys: create (the secret is shown once), list without secrets, revoke at once."""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import delete, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from api import keys
from api.auth import require
from api.errors import documented
from api.routes.schemas import json_body
from api.routes.wire import shaped


class CreateApiKeyRequest(msgspec.Struct, forbid_unknown_fields=True):  # a misspelt `customers`: 422, not unlimited
    scope: Annotated[str, msgspec.Meta(pattern=keys.SCOPE.pattern)]
    # Litestar's OpenAPI drops constraints on list items, so items carry none (schema = behaviour).
    customers: Annotated[list[str], msgspec.Meta(max_length=1000)] = []
    name: Annotated[str, msgspec.Meta(max_length=200)] = ""


CreateApiKeyBody = Annotated[dict[str, Any], json_body(CreateApiKeyRequest)]


class ApiKeyResponse(msgspec.Struct):
    id: str
    scope: str
    customers: list[str]
    name: str
    created_at: datetime
    revoked_at: datetime | None = None


class CreatedApiKeyResponse(ApiKeyResponse):
    key: str = ""  # the secret: shown in this response only


def _response(key: keys.ApiKey) -> ApiKeyResponse:
    return ApiKeyResponse(key.id, key.scope, list(key.customers), key.name, key.created_at, key.revoked_at)


@post("/v1/api-keys", guards=[require()], tags=["api keys"], **documented(body=True))
async def create_api_key(state: State, data: CreateApiKeyBody) -> CreatedApiKeyResponse:
    """Create a key; its secret `key` is returned here and never again."""
    data = shaped(data, CreateApiKeyRequest)
    key, secret = await state.services.db.run(lambda conn: keys.create(conn, data.scope, data.customers, data.name))
    return CreatedApiKeyResponse(**msgspec.structs.asdict(_response(key)), key=secret)


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
