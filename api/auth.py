"""Bearer-key authentication and scope guards.

Scopes: `admin` does everything; `inference` reserves, settles, releases and sends usage;
`customer:<id>` reads that customer's own data;
`auditor` reads the journal, trial balance, verify and charge traces. The bootstrap admin key
comes from TOKENTILL_ADMIN_KEY.

A key's optional `customers` list limits it, on every route, to those customers. A refusal
depends only on the key and on what the request names, never on another customer's data:
naming an unlisted customer (in the path, the body or `?customer_id=`) is 403 `forbidden`
whether or not that customer exists; an id looked up among the key's customers (a charge
trace's request id, a price book) that is not theirs is 404 `not_found`, as if it did not
exist. Another customer's reservation, invoice or credit note (random ids) is 403 `forbidden`,
naming the id the request sent, never its customer. Routes that act on the whole platform (API
keys, writing price books, creating customers, `verify`) are refused to a limited key. A limited
key (not an admin) is counted under its own id (`dimensions.api_key`) on every path: `key_dimensions`.

Verified keys are cached per process only while it listens for changes to keys
(api.keys.KeyCache): a revocation is refused at once by the process that made it and
within a notification's delay (milliseconds) by every other.
"""
from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import HttpMethod
from litestar.handlers import BaseRouteHandler, HTTPRouteHandler

from api.errors import ApiError
from wallets import reports


@dataclass(frozen=True, slots=True)
class Principal:
    key_id: str
    scope: str  # admin | inference | auditor | customer:<id>
    customers: tuple[str, ...] = ()

    def allows(self, *scopes: str) -> bool:
        return self.scope == "admin" or self.scope in scopes or (
            "customer" in scopes and self.scope.startswith("customer:"))

    def may_see(self, customer_id: str) -> bool:
        """Whether this key may act on or read `customer_id`'s data (its scope permitting).

        A non-empty `customers` list limits any key to those customers; a customer:<id> key
        sees only its own customer.
        """
        if self.customers and customer_id not in self.customers:
            return False
        return not self.scope.startswith("customer:") or self.scope == f"customer:{customer_id}"

    def counted_as_itself(self) -> bool:
        """Whether this key's calls are counted under its own id (`dimensions.api_key`), whatever it
        sends: a key limited to customers (other than an admin key) is one a customer holds, and the
        budgets set on it (`api_key`) must bind it on every path, as through the gateway."""
        return self.scope != "admin" and (bool(self.customers) or self.scope.startswith("customer:"))

    def visible(self) -> tuple[str, ...] | None:
        """The customers this key may see, or None for every customer."""
        if self.scope.startswith("customer:"):
            own = self.scope.removeprefix("customer:")
            return (own,) if self.may_see(own) else ()
        return self.customers or None


def header(connection: ASGIConnection, name: bytes) -> str | None:
    """The first value of the request header `name` (lower case), read from the ASGI scope:
    Litestar's `connection.headers` builds a case-insensitive multidict of every header first.
    The request's headers are lowered once, on the first call, and kept in the scope beside the
    list they were read from (a request reads five or so: a pass over them all for each cost more)."""
    scope = connection.scope
    raw = scope["headers"]
    kept = scope.get(_HEADERS)
    if kept is None or kept[0] is not raw:
        kept = scope[_HEADERS] = (raw, {key.lower(): value for key, value in reversed(raw)})  # the first wins
    value = kept[1].get(name)
    return None if value is None else value.decode("latin-1")


_HEADERS = "tokentill.headers"  # the scope's key for `header`'s (headers, lowered names -> first value)


def services_of(connection: ASGIConnection) -> Any:
    """The app's Services. Read by key: a route that takes `state: State` gets a copy of the
    app's state made for each request (Litestar's signature model), and `state.services` is
    found only after a failed attribute lookup (an AttributeError caught)."""
    return connection.scope["app"].state["services"]


def bearer(connection: ASGIConnection) -> str:
    """The bearer key. Two Authorization lines are two keys (a proxy may check the one this did
    not take): refused, whatever they say."""
    if sum(1 for name, _ in connection.scope["headers"] if name.lower() == b"authorization") > 1:
        raise ApiError("unauthorized", "send one Authorization header, not several", 401)
    header_ = header(connection, b"authorization") or ""
    scheme, _, token = header_.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError("unauthorized", "send Authorization: Bearer <key>", 401)
    return token.strip()


