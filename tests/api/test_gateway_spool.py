"""The gateway's settles off the response path: spooled and fsynced before the answer, taken by
the ledger in the background, kept while the ledger cannot take them, and sent again from the
spool by the next gateway on the database, charged once however often they are sent."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.bench import fake_upstream as fk
from api.gateway import settles
from api.gateway.config import GatewaySettings
from api.gateway.settles import settle_key, spool_for
from ledger.db import RetriesExhaustedError
from tests.api.apps import api_app, live_server
from tests.api.test_gateway import (
    ADMIN,
    BOOK,
    CACHED,
    CALL,
    CHAT_CHARGE,
    HI,
    IN,
    OUT,
    PRIORITY,
    WRITE,
    M,
    admin,
    charge_usage,
    charged,
    oai,
    tool_book,
    wallet,
)
from tests.api.test_gateway import fake as fake  # the fake upstream fixture


class Gateway:
    """A server whose gateway spools under `spool_dir`; `before_start` may patch its services."""

    def __init__(self, database_url: str, fake: fk.FakeServer, spool_dir: Path, before_start: Any = None,
                 settle: str = "background") -> None:
        self.app = api_app(database_url, admin=ADMIN, gateway=GatewaySettings(
            openai_url=f"{fake.url}/v1", openai_key="sk-up", default_max_output_tokens=1000,
            spool_dir=str(spool_dir), settle=settle))
        self.services = self.app.state["services"]
        if before_start is not None:
            before_start(self.services)
        self.serving = ExitStack()

    def __enter__(self) -> Gateway:
        self.url = self.serving.enter_context(live_server(app=self.app))
        return self

    def __exit__(self, *exc: object) -> None:
        self.serving.close()


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def book(database_url, fake, spool_dir) -> Iterator[str]:
    with Gateway(database_url, fake, spool_dir) as gw, admin(gw.url) as http:
        book = f"gws-{uuid.uuid4().hex[:8]}"
        assert http.post("/v1/price-books", json={**BOOK, "id": book}).status_code == 201
    yield book


def customer(url: str, book: str) -> tuple[str, str]:
    cid = f"gws-{uuid.uuid4().hex[:10]}"
    with admin(url) as http:
        assert http.post("/v1/customers", json={"id": cid, "name": "GW", "currency": "USD",
                                                "price_book": book}).status_code == 201
        assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"}).status_code == 201
        key = http.post("/v1/api-keys", json={"scope": "inference", "customers": [cid]}).json()["key"]
    return cid, key


def never_send(services: Any) -> None:
    """The gateway answers and spools, but its ledger sends hang: as if it died right after answering."""
    async def hang(items: list[dict[str, Any]]) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    services.gateway.settles._send = hang


def reserved(url: str, cid: str) -> Decimal:
    with admin(url) as http:
        return Decimal(http.get(f"/v1/customers/{cid}/wallet").json()["reserved"])


HOLD = (9 * WRITE + 1000 * OUT) / M + CALL  # 9 prompt tokens (cl100k_base plus 10 %) at the cache write price, the cap


def test_a_gateway_stopped_after_answering_but_before_settling_settles_once_on_restart(database_url, fake,
                                                                                      spool_dir, book):
    spool = spool_for(database_url, spool_dir)
    with Gateway(database_url, fake, spool_dir, never_send) as gw:
        cid, key = customer(gw.url, book)
        raw = oai(gw.url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        request_id = raw.headers["x-tokentill-request-id"]
        assert raw.parse().choices[0].message.content  # answered, with the hold but no charge ...
        assert Decimal(raw.headers["x-tokentill-reserved"]) == HOLD and "x-tokentill-charged" not in raw.headers
        time.sleep(0.3)
        assert reserved(gw.url, cid) == HOLD  # ... and not settled
    (record,) = spool.records()  # on disk when it answered
    assert record.idempotency_key == settle_key(cid, request_id) and record.reservation_id
    with Gateway(database_url, fake, spool_dir) as gw:  # the next gateway on the database sends it
        assert charged(gw.url, request_id) == CHAT_CHARGE
        assert wallet(gw.url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    assert spool.records() == []  # struck off (at the latest when it stopped)
    spool.append(record)  # sent again, as after a crash between the ledger's answer and the strike-off
    with Gateway(database_url, fake, spool_dir) as gw:
        assert charged(gw.url, request_id) == CHAT_CHARGE
        time.sleep(0.5)
    assert spool.records() == [] and not spool.rejected_path.exists()  # answered (a replay), not refused
    with Gateway(database_url, fake, spool_dir) as gw:
        assert charged(gw.url, request_id) == CHAT_CHARGE  # once
        assert wallet(gw.url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_a_settle_the_ledger_cannot_take_now_stays_spooled_and_is_sent_again(database_url, fake, spool_dir, book):
    refusals = {"left": 2}

    def flaky(services: Any) -> None:
        submit = services.wallets.submit

        async def sometimes_down(command: Any) -> Any:
            if type(command).__name__ == "Settle" and refusals["left"]:
                refusals["left"] -= 1
                raise RetriesExhaustedError("the database is down")
            return await submit(command)

        services.wallets.submit = sometimes_down

    with Gateway(database_url, fake, spool_dir, flaky, settle="wait") as gw:
        cid, key = customer(gw.url, book)
        raw = oai(gw.url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        # not taken when the answer went back: the hold only; then sent again from the spool
        assert "x-tokentill-charged" not in raw.headers and Decimal(raw.headers["x-tokentill-reserved"]) == HOLD
        assert charged(gw.url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE
        assert refusals["left"] == 0  # refused twice, then taken
        assert wallet(gw.url, cid) == (Decimal("10") - CHAT_CHARGE, 0)
    assert spool_for(database_url, spool_dir).records() == []


def test_an_answer_waits_for_its_charge_at_most_settle_wait_s_and_the_settle_still_lands(
        database_url, fake, spool_dir, book, monkeypatch):
    monkeypatch.setattr(settles, "SETTLE_WAIT_S", 0.3, raising=False)

    release = threading.Event()  # the ledger takes each settle only once the test has its answer

    def slow(services: Any) -> None:
        submit = services.wallets.submit

        async def slow_settles(command: Any) -> Any:
            if type(command).__name__ == "Settle":
                await asyncio.to_thread(release.wait, 60)
            return await submit(command)

        services.wallets.submit = slow_settles

    with Gateway(database_url, fake, spool_dir, slow, settle="wait") as gw:
        cid, key = customer(gw.url, book)
        started = time.monotonic()
        try:
            raw = oai(gw.url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
            waited = time.monotonic() - started
        finally:
            release.set()
        # it waited its SETTLE_WAIT_S for the charge, then answered while the ledger still held the
        # settle (no wall-clock ceiling: an answer that waited for the ledger would carry the charge)
        assert waited >= 0.3
        assert "x-tokentill-charged" not in raw.headers and Decimal(raw.headers["x-tokentill-reserved"]) == HOLD
        assert charged(gw.url, raw.headers["x-tokentill-request-id"]) == CHAT_CHARGE  # posted all the same, once
        assert wallet(gw.url, cid) == (Decimal("10") - CHAT_CHARGE, 0)


def test_a_spool_the_disk_refuses_is_logged_once_and_every_call_is_still_charged(
        database_url, fake, spool_dir, book, caplog):
    """A full disk (ENOSPC on every spool write): each call is settled at once, without the spool,
    as before, but each also logged the OSError's whole traceback, so a busy gateway wrote tracebacks
    by the thousand onto the disk that was full. One line when the spool fails, one when it is
    written again."""
    import errno
    import logging

    full = {"on": True}

    def disk_full(services: Any) -> None:
        spool = services.gateway.settles.spool
        append_many = spool.append_many

        def refused(records: Any) -> None:
            if full["on"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            append_many(records)

        spool.append_many = refused

    caplog.set_level(logging.INFO, logger="tokentill.gateway")
    with Gateway(database_url, fake, spool_dir, disk_full, settle="wait") as gw:
        cid, key = customer(gw.url, book)
        for _ in range(3):
            raw = oai(gw.url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
            assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE  # settled at once, as before
        full["on"] = False
        raw = oai(gw.url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        assert Decimal(raw.headers["x-tokentill-charged"]) == CHAT_CHARGE
        assert wallet(gw.url, cid) == (Decimal("10") - 4 * CHAT_CHARGE, 0)
    said = [r for r in caplog.records if r.name == "tokentill.gateway" and "spool" in r.getMessage()
            and "left by an earlier run" not in r.getMessage()]
    assert [(r.levelname, r.exc_info is None) for r in said] == [("ERROR", True), ("WARNING", True)], \
        [(r.levelname, r.getMessage()) for r in said]
    assert "No space left on device" in said[0].getMessage()


def test_a_settle_spooled_before_assumed_tiers_were_named_is_charged_as_spooled_and_once(database_url, fake,
                                                                                     spool_dir):
    """A gateway before 519ae05 wrote the tier its hold was priced at, for a call that left its
    tier to the provider and whose answer did not tell it, into the settle's usage object, with
    no `assumed`: the very record of a call whose answer told that tier. Nothing in such a record
    tells the two apart, so the gateway that finds it spooled charges it as written: at the held
    priority, (800 * 10 + 200 * 1 + 40 * 40) / 1M + 0.001 = 0.0108, the tier in the usage
    record's `reported` (as that gateway recorded it), no `assumed`. Rewriting it as assumed
    would change its request hash (`assumed` is hashed when given): one the old gateway had
    settled but not struck off, sent again, would be refused as its key reused with another
    body and set aside in `.rejected`; as written, it is answered by its key, charged once."""
    spool = spool_for(database_url, spool_dir)
    with Gateway(database_url, fake, spool_dir, never_send) as gw:
        cid, key = customer(gw.url, tool_book(gw.url, {"id": "out-priority", "token_type": "output",
                                                        "price": str(PRIORITY), "match": {"service_tier": "priority"}}))
        fake.fake.auto_tier = None  # the answer does not tell the tier that served it
        try:
            raw = oai(gw.url, key).chat.completions.with_raw_response.create(model="gpt-test", messages=HI)
        finally:
            fake.fake.auto_tier = fk.AUTO_TIER
        request_id = raw.headers["x-tokentill-request-id"]
    (now,) = spool.records()
    assert now.body["assumed"] == {"service_tier": "priority"}  # as this gateway spools it
    usage = {k: v for k, v in now.body["openai_usage"].items() if k != "service_tier"}
    # the line as the gateway before 519ae05 wrote it: the held tier inside the usage, no `assumed`
    old = json.dumps({
        "method": "POST", "path": f"/v1/reservations/{now.reservation_id}/settle",
        "body": {"customer_id": cid, "request_id": request_id, "openai_usage": {**usage, "service_tier": "priority"},
                 "final": True},
        "idempotency_key": settle_key(cid, request_id), "reservation_id": now.reservation_id,
        "base_url": "gateway", "key_id": None, "reason": "", "spooled_at": now.spooled_at}).encode() + b"\n"
    spool.path.write_bytes(old)
    held = (800 * IN + 200 * CACHED + 40 * PRIORITY) / M + CALL
    assert held == Decimal("0.0108")
    with Gateway(database_url, fake, spool_dir) as gw:  # the next gateway on the database sends it
        assert charged(gw.url, request_id) == held
        recorded = charge_usage(gw.url, request_id)
        assert recorded["reported"]["service_tier"] == "priority" and "assumed" not in recorded
        assert recorded["dimensions"] == {"service_tier": "priority"}
    assert spool.records() == [] and not spool.rejected_path.exists()
    spool.path.write_bytes(old)  # sent again, as if charged before and not struck off
    with Gateway(database_url, fake, spool_dir) as gw:
        time.sleep(0.5)
        assert charged(gw.url, request_id) == held
        assert wallet(gw.url, cid) == (Decimal("10") - held, 0)  # once
    assert spool.records() == [] and not spool.rejected_path.exists()  # answered by its key, not refused
