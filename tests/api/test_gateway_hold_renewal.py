"""A gateway call that lasts longer than its hold's TTL keeps its hold: the gateway extends the
reservation at about half of its TTL while the call runs, so the expiry job (running all along)
never gives the money back under a live stream, and the settle is charged from the hold, exactly."""
from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
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


class ExpiryJob(threading.Thread):
    """The reservation expiry job, run every 0.1 s on its own connection, as the scheduler would."""

    def __init__(self, database_url: str) -> None:
        super().__init__(daemon=True)
        self.database_url, self.stop, self.runs = database_url, threading.Event(), []

    def run(self) -> None:
        async def loop() -> None:
            db = connect(self.database_url, pool_size=1)
            try:
                while not self.stop.is_set():
                    await expire_reservations(db)
                    self.runs.append(datetime.now(UTC))
                    await asyncio.sleep(0.1)
            finally:
                await db.dispose()

        asyncio.run(loop())

    def __enter__(self) -> ExpiryJob:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(timeout=10)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


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


def test_a_stream_several_holds_long_keeps_its_hold_until_its_settle(served, database_url, slow_trickle):
    cid, key = customer((served.url, served.book))
    request_id = f"long-{uuid.uuid4().hex[:8]}"
    seen: list[tuple[float, str, datetime, datetime]] = []  # (elapsed, status, expires_at, when)

    def look(elapsed: float) -> None:
        with admin(served.url) as http:
            trace = http.get(f"/v1/audit/charges/{request_id}")
            if trace.status_code == 200:
                r = trace.json()["reservation"]
                seen.append((elapsed, r["status"], _instant(r["expires_at"]), datetime.now(UTC)))

    with ExpiryJob(database_url) as job:
        body, took = _stream(served.url, key, request_id, look)
    assert took > 2.5 * HOLD_SECONDS and body.count("data: ") > 40
    first_expiry = min(expires for _, _, expires, _ in seen)
    # while it streamed, past its first expiry and with the job running after it, it stayed held
    statuses = [status for _, status, _, _ in seen]  # its last lines may follow its settle
    assert statuses == ["held"] * statuses.count("held") + ["settled"] * statuses.count("settled"), seen
    assert any(status == "held" and when > first_expiry + timedelta(seconds=1) for _, status, _, when in seen), seen
    assert any(run > first_expiry for run in job.runs)
    assert len({expires for _, _, expires, _ in seen}) >= 3  # renewed again and again
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
