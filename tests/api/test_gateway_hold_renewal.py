"""A gateway call that lasts longer than its hold's TTL keeps its hold: the gateway extends the
reservation at about half of its TTL while the call runs, so the expiry job (running all along)
never gives the money back under a live stream, and the settle is charged from the hold, exactly."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from litestar import Litestar

from api.bench import fake_upstream as fk
from api.gateway.config import GatewaySettings
from ledger.db import connect
from tests.api.apps import api_app, live_server
from tests.api.test_gateway import ADMIN, BOOK, CHAT_CHARGE, HI, admin, charged, customer, wallet
from tests.api.test_gateway import fake as fake  # the fake upstream fixture
from wallets.commands import Extend
from wallets.expiry import expire_reservations

HOLD_SECONDS = 2
TRICKLE_SECONDS = 0.15  # 40 tokens: a stream of ~6 s, three holds long


class Served:
    """A server whose gateway holds each call for HOLD_SECONDS; `services` may be patched."""

    def __init__(self, url: str, app: Litestar) -> None:
        self.url, self.services = url, app.state["services"]
        self.book = f"gwh-{uuid.uuid4().hex[:8]}"
        with admin(self.url) as http:
            assert http.post("/v1/price-books", json={**BOOK, "id": self.book}).status_code == 201


@pytest.fixture(scope="module")
def served(database_url, fake) -> Iterator[Served]:
    app = api_app(database_url, admin=ADMIN, gateway=GatewaySettings(
        openai_url=f"{fake.url}/v1", openai_key="sk-up", default_max_output_tokens=1000, hold_seconds=HOLD_SECONDS))
    with live_server(app=app) as url:
        yield Served(url, app)


@pytest.fixture
def slow_trickle(monkeypatch) -> None:
    monkeypatch.setattr(fk, "TRICKLE_SECONDS", TRICKLE_SECONDS)


class RenewalClock:
    """The gateway's wallet engine's clock, moved on by half a hold (the keeper's cadence,
    Exchange._keep_held) at each renewal the gateway asks, and by nothing else: the hold's expiry,
    the renewals' and the expiry job's instants are then the same whatever the machine's load (was:
    the wall clock, a 2 s hold renewed at 1 s that a loaded CI let expire)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def _expire_at(database_url: str, now: datetime) -> int:
    """The reservation expiry job, run once at `now` on its own connection, as the scheduler would."""
    async def once() -> int:
        db = connect(database_url, pool_size=1)
        try:
            return await expire_reservations(db, now)
        finally:
            await db.dispose()

    return asyncio.run(once())


def _stream(url: str, key: str, request_id: str, each: Any = None) -> tuple[str, float]:
    """A streamed chat of the trickling model: its text, and how long it took."""
    started, text = time.monotonic(), []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}", "x-tokentill-request-id": request_id},
                      timeout=30) as http, http.stream("POST", "/openai/v1/chat/completions", json={
                          "model": "gpt-test-trickle", "messages": HI, "stream": True}) as response:
        assert response.status_code == 200
        for n, line in enumerate(response.iter_lines()):
            text.append(line)
            if each is not None and n % 6 == 0:
                each(time.monotonic() - started)
    return "\n".join(text), time.monotonic() - started


def test_a_stream_several_holds_long_keeps_its_hold_until_its_settle(served, database_url, slow_trickle,
                                                                     monkeypatch):
    """The gateway's engine runs on a RenewalClock: each renewal the keeper asks moves it on by
    HOLD_SECONDS / 2 = 1 s, so renewal k (at T0 + k s) holds until T0 + k + 2 s; the expiry job runs
    at that clock's instant each time the test looks. By hand: the first expiry is T0 + 2; from the
    2nd renewal on the job runs at or past it (T0 + 2, T0 + 3, ...) and finds the hold, held until
    T0 + 4, T0 + 5, ..., still held; 40 tokens at 0.15 s are a ~6 s stream, five or so renewals (at
    least 3 expiries seen). Settled from the hold: CHAT_CHARGE, 0.0100, nothing owed."""
    cid, key = customer((served.url, served.book))
    clock, wallets = RenewalClock(), served.services.gateway.wallets
    monkeypatch.setattr(wallets.engine, "clock", clock)
    submit = wallets.submit

    async def renewing(command: Any) -> Any:
        if isinstance(command, Extend):
            clock.now += timedelta(seconds=HOLD_SECONDS / 2)
        return await submit(command)

    monkeypatch.setattr(wallets, "submit", renewing)
    request_id = f"long-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[str, datetime, datetime]] = []  # (status, expires_at, the job's instant)

    def look(elapsed: float) -> None:
        now = clock()
        _expire_at(database_url, now)
        # as stored (the API's view tells a hold past its expiry by the wall clock as expired)
        with psycopg.connect(database_url, autocommit=True) as conn:
            row = conn.execute("SELECT status, expires_at FROM reservations WHERE customer_id = %s "
                               "AND request_id = %s", (cid, request_id)).fetchone()
        if row is not None:
            seen.append((row[0], row[1], now))

    body, _ = _stream(served.url, key, request_id, look)
    assert body.count("data: ") > 40
    first_expiry = min(expires for _, expires, _ in seen)
    # while it streamed, past its first expiry and with the job run after it, it stayed held
    statuses = [status for status, _, _ in seen]  # its last lines may follow its settle
    assert statuses == ["held"] * statuses.count("held") + ["settled"] * statuses.count("settled"), seen
    assert any(status == "held" and when >= first_expiry + timedelta(seconds=1) for status, _, when in seen), seen
    assert len({expires for _, expires, _ in seen}) >= 3  # renewed again and again
    # settled from the hold: exactly the provider's usage, never expired, nothing owed
    assert charged(served.url, request_id) == CHAT_CHARGE
    with admin(served.url) as http:
        r = http.get(f"/v1/audit/charges/{request_id}").json()["reservation"]
        view = http.get(f"/v1/reservations/{r['id']}").json()
    assert view["status"] == "settled" and "expire" not in [e["kind"] for e in view["entries"]]
    assert wallet(served.url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    with admin(served.url) as http:
        assert http.get(f"/v1/customers/{cid}/wallet").json()["receivable"] == "0.00"


def test_a_failed_renewal_is_logged_and_the_call_goes_on(served, slow_trickle, monkeypatch, caplog):
    cid, key = customer((served.url, served.book))
    wallets = served.services.gateway.wallets
    submit = wallets.submit
    refused: list[str] = []

    async def failing(command: Any) -> Any:
        if isinstance(command, Extend):
            refused.append(command.reservation_id)
            raise ConnectionError("the ledger is down")
        return await submit(command)

    monkeypatch.setattr(wallets, "submit", failing)
    request_id = f"norenew-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.WARNING, logger="tokentill.gateway"):
        body, _ = _stream(served.url, key, request_id)
    assert body.rstrip().endswith(f"request_id={request_id}") and len(refused) >= 2
    assert any("could not be extended; the call goes on" in r.getMessage() for r in caplog.records)
    assert charged(served.url, request_id) == CHAT_CHARGE  # no expiry job ran: settled from its hold
    assert wallet(served.url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
