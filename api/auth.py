"""Bearer-key authentication and scope guards.

A principal is what a key may do. The bootstrap admin key comes from TOKENTILL_ADMIN_KEY; keys
are compared in constant time.
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler

from api.errors import ApiError


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    scope: str  # admin | inference | auditor | customer:<id>
    customers: tuple[str, ...] = ()

    def allows(self, *scopes: str) -> bool:
        return self.scope == "admin" or self.scope in scopes


def bearer(connection: ASGIConnection) -> str:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("unauthorized", "send Authorization: Bearer <key>", 401)
    return token.strip()


async def authenticate(connection: ASGIConnection) -> Principal:
    token = bearer(connection)
    admin_key = connection.app.state.services.settings.admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal("bootstrap-admin", "admin")
    raise ApiError("unauthorized", "unknown or revoked key", 401)


def require(*scopes: str):
    """A guard admitting admin keys and keys of any of `scopes`."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        principal = await authenticate(connection)
        if not principal.allows(*scopes):
            raise ApiError("forbidden", f"this key's scope {principal.scope!r} may not do this", 403)
        connection.scope["state"]["principal"] = principal

    return guard
