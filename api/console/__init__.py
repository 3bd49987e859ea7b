"""The web console (issue 16): server-rendered pages for customers, auditors and operators,
served under /console by `tokentill serve` itself. Jinja2 templates and static files live in
this package; htmx and uPlot are vendored in static/vendor (see VENDORED.md)."""
from __future__ import annotations

import unicodedata
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, select_autoescape
from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.middleware.session import SessionMiddleware
from litestar.middleware.session.client_side import ClientSideSessionBackend
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ASGIApp
from markupsafe import Markup

from api.console import auditor, customer, export, invoices, operator, session
from api.console.csrf import SessionCsrf
from api.console.web import PREFIX, STATIC, error_page, refusing_forgeries, session_config, unrouted
from api.errors import EXCEPTION_HANDLERS
from api.renderings import bidi_closed, bill_to, per_label

PAGES = [
    session.sign_in_form, session.sign_in_post, session.sign_out, session.home,
    customer.wallet_page, customer.reservations_page, customer.usage_page, customer.budgets_page,
    customer.top_up_form, customer.top_up, invoices.invoices_page, invoices.upcoming_page, invoices.invoice_page,
    invoices.credit_note_page, invoices.upcoming_download, invoices.invoice_download, invoices.receivables_page,
    auditor.trial_balance_page, auditor.journal_page, auditor.statement_page, auditor.trace_page,
    auditor.verify_form, auditor.verify_page, export.export_form, export.export_download,
    operator.operator_page,
]


__all__ = ["PAGES", "bdi", "per", "routers", "templates", "unrouted", "utc"]


def templates() -> TemplateConfig:
    env = Environment(loader=PackageLoader("api.console", "templates"), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["utc"] = utc
    env.filters["per"] = per
    env.filters["bill_to"] = bill_to  # an invoice's or credit note's customer, by its name as issued
    env.filters["bdi"] = bdi  # a customer's string printed beside other text
    return TemplateConfig(engine=JinjaTemplateEngine.from_environment(env))


def utc(value: str | None) -> str:
    """An RFC 3339 time as people read it, in UTC: 2026-12-02 12:46:47 UTC (a time with another
    offset, as a document frozen on a server in another time zone may hold, converted)."""
    if not value:
        return ""
    if "T" not in value:
        return value
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d %H:%M:%S UTC")


# the bidi classes of right-to-left text and of the explicit bidi formatting characters
_BIDI = frozenset({"R", "AL", "AN", "LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI"})


def bdi(value: object) -> str | Markup:
    """A customer's string (a name, a model, an id, a reference) as printed beside other text:
    one with right-to-left text or bidi controls in a <bdi>, what its controls open closed in it
    (`bidi_closed`), so it reorders nothing around it (a U+202E in a name reversed the rest of
    its line); any other string as it is."""
    text = "" if value is None else str(value)
    if not any(unicodedata.bidirectional(ch) in _BIDI for ch in text):
        return text
    return Markup("<bdi>{}</bdi>").format(bidi_closed(text))


def per(price: str | None, token_type: str | None) -> str:
    """A unit price with the unit it prices, as the invoice renderings print it: "10.00 per 1M"."""
    return "" if price is None else f"{price} {per_label(token_type)}"


def routers(secret: bytes) -> list[Router]:
    """The pages (session and CSRF middleware on them alone: the API neither reads nor sets a
    cookie) and the static files (cached for a year: their URLs carry a content hash)."""
    session = session_config(secret)

    # Factories, not DefineMiddleware: Litestar deep-copies a router's middleware arguments, and
    # the session backend's cipher cannot be copied.
    def sessions(app: ASGIApp) -> ASGIApp:
        return SessionMiddleware(app, backend=ClientSideSessionBackend(config=session))

    def csrf_checks(app: ASGIApp) -> ASGIApp:
        return refusing_forgeries(SessionCsrf(app, secret))

    pages = Router(path="/", route_handlers=PAGES, include_in_schema=False, middleware=[sessions, csrf_checks],
                   exception_handlers={cls: error_page for cls in EXCEPTION_HANDLERS})
    files = create_static_files_router(path=f"{PREFIX}/static", directories=[STATIC], name="console-static",
                                       cache_control=CacheControlHeader(max_age=31_536_000, public=True))
    return [pages, files]
