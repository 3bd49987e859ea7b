"""Signing in and out, and the home page that sends each key where its scope leads."""
from __future__ import annotations

from typing import Annotated

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import QueryParameter
from litestar.response import Redirect, Template

from api.auth import Principal, principal_for
from api.console.web import PREFIX, allow, render, sign_in, viewer
from api.errors import ApiError
from wallets import reports


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
               prefix: Annotated[str, QueryParameter(name="customer", max_length=128)] = "") -> Response:
    """A customer key goes to its wallet; others find a customer here."""
    principal = viewer(request)
    if principal.scope.startswith("customer:"):
        return Redirect(landing(principal), status_code=303)
    ids = await state.services.db.read(lambda conn: reports.customer_ids(conn, principal.visible(), prefix.strip()))
    if prefix.strip() in ids:
        return Redirect(f"{PREFIX}/customers/{prefix.strip()}", status_code=303)
    return render(request, "home.html", customers=ids, prefix=prefix, section="home")
