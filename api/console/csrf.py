"""The console's CSRF token, bound to the session: HMAC(secret, the session's id).

The session (an encrypted cookie) carries a random id, given at the first page (the sign-in
form's included) and anew at each sign-in. A form's token must be that id's HMAC: a token and
cookie written into the browser from a sibling host (cookie tossing), the attacker's own valid
pair, belong to another session and cannot match. Before, the token was a double-submit one
(Litestar's CSRFMiddleware: a signed cookie and the same value in the form), valid in any session.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from litestar.enums import RequestEncodingType
from litestar.exceptions import PermissionDeniedException
from litestar.types import ASGIApp, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

SESSION_ID = "sid"
FORM_FIELD = "_csrf_token"
HEADER = "x-csrftoken"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


class SessionCsrf:
    """Pages' forms get the session's token (`csrf_input`); a post must carry it."""

    def __init__(self, app: ASGIApp, secret: bytes) -> None:
        self.app, self._key = app, hashlib.sha256(b"csrf-session" + secret).digest()

    def token(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = scope.get("session")
        if not isinstance(session, dict):
            session = scope["session"] = {}
        session_id = session.get(SESSION_ID)
        if scope["method"] in SAFE_METHODS:
            if not isinstance(session_id, str):  # a visitor's first page, or a session from before
                session_id = session[SESSION_ID] = new_session_id()
            ScopeState.from_scope(scope).csrf_token = self.token(session_id)
        else:
            sent = await _sent_token(scope, receive)
            if not isinstance(session_id, str) or not sent or not hmac.compare_digest(sent, self.token(session_id)):
                raise PermissionDeniedException("CSRF token verification failed")
            ScopeState.from_scope(scope).csrf_token = sent
        await self.app(scope, receive, send)


async def _sent_token(scope: Scope, receive: Receive) -> str | None:
    """The post's token: its X-CSRFToken header, else its form's field (the form is kept for the page)."""
    request: Any = scope["litestar_app"].request_class(scope=scope, receive=receive)
    sent = request.headers.get(HEADER)
    if not sent and request.content_type[0] in {RequestEncodingType.URL_ENCODED, RequestEncodingType.MULTI_PART}:
        sent = (await request.form()).get(FORM_FIELD)
    return sent if isinstance(sent, str) else None