async def authenticate(connection: ASGIConnection) -> Principal:
    return await principal_for(services_of(connection), bearer(connection))


async def principal_for(services: Any, token: str) -> Principal:
    """The key `token` is (the bootstrap admin key, or a stored key), or 401."""
    admin_key = services.settings.admin_key
    if admin_key and hmac.compare_digest(token.encode(), admin_key.encode()):
        return Principal("bootstrap-admin", "admin")
    key = await services.keys.find(token)
    if key is None:
        raise ApiError("unauthorized", "unknown or revoked key", 401)
    return Principal(key.id, key.scope, key.customers)


def require(*scopes: str):
    """A guard admitting admin keys and keys of any of `scopes` ("customer" means customer:<any>).

    An admin-only route (no `scopes`) that names no customer in its path acts on the whole
    platform, and refuses a key limited to customers; a price book is read by a limited key
    only if one of its customers is priced with it.
    """

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        await authorize(connection, await authenticate(connection), scopes)

    return guard


class GuardedRoute(HTTPRouteHandler):
    """A route handler whose guards get the handler itself: Litestar's own
    `authorize_connection` hands each guard a `copy()` of the handler, on every request (a
    tenth of the HTTP layer's CPU on POST /v1/reservations). Our guards never look at it."""

    async def authorize_connection(self, connection: ASGIConnection) -> None:
        for guard in self.resolve_guards():
            await guard(connection, self)


def guarded_post(path: str, **kwargs: Any) -> GuardedRoute:
    """As `litestar.post`, for a GuardedRoute."""
    return GuardedRoute(path, http_method=HttpMethod.POST, **kwargs)


async def authorize(connection: ASGIConnection, principal: Principal, scopes: tuple[str, ...]) -> None:
    """`require`'s rules for an authenticated principal; the console applies them too."""
    if not principal.allows(*scopes):
        raise ApiError("forbidden", f"a key of scope {principal.scope!r} may not do this", 403)
    connection.scope["state"]["principal"] = principal
    customer_id = connection.path_params.get("customer_id")
    if customer_id is not None and not principal.may_see(customer_id):
        raise ApiError("forbidden", f"this key may not access customer {customer_id!r}", 403)
    if customer_id is None and not scopes and principal.customers:
        raise ApiError("forbidden", "a key limited to customers may not act on the whole platform", 403)
    book_id = connection.path_params.get("book_id")
    if book_id is not None and principal.customers:
        await connection.app.state.services.db.read(
            lambda conn: reports.ensure_book_visible(conn, book_id, principal.customers))


def principal_of(connection: ASGIConnection) -> Principal:
    return connection.scope["state"]["principal"]


def ensure_customer(connection: ASGIConnection, customer_id: str) -> None:
    """For customers named in a body or a query rather than in the path."""
    if not principal_of(connection).may_see(customer_id):
        raise ApiError("forbidden", f"this key may not access customer {customer_id!r}", 403)


def key_dimensions(principal: Principal, dimensions: Mapping[str, Any],
                   where: str = "dimensions") -> Mapping[str, Any]:
    """The usage dimensions a call of `principal` is counted (and its per-key budgets matched)
    under: as sent, but a key counted as itself gets its own id as `api_key`, and naming another
    id is 403 `forbidden` (it would escape the budgets set on the key). Other keys (admin keys,
    unlimited platform keys) name the key a call counts for themselves. Replays match the body as
    sent: hash it, not these."""
    if not principal.counted_as_itself():
        return dimensions
    given = dimensions.get("api_key")
    if given == principal.key_id:
        return dimensions
    if given is not None:
        raise ApiError("forbidden", f"{where}.api_key: a key limited to customers is counted as itself "
                       f"({principal.key_id}); leave api_key out or send its own id, not {given!r}", 403)
    return {**dimensions, "api_key": principal.key_id}


def ensure_owner(connection: ASGIConnection, customer_id: str, what: str) -> None:
    """For `what` (a reservation, an invoice), found to be `customer_id`'s: the refusal names
    the thing the request named, never its owner, whom the key may not learn of."""
    if not principal_of(connection).may_see(customer_id):
        raise ApiError("forbidden", f"this key may not access {what}", 403)
