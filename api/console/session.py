"""Signing in and out, and the home page that sends each key where its scope leads."""
from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from api.auth import Principal, principal_for
from api.console.web import PREFIX, allow, render, sign_in, viewer
from api.errors import ApiError
from api.routes import cursors
from wallets import reports

CUSTOMERS_PAGE = 100


def _safe_next(target: str | None) -> str | None:
    """Only a console path: never an open redirect to another site."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return None


def landing(principal: Principal) -> str:
    if principal.scope.startswith("customer:"):
        return f"{PREFIX}/customers/{principal.scope.removeprefix('customer:')}"
    if principal.scope == "auditor":
        return f"{PREFIX}/audit"
    return f"{PREFIX}/"


@get(f"{PREFIX}/sign-in", name="console-sign-in")
async def sign_in_form(request: Request,
                       next_page: Annotated[str | None, QueryParameter(name="next", max_length=2000)] = None
                       ) -> Template:
    return render(request, "sign_in.html", next_page=_safe_next(next_page) or "", error=None)


@post(f"{PREFIX}/sign-in", name="console-sign-in-post")
async def sign_in_post(request: Request) -> Response:
    """A key that the API accepts signs in; any other is refused with the API's words (401)."""
    form = await request.form()
    key, target = str(form.get("key") or "").strip(), _safe_next(str(form.get("next") or ""))
    try:
        if not key:
            raise ApiError("unauthorized", "enter an API key", 401)
        principal = await principal_for(request.app.state.services, key)
    except ApiError as exc:
        return render(request, "sign_in.html", status=exc.status, next_page=target or "", error=exc.detail)
    sign_in(request, key)
    return Redirect(target or landing(principal), status_code=303)


@post(f"{PREFIX}/sign-out", name="console-sign-out")
async def sign_out(request: Request) -> Response:
    request.clear_session()
    return Redirect(f"{PREFIX}/sign-in", status_code=303)


@get(PREFIX, guards=[allow("inference", "auditor", "customer")], name="console-home")
async def home(state: State, request: Request,
               prefix: Annotated[str, QueryParameter(name="customer", max_length=128)] = "",
               cursor: Annotated[str | None, QueryParameter(name="cursor", max_length=4096)] = None) -> Response:
    """A customer key goes to its wallet; others find a customer here, or list them all a page
    at a time (by id)."""
    principal = viewer(request)
    if principal.scope.startswith("customer:"):
        return Redirect(landing(principal), status_code=303)
    prefix = prefix.strip()
    after = ""
    if cursor:
        position = cursors.decode_position(cursor, "console-customers", [prefix])
        if len(position) != 1 or not isinstance(position[0], str):
            raise cursors.invalid("not a cursor of this listing")
        after = position[0]
    ids = await state.services.db.read(
        lambda conn: reports.customer_ids(conn, principal.visible(), prefix, CUSTOMERS_PAGE + 1, after))
    if not cursor and prefix in ids:
        return Redirect(f"{PREFIX}/customers/{prefix}", status_code=303)
    shown, more = ids[:CUSTOMERS_PAGE], len(ids) > CUSTOMERS_PAGE
    next_query = urlencode({"customer": prefix, "cursor": cursors.encode_position(
        "console-customers", [prefix], [shown[-1]])}) if more else None
    return render(request, "home.html", customers=shown, prefix=prefix, next_query=next_query,
                  first=not cursor, section="home")
