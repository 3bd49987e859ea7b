"""The console's plumbing: the cookie session that holds the signed-in key, CSRF, the guard
that applies the API's own authorization (api.auth) to a page, rendering, and error pages.

The session is Litestar's client-side cookie session: AES-GCM encrypted with the settings'
session secret, HTTP-only, Secure, SameSite=Strict, scoped to /console. It holds the API key
itself, so every page authenticates it exactly as the API authenticates a bearer key (a revoked
key is signed out on its next page), and an absolute expiry, checked here, not by the browser.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers import BaseRouteHandler
from litestar.middleware.session.client_side import CookieBackendConfig
from litestar.response import Redirect, Template
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import Principal, authorize, principal_for, principal_of
from api.console.csrf import SESSION_ID, new_session_id
from api.errors import EXCEPTION_HANDLERS, ApiError

PREFIX = "/console"
SESSION_COOKIE = "tokentill_console"
SESSION_S = 8 * 3600  # a sign-in lasts a working day, however active
STATIC = Path(__file__).parent / "static"


HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def session_config(secret: bytes) -> CookieBackendConfig:
    return CookieBackendConfig(secret=secret, key=SESSION_COOKIE, max_age=SESSION_S, path=PREFIX,
                               secure=True, httponly=True, samesite="strict")


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
OWN_SITE = frozenset({"same-origin", "none"})  # Sec-Fetch-Site of the console's own forms, of a typed address


def refusing_forgeries(csrf: ASGIApp) -> ASGIApp:
    """A post a browser says comes from another origin (`Sec-Fetch-Site`: a sibling host of the
    same site, or another site) is refused before the CSRF check (api.console.csrf: the token
    bound to the session), which a client without the header (an older browser) has alone.
    Either refusal is answered here, as the 403 page: raised
    from a middleware, it would pass the metrics middleware before any response began and be
    counted there as a 500."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["type"] == "http" and scope["method"] not in SAFE_METHODS:
                site = dict(scope["headers"]).get(b"sec-fetch-site")
                if site is not None and site.decode("latin-1") not in OWN_SITE:
                    raise _Forged("the form was sent from another site: open the console and send it from there")
            await csrf(scope, receive, send)
        except PermissionDeniedException as exc:
            request: Request = Request(scope, receive)
            detail = exc.detail if isinstance(exc, _Forged) else ("the form's CSRF token is missing or wrong: "
                                                                  "reload the page and send it again")
            refusal = ApiError("forbidden", detail, 403)
            await error_page(request, refusal).to_asgi_response(scope["app"], request)(scope, receive, send)

    return middleware


class _Forged(PermissionDeniedException):
    pass


def sign_in(request: Request, token: str) -> None:
    """A new session, with a new id (so a new CSRF token): an id an attacker planted before the
    sign-in (their own session's cookie tossed into the browser) is not the signed-in session's."""
    request.set_session({"key": token, "expires_at": int(time.time()) + SESSION_S, SESSION_ID: new_session_id()})


def allow(*scopes: str) -> Callable[[ASGIConnection, BaseRouteHandler], Any]:
    """A page guard: the signed-in key, authorized by api.auth's rules for `scopes` (as `require`)."""

    async def guard(connection: ASGIConnection, _: BaseRouteHandler) -> None:
        session = connection.session or {}
        token = session.get("key")
        if not isinstance(token, str) or int(session.get("expires_at", 0)) < time.time():
            raise ApiError("unauthorized", "sign in to see this page", 401)
        await authorize(connection, await principal_for(connection.app.state.services, token), scopes)

    return guard


def _fingerprint(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


_VERSIONS: dict[str, str] = {}


def static(name: str) -> str:
    """The URL of a static file, with its content's hash: cached for a year, never stale."""
    if name not in _VERSIONS:
        _VERSIONS[name] = _fingerprint(name)
    return f"{PREFIX}/static/{name}?v={_VERSIONS[name]}"


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> Template:
    principal: Principal | None = request.scope["state"].get("principal")
    return Template(template_name=template, status_code=status,
                    context={"principal": principal, "static": static, "path": request.url.path,
                             **context},
                    headers=HEADERS)


def viewer(request: Request) -> Principal:
    return principal_of(request)


def _problem(request: Request, exc: Exception) -> Response:
    for cls in type(exc).__mro__:
        if cls in EXCEPTION_HANDLERS:
            return EXCEPTION_HANDLERS[cls](request, exc)
    raise exc


def unrouted(request: Request, exc: Exception) -> Response:
    """The app's handler of HTTP errors outside any route (an address without a page: 404, 405):
    under the console a page, as its routes' errors are; elsewhere the API's problem+json."""
    path = request.url.path
    if (path == PREFIX or path.startswith(PREFIX + "/")) and not path.startswith(PREFIX + "/static/"):
        return error_page(request, exc)
    return _problem(request, exc)


def error_page(request: Request, exc: Exception) -> Response:
    """The API's answer to `exc` (the one map of codes to statuses), shown as a page; a missing
    or expired sign-in goes to the sign-in page and comes back."""
    if isinstance(exc, ApiError) and exc.code == "unauthorized":
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        sign_in_page = f"{PREFIX}/sign-in?next={quote(target, safe='')}"
        if request.headers.get("hx-request") == "true":  # htmx would follow a 303 and swap in a part of it
            return Response(b"", status_code=401, headers={"HX-Redirect": sign_in_page, **HEADERS})
        return Redirect(sign_in_page, status_code=303)
    answer = _problem(request, exc)
    body = answer.content if isinstance(answer.content, dict) else {}
    page = render(request, "error.html", status=answer.status_code, problem=body)
    if "retry-after" in answer.headers:
        page.headers["Retry-After"] = answer.headers["retry-after"]
    return page
