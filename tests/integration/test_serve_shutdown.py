"""SIGTERM with a call in progress that will not end by itself: the server waits for it for
TOKENTILL_SHUTDOWN_GRACE_SECONDS, then cuts it; the cut gateway call is charged what it streamed
and its hold closed, before the process exits."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from api.bench import fake_upstream as fk
from api.bench.common import free_port
from api.runtime import sync_url
from tests.api.apps import wait_ready
from tests.api.test_gateway import BOOK, CALL, HI, IN, OUT, M

ADMIN = "shutdown-test-admin"


@pytest.fixture
def fake():
    server = fk.FakeServer(free_port())
    server.start()
    deadline = time.monotonic() + 10
    while not server.server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield server
    server.fake.release()
    server.stop()


def _serve(port: int, database_url: str, upstream: str, workers: int, log) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "TOKENTILL_WORKERS"}
    env.update(TOKENTILL_DATABASE_URL=database_url, TOKENTILL_ADMIN_KEY=ADMIN, TOKENTILL_SCHEDULER="off",
               TOKENTILL_WEBHOOKS="off", TOKENTILL_UPSTREAM_OPENAI=f"{upstream}/v1",
               TOKENTILL_SHUTDOWN_GRACE_SECONDS="2")
    return subprocess.Popen([sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", str(workers)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_cuts_a_call_still_streaming_after_the_grace_and_charges_what_it_streamed(
        workers, database_url, fake, tmp_path):
    """A gateway stream the upstream keeps open (a long generation) held the shutdown: one
    `tokentill serve` never exited; under `--workers 2` the worker was killed 30 s after SIGTERM,
    its call neither charged nor released (the hold stayed until its TTL, 10 minutes)."""
    port, log_path = free_port(), tmp_path / "serve.log"
    with log_path.open("a") as log:
        proc = _serve(port, database_url, fake.url, workers, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout=90)
        book, cid = f"sd-{uuid.uuid4().hex[:8]}", f"sd-{uuid.uuid4().hex[:10]}"
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as http:
            assert http.post("/v1/price-books", json={**BOOK, "id": book}).status_code == 201
            assert http.post("/v1/customers", json={"id": cid, "name": "SD", "currency": "USD",
                                                    "price_book": book}).status_code == 201
            assert http.post(f"/v1/customers/{cid}/topups", json={"amount": "10.00"}).status_code == 201
            key = http.post("/v1/api-keys", json={"scope": "inference", "customers": [cid]}).json()["key"]
        streamed = threading.Event()
        seen: dict[str, object] = {}

        def call() -> None:
            client = openai.OpenAI(base_url=f"{url}/openai/v1", api_key=key, max_retries=0, timeout=120)
            received = 0
            try:
                with client.chat.completions.with_streaming_response.create(
                        model="gpt-test-pause", messages=HI, stream=True) as response:
                    seen["request_id"] = response.headers["x-tokentill-request-id"]
                    for chunk in response.parse():
                        received += bool(chunk.choices and chunk.choices[0].delta.content)
                        if received == fk.PAUSE_AFTER:
                            streamed.set()
            except Exception as exc:  # the cut: the stream ends early
                seen["error"] = exc
            seen["received"] = received

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        assert streamed.wait(30), log_path.read_text()
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = proc.wait(timeout=25)
        stopped_after = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log_path.read_text()
    assert 2 <= stopped_after < 15, (stopped_after, log_path.read_text())
    log_text = log_path.read_text()
    assert "1 request(s) still in progress 2 s after the shutdown began; cutting them" in log_text
    assert "Traceback" not in log_text, log_text  # the cut said once, not as uvicorn's ERROR traceback
    caller.join(10)
    assert seen["received"] == fk.PAUSE_AFTER
    engine = create_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            status, charged = conn.execute(text("SELECT status, charged FROM reservations WHERE customer_id = :c "
                                                "AND request_id = :r"), {"c": cid, "r": seen["request_id"]}).one()
            scale = conn.execute(text("SELECT scale FROM assets WHERE code = 'USD'")).scalar_one()
    finally:
        engine.dispose()
    # the prompt as counted (8 tokens) and the 200 tokens the upstream emitted before the cut
    assert (status, Decimal(charged) / 10 ** scale) == ("settled", (8 * IN + 200 * OUT) / M + CALL), \
        log_path.read_text()
